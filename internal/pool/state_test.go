package pool

import (
	"testing"

	"github.com/hangarhq/hangar/internal/fly"
)

func TestFromMachinesAndTopUpPlan(t *testing.T) {
	p := validSpec(t) // iad, ams; min 1; max 10
	p.MinStandby = 2
	ti := p.ForTenantImage("acme", "acme", "img:2", 1, nil, nil)
	clone := func(tmpl Spec, id, region, state string, hash string) fly.Machine {
		cfg, err := CloneConfig(&fly.Machine{ID: "t", Config: tmpl.TemplateConfig()}, RoleStandby, "")
		if err != nil {
			t.Fatal(err)
		}
		if hash != "" {
			cfg.Metadata[KeySpec] = hash
		}
		return fly.Machine{ID: id, Region: region, State: state, Config: cfg, CreatedAt: id}
	}
	sess, err := CloneConfig(&fly.Machine{ID: "t", Config: p.TemplateConfig()}, RoleSession, "s1")
	if err != nil {
		t.Fatal(err)
	}
	ms := []fly.Machine{
		{ID: "a0", State: fly.StateCreated, Config: p.TemplateConfig(), CreatedAt: "a0"},
		{ID: "a1", State: fly.StateCreated, Config: ti.TemplateConfig(), CreatedAt: "a1"},
		{ID: "a2", State: fly.StateCreated, Config: p.TemplateConfig(), CreatedAt: "a2"}, // duplicate
		clone(p, "b1", "iad", fly.StateCreated, ""),
		clone(p, "b2", "iad", fly.StateCreated, "old"),
		clone(p, "b3", "ams", fly.StateSuspended, ""),
		clone(p, "b4", "ams", fly.StateDestroyed, ""),
		clone(ti, "c1", "iad", fly.StateCreated, ""),
		{ID: "d1", State: fly.StateStarted, Region: "iad", Config: sess, CreatedAt: "d1"},
		{ID: "e1", State: fly.StateStarted, Config: &fly.MachineConfig{Image: "other"}}, // not ours
	}
	st := FromMachines("hangar-default", ms)
	if st.Default() == nil || st.Default().Machine.ID != "a0" || st.Templates["acme"] == nil {
		t.Fatalf("templates = %+v", st.Templates)
	}
	if len(st.ExtraTemplates) != 1 || st.ExtraTemplates[0].ID != "a2" {
		t.Fatalf("extra templates = %v", st.ExtraTemplates)
	}
	if len(st.Standbys) != 4 || len(st.Sessions) != 1 || st.Machines() != 5 {
		t.Fatalf("standbys %d sessions %d", len(st.Standbys), len(st.Sessions))
	}
	if s := st.Stale(""); len(s) != 1 || s[0].ID != "b2" {
		t.Fatalf("stale = %v", s)
	}
	if got := TopUpPlan(st, ""); len(got) != 1 || got["ams"] != 1 {
		t.Fatalf("default plan = %v", got)
	}
	if got := TopUpPlan(st, "acme"); len(got) != 1 || got["ams"] != 1 {
		t.Fatalf("acme plan = %v", got)
	}
	c := st.Count(nil)
	if c.Total != 5 || c.Sessions != 1 || c.Standby[fly.StateCreated] != 3 || c.Standby[fly.StateSuspended] != 1 || c.StandbyByRegion["iad"] != 3 {
		t.Fatalf("counts = %+v", c)
	}
	// max_machines bounds the top-up.
	st.Templates[""].Spec.MaxMachines = 5
	if got := TopUpPlan(st, ""); len(got) != 0 {
		t.Fatalf("plan at max = %v", got)
	}
	st.Templates[""].Spec.MaxMachines = 10
	if got := st.ActiveImages(); len(got) != 2 || got[0] != "" || got[1] != "acme" {
		t.Fatalf("active images = %q", got)
	}
	st.Templates[""].Spec.Draining = true
	if got := TopUpPlan(st, ""); got != nil {
		t.Fatalf("draining plan = %v", got)
	}
	if got := st.ActiveImages(); len(got) != 1 || got[0] != "acme" {
		t.Fatalf("active images while the default drains = %q", got)
	}
	// What a round destroyed is left out of the counts without a new listing.
	st.Forget(map[string]bool{"b1": true, "d1": true, "nope": true})
	if len(st.Standbys) != 3 || len(st.Sessions) != 0 || st.Machines() != 3 || len(st.StandbysIn("", "iad")) != 1 {
		t.Fatalf("after Forget: standbys %d sessions %d", len(st.Standbys), len(st.Sessions))
	}
}
