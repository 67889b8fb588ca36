package provider

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"

	"github.com/hangarhq/hangar/internal/pool"
)

// TestSchemas checks that the provider's schemas are valid and that every
// attribute has a description (the registry docs are generated from them).
func TestSchemas(t *testing.T) {
	srv, err := providerserver.NewProtocol6WithError(New("test")())()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.GetProviderSchema(context.Background(), &tfprotov6.GetProviderSchemaRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range resp.Diagnostics {
		t.Errorf("schema diagnostic: %s: %s", d.Summary, d.Detail)
	}
	check := func(kind string, s *tfprotov6.Schema) {
		if s.Block.Description == "" {
			t.Errorf("%s has no description", kind)
		}
		for _, a := range s.Block.Attributes {
			if a.Description == "" {
				t.Errorf("%s.%s has no description", kind, a.Name)
			}
			if a.NestedType != nil {
				for _, n := range a.NestedType.Attributes {
					if n.Description == "" {
						t.Errorf("%s.%s.%s has no description", kind, a.Name, n.Name)
					}
				}
			}
		}
	}
	check("provider", resp.Provider)
	want := map[string]bool{"hangar_pool": true, "hangar_tenant_image": true}
	for name, s := range resp.ResourceSchemas {
		check(name, s)
		delete(want, name)
	}
	if len(want) != 0 {
		t.Errorf("missing resources: %v", want)
	}
	if _, ok := resp.DataSourceSchemas["hangar_pool"]; !ok {
		t.Error("missing data source hangar_pool")
	}
	for name, s := range resp.DataSourceSchemas {
		check("data."+name, s)
	}
	// Contracted attribute names.
	attrs := map[string]bool{}
	for _, a := range resp.ResourceSchemas["hangar_pool"].Block.Attributes {
		attrs[a.Name] = true
	}
	for _, n := range []string{"name", "app_name", "adopt_app", "network", "regions", "image", "guest", "env", "min_standby", "max_machines",
		"standby_mode", "idle_timeout", "session_ttl", "agent_port", "broker_public_key", "daemon_url", "force_destroy", "id", "template_machine_id", "spec_hash"} {
		if !attrs[n] {
			t.Errorf("hangar_pool lacks %s", n)
		}
	}
	for _, a := range resp.Provider.Block.Attributes {
		if a.Name == "fly_api_token" && !a.Sensitive {
			t.Error("fly_api_token is not sensitive")
		}
	}
}

func TestFieldPath(t *testing.T) {
	for in, want := range map[string]path.Path{
		"name":            path.Root("name"),
		"guest.memory_mb": path.Root("guest"),
		"guest":           path.Root("guest"),
		"env":             path.Root("env"),
		"regions[1]":      path.Root("regions").AtListIndex(1),
	} {
		if got := fieldPath(in); !got.Equal(want) {
			t.Errorf("fieldPath(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestPoolModelRoundTrip: a model becomes a spec and a spec read back from
// Fly becomes the same model.
func TestPoolModelRoundTrip(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	m := poolModel{
		Name:            types.StringValue("default"),
		AppName:         types.StringValue("hangar-default"),
		AdoptApp:        types.BoolValue(false),
		Network:         types.StringNull(),
		Regions:         regionsValue([]string{"iad", "ams"}),
		Image:           types.StringValue("img:1"),
		Guest:           guestObject(pool.Guest{CPUKind: "shared", CPUs: 2, MemoryMB: 1024}),
		Env:             envValue(map[string]string{"A": "1"}, types.MapNull(types.StringType)),
		MinStandby:      types.Int64Value(2),
		MaxMachines:     types.Int64Value(9),
		StandbyMode:     types.StringValue("suspend"),
		IdleTimeout:     types.StringValue("90m"),
		SessionTTL:      types.StringValue("4h"),
		AgentPort:       types.Int64Value(9000),
		BrokerPublicKey: types.StringValue(key),
		DaemonURL:       types.StringValue("https://hangar.example.com"),
	}
	var diags diag.Diagnostics
	b := m.spec(ctx, &diags)
	if diags.HasError() || !b.complete() {
		t.Fatalf("spec: %v %v", diags, b.unknown)
	}
	if err := b.spec.Validate(); err != nil {
		t.Fatal(err)
	}
	if b.spec.IdleTimeout != 90*time.Minute || b.spec.Guest.CPUs != 2 || b.spec.StandbyMode != pool.StandbySuspend || b.spec.DaemonURL != "https://hangar.example.com" {
		t.Fatalf("spec = %+v", b.spec)
	}
	got := m
	got.setFromSpec(b.spec)
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip\n got %+v\nwant %+v", got, m)
	}
	// Unknown values become placeholders and are reported, never validated.
	m.Regions = types.ListUnknown(types.StringType)
	m.MinStandby = types.Int64Unknown()
	b = m.spec(ctx, &diags)
	if b.complete() || !b.skip("min_standby") || !b.skip("regions[0]") {
		t.Fatalf("unknowns not tracked: %v", b.unknown)
	}
	// A malformed duration is an attribute error.
	m.IdleTimeout = types.StringValue("5 parsecs")
	diags = nil
	m.spec(ctx, &diags)
	if !diags.HasError() {
		t.Fatal("5 parsecs accepted")
	}
}
