package service_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hangarhq/hangar/daemon/config"
	"github.com/hangarhq/hangar/daemon/service"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/fly"
)

// flakyStore fails every write while broken is set, as a store on a full
// disk or a read-only file system does; reads keep working.
type flakyStore struct {
	store.Store
	broken atomic.Bool
}

var errDiskFull = errors.New("disk full (test)")

func (f *flakyStore) Heartbeat(ctx context.Context, id string, now time.Time) error {
	if f.broken.Load() {
		return errDiskFull
	}
	return f.Store.Heartbeat(ctx, id, now)
}

func (f *flakyStore) CreateSession(ctx context.Context, s *store.Session) error {
	if f.broken.Load() {
		return errDiskFull
	}
	return f.Store.CreateSession(ctx, s)
}

func (f *flakyStore) UpdateSession(ctx context.Context, id string, from []store.SessionState, fn func(*store.Session) error) (*store.Session, error) {
	if f.broken.Load() {
		return nil, errDiskFull
	}
	return f.Store.UpdateSession(ctx, id, from, fn)
}

// TestReadyzFollowsStoreWrites: /readyz turns 503, naming the store write
// that fails, while the store cannot be written (it used to stay 200,
// probing with a read), /metrics says the same, and both recover when the
// store does.
func TestReadyzFollowsStoreWrites(t *testing.T) {
	e := newEnv(t, 0, 4)
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "hangard.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fs := &flakyStore{Store: st}
	d := e.startTuned(t, func(cfg *config.Config, o *service.Options) {
		cfg.HeartbeatInterval = 100 * time.Millisecond
		o.Store = fs
	})
	a := newAPI(t, d.URL, "")

	waitReady := func(want int, body string) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			code, out, _ := a.do("GET", "/readyz", nil)
			if code == want && strings.Contains(string(out), body) {
				return string(out)
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz: %d %s; want %d with %q", code, out, want, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	metric := func() string {
		t.Helper()
		_, out, _ := a.do("GET", "/metrics", nil)
		return string(out)
	}
	waitReady(200, `"ok":true`)
	if m := metric(); !strings.Contains(m, "hangard_ready 1") {
		t.Errorf("/metrics lacks hangard_ready 1")
	}

	fs.broken.Store(true)
	body := waitReady(503, "store_write")
	if !strings.Contains(body, "disk full (test)") {
		t.Errorf("/readyz %s does not name the failing write", body)
	}
	if m := metric(); !strings.Contains(m, "hangard_ready 0") || !strings.Contains(m, `hangard_readiness_problem{check="store_write",severity="unready"} 1`) {
		t.Errorf("/metrics does not report the store problem")
	}

	fs.broken.Store(false)
	waitReady(200, `"reasons":[]`)
}

// startTuned starts a replica like env.start (env.startWith), with tune
// given the whole configuration as well as the options.
func (e *env) startTuned(t *testing.T, tune func(*config.Config, *service.Options)) *service.Daemon {
	t.Helper()
	return e.startWith(t, "", func(o *service.Options) { tune(&o.Config, o) }).Daemon
}

// flakyFly sits between the daemon and the emulator and fails machine
// starts: the first failBefore attempts with 503 before they reach Fly, the
// next one after Fly acted (the answer is lost: 502).
type flakyFly struct {
	proxy      *httputil.ReverseProxy
	failBefore int
	mu         sync.Mutex
	starts     int
}

func (f *flakyFly) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/start") {
		f.mu.Lock()
		f.starts++
		n := f.starts
		f.mu.Unlock()
		switch {
		case n <= f.failBefore:
			http.Error(w, `{"error":"service unavailable (test)"}`, http.StatusServiceUnavailable)
			return
		case n == f.failBefore+1:
			f.proxy.ServeHTTP(httptest.NewRecorder(), r)
			http.Error(w, `{"error":"bad gateway (test)"}`, http.StatusBadGateway)
			return
		}
	}
	f.proxy.ServeHTTP(w, r)
}

// TestTransientFlyErrorsAfterClaim: Fly failing a machine start with
// 5xx for longer than the Fly client retries, then starting it but losing
// the answer, delays the session but does not fail it (it used to abort the
// claim and destroy the machine).
func TestTransientFlyErrorsAfterClaim(t *testing.T) {
	e := newEnv(t, 1, 4)
	u, err := url.Parse(e.emu.URL)
	if err != nil {
		t.Fatal(err)
	}
	ff := &flakyFly{proxy: httputil.NewSingleHostReverseProxy(u), failBefore: 7}
	proxy := httptest.NewServer(ff)
	t.Cleanup(proxy.Close)
	d := e.startTuned(t, func(cfg *config.Config, o *service.Options) { cfg.FlyAPIURL = proxy.URL })
	a := newAPI(t, d.URL, "")
	tn := a.createTenant("acme", nil)
	ua := a.with(tn.APIKey)
	var s session
	ua.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &s)
	s = ua.waitState(s.ID, isState("ready", "failed"))
	if s.State != "ready" {
		t.Fatalf("session %s, want ready: %s", s.State, s.Reason)
	}
	ff.mu.Lock()
	starts := ff.starts
	ff.mu.Unlock()
	if starts <= ff.failBefore+1 {
		t.Errorf("only %d start attempts: the faults were not exercised", starts)
	}
}

// TestRestartSettlesOwnClaims: a replica that crashed in the middle of a
// claim (its session starting, the machine under its Fly lease) and comes
// back with the same replica id fails that claim at once, naming why, and
// destroys the machine as soon as the dead claim's short lease runs out,
// without waiting to be declared dead or for the reaper.
func TestRestartSettlesOwnClaims(t *testing.T) {
	e := newEnv(t, 1, 4)
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "hangard.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	const replicaID = "r-crashed"
	tn := &store.Tenant{Name: "acme", Pools: []string{testPool}, KeyHash: []byte("k")}
	if err := st.CreateTenant(ctx, tn); err != nil {
		t.Fatal(err)
	}
	mach := e.standbys[0]
	// What the crashed process left: the machine leased by its claim (8 s,
	// as claims take them) and the session starting on it.
	if _, err := e.fly.AcquireLease(ctx, testApp, mach, 8*time.Second, "hangar claim (crashed)"); err != nil {
		t.Fatal(err)
	}
	sess := &store.Session{ID: "01crashedclaim", TenantID: tn.ID, Pool: testPool, State: store.StatePending, AppName: testApp, Owner: replicaID, Mode: "pty"}
	if err := st.CreateSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateSession(ctx, sess.ID, nil, func(s *store.Session) error {
		s.State, s.MachineID = store.StateStarting, mach
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.Heartbeat(ctx, replicaID, time.Now()); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	e.startTuned(t, func(cfg *config.Config, o *service.Options) {
		cfg.ReplicaID = replicaID
		o.Store = st
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := st.GetSession(ctx, sess.ID)
		if err != nil {
			t.Fatal(err)
		}
		if s.State == store.StateFailed {
			if !strings.Contains(s.Reason, "restarted before the session was ready") {
				t.Errorf("reason %q does not say the replica restarted", s.Reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("claim left by the crashed process still %s after %v", s.State, time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The lease lasts 8 s; the destroy loop retries every ≤2 s.
	deadline = time.Now().Add(20 * time.Second)
	for {
		m, err := e.fly.GetMachine(ctx, testApp, mach)
		gone := errors.Is(err, fly.ErrNotFound) || (err == nil && (m.State == fly.StateDestroyed || m.State == fly.StateDestroying))
		// The destroy is recorded as owed until the destroy loop is done.
		if ps, perr := st.PendingDestroys(ctx, 0); gone && perr == nil && len(ps) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("machine %s still there %v after the restart (%v, %+v)", mach, time.Since(start), err, m)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("machine destroyed %v after the restart", time.Since(start).Round(time.Millisecond))
}

// lostCreate forwards machine creates to Fly but loses the answer of the
// first session machine's create (Fly made it; the daemon cannot tell).
type lostCreate struct {
	proxy *httputil.ReverseProxy
	mu    sync.Mutex
	lost  int
}

func (l *lostCreate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/machines") {
		l.mu.Lock()
		first := l.lost == 0
		l.lost++
		l.mu.Unlock()
		if first {
			l.proxy.ServeHTTP(httptest.NewRecorder(), r)
			http.Error(w, `{"error":"bad gateway (test)"}`, http.StatusBadGateway)
			return
		}
	}
	l.proxy.ServeHTTP(w, r)
}

// TestLostCreateAnswerAdopted: when Fly creates a session's machine but the
// answer is lost, the claim adopts that machine instead of creating another
// and leaving the first running until the reaper's grace.
func TestLostCreateAnswerAdopted(t *testing.T) {
	e := newEnv(t, 0, 4)
	u, err := url.Parse(e.emu.URL)
	if err != nil {
		t.Fatal(err)
	}
	lc := &lostCreate{proxy: httputil.NewSingleHostReverseProxy(u)}
	proxy := httptest.NewServer(lc)
	t.Cleanup(proxy.Close)
	d := e.startTuned(t, func(cfg *config.Config, o *service.Options) { cfg.FlyAPIURL = proxy.URL })
	a := newAPI(t, d.URL, "")
	ua := a.with(a.createTenant("acme", nil).APIKey)
	var s session
	ua.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &s)
	s = ua.waitState(s.ID, isState("ready", "failed"))
	if s.State != "ready" {
		t.Fatalf("session %s: %s", s.State, s.Reason)
	}
	all, err := e.fly.ListMachines(context.Background(), testApp, fly.ListMachinesOptions{IncludeDeleted: true, Metadata: map[string]string{"hangar_session": s.ID}})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].ID != s.MachineID {
		ids := []string{}
		for _, m := range all {
			ids = append(ids, m.ID+" "+m.State)
		}
		t.Fatalf("machines made for the session: %v; want only its own %s", ids, s.MachineID)
	}
}
