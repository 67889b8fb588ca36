package reconcile_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hangarhq/hangar/daemon/reconcile"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/daemon/store/storetest"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/flyemu"
	"github.com/hangarhq/hangar/internal/flyemu/flyemutest"
	"github.com/hangarhq/hangar/internal/pool"
	"github.com/hangarhq/hangar/internal/syncbuf"
	"github.com/hangarhq/hangar/internal/testbin"
)

const (
	org    = "personal"
	region = "iad"
)

// env is an emulator, a client for it and a store.
type env struct {
	t     *testing.T
	url   string // the emulator's API
	fly   *fly.Client
	store store.Store
	key   string // broker public key
}

func newEnv(t *testing.T, withAgent bool) *env {
	t.Helper()
	cfg := flyemu.Config{Org: org, Region: region}
	if withAgent {
		cfg.AgentBinary = testbin.Path(t, testbin.Agent)
	}
	emu := flyemutest.Start(t, cfg)
	c, err := fly.New(fly.Options{BaseURL: emu.URL})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "hangard.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	k, err := agentauth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, url: emu.URL, fly: c, store: st, key: agentauth.EncodePublicKey(agentauth.NewSigner(k).PublicKey())}
}

// spec is a pool spec for app with the given standby settings.
func (e *env) spec(name string, minStandby, maxMachines int, mode pool.StandbyMode, regions ...string) pool.Spec {
	if len(regions) == 0 {
		regions = []string{region}
	}
	return pool.Spec{
		Pool: name, App: "hangar-" + name, Regions: regions, Image: "hangar-worker:test",
		Guest:      pool.Guest{CPUKind: "shared", CPUs: 1, MemoryMB: 1024},
		Env:        map[string]string{"HANGAR_WORKSPACE": "workspace"},
		MinStandby: minStandby, MaxMachines: maxMachines, StandbyMode: mode,
		IdleTimeout: time.Hour, SessionTTL: time.Hour, AgentPort: pool.DefaultAgentPort,
		BrokerPublicKeys: []string{e.key},
	}
}

// createPool creates the app (if needed) and the template of spec.
func (e *env) createPool(spec pool.Spec) *fly.Machine {
	e.t.Helper()
	ctx := context.Background()
	if err := spec.Validate(); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.fly.GetApp(ctx, spec.App); errors.Is(err, fly.ErrNotFound) {
		if _, err := e.fly.CreateApp(ctx, fly.CreateAppRequest{Name: spec.App, OrgSlug: org}); err != nil {
			e.t.Fatal(err)
		}
	}
	m, err := e.fly.CreateMachine(ctx, spec.App, spec.CreateTemplateRequest())
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

func (e *env) state(app string) *pool.State {
	e.t.Helper()
	st, err := pool.Load(context.Background(), e.fly, app)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

func (e *env) standby(app string, tmpl *fly.Machine, reg string) *fly.Machine {
	e.t.Helper()
	m, err := pool.CreateStandby(context.Background(), e.fly, app, tmpl, reg, pool.StandbyOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// sessionMachine creates a session machine cloned from tmpl for session sid.
func (e *env) sessionMachine(app string, tmpl *fly.Machine, sid string) *fly.Machine {
	e.t.Helper()
	cfg, err := pool.CloneConfig(tmpl, pool.RoleSession, sid)
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := e.fly.CreateMachine(context.Background(), app, fly.CreateMachineRequest{Config: cfg, Region: region, SkipLaunch: true})
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// session stores a session in state s owning machine mid.
func (e *env) session(id string, s store.SessionState, app, mid string) {
	e.t.Helper()
	ctx := context.Background()
	ten := &store.Tenant{Name: "t" + id, KeyHash: []byte(id)}
	if err := e.store.CreateTenant(ctx, ten); err != nil {
		e.t.Fatal(err)
	}
	if err := e.store.CreateSession(ctx, &store.Session{ID: id, TenantID: ten.ID, Pool: "p", State: s, MachineID: mid, AppName: app, Mode: "pty", Owner: "d-test"}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) reconciler(cfg reconcile.Config) *reconcile.Reconciler {
	e.t.Helper()
	if cfg.Fly == nil {
		cfg.Fly = e.fly
	}
	if cfg.Store == nil {
		cfg.Store = e.store
	}
	cfg.Org = org
	r, err := reconcile.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// countingTransport counts the GETs of paths ending in match.
type countingTransport struct {
	match string
	n     atomic.Int64
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, c.match) {
		c.n.Add(1)
	}
	return http.DefaultTransport.RoundTrip(req)
}

func round(t *testing.T, r *reconcile.Reconciler) reconcile.Report {
	t.Helper()
	rep, err := r.Round(context.Background())
	if err != nil {
		t.Fatalf("round: %v", err)
	}
	return rep
}

func ids(ms []*fly.Machine) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.ID)
	}
	sort.Strings(out)
	return out
}

func TestTopUpTrimAndTenantImages(t *testing.T) {
	e := newEnv(t, false)
	spec := e.spec("tops", 2, 10, pool.StandbyStop, "iad", "ord")
	tmpl := e.createPool(spec)
	ti := spec.ForTenantImage("acme", "acme", "acme-worker:1", 1, nil, nil)
	e.createPool(ti)
	reg := prometheus.NewRegistry()
	r := e.reconciler(reconcile.Config{Metrics: reconcile.NewMetrics(reg)})

	rep := round(t, r)
	if !rep.Leader || rep.Created != 6 || rep.Trimmed != 0 {
		t.Fatalf("first round: %+v, want 6 created (2+1 per region)", rep)
	}
	st := e.state(spec.App)
	for _, c := range []struct {
		ti, region string
		want       int
	}{{"", "iad", 2}, {"", "ord", 2}, {"acme", "iad", 1}, {"acme", "ord", 1}} {
		got := st.StandbysIn(c.ti, c.region)
		if len(got) != c.want {
			t.Errorf("standbys of %q in %s: %d, want %d", c.ti, c.region, len(got), c.want)
		}
		for _, m := range got {
			if m.State != fly.StateCreated || !m.Config.AutoDestroy || pool.SpecHashOf(m) != pool.SpecHashOf(st.Templates[c.ti].Machine) {
				t.Errorf("standby %s: state %s auto_destroy %v spec %s", m.ID, m.State, m.Config.AutoDestroy, pool.SpecHashOf(m))
			}
		}
	}
	if got := testutil.ToFloat64(reconcileCounter(t, reg, "hangard_reconciler_standbys_created_total", "tops", "acme")); got != 2 {
		t.Errorf("created metric for acme: %v, want 2", got)
	}

	// A converged pool: nothing to do, and the app is listed once (Fly
	// allows about one listing per app and second).
	lists := &countingTransport{match: "/apps/" + spec.App + "/machines"}
	counted, err := fly.New(fly.Options{BaseURL: e.url, HTTPClient: &http.Client{Transport: lists}})
	if err != nil {
		t.Fatal(err)
	}
	if rep := round(t, e.reconciler(reconcile.Config{Fly: counted})); rep.Created+rep.Trimmed+rep.Replaced+rep.Reaped != 0 {
		t.Fatalf("second round changed things: %+v", rep)
	}
	if n := lists.n.Load(); n != 1 {
		t.Errorf("a converged round listed the app's machines %d times, want once", n)
	}

	// Two extra standbys in iad and one in a region the pool doesn't list:
	// trimmed, oldest first, back to min_standby.
	oldest := ids(st.StandbysIn("", "iad"))
	// Fly's created_at has one-second resolution: make the extras younger.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	newer := []string{e.standby(spec.App, tmpl, "iad").ID, e.standby(spec.App, tmpl, "iad").ID}
	e.standby(spec.App, tmpl, "fra")
	rep = round(t, r)
	if rep.Trimmed != 3 || rep.Created != 0 {
		t.Fatalf("trim round: %+v, want 3 trimmed", rep)
	}
	st = e.state(spec.App)
	sort.Strings(newer)
	if got := ids(st.StandbysIn("", "iad")); !slices.Equal(got, newer) {
		t.Errorf("iad standbys after trim: %v, want the newest %v (oldest %v destroyed)", got, newer, oldest)
	}
	if n := len(st.StandbysIn("", "fra")); n != 0 {
		t.Errorf("fra standbys after trim: %d", n)
	}
	if len(st.Templates) != 2 {
		t.Errorf("templates after trim: %d", len(st.Templates))
	}

	// A standby that someone else holds the lease of (a claim) is left alone.
	extra := e.standby(spec.App, tmpl, "ord")
	st = e.state(spec.App)
	var leased []string
	for _, m := range st.StandbysIn("", "ord") {
		if _, err := e.fly.AcquireLease(context.Background(), spec.App, m.ID, time.Minute, "test claim"); err != nil {
			t.Fatal(err)
		}
		leased = append(leased, m.ID)
	}
	rep = round(t, r)
	if rep.Trimmed != 0 {
		t.Errorf("trimmed leased standbys: %+v", rep)
	}
	if n := len(e.state(spec.App).StandbysIn("", "ord")); n != 3 {
		t.Errorf("ord standbys: %d, want 3 (all leased, %v incl. %s)", n, leased, extra.ID)
	}
}

func reconcileCounter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var vals []string
			for _, l := range m.GetLabel() {
				vals = append(vals, l.GetValue())
			}
			if slices.Equal(vals, labels) {
				return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x", Help: "x"}, func() float64 { return m.GetCounter().GetValue() })
			}
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return nil
}

func TestSuspendModeStandbysAreHealthChecked(t *testing.T) {
	e := newEnv(t, true)
	spec := e.spec("susp", 2, 5, pool.StandbySuspend)
	e.createPool(spec)
	r := e.reconciler(reconcile.Config{StandbyTimeout: time.Minute})
	if rep := round(t, r); rep.Created != 2 {
		t.Fatalf("round: %+v", rep)
	}
	st := e.state(spec.App)
	if len(st.Standbys) != 2 {
		t.Fatalf("standbys: %d", len(st.Standbys))
	}
	for _, m := range st.Standbys {
		if m.State != fly.StateSuspended {
			t.Errorf("standby %s is %s, want suspended", m.ID, m.State)
		}
	}
}

func TestStuckStandbysCleared(t *testing.T) {
	e := newEnv(t, true)
	spec := e.spec("stuck", 1, 5, pool.StandbyStop)
	tmpl := e.createPool(spec)
	ctx := context.Background()
	// A standby whose setup stopped half-way: started, never suspended.
	sb := e.standby(spec.App, tmpl, region)
	if _, err := e.fly.StartMachine(ctx, spec.App, sb.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.fly.WaitMachine(ctx, spec.App, sb.ID, fly.WaitOptions{States: []string{fly.StateStarted}, Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	// Young, it may be a setup in progress: left alone.
	r := e.reconciler(reconcile.Config{StuckAfter: time.Hour})
	if rep := round(t, r); rep.Cleared != 0 || rep.Created != 0 {
		t.Fatalf("young started standby touched: %+v", rep)
	}
	r = e.reconciler(reconcile.Config{StuckAfter: time.Hour, Now: func() time.Time { return time.Now().Add(2 * time.Hour) }})
	rep := round(t, r)
	if rep.Cleared != 1 || rep.Created != 1 {
		t.Fatalf("round: %+v, want the stuck standby cleared and replaced", rep)
	}
	st := e.state(spec.App)
	if len(st.Standbys) != 1 || st.Standbys[0].ID == sb.ID || st.Standbys[0].State != fly.StateCreated {
		t.Errorf("standbys: %v", ids(st.Standbys))
	}
}

func TestStaleStandbysReplaced(t *testing.T) {
	e := newEnv(t, false)
	spec := e.spec("stale", 3, 10, pool.StandbyStop)
	tmpl := e.createPool(spec)
	r := e.reconciler(reconcile.Config{})
	round(t, r)
	before := ids(e.state(spec.App).Standbys)

	// The provider rewrites the template (here only its spec hash); a
	// session machine of the old spec stays.
	e.session("s-old", store.StateReady, spec.App, "")
	sm := e.sessionMachine(spec.App, tmpl, "s-old")
	if _, err := e.store.UpdateSession(context.Background(), "s-old", nil, func(s *store.Session) error { s.MachineID = sm.ID; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := e.fly.SetMetadata(context.Background(), spec.App, tmpl.ID, pool.KeySpec, "new-spec-hash", ""); err != nil {
		t.Fatal(err)
	}
	rep := round(t, r)
	if rep.Replaced != 3 || rep.Created != 0 || rep.Trimmed != 0 {
		t.Fatalf("round: %+v, want 3 replaced", rep)
	}
	st := e.state(spec.App)
	if len(st.Standbys) != 3 {
		t.Fatalf("standbys: %d", len(st.Standbys))
	}
	for _, m := range st.Standbys {
		if slices.Contains(before, m.ID) || pool.SpecHashOf(m) != "new-spec-hash" {
			t.Errorf("standby %s (spec %s) not replaced", m.ID, pool.SpecHashOf(m))
		}
	}
	if len(st.Sessions) != 1 || st.Sessions[0].ID != sm.ID || pool.SpecHashOf(st.Sessions[0]) == "new-spec-hash" {
		t.Errorf("session machine touched: %+v", st.Sessions)
	}
}

func TestMaxMachinesRespected(t *testing.T) {
	e := newEnv(t, false)
	spec := e.spec("cap", 3, 4, pool.StandbyStop)
	tmpl := e.createPool(spec)
	e.createPool(spec.ForTenantImage("acme", "acme", "acme-worker:1", 2, nil, nil))
	// Two session machines of live sessions (one of the tenant image) count.
	e.session("s1", store.StateReady, spec.App, "")
	e.session("s2", store.StateReady, spec.App, "")
	for _, s := range []string{"s1", "s2"} {
		m := e.sessionMachine(spec.App, tmpl, s)
		if _, err := e.store.UpdateSession(context.Background(), s, nil, func(x *store.Session) error { x.MachineID = m.ID; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	r := e.reconciler(reconcile.Config{})
	rep := round(t, r)
	if rep.Created != 2 {
		t.Fatalf("round: %+v, want 2 created (max 4 - 2 sessions)", rep)
	}
	st := e.state(spec.App)
	if st.Machines() != 4 {
		t.Errorf("machines: %d, want max_machines 4", st.Machines())
	}
	// The default template comes first.
	if n := len(st.StandbysOf("")); n != 2 {
		t.Errorf("default standbys: %d", n)
	}
	if rep := round(t, r); rep.Created != 0 {
		t.Errorf("second round created %d past max_machines", rep.Created)
	}
}

func TestDrainingAndMissingTemplatesNotRefilled(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()

	// A draining pool: nothing created, its extra standbys left to the provider.
	drain := e.spec("drain", 1, 10, pool.StandbyStop)
	tmpl := e.createPool(drain)
	e.standby(drain.App, tmpl, region)
	e.standby(drain.App, tmpl, region)
	if err := e.fly.SetMetadata(ctx, drain.App, tmpl.ID, pool.KeyDraining, "true", ""); err != nil {
		t.Fatal(err)
	}

	// A pool whose tenant image is draining: only the default image refilled.
	mixed := e.spec("mixed", 1, 10, pool.StandbyStop)
	e.createPool(mixed)
	tiTmpl := e.createPool(mixed.ForTenantImage("acme", "acme", "acme-worker:1", 1, nil, nil))
	if err := e.fly.SetMetadata(ctx, mixed.App, tiTmpl.ID, pool.KeyDraining, "true", ""); err != nil {
		t.Fatal(err)
	}

	// A pool whose template is gone: its standby stays, nothing new.
	gone := e.spec("gone", 2, 10, pool.StandbyStop)
	gtmpl := e.createPool(gone)
	e.standby(gone.App, gtmpl, region)
	if err := e.fly.DestroyMachine(ctx, gone.App, gtmpl.ID, true, ""); err != nil {
		t.Fatal(err)
	}

	// An app that is no pool at all.
	if _, err := e.fly.CreateApp(ctx, fly.CreateAppRequest{Name: "other", OrgSlug: org}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.fly.CreateMachine(ctx, "other", fly.CreateMachineRequest{Config: &fly.MachineConfig{Image: "nginx"}, SkipLaunch: true}); err != nil {
		t.Fatal(err)
	}

	r := e.reconciler(reconcile.Config{})
	rep := round(t, r)
	if rep.Created != 1 || rep.Trimmed != 0 || rep.Pools != 3 {
		t.Fatalf("round: %+v, want 1 created (mixed's default) over 3 pools", rep)
	}
	if n := len(e.state(drain.App).Standbys); n != 2 {
		t.Errorf("draining pool standbys: %d, want 2 (untouched)", n)
	}
	st := e.state(mixed.App)
	if len(st.StandbysOf("")) != 1 || len(st.StandbysOf("acme")) != 0 {
		t.Errorf("mixed pool: default %d, acme %d", len(st.StandbysOf("")), len(st.StandbysOf("acme")))
	}
	if st := e.state(gone.App); len(st.Standbys) != 1 || len(st.Templates) != 0 {
		t.Errorf("gone pool: %d standbys, %d templates", len(st.Standbys), len(st.Templates))
	}
	if ms, _ := e.fly.ListMachines(ctx, "other", fly.ListMachinesOptions{}); len(ms) != 1 {
		t.Errorf("other app machines: %d", len(ms))
	}
}

func TestReaper(t *testing.T) {
	e := newEnv(t, false)
	spec := e.spec("reap", 1, 20, pool.StandbyStop)
	tmpl := e.createPool(spec)
	ctx := context.Background()
	sb := e.standby(spec.App, tmpl, region)

	machine := func(sid string, state store.SessionState, owns bool) *fly.Machine {
		m := e.sessionMachine(spec.App, tmpl, sid)
		if state != "" {
			mid := "someone-else"
			if owns {
				mid = m.ID
			}
			e.session(sid, state, spec.App, mid)
		}
		return m
	}
	unknown := machine("s-unknown", "", false)
	ended := machine("s-ended", store.StateEnded, true)
	failed := machine("s-failed", store.StateFailed, true)
	elsewhere := machine("s-elsewhere", store.StateReady, false)
	ready := machine("s-ready", store.StateReady, true)
	ending := machine("s-ending", store.StateEnding, true)
	claiming := machine("s-claiming", store.StateClaiming, false)
	pending := machine("s-pending", store.StatePending, false)
	starting := machine("s-starting", store.StateStarting, true)
	leased := machine("s-leased", store.StateFailed, true)
	if _, err := e.fly.AcquireLease(ctx, spec.App, leased.ID, time.Minute, "test: someone ending it"); err != nil {
		t.Fatal(err)
	}

	// Within the grace period nothing is reaped.
	r := e.reconciler(reconcile.Config{ReapGrace: time.Hour})
	if rep := round(t, r); rep.Reaped != 0 {
		t.Fatalf("reaped within the grace period: %+v", rep)
	}

	// Past the grace period the orphans of known sessions go at once; the
	// machine of a session the store does not know waits for UnknownGrace
	// of continuous sightings, however old the machine is.
	var clock atomic.Int64
	clock.Store(time.Now().Add(2 * time.Hour).UnixNano())
	later := func() time.Time { return time.Unix(0, clock.Load()) }
	reg := prometheus.NewRegistry()
	r = e.reconciler(reconcile.Config{ReapGrace: time.Hour, UnknownGrace: 30 * time.Minute, Now: later, Metrics: reconcile.NewMetrics(reg)})
	if rep := round(t, r); rep.Reaped != 3 {
		t.Errorf("reaped %d, want 3 (ended, failed, elsewhere)", rep.Reaped)
	}
	if !slices.Contains(ids(e.state(spec.App).Sessions), unknown.ID) {
		t.Fatal("the machine of an unknown session was reaped on first sight")
	}
	clock.Add(int64(31 * time.Minute))
	if rep := round(t, r); rep.Reaped != 1 {
		t.Errorf("reaped %d after UnknownGrace, want 1 (unknown)", rep.Reaped)
	}
	st := e.state(spec.App)
	gotIDs := ids(st.Sessions)
	for _, m := range []*fly.Machine{unknown, ended, failed, elsewhere} {
		if slices.Contains(gotIDs, m.ID) {
			t.Errorf("orphan %s (%s) not reaped", m.ID, pool.MetadataOf(m)[pool.KeySession])
		}
	}
	for _, m := range []*fly.Machine{ready, ending, claiming, pending, starting, leased} {
		if !slices.Contains(gotIDs, m.ID) {
			t.Errorf("session machine %s (%s) reaped", m.ID, pool.MetadataOf(m)[pool.KeySession])
		}
	}
	if len(st.Templates) != 1 || len(st.Standbys) != 1 || st.Standbys[0].ID != sb.ID {
		t.Errorf("template or standby touched: %d templates, standbys %v", len(st.Templates), ids(st.Standbys))
	}
	if got := testutil.ToFloat64(reconcileCounter(t, reg, "hangard_reconciler_machines_reaped_total", "reap", "")); got != 4 {
		t.Errorf("reaped metric: %v", got)
	}
}

// TestUnknownSessionMachineSpared: a replica whose store does not know a
// session (say it was started on the wrong store) warns and leaves the
// machine alone for UnknownGrace of continuous sightings; a restarted
// reconciler, or a machine that its store comes to know, starts over.
func TestUnknownSessionMachineSpared(t *testing.T) {
	e := newEnv(t, false)
	spec := e.spec("stranger", 0, 20, pool.StandbyStop)
	tmpl := e.createPool(spec)
	stranger := e.sessionMachine(spec.App, tmpl, "s-other-store")
	known := e.sessionMachine(spec.App, tmpl, "s-known-later")

	var clock atomic.Int64
	clock.Store(time.Now().Add(24 * time.Hour).UnixNano()) // the machines are old
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	var logs syncbuf.Buffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	newR := func() *reconcile.Reconciler {
		return e.reconciler(reconcile.Config{ReapGrace: time.Minute, UnknownGrace: 20 * time.Minute, Now: now, Logger: logger})
	}
	r := newR()
	for range 3 {
		if rep := round(t, r); rep.Reaped != 0 {
			t.Fatalf("reaped an old machine of an unknown session on sight: %+v", rep)
		}
		clock.Add(int64(5 * time.Minute))
	}
	if got := logs.String(); strings.Count(got, "[WARN]") != 2 || !strings.Contains(got, "does not know") ||
		!strings.Contains(got, stranger.ID) || !strings.Contains(got, known.ID) {
		t.Fatalf("want one warning per unknown machine, got:\n%s", got)
	}
	// A restart forgets the sightings: the grace starts again.
	r = newR()
	round(t, r)
	clock.Add(int64(15 * time.Minute))
	if rep := round(t, r); rep.Reaped != 0 {
		t.Fatalf("reaped after a restart before UnknownGrace: %+v", rep)
	}
	// The store comes to know one of them (its session is live there).
	e.session("s-known-later", store.StateReady, spec.App, known.ID)
	clock.Add(int64(10 * time.Minute))
	if rep := round(t, r); rep.Reaped != 1 {
		t.Fatalf("reaped %d after UnknownGrace, want 1", rep.Reaped)
	}
	got := ids(e.state(spec.App).Sessions)
	if slices.Contains(got, stranger.ID) || !slices.Contains(got, known.ID) {
		t.Fatalf("session machines left %v; want only %s", got, known.ID)
	}
	if !strings.Contains(logs.String(), "reaped a session machine whose session this store has not known") {
		t.Fatalf("reaping an unknown session's machine was not a warning:\n%s", logs.String())
	}
}

// blockingFly blocks the first ListApps until released, holding its round
// (and so the reconciler lock) open.
type blockingFly struct {
	reconcile.Fly
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (b *blockingFly) ListApps(ctx context.Context, o string) ([]fly.App, error) {
	b.once.Do(func() {
		close(b.entered)
		<-b.release
	})
	return b.Fly.ListApps(ctx, o)
}

func TestOneLeaderOnPostgres(t *testing.T) {
	e := newEnv(t, false)
	dsn := storetest.StartPostgres(t)
	open := func() store.Store {
		s, err := store.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	s1, s2 := open(), open()
	spec := e.spec("lead", 3, 10, pool.StandbyStop)
	e.createPool(spec)

	bf := &blockingFly{Fly: e.fly, entered: make(chan struct{}), release: make(chan struct{})}
	r1 := e.reconciler(reconcile.Config{Fly: bf, Store: s1})
	r2 := e.reconciler(reconcile.Config{Store: s2})

	done := make(chan reconcile.Report, 1)
	go func() {
		rep, err := r1.Round(context.Background())
		if err != nil {
			t.Errorf("r1: %v", err)
		}
		done <- rep
	}()
	<-bf.entered
	// r1 leads and is mid-round: r2 must stand by.
	rep2 := round(t, r2)
	if rep2.Leader || rep2.Created != 0 {
		t.Fatalf("r2 acted while r1 led: %+v", rep2)
	}
	close(bf.release)
	if rep1 := <-done; !rep1.Leader || rep1.Created != 3 {
		t.Fatalf("r1: %+v", rep1)
	}
	// r1's round is over: the lock is free for r2.
	if rep2 := round(t, r2); !rep2.Leader || rep2.Created != 0 {
		t.Fatalf("r2 after r1: %+v", rep2)
	}

	// Both running loops: the pool converges without overshoot.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, r := range []*reconcile.Reconciler{e.reconciler(reconcile.Config{Store: s1, Interval: 20 * time.Millisecond}), e.reconciler(reconcile.Config{Store: s2, Interval: 20 * time.Millisecond})} {
		wg.Add(1)
		go func() { defer wg.Done(); r.Run(ctx) }()
	}
	// Take standbys away (as claims would) and watch them come back.
	for i := 0; i < 3; i++ {
		st := e.state(spec.App)
		if len(st.Standbys) > 0 {
			if err := e.fly.DestroyMachine(context.Background(), spec.App, st.Standbys[0].ID, true, ""); err != nil && !errors.Is(err, fly.ErrNotFound) {
				t.Fatal(err)
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			n := len(e.state(spec.App).Standbys)
			if n > 3 {
				t.Fatalf("overshoot: %d standbys", n)
			}
			if n == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("not refilled: %d standbys", n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	cancel()
	wg.Wait()
	if n := len(e.state(spec.App).Standbys); n != 3 {
		t.Errorf("standbys at the end: %d", n)
	}
}
