package cli

import (
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/hangarhq/hangar/internal/client"
)

// Objects as the daemon sends them: every field present, many of them empty
// or null, plus a field this client does not know (a newer daemon's).
const (
	fullSession = `{"id":"s1","tenant":"dev","pool":"dev","tenant_image":"","region":"","state":"pending",` +
		`"reason":"","queue_position":0,"machine_id":"","repo":"","branch":"","session_branch":"hangar/s1",` +
		`"mode":"pty","created_at":"2026-11-28T19:00:00Z","ready_at":null,"ended_at":null,"push":null,` +
		`"cost_usd":0,"future_field":{"x":1}}`
	fullEnded = `{"id":"s1","tenant":"dev","pool":"dev","tenant_image":"","region":"local","state":"ended",` +
		`"reason":"ended by request","queue_position":0,"machine_id":"m1","repo":"","branch":"",` +
		`"session_branch":"hangar/s1","mode":"pty","created_at":"2026-11-28T19:00:00Z",` +
		`"ready_at":"2026-11-28T19:00:01Z","ended_at":"2026-11-28T19:00:09Z",` +
		`"push":{"ref":"","commit":"","ok":false,"message":"no changes; no repository: nothing pushed"},"cost_usd":0.0001}`
	fullPool = `{"name":"dev","app_name":"hangar-dev","regions":["local"],"image":"hangar-agent","min_standby":0,` +
		`"max_machines":4,"machines":1,"standby_mode":"stop","idle_timeout":"","session_ttl":"","draining":false,` +
		`"standby":{"total":0,"by_state":{},"stale":0,"sessions":1},"tenant_images":[]}`
	fullTenant = `{"id":"t1","name":"acme","pools":[],"max_sessions":0,"max_session_duration":"",` +
		`"created_at":"2026-11-28T19:00:00Z"}`
	fullTenantKey = `{"id":"t1","name":"acme","pools":[],"max_sessions":0,"max_session_duration":"",` +
		`"created_at":"2026-11-28T19:00:00Z","api_key":"hk_secret"}`
)

// TestOutputJSONIsTheAPIObject: --output json prints what the API sent, every
// field included, so that scripts can rely on .machine_id, .push.ok, ….
func TestOutputJSONIsTheAPIObject(t *testing.T) {
	_, env := startFake(t, map[string]answer{
		"POST /v1/sessions":        {status: 202, body: fullSession},
		"GET /v1/sessions":         {body: "[" + fullSession + "," + fullEnded + "]"},
		"GET /v1/sessions/s1":      {body: fullEnded},
		"DELETE /v1/sessions/s1":   {status: 202, body: fullEnded},
		"GET /v1/pools":            {body: "[" + fullPool + "]"},
		"POST /v1/tenants":         {status: 201, body: fullTenantKey},
		"GET /v1/tenants":          {body: "[" + fullTenant + "]"},
		"POST /v1/tenants/t1/keys": {body: fullTenantKey},
	})
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"sessions create", []string{"sessions", "create", "--pool", "dev"}, fullSession},
		{"sessions ls", []string{"sessions", "ls"}, "[" + fullSession + "," + fullEnded + "]"},
		{"sessions show", []string{"sessions", "show", "s1"}, fullEnded},
		{"sessions end", []string{"sessions", "end", "s1"}, fullEnded},
		{"pools", []string{"pools"}, "[" + fullPool + "]"},
		{"tenants create", []string{"tenants", "create", "acme"}, fullTenantKey},
		{"tenants ls", []string{"tenants", "ls"}, "[" + fullTenant + "]"},
		{"tenants rotate", []string{"tenants", "rotate", "t1"}, fullTenantKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, env, append([]string{"--output", "json"}, tc.args...)...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			var got, want any
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
			}
			if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("printed\n%s\nwant the API's object\n%s", r.stdout, tc.want)
			}
		})
	}
}

// TestOutputJSONEmptyList: an empty list is [], not null.
func TestOutputJSONEmptyList(t *testing.T) {
	_, env := startFake(t, map[string]answer{
		"GET /v1/sessions": {body: `[]`},
		"GET /v1/pools":    {body: `[]`},
		"GET /v1/tenants":  {body: `[]`},
	})
	for _, args := range [][]string{{"sessions", "ls"}, {"pools"}, {"tenants", "ls"}} {
		r := runCLI(t, env, append([]string{"--output", "json"}, args...)...)
		if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
			t.Errorf("%v: exit %d stdout %q stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
}

func TestTenantsByName(t *testing.T) {
	f, env := startFake(t, map[string]answer{
		"GET /v1/tenants": {body: `[{"id":"t1","name":"acme"},{"id":"t2","name":"twin"},{"id":"t3","name":"twin"},` +
			`{"id":"t4","name":"t1"}]`},
		"DELETE /v1/tenants/t1":    {status: 204},
		"DELETE /v1/tenants/t4":    {status: 204},
		"POST /v1/tenants/t1/keys": {body: `{"id":"t1","name":"acme","api_key":"hk_new"}`},
	})
	cases := []struct {
		name       string
		args       []string
		code       int
		wantReq    string // the last request, "METHOD path"
		out, errIn string
	}{
		{"rm by name", []string{"tenants", "rm", "acme"}, 0, "DELETE /v1/tenants/t1", "tenant acme (t1) deleted", ""},
		{"rm by id", []string{"tenants", "rm", "t4"}, 0, "DELETE /v1/tenants/t4", "tenant t1 (t4) deleted", ""},
		// An id wins over another tenant's name.
		{"id beats name", []string{"tenants", "rm", "t1"}, 0, "DELETE /v1/tenants/t1", "tenant acme (t1) deleted", ""},
		{"rotate by name", []string{"tenants", "rotate", "acme"}, 0, "POST /v1/tenants/t1/keys", "api key: hk_new", ""},
		{"unknown", []string{"tenants", "rm", "nobody"}, 1, "GET /v1/tenants", "", `no tenant with id or name "nobody"`},
		{"ambiguous", []string{"tenants", "rotate", "twin"}, 1, "GET /v1/tenants", "", `2 tenants are named "twin" (ids t2, t3): pass the id`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, env, tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d (stderr %q)", r.code, tc.code, r.stderr)
			}
			if last := f.last(t); last.method+" "+last.path != tc.wantReq {
				t.Errorf("last request %s %s, want %s", last.method, last.path, tc.wantReq)
			}
			if !strings.Contains(r.stdout, tc.out) || !strings.Contains(r.stderr, tc.errIn) {
				t.Errorf("stdout %q stderr %q", r.stdout, r.stderr)
			}
		})
	}
}

// TestPushWithoutRepository: a session started without a repo has nothing to
// push; that is information, not a failure, whichever way the agent says it.
func TestPushWithoutRepository(t *testing.T) {
	cases := []struct{ name, push string }{
		{"ok false", `{"ref":"","commit":"","ok":false,"message":"committed; no repository: nothing pushed"}`},
		{"ok true", `{"ref":"","commit":"","ok":true,"message":"no repository: nothing pushed"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ended := `{"id":"s1","state":"ended","reason":"ended by request","push":` + tc.push + `}`
			_, env := startFake(t, map[string]answer{
				"GET /v1/sessions/s1":    {body: ended},
				"DELETE /v1/sessions/s1": {status: 202, body: ended},
			})
			for _, cmd := range []string{"show", "end"} {
				r := runCLI(t, env, "sessions", cmd, "s1")
				if r.code != 0 {
					t.Errorf("%s: exit %d stderr %q", cmd, r.code, r.stderr)
				}
				if strings.Contains(r.stdout+r.stderr, "FAILED") || !strings.Contains(r.stdout, "no repository: nothing pushed") {
					t.Errorf("%s: stdout %q", cmd, r.stdout)
				}
			}
		})
	}
}

func TestPushSummary(t *testing.T) {
	cases := []struct {
		push   string
		text   string
		failed bool
	}{
		{`null`, "", false},
		{`{"ref":"","commit":"","ok":false,"message":""}`, "", false},
		{`{"ref":"refs/heads/hangar/s1","commit":"0123456789abcdef","ok":true,"message":"committed; pushed hangar/s1"}`,
			"pushed refs/heads/hangar/s1 0123456789ab (committed; pushed hangar/s1)", false},
		{`{"ref":"refs/heads/hangar/s1","commit":"","ok":true,"message":"no changes and no commits: nothing to push"}`,
			"no changes and no commits: nothing to push", false},
		{`{"ref":"refs/heads/hangar/s1","commit":"abc","ok":false,"message":"committed; push failed: remote rejected"}`,
			"push FAILED refs/heads/hangar/s1 abc (committed; push failed: remote rejected)", true},
		{`{"ref":"","commit":"","ok":false,"message":"no changes; no repository: nothing pushed"}`,
			"no changes; no repository: nothing pushed", false},
		// A push to a repo that failed with git's "not a repository" is still a failure.
		{`{"ref":"refs/heads/x","commit":"abc","ok":false,"message":"push failed: no repository found at that URL"}`,
			"push FAILED refs/heads/x abc (push failed: no repository found at that URL)", true},
	}
	for _, tc := range cases {
		var p *client.Push
		if err := json.Unmarshal([]byte(tc.push), &p); err != nil {
			t.Fatal(err)
		}
		text, failed := pushSummary(p)
		if text != tc.text || failed != tc.failed {
			t.Errorf("%s: got %q %v, want %q %v", tc.push, text, failed, tc.text, tc.failed)
		}
	}
}

// TestPrinter: the one formatter every command prints through.
func TestPrinter(t *testing.T) {
	v := map[string]any{"id": "s1", "n": 2}
	cases := []struct {
		name, format string
		print        func(p *printer) error
		want         string
	}{
		{"json object", "json", func(p *printer) error { return p.print(v, nil) }, "{\n  \"id\": \"s1\",\n  \"n\": 2\n}\n"},
		{"json table is the list", "json", func(p *printer) error { return p.table([]any{}, "A\tB", []string{row("x", 1)}) }, "[]\n"},
		{"json fields are the object", "json", func(p *printer) error { return p.fields(v, []field{{"id", "s1"}}) }, "{\n  \"id\": \"s1\",\n  \"n\": 2\n}\n"},
		{"text", "text", func(p *printer) error {
			return p.print(v, func(w io.Writer) error { _, err := io.WriteString(w, "s1 ready\n"); return err })
		}, "s1 ready\n"},
		{"default is text", "", func(p *printer) error {
			return p.table(v, "ID\tSTATE", []string{row("s1", "ready"), row("session-2", 3)})
		},
			"ID         STATE\ns1         ready\nsession-2  3\n"},
		{"fields skip empty values", "text", func(p *printer) error {
			return p.fields(v, []field{{"id", "s1"}, {"reason", ""}, {"session branch", "hangar/s1"}})
		}, "id:              s1\nsession branch:  hangar/s1\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			p, err := newPrinter(tc.format, &b)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.print(p); err != nil {
				t.Fatal(err)
			}
			if b.String() != tc.want {
				t.Errorf("printed\n%q\nwant\n%q", b.String(), tc.want)
			}
		})
	}
	if _, err := newPrinter("yaml", io.Discard); err == nil || err.Error() != `--output must be text or json, got "yaml"` {
		t.Errorf("newPrinter(yaml): %v", err)
	}
}

// TestOutputJSONEveryCommand: every command that prints a result prints it
// through the shared printer: --output json is JSON only, on stdout; text is
// never JSON.
func TestOutputJSONEveryCommand(t *testing.T) {
	_, env := startFake(t, map[string]answer{
		"POST /v1/sessions":        {status: 202, body: fullSession},
		"GET /v1/sessions":         {body: "[" + fullSession + "]"},
		"GET /v1/sessions/s1":      {body: fullEnded},
		"DELETE /v1/sessions/s1":   {status: 202, body: fullEnded},
		"GET /v1/pools":            {body: "[" + fullPool + "]"},
		"POST /v1/tenants":         {status: 201, body: fullTenantKey},
		"GET /v1/tenants":          {body: "[" + fullTenant + "]"},
		"DELETE /v1/tenants/t1":    {status: 204},
		"POST /v1/tenants/t1/keys": {body: fullTenantKey},
	})
	for _, args := range [][]string{
		{"sessions", "create", "--pool", "dev"}, {"sessions", "ls"}, {"sessions", "list"}, {"sessions", "show", "s1"},
		{"sessions", "end", "s1"}, {"pools"}, {"pools", "ls"}, {"tenants", "create", "acme"}, {"tenants", "ls"},
		{"tenants", "list"}, {"tenants", "rotate", "acme"}, {"tenants", "rm", "acme"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runCLI(t, env, append(args, "--output", "json")...)
			var v any
			if err := json.Unmarshal([]byte(r.stdout), &v); r.code != 0 || err != nil {
				t.Errorf("json: exit %d (%v) stdout %q stderr %q", r.code, err, r.stdout, r.stderr)
			}
			if strings.Contains(r.stderr, "shown only this once") {
				t.Errorf("json: the key notice is for people: %q", r.stderr)
			}
			r = runCLI(t, env, args...)
			if r.code != 0 || json.Valid([]byte(r.stdout)) {
				t.Errorf("text: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
			}
		})
	}
	r := runCLI(t, env, "tenants", "rm", "t1", "--output", "json")
	if want := "{\n  \"deleted\": true,\n  \"id\": \"t1\",\n  \"name\": \"acme\"\n}\n"; r.stdout != want {
		t.Errorf("tenants rm json: %q, want %q", r.stdout, want)
	}
}
