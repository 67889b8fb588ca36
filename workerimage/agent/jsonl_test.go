package agent_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/wire"
)

func userLine(text string) []byte {
	b, _ := json.Marshal(map[string]any{"type": "user", "message": map[string]any{"role": "user", "content": text}})
	return b
}

func decodeLine(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("frame is not one JSON line: %q", b)
	}
	return m
}

// TestJSONLSession runs the default stream-json command (the fake CLI, which
// checks the arguments like the real one): each binary frame is one JSON
// line each way, offsets count lines, and a run of authentication_failed
// retries is surfaced at once as an error frame.
func TestJSONLSession(t *testing.T) {
	a := startAgent(t, agentOpts{})
	st := a.init(&agentapi.InitRequest{SessionID: "js", Mode: agentapi.ModeJSONL,
		Credentials: &agentapi.Credentials{AnthropicAPIKey: "sk-ant-api03-JSONLKEY-0123456789abcdefghij"}})
	if st.Mode != agentapi.ModeJSONL {
		t.Fatalf("status %+v", st)
	}
	if _, resp, err := a.dial("js", wire.SubprotocolPTY); err == nil || resp.StatusCode != 400 {
		t.Fatalf("pty subprotocol on a jsonl session: %v", err)
	}
	c := a.attach("js", wire.SubprotocolJSONL, wire.Attach{From: 0, Role: wire.RoleWriter})
	c.sendRaw(websocket.MessageBinary, userLine("hello there"))
	c.waitFor("result", func() bool { return len(c.lines) > 0 && decodeLine(t, c.lines[len(c.lines)-1])["type"] == "result" })
	var types []string
	for _, l := range c.lines {
		m := decodeLine(t, l)
		types = append(types, fmt.Sprint(m["type"], "/", m["subtype"]))
		if strings.Contains(string(l), "\n") {
			t.Fatalf("line with a newline: %q", l)
		}
	}
	want := []string{"system/init", "system/status", "user/<nil>", "stream_event/<nil>"}
	for i, w := range want {
		if types[i] != w {
			t.Fatalf("line %d is %s, want %s (all: %v)", i, types[i], w, types)
		}
	}
	init := decodeLine(t, c.lines[0])
	if init["apiKeySource"] != "ANTHROPIC_API_KEY" || init["cwd"] != a.workspace {
		t.Fatalf("init line %v", init)
	}
	last := decodeLine(t, c.lines[len(c.lines)-1])
	if last["result"] != "echo: hello there" || last["is_error"] != false {
		t.Fatalf("result %v", last)
	}
	st = a.status("js")
	if st.Head != int64(len(c.lines)) || st.InputApplied != 1 || st.LinesIn != 1 || st.LinesOut != int64(len(c.lines)) {
		t.Fatalf("offsets must count lines: status %+v, %d lines", st, len(c.lines))
	}

	// Bad lines are refused (and counted, so offsets stay aligned).
	c.sendRaw(websocket.MessageBinary, []byte(`{"type":"user", broken`))
	c.waitError(wire.ErrCodeBadRequest)
	// Pretty-printed JSON is compacted to one line.
	c.sendRaw(websocket.MessageBinary, []byte("{\n  \"type\": \"user\",\n  \"message\": {\"role\": \"user\", \"content\": \"two\"}\n}"))
	c.waitFor("second result", func() bool {
		return strings.Contains(string(c.lines[len(c.lines)-1]), `"result":"echo: two"`)
	})
	if a.status("js").InputApplied != 3 {
		t.Fatal("input_applied must count every input line")
	}

	// Credentials rejected upstream: surfaced at once, the stream goes on.
	c.sendRaw(websocket.MessageBinary, userLine("AUTHFAIL"))
	e := c.waitError(wire.ErrCodeCredentialsRejected)
	if !strings.Contains(e.Message, "credentials rejected") {
		t.Fatalf("message %q", e.Message)
	}
	c.waitFor("authfail result", func() bool { return strings.Contains(string(c.lines[len(c.lines)-1]), "Invalid API key") })
	if countErrors(c, wire.ErrCodeCredentialsRejected) != 1 {
		t.Fatal("one error per run of retries")
	}

	// A viewer gets the same lines from offset 0.
	v := a.attach("js", wire.SubprotocolJSONL, wire.Attach{From: 0, Role: wire.RoleReader})
	v.waitFor("all lines", func() bool { return len(v.lines) >= len(c.lines) })
	for i := range c.lines {
		if string(v.lines[i]) != string(c.lines[i]) {
			t.Fatalf("viewer line %d differs", i)
		}
	}
	v.sendRaw(websocket.MessageBinary, userLine("viewer"))
	v.waitError(wire.ErrCodeForbidden)

	// Closing stdin (finish) ends the CLI with 0.
	res := a.finish("js", nil)
	if !res.OK || res.Ref != "" || res.Commit != "" || res.Message != agentapi.NoRepositoryMessage {
		t.Fatalf("finish without a repo %+v", res)
	}
	ex := c.waitCtrl("exit", func(m wire.Message) bool { _, ok := m.(*wire.Exit); return ok }).(*wire.Exit)
	if ex.Code != 0 {
		t.Fatalf("exit %+v", ex)
	}
	scanForSecrets(t, a, []string{"sk-ant-api03-JSONLKEY-0123456789abcdefghij"})
}

// TestJSONLWriterNeverLosesALine: with a ring far smaller than the output
// and a writer that acks slowly within a small window, the CLI is paused
// instead of lines being dropped; every line arrives, in order, once. A
// viewer meanwhile skips ahead with a gap.
func TestJSONLWriterNeverLosesALine(t *testing.T) {
	a := startAgent(t, agentOpts{env: map[string]string{"HANGAR_AGENT_BUFFER": "2KiB"}})
	a.init(&agentapi.InitRequest{SessionID: "flow", Mode: agentapi.ModeJSONL})
	const window = 3
	w := a.attach("flow", wire.SubprotocolJSONL, wire.Attach{From: 0, Role: wire.RoleWriter, Window: window})
	v := a.attach("flow", wire.SubprotocolJSONL, wire.Attach{From: 0, Role: wire.RoleReader, Window: 1})
	const turns = 20
	for i := 0; i < turns; i++ {
		w.sendRaw(websocket.MessageBinary, userLine(fmt.Sprintf("turn %d %s", i, strings.Repeat("z", 300))))
	}
	results := 0
	deadline := time.Now().Add(60 * time.Second)
	for results < turns {
		if time.Now().After(deadline) {
			t.Fatalf("only %d results", results)
		}
		typ, data, err := w.read(20 * time.Second)
		if err != nil {
			t.Fatalf("read: %v (results %d)", err, results)
		}
		if typ == websocket.MessageText {
			m, _ := wire.Decode(data)
			if _, ok := m.(*wire.Gap); ok {
				t.Fatalf("the writer got a gap: %s", data)
			}
			continue
		}
		w.lines = append(w.lines, data)
		// The agent never sends beyond the window.
		if st := a.status("flow"); st.Head > int64(len(w.lines))+window {
			t.Fatalf("head %d ran %d lines past the window (received %d)", st.Head, st.Head-int64(len(w.lines)), len(w.lines))
		}
		if decodeLine(t, data)["type"] == "result" {
			results++
		}
		w.send(&wire.Ack{Offset: int64(len(w.lines))})
	}
	for i := 0; i < turns; i++ {
		if !strings.Contains(string(w.lines[0])+joinLines(w.lines), fmt.Sprintf(`"result":"echo: turn %d `, i)) {
			t.Fatalf("turn %d result missing", i)
		}
	}
	st := a.status("flow")
	if st.Head != int64(len(w.lines)) || st.Oldest == 0 {
		t.Fatalf("status %+v after %d lines", st, len(w.lines))
	}
	// The viewer, acking nothing, was skipped ahead.
	v.send(&wire.Ack{Offset: 1})
	v.waitCtrl("viewer gap", func(m wire.Message) bool { _, ok := m.(*wire.Gap); return ok })
}

func joinLines(lines [][]byte) string {
	var b strings.Builder
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// TestJSONLReconnectNoLoss: a writer with a window drops its connection
// twenty times while turns stream through a ring much smaller than the
// output. Reattaching from the lines received and resending input from
// input_applied gives every line exactly once and runs every turn once.
func TestJSONLReconnectNoLoss(t *testing.T) {
	a := startAgent(t, agentOpts{env: map[string]string{"HANGAR_AGENT_BUFFER": "2KiB"}})
	a.init(&agentapi.InitRequest{SessionID: "jr", Mode: agentapi.ModeJSONL})
	const turns = 30
	var inputs [][]byte
	for i := 0; i < turns; i++ {
		inputs = append(inputs, userLine(fmt.Sprintf("turn-%02d %s", i, strings.Repeat("q", 200))))
	}
	var got [][]byte
	var sent int64
	results := 0
	for round := 0; results < turns; round++ {
		if round > 200 {
			t.Fatalf("no progress: %d results after %d rounds", results, round)
		}
		c := a.attach("jr", wire.SubprotocolJSONL, wire.Attach{From: int64(len(got)), InputFrom: sent, Role: wire.RoleWriter, Window: 4})
		if c.attached.From != int64(len(got)) {
			t.Fatalf("attached from %d, want %d", c.attached.From, len(got))
		}
		applied := c.attached.InputApplied
		if applied > sent {
			t.Fatalf("applied %d > sent %d", applied, sent)
		}
		// Resend unapplied input, plus up to two new turns.
		next := min(int64(turns), max(sent, applied)+2)
		for i := applied; i < next; i++ {
			c.sendRaw(websocket.MessageBinary, inputs[i])
		}
		sent = max(sent, next)
		// Read a few lines (acking each), then drop the connection.
		for n := 0; n < 1+round%7 && results < turns; n++ {
			typ, data, err := c.read(10 * time.Second)
			if err != nil {
				t.Fatalf("round %d: %v; got %d lines, %d results, sent %d; status %+v", round, err, len(got), results, sent, a.status("jr"))
			}
			if typ == websocket.MessageText {
				m, _ := wire.Decode(data)
				if g, ok := m.(*wire.Gap); ok {
					t.Fatalf("round %d: the writer got a gap %+v", round, g)
				}
				n--
				continue
			}
			got = append(got, data)
			if decodeLine(t, data)["type"] == "result" {
				results++
			}
			c.send(&wire.Ack{Offset: int64(len(got))})
		}
		c.conn.CloseNow()
	}
	all := joinLines(got)
	for i := 0; i < turns; i++ {
		if n := strings.Count(all, fmt.Sprintf(`"result":"echo: turn-%02d `, i)); n != 1 {
			t.Fatalf("turn %d answered %d times", i, n)
		}
	}
	if st := a.status("jr"); st.LinesIn != turns || st.Oldest == 0 {
		t.Fatalf("status %+v", st)
	}
}
