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

// flyErrorDetail explains a Fly API error so that a platform engineer knows
// what to do, ending with the original error.
func flyErrorDetail(action string, err error) string {
	var hint string
	switch {
	case errors.Is(err, fly.ErrUnauthorized):
		hint = "Fly rejected the API token (401). Check fly_api_token in the provider block or the FLY_API_TOKEN environment variable, and that the token has access to the organization."
	case errors.Is(err, fly.ErrForbidden):
		hint = "Fly refused the request (403): the token may not act on this app, or the app name is taken in another organization."
	case errors.Is(err, fly.ErrNotFound):
		hint = "Fly reports that the app or machine does not exist (404). It may have been deleted outside Terraform; run terraform apply again to recreate what is missing."
	case errors.Is(err, fly.ErrConflict):
		hint = "A machine is leased by another process (409), usually a hangar daemon claiming or replacing it. Wait a minute and run terraform apply again."
	case errors.Is(err, fly.ErrRateLimited):
		hint = "Fly rate-limited the provider (429) and the client's retries were exhausted. Wait a minute and run terraform apply again, or lower min_standby to create fewer machines at once."
	case errors.Is(err, fly.ErrInsufficientCapacity):
		hint = "Fly has no capacity for this machine size in the region. Choose another region or a smaller guest, or retry later."
	case errors.Is(err, fly.ErrTimeout):
		hint = "A machine did not reach the expected state in time. Check the machine's logs on Fly; a worker image that exits at start makes standbys in suspend mode fail."
	default:
		hint = "Check that the Fly Machines API is reachable at the configured fly_api_url and retry."
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

func attributeTitle(field string) string {
	switch root := rootField(field); root {
	case "guest":
		return "Guest Size"
	case "regions":
		return "Region"
	case "min_standby":
		return "Standby Count"
	case "max_machines":
		return "Machine Limit"
	case "image":
		return "Image"
	case "broker_public_key":
		return "Broker Public Key"
	case "idle_timeout", "session_ttl":
		return "Duration"
	case "env":
		return "Environment"
	case "agent_port":
		return "Agent Port"
	case "standby_mode":
		return "Standby Mode"
	default:
		return "Attribute"
	}
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
