package provider

import (
	"context"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/schema/validator"

	"github.com/hangarhq/hangar/internal/pool"
)

// stringCheck is a string validator built from a check function: every
// string validator of the provider has this one shape, so each is a
// constructor filling in its description, diagnostic title and check.
type stringCheck struct {
	desc  string
	title string
	check func(string) error
}

var _ validator.String = stringCheck{}

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

// nameValidator checks pool, app, network and tenant image names.
func nameValidator() stringCheck {
	return stringCheck{
		desc:  "lowercase letters, digits and dashes, starting with a letter or digit, at most 63 characters",
		title: "Invalid Name",
		check: pool.ValidateName,
	}
}

// regionValidator checks a Fly region code.
func regionValidator() stringCheck {
	return stringCheck{desc: "a Fly region code: three lowercase letters", title: "Invalid Region", check: pool.ValidateRegion}
}

// notBlankValidator checks an image reference.
func notBlankValidator() stringCheck {
	return stringCheck{desc: "must not be blank", title: "Invalid Image", check: func(s string) error {
		if strings.TrimSpace(s) == "" {
			return errString("an image reference is required (for example \"registry.fly.io/hangar-worker:1.0.0\")")
		}
		if strings.ContainsAny(s, " \t\n") {
			return errString("the image reference contains whitespace")
		}
		return nil
	}}
}

// tenantValidator checks a hangar tenant name.
func tenantValidator() stringCheck {
	return stringCheck{
		desc:  "letters, digits, '.', '_', '@' and '-', starting with a letter or digit, at most 128 characters",
		title: "Invalid Tenant",
		check: pool.ValidateTenant,
	}
}

// durationValidator checks a positive Go duration.
func durationValidator() stringCheck {
	return stringCheck{desc: "a positive Go duration such as 90s, 15m or 4h", title: "Invalid Duration", check: func(s string) error {
		if _, err := pool.ParseDuration(s); err != nil {
			return errString(err.Error() + ". Durations are Go duration strings: a number and a unit (ns, us, ms, s, m, h)")
		}
		return nil
	}}
}

// brokerKeyValidator checks one or more comma-separated broker public keys.
func brokerKeyValidator() stringCheck {
	return stringCheck{
		desc:  "one or more comma-separated ed25519 public keys, standard base64 of 32 bytes",
		title: "Invalid Broker Public Key",
		check: func(s string) error {
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
		},
	}
}

// daemonURLValidator checks the URL workers dial home to.
func daemonURLValidator() stringCheck {
	return stringCheck{
		desc:  "an http:// or https:// URL with a host and an optional port, and no user info, path, query or fragment",
		title: "Invalid Daemon URL",
		check: pool.ValidateDaemonURL,
	}
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

type errString string

func (e errString) Error() string { return string(e) }
