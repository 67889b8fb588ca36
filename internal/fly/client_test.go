package fly

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hangarhq/hangar/internal/flyspec"
)

func TestEveryCallMatchesSpec(t *testing.T) {
	f := newFakeFly(t)
	c := f.client(Options{Token: "tok"})
	ctx := context.Background()
	app, id := "app1", "148e1234567890"

	if _, err := c.CreateApp(ctx, CreateAppRequest{Name: app, OrgSlug: "personal", Network: "net-1"}); err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := json.Unmarshal(f.last("POST", "/v1/apps").Body, &body); err != nil {
		t.Fatal(err)
	}
	if body["name"] != app || body["org_slug"] != "personal" || body["network"] != "net-1" || body["app_name"] != nil {
		t.Fatalf("create app body = %v", body)
	}
	mustOK(t)(c.GetApp(ctx, app))
	mustOK(t)(c.ListApps(ctx, "personal"))
	must(t, c.DeleteApp(ctx, app, true))
	if q := f.last("DELETE", "/v1/apps/"+app).Query; q.Get("force") != "true" {
		t.Fatalf("delete app query = %v", q)
	}

	cfg := &MachineConfig{
		Image:       "registry.example/img:1",
		Guest:       &Guest{CPUKind: "shared", CPUs: 1, MemoryMB: 512},
		Env:         map[string]string{"A": "b"},
		Metadata:    map[string]string{"hangar_pool": "p1"},
		Init:        &Init{Exec: []string{"/bin/agent"}},
		Restart:     &Restart{Policy: RestartNo},
		AutoDestroy: true,
		StopConfig:  &StopConfig{Signal: "SIGTERM", Timeout: NewDuration(10 * time.Second)},
		Services: []Service{{Protocol: "tcp", InternalPort: 8080, Autostop: ptr(AutostopSuspend),
			Ports: []Port{{Port: ptr(443), Handlers: []string{"tls", "http"}}}}},
		Checks: map[string]Check{"alive": {ServiceCheck: ServiceCheck{Type: "http", Port: ptr(8080), Path: "/v1/health", Interval: NewDuration(15 * time.Second), Timeout: NewDuration(2 * time.Second)}}},
		DNS:    &DNSConfig{SkipRegistration: true},
	}
	m, err := c.CreateMachine(ctx, app, CreateMachineRequest{Config: cfg, Region: "ord", Name: "standby-1", SkipLaunch: true, LeaseTTL: 30})
	if err != nil {
		t.Fatal(err)
	}
	if m.Nonce == "" || m.Config.StopConfig.Timeout.Duration != 10*time.Second {
		t.Fatalf("create machine = %+v", m)
	}
	raw := string(f.last("POST", "/v1/apps/"+app+"/machines").Body)
	for _, want := range []string{`"skip_launch":true`, `"lease_ttl":30`, `"region":"ord"`, `"timeout":"10s"`, `"autostop":"suspend"`, `"interval":"15s"`} {
		if !strings.Contains(raw, want) {
			t.Errorf("create machine body lacks %s: %s", want, raw)
		}
	}
	mustOK(t)(c.GetMachine(ctx, app, id))
	mustOK(t)(c.ListMachines(ctx, app, ListMachinesOptions{Metadata: map[string]string{"hangar_pool": "p1"}, States: []string{"started"}}))
	mustOK(t)(c.UpdateMachine(ctx, app, id, UpdateMachineRequest{Config: cfg, CurrentVersion: "01J00000000000000000000000"}, "nonce1"))
	mustOK(t)(c.StartMachine(ctx, app, id, "nonce1"))
	must(t, c.StopMachine(ctx, app, id, StopRequest{Signal: "SIGTERM", Timeout: NewDuration(5 * time.Second)}, "nonce1"))
	if b := string(f.last("POST", "/v1/apps/"+app+"/machines/"+id+"/stop").Body); b != `{"signal":"SIGTERM","timeout":"5s"}` {
		t.Fatalf("stop body = %s", b)
	}
	must(t, c.SuspendMachine(ctx, app, id, "nonce1"))
	must(t, c.RestartMachine(ctx, app, id, RestartOptions{Signal: "SIGTERM", Timeout: 3 * time.Second}, ""))
	must(t, c.SignalMachine(ctx, app, id, "SIGUSR1", ""))
	must(t, c.CordonMachine(ctx, app, id, ""))
	must(t, c.UncordonMachine(ctx, app, id, ""))
	mustOK(t)(c.WaitMachine(ctx, app, id, WaitOptions{States: []string{StateStarted, StateStopped}, Timeout: 5 * time.Second, Version: "01J00000000000000000000000", FromEventID: "01J00000000000000000000001"}))
	mustOK(t)(c.ListEvents(ctx, app, id, 50))
	l, err := c.AcquireLease(ctx, app, id, 30*time.Second, "claim")
	if err != nil || l.Nonce() != "abcdef123456" {
		t.Fatalf("acquire = %+v, %v", l, err)
	}
	mustOK(t)(c.RefreshLease(ctx, app, id, l.Nonce(), 30*time.Second))
	mustOK(t)(c.GetLease(ctx, app, id))
	must(t, c.ReleaseLease(ctx, app, id, l.Nonce()))
	md, err := c.GetMetadata(ctx, app, id)
	if err != nil || md["hangar_pool"] != "p1" {
		t.Fatalf("metadata = %v, %v", md, err)
	}
	if v, err := c.GetMetadataKey(ctx, app, id, "hangar_pool"); err != nil || v != "p1" {
		t.Fatalf("metadata key = %q, %v", v, err)
	}
	if _, err := c.GetMetadataKey(ctx, app, id, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing metadata key: %v", err)
	}
	must(t, c.SetMetadata(ctx, app, id, "hangar_session", "s1", "nonce1"))
	must(t, c.DeleteMetadata(ctx, app, id, "hangar_session", "nonce1"))
	must(t, c.UpdateMetadata(ctx, app, id, UpdateMetadataRequest{Metadata: map[string]*string{"a": ptr("b"), "c": ptr("")}}, ""))
	must(t, c.DestroyMachine(ctx, app, id, true, "nonce1"))
	if q := f.last("DELETE", "/v1/apps/"+app+"/machines/"+id).Query; q.Get("force") != "true" || q.Has("kill") {
		t.Fatalf("destroy query = %v", q)
	}
	mustOK(t)(c.ListSecrets(ctx, app, false))
	mustOK(t)(c.SetSecret(ctx, app, "API", "v"))
	mustOK(t)(c.UpdateSecrets(ctx, app, map[string]*string{"A": ptr("1"), "B": ptr("2")}))
	must(t, c.DeleteSecret(ctx, app, "API"))
}

func TestAuthorizationScheme(t *testing.T) {
	for _, tc := range []struct{ token, want string }{
		{"plain-token", "Bearer plain-token"},
		{"Bearer plain-token", "Bearer plain-token"},
		{"fm2_abc,fm2_def", "FlyV1 fm2_abc,fm2_def"},
		{"FlyV1 fm1r_xyz", "FlyV1 fm1r_xyz"},
		{"", ""},
	} {
		f := newFakeFly(t)
		c := f.client(Options{Token: tc.token})
		mustOK(t)(c.GetApp(context.Background(), "a"))
		if got := f.last("GET", "/v1/apps/a").Header.Get("Authorization"); got != tc.want {
			t.Errorf("token %q: Authorization = %q, want %q", tc.token, got, tc.want)
		}
	}
}

func TestLeaseNonceHeader(t *testing.T) {
	f := newFakeFly(t)
	c := f.client(Options{})
	ctx := context.Background()
	base := "/v1/apps/a/machines/m1"
	l, err := c.AcquireLease(ctx, "a", "m1", 1500*time.Millisecond, "why")
	if err != nil {
		t.Fatal(err)
	}
	acq := f.last("POST", base+"/lease")
	if acq.Header.Get(LeaseNonceHeader) != "" || string(acq.Body) != `{"ttl":2,"description":"why"}` || len(acq.Query) != 0 {
		t.Fatalf("acquire sent header %q body %s query %v", acq.Header.Get(LeaseNonceHeader), acq.Body, acq.Query)
	}
	if _, err := c.RefreshLease(ctx, "a", "m1", l.Nonce(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := f.last("POST", base+"/lease").Header.Get(LeaseNonceHeader); got != l.Nonce() {
		t.Fatalf("refresh nonce header = %q", got)
	}
	must(t, c.ReleaseLease(ctx, "a", "m1", l.Nonce()))
	if got := f.last("DELETE", base+"/lease").Header.Get(LeaseNonceHeader); got != l.Nonce() {
		t.Fatalf("release nonce header = %q", got)
	}
	calls := []struct {
		method, path string
		call         func() error
	}{
		{"POST", base + "/start", func() error { _, err := c.StartMachine(ctx, "a", "m1", "n1"); return err }},
		{"POST", base + "/stop", func() error { return c.StopMachine(ctx, "a", "m1", StopRequest{}, "n1") }},
		{"POST", base + "/suspend", func() error { return c.SuspendMachine(ctx, "a", "m1", "n1") }},
		{"POST", base, func() error {
			_, err := c.UpdateMachine(ctx, "a", "m1", UpdateMachineRequest{Config: &MachineConfig{Image: "i"}}, "n1")
			return err
		}},
		{"DELETE", base, func() error { return c.DestroyMachine(ctx, "a", "m1", false, "n1") }},
		{"POST", base + "/metadata/k", func() error { return c.SetMetadata(ctx, "a", "m1", "k", "v", "n1") }},
	}
	for _, tc := range calls {
		must(t, tc.call())
		if got := f.last(tc.method, tc.path).Header.Get(LeaseNonceHeader); got != "n1" {
			t.Errorf("%s %s nonce header = %q", tc.method, tc.path, got)
		}
	}
	// Without a nonce no header is sent.
	if _, err := c.StartMachine(ctx, "a", "m1", ""); err != nil {
		t.Fatal(err)
	}
	if h := f.last("POST", base+"/start").Header; h.Get(LeaseNonceHeader) != "" {
		t.Fatalf("unexpected nonce header")
	}
	// A refresh answered with another nonce is an error.
	f.handle("POST /v1/apps/b/machines/m1/lease", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 201, Lease{Status: "success", Data: &LeaseData{Nonce: "other", ExpiresAt: 1}})
	})
	if _, err := c.RefreshLease(ctx, "b", "m1", "mine", time.Second); err == nil {
		t.Fatal("refresh with changed nonce succeeded")
	}
}

func TestLeaseConflict(t *testing.T) {
	f := newFakeFly(t)
	f.handle("POST /v1/apps/x/machines/m1/lease", func(w http.ResponseWriter, r *http.Request) {
		flyErr(w, http.StatusConflict, "lease currently held by someone@example.com, expires at 2026-01-01T00:00:00Z", "")
	})
	c := f.client(Options{})
	_, err := c.AcquireLease(context.Background(), "x", "m1", time.Minute, "")
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	if n := f.count("POST", "/v1/apps/x/machines/m1/lease"); n != 1 {
		t.Fatalf("conflicting acquire sent %d times", n)
	}
}

func TestMetadataFilterQuery(t *testing.T) {
	f := newFakeFly(t)
	c := f.client(Options{})
	_, err := c.ListMachines(context.Background(), "a", ListMachinesOptions{
		Metadata:       map[string]string{"hangar_pool": "p1", "hangar_role": "standby", "odd key": "a&b=c"},
		IncludeDeleted: true, Region: "ord", States: []string{"started", "stopped"}, Summary: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	q := f.last("GET", "/v1/apps/a/machines").Query
	want := url.Values{
		"metadata.hangar_pool": {"p1"}, "metadata.hangar_role": {"standby"}, "metadata.odd key": {"a&b=c"},
		"include_deleted": {"true"}, "region": {"ord"}, "state": {"started,stopped"}, "summary": {"true"},
	}
	if q.Encode() != want.Encode() {
		t.Fatalf("query = %s, want %s", q.Encode(), want.Encode())
	}
	// Empty options send no query at all.
	mustOK(t)(c.ListMachines(context.Background(), "a", ListMachinesOptions{}))
	if q := f.last("GET", "/v1/apps/a/machines").Query; len(q) != 0 {
		t.Fatalf("empty options sent %v", q)
	}
}

func TestErrorTyping(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int
		body     string
		sentinel error
		code     string
	}{
		{"not found", 404, `{"error":"machine not found"}`, ErrNotFound, ""},
		{"conflict", 409, `{"error":"lease held"}`, ErrConflict, ""},
		{"timeout", 408, `{"error":"timeout waiting"}`, ErrTimeout, ""},
		{"unauthorized", 401, `{"error":"bad token"}`, ErrUnauthorized, ""},
		{"forbidden", 403, `{"error":"no"}`, ErrForbidden, ""},
		{"precondition", 412, `{"error":"stale"}`, ErrPreconditionFailed, ""},
		{"capacity", 412, `{"error":"insufficient resources","status":"insufficient_capacity"}`, ErrInsufficientCapacity, "insufficient_capacity"},
		{"name taken code", 422, `{"error":"taken","status":"name_taken"}`, ErrNameTaken, "name_taken"},
		{"name taken text", 422, `{"error":"Validation failed: Name has already been taken"}`, ErrNameTaken, ""},
		{"message field", 400, `{"error":"x","message":"better message"}`, nil, ""},
		{"plain text", 400, `upstream broke`, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeFly(t)
			f.handle("GET /v1/apps/e", func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("fly-request-id", "rid-9")
				if strings.HasPrefix(tc.body, "{") {
					w.Header().Set("Content-Type", "application/json")
				}
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			})
			// A plain http.Client: these bodies deliberately break the spec.
			c := f.client(Options{HTTPClient: &http.Client{}})
			_, err := c.GetApp(context.Background(), "e")
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, not a *fly.Error", err)
			}
			if fe.StatusCode != tc.status || fe.RequestID != "rid-9" || fe.Code != tc.code || StatusCode(err) != tc.status {
				t.Fatalf("error = %+v", fe)
			}
			if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
				t.Fatalf("errors.Is(%v, %v) = false", err, tc.sentinel)
			}
			for _, other := range []error{ErrNotFound, ErrConflict, ErrTimeout, ErrRateLimited, ErrUnauthorized, ErrNameTaken, ErrInsufficientCapacity} {
				if other != tc.sentinel && errors.Is(err, other) {
					t.Errorf("err also matches %v", other)
				}
			}
			switch tc.name {
			case "message field":
				if fe.Message != "better message" {
					t.Errorf("message = %q", fe.Message)
				}
			case "plain text":
				if fe.Message != "upstream broke" {
					t.Errorf("message = %q", fe.Message)
				}
			}
			if !strings.Contains(err.Error(), "rid-9") || !strings.Contains(err.Error(), "get app e") {
				t.Errorf("error text lacks context: %v", err)
			}
		})
	}
}

func TestRetry429HonoursRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name       string
		retryAfter func() string
		min        time.Duration
	}{
		{"seconds", func() string { return "7" }, 7 * time.Second},
		{"http date", func() string { return time.Now().Add(20 * time.Second).UTC().Format(http.TimeFormat) }, 15 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeFly(t)
			var n atomic.Int32
			f.handle("POST /v1/apps/a/machines", func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) == 1 {
					w.Header().Set("Retry-After", tc.retryAfter())
					flyErr(w, http.StatusTooManyRequests, "rate limited", "")
					return
				}
				writeJSON(w, 200, sampleMachine("m1"))
			})
			c := f.client(Options{})
			var waits []time.Duration
			c.pause = func(ctx context.Context, d time.Duration) error { waits = append(waits, d); return nil }
			// No name: 429 is still retried, because Fly rejects before acting.
			m, err := c.CreateMachine(context.Background(), "a", CreateMachineRequest{Config: &MachineConfig{Image: "i"}})
			if err != nil || m.ID != "m1" {
				t.Fatalf("create = %v, %v", m, err)
			}
			if n.Load() != 2 || len(waits) != 1 || waits[0] < tc.min {
				t.Fatalf("attempts %d, waits %v (want one wait >= %v)", n.Load(), waits, tc.min)
			}
		})
	}
}

func TestRetryAfterTooLongGivesUp(t *testing.T) {
	f := newFakeFly(t)
	f.handle("GET /v1/apps/a", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3600")
		flyErr(w, http.StatusTooManyRequests, "slow down", "")
	})
	c := f.client(Options{MaxRetryAfter: time.Minute})
	_, err := c.GetApp(context.Background(), "a")
	var fe *Error
	if !errors.Is(err, ErrRateLimited) || !errors.As(err, &fe) || fe.RetryAfter != time.Hour {
		t.Fatalf("err = %v", err)
	}
	if n := f.count("GET", "/v1/apps/a"); n != 1 {
		t.Fatalf("sent %d times", n)
	}
}

func TestRetryBoundedAttempts(t *testing.T) {
	f := newFakeFly(t)
	f.handle("GET /v1/apps/a", func(w http.ResponseWriter, r *http.Request) {
		flyErr(w, http.StatusTooManyRequests, "slow down", "")
	})
	c := f.client(Options{MaxAttempts: 4})
	var waits []time.Duration
	c.pause = func(ctx context.Context, d time.Duration) error { waits = append(waits, d); return nil }
	if _, err := c.GetApp(context.Background(), "a"); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("err = %v", err)
	}
	if n := f.count("GET", "/v1/apps/a"); n != 4 || len(waits) != 3 {
		t.Fatalf("attempts %d, waits %v", n, waits)
	}
	for i, w := range waits {
		lo := DefaultMinBackoff << i / 2
		hi := DefaultMinBackoff << i
		if w < lo || w > hi {
			t.Errorf("backoff %d = %v, want in [%v, %v]", i, w, lo, hi)
		}
	}
}

func TestRetry503(t *testing.T) {
	f := newFakeFly(t)
	var n atomic.Int32
	f.handle("GET /v1/apps/a/machines/m1", func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 2 {
			flyErr(w, http.StatusServiceUnavailable, "try later", "")
			return
		}
		writeJSON(w, 200, sampleMachine("m1"))
	})
	var outcomes []int
	var mu sync.Mutex
	c := f.client(Options{OnResponse: func(method, action string, status int, err error) {
		mu.Lock()
		defer mu.Unlock()
		if action == "machine_get" && method == "GET" {
			outcomes = append(outcomes, status)
		}
	}})
	if _, err := c.GetMachine(context.Background(), "a", "m1"); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(outcomes, []int{503, 503, 200}) {
		t.Fatalf("OnResponse saw %v", outcomes)
	}
}

func TestCreateNotResentOnAmbiguousFailure(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(w http.ResponseWriter)
	}{
		{"503", func(w http.ResponseWriter) { flyErr(w, http.StatusServiceUnavailable, "oops", "") }},
		{"500", func(w http.ResponseWriter) { flyErr(w, http.StatusInternalServerError, "oops", "") }},
		{"408", func(w http.ResponseWriter) { flyErr(w, http.StatusRequestTimeout, "request timeout", "") }},
		{"dropped", hangUp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeFly(t)
			f.handle("POST /v1/apps/a/machines", func(w http.ResponseWriter, r *http.Request) { tc.fail(w) })
			f.handle("POST /v1/apps", func(w http.ResponseWriter, r *http.Request) { tc.fail(w) })
			f.handle("POST /v1/apps/a/machines/m1/lease", func(w http.ResponseWriter, r *http.Request) { tc.fail(w) })
			f.handle("POST /v1/apps/a/machines/m1/signal", func(w http.ResponseWriter, r *http.Request) { tc.fail(w) })
			c := f.client(Options{HTTPClient: &http.Client{}})
			ctx := context.Background()
			if _, err := c.CreateMachine(ctx, "a", CreateMachineRequest{Config: &MachineConfig{Image: "i"}}); err == nil {
				t.Fatal("create machine succeeded")
			}
			if _, err := c.AcquireLease(ctx, "a", "m1", time.Second, ""); err == nil {
				t.Fatal("acquire succeeded")
			}
			if err := c.SignalMachine(ctx, "a", "m1", "SIGTERM", ""); err == nil {
				t.Fatal("signal succeeded")
			}
			for _, p := range []string{"/v1/apps/a/machines", "/v1/apps/a/machines/m1/lease", "/v1/apps/a/machines/m1/signal"} {
				if n := f.count("POST", p); n != 1 {
					t.Errorf("POST %s sent %d times, want 1", p, n)
				}
			}
		})
	}
}

// hangUp drops the connection without an answer, after the request arrived.
func hangUp(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	conn.Close()
}

func TestCreateMachineRecoversByName(t *testing.T) {
	f := newFakeFly(t)
	var mu sync.Mutex
	var made []Machine
	old := sampleMachine("m0")
	old.Name = "standby-9" // an older machine sharing the name, e.g. a template being rewritten
	old.Config = &MachineConfig{Image: "i"}
	made = append(made, old)
	f.handle("POST /v1/apps/a/machines", func(w http.ResponseWriter, r *http.Request) {
		var req CreateMachineRequest
		json.NewDecoder(r.Body).Decode(&req)
		mu.Lock()
		made = append(made, Machine{ID: "m9", Name: req.Name, State: StateCreated, Config: req.Config,
			CreatedAt: time.Now().UTC().Format(time.RFC3339)})
		mu.Unlock()
		hangUp(w) // the machine exists, but the answer is lost
	})
	f.handle("GET /v1/apps/a/machines", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		writeJSON(w, 200, made)
	})
	c := f.client(Options{HTTPClient: &http.Client{}})
	cfg := &MachineConfig{Image: "i", Metadata: map[string]string{"hangar_spec": "h1"}}
	m, err := c.CreateMachine(context.Background(), "a", CreateMachineRequest{Name: "standby-9", Config: cfg})
	if err != nil || m.ID != "m9" {
		t.Fatalf("create = %+v, %v", m, err)
	}
	if n := f.count("POST", "/v1/apps/a/machines"); n != 1 {
		t.Fatalf("create sent %d times", n)
	}
	// With a lease asked for, the nonce is unknown: the caller must hear it.
	_, err = c.CreateMachine(context.Background(), "a", CreateMachineRequest{Name: "standby-9", LeaseTTL: 10, Config: cfg})
	if err == nil || !strings.Contains(err.Error(), "lease nonce is unknown") {
		t.Fatalf("leased ambiguous create: %v", err)
	}
}

func TestCreateMachineIgnoresOlderNamesake(t *testing.T) {
	f := newFakeFly(t)
	var n atomic.Int32
	f.handle("POST /v1/apps/a/machines", func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			flyErr(w, http.StatusBadGateway, "bad gateway", "") // nothing was created
			return
		}
		writeJSON(w, 200, Machine{ID: "new", Name: "tmpl", State: StateCreated})
	})
	f.handle("GET /v1/apps/a/machines", func(w http.ResponseWriter, r *http.Request) {
		old := sampleMachine("old") // created 2026-01-01, same name, different spec
		old.Name = "tmpl"
		writeJSON(w, 200, []Machine{old})
	})
	c := f.client(Options{})
	m, err := c.CreateMachine(context.Background(), "a", CreateMachineRequest{Name: "tmpl", Config: &MachineConfig{Image: "registry.example/img:1", Metadata: map[string]string{"hangar_pool": "p1"}}})
	if err != nil || m.ID != "new" {
		t.Fatalf("create = %+v, %v", m, err)
	}
}

func TestCreateMachineResendsWhenNameAbsent(t *testing.T) {
	f := newFakeFly(t)
	var n atomic.Int32
	f.handle("POST /v1/apps/a/machines", func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			flyErr(w, http.StatusBadGateway, "bad gateway", "") // failed before creating anything
			return
		}
		m := sampleMachine("m2")
		m.Name = "s2"
		writeJSON(w, 200, m)
	})
	c := f.client(Options{})
	m, err := c.CreateMachine(context.Background(), "a", CreateMachineRequest{Name: "s2", Config: &MachineConfig{Image: "i"}})
	if err != nil || m.ID != "m2" {
		t.Fatalf("create = %+v, %v", m, err)
	}
	if f.count("POST", "/v1/apps/a/machines") != 2 || f.count("GET", "/v1/apps/a/machines") != 1 {
		t.Fatalf("requests: %d creates, %d lists", f.count("POST", "/v1/apps/a/machines"), f.count("GET", "/v1/apps/a/machines"))
	}
}

func TestCreateAppRecoversByName(t *testing.T) {
	f := newFakeFly(t)
	var created atomic.Bool
	f.handle("POST /v1/apps", func(w http.ResponseWriter, r *http.Request) {
		created.Store(true)
		flyErr(w, http.StatusInternalServerError, "internal error", "")
	})
	f.handle("GET /v1/apps/{app}", func(w http.ResponseWriter, r *http.Request) {
		if !created.Load() {
			flyErr(w, 404, "app not found", "")
			return
		}
		writeJSON(w, 200, App{ID: "id1", Name: r.PathValue("app"), Status: "pending"})
	})
	c := f.client(Options{})
	app, err := c.CreateApp(context.Background(), CreateAppRequest{Name: "pool-a", OrgSlug: "personal"})
	if err != nil || app.Name != "pool-a" {
		t.Fatalf("create app = %+v, %v", app, err)
	}
	if n := f.count("POST", "/v1/apps"); n != 1 {
		t.Fatalf("create app sent %d times", n)
	}
}

// refuseFirst fails the first n round trips before anything is written, as
// a dial error does, then passes through.
type refuseFirst struct {
	n    atomic.Int32
	base http.RoundTripper
}

func (r *refuseFirst) RoundTrip(req *http.Request) (*http.Response, error) {
	if r.n.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	}
	return r.base.RoundTrip(req)
}

func TestCreateRetriedWhenCertainlyUnsent(t *testing.T) {
	f := newFakeFly(t)
	rt := &refuseFirst{base: flyspec.CheckingTransport(t, nil)}
	rt.n.Store(2)
	c := f.client(Options{HTTPClient: &http.Client{Transport: rt}})
	if _, err := c.CreateMachine(context.Background(), "a", CreateMachineRequest{Config: &MachineConfig{Image: "i"}}); err != nil {
		t.Fatal(err)
	}
	if n := f.count("POST", "/v1/apps/a/machines"); n != 1 {
		t.Fatalf("server saw %d creates", n)
	}
}

func TestDroppedConnectionRetriedForIdempotent(t *testing.T) {
	f := newFakeFly(t)
	var n atomic.Int32
	f.handle("GET /v1/apps/a/machines/m1", func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			hangUp(w)
			return
		}
		writeJSON(w, 200, sampleMachine("m1"))
	})
	var destroyed atomic.Bool
	f.handle("DELETE /v1/apps/a/machines/m1", func(w http.ResponseWriter, r *http.Request) {
		if destroyed.Swap(true) {
			flyErr(w, 404, "machine not found", "")
			return
		}
		hangUp(w) // the destroy happened; the answer is lost
	})
	c := f.client(Options{})
	if _, err := c.GetMachine(context.Background(), "a", "m1"); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 2 {
		t.Fatalf("get sent %d times", n.Load())
	}
	if err := c.DestroyMachine(context.Background(), "a", "m1", true, ""); err != nil {
		t.Fatalf("destroy after a lost answer: %v", err)
	}
}

func TestWaitLoopsOn408(t *testing.T) {
	f := newFakeFly(t)
	var n atomic.Int32
	var timeouts []string
	var mu sync.Mutex
	f.handle("GET /v1/apps/a/machines/m1/wait", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		timeouts = append(timeouts, r.URL.Query().Get("timeout"))
		mu.Unlock()
		if n.Add(1) <= 2 {
			flyErr(w, http.StatusRequestTimeout, "deadline exceeded", "")
			return
		}
		writeJSON(w, 200, WaitResponse{OK: true, State: StateStopped})
	})
	c := f.client(Options{})
	res, err := c.WaitMachine(context.Background(), "a", "m1", WaitOptions{States: []string{StateStopped, StateSuspended}, Timeout: 10 * time.Minute})
	if err != nil || res.State != StateStopped {
		t.Fatalf("wait = %+v, %v", res, err)
	}
	if len(timeouts) != 3 || timeouts[0] != "60" {
		t.Fatalf("server saw timeouts %v", timeouts)
	}
	q := f.last("GET", "/v1/apps/a/machines/m1/wait").Query
	if !slices.Equal(q["state"], []string{StateStopped, StateSuspended}) {
		t.Fatalf("state params = %v", q["state"])
	}
}

func TestWaitGivesUpWithErrTimeout(t *testing.T) {
	f := newFakeFly(t)
	f.handle("GET /v1/apps/a/machines/m1/wait", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("timeout") != "1" {
			flyErr(w, http.StatusBadRequest, "want timeout=1 for a short wait", "")
			return
		}
		time.Sleep(100 * time.Millisecond)
		flyErr(w, http.StatusRequestTimeout, "deadline exceeded", "")
	})
	c := f.client(Options{})
	c.pause = sleepCtx
	_, err := c.WaitMachine(context.Background(), "a", "m1", WaitOptions{Timeout: 300 * time.Millisecond})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
}

func TestWaitStopsOn400(t *testing.T) {
	f := newFakeFly(t)
	f.handle("GET /v1/apps/a/machines/m1/wait", func(w http.ResponseWriter, r *http.Request) {
		flyErr(w, http.StatusBadRequest, "machine failed to reach desired state", "")
	})
	c := f.client(Options{})
	_, err := c.WaitMachine(context.Background(), "a", "m1", WaitOptions{Timeout: time.Minute})
	if StatusCode(err) != 400 || f.count("GET", "/v1/apps/a/machines/m1/wait") != 1 {
		t.Fatalf("err = %v after %d calls", err, f.count("GET", "/v1/apps/a/machines/m1/wait"))
	}
}

func TestTokenNeverLogged(t *testing.T) {
	const token = "fm2_SUPERSECRETTOKENVALUE"
	f := newFakeFly(t)
	f.handle("GET /v1/apps/bad", func(w http.ResponseWriter, r *http.Request) {
		flyErr(w, 401, "token "+r.Header.Get("Authorization")+" invalid", "") // a server echoing it back
	})
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: &lockedWriter{w: &buf, mu: &mu}})
	c := f.client(Options{Token: token, Logger: logger, HTTPClient: &http.Client{}})
	ctx := context.Background()
	mustOK(t)(c.GetApp(ctx, "good"))
	_, err := c.GetApp(ctx, "bad")
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err = %v", err)
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if !strings.Contains(out, "fly api request") || !strings.Contains(out, "req-123") || !strings.Contains(out, "/apps/good") {
		t.Fatalf("debug log lacks request lines:\n%s", out)
	}
	if strings.Contains(out, "SUPERSECRET") {
		t.Fatalf("token leaked into the log:\n%s", out)
	}
	if got := f.last("GET", "/v1/apps/good").Header.Get("Authorization"); got != "FlyV1 "+token {
		t.Fatalf("Authorization = %q", got)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestContextCancelStopsRetries(t *testing.T) {
	f := newFakeFly(t)
	f.handle("GET /v1/apps/a", func(w http.ResponseWriter, r *http.Request) {
		flyErr(w, http.StatusServiceUnavailable, "down", "")
	})
	c := f.client(Options{MaxAttempts: 100})
	ctx, cancel := context.WithCancel(context.Background())
	var n int
	c.pause = func(ctx context.Context, d time.Duration) error {
		if n++; n == 2 {
			cancel()
		}
		return ctx.Err()
	}
	_, err := c.GetApp(ctx, "a")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if got := f.count("GET", "/v1/apps/a"); got != 2 {
		t.Fatalf("sent %d times", got)
	}
}

func TestBadInput(t *testing.T) {
	f := newFakeFly(t)
	c := f.client(Options{})
	ctx := context.Background()
	for name, err := range map[string]error{
		"create app no name": func() error { _, err := c.CreateApp(ctx, CreateAppRequest{OrgSlug: "o"}); return err }(),
		"create app no org":  func() error { _, err := c.CreateApp(ctx, CreateAppRequest{Name: "n"}); return err }(),
		"create no config":   func() error { _, err := c.CreateMachine(ctx, "a", CreateMachineRequest{}); return err }(),
		"create no image": func() error {
			_, err := c.CreateMachine(ctx, "a", CreateMachineRequest{Config: &MachineConfig{}})
			return err
		}(),
		"get no id":          func() error { _, err := c.GetMachine(ctx, "a", ""); return err }(),
		"release no nonce":   c.ReleaseLease(ctx, "a", "m", ""),
		"refresh no nonce":   func() error { _, err := c.RefreshLease(ctx, "a", "m", "", time.Second); return err }(),
		"signal empty":       c.SignalMachine(ctx, "a", "m", "", ""),
		"metadata empty key": c.SetMetadata(ctx, "a", "m", "", "v", ""),
		"list empty filter key": func() error {
			_, err := c.ListMachines(ctx, "a", ListMachinesOptions{Metadata: map[string]string{"": "x"}})
			return err
		}(),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if n := len(f.requests()); n != 0 {
		t.Fatalf("bad input sent %d requests", n)
	}
	if _, err := New(Options{BaseURL: "ftp://x"}); err == nil {
		t.Error("ftp base URL accepted")
	}
	if _, err := New(Options{BaseURL: "://"}); err == nil {
		t.Error("garbage base URL accepted")
	}
}

func TestBaseURL(t *testing.T) {
	for in, want := range map[string]string{
		"":                          DefaultBaseURL + "/v1",
		"http://127.0.0.1:4280":     "http://127.0.0.1:4280/v1",
		"http://127.0.0.1:4280/":    "http://127.0.0.1:4280/v1",
		"http://127.0.0.1:4280/v1":  "http://127.0.0.1:4280/v1",
		"http://127.0.0.1:4280/v1/": "http://127.0.0.1:4280/v1",
		"http://h/prefix":           "http://h/prefix/v1",
	} {
		c, err := New(Options{BaseURL: in})
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if c.BaseURL() != want {
			t.Errorf("%q: base %q, want %q", in, c.BaseURL(), want)
		}
	}
	t.Setenv(EnvAPIURL, "http://127.0.0.1:9")
	t.Setenv(EnvAPIToken, "t0k")
	c, err := NewFromEnv(nil)
	if err != nil || c.BaseURL() != "http://127.0.0.1:9/v1" || c.auth != "Bearer t0k" {
		t.Fatalf("from env: %+v, %v", c, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustOK(t *testing.T) func(any, error) {
	return func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestIsTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{&Error{StatusCode: 429}, true},
		{fmt.Errorf("wrapped: %w", &Error{StatusCode: 503}), true},
		{&Error{StatusCode: 408}, true},
		{&Error{StatusCode: 404}, false},
		{&Error{StatusCode: 409}, false},
		{&net.OpError{Op: "dial", Err: errors.New("refused")}, true},
		{context.Canceled, false},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{errors.New("plain"), false},
	} {
		if got := IsTransient(tc.err); got != tc.want {
			t.Errorf("IsTransient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestUntrustedCertificateNotRetried(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.Add(1) }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c, err := New(Options{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	attempts := 0
	c.onResponse = func(string, string, int, error) { attempts++ }
	if _, err := c.GetApp(context.Background(), "a"); err == nil {
		t.Fatal("untrusted server accepted")
	}
	if attempts != 1 {
		t.Fatalf("%d attempts against an untrusted certificate", attempts)
	}
}

func TestPace(t *testing.T) {
	f := newFakeFly(t)
	pacer := NewLocalPacer()
	c := f.client(Options{Pacer: pacer})
	clock := time.Unix(1_700_000_000, 0)
	pacer.now = func() time.Time { return clock }
	var waits []time.Duration
	c.pause = func(ctx context.Context, d time.Duration) error { waits = append(waits, d); return nil }
	ctx := context.Background()
	// Burst of 3 starts on one machine, then the 4th waits about a second.
	for range 4 {
		mustOK(t)(c.StartMachine(ctx, "a", "m1", ""))
	}
	if len(waits) != 1 || waits[0] < 900*time.Millisecond || waits[0] > time.Second {
		t.Fatalf("waits after 4 starts = %v", waits)
	}
	// Another machine, and another action, have their own buckets.
	waits = nil
	mustOK(t)(c.StartMachine(ctx, "a", "m2", ""))
	must(t, c.StopMachine(ctx, "a", "m1", StopRequest{}, ""))
	// Gets allow a burst of 10.
	for range 10 {
		mustOK(t)(c.GetMachine(ctx, "a", "m1"))
	}
	if len(waits) != 0 {
		t.Fatalf("unexpected waits %v", waits)
	}
	mustOK(t)(c.GetMachine(ctx, "a", "m1"))
	if len(waits) != 1 || waits[0] > 200*time.Millisecond {
		t.Fatalf("11th get waits %v", waits)
	}
	// Time passing refills the buckets.
	waits = nil
	clock = clock.Add(10 * time.Second)
	for range 3 {
		mustOK(t)(c.StartMachine(ctx, "a", "m1", ""))
	}
	if len(waits) != 0 {
		t.Fatalf("waits after refill %v", waits)
	}
}

func TestRetry408Idempotent(t *testing.T) {
	f := newFakeFly(t)
	n := 0
	f.handle("GET /v1/apps/a/machines/m1", func(w http.ResponseWriter, r *http.Request) {
		if n++; n < 3 {
			flyErr(w, http.StatusRequestTimeout, "request timeout", "")
			return
		}
		writeJSON(w, 200, Machine{ID: "m1", State: StateStarted})
	})
	c := f.client(Options{})
	if _, err := c.GetMachine(context.Background(), "a", "m1"); err != nil {
		t.Fatalf("get after two 408s: %v", err)
	}
	if n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
}

func TestNotFoundRightAfterCreateRetried(t *testing.T) {
	f := newFakeFly(t)
	lists := 0
	f.handle("GET /v1/apps/fresh/machines", func(w http.ResponseWriter, r *http.Request) {
		if lists++; lists < 3 {
			flyErr(w, http.StatusNotFound, "app not found", "")
			return
		}
		writeJSON(w, 200, []Machine{})
	})
	f.handle("GET /v1/apps/old/machines", func(w http.ResponseWriter, r *http.Request) {
		flyErr(w, http.StatusNotFound, "app not found", "")
	})
	c := f.client(Options{})
	ctx := context.Background()
	if _, err := c.CreateApp(ctx, CreateAppRequest{Name: "fresh", OrgSlug: "personal"}); err != nil {
		t.Fatal(err)
	}
	if q := f.last("POST", "/v1/apps").Query.Get("wait"); q != "true" {
		t.Errorf("app create wait=%q, want true", q)
	}
	if _, err := c.ListMachines(ctx, "fresh", ListMachinesOptions{}); err != nil {
		t.Fatalf("list right after create: %v", err)
	}
	// An app this client did not just create: a 404 is an answer.
	if _, err := c.ListMachines(ctx, "old", ListMachinesOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("list of an unknown app: %v", err)
	}
	if n := f.count("GET", "/v1/apps/old/machines"); n != 1 {
		t.Errorf("unknown app listed %d times", n)
	}
}

func TestUpdateMetadataFallsBackToKeys(t *testing.T) {
	f := newFakeFly(t)
	f.handle("PATCH /v1/apps/a/machines/m1/metadata", func(w http.ResponseWriter, r *http.Request) {
		flyErr(w, http.StatusNotFound, "no such endpoint", "")
	})
	c := f.client(Options{})
	ctx := context.Background()
	v, empty := "session", ""
	for range 2 {
		must(t, c.UpdateMetadata(ctx, "a", "m1", UpdateMetadataRequest{Metadata: map[string]*string{"role": &v, "gone": &empty}}, "n1"))
	}
	if n := f.count("PATCH", "/v1/apps/a/machines/m1/metadata"); n != 1 {
		t.Errorf("batch tried %d times; want once, then per key", n)
	}
	if n := f.count("POST", "/v1/apps/a/machines/m1/metadata/role"); n != 2 {
		t.Errorf("per-key sets %d, want 2", n)
	}
	if n := f.count("DELETE", "/v1/apps/a/machines/m1/metadata/gone"); n != 2 {
		t.Errorf("per-key deletes %d, want 2", n)
	}
	if h := f.last("POST", "/v1/apps/a/machines/m1/metadata/role").Header.Get(LeaseNonceHeader); h != "n1" {
		t.Errorf("per-key write without the lease nonce (%q)", h)
	}
}

func TestLimitKey(t *testing.T) {
	for _, tc := range []struct {
		action, app, machine, key string
		l                         Limit
	}{
		{"machine_get", "a", "m", "machine_get/a/m", GetMachineLimit},
		{"machine_list", "a", "", "machine_list/a", DefaultLimit},
		{"machine_create", "a", "", "machine_create/a", DefaultLimit},
		{"lease_refresh", "a", "m", "lease_acquire/a/m", DefaultLimit},
		{"metadata_get_key", "a", "m", "metadata_get/a/m", DefaultLimit},
		{"app_delete", "a", "", "app_delete", AppDeleteLimit},
	} {
		key, l := LimitKey(tc.action, tc.app, tc.machine)
		if key != tc.key || l != tc.l {
			t.Errorf("LimitKey(%s, %s, %s) = %s %v, want %s %v", tc.action, tc.app, tc.machine, key, l, tc.key, tc.l)
		}
	}
	if app, m := requestTarget("/apps/a/machines/m/metadata/k"); app != "a" || m != "m" {
		t.Errorf("requestTarget = %s %s", app, m)
	}
}

// TestNotFoundGraceKeepsOtherAttempts: the 404s re-sent within NotFoundGrace
// do not use up the attempts left for a 429 that follows them.
func TestNotFoundGraceKeepsOtherAttempts(t *testing.T) {
	f := newFakeFly(t)
	gets := 0
	f.handle("GET /v1/apps/fresh/machines/m1", func(w http.ResponseWriter, r *http.Request) {
		switch gets++; {
		case gets <= 6:
			flyErr(w, http.StatusNotFound, "machine not found", "")
		case gets == 7:
			flyErr(w, http.StatusTooManyRequests, "rate limit exceeded", "")
		default:
			writeJSON(w, 200, Machine{ID: "m1", State: StateStarted})
		}
	})
	c := f.client(Options{MaxAttempts: 3})
	c.pause = func(ctx context.Context, d time.Duration) error { return nil }
	ctx := context.Background()
	if _, err := c.CreateApp(ctx, CreateAppRequest{Name: "fresh", OrgSlug: "personal"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetMachine(ctx, "fresh", "m1"); err != nil {
		t.Fatalf("get after 6 404s in the grace and a 429: %v", err)
	}
	if gets != 8 {
		t.Errorf("%d attempts, want 8", gets)
	}
}
