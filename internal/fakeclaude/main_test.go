package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/hangarhq/hangar/internal/testbin"
)

const pkg = "github.com/hangarhq/hangar/internal/fakeclaude"

var streamArgs = []string{"-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose"}

func run(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(testbin.Path(t, pkg), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func lines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var ms []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		ms = append(ms, m)
	}
	return ms
}

func kinds(ms []map[string]any) string {
	var k []string
	for _, m := range ms {
		s := m["type"].(string)
		if st, ok := m["subtype"].(string); ok {
			s += "/" + st
		}
		k = append(k, s)
	}
	return strings.Join(k, " ")
}

func user(text string) string {
	b, _ := json.Marshal(map[string]any{"type": "user", "message": map[string]any{"role": "user", "content": text}})
	return string(b) + "\n"
}

func TestArgumentChecksLikeTheRealCLI(t *testing.T) {
	cases := []struct {
		args []string
		msg  string
	}{
		{[]string{"--json"}, "error: unknown option '--json'"},
		{[]string{"-p", "--output-format", "stream-json"}, "requires --verbose"},
		{[]string{"-p", "--input-format", "stream-json"}, "--input-format=stream-json requires output-format=stream-json"},
	}
	for _, c := range cases {
		_, stderr, code := run(t, "", c.args...)
		if code != 1 || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: code %d, stderr %q", c.args, code, stderr)
		}
	}
	// Without a terminal the REPL refuses, as the TUI flips to print mode.
	if _, stderr, code := run(t, ""); code != 1 || !strings.Contains(stderr, "Input must be provided") {
		t.Errorf("REPL without a tty: %d %q", code, stderr)
	}
}

func TestStreamJSONTurns(t *testing.T) {
	in := user("hello") + "\n" + `{"type":"control_request","request_id":"r1","request":{"subtype":"interrupt"}}` + "\n" + "not json\n" + user("TOOL") + user("DENY") + user("NOLOGIN") + user("AUTHFAIL")
	out, stderr, code := run(t, in, append(streamArgs, "--session-id", "11111111-2222-4333-8444-555555555555", "--replay-user-messages",
		"--include-partial-messages", "--allowedTools", "Bash(git *)", "Edit", "--")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "Error parsing streaming input line") {
		t.Errorf("malformed line not reported: %q", stderr)
	}
	ms := lines(t, out)
	k := kinds(ms)
	for _, want := range []string{
		"system/init system/status user stream_event stream_event",
		"assistant result/success control_response",
		"assistant user assistant result/success",
		"system/permission_denied user assistant result/success",
		"system/api_retry system/api_retry system/api_retry result/success",
	} {
		if !strings.Contains(k, want) {
			t.Errorf("missing %q in %s", want, k)
		}
	}
	for _, m := range ms {
		if sid, ok := m["session_id"]; ok && sid != "11111111-2222-4333-8444-555555555555" {
			t.Fatalf("session id %v", sid)
		}
	}
	var results []map[string]any
	for _, m := range ms {
		if m["type"] == "result" {
			results = append(results, m)
		}
	}
	if len(results) != 5 || results[0]["result"] != "echo: hello" || results[1]["num_turns"].(float64) != 2 ||
		len(results[2]["permission_denials"].([]any)) != 1 || results[3]["is_error"] != true || results[4]["is_error"] != true {
		t.Fatalf("results %v", results)
	}
}

func TestCrashAndUnknownResume(t *testing.T) {
	out, _, code := run(t, user("CRASH"), streamArgs...)
	if code != 2 || !strings.HasSuffix(out, `{"type":"assistant","mess`) {
		t.Fatalf("crash: %d %q", code, out)
	}
	cmd := exec.Command(testbin.Path(t, pkg), append(streamArgs, "--resume", "gone")...)
	cmd.Env = append(cmd.Environ(), "FAKECLAUDE_UNKNOWN_SESSIONS=gone")
	b, err := cmd.Output()
	if err == nil || !strings.Contains(string(b), "error_during_execution") {
		t.Fatalf("unknown resume: %v %s", err, b)
	}
}
