package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/wire"
)

// TestBadInput: every kind of bad input gets a clear error and the agent
// keeps serving.
func TestBadInput(t *testing.T) {
	a := startAgent(t, agentOpts{env: map[string]string{"HANGAR_AGENT_MAX_FRAME": "1024"}})

	// Attach before init: a plain HTTP error.
	if _, resp, err := a.dial("s1", wire.SubprotocolPTY); err == nil || resp == nil || resp.StatusCode != 409 {
		t.Fatalf("attach before init: %v %v", err, resp)
	}
	if code, body := a.call("GET", "/v1/status", "s1", nil); code != 200 || !strings.Contains(body, `"state":"idle"`) {
		t.Fatalf("status before init: %d %s", code, body)
	}
	if code, body := a.call("POST", "/v1/finish", "s1", nil); code != 409 || !strings.Contains(body, "not_initialized") {
		t.Fatalf("finish before init: %d %s", code, body)
	}

	marker := filepath.Join(t.TempDir(), "pwned")
	badInits := []struct {
		name string
		body any
		code int
		msg  string
	}{
		{"malformed JSON", `{"session_id": "s1", `, 400, "malformed JSON"},
		{"not an object", `[1,2,3]`, 400, "malformed JSON"},
		{"option injection", map[string]any{"session_id": "s1", "repo": "--upload-pack=touch " + marker}, 422, "starts with '-'"},
		{"ext transport", map[string]any{"session_id": "s1", "repo": "ext::sh%20-c%20touch%20" + marker}, 422, "transport"},
		{"http to the internet", map[string]any{"session_id": "s1", "repo": "http://example.com/x.git"}, 422, "loopback"},
		{"password in URL", map[string]any{"session_id": "s1", "repo": "https://u:p@example.com/x.git"}, 422, "password"},
		{"bad branch", map[string]any{"session_id": "s1", "repo": "https://example.com/x.git", "branch": "a..b"}, 422, "not a valid branch name"},
		{"branch option", map[string]any{"session_id": "s1", "repo": "https://example.com/x.git", "branch": "-f"}, 422, "not a valid branch name"},
		{"token in the user part", map[string]any{"session_id": "s1", "repo": "https://ghp_abc123@example.com/x.git"}, 422, "user part"},
		{"git protocol", map[string]any{"session_id": "s1", "repo": "git://example.com/x.git"}, 422, "scheme"},
		{"reserved env", map[string]any{"session_id": "s1", "env": map[string]string{"HANGAR_X": "1"}}, 422, "reserved"},
		{"bad session branch", map[string]any{"session_id": "s1", "session_branch": "x y"}, 422, "session_branch"},
		{"bad mode", map[string]any{"session_id": "s1", "mode": "tty"}, 422, "mode"},
		{"bad size", map[string]any{"session_id": "s1", "cols": 100000, "rows": 10}, 422, "invalid size"},
		{"bad session id", map[string]any{"session_id": "../x"}, 401, ""},
		{"no session id", map[string]any{}, 422, "session_id"},
		{"token with a newline", map[string]any{"session_id": "s1", "credentials": map[string]any{"git_token": "abc\npassword=x"}}, 422, "credentials.git_token"},
	}
	for _, c := range badInits {
		code, body := a.call("POST", "/v1/init", "s1", c.body)
		if code != c.code || !strings.Contains(body, c.msg) || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %s", c.name, code, body)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("option injection ran a command")
	}
	// A session id that would be a bad ref is refused with a matching token.
	if code, body := a.call("POST", "/v1/init", "bad..id", map[string]any{"session_id": "bad..id"}); code != 422 {
		t.Errorf("bad session id: %d %s", code, body)
	}

	// A good init after all that, then a second session is refused.
	a.init(&agentapi.InitRequest{SessionID: "s1", Command: []string{a.fake}})
	if code, body := a.call("POST", "/v1/init", "s2", map[string]any{"session_id": "s2"}); code != 409 || !strings.Contains(body, "another session") {
		t.Fatalf("second session: %d %s", code, body)
	}
	// A valid token for another session is 401 everywhere (DESIGN: anything
	// but this machine's session is 401), with a code that says why.
	for _, c := range []struct{ method, path string }{{"GET", "/v1/status"}, {"POST", "/v1/finish"}} {
		if code, body := a.call(c.method, c.path, "s2", nil); code != 401 || !strings.Contains(body, agentapi.CodeWrongSession) {
			t.Fatalf("%s %s for a foreign session: %d %s", c.method, c.path, code, body)
		}
	}
	if _, resp, err := a.dial("s2", wire.SubprotocolPTY); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("attach for a foreign session: %v", err)
	}
	if _, resp, err := a.dial("s1", wire.SubprotocolJSONL); err == nil || resp.StatusCode != 400 {
		t.Fatalf("attach with the wrong subprotocol: %v", err)
	}

	c := a.attach("s1", wire.SubprotocolPTY, wire.Attach{From: 0, Role: wire.RoleWriter})
	c.waitOutput("fake claude")
	c.sendRaw(websocket.MessageText, []byte(`{"type":"resize","cols":`))
	c.waitError(wire.ErrCodeBadRequest)
	c.sendRaw(websocket.MessageText, []byte(`{"type":"teleport","to":"mars"}`))
	if e := c.waitError(wire.ErrCodeUnknownType); !strings.Contains(e.Message, "teleport") {
		t.Fatalf("unknown type message %q", e.Message)
	}
	c.sendRaw(websocket.MessageText, []byte(`{"no":"type"}`))
	c.waitFor("two bad_request errors", func() bool { return countErrors(c, wire.ErrCodeBadRequest) == 2 })
	c.sendRaw(websocket.MessageBinary, []byte(strings.Repeat("x", 5000)))
	c.waitError(wire.ErrCodeFrameTooLarge)
	c.sendRaw(websocket.MessageText, []byte(`{"type":"ping","ts":1,"pad":"`+strings.Repeat("y", 5000)+`"}`))
	c.waitFor("two frame_too_large errors", func() bool { return countErrors(c, wire.ErrCodeFrameTooLarge) == 2 })
	c.send(&wire.Resize{Cols: 0, Rows: 0})
	c.waitError(wire.ErrCodeInvalidSize)
	c.send(&wire.Resize{Cols: 100000, Rows: 24})
	c.waitFor("two invalid_size errors", func() bool { return countErrors(c, wire.ErrCodeInvalidSize) == 2 })
	c.send(&wire.Attach{})
	c.send(&wire.Exit{})
	c.waitFor("two more bad_request errors", func() bool { return countErrors(c, wire.ErrCodeBadRequest) == 4 })
	c.send(&wire.Ping{TS: 42})
	c.waitCtrl("pong", func(m wire.Message) bool { p, ok := m.(*wire.Pong); return ok && p.TS == 42 })
	// Still serving: the oversized input was not applied, normal input is.
	c.input("still alive\r")
	c.waitOutput("you said: still alive")
	if strings.Contains(c.out.String(), "xxxxxxxxxx") {
		t.Fatal("oversized input reached the terminal")
	}

	// A first frame that is not attach closes that socket only.
	conn, _, err := a.dial("s1", wire.SubprotocolPTY)
	if err != nil {
		t.Fatal(err)
	}
	bad := newWSClient(t, a, conn)
	bad.input("typing before attach")
	bad.waitError(wire.ErrCodeAttachRequired)
	if code := bad.waitClosed(); code != websocket.StatusPolicyViolation {
		t.Fatalf("close code %d", code)
	}
	conn, _, err = a.dial("s1", wire.SubprotocolPTY)
	if err != nil {
		t.Fatal(err)
	}
	bad = newWSClient(t, a, conn)
	bad.send(&wire.Attach{Role: "admin"})
	bad.waitError(wire.ErrCodeBadRequest)
	bad.waitClosed()

	c.input("and still\r")
	c.waitOutput("you said: and still")
	if code, body := a.call("GET", "/v1/health", "s1", nil); code != 200 || !strings.Contains(body, "running") {
		t.Fatalf("health: %d %s", code, body)
	}
}

func countErrors(c *wsClient, code string) int {
	n := 0
	for _, m := range c.ctrl {
		if e, ok := m.(*wire.Error); ok && e.Code == code {
			n++
		}
	}
	return n
}
