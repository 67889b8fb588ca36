package provider

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
)

// flyErrorHints says what a platform engineer can do about each kind of
// Fly API error, the first match winning.
var flyErrorHints = []struct {
	err  error
	hint string
}{
	{fly.ErrUnauthorized, "Fly rejected the API token (401). Check fly_api_token in the provider block or the FLY_API_TOKEN environment variable, and that the token has access to the organization."},
	{fly.ErrForbidden, "Fly refused the request (403): the token may not act on this app, or the app name is taken in another organization."},
	{fly.ErrNotFound, "Fly reports that the app or machine does not exist (404). It may have been deleted outside Terraform; run terraform apply again to recreate what is missing."},
	{fly.ErrConflict, "A machine is leased by another process (409), usually a hangar daemon claiming or replacing it. Wait a minute and run terraform apply again."},
	{fly.ErrRateLimited, "Fly rate-limited the provider (429) and the client's retries were exhausted. Wait a minute and run terraform apply again, or lower min_standby to create fewer machines at once."},
	{fly.ErrInsufficientCapacity, "Fly has no capacity for this machine size in the region. Choose another region or a smaller guest, or retry later."},
	{fly.ErrTimeout, "A machine did not reach the expected state in time. Check the machine's logs on Fly; a worker image that exits at start makes standbys in suspend mode fail."},
}

// flyErrorDetail explains a Fly API error so that a platform engineer knows
// what to do, ending with the original error.
func flyErrorDetail(action string, err error) string {
	hint := "Check that the Fly Machines API is reachable at the configured fly_api_url and retry."
	for _, h := range flyErrorHints {
		if errors.Is(err, h.err) {
			hint = h.hint
			break
		}
	}
	return fmt.Sprintf("The provider could not %s. %s\n\nOriginal Error: %s", action, hint, err)
}

// addFlyError adds a Fly API error diagnostic.
func addFlyError(diags *diag.Diagnostics, summary, action string, err error) {
	diags.AddError(summary, flyErrorDetail(action, err))
}

// fieldPath maps a pool.FieldError field ("guest.memory_mb", "regions[1]")
// to the attribute path a diagnostic is attached to. A field inside an
// object attribute maps to the object attribute itself: Terraform shows a
// diagnostic on the `guest = {...}` line, but one on guest.memory_mb only on
// the resource block. The detail text still names the field.
func fieldPath(field string) path.Path {
	root := rootField(field)
	p := path.Root(root)
	rest := field[len(root):]
	if strings.HasPrefix(rest, "[") {
		if end := strings.IndexByte(rest, ']'); end > 0 {
			if idx, err := strconv.Atoi(rest[1:end]); err == nil {
				p = p.AtListIndex(idx)
			}
		}
	}
	return p
}

// addSpecErrors turns a spec validation error into attribute diagnostics.
func addSpecErrors(diags *diag.Diagnostics, err error, skip func(field string) bool) {
	fields := pool.Fields(err)
	if len(fields) == 0 && err != nil {
		diags.AddError("Invalid Pool Specification", err.Error())
		return
	}
	for _, f := range fields {
		if skip != nil && skip(f.Field) {
			continue
		}
		diags.AddAttributeError(fieldPath(f.Field), "Invalid "+attributeTitle(f.Field), f.Field+": "+f.Message+".")
	}
}

// attributeTitles names the attribute of a spec field in a diagnostic
// summary ("Invalid Guest Size").
var attributeTitles = map[string]string{
	"guest":             "Guest Size",
	"regions":           "Region",
	"min_standby":       "Standby Count",
	"max_machines":      "Machine Limit",
	"image":             "Image",
	"broker_public_key": "Broker Public Key",
	"daemon_url":        "Daemon URL",
	"idle_timeout":      "Duration",
	"session_ttl":       "Duration",
	"env":               "Environment",
	"agent_port":        "Agent Port",
	"standby_mode":      "Standby Mode",
}

func attributeTitle(field string) string {
	if t, ok := attributeTitles[rootField(field)]; ok {
		return t
	}
	return "Attribute"
}

func rootField(field string) string {
	for i, r := range field {
		if r == '.' || r == '[' {
			return field[:i]
		}
	}
	return field
}

// configureData extracts the provider data in a resource's or data source's
// Configure; nil while the provider is not configured yet.
func configureData(pd any, diags *diag.Diagnostics) *providerData {
	if pd == nil {
		return nil
	}
	d, ok := pd.(*providerData)
	if !ok {
		diags.AddError("Unexpected Provider Data Type",
			fmt.Sprintf("Expected *providerData, got %T. This is always a bug in the provider; please report it.", pd))
		return nil
	}
	return d
}

// requireClient reports an error when the provider is not configured.
func requireClient(d *providerData, diags *diag.Diagnostics) bool {
	if d == nil || d.client == nil {
		diags.AddError("Provider Not Configured",
			"The hangar provider has no Fly API client: its configuration was unknown when this operation ran. "+
				"Make fly_api_url, fly_api_token and org known values (or set FLY_API_URL, FLY_API_TOKEN, FLY_ORG) and retry.")
		return false
	}
	return true
}
