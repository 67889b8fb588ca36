package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeAPI records requests and answers from a table keyed by "METHOD /path".
type fakeAPI struct {
	mu      sync.Mutex
	reqs    []recorded
	answers map[string]answer
	gets    map[string]int
	// attach, if set, serves GET …/attach (the WebSocket).
	attach http.HandlerFunc
}

type recorded struct {
	method, path, query, auth string
	body                      map[string]any
}

type answer struct {
	status int
	body   string
	// seq, if set, answers successive calls in turn (the last one repeats).
	seq []string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.attach != nil && strings.HasSuffix(r.URL.Path, "/attach") {
		f.mu.Lock()
		f.reqs = append(f.reqs, recorded{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery, auth: r.Header.Get("Authorization")})
		f.mu.Unlock()
		f.attach(w, r)
		return
	}
	b, _ := io.ReadAll(r.Body)
	rec := recorded{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery, auth: r.Header.Get("Authorization")}
	if len(b) > 0 {
		_ = json.Unmarshal(b, &rec.body)
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, rec)
	key := r.Method + " " + r.URL.Path
	a, ok := f.answers[key]
	if f.gets == nil {
		f.gets = map[string]int{}
	}
	n := f.gets[key]
	f.gets[key]++
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"error":{"code":"not_found","message":"no such route in the fake"}}`)
		return
	}
	if a.status == 0 {
		a.status = http.StatusOK
	}
	w.WriteHeader(a.status)
	if len(a.seq) > 0 {
		fmt.Fprint(w, a.seq[min(n, len(a.seq)-1)])
		return
	}
	fmt.Fprint(w, a.body)
}

func (f *fakeAPI) last(t *testing.T) recorded {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		t.Fatal("no request reached the API")
	}
	return f.reqs[len(f.reqs)-1]
}

func (f *fakeAPI) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, IO{
		In: strings.NewReader(""), Out: &out, Err: &errb,
		Getenv: func(k string) string { return env[k] },
	})
	return result{code, out.String(), errb.String()}
}

func startFake(t *testing.T, answers map[string]answer) (*fakeAPI, map[string]string) {
	return serveFake(t, &fakeAPI{answers: answers})
}

// serveFake serves f (configured before it starts) to the CLI.
func serveFake(t *testing.T, f *fakeAPI) (*fakeAPI, map[string]string) {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, map[string]string{"HANGAR_URL": srv.URL, "HANGAR_TOKEN": "tenant-key", "HANGAR_ADMIN_TOKEN": "admin-key"}
}

const sessionJSON = `{"id":"s1","tenant":"dev","pool":"dev","state":"pending","mode":"pty","cost_usd":0}`

func TestSessionsCreateSendsRequest(t *testing.T) {
	f, env := startFake(t, map[string]answer{"POST /v1/sessions": {status: 202, body: sessionJSON}})
	env["ANTHROPIC_API_KEY"] = "sk-ant-user-own-key"
	env["HANGAR_GIT_TOKEN"] = "ghp_x"
	r := runCLI(t, env, "sessions", "create", "--pool", "dev", "--repo", "https://example.invalid/r.git",
		"--branch", "main", "--session-branch", "work/x", "--mode", "jsonl", "--region", "ams",
		"--tenant-image", "py", "--env", "A=1", "--output", "json", "--git-author", "Ada <ada@example.invalid>",
		"--", "bash", "-c", "echo hi")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	req := f.last(t)
	if req.auth != "Bearer tenant-key" {
		t.Errorf("auth = %q", req.auth)
	}
	want := map[string]any{
		"pool": "dev", "repo": "https://example.invalid/r.git", "branch": "main", "session_branch": "work/x",
		"mode": "jsonl", "region": "ams", "tenant_image": "py",
		"command":     []any{"bash", "-c", "echo hi"},
		"env":         map[string]any{"A": "1"},
		"git_author":  map[string]any{"name": "Ada", "email": "ada@example.invalid"},
		"credentials": map[string]any{"anthropic_api_key": "sk-ant-user-own-key", "git_token": "ghp_x"},
	}
	got, _ := json.Marshal(req.body)
	exp, _ := json.Marshal(want)
	if string(got) != string(exp) {
		t.Errorf("body\n got %s\nwant %s", got, exp)
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || s["id"] != "s1" {
		t.Errorf("stdout is not the session JSON: %q (%v)", r.stdout, err)
	}
	if strings.Contains(r.stdout+r.stderr, "sk-ant") {
		t.Error("the API key was printed")
	}
}

func TestSessionsCreateNoCredentials(t *testing.T) {
	f, env := startFake(t, map[string]answer{"POST /v1/sessions": {status: 202, body: sessionJSON}})
	env["ANTHROPIC_API_KEY"] = "sk-ant-user-own-key"
	r := runCLI(t, env, "sessions", "create", "--pool", "dev", "--no-credentials")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if _, ok := f.last(t).body["credentials"]; ok {
		t.Error("credentials sent despite --no-credentials")
	}
	if strings.TrimSpace(r.stdout) != "s1\tpending" {
		t.Errorf("stdout = %q", r.stdout)
	}
}

func TestUsageAndAPIErrors(t *testing.T) {
	_, env := startFake(t, map[string]answer{
		"POST /v1/sessions":     {status: 422, body: `{"error":{"code":"invalid_field","message":"unknown pool \"nope\""}}`},
		"GET /v1/sessions/gone": {status: 404, body: `{"error":{"code":"not_found","message":"session gone not found"}}`},
		"GET /v1/sessions":      {status: 401, body: `{"error":{"code":"unauthorized","message":"invalid API key"}}`},
		"POST /v1/tenants":      {status: 429, body: `{"error":{"code":"rate_limited","message":"slow down"}}`},
	})
	cases := []struct {
		name string
		env  map[string]string
		args []string
		code int
		msg  string
	}{
		{"no command", env, nil, 2, ""},
		{"unknown command", env, []string{"bogus"}, 2, `unknown command "bogus"`},
		{"unknown subcommand", env, []string{"sessions", "frob"}, 2, `unknown command "sessions frob"`},
		{"pool required", env, []string{"sessions", "create"}, 2, "--pool is required"},
		{"bad mode", env, []string{"sessions", "create", "--pool", "dev", "--mode", "tty"}, 2, "--mode must be pty or jsonl"},
		{"bad author", env, []string{"sessions", "create", "--pool", "dev", "--git-author", "nobody"}, 2, "--git-author"},
		{"token in repo URL", env, []string{"sessions", "create", "--pool", "dev", "--repo", "https://ghp_secret1@github.com/o/r.git"}, 2, "--repo: a user part is not allowed"},
		{"ssh option host", env, []string{"sessions", "create", "--pool", "dev", "--repo", "git@-oProxyCommand:x"}, 2, "--repo"},
		{"bad branch", env, []string{"sessions", "create", "--pool", "dev", "--branch", "a..b"}, 2, "--branch"},
		{"reserved env", env, []string{"sessions", "create", "--pool", "dev", "--env", "HANGAR_X=1"}, 2, "--env"},
		{"bad output", env, []string{"sessions", "ls", "--output", "yaml"}, 2, "--output must be text or json"},
		{"unknown flag", env, []string{"sessions", "ls", "--colour"}, 2, "flag provided but not defined"},
		{"show needs id", env, []string{"sessions", "show"}, 2, "missing argument"},
		{"show extra args", env, []string{"sessions", "show", "a", "b"}, 2, "unexpected arguments"},
		{"api 422", env, []string{"sessions", "create", "--pool", "nope"}, 1, `unknown pool "nope" (422 invalid_field)`},
		{"api 404", env, []string{"sessions", "show", "gone"}, 1, "session gone not found (404 not_found)"},
		{"api 401", env, []string{"sessions", "ls"}, 1, "invalid API key (401 unauthorized)"},
		{"api 429", env, []string{"tenants", "create", "t1"}, 1, "slow down (429 rate_limited)"},
		{"no url", map[string]string{"HANGAR_TOKEN": "k"}, []string{"sessions", "ls"}, 1, "no hangard URL"},
		{"no key", map[string]string{"HANGAR_URL": "http://127.0.0.1:1"}, []string{"sessions", "ls"}, 1, "no API key"},
		{"no admin key", map[string]string{"HANGAR_URL": "http://127.0.0.1:1", "HANGAR_TOKEN": "k"}, []string{"tenants", "ls"}, 1, "no admin key"},
		{"bad url", map[string]string{"HANGAR_URL": "ftp://x", "HANGAR_TOKEN": "k"}, []string{"sessions", "ls"}, 1, "scheme must be http or https"},
		{"bad duration", env, []string{"tenants", "create", "t", "--max-session-duration", "forever"}, 2, "not a positive duration"},
		{"missing env file", env, []string{"--env-file", "/nonexistent/dev.env", "sessions", "ls"}, 1, "read env file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.env, tc.args...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", r.code, tc.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.msg) {
				t.Errorf("stderr %q does not contain %q", r.stderr, tc.msg)
			}
		})
	}
}

func TestEnvFileAndFlagPrecedence(t *testing.T) {
	f, env := startFake(t, map[string]answer{"GET /v1/sessions": {body: `[]`}})
	dir := t.TempDir()
	content := fmt.Sprintf("# written by hangard dev\nHANGAR_URL=%s\nexport HANGAR_TOKEN=\"file-key\"\nHANGAR_ADMIN_TOKEN=adm\n", env["HANGAR_URL"])
	if err := os.WriteFile(filepath.Join(dir, "dev.env"), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := map[string]string{"HANGAR_TOKEN": "env-key"}
	// A directory means DIR/dev.env; the file beats the environment.
	if r := runCLI(t, empty, "--env-file", dir, "sessions", "ls"); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if a := f.last(t).auth; a != "Bearer file-key" {
		t.Errorf("auth = %q, want the env file's key", a)
	}
	// A flag beats the file, also after the command name.
	if r := runCLI(t, empty, "sessions", "ls", "--env-file", filepath.Join(dir, "dev.env"), "--token", "flag-key", "--state", "ready"); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	last := f.last(t)
	if last.auth != "Bearer flag-key" || last.query != "state=ready" {
		t.Errorf("auth %q query %q", last.auth, last.query)
	}
}

func TestSessionsListAndShow(t *testing.T) {
	_, env := startFake(t, map[string]answer{
		"GET /v1/sessions":    {body: `{"sessions":[{"id":"s1","pool":"dev","state":"ready","region":"ams","cost_usd":0.0123}]}`},
		"GET /v1/sessions/s1": {body: `{"id":"s1","pool":"dev","state":"ended","session_branch":"hangar/s1","push":{"ref":"refs/heads/hangar/s1","commit":"0123456789abcdef","ok":true}}`},
	})
	r := runCLI(t, env, "sessions", "ls")
	if r.code != 0 || !strings.Contains(r.stdout, "s1") || !strings.Contains(r.stdout, "$0.0123") {
		t.Errorf("ls: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, env, "--output", "json", "sessions", "ls")
	var list []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 1 {
		t.Errorf("ls json: %q (%v)", r.stdout, err)
	}
	r = runCLI(t, env, "sessions", "show", "s1")
	if r.code != 0 || !strings.Contains(r.stdout, "pushed refs/heads/hangar/s1 0123456789ab") {
		t.Errorf("show: exit %d stdout %q", r.code, r.stdout)
	}
}

func TestSessionsEndWaitsForPush(t *testing.T) {
	f, env := startFake(t, map[string]answer{
		"DELETE /v1/sessions/s1": {status: 202, body: `{"id":"s1","state":"ending"}`},
		"GET /v1/sessions/s1": {seq: []string{
			`{"id":"s1","state":"ending"}`,
			`{"id":"s1","state":"ended","push":{"ref":"hangar/s1","commit":"abc","ok":true}}`,
		}},
	})
	r := runCLI(t, env, "sessions", "end", "s1")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "ended") || !strings.Contains(r.stdout, "pushed hangar/s1") {
		t.Errorf("stdout %q", r.stdout)
	}
	if f.count() < 3 {
		t.Errorf("%d requests: did not wait", f.count())
	}
	// A failed push is an error the user sees.
	_, env2 := startFake(t, map[string]answer{
		"DELETE /v1/sessions/s2": {status: 202, body: `{"id":"s2","state":"ended","push":{"ref":"hangar/s2","ok":false,"message":"remote rejected"}}`},
	})
	r = runCLI(t, env2, "sessions", "end", "s2")
	if r.code != 1 || !strings.Contains(r.stderr, "remote rejected") {
		t.Errorf("failed push: exit %d stderr %q", r.code, r.stderr)
	}
}

func TestTenants(t *testing.T) {
	f, env := startFake(t, map[string]answer{
		"POST /v1/tenants":         {status: 201, body: `{"id":"t1","name":"acme","api_key":"hk_secret"}`},
		"GET /v1/tenants":          {body: `[{"id":"t1","name":"acme","pools":["dev"],"max_sessions":3}]`},
		"DELETE /v1/tenants/t1":    {status: 204},
		"POST /v1/tenants/t1/keys": {body: `{"id":"t1","name":"acme","api_key":"hk_new"}`},
	})
	r := runCLI(t, env, "tenants", "create", "acme", "--pool", "dev", "--pool", "quickstart,big", "--max-sessions", "3", "--max-session-duration", "8h")
	if r.code != 0 || !strings.Contains(r.stdout, "hk_secret") {
		t.Fatalf("create: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	req := f.last(t)
	if req.auth != "Bearer admin-key" {
		t.Errorf("auth = %q, want the admin key", req.auth)
	}
	body, _ := json.Marshal(req.body)
	if string(body) != `{"max_session_duration":"8h","max_sessions":3,"name":"acme","pools":["dev","quickstart","big"]}` {
		t.Errorf("body %s", body)
	}
	if r := runCLI(t, env, "tenants", "ls"); r.code != 0 || !strings.Contains(r.stdout, "acme") {
		t.Errorf("ls: %+v", r)
	}
	if r := runCLI(t, env, "tenants", "rm", "t1"); r.code != 0 || f.last(t).method != "DELETE" {
		t.Errorf("rm: %+v", r)
	}
	if r := runCLI(t, env, "tenants", "rotate", "t1", "--output", "json"); r.code != 0 || !strings.Contains(r.stdout, `"api_key": "hk_new"`) {
		t.Errorf("rotate: %+v", r)
	}
}

func TestEscapeFilter(t *testing.T) {
	cases := []struct {
		name   string
		chunks []string
		sent   string
		act    escapeAction
	}{
		{"plain", []string{"ls\r"}, "ls\r", escNone},
		{"detach at start", []string{"~."}, "", escDetach},
		{"detach after enter", []string{"echo\r~.more"}, "echo\r", escDetach},
		{"detach split across reads", []string{"x\n~", "."}, "x\n", escDetach},
		{"tilde mid-line", []string{"a~.b"}, "a~.b", escNone},
		{"double tilde", []string{"~~."}, "~.", escNone},
		{"tilde then other", []string{"~x"}, "~x", escNone},
		{"help", []string{"~?"}, "", escHelp},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newEscapeFilter()
			var sent strings.Builder
			act := escNone
			for _, c := range tc.chunks {
				out, a := f.filter([]byte(c))
				sent.Write(out)
				if a != escNone {
					act = a
				}
				if a == escDetach {
					break
				}
			}
			if sent.String() != tc.sent || act != tc.act {
				t.Errorf("sent %q act %v, want %q %v", sent.String(), act, tc.sent, tc.act)
			}
		})
	}
}

func TestSessionsCreateWait(t *testing.T) {
	_, env := startFake(t, map[string]answer{
		"POST /v1/sessions": {status: 202, body: sessionJSON},
		"GET /v1/sessions/s1": {seq: []string{
			`{"id":"s1","state":"claiming"}`,
			`{"id":"s1","state":"ready","region":"iad"}`,
		}},
	})
	r := runCLI(t, env, "sessions", "create", "--pool", "dev", "--wait")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "s1\tready" {
		t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	_, env2 := startFake(t, map[string]answer{
		"POST /v1/sessions":   {status: 202, body: sessionJSON},
		"GET /v1/sessions/s1": {body: `{"id":"s1","state":"failed","reason":"no capacity"}`},
	})
	r = runCLI(t, env2, "sessions", "create", "--pool", "dev", "--wait")
	if r.code != 1 || !strings.Contains(r.stderr, "session s1 failed: no capacity") {
		t.Fatalf("failed session: exit %d stderr %q", r.code, r.stderr)
	}
}
