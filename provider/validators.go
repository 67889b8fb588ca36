package provider

import (
	"context"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/schema/validator"

	"github.com/hangarhq/hangar/internal/pool"
)

// stringCheck is a string validator built from a check function.
type stringCheck struct {
	desc  string
	title string
	check func(string) error
}

func (v stringCheck) Description(context.Context) string         { return v.desc }
func (v stringCheck) MarkdownDescription(context.Context) string { return v.desc }

func (v stringCheck) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if err := v.check(req.ConfigValue.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, v.title, req.Path.String()+": "+err.Error()+".")
	}
}

type nameValidator struct{}

func (nameValidator) Description(context.Context) string {
	return "lowercase letters, digits and dashes, starting with a letter or digit, at most 63 characters"
}
func (v nameValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }
func (nameValidator) ValidateString(ctx context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	stringCheck{title: "Invalid Name", check: pool.ValidateName}.ValidateString(ctx, req, resp)
}

type regionValidator struct{}

func (regionValidator) Description(context.Context) string {
	return "a Fly region code: three lowercase letters"
}
func (v regionValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }
func (regionValidator) ValidateString(ctx context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	stringCheck{title: "Invalid Region", check: pool.ValidateRegion}.ValidateString(ctx, req, resp)
}

type notBlankValidator struct{}

func (notBlankValidator) Description(context.Context) string { return "must not be blank" }
func (v notBlankValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}
func (notBlankValidator) ValidateString(ctx context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	stringCheck{title: "Invalid Image", check: func(s string) error {
		if strings.TrimSpace(s) == "" {
			return errString("an image reference is required (for example \"registry.fly.io/hangar-worker:1.0.0\")")
		}
		if strings.ContainsAny(s, " \t\n") {
			return errString("the image reference contains whitespace")
		}
		return nil
	}}.ValidateString(ctx, req, resp)
}

type tenantValidator struct{}

func (tenantValidator) Description(context.Context) string {
	return "letters, digits, '.', '_', '@' and '-', starting with a letter or digit, at most 128 characters"
}
func (v tenantValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }
func (tenantValidator) ValidateString(ctx context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	stringCheck{title: "Invalid Tenant", check: pool.ValidateTenant}.ValidateString(ctx, req, resp)
}

// guestValidator checks a whole guest object against Fly's machine sizes.
// It validates the object rather than its fields because Terraform can show
// a diagnostic on the `guest = {...}` line but not inside the object
// expression: an error on guest.cpus would point at the resource block.
// Every bad field gets its own diagnostic, named in the detail.
type guestValidator struct{}

func (guestValidator) Description(context.Context) string {
	return "a Fly machine size: cpu_kind shared (1, 2, 4, 6 or 8 CPUs, 256 to 2048 MB per CPU) or performance (1 to 16 CPUs, 2048 to 8192 MB per CPU), memory a multiple of 256 MB"
}
func (v guestValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }
func (guestValidator) ValidateObject(ctx context.Context, req validator.ObjectRequest, resp *validator.ObjectResponse) {
	g, ok, diags := guestFrom(ctx, req.ConfigValue)
	resp.Diagnostics.Append(diags...)
	if !ok {
		return // null (inherited or defaulted) or not known yet
	}
	for _, e := range pool.ValidateGuest(g) {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid Guest Size", req.Path.String()+"."+e.Field+": "+e.Message+".")
	}
}

type durationValidator struct{}

func (durationValidator) Description(context.Context) string {
	return "a positive Go duration such as 90s, 15m or 4h"
}
func (v durationValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }
func (durationValidator) ValidateString(ctx context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	stringCheck{title: "Invalid Duration", check: func(s string) error {
		_, err := pool.ParseDuration(s)
		if err != nil {
			return errString(err.Error() + ". Durations are Go duration strings: a number and a unit (ns, us, ms, s, m, h)")
		}
		return nil
	}}.ValidateString(ctx, req, resp)
}

type brokerKeyValidator struct{}

func (brokerKeyValidator) Description(context.Context) string {
	return "one or more comma-separated ed25519 public keys, standard base64 of 32 bytes"
}
func (v brokerKeyValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}
func (brokerKeyValidator) ValidateString(ctx context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	stringCheck{title: "Invalid Broker Public Key", check: func(s string) error {
		keys := splitKeys(s)
		if len(keys) == 0 {
			return errString("at least one key is required; `hangard keygen` prints one")
		}
		for _, k := range keys {
			if err := pool.ValidateBrokerPublicKey(k); err != nil {
				return errString("\"" + k + "\" is " + err.Error())
			}
		}
		return nil
	}}.ValidateString(ctx, req, resp)
}

type errString string

func (e errString) Error() string { return string(e) }
