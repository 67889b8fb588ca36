package flyspec

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func TestSpecLoads(t *testing.T) {
	doc, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	if doc.Paths.Value("/apps/{app_name}/machines") == nil {
		t.Fatal("machines path missing")
	}
	for _, tc := range []struct{ method, path, want string }{
		{http.MethodPost, "/v1/apps/a/machines/m1/lease", "Machines_create_lease"},
		{http.MethodGet, "/apps/a/machines", "Machines_list"},
		{http.MethodPatch, "/v1/apps/a/machines/m/metadata", "Machines_update_metadata_patch"},
		{http.MethodGet, "/v1/nope", ""},
	} {
		if got := OperationID(tc.method, tc.path); got != tc.want {
			t.Errorf("OperationID(%s %s) = %q, want %q", tc.method, tc.path, got, tc.want)
		}
	}
	if len(JSON()) != 190576 {
		t.Errorf("embedded document is %d bytes, want Fly's 190576", len(JSON()))
	}
}

// exchange sends one request through a fresh Transport to a server that
// answers with status, content type and body, and returns the violations.
func exchange(t *testing.T, method, path, reqBody string, header http.Header, status int, ctype, respBody string) []error {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if ctype != "" {
			w.Header().Set("Content-Type", ctype)
		}
		w.WriteHeader(status)
		io.WriteString(w, respBody)
	}))
	t.Cleanup(srv.Close)
	tr := NewTransport(nil)
	var body io.Reader
	if reqBody != "" {
		body = strings.NewReader(reqBody)
	}
	req, err := http.NewRequest(method, srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if reqBody != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != respBody {
		t.Fatalf("transport changed the body: %q", got)
	}
	if tr.Exchanges() != 1 {
		t.Fatalf("exchanges = %d", tr.Exchanges())
	}
	return tr.Errors()
}

func TestExchanges(t *testing.T) {
	const machine = `{"id":"148e1234567890","name":"m","state":"started","region":"ord","instance_id":"01J","version":"01J","cordoned":false,"config":{"image":"i","guest":{"cpu_kind":"shared","cpus":1,"memory_mb":256}}}`
	const lease = `{"status":"success","data":{"nonce":"abc123def456","expires_at":1700000000,"owner":"o","version":"01J"}}`
	nonce := http.Header{"Fly-Machine-Lease-Nonce": {"abc123def456"}}
	for _, tc := range []struct {
		name                  string
		method, path, reqBody string
		header                http.Header
		status                int
		ctype, respBody       string
		wantErr               string // "" = no violation
	}{
		{"create machine", "POST", "/v1/apps/a/machines", `{"config":{"image":"i","services":[{"autostop":"suspend"}]},"skip_launch":true,"lease_ttl":10}`, nil, 200, "application/json", machine, ""},
		{"host prefix ignored", "GET", "/prefix/v1/apps/a/machines/m", "", nil, 200, "application/json", machine, ""},
		{"list with metadata filter", "GET", "/v1/apps/a/machines?metadata.hangar_pool=p&state=started,stopped&include_deleted=true", "", nil, 200, "application/json", "[" + machine + "]", ""},
		{"wait repeated state", "GET", "/v1/apps/a/machines/m/wait?state=started&state=stopped&timeout=60", "", nil, 200, "application/json", `{"ok":true,"state":"started"}`, ""},
		{"lease envelope", "POST", "/v1/apps/a/machines/m/lease", `{"ttl":30}`, nil, 201, "application/json", lease, ""},
		{"lease refresh", "POST", "/v1/apps/a/machines/m/lease", `{"ttl":30}`, nonce, 201, "application/json", lease, ""},
		{"get lease", "GET", "/v1/apps/a/machines/m/lease", "", nil, 200, "application/json", lease, ""},
		{"conflict error body", "POST", "/v1/apps/a/machines/m/lease", `{"ttl":30}`, nil, 409, "application/json", `{"error":"lease held"}`, ""},
		{"rate limited", "GET", "/v1/apps/a", "", nil, 429, "application/json", `{"error":"rate limited","status":"unknown"}`, ""},
		{"name taken", "POST", "/v1/apps", `{"name":"a","org_slug":"o"}`, nil, 422, "application/json", `{"error":"taken","status":"name_taken"}`, ""},
		{"destroy force", "DELETE", "/v1/apps/a/machines/m?force=true", "", nonce, 200, "application/json", `{"ok":true}`, ""},

		{"flat lease rejected", "GET", "/v1/apps/a/machines/m/lease", "", nil, 200, "application/json", `{"nonce":"abc","expires_at":1}`, "envelope"},
		{"lease data wrong type", "GET", "/v1/apps/a/machines/m/lease", "", nil, 200, "application/json", `{"status":"success","data":{"nonce":"abc","expires_at":"soon"}}`, "Lease"},
		{"unknown path", "GET", "/v1/apps/a/gadgets", "", nil, 200, "application/json", `{}`, "no operation"},
		{"not under v1", "GET", "/apps/a", "", nil, 200, "application/json", `{}`, "not under /v1"},
		{"bad stop signal", "POST", "/v1/apps/a/machines/m/stop", `{"signal":"SIGFOO"}`, nil, 200, "application/json", `{"ok":true}`, "SIGFOO"},
		{"bad wait state", "GET", "/v1/apps/a/machines/m/wait?state=sleepy", "", nil, 200, "application/json", `{"ok":true}`, "sleepy"},
		{"lease acquire without body", "POST", "/v1/apps/a/machines/m/lease?ttl=30", "", nil, 201, "application/json", lease, "body"},
		{"release without nonce", "DELETE", "/v1/apps/a/machines/m/lease", "", nil, 200, "application/json", `{}`, "fly-machine-lease-nonce"},
		{"machine state wrong type", "GET", "/v1/apps/a/machines/m", "", nil, 200, "application/json", `{"id":"m","state":3}`, "state"},
		{"autostop bool", "POST", "/v1/apps/a/machines", `{"config":{"image":"i","services":[{"autostop":true}]}}`, nil, 200, "application/json", machine, "autostop"},
		{"duration as number", "POST", "/v1/apps/a/machines/m/stop", `{"timeout":5000000000}`, nil, 200, "application/json", `{"ok":true}`, "timeout"},
		{"undeclared 2xx", "POST", "/v1/apps/a/machines/m/lease", `{"ttl":30}`, nil, 200, "application/json", lease, "declares [201]"},
		{"error not json", "GET", "/v1/apps/a", "", nil, 404, "text/plain", "not found", "content type"},
		{"error without message", "GET", "/v1/apps/a", "", nil, 404, "application/json", `{"status":"unknown"}`, `no "error"`},
		{"wrong content type", "GET", "/v1/apps/a", "", nil, 200, "text/html", `<html>`, "Content-Type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := exchange(t, tc.method, tc.path, tc.reqBody, tc.header, tc.status, tc.ctype, tc.respBody)
			if tc.wantErr == "" {
				for _, err := range errs {
					t.Errorf("unexpected violation: %v", err)
				}
				return
			}
			if len(errs) == 0 {
				t.Fatalf("no violation, want one mentioning %q", tc.wantErr)
			}
			found := false
			for _, err := range errs {
				if strings.Contains(err.Error(), tc.wantErr) {
					found = true
				}
			}
			if !found {
				t.Fatalf("violations %v do not mention %q", errs, tc.wantErr)
			}
		})
	}
}

// fakeTB records what CheckingClient reports.
type fakeTB struct {
	testing.TB
	errs     []string
	cleanups []func()
}

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Errorf(format string, a ...any) { f.errs = append(f.errs, format) }
func (f *fakeTB) Fatalf(format string, a ...any) { f.errs = append(f.errs, format) }
func (f *fakeTB) Cleanup(fn func())              { f.cleanups = append(f.cleanups, fn) }

func TestCheckingClientReportsAtCleanup(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"m","state":3}`)
	}))
	defer srv.Close()
	ft := &fakeTB{TB: t}
	c := CheckingClient(ft)
	resp, err := c.Get(srv.URL + "/v1/apps/a/machines/m")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(ft.errs) != 0 {
		t.Fatalf("reported before cleanup: %v", ft.errs)
	}
	for i := len(ft.cleanups) - 1; i >= 0; i-- {
		ft.cleanups[i]()
	}
	if len(ft.errs) != 1 {
		t.Fatalf("reported %d violations, want 1", len(ft.errs))
	}
}

func TestValidateRequest(t *testing.T) {
	req, _ := http.NewRequest("POST", "http://127.0.0.1/v1/apps/a/machines/m/signal", strings.NewReader(`{"signal":"SIGTERM"}`))
	req.Header.Set("Content-Type", "application/json")
	if err := ValidateRequest(req); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(req.Body)
	if string(b) != `{"signal":"SIGTERM"}` {
		t.Fatalf("body not restored: %q", b)
	}
	req, _ = http.NewRequest("POST", "http://127.0.0.1/v1/apps/a/machines/m/signal", strings.NewReader(`{"signal":"SIGNOPE"}`))
	req.Header.Set("Content-Type", "application/json")
	if err := ValidateRequest(req); err == nil {
		t.Fatal("bad signal accepted")
	}
}

func TestConcurrentUse(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/apps/a/machines/m/lease":
			w.WriteHeader(201)
			io.WriteString(w, `{"status":"success","data":{"nonce":"n1","expires_at":1}}`)
		default:
			io.WriteString(w, `{"id":"m","state":"started","config":{"image":"i","checks":{"c":{"interval":"1s","port":80}}}}`)
		}
	}))
	defer srv.Close()
	c := CheckingClient(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				var req *http.Request
				if i%2 == 0 {
					req, _ = http.NewRequest("POST", srv.URL+"/v1/apps/a/machines/m/lease", strings.NewReader(`{"ttl":5}`))
					req.Header.Set("Content-Type", "application/json")
				} else {
					req, _ = http.NewRequest("GET", srv.URL+"/v1/apps/a/machines/m", nil)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
}
