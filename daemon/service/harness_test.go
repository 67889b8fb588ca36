package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/hangarhq/hangar/daemon/config"
	"github.com/hangarhq/hangar/daemon/server"
	"github.com/hangarhq/hangar/daemon/service"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/flyemu"
	"github.com/hangarhq/hangar/internal/flyemu/flyemutest"
	"github.com/hangarhq/hangar/internal/gittest"
	"github.com/hangarhq/hangar/internal/pool"
	"github.com/hangarhq/hangar/internal/syncbuf"
	"github.com/hangarhq/hangar/internal/testbin"
	"github.com/hangarhq/hangar/internal/wire"
)

const (
	testPool = "test"
	testApp  = "hangar-test"
	region   = "iad"
	adminKey = "hga_test-admin-key-0123456789"
)

// env is a Fly emulator running the real agent, with one pool whose agents
// dial home through lb to whichever replica it picks.
type env struct {
	emu       *flyemutest.Server
	lb        *balancer
	gitCA     string // the CA file the pool's git trusts (GIT_SSL_CAINFO): see git
	fly       *fly.Client
	brokerKey string
	template  *fly.Machine
	standbys  []string
}

func newEnv(t *testing.T, standbys, maxMachines int) *env {
	return newEnvMode(t, standbys, maxMachines, pool.StandbyStop)
}

func newEnvMode(t *testing.T, standbys, maxMachines int, mode pool.StandbyMode) *env {
	return newEnvSpec(t, standbys, func(s *pool.Spec) { s.MaxMachines, s.StandbyMode = maxMachines, mode })
}

// newEnvSpec makes the emulator and the pool; tune adjusts the pool's spec.
func newEnvSpec(t *testing.T, standbys int, tune func(*pool.Spec)) *env {
	t.Helper()
	return newEnvEmu(t, flyemu.Config{AgentBinary: testbin.Path(t, testbin.Agent)}, standbys, tune)
}

// newEnvEmu is newEnvSpec with the emulator's configuration (its org and
// region are the harness's).
func newEnvEmu(t *testing.T, emuCfg flyemu.Config, standbys int, tune func(*pool.Spec)) *env {
	t.Helper()
	emuCfg.Org, emuCfg.Region = "personal", region
	if dir := os.Getenv("HANGAR_TEST_LOG_DIR"); dir != "" && emuCfg.DataDir == "" {
		// Keep the machines' logs (machine.log in their directories).
		d, err := os.MkdirTemp(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-emu-") //nolint:usetesting // outlives the test on purpose
		if err != nil {
			t.Fatal(err)
		}
		emuCfg.DataDir = d
	}
	emu := flyemutest.Start(t, emuCfg)
	c, err := fly.New(fly.Options{BaseURL: emu.URL})
	if err != nil {
		t.Fatal(err)
	}
	k, err := agentauth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{emu: emu, fly: c, brokerKey: agentauth.EncodePrivateKey(k), lb: newBalancer(t, emu.InternetAddr().String()),
		gitCA: filepath.Join(t.TempDir(), "git-ca.pem")}
	ctx := context.Background()
	spec := pool.Spec{
		Pool: testPool, App: testApp, Regions: []string{region}, Image: "hangar-worker:test",
		Guest:      pool.Guest{CPUKind: "shared", CPUs: 1, MemoryMB: 1024},
		Env:        map[string]string{"HANGAR_WORKSPACE": "workspace", "GIT_SSL_CAINFO": e.gitCA},
		MinStandby: 1, MaxMachines: 4, StandbyMode: pool.StandbyStop,
		IdleTimeout: time.Hour, SessionTTL: time.Hour, AgentPort: pool.DefaultAgentPort,
		BrokerPublicKeys: []string{agentauth.EncodePublicKey(agentauth.NewSigner(k).PublicKey())},
		DaemonURL:        e.lb.URL,
	}
	tune(&spec)
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateApp(ctx, fly.CreateAppRequest{Name: testApp, OrgSlug: "personal", Network: spec.Network}); err != nil {
		t.Fatal(err)
	}
	e.template, err = c.CreateMachine(ctx, testApp, spec.CreateTemplateRequest())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < standbys; i++ {
		// A suspend-mode standby is suspended once its agent is up, as the
		// reconciler does (there it answers a health check): here, once it
		// has dialled home, there being no replica yet to answer.
		var opts pool.StandbyOptions
		if spec.StandbyMode == pool.StandbySuspend && spec.DaemonURL == e.lb.URL {
			seen := e.lb.count()
			opts.Probe = func(ctx context.Context, _ *fly.Machine) error { return e.lb.waitBeyond(ctx, seen) }
		}
		m, err := pool.CreateStandby(ctx, c, testApp, e.template, region, opts)
		if err != nil {
			t.Fatal(err)
		}
		e.standbys = append(e.standbys, m.ID)
	}
	return e
}

// replica is one running daemon.
type replica struct {
	*service.Daemon
	logs *syncbuf.Buffer
	addr string // listen address, as the balancer dials it
}

func (e *env) start(t *testing.T, dsn string) *replica {
	t.Helper()
	return e.startWith(t, dsn, nil)
}

// startWith starts a replica, letting tune adjust its options.
func (e *env) startWith(t *testing.T, dsn string, tune func(*service.Options)) *replica {
	t.Helper()
	if dsn == "" {
		dsn = "sqlite://" + filepath.Join(t.TempDir(), "hangard.db")
	}
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.FlyAPIURL, cfg.FlyOrg = e.emu.URL, "personal"
	cfg.StoreDSN, cfg.BrokerKey, cfg.AdminKey = dsn, e.brokerKey, adminKey
	cfg.LogFormat, cfg.LogLevel = "json", "debug"
	// Generous: a loaded 2-core machine can starve a replica for seconds, and a
	// replica wrongly taken for dead fails its claims.
	cfg.HeartbeatInterval, cfg.DeadAfter = 500*time.Millisecond, 8*time.Second
	// The pool refresh lists the pool's app, which Fly allows about once a
	// second for everything (claims and reconciler included): the default,
	// 30 s, as in production (a miss refreshes at once anyway).
	cfg.SweepInterval, cfg.PoolRefresh = 500*time.Millisecond, 30*time.Second
	cfg.ReadyTimeout = 90 * time.Second
	cfg.DaemonURL, cfg.FlyOIDCIssuer = e.lb.URL, e.emu.OIDCIssuer("personal")
	cfg.InternalListen = "127.0.0.1:0"
	logs := &syncbuf.Buffer{}
	opts := service.Options{Config: cfg, LogOutput: logs, DispatchInterval: 50 * time.Millisecond}
	if tune != nil {
		tune(&opts)
	}
	d, err := service.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(d.URL, "http://")
	e.lb.add(addr)
	t.Cleanup(func() {
		e.lb.remove(addr)
		d.Close()
		if t.Failed() {
			if dir := os.Getenv("HANGAR_TEST_LOG_DIR"); dir != "" {
				// Whole logs for a failure that needs more than the tail.
				_ = os.WriteFile(filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+d.DaemonID+".log"), []byte(logs.String()), 0o644)
			}
			t.Logf("replica %s log (tail):\n%s", d.DaemonID, logs.Tail(20000))
		}
	})
	return &replica{Daemon: d, logs: logs, addr: addr}
}

// git starts a git server the pool's machines can reach (https on the
// emulator's internet address) and points the pool's git at its CA.
func (e *env) git(t *testing.T) *gittest.Server {
	t.Helper()
	g := gittest.Start(t, gittest.Options{Addr: net.JoinHostPort(e.emu.InternetAddr().String(), "0"), TLS: true})
	pem, err := os.ReadFile(g.CAFile)
	if err == nil {
		err = os.WriteFile(e.gitCA, pem, 0o644)
	}
	if err != nil {
		t.Fatalf("trust the git server's certificate: %v", err)
	}
	return g
}

// ---- HTTP client validating every answer against the OpenAPI document ----

var (
	oaOnce   sync.Once
	oaRouter routers.Router
	oaErr    error
)

func openAPIRouter(t *testing.T) routers.Router {
	oaOnce.Do(func() {
		l := openapi3.NewLoader()
		doc, err := l.LoadFromData(server.OpenAPI)
		if err != nil {
			oaErr = err
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			oaErr = fmt.Errorf("openapi document invalid: %w", err)
			return
		}
		oaRouter, oaErr = legacy.NewRouter(doc)
	})
	if oaErr != nil {
		t.Fatal(oaErr)
	}
	return oaRouter
}

type api struct {
	t    *testing.T
	base string
	key  string
	mu   *sync.Mutex
	seen *[]string // every response body, for the secret scan
}

func newAPI(t *testing.T, base, key string) *api {
	return &api{t: t, base: base, key: key, mu: &sync.Mutex{}, seen: &[]string{}}
}

func (a *api) with(key string) *api {
	c := *a
	c.key = key
	return &c
}

// do sends a request (body: nil, a string sent raw, or a value sent as
// JSON) and returns the status and body, after checking the answer against
// the OpenAPI document.
func (a *api) do(method, path string, body any) (int, []byte, http.Header) {
	a.t.Helper()
	var rd io.Reader
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			a.t.Fatal(err)
		}
	}
	if raw != nil {
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.key != "" {
		req.Header.Set("Authorization", "Bearer "+a.key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	a.mu.Lock()
	*a.seen = append(*a.seen, string(out))
	a.mu.Unlock()
	a.validate(req, raw, resp, out)
	return resp.StatusCode, out, resp.Header
}

func (a *api) validate(req *http.Request, reqBody []byte, resp *http.Response, body []byte) {
	a.t.Helper()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		return
	}
	r := openAPIRouter(a.t)
	vreq := req.Clone(context.Background())
	vreq.URL.Host, vreq.URL.Scheme, vreq.Host = "", "", ""
	route, params, err := r.FindRoute(vreq)
	if err != nil {
		if resp.StatusCode == http.StatusNotFound && strings.HasPrefix(req.URL.Path, "/v1/") {
			return // an unknown endpoint: not in the document, by design
		}
		a.t.Errorf("%s %s: not in the OpenAPI document: %v", req.Method, req.URL.Path, err)
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: vreq, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status: resp.StatusCode, Header: resp.Header, Body: io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		a.t.Errorf("%s %s -> %d does not match the OpenAPI document: %v\nbody: %s", req.Method, req.URL.Path, resp.StatusCode, err, body)
	}
}

// json decodes a 2xx answer into v.
func (a *api) json(method, path string, body any, want int, v any) {
	a.t.Helper()
	st, b, _ := a.do(method, path, body)
	if st != want {
		a.t.Fatalf("%s %s: status %d, want %d: %s", method, path, st, want, b)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			a.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

type session struct {
	ID            string `json:"id"`
	Tenant        string `json:"tenant"`
	State         string `json:"state"`
	Reason        string `json:"reason"`
	MachineID     string `json:"machine_id"`
	SessionBranch string `json:"session_branch"`
	QueuePosition int    `json:"queue_position"`
	Push          *struct {
		Ref     string `json:"ref"`
		Commit  string `json:"commit"`
		OK      bool   `json:"ok"`
		Message string `json:"message"`
	} `json:"push"`
}

type tenant struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	APIKey string `json:"api_key"`
}

func (a *api) createTenant(name string, extra map[string]any) tenant {
	a.t.Helper()
	body := map[string]any{"name": name, "pools": []string{testPool}}
	for k, v := range extra {
		body[k] = v
	}
	var tn tenant
	a.with(adminKey).json("POST", "/v1/tenants", body, http.StatusCreated, &tn)
	return tn
}

// waitState polls a session until done(state) or the test's patience ends.
func (a *api) waitState(id string, done func(s session) bool) session {
	a.t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for {
		var s session
		a.json("GET", "/v1/sessions/"+id, nil, http.StatusOK, &s)
		if done(s) {
			return s
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("session %s stuck in %s (%s)", id, s.State, s.Reason)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func isState(states ...string) func(session) bool {
	return func(s session) bool {
		for _, st := range states {
			if s.State == st {
				return true
			}
		}
		return false
	}
}

// ---- a minimal attach client that tracks offsets ----

type term struct {
	t        *testing.T
	c        *websocket.Conn
	out      []byte // output received since attach, starting at offset start
	start    int64
	attached wire.Attached
	states   []wire.State
	exit     *wire.Exit
}

func wsURL(base string) string { return "ws" + strings.TrimPrefix(base, "http") }

func dialAttach(t *testing.T, url string, header http.Header, from, inputFrom int64) (*term, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: header, Subprotocols: []string{wire.SubprotocolPTY}})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("status %d: %w", resp.StatusCode, err)
		}
		return nil, err
	}
	c.SetReadLimit(16 << 20)
	tm := &term{t: t, c: c}
	if err := c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Attach{From: from, InputFrom: inputFrom, Cols: 80, Rows: 24})); err != nil {
		return nil, err
	}
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return nil, fmt.Errorf("before attached: %w", err)
		}
		if typ != websocket.MessageText {
			return nil, fmt.Errorf("binary frame before attached")
		}
		m, err := wire.Decode(data)
		if err != nil {
			return nil, err
		}
		switch m := m.(type) {
		case *wire.State:
			tm.states = append(tm.states, *m)
		case *wire.Attached:
			tm.attached, tm.start = *m, m.From
			return tm, nil
		case *wire.Error:
			return nil, m
		}
	}
}

func (tm *term) send(s string) {
	tm.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tm.c.Write(ctx, websocket.MessageBinary, []byte(s)); err != nil {
		tm.t.Fatal(err)
	}
}

// readUntil reads until the output holds want (after the output's first
// byte) or the stream ends.
func (tm *term) readUntil(want string) {
	tm.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for !bytes.Contains(tm.out, []byte(want)) {
		typ, data, err := tm.c.Read(ctx)
		if err != nil {
			tm.t.Fatalf("waiting for %q: %v; output so far: %q", want, err, tm.out)
		}
		if typ == websocket.MessageBinary {
			tm.out = append(tm.out, data...)
			continue
		}
		m, err := wire.Decode(data)
		if err != nil {
			tm.t.Fatal(err)
		}
		switch m := m.(type) {
		case *wire.Ping:
			tm.c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Pong{TS: m.TS}))
		case *wire.Gap:
			tm.t.Fatalf("unexpected gap %+v", m)
		case *wire.Exit:
			tm.exit = m
		}
	}
}

// readAtLeast reads until the output holds at least n bytes.
func (tm *term) readAtLeast(n int) {
	tm.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for len(tm.out) < n {
		typ, data, err := tm.c.Read(ctx)
		if err != nil {
			tm.t.Fatalf("waiting for %d bytes: %v; have %d", n, err, len(tm.out))
		}
		if typ == websocket.MessageBinary {
			tm.out = append(tm.out, data...)
		}
	}
}

func (tm *term) close() { tm.c.Close(websocket.StatusNormalClosure, "bye") }

func bearer(key string) http.Header {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+key)
	return h
}
