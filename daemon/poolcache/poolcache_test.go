package poolcache

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/flyemu"
	"github.com/hangarhq/hangar/internal/flyemu/flyemutest"
	"github.com/hangarhq/hangar/internal/pool"
)

// TestCache reads a pool with a tenant image from the emulator, counts its
// standbys (stale ones too), ignores apps that are not pools, and finds a
// pool created after the last refresh.
func TestCache(t *testing.T) {
	emu := flyemutest.Start(t, flyemu.Config{AgentBinary: "/bin/true"})
	c, err := fly.New(fly.Options{BaseURL: emu.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k, _ := agentauth.GenerateKey()
	pub := agentauth.EncodePublicKey(agentauth.NewSigner(k).PublicKey())
	mkPool := func(name, app string) (pool.Spec, *fly.Machine) {
		if _, err := c.CreateApp(ctx, fly.CreateAppRequest{Name: app, OrgSlug: "personal"}); err != nil {
			t.Fatal(err)
		}
		spec := pool.Spec{Pool: name, App: app, Regions: []string{"iad"}, Image: "img:1",
			Guest: pool.Guest{CPUKind: "shared", CPUs: 1, MemoryMB: 1024}, MinStandby: 1, MaxMachines: 5,
			StandbyMode: pool.StandbyStop, IdleTimeout: time.Hour, SessionTTL: time.Hour,
			AgentPort: 8080, BrokerPublicKeys: []string{pub}}
		m, err := c.CreateMachine(ctx, app, spec.CreateTemplateRequest())
		if err != nil {
			t.Fatal(err)
		}
		return spec, m
	}
	spec, tmpl := mkPool("alpha", "hangar-alpha")
	ti := spec.ForTenantImage("acme-img", "acme", "acme:2", 1, nil, nil)
	tiTmpl, err := c.CreateMachine(ctx, "hangar-alpha", ti.CreateTemplateRequest())
	if err != nil {
		t.Fatal(err)
	}
	for _, tm := range []*fly.Machine{tmpl, tmpl, tiTmpl} {
		if _, err := pool.CreateStandby(ctx, c, "hangar-alpha", tm, "iad", pool.StandbyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A stale standby: cloned, then its spec hash changed.
	stale, err := pool.CreateStandby(ctx, c, "hangar-alpha", tmpl, "iad", pool.StandbyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	old := "0000"
	if err := c.UpdateMetadata(ctx, "hangar-alpha", stale.ID, fly.UpdateMetadataRequest{Metadata: map[string]*string{pool.KeySpec: &old}}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateApp(ctx, fly.CreateAppRequest{Name: "not-a-pool", OrgSlug: "personal"}); err != nil {
		t.Fatal(err)
	}

	cache := New(c, "personal", nil)
	if !cache.ReadAt().IsZero() {
		t.Fatal("read before refresh")
	}
	p, err := cache.Get(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	if p.App != "hangar-alpha" || p.Default == nil || p.Default.Spec.MaxMachines != 5 || p.Machines != 4 {
		t.Fatalf("pool: %+v", p)
	}
	if d := p.Counts[""]; d.StandbyTotal != 3 || d.Stale != 1 || d.Standby["created"] != 3 {
		t.Fatalf("default counts: %+v", d)
	}
	img := p.Template("acme-img")
	if img == nil || img.Spec.Tenant != "acme" || img.Spec.Image != "acme:2" || p.Counts["acme-img"].StandbyTotal != 1 {
		t.Fatalf("tenant image: %+v %+v", img, p.Counts["acme-img"])
	}
	if len(cache.List()) != 1 {
		t.Fatalf("list: %+v", cache.List())
	}
	if _, err := cache.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown pool: %v", err)
	}
	mkPool("beta", "hangar-beta")
	if p, err := cache.Get(ctx, "beta"); err != nil || p.App != "hangar-beta" {
		t.Fatalf("new pool on miss: %v %+v", err, p)
	}
}
