package cli

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestNormalizeArgs: single-dash long flags of the command named so far
// become --flags; values, unknown flags and everything after "--" stay.
func TestNormalizeArgs(t *testing.T) {
	cases := []struct {
		name     string
		in, want string
	}{
		{"command flags", "sessions create -pool dev -attach -- bash", "sessions create --pool dev --attach -- bash"},
		{"global flag before the command", "-url http://x -output=json sessions ls", "--url http://x --output=json sessions ls"},
		{"global flag after the command", "sessions ls -state ready -token k", "sessions ls --state ready --token k"},
		{"alias", "sessions list -state=ready", "sessions list --state=ready"},
		{"interleaved", "tenants create -pool a acme -max-sessions 3", "tenants create --pool a acme --max-sessions 3"},
		{"nothing after --", "sessions create --pool dev -- bash -pool x -- -attach", "sessions create --pool dev -- bash -pool x -- -attach"},
		{"a value is a value", "sessions create --region -attach -git-author -pool", "sessions create --region -attach --git-author -pool"},
		{"negative value", "tenants create t -max-sessions -1", "tenants create t --max-sessions -1"},
		{"another command's flag", "sessions ls -pool dev", "sessions ls -pool dev"},
		{"unknown flag", "sessions ls -colour", "sessions ls -colour"},
		{"short help", "sessions create -h", "sessions create -h"},
		{"long help", "attach s1 -help", "attach s1 --help"},
		{"already double", "--output json pools ls", "--output json pools ls"},
		{"-- before the command ends the global flags", "--url u -- sessions ls -state x", "--url u sessions ls --state x"},
		{"-- after the command name", "attach -- -ro", "attach -- -ro"},
		{"completion request", "__complete sessions create -pool ", "__complete sessions create --pool "},
		{"no args", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := newRootCmd(&env{io: &IO{}})
			in := strings.Split(tc.in, " ")
			want := strings.Split(tc.want, " ")
			if tc.in == "" {
				in, want = nil, []string{}
			}
			got := normalizeArgs(root, in)
			if got == nil || !reflect.DeepEqual(got, want) {
				t.Errorf("normalizeArgs(%q)\n got %q\nwant %q", in, got, want)
			}
		})
	}
}

// TestSingleDashFlags: command lines written for Go's flag package
// (-pool dev, -output=json) mean what they meant.
func TestSingleDashFlags(t *testing.T) {
	f, env := startFake(t, map[string]answer{
		"POST /v1/sessions": {status: 202, body: sessionJSON},
		"GET /v1/sessions":  {body: `[]`},
	})
	url := env["HANGAR_URL"]
	delete(env, "HANGAR_URL")
	r := runCLI(t, env, "-url", url, "sessions", "create", "-pool", "dev", "-mode=jsonl", "-env", "A=1",
		"-no-credentials", "-output", "json", "--", "bash", "-output", "text")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	body, _ := json.Marshal(f.last(t).body)
	if want := `{"command":["bash","-output","text"],"env":{"A":"1"},"mode":"jsonl","pool":"dev"}`; string(body) != want {
		t.Errorf("body %s, want %s", body, want)
	}
	if !strings.HasPrefix(r.stdout, "{\n") {
		t.Errorf("-output json printed %q", r.stdout)
	}
	if r := runCLI(t, env, "sessions", "ls", "-state=ready", "-url="+url, "-token", "dash-key"); r.code != 0 {
		t.Fatalf("ls: exit %d: %s", r.code, r.stderr)
	}
	if last := f.last(t); last.query != "state=ready" || last.auth != "Bearer dash-key" {
		t.Errorf("ls: query %q auth %q", last.query, last.auth)
	}
}

// TestInterleavedFlags: flags go before, between and after the positional
// arguments, global ones before and after the command name.
func TestInterleavedFlags(t *testing.T) {
	f, env := startFake(t, map[string]answer{
		"POST /v1/tenants":    {status: 201, body: `{"id":"t1","name":"acme","api_key":"hk"}`},
		"GET /v1/sessions/s1": {body: `{"id":"s1","state":"ready"}`},
	})
	r := runCLI(t, env, "tenants", "create", "--pool", "a", "--max-sessions", "2", "acme", "--pool", "b", "--output", "json")
	if r.code != 0 {
		t.Fatalf("tenants create: exit %d: %s", r.code, r.stderr)
	}
	body, _ := json.Marshal(f.last(t).body)
	if want := `{"max_sessions":2,"name":"acme","pools":["a","b"]}`; string(body) != want {
		t.Errorf("body %s, want %s", body, want)
	}
	for _, args := range [][]string{
		{"--output", "json", "sessions", "show", "s1"},
		{"sessions", "--output", "json", "show", "s1"},
		{"sessions", "show", "--output", "json", "s1"},
		{"sessions", "show", "s1", "--output=json"},
	} {
		r := runCLI(t, env, args...)
		if r.code != 0 || !strings.Contains(r.stdout, `"id": "s1"`) {
			t.Errorf("%q: exit %d stdout %q stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
}

// TestDoubleDash: "--" ends the flags; after it comes the remote command,
// which is not a positional argument of other commands.
func TestDoubleDash(t *testing.T) {
	f, env := startFake(t, map[string]answer{
		"POST /v1/sessions": {status: 202, body: sessionJSON},
		"GET /v1/sessions":  {body: `[]`},
	})
	r := runCLI(t, env, "sessions", "create", "--pool", "dev", "--", "sh", "-c", "echo --", "--output", "json", "--")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "s1\tpending" {
		t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	cmd, _ := json.Marshal(f.last(t).body["command"])
	if want := `["sh","-c","echo --","--output","json","--"]`; string(cmd) != want {
		t.Errorf("command %s, want %s", cmd, want)
	}
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"sessions", "show", "--", "s1"}, 2, "sessions show: missing argument"},
		{[]string{"sessions", "ls", "--", "anything"}, 0, ""},
		{[]string{"--", "sessions", "ls"}, 0, ""},
	}
	for _, tc := range cases {
		r := runCLI(t, env, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%q: exit %d stderr %q, want %d %q", tc.args, r.code, r.stderr, tc.code, tc.msg)
		}
	}
}
