package fly

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/flyspec"
)

// seen is one request as the fake server received it.
type seen struct {
	Method string
	Path   string
	Query  url.Values
	Header http.Header
	Body   []byte
}

// fakeFly is a minimal, spec-shaped stand-in for the Machines API. Each
// handler answers the way Fly documents; tests override routes to inject
// failures.
type fakeFly struct {
	t    testing.TB
	srv  *httptest.Server
	mux  *http.ServeMux
	over *http.ServeMux // test overrides, consulted first

	mu   sync.Mutex
	reqs []seen
}

func newFakeFly(t testing.TB) *fakeFly {
	f := &fakeFly{t: t, mux: http.NewServeMux(), over: http.NewServeMux()}
	f.routes()
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeFly) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, seen{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone(), Body: body})
	f.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(body))
	if _, pattern := f.over.Handler(r); pattern != "" {
		f.over.ServeHTTP(w, r)
		return
	}
	f.mux.ServeHTTP(w, r)
}

// handle overrides (or adds) a route; call it before the client's first request.
func (f *fakeFly) handle(pattern string, h http.HandlerFunc) { f.over.HandleFunc(pattern, h) }

func (f *fakeFly) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.reqs...)
}

func (f *fakeFly) count(method, path string) int {
	n := 0
	for _, r := range f.requests() {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

func (f *fakeFly) last(method, path string) seen {
	reqs := f.requests()
	for i := len(reqs) - 1; i >= 0; i-- {
		if reqs[i].Method == method && reqs[i].Path == path {
			return reqs[i]
		}
	}
	f.t.Fatalf("no %s %s request seen", method, path)
	return seen{}
}

// client returns a client for the fake whose exchanges are checked against
// Fly's spec (violations fail the test) and whose backoffs do not sleep.
func (f *fakeFly) client(opts Options) *Client {
	f.t.Helper()
	opts.BaseURL = f.srv.URL
	if opts.Pacer == nil {
		// These tests count attempts and backoffs: pacing would add waits.
		opts.NoPace = true
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Transport: flyspec.CheckingTransport(f.t, nil)}
	}
	c, err := New(opts)
	if err != nil {
		f.t.Fatal(err)
	}
	c.pause = func(ctx context.Context, d time.Duration) error { return ctx.Err() }
	return c
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("fly-request-id", "req-123")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

func flyErr(w http.ResponseWriter, status int, msg, code string) {
	body := map[string]string{"error": msg}
	if code != "" {
		body["status"] = code
	}
	writeJSON(w, status, body)
}

func sampleMachine(id string) Machine {
	return Machine{
		ID: id, Name: "m-" + id, State: StateStarted, Region: "ord",
		InstanceID: "01J00000000000000000000000", PrivateIP: "fdaa::2",
		CreatedAt: "2026-01-01T00:00:00Z", UpdatedAt: "2026-01-01T00:00:00Z",
		Config: &MachineConfig{Image: "registry.example/img:1", Metadata: map[string]string{"hangar_pool": "p1"},
			Guest: &Guest{CPUKind: "shared", CPUs: 1, MemoryMB: 256}},
	}
}

func (f *fakeFly) routes() {
	m := f.mux
	m.HandleFunc("POST /v1/apps", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
	})
	m.HandleFunc("GET /v1/apps", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, ListAppsResponse{Apps: []App{{ID: "a1", Name: "app1", Status: "deployed"}}, TotalApps: 1})
	})
	m.HandleFunc("GET /v1/apps/{app}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, App{ID: "a1", Name: r.PathValue("app"), Status: "deployed", Organization: &AppOrganization{Slug: "personal"}})
	})
	m.HandleFunc("DELETE /v1/apps/{app}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	m.HandleFunc("POST /v1/apps/{app}/machines", func(w http.ResponseWriter, r *http.Request) {
		var req CreateMachineRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		mm := sampleMachine("148e1234567890")
		mm.Name = req.Name
		mm.Config = req.Config
		if req.LeaseTTL > 0 {
			mm.Nonce = "abcdef123456"
		}
		writeJSON(w, 200, mm)
	})
	m.HandleFunc("GET /v1/apps/{app}/machines", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, []Machine{sampleMachine("148e1234567890")})
	})
	m.HandleFunc("GET /v1/apps/{app}/machines/{id}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, sampleMachine(r.PathValue("id")))
	})
	m.HandleFunc("POST /v1/apps/{app}/machines/{id}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, sampleMachine(r.PathValue("id")))
	})
	m.HandleFunc("DELETE /v1/apps/{app}/machines/{id}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, OKResponse{OK: true})
	})
	m.HandleFunc("POST /v1/apps/{app}/machines/{id}/start", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, StartResponse{PreviousState: StateStopped})
	})
	for _, op := range []string{"stop", "suspend", "restart", "signal", "cordon", "uncordon"} {
		m.HandleFunc("POST /v1/apps/{app}/machines/{id}/"+op, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, OKResponse{OK: true})
		})
	}
	m.HandleFunc("GET /v1/apps/{app}/machines/{id}/wait", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, WaitResponse{OK: true, State: r.URL.Query().Get("state")})
	})
	m.HandleFunc("GET /v1/apps/{app}/machines/{id}/events", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, []MachineEvent{{ID: "01J00000000000000000000001", Type: "start", Status: StateStarted, Source: "user", Timestamp: 1700000000000}})
	})
	lease := func(w http.ResponseWriter, status int, nonce string) {
		writeJSON(w, status, Lease{Status: "success", Data: &LeaseData{Nonce: nonce, ExpiresAt: 1700000000, Owner: "me@example.com", Version: "01J00000000000000000000000"}})
	}
	m.HandleFunc("POST /v1/apps/{app}/machines/{id}/lease", func(w http.ResponseWriter, r *http.Request) {
		if n := r.Header.Get(LeaseNonceHeader); n != "" {
			lease(w, 201, n)
			return
		}
		lease(w, 201, "abcdef123456")
	})
	m.HandleFunc("GET /v1/apps/{app}/machines/{id}/lease", func(w http.ResponseWriter, r *http.Request) { lease(w, 200, "abcdef123456") })
	m.HandleFunc("DELETE /v1/apps/{app}/machines/{id}/lease", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"status": "success", "data": map[string]bool{"ok": true}})
	})
	m.HandleFunc("GET /v1/apps/{app}/machines/{id}/metadata", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]string{"hangar_pool": "p1"})
	})
	m.HandleFunc("PATCH /v1/apps/{app}/machines/{id}/metadata", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	m.HandleFunc("GET /v1/apps/{app}/machines/{id}/metadata/{key}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("key") != "hangar_pool" {
			flyErr(w, 404, "metadata key not found", "")
			return
		}
		writeJSON(w, 200, MetadataValue{Value: "p1"})
	})
	m.HandleFunc("POST /v1/apps/{app}/machines/{id}/metadata/{key}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	m.HandleFunc("DELETE /v1/apps/{app}/machines/{id}/metadata/{key}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	m.HandleFunc("GET /v1/apps/{app}/secrets", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, AppSecrets{Secrets: []AppSecret{{Name: "A", Digest: "d1"}}})
	})
	m.HandleFunc("POST /v1/apps/{app}/secrets", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, AppSecretsUpdateResponse{Version: 2})
	})
	m.HandleFunc("POST /v1/apps/{app}/secrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 201, SetAppSecretResponse{Name: r.PathValue("name"), Digest: "d", Version: 3})
	})
	m.HandleFunc("DELETE /v1/apps/{app}/secrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, DeleteAppSecretResponse{Version: 4})
	})
}
