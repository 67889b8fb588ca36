package provider

import (
	"context"
	"fmt"
	"math/big"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

// validateResource runs the provider's ValidateResourceConfig (attribute
// validators and the resource's ValidateConfig) on a config with the given
// attributes set and every other attribute null, and returns the errors.
func validateResource(t *testing.T, typeName string, attrs map[string]any) []*tfprotov6.Diagnostic {
	t.Helper()
	ctx := context.Background()
	srv, err := providerserver.NewProtocol6WithError(New("test")())()
	if err != nil {
		t.Fatal(err)
	}
	schemas, err := srv.GetProviderSchema(ctx, &tfprotov6.GetProviderSchemaRequest{})
	if err != nil {
		t.Fatal(err)
	}
	typ := schemas.ResourceSchemas[typeName].ValueType().(tftypes.Object)
	for name := range attrs {
		if _, ok := typ.AttributeTypes[name]; !ok {
			t.Fatalf("%s has no attribute %s", typeName, name)
		}
	}
	cfg, err := tfprotov6.NewDynamicValue(typ, tfValue(t, typ, attrs))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.ValidateResourceConfig(ctx, &tfprotov6.ValidateResourceConfigRequest{TypeName: typeName, Config: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	var errs []*tfprotov6.Diagnostic
	for _, d := range resp.Diagnostics {
		if d.Severity == tfprotov6.DiagnosticSeverityError {
			errs = append(errs, d)
		}
	}
	return errs
}

// tfValue converts a Go value (string, int, bool, []string, map[string]any,
// nil) to a value of type typ; missing object attributes are null.
func tfValue(t *testing.T, typ tftypes.Type, v any) tftypes.Value {
	t.Helper()
	if v == nil {
		return tftypes.NewValue(typ, nil)
	}
	switch typ := typ.(type) {
	case tftypes.Object:
		in := v.(map[string]any)
		out := make(map[string]tftypes.Value, len(typ.AttributeTypes))
		for name, at := range typ.AttributeTypes {
			out[name] = tfValue(t, at, in[name])
		}
		return tftypes.NewValue(typ, out)
	case tftypes.List:
		var out []tftypes.Value
		for _, e := range v.([]string) {
			out = append(out, tfValue(t, typ.ElementType, e))
		}
		return tftypes.NewValue(typ, out)
	case tftypes.Map:
		out := map[string]tftypes.Value{}
		for k, e := range v.(map[string]string) {
			out[k] = tfValue(t, typ.ElementType, e)
		}
		return tftypes.NewValue(typ, out)
	}
	switch {
	case typ.Is(tftypes.Number):
		return tftypes.NewValue(typ, big.NewFloat(float64(v.(int))))
	default:
		return tftypes.NewValue(typ, v)
	}
}

func diagString(ds []*tfprotov6.Diagnostic) string {
	var b strings.Builder
	for _, d := range ds {
		p := "-"
		if d.Attribute != nil {
			p = attrPathString(d.Attribute)
		}
		fmt.Fprintf(&b, "\n  [%s] %s: %s", p, d.Summary, d.Detail)
	}
	return b.String()
}

// TestValidateOneDiagnosticPerProblem: every bad value yields exactly one
// error, attached to the attribute Terraform can point at, and every guest
// problem is reported on guest.
func TestValidateOneDiagnosticPerProblem(t *testing.T) {
	key := newKey(t)
	poolAttrs := func(over map[string]any) map[string]any {
		a := map[string]any{
			"name": "default", "app_name": "hangar-default", "regions": []string{"iad", "ams"},
			"image": testImage, "guest": map[string]any{"cpu_kind": "shared", "cpus": 1, "memory_mb": 1024},
			"min_standby": 1, "max_machines": 10, "broker_public_key": key,
		}
		for k, v := range over {
			a[k] = v
		}
		return a
	}
	tiAttrs := func(over map[string]any) map[string]any {
		a := map[string]any{"name": "acme-node22", "pool": "default", "tenant": "acme", "image": "registry.fly.io/acme-worker:2.3", "min_standby": 1}
		for k, v := range over {
			a[k] = v
		}
		return a
	}
	type want struct {
		path   string // the diagnostic's attribute path
		detail string // a substring of its detail
	}
	cases := []struct {
		name     string
		typeName string
		attrs    map[string]any
		want     []want
	}{
		{"valid pool", "hangar_pool", poolAttrs(nil), nil},
		{"valid tenant image", "hangar_tenant_image", tiAttrs(nil), nil},
		{"pool guest: every problem on guest", "hangar_pool",
			poolAttrs(map[string]any{"guest": map[string]any{"cpu_kind": "shared", "cpus": 3, "memory_mb": 100}}),
			[]want{{"guest", "guest.cpus: 3 CPUs"}, {"guest", "guest.memory_mb: 100 MB"}}},
		{"pool guest: bad cpu kind once", "hangar_pool",
			poolAttrs(map[string]any{"guest": map[string]any{"cpu_kind": "bogus", "cpus": 3, "memory_mb": 100}}),
			[]want{{"guest", "guest.cpu_kind"}, {"guest", "guest.cpus"}, {"guest", "guest.memory_mb"}}},
		{"pool guest: memory range", "hangar_pool",
			poolAttrs(map[string]any{"guest": map[string]any{"cpu_kind": "shared", "cpus": 1, "memory_mb": 4096}}),
			[]want{{"guest", "guest.memory_mb: 4096 MB is outside"}}},
		{"tenant image guest: every problem on guest", "hangar_tenant_image",
			tiAttrs(map[string]any{"guest": map[string]any{"cpu_kind": "performance", "cpus": 3, "memory_mb": 1000}}),
			[]want{{"guest", "guest.cpus: 3 CPUs"}, {"guest", "guest.memory_mb: 1000 MB"}}},
		{"pool empty image", "hangar_pool", poolAttrs(map[string]any{"image": ""}), []want{{"image", "an image reference is required"}}},
		{"tenant image empty image", "hangar_tenant_image", tiAttrs(map[string]any{"image": ""}), []want{{"image", "an image reference is required"}}},
		{"pool negative min_standby", "hangar_pool", poolAttrs(map[string]any{"min_standby": -1}), []want{{"min_standby", "at least 0"}}},
		{"tenant image negative min_standby", "hangar_tenant_image", tiAttrs(map[string]any{"min_standby": -1}), []want{{"min_standby", "at least 0"}}},
		{"pool capacity still reported", "hangar_pool", poolAttrs(map[string]any{"min_standby": 6}), []want{{"min_standby", "exceeds max_machines 10"}}},
		{"tenant name", "hangar_tenant_image", tiAttrs(map[string]any{"tenant": "a b"}), []want{{"tenant", "not a tenant name"}}},
		{"empty tenant", "hangar_tenant_image", tiAttrs(map[string]any{"tenant": ""}), []want{{"tenant", "not a tenant name"}}},
		{"region", "hangar_pool", poolAttrs(map[string]any{"regions": []string{"iad", "Amsterdam"}}), []want{{"regions[1]", "Fly region"}}},
		{"pool daemon_url", "hangar_pool", poolAttrs(map[string]any{"daemon_url": "https://user@hangar.example.com"}), []want{{"daemon_url", "user info"}}},
		// Left to the plan, where HANGAR_DAEMON_URL is resolved.
		{"pool network without daemon_url", "hangar_pool", poolAttrs(map[string]any{"network": "hangar-default"}), nil},
		{"pool network with daemon_url", "hangar_pool", poolAttrs(map[string]any{"network": "hangar-default", "daemon_url": "https://hangar.example.com"}), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := validateResource(t, c.typeName, c.attrs)
			if len(got) != len(c.want) {
				t.Fatalf("got %d errors, want %d:%s", len(got), len(c.want), diagString(got))
			}
			for _, w := range c.want {
				found := false
				for _, d := range got {
					if d.Attribute != nil && attrPathString(d.Attribute) == w.path && strings.Contains(d.Detail, w.detail) {
						found = true
					}
				}
				if !found {
					t.Errorf("no error on %s containing %q:%s", w.path, w.detail, diagString(got))
				}
			}
		})
	}
}

// attrPathString renders a tftypes attribute path as "guest.cpus" or
// "regions[1]".
func attrPathString(p *tftypes.AttributePath) string {
	var b strings.Builder
	for _, s := range p.Steps() {
		switch s := s.(type) {
		case tftypes.AttributeName:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(string(s))
		case tftypes.ElementKeyInt:
			fmt.Fprintf(&b, "[%d]", int64(s))
		case tftypes.ElementKeyString:
			fmt.Fprintf(&b, "[%q]", string(s))
		}
	}
	return b.String()
}

// planResource runs the provider's PlanResourceChange for creating a
// resource with the given attributes (every other one null), with the
// provider unconfigured as in a plan that cannot reach Fly yet, and returns
// the planned value of attribute planned and the errors.
func planResource(t *testing.T, typeName string, attrs map[string]any, planned string) (tftypes.Value, []*tfprotov6.Diagnostic) {
	t.Helper()
	ctx := context.Background()
	srv, err := providerserver.NewProtocol6WithError(New("test")())()
	if err != nil {
		t.Fatal(err)
	}
	schemas, err := srv.GetProviderSchema(ctx, &tfprotov6.GetProviderSchemaRequest{})
	if err != nil {
		t.Fatal(err)
	}
	typ := schemas.ResourceSchemas[typeName].ValueType().(tftypes.Object)
	cfg, err := tfprotov6.NewDynamicValue(typ, tfValue(t, typ, attrs))
	if err != nil {
		t.Fatal(err)
	}
	prior, err := tfprotov6.NewDynamicValue(typ, tftypes.NewValue(typ, nil))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.PlanResourceChange(ctx, &tfprotov6.PlanResourceChangeRequest{TypeName: typeName, PriorState: &prior, ProposedNewState: &cfg, Config: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	var errs []*tfprotov6.Diagnostic
	for _, d := range resp.Diagnostics {
		if d.Severity == tfprotov6.DiagnosticSeverityError {
			errs = append(errs, d)
		}
	}
	if len(errs) > 0 || resp.PlannedState == nil {
		return tftypes.Value{}, errs
	}
	v, err := resp.PlannedState.Unmarshal(typ)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]tftypes.Value
	if err := v.As(&obj); err != nil {
		t.Fatal(err)
	}
	return obj[planned], nil
}

// TestPlanDaemonURL: a null daemon_url is resolved at plan time (from
// HANGAR_DAEMON_URL, else none), and the errors that only the resolved
// value shows are attached to daemon_url.
func TestPlanDaemonURL(t *testing.T) {
	key := newKey(t)
	attrs := func(over map[string]any) map[string]any {
		a := map[string]any{
			"name": "default", "app_name": "hangar-default", "regions": []string{"iad"}, "image": testImage,
			"guest": map[string]any{"cpu_kind": "shared", "cpus": 1, "memory_mb": 1024}, "broker_public_key": key,
		}
		for k, v := range over {
			a[k] = v
		}
		return a
	}
	cases := []struct {
		name    string
		env     string // HANGAR_DAEMON_URL
		attrs   map[string]any
		planned any    // the planned daemon_url: a string, or nil for null
		err     string // a substring of the one error on daemon_url; "" = none
	}{
		{"set", "http://env.example.com", attrs(map[string]any{"daemon_url": "https://hangar.example.com"}), "https://hangar.example.com", ""},
		{"from the environment", "http://env.example.com", attrs(nil), "http://env.example.com", ""},
		{"none (legacy)", "", attrs(nil), nil, ""},
		{"network from the environment", "http://env.example.com", attrs(map[string]any{"network": "hangar-default"}), "http://env.example.com", ""},
		{"network without one", "", attrs(map[string]any{"network": "hangar-default"}), nil, `network "hangar-default" isolates the workers`},
		{"bad environment", "hangar.example.com", attrs(nil), nil, "HANGAR_DAEMON_URL, which daemon_url defaults to"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.env != "" {
				setenv(t, EnvDaemonURL, c.env)
			}
			got, errs := planResource(t, "hangar_pool", c.attrs, "daemon_url")
			if c.err != "" {
				if len(errs) != 1 || errs[0].Attribute == nil || attrPathString(errs[0].Attribute) != "daemon_url" || !strings.Contains(errs[0].Detail, c.err) {
					t.Fatalf("want one error on daemon_url containing %q, got:%s", c.err, diagString(errs))
				}
				return
			}
			if len(errs) > 0 {
				t.Fatalf("unexpected errors:%s", diagString(errs))
			}
			if want := tftypes.NewValue(tftypes.String, c.planned); !got.Equal(want) {
				t.Fatalf("planned daemon_url = %s, want %s", got, want)
			}
		})
	}
}
