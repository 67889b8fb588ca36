package broker

import (
	"context"
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/wire"
)

// fakeAgent speaks the agent side of the wire protocol for one session: an
// output log with absolute offsets (optionally with evicted history), input
// application with input_applied, one writer at a time, exit, ping/pong, and
// fault injection. It verifies every dial's token like the real agent.
type fakeAgent struct {
	t        testing.TB
	srv      *httptest.Server
	verifier *agentauth.Verifier
	jsonl    bool
	session  string

	mu       sync.Mutex
	out      []byte   // pty output history
	lines    [][]byte // jsonl output history
	gen      func(off int64) byte
	genHead  int64 // with gen: output is gen(0..genHead)
	oldest   int64 // output before it is evicted
	notify   chan struct{}
	input    []byte   // applied pty input
	inLines  [][]byte // applied jsonl input
	writer   *fakeConn
	conns    map[*fakeConn]struct{}
	exited   bool
	exitCode int
	echo     bool
	chunk    int
	cols     int
	rows     int
	attaches []wire.Attach
	controls []wire.Message // ack, resize, signal frames received
	pings    int            // pings received
	pongs    []int64        // pong timestamps received
	sent     int64          // output units written to connections
	refuse   *refusal       // answer attaches with an error and a close
	badToken int            // dials refused with 401
	stallIn  bool           // read input but never apply it (lost in flight)
	// intercept, if set, may take over a dial (return true when it did).
	intercept func(w http.ResponseWriter, r *http.Request) bool
}

type refusal struct {
	code    int
	errCode string
}

type fakeConn struct {
	ws     *websocket.Conn
	role   wire.Role
	ctx    context.Context
	cancel context.CancelFunc
}

func newFakeAgent(t testing.TB, signer *agentauth.Signer, jsonl bool) *fakeAgent {
	t.Helper()
	v, err := agentauth.NewVerifier([]ed25519.PublicKey{signer.PublicKey()}, "m-1")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAgent{
		t: t, verifier: v, jsonl: jsonl, session: "s-1",
		notify: make(chan struct{}), conns: map[*fakeConn]struct{}{},
		chunk: 1024, cols: 80, rows: 24,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/attach", f.attach)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		f.dropAll()
		f.srv.Close()
	})
	return f
}

func (f *fakeAgent) endpoint() Endpoint {
	return Endpoint{AgentURL: f.srv.URL, MachineID: "m-1", SessionID: f.session}
}

// head is the offset after the last output unit; f.mu held.
func (f *fakeAgent) head() int64 {
	switch {
	case f.gen != nil:
		return f.genHead
	case f.jsonl:
		return int64(len(f.lines))
	}
	return int64(len(f.out))
}

func (f *fakeAgent) wake() {
	close(f.notify)
	f.notify = make(chan struct{})
}

// emit appends pty output (or one jsonl line).
func (f *fakeAgent) emit(b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.jsonl {
		f.lines = append(f.lines, append([]byte(nil), b...))
	} else {
		f.out = append(f.out, b...)
	}
	f.wake()
}

// evict makes output before off unavailable for replay.
func (f *fakeAgent) evict(off int64) {
	f.mu.Lock()
	f.oldest = off
	f.mu.Unlock()
}

func (f *fakeAgent) exit(code int) {
	f.mu.Lock()
	f.exited, f.exitCode = true, code
	f.wake()
	f.mu.Unlock()
}

// dropAll breaks every connection without a close frame and says how many.
func (f *fakeAgent) dropAll() int {
	f.mu.Lock()
	cs := make([]*fakeConn, 0, len(f.conns))
	for c := range f.conns {
		cs = append(cs, c)
	}
	f.mu.Unlock()
	for _, c := range cs {
		c.cancel()
		_ = c.ws.CloseNow()
	}
	return len(cs)
}

// closeAll ends every connection with an error frame and a close code.
func (f *fakeAgent) closeAll(code int, errCode string) int {
	f.mu.Lock()
	cs := make([]*fakeConn, 0, len(f.conns))
	for c := range f.conns {
		cs = append(cs, c)
	}
	f.mu.Unlock()
	for _, c := range cs {
		if errCode != "" {
			_ = c.ws.Write(context.Background(), websocket.MessageText, wire.MustEncode(&wire.Error{Code: errCode, Message: "test"}))
		}
		_ = c.ws.Close(websocket.StatusCode(code), errCode)
		c.cancel()
	}
	return len(cs)
}

func (f *fakeAgent) snapshot() (attaches []wire.Attach, input []byte, inLines [][]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]wire.Attach(nil), f.attaches...), append([]byte(nil), f.input...), append([][]byte(nil), f.inLines...)
}

func (f *fakeAgent) controlFrames() []wire.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]wire.Message(nil), f.controls...)
}

func (f *fakeAgent) sentUnits() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sent
}

func (f *fakeAgent) attach(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	icp := f.intercept
	f.mu.Unlock()
	if icp != nil && icp(w, r) {
		return
	}
	claims, err := f.verifier.VerifyRequest(r)
	if err != nil || claims.SessionID != f.session {
		f.mu.Lock()
		f.badToken++
		f.mu.Unlock()
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	proto := wire.SubprotocolPTY
	if f.jsonl {
		proto = wire.SubprotocolJSONL
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{proto}})
	if err != nil {
		return
	}
	ws.SetReadLimit(64 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	c := &fakeConn{ws: ws, ctx: ctx, cancel: cancel}
	defer func() {
		cancel()
		_ = ws.CloseNow()
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
	}()

	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	typ, data, err := ws.Read(rctx)
	rcancel()
	if err != nil || typ != websocket.MessageText {
		return
	}
	m, err := wire.Decode(data)
	a, ok := m.(*wire.Attach)
	if err != nil || !ok {
		_ = ws.Close(websocket.StatusPolicyViolation, "attach required")
		return
	}
	if a.Role == "" {
		a.Role = wire.RoleWriter
	}
	c.role = a.Role

	f.mu.Lock()
	f.attaches = append(f.attaches, *a)
	if ref := f.refuse; ref != nil {
		f.mu.Unlock()
		_ = ws.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Error{Code: ref.errCode, Message: "refused"}))
		_ = ws.Close(websocket.StatusCode(ref.code), ref.errCode)
		return
	}
	var old *fakeConn
	var sizeErr []byte
	if a.Role == wire.RoleWriter {
		old = f.writer
		// From here on the old writer's frames are not applied: input_applied
		// below is final for it.
		f.writer = c
		if a.Cols > 2000 || a.Rows > 1000 {
			// As the real agent: an invalid size is reported before
			// attached and ignored.
			sizeErr = wire.MustEncode(&wire.Error{Code: wire.ErrCodeInvalidSize, Message: "invalid size"})
		} else if a.Cols > 0 && a.Rows > 0 && (a.Cols != f.cols || a.Rows != f.rows) {
			f.cols, f.rows = a.Cols, a.Rows
		}
	}
	head := f.head()
	from := a.From
	if from == wire.LiveTail {
		from = head
	}
	if from > head {
		f.mu.Unlock()
		_ = ws.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Error{Code: wire.ErrCodeInvalidOutputOffset, Message: "from beyond head"}))
		_ = ws.Close(websocket.StatusPolicyViolation, "offset")
		return
	}
	var gap *wire.Gap
	if from < f.oldest {
		gap = &wire.Gap{Requested: from, Oldest: f.oldest, Restore: "\x1b[?1049h"}
		from = f.oldest
	}
	applied := int64(len(f.input))
	if f.jsonl {
		applied = int64(len(f.inLines))
	}
	f.conns[c] = struct{}{}
	att := &wire.Attached{Session: f.session, Role: a.Role, From: from, Head: head, InputApplied: applied, Cols: f.cols, Rows: f.rows}
	f.mu.Unlock()

	if old != nil {
		go func() {
			_ = old.ws.Write(context.Background(), websocket.MessageText, wire.MustEncode(&wire.Error{Code: wire.ErrCodeSuperseded, Message: "a newer writer attached"}))
			_ = old.ws.Close(wire.CloseSuperseded, "superseded")
			old.cancel()
		}()
	}
	if sizeErr != nil && ws.Write(ctx, websocket.MessageText, sizeErr) != nil {
		return
	}
	if ws.Write(ctx, websocket.MessageText, wire.MustEncode(att)) != nil {
		return
	}
	if gap != nil && ws.Write(ctx, websocket.MessageText, wire.MustEncode(gap)) != nil {
		return
	}
	go f.readLoop(c)
	f.writeLoop(c, from, head)
}

func (f *fakeAgent) readLoop(c *fakeConn) {
	defer c.cancel()
	for {
		typ, data, err := c.ws.Read(c.ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary {
			f.mu.Lock()
			if f.writer == c && !f.exited && !f.stallIn {
				if f.jsonl {
					f.inLines = append(f.inLines, data)
					if f.echo {
						f.lines = append(f.lines, data)
					}
				} else {
					f.input = append(f.input, data...)
					if f.echo {
						f.out = append(f.out, data...)
					}
				}
				if f.echo {
					f.wake()
				}
			}
			f.mu.Unlock()
			continue
		}
		m, err := wire.Decode(data)
		if err != nil {
			_ = c.ws.Write(c.ctx, websocket.MessageText, wire.MustEncode(&wire.Error{Code: wire.ErrCodeBadRequest, Message: err.Error()}))
			continue
		}
		switch v := m.(type) {
		case *wire.Ping:
			f.mu.Lock()
			f.pings++
			f.mu.Unlock()
			_ = c.ws.Write(c.ctx, websocket.MessageText, wire.MustEncode(&wire.Pong{TS: v.TS}))
		case *wire.Pong:
			f.mu.Lock()
			f.pongs = append(f.pongs, v.TS)
			f.mu.Unlock()
		default:
			f.mu.Lock()
			f.controls = append(f.controls, m)
			f.mu.Unlock()
		}
	}
}

func (f *fakeAgent) writeLoop(c *fakeConn, cursor, replayEnd int64) {
	replayed := false
	for {
		f.mu.Lock()
		head := f.head()
		end := head
		if !replayed {
			end = min(end, replayEnd)
		}
		var frames [][]byte
		switch {
		case f.gen != nil:
			n := min(end-cursor, int64(f.chunk))
			if n > 0 {
				b := make([]byte, n)
				for i := range b {
					b[i] = f.gen(cursor + int64(i))
				}
				frames = append(frames, b)
			}
		case f.jsonl:
			for i := cursor; i < end && len(frames) < 16; i++ {
				frames = append(frames, f.lines[i])
			}
		default:
			if end > cursor {
				n := min(end-cursor, int64(f.chunk))
				frames = append(frames, append([]byte(nil), f.out[cursor:cursor+n]...))
			}
		}
		exited, code, ch := f.exited, f.exitCode, f.notify
		f.mu.Unlock()

		if len(frames) > 0 {
			for _, b := range frames {
				if c.ws.Write(c.ctx, websocket.MessageBinary, b) != nil {
					return
				}
				n := int64(len(b))
				if f.jsonl {
					n = 1
				}
				cursor += n
				f.mu.Lock()
				f.sent += n
				f.mu.Unlock()
			}
			continue
		}
		if !replayed && cursor >= replayEnd {
			replayed = true
			if c.ws.Write(c.ctx, websocket.MessageText, wire.MustEncode(&wire.Replayed{At: replayEnd})) != nil {
				return
			}
			continue
		}
		if exited && cursor >= head {
			if c.ws.Write(c.ctx, websocket.MessageText, wire.MustEncode(&wire.Exit{Code: code, At: head})) != nil {
				return
			}
			_ = c.ws.Close(websocket.StatusNormalClosure, "exited")
			return
		}
		select {
		case <-ch:
		case <-c.ctx.Done():
			return
		}
	}
}

// pingAll sends a ping with ts on every connection.
func (f *fakeAgent) pingAll(ts int64) {
	f.mu.Lock()
	cs := make([]*fakeConn, 0, len(f.conns))
	for c := range f.conns {
		cs = append(cs, c)
	}
	f.mu.Unlock()
	for _, c := range cs {
		_ = c.ws.Write(c.ctx, websocket.MessageText, wire.MustEncode(&wire.Ping{TS: ts}))
	}
}
