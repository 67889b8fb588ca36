package cli

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/wire"
)

// exitingSession serves an attach that prints some output and then reports
// that the process exited with code (or, with closeCode, closes like a
// session ended by someone else).
func exitingSession(t *testing.T, code int, closeCode websocket.StatusCode) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wire.SubprotocolPTY}})
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		if _, data, err := c.Read(ctx); err != nil {
			return
		} else if m, err := wire.Decode(data); err != nil || m.MessageType() != wire.TypeAttach {
			t.Errorf("first frame %q is not attach (%v)", data, err)
			return
		}
		out := []byte("bye\r\n")
		_ = c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Attached{Session: "s1", Role: wire.RoleWriter, Head: int64(len(out)), Cols: 80, Rows: 24}))
		_ = c.Write(ctx, websocket.MessageBinary, out)
		_ = c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Replayed{At: int64(len(out))}))
		if closeCode != 0 {
			_ = c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Error{Code: "session_ended", Message: "the session has ended"}))
			c.Close(closeCode, "session ended")
			return
		}
		_ = c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Exit{Code: code, At: int64(len(out))}))
		c.Close(websocket.StatusNormalClosure, "")
	}
}

// TestAttachAfterExit: when the remote process exits, attach waits for the
// daemon to end the session and tells its reason and push result; the
// process's status becomes attach's.
func TestAttachAfterExit(t *testing.T) {
	ready := `{"id":"s1","state":"ready","mode":"pty"}`
	ending := `{"id":"s1","state":"ending","mode":"pty"}`
	pushed := `{"id":"s1","state":"ended","mode":"pty","reason":"process exited","push":{"ref":"refs/heads/hangar/s1","commit":"0123456789abcdef","ok":true,"message":"committed; pushed hangar/s1"}}`
	noRepo := `{"id":"s1","state":"ended","mode":"pty","reason":"process exited","push":{"ref":"","commit":"","ok":false,"message":"no changes; no repository: nothing pushed"}}`
	rejected := `{"id":"s1","state":"ended","mode":"pty","reason":"process exited","push":{"ref":"refs/heads/hangar/s1","commit":"abc","ok":false,"message":"committed; push failed: remote rejected"}}`
	failed := `{"id":"s1","state":"failed","mode":"pty","reason":"machine lost"}`
	cases := []struct {
		name      string
		code      int
		closeCode websocket.StatusCode
		states    []string // successive answers of GET /v1/sessions/s1
		exit      int
		stderr    []string
	}{
		{"pushed", 0, 0, []string{ready, ending, ending, pushed}, 0,
			[]string{"process exited with status 0; waiting for the session to end", "session s1 ended: process exited", "pushed refs/heads/hangar/s1 0123456789ab"}},
		{"status carries over", 7, 0, []string{ready, ending, pushed}, 7,
			[]string{"exited with status 7", "session s1 ended: process exited", "pushed refs/heads/hangar/s1"}},
		{"no repository", 0, 0, []string{ready, noRepo}, 0,
			[]string{"session s1 ended: process exited", "no changes; no repository: nothing pushed"}},
		{"push failed", 0, 0, []string{ready, ending, rejected}, 1,
			[]string{"push FAILED refs/heads/hangar/s1", "its work was not pushed: committed; push failed: remote rejected"}},
		{"session failed", 0, 0, []string{ready, failed}, 1,
			[]string{"session s1 failed: machine lost"}},
		{"ended by someone else", 0, 4004, []string{ready, ending, pushed}, 0,
			[]string{"session s1 ended: process exited", "pushed refs/heads/hangar/s1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, env := serveFake(t, &fakeAPI{
				answers: map[string]answer{"GET /v1/sessions/s1": {seq: tc.states}},
				attach:  exitingSession(t, tc.code, tc.closeCode),
			})
			r := runCLI(t, env, "attach", "s1")
			if r.code != tc.exit {
				t.Errorf("exit %d, want %d (stderr %q)", r.code, tc.exit, r.stderr)
			}
			if r.stdout != "bye\r\n" {
				t.Errorf("stdout %q", r.stdout)
			}
			for _, s := range tc.stderr {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr %q does not contain %q", r.stderr, s)
				}
			}
			if strings.Contains(r.stderr, "sessions end") {
				t.Errorf("stderr still advises ending the session: %q", r.stderr)
			}
		})
	}
}

// TestAttachEndWaitIsBounded: a session that does not end in time is left
// to the user with a pointer, and the process's status is kept.
func TestAttachEndWaitIsBounded(t *testing.T) {
	old := endWait
	endWait = 700 * time.Millisecond
	t.Cleanup(func() { endWait = old })
	_, env := serveFake(t, &fakeAPI{
		answers: map[string]answer{"GET /v1/sessions/s1": {seq: []string{`{"id":"s1","state":"ready"}`, `{"id":"s1","state":"ending"}`}}},
		attach:  exitingSession(t, 0, 0),
	})
	r := runCLI(t, env, "attach", "s1")
	if r.code != 0 || !strings.Contains(r.stderr, "session s1 is still ending; see: hangar sessions show s1") {
		t.Errorf("exit %d stderr %q", r.code, r.stderr)
	}
}

// TestAttachEndedSession: attaching to a session that is over fails (so that
// scripts can tell) and says how it ended.
func TestAttachEndedSession(t *testing.T) {
	ended := `{"id":"s1","state":"ended","reason":"idle timeout","push":{"ref":"refs/heads/hangar/s1","commit":"abc","ok":true,"message":"pushed"}}`
	cases := []struct {
		name   string
		states []string
		stderr []string
	}{
		{"ended", []string{ended}, []string{"session s1 has already ended: idle timeout; nothing to attach to", "pushed refs/heads/hangar/s1 abc"}},
		{"failed", []string{`{"id":"s1","state":"failed","reason":"no capacity"}`}, []string{"session s1 failed: no capacity; nothing to attach to"}},
		// It ended between the check and the attach (409 at the upgrade).
		{"ended meanwhile", []string{`{"id":"s1","state":"ready"}`, ended}, []string{"session s1 has already ended: idle timeout"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, env := serveFake(t, &fakeAPI{
				answers: map[string]answer{"GET /v1/sessions/s1": {seq: tc.states}},
				attach: func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusConflict)
					_, _ = w.Write([]byte(`{"error":{"code":"session_ended","message":"session has ended"}}`))
				},
			})
			r := runCLI(t, env, "attach", "s1")
			if r.code != 1 {
				t.Errorf("exit %d, want 1 (stderr %q)", r.code, r.stderr)
			}
			for _, s := range tc.stderr {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr %q does not contain %q", r.stderr, s)
				}
			}
		})
	}
}

// TestAttachGapNotice: when the daemon reports that output was skipped (a
// gap), attach tells the user how many bytes on stderr, once, and the output
// after it still arrives.
func TestAttachGapNotice(t *testing.T) {
	ready := `{"id":"s1","state":"ready","mode":"pty"}`
	ended := `{"id":"s1","state":"ended","mode":"pty","reason":"process exited"}`
	_, env := serveFake(t, &fakeAPI{
		answers: map[string]answer{"GET /v1/sessions/s1": {seq: []string{ready, ended}}},
		attach: func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wire.SubprotocolPTY}})
			if err != nil {
				t.Errorf("accept: %v", err)
				return
			}
			defer c.CloseNow()
			ctx := r.Context()
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
			out := []byte("after\r\n")
			_ = c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Attached{Session: "s1", Role: wire.RoleWriter, From: 0, Head: 5000 + int64(len(out)), Cols: 80, Rows: 24}))
			_ = c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Gap{Requested: 0, Oldest: 5000}))
			_ = c.Write(ctx, websocket.MessageBinary, out)
			_ = c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Replayed{At: 5000 + int64(len(out))}))
			_ = c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Exit{Code: 0, At: 5000 + int64(len(out))}))
			c.Close(websocket.StatusNormalClosure, "")
		},
	})
	r := runCLI(t, env, "attach", "s1")
	if r.code != 0 {
		t.Errorf("exit %d (stderr %q)", r.code, r.stderr)
	}
	if r.stdout != "after\r\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	if want := "[hangar] output skipped: 5000 bytes"; strings.Count(r.stderr, want) != 1 {
		t.Errorf("stderr %q should say %q once", r.stderr, want)
	}
}
