package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/streamstate"
	"github.com/hangarhq/hangar/internal/wire"
)

// Backoff between agent re-dials.
const (
	backoffMin = 50 * time.Millisecond
	backoffMax = 2 * time.Second
)

// maxCloseReason is the longest close reason a WebSocket close frame carries.
const maxCloseReason = 120

// stream is one client attachment spliced to the agent.
type stream struct {
	b      *Broker
	t      Target
	log    hclog.Logger
	client *websocket.Conn
	proto  string
	mode   streamstate.Mode

	ctx    context.Context // ends with the stream, the parent, or the client
	cancel context.CancelFunc
	// Client writes take no cancellable context: with one, coder/websocket
	// registers (and allocates) a context callback on every frame, and
	// cancelling it closes the connection if a write has not quite returned,
	// which would cut the graceful close that follows a shutdown. A client
	// write that blocks too long once the stream ends is cut by closing the
	// client instead, unless the closing handshake has begun (closing).
	closing atomic.Bool

	att wire.Attach // the client's attach, role forced

	// agent is the current agent hop, nil while (re)connecting.
	agent atomic.Pointer[websocket.Conn]

	// Output state, owned by the run goroutine.
	out streamstate.Output // the client's output position (the next unit it sees)

	replayedSent    bool   // the client has had a replayed frame
	swallowReplayed bool   // the next replayed ends a reconnect's replay
	exited          bool   // the agent sent exit
	agentCols       int    // the PTY size last reported by the agent
	agentRows       int    //
	pendingErr      []byte // an error frame held until we know it is not followed by a retryable close
	pendingGap      []byte // a gap for output skipped by a re-attach, unless the agent sends its own

	// Input state, guarded by inMu. run holds inMu while the hop is down, so
	// the input pump waits (and reads no more client frames) meanwhile.
	inMu       sync.Mutex
	cols, rows int // the size the client last asked for

	inLog *streamstate.InputLog // recent input; End is the client's next input offset

	clientGone atomic.Bool
	// kill, when set (by the input pump), is how the client is closed: the
	// pump cancels the stream and run closes with it (a viewer's 4003).
	kill       atomic.Pointer[closeReq]
	violations int // refused frames of a viewer (input pump only)

	// Keepalive state.
	timer       atomic.Pointer[time.Timer]
	done        atomic.Bool
	agentFrames atomic.Int64 // frames read from the agent
	writing     atomic.Int32 // run is blocked writing to the client
	writeStart  atomic.Int64 // when that write began (unix ns)
	slow        atomic.Bool  // the client was closed for not reading
	lastFrames  int64        // keepalive-only
	idleTicks   int          // keepalive-only
	pingTS      atomic.Int64
	pingIn      atomic.Int64 // input offset when the ping with pingTS was sent; -1 = unknown
}

func newStream(b *Broker, client *websocket.Conn, t Target) *stream {
	proto := client.Subprotocol()
	if proto == "" {
		proto = wire.SubprotocolPTY
	}
	s := &stream{
		b:      b,
		t:      t,
		client: client,
		proto:  proto,
		mode:   streamstate.ModeOf(proto),
		log:    b.log.With("session", t.SessionID),
	}
	s.inLog = streamstate.NewInputLog(s.mode, b.cfg.InputLogBytes)
	s.pingIn.Store(-1)
	return s
}

func (s *stream) hookBytes(toClient bool, n int) {
	if f := s.b.cfg.Hooks.Bytes; f != nil && n > 0 {
		f(toClient, n)
	}
}

// closeReq says how the client connection ends.
type closeReq struct {
	code   websocket.StatusCode
	reason string
	frame  []byte // an error frame to send first, or nil
}

func errorClose(code int, errCode, msg string, retryAfter time.Duration) *closeReq {
	e := &wire.Error{Code: errCode, Message: msg, RetryAfterMS: retryAfter.Milliseconds()}
	return &closeReq{code: websocket.StatusCode(code), reason: errCode, frame: wire.MustEncode(e)}
}

func (c *closeReq) Error() string { return fmt.Sprintf("close %d %s", c.code, c.reason) }

func (s *stream) run(parent context.Context) {
	if f := s.b.cfg.Hooks.StreamStarted; f != nil {
		f()
	}
	if f := s.b.cfg.Hooks.StreamEnded; f != nil {
		defer f()
	}
	s.ctx, s.cancel = context.WithCancel(parent)
	defer s.cancel()

	var cr *closeReq
	aside(func() { cr = s.readAttach() })
	if cr != nil {
		s.closeClient(cr)
		return
	}
	// Frames are bounded by the stream itself (readFrame), which skips an
	// oversized one without keeping it; the library's limit would close the
	// connection with 1009 instead.
	s.client.SetReadLimit(-1)

	// The input pump starts now (pings, early input) but forwards nothing
	// until the first hop is up: run holds inMu until then.
	s.inMu.Lock()
	locked := true
	unlock := func() {
		if locked {
			locked = false
			s.inMu.Unlock()
		}
	}
	pumpDone := make(chan struct{})
	go func() {
		defer close(pumpDone)
		s.pumpInput()
	}()
	stopAfter := context.AfterFunc(s.ctx, func() {
		// The parent ended or the client left: end the agent hop so that run,
		// blocked reading it, returns; a client write that blocks run for
		// long is cut off.
		t := time.AfterFunc(5*time.Second, func() {
			if !s.closing.Load() {
				_ = s.client.CloseNow()
			}
		})
		if c := s.agent.Load(); c != nil {
			_ = c.Close(websocket.StatusNormalClosure, "detached")
		}
		if s.done.Load() {
			t.Stop()
		}
	})
	s.timer.Store(time.AfterFunc(s.b.cfg.PingInterval, s.keepalive))
	defer func() {
		s.done.Store(true)
		s.timer.Load().Stop()
		stopAfter()
		unlock()
		if c := s.agent.Swap(nil); c != nil {
			_ = c.CloseNow()
		}
		<-pumpDone
	}()

	cr = s.serve(unlock)
	s.closing.Store(true)
	switch k := s.kill.Load(); {
	case k != nil:
		s.closeClient(k)
	case s.slow.Load():
		// Closed with 1008 by keepalive already.
		_ = s.client.CloseNow()
	case s.clientGone.Load():
		_ = s.client.CloseNow()
	case cr == nil: // the parent ended: the daemon is shutting down
		s.closeClient(&closeReq{code: websocket.StatusGoingAway, reason: "daemon shutting down"})
	default:
		s.closeClient(cr)
	}
}

// serve runs the stream from WaitReady to its end and says how to close the
// client (nil: the parent context ended or the client left).
func (s *stream) serve(unlock func()) *closeReq {
	var ep Endpoint
	var err error
	aside(func() { ep, err = s.t.WaitReady(s.ctx, s.progress) })
	if err != nil {
		if s.ctx.Err() != nil {
			return nil
		}
		s.log.Info("session not ready", "error", err)
		return waitError(err)
	}
	conn, cr := s.connectAside(&ep, true)
	unlock()
	if cr != nil {
		return cr
	}
	for {
		err := s.pumpOutput(conn)
		if s.ctx.Err() != nil {
			return nil
		}
		var ce *closeReq
		if errors.As(err, &ce) {
			// The client write failed or a fatal protocol problem.
			return ce
		}
		if s.exited {
			s.flushPendingErr()
			return &closeReq{code: websocket.StatusNormalClosure, reason: "exited"}
		}
		code := websocket.CloseStatus(err)
		if !retryable(code) {
			s.flushPendingErr()
			return &closeReq{code: code, reason: closeReason(err)}
		}
		s.log.Debug("agent hop dropped, reconnecting", "error", err, "code", int(code), "from", s.out.Next())
		s.pendingErr = nil
		conn, cr = s.reconnect(conn)
		if f := s.b.cfg.Hooks.Reconnected; f != nil {
			var err error
			if cr != nil {
				err = cr
			}
			f(err)
		}
		if cr != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			return cr
		}
	}
}

// waitError maps a WaitReady error to the client's close.
func waitError(err error) *closeReq {
	var ce *CloseError
	switch {
	case errors.As(err, &ce):
		return errorClose(ce.Code, ce.ErrCode, ce.Message, ce.RetryAfter)
	case errors.Is(err, ErrGone):
		return errorClose(wire.CloseSessionGone, wire.ErrCodeSessionGone, err.Error(), 0)
	default:
		return errorClose(wire.CloseUnavailable, wire.ErrCodeUnavailable, "session unavailable, retry later", time.Second)
	}
}

// retryable reports whether an agent close code means the hop dropped (and
// the broker re-attaches) rather than a deliberate end to pass on.
func retryable(code websocket.StatusCode) bool {
	switch code {
	case -1, // no close frame: EOF, reset, keepalive timeout
		websocket.StatusGoingAway,
		websocket.StatusNoStatusRcvd,
		websocket.StatusAbnormalClosure,
		websocket.StatusInternalError,
		websocket.StatusServiceRestart,
		websocket.StatusTryAgainLater,
		websocket.StatusBadGateway,
		wire.CloseCredentialsExpired,
		wire.CloseUnavailable:
		return true
	}
	return false
}

func closeReason(err error) string {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return ""
}

func (s *stream) closeClient(cr *closeReq) {
	if cr.frame != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.client.Write(ctx, websocket.MessageText, cr.frame)
		cancel()
	}
	reason := cr.reason
	if len(reason) > maxCloseReason {
		reason = reason[:maxCloseReason]
	}
	code := cr.code
	if code < 1000 || code == websocket.StatusNoStatusRcvd || code == websocket.StatusAbnormalClosure || code == websocket.StatusTLSHandshake {
		code = wire.CloseUnavailable
	}
	_ = s.client.Close(code, reason)
}

// readAttach reads and validates the client's first frame.
func (s *stream) readAttach() *closeReq {
	ctx, cancel := context.WithTimeout(s.ctx, s.b.cfg.AttachTimeout)
	defer cancel()
	// No library limit: an oversized first frame is answered 1008 with
	// frame_too_large (the library would close 1009 by itself), and only
	// MaxAttachFrame bytes of it are ever read.
	s.client.SetReadLimit(-1)
	typ, r, err := s.client.Reader(ctx)
	if err != nil {
		s.clientGone.Store(true)
		return &closeReq{code: websocket.StatusNormalClosure}
	}
	data, err := io.ReadAll(io.LimitReader(r, MaxAttachFrame+1))
	if err != nil {
		s.clientGone.Store(true)
		return &closeReq{code: websocket.StatusNormalClosure}
	}
	if len(data) > MaxAttachFrame {
		return errorClose(int(websocket.StatusPolicyViolation), wire.ErrCodeFrameTooLarge,
			fmt.Sprintf("the attach frame is larger than %d bytes", MaxAttachFrame), 0)
	}
	a, cr := parseAttach(typ, data)
	if cr != nil {
		return cr
	}
	switch {
	case s.t.Role == string(wire.RoleReader):
		a.Role = wire.RoleReader
	case a.Role == "":
		a.Role = wire.RoleWriter
	}
	s.att = *a
	s.cols, s.rows = a.Cols, a.Rows
	s.log = s.log.With("role", string(a.Role))
	return nil
}

// parseAttach decodes and checks a client's first frame: an attach text
// frame with valid fields, or how to close the client (1008 and an error).
func parseAttach(typ websocket.MessageType, data []byte) (*wire.Attach, *closeReq) {
	if typ != websocket.MessageText {
		return nil, errorClose(int(websocket.StatusPolicyViolation), wire.ErrCodeAttachRequired, "the first frame must be an attach text frame", 0)
	}
	m, err := wire.Decode(data)
	if err != nil {
		if errors.Is(err, wire.ErrUnknownType) {
			return nil, errorClose(int(websocket.StatusPolicyViolation), wire.ErrCodeAttachRequired, "the first frame must be attach", 0)
		}
		return nil, errorClose(int(websocket.StatusPolicyViolation), wire.ErrCodeBadRequest, "malformed attach frame: "+err.Error(), 0)
	}
	a, ok := m.(*wire.Attach)
	if !ok {
		return nil, errorClose(int(websocket.StatusPolicyViolation), wire.ErrCodeAttachRequired, "the first frame must be attach, not "+m.MessageType(), 0)
	}
	if msg := validateAttach(a); msg != "" {
		code := wire.ErrCodeBadRequest
		if a.Cols < 0 || a.Rows < 0 || a.Cols > maxDim || a.Rows > maxDim {
			code = wire.ErrCodeInvalidSize
		}
		return nil, errorClose(int(websocket.StatusPolicyViolation), code, msg, 0)
	}
	return a, nil
}

// maxDim bounds terminal dimensions (a PTY's winsize fields are 16-bit).
const maxDim = 65535

func validateAttach(a *wire.Attach) string {
	switch {
	case a.Role != "" && !a.Role.Valid():
		return fmt.Sprintf("unknown role %q (want rw or ro)", a.Role)
	case a.From < wire.LiveTail:
		return "from must be an offset or -1"
	case a.InputFrom < 0:
		return "input_from must not be negative"
	case a.Window < 0:
		return "window must not be negative"
	case a.Cols < 0 || a.Rows < 0 || a.Cols > maxDim || a.Rows > maxDim:
		return fmt.Sprintf("invalid terminal size %dx%d", a.Cols, a.Rows)
	}
	return ""
}

// progress forwards WaitReady's updates as state frames.
func (s *stream) progress(state, detail string, queuePosition int) {
	b := wire.MustEncode(&wire.State{State: state, Detail: detail, QueuePosition: queuePosition})
	if err := s.trackedWrite(websocket.MessageText, b); err == nil {
		s.hookBytes(true, len(b))
	}
}

// trackedWrite writes to the client from run (or WaitReady's progress, which
// run waits for), recording when the write began so that keepalive can drop
// a client that does not read. It takes no deadline of its own (see
// stream.closing for why).
func (s *stream) trackedWrite(typ websocket.MessageType, b []byte) error {
	s.writeStart.Store(time.Now().UnixNano())
	s.writing.Add(1)
	err := s.client.Write(context.Background(), typ, b)
	s.writing.Add(-1)
	return err
}

// writeAside writes a small frame from the input pump (a pong, an error)
// with the write timeout: a client that sends but never reads cannot hold
// the pump. On timeout the library closes the connection.
func (s *stream) writeAside(b []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), s.b.cfg.WriteTimeout)
	defer cancel()
	if err := s.client.Write(ctx, websocket.MessageText, b); err == nil {
		s.hookBytes(true, len(b))
	}
}

// refuse answers a viewer's forbidden frame at the daemon (the agent is not
// bothered with it); after MaxViolations the viewer is closed with 4003. It
// reports whether the pump goes on.
func (s *stream) refuse(msg string) bool {
	s.violations++
	if s.violations >= MaxViolations {
		s.kill.Store(errorClose(wire.CloseForbidden, wire.ErrCodeForbidden, msg+" (closing)", 0))
		s.cancel()
		return false
	}
	s.writeAside(wire.MustEncode(&wire.Error{Code: wire.ErrCodeForbidden, Message: msg}))
	return true
}

// writeClient sends one frame to the client; it blocks while the client is
// slow, which stops the agent-hop reads (backpressure through TCP).
func (s *stream) writeClient(typ websocket.MessageType, b []byte) error {
	if err := s.trackedWrite(typ, b); err != nil {
		s.clientGone.Store(true)
		s.cancel()
		return &closeReq{code: websocket.StatusNormalClosure, reason: "client write failed"}
	}
	s.hookBytes(true, len(b))
	return nil
}

func (s *stream) flushPendingErr() {
	if s.pendingErr != nil {
		_ = s.writeClient(websocket.MessageText, s.pendingErr)
		s.pendingErr = nil
	}
}

// pumpOutput forwards agent frames to the client until the agent hop ends
// (returning its read error) or the client write fails (a *closeReq).
func (s *stream) pumpOutput(conn *websocket.Conn) error {
	for {
		typ, bp, err := readMessage(context.Background(), conn)
		if err != nil {
			return err
		}
		s.agentFrames.Add(1)
		err = s.handleAgentFrame(conn, typ, *bp)
		putBuf(bp)
		if err != nil {
			return err
		}
	}
}

func (s *stream) handleAgentFrame(conn *websocket.Conn, typ websocket.MessageType, b []byte) error {
	if s.pendingGap != nil {
		mt := ""
		if typ == websocket.MessageText {
			mt, _ = wire.PeekType(b)
		}
		switch mt {
		case wire.TypePing, wire.TypePong:
		case wire.TypeGap:
			s.pendingGap = nil
		default:
			g := s.pendingGap
			s.pendingGap = nil
			if err := s.writeClient(websocket.MessageText, g); err != nil {
				return err
			}
		}
	}
	if typ == websocket.MessageBinary {
		if err := s.writeClient(typ, b); err != nil {
			return err
		}
		s.out.Advance(s.mode.Units(b))
		return nil
	}
	mt, err := wire.PeekType(b)
	if err != nil {
		s.log.Debug("agent sent a malformed control frame", "error", err)
		return nil
	}
	switch mt {
	case wire.TypePing:
		var p wire.Ping
		if decodeInto(b, &p) {
			_ = conn.Write(s.ctx, websocket.MessageText, wire.MustEncode(&wire.Pong{TS: p.TS}))
		}
		return nil
	case wire.TypePong:
		var p wire.Pong
		if decodeInto(b, &p) && p.TS == s.pingTS.Load() {
			s.trimInput(s.pingIn.Load())
		}
		return nil
	case wire.TypeGap:
		var g wire.Gap
		if decodeInto(b, &g) {
			s.out.Gap(g.Oldest)
		}
	case wire.TypeReplayed:
		if s.swallowReplayed {
			s.swallowReplayed = false
			return nil
		}
		s.replayedSent = true
	case wire.TypeSize:
		var z wire.Size
		if decodeInto(b, &z) {
			s.agentCols, s.agentRows = z.Cols, z.Rows
		}
	case wire.TypeExit:
		s.exited = true
	case wire.TypeError:
		var e wire.Error
		if decodeInto(b, &e) && (e.Code == wire.ErrCodeCredentialsExpired || e.Code == wire.ErrCodeUnavailable) {
			// These precede a close the broker handles itself (re-dial), maybe
			// after more output; the client only sees the error if the hop
			// ends in a way the broker does not retry.
			s.pendingErr = append([]byte(nil), b...)
			return nil
		}
	case wire.TypeAttached:
		s.log.Warn("agent sent attached mid-stream; dropped")
		return nil
	}
	return s.writeClient(websocket.MessageText, b)
}

// trimInput forgets input the agent has certainly read: a pong answers a
// ping the broker wrote after that input, and the agent handles a
// connection's frames in order. If the agent hop drops later, the input
// log no longer needs to hold it.
func (s *stream) trimInput(off int64) {
	if off < 0 || !s.inMu.TryLock() {
		return
	}
	s.inLog.Trim(off)
	s.inMu.Unlock()
}

func decodeInto(b []byte, m wire.Message) bool {
	d, err := wire.Decode(b)
	if err != nil {
		return false
	}
	switch v := m.(type) {
	case *wire.Ping:
		if p, ok := d.(*wire.Ping); ok {
			*v = *p
			return true
		}
	case *wire.Pong:
		if p, ok := d.(*wire.Pong); ok {
			*v = *p
			return true
		}
	case *wire.Gap:
		if p, ok := d.(*wire.Gap); ok {
			*v = *p
			return true
		}
	case *wire.Size:
		if p, ok := d.(*wire.Size); ok {
			*v = *p
			return true
		}
	case *wire.Error:
		if p, ok := d.(*wire.Error); ok {
			*v = *p
			return true
		}
	case *wire.Attached:
		if p, ok := d.(*wire.Attached); ok {
			*v = *p
			return true
		}
	case *wire.Resize:
		if p, ok := d.(*wire.Resize); ok {
			*v = *p
			return true
		}
	}
	return false
}

// pumpInput forwards client frames to the agent until the client leaves or
// the stream ends. It answers the client's pings itself. Every frame is
// bounded here: a writer's at MaxClientMessage, a viewer's control frames at
// MaxViewerMessage; a viewer's input is discarded unread and refused, so a
// share link can make the daemon hold no more than a few KiB.
func (s *stream) pumpInput() {
	viewer := s.att.Role == wire.RoleReader
	limit := s.b.cfg.MaxClientMessage
	if viewer {
		limit = s.b.cfg.MaxViewerMessage
	}
	for {
		typ, r, err := s.client.Reader(context.Background())
		var bp *[]byte
		switch {
		case err != nil:
		case viewer && typ == websocket.MessageBinary:
			if _, err = io.Copy(io.Discard, r); err == nil {
				if !s.refuse("read-only viewers cannot send input") {
					return
				}
				continue
			}
		default:
			bp, err = readFrame(r, limit)
			if errors.Is(err, errTooBig) {
				s.writeAside(wire.MustEncode(&wire.Error{Code: wire.ErrCodeFrameTooLarge,
					Message: fmt.Sprintf("frame larger than %d bytes ignored", limit)}))
				continue
			}
		}
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Debug("client left", "error", err)
				s.clientGone.Store(true)
				s.cancel()
			}
			return
		}
		if viewer {
			switch mt, _ := wire.PeekType(*bp); mt {
			case wire.TypeResize, wire.TypeSignal:
				putBuf(bp)
				if !s.refuse("read-only viewers cannot " + map[string]string{wire.TypeResize: "resize", wire.TypeSignal: "send signals"}[mt]) {
					return
				}
				continue
			}
		}
		ok := s.handleClientFrame(typ, *bp)
		putBuf(bp)
		if !ok {
			return
		}
	}
}

func (s *stream) handleClientFrame(typ websocket.MessageType, b []byte) bool {
	input := typ == websocket.MessageBinary
	if !input {
		mt, err := wire.PeekType(b)
		if err == nil {
			switch mt {
			case wire.TypePing:
				var p wire.Ping
				if decodeInto(b, &p) {
					s.writeAside(wire.MustEncode(&wire.Pong{TS: p.TS}))
				}
				return true
			case wire.TypePong:
				return true
			case wire.TypeAttach:
				s.writeAside(wire.MustEncode(&wire.Error{Code: wire.ErrCodeBadRequest, Message: "already attached"}))
				return true
			case wire.TypeResize:
				var r wire.Resize
				if s.att.Role == wire.RoleWriter && decodeInto(b, &r) && r.Cols > 0 && r.Rows > 0 && r.Cols <= maxDim && r.Rows <= maxDim {
					s.inMu.Lock()
					s.cols, s.rows = r.Cols, r.Rows
					s.inMu.Unlock()
				}
			}
		}
		// Anything else (ack, resize, signal, unknown or malformed frames)
		// goes to the agent, which answers errors itself.
	}
	s.inMu.Lock()
	defer s.inMu.Unlock()
	conn := s.agent.Load()
	if conn == nil {
		// Only after the stream ended: run holds inMu while the hop is down.
		return false
	}
	logged := input && s.att.Role == wire.RoleWriter
	if logged {
		s.inLog.Append(b)
	}
	if err := conn.Write(s.ctx, typ, b); err != nil {
		// The hop dropped. Logged input is re-sent after the reconnect; other
		// frames (acks, resizes, signals) are dropped: acks and sizes are
		// refreshed by the next ones, and a signal must not be delivered twice.
		s.log.Debug("write to agent failed", "error", err)
		_ = conn.CloseNow()
		return s.ctx.Err() == nil
	}
	s.hookBytes(false, len(b))
	return true
}

// keepalive pings both hops and drops an agent hop that went silent. It runs
// on a timer (no goroutine of its own while idle) and re-arms itself.
func (s *stream) keepalive() {
	if s.done.Load() || s.ctx.Err() != nil {
		return
	}
	ts := time.Now().UnixNano()
	ping := wire.MustEncode(&wire.Ping{TS: ts})
	// A busy client link needs no keepalive, and a ping queued behind a slow
	// client's data would only hold this timer goroutine. But a write that
	// has been pending for WriteTimeout means a client that does not read:
	// it is closed with 1008 (docs/protocol.md), which also cuts the write.
	// A client that cannot take a small ping within WriteTimeout is gone.
	if s.writing.Load() > 0 {
		if time.Since(time.Unix(0, s.writeStart.Load())) > s.b.cfg.WriteTimeout && s.slow.CompareAndSwap(false, true) {
			s.log.Info("client not reading, closing it", "pending", time.Since(time.Unix(0, s.writeStart.Load())).Round(time.Millisecond))
			// Close waits up to 5 s to send the close frame (it gets through
			// if the client reads at all), then drops the connection, which
			// fails the pending write and ends the stream.
			go func() { _ = s.client.Close(websocket.StatusPolicyViolation, "client not reading") }()
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), s.b.cfg.WriteTimeout)
		_ = s.client.Write(ctx, websocket.MessageText, ping)
		cancel()
	}
	if c := s.agent.Load(); c != nil {
		frames := s.agentFrames.Load()
		switch {
		case s.writing.Load() > 0 || frames != s.lastFrames:
			s.idleTicks = 0
		default:
			s.idleTicks++
		}
		s.lastFrames = frames
		if s.idleTicks >= 3 {
			s.log.Info("agent hop silent, dropping it", "intervals", s.idleTicks)
			s.idleTicks = 0
			_ = c.CloseNow()
		} else {
			// An agent that cannot take a ping for an interval is as good as
			// gone: the write's timeout closes the hop and run re-attaches.
			ctx, cancel := context.WithTimeout(s.ctx, s.b.cfg.PingInterval)
			if s.inMu.TryLock() {
				// Under inMu the ping follows all input the log counts, so
				// its pong proves the agent has read that input.
				s.pingTS.Store(ts)
				s.pingIn.Store(s.inLog.End())
				_ = c.Write(ctx, websocket.MessageText, ping)
				s.inMu.Unlock()
			} else {
				_ = c.Write(ctx, websocket.MessageText, ping)
			}
			cancel()
		}
	} else {
		s.idleTicks = 0
	}
	if t := s.timer.Load(); t != nil && !s.done.Load() {
		t.Reset(s.b.cfg.PingInterval)
	}
}

// reconnect re-attaches after the agent hop old dropped. It returns the new
// hop, or how to close the client when it gives up.
func (s *stream) reconnect(old *websocket.Conn) (*websocket.Conn, *closeReq) {
	// Close first: the input pump may hold inMu in a write to old.
	_ = old.CloseNow()
	s.inMu.Lock()
	defer s.inMu.Unlock()
	s.agent.CompareAndSwap(old, nil)
	return s.connectAside(nil, false)
}

// connectAside runs connect aside (see aside).
func (s *stream) connectAside(ep *Endpoint, first bool) (conn *websocket.Conn, cr *closeReq) {
	aside(func() { conn, cr = s.connect(ep, first) })
	return conn, cr
}

// aside runs f on a short-lived goroutine and waits for it. Deep one-off work
// (dialling through net/http, JSON, WaitReady's store and API calls) would
// otherwise grow the stack of the goroutine that then idles for the stream's
// lifetime; a parked goroutine's stack only shrinks while it uses less than
// a quarter of it, so keeping the long-lived ones shallow keeps them small.
func aside(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

// connect dials the agent until an attachment is up or the reconnect budget
// is spent. ep is the endpoint to try first (nil: ask WaitReady). With first
// set it forwards the client's own attach and the agent's attached; else it
// re-attaches at the stream's offsets and hides the handshake from the client.
// The caller holds inMu.
func (s *stream) connect(ep *Endpoint, first bool) (*websocket.Conn, *closeReq) {
	ctx, cancel := context.WithTimeout(s.ctx, s.b.cfg.ReconnectTimeout)
	defer cancel()
	delay := backoffMin
	var lastErr error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			d := delay/2 + rand.N(delay/2+1)
			delay = min(2*delay, backoffMax)
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, s.giveUp(lastErr)
			case <-t.C:
			}
		}
		if ep == nil {
			e, err := s.t.WaitReady(ctx, func(string, string, int) {})
			if err != nil {
				if ctx.Err() != nil {
					return nil, s.giveUp(lastErr)
				}
				if cr := waitError(err); cr.code != wire.CloseUnavailable {
					return nil, cr
				}
				lastErr = err
				continue
			}
			ep = &e
		}
		conn, err := s.handshake(ctx, *ep, first)
		if err == nil {
			s.agent.Store(conn)
			if s.ctx.Err() != nil {
				// The stream ended while we dialled; run sees the closed hop.
				_ = conn.CloseNow()
			}
			return conn, nil
		}
		var cr *closeReq
		if errors.As(err, &cr) {
			return nil, cr
		}
		s.log.Debug("agent attach failed", "attempt", attempt, "error", err)
		lastErr = err
		ep = nil
	}
}

func (s *stream) giveUp(lastErr error) *closeReq {
	s.log.Warn("agent unreachable, giving up", "error", lastErr)
	return errorClose(wire.CloseUnavailable, wire.ErrCodeUnavailable, "session VM unreachable, retry later", time.Second)
}

// handshake dials the agent once and attaches. Errors: a *closeReq when the
// agent deliberately refused (pass it on), anything else is worth a retry.
func (s *stream) handshake(ctx context.Context, ep Endpoint, first bool) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.b.cfg.DialTimeout)
	defer cancel()
	tok, err := s.b.cfg.Signer.Token(ep.MachineID, ep.SessionID)
	if err != nil {
		return nil, errorClose(wire.CloseUnavailable, wire.ErrCodeInternal, "cannot sign agent token", 0)
	}
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+tok)
	hc := ep.HTTPClient
	if hc == nil {
		hc = s.b.client
	}
	conn, resp, err := websocket.Dial(ctx, attachURL(ep.AgentURL), &websocket.DialOptions{
		HTTPClient:   hc,
		HTTPHeader:   hdr,
		Subprotocols: []string{s.proto},
	})
	if err != nil {
		if resp != nil {
			if cr := refusalClose(resp); cr != nil {
				return nil, cr
			}
			return nil, fmt.Errorf("dial agent: HTTP %d: %w", resp.StatusCode, err)
		}
		return nil, fmt.Errorf("dial agent: %w", err)
	}
	if conn.Subprotocol() != s.proto {
		_ = conn.Close(websocket.StatusProtocolError, "subprotocol")
		return nil, errorClose(wire.CloseUnavailable, wire.ErrCodeUnavailable,
			fmt.Sprintf("the agent does not speak %s", s.proto), 0)
	}
	conn.SetReadLimit(s.b.cfg.MaxAgentMessage)
	ok := false
	defer func() {
		if !ok {
			_ = conn.CloseNow()
		}
	}()

	att := s.att
	if !first {
		att = wire.Attach{From: s.out.Next(), InputFrom: s.inLog.End(), Role: s.att.Role, Window: s.att.Window}
		if s.att.Role == wire.RoleWriter {
			att.Cols, att.Rows = s.cols, s.rows
		}
	}
	if err := conn.Write(ctx, websocket.MessageText, wire.MustEncode(&att)); err != nil {
		return nil, fmt.Errorf("send attach: %w", err)
	}

	var stash [][]byte // frames before attached (a gap), handled after it
	var errFrame []byte
	var attached wire.Attached
	var attachedRaw []byte
	for attachedRaw == nil {
		typ, bp, err := readMessage(ctx, conn)
		if err != nil {
			code := websocket.CloseStatus(err)
			if code == -1 || retryable(code) {
				return nil, fmt.Errorf("attach handshake: %w", err)
			}
			cr := &closeReq{code: code, reason: closeReason(err), frame: errFrame}
			return nil, cr
		}
		b := append([]byte(nil), *bp...)
		putBuf(bp)
		if typ != websocket.MessageText {
			return nil, errors.New("attach handshake: output before attached")
		}
		mt, err := wire.PeekType(b)
		if err != nil {
			continue
		}
		switch mt {
		case wire.TypeAttached:
			if !decodeInto(b, &attached) {
				return nil, errors.New("attach handshake: malformed attached")
			}
			attachedRaw = b
		case wire.TypePing:
			var p wire.Ping
			if decodeInto(b, &p) {
				_ = conn.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Pong{TS: p.TS}))
			}
		case wire.TypeError:
			errFrame = b
		case wire.TypeState:
			// An agent still initialising reports progress; only the
			// client's first attachment may show it.
			if first {
				if err := s.writeClient(websocket.MessageText, b); err != nil {
					return nil, err
				}
			}
		case wire.TypeGap:
			if len(stash) < 4 {
				stash = append(stash, b)
			}
		}
	}

	if first {
		if errFrame != nil {
			// The agent refused part of the client's own attach but attached
			// anyway (an invalid size: reported and ignored). The client must
			// hear it, in the agent's order: before attached.
			if err := s.writeClient(websocket.MessageText, errFrame); err != nil {
				return nil, err
			}
		}
		if err := s.writeClient(websocket.MessageText, attachedRaw); err != nil {
			return nil, err
		}
		s.out.Attached(attached.From)
		// Nothing was forwarded yet (the input pump waits for this hop):
		// the client's input is numbered from what the session applied.
		s.inLog.Rebase(attached.InputApplied)
	} else {
		if err := s.resume(conn, &attached); err != nil {
			return nil, err
		}
	}
	s.agentCols, s.agentRows = attached.Cols, attached.Rows
	for _, b := range stash {
		if err := s.handleAgentFrame(conn, websocket.MessageText, b); err != nil {
			return nil, err
		}
	}
	ok = true
	return conn, nil
}

// refusalClose maps an agent's HTTP refusal of the upgrade to the client's
// close, or nil when a retry may help (401 but for another session: the
// next dial signs a new token; 5xx; anything unexpected).
func refusalClose(resp *http.Response) *closeReq {
	var body agentapi.ErrorBody
	if resp.Body != nil {
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1024)).Decode(&body)
	}
	msg := body.Error.Message
	if resp.StatusCode == http.StatusUnauthorized && body.Error.Code == agentapi.CodeWrongSession {
		// The VM at this address serves another session: ours is gone.
		return errorClose(wire.CloseSessionGone, wire.ErrCodeSessionGone, "the session's VM is gone", 0)
	}
	switch resp.StatusCode {
	case http.StatusNotFound, http.StatusConflict, http.StatusGone:
		// Not initialised (the VM lost its state), ended or failed.
		if msg == "" {
			msg = "the session has ended"
		}
		return errorClose(wire.CloseSessionGone, wire.ErrCodeSessionGone, msg, 0)
	case http.StatusBadRequest:
		// A subprotocol the session's mode does not speak.
		if msg == "" {
			msg = "the agent refused the attachment"
		}
		return errorClose(int(websocket.StatusPolicyViolation), wire.ErrCodeBadRequest, msg, 0)
	}
	return nil
}

// resume reconciles a re-attachment with what the client has seen: it
// re-sends the input the agent has not applied, turns a jump in output into
// a gap and a changed size into a size frame, and arranges for the new
// replay's end marker to be swallowed if the client already had one.
func (s *stream) resume(conn *websocket.Conn, a *wire.Attached) error {
	decision := streamstate.Reconcile(s.out.Next(), a.From)
	if decision == streamstate.Duplicate {
		return errorClose(wire.CloseUnavailable, wire.ErrCodeUnavailable,
			"the agent replayed from an earlier offset than asked; reattach", time.Second)
	}
	// Only a writer's input needs reconciling: a viewer sends none, and the
	// input a writer elsewhere had applied meanwhile is none of its business.
	if s.att.Role == wire.RoleWriter {
		applied := a.InputApplied
		chunks, err := s.inLog.Since(applied)
		switch {
		case errors.Is(err, streamstate.ErrAhead):
			return errorClose(wire.CloseUnavailable, wire.ErrCodeUnavailable,
				"the agent applied more input than was sent; reattach", time.Second)
		case err != nil:
			// The client, which keeps its own unapplied input, resends it
			// after re-attaching.
			return errorClose(wire.CloseUnavailable, wire.ErrCodeUnavailable,
				"unapplied input is no longer buffered; reattach and resend it", time.Second)
		}
		for _, c := range chunks {
			if err := conn.Write(s.ctx, websocket.MessageBinary, c); err != nil {
				return fmt.Errorf("resend input: %w", err)
			}
		}
		s.inLog.Trim(applied)
	}
	s.pendingGap = nil
	if decision == streamstate.Gap {
		// Output from s.out was evicted. The agent should say so with a gap
		// (which carries the terminal modes to restore); if its next frame
		// is not one, the client gets this plain gap first.
		s.pendingGap = wire.MustEncode(&wire.Gap{Requested: s.out.Next(), Oldest: a.From})
		s.out.Gap(a.From)
	}
	if (a.Cols != s.agentCols || a.Rows != s.agentRows) && a.Cols > 0 && a.Rows > 0 {
		z := wire.MustEncode(&wire.Size{Cols: a.Cols, Rows: a.Rows})
		if err := s.writeClient(websocket.MessageText, z); err != nil {
			return err
		}
	}
	s.swallowReplayed = s.replayedSent
	return nil
}

// Message buffers: one per frame in flight, pooled, so an idle stream holds
// none and a busy one at most one per direction.
const poolBufSize = 32 << 10

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, poolBufSize)
	return &b
}}

func putBuf(bp *[]byte) {
	if cap(*bp) > 2*poolBufSize {
		return // let oversized (jsonl) buffers go
	}
	*bp = (*bp)[:0]
	bufPool.Put(bp)
}

// errTooBig reports a frame over the limit (read to its end, not kept).
var errTooBig = errors.New("frame too large")

// readFrame reads the rest of a message of at most limit bytes into a pooled
// buffer (return it with putBuf). A larger message is read to its end and
// discarded, so the connection stays usable and memory stays bounded.
func readFrame(r io.Reader, limit int64) (*[]byte, error) {
	bp := bufPool.Get().(*[]byte)
	b := (*bp)[:0]
	lr := &io.LimitedReader{R: r, N: limit + 1}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := lr.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			*bp = b
			putBuf(bp)
			return nil, err
		}
	}
	*bp = b
	if int64(len(b)) > limit {
		putBuf(bp)
		if _, err := io.Copy(io.Discard, r); err != nil {
			return nil, err
		}
		return nil, errTooBig
	}
	return bp, nil
}

// readMessage reads one whole message into a pooled buffer (return it with
// putBuf). The conn's read limit bounds its size.
func readMessage(ctx context.Context, c *websocket.Conn) (websocket.MessageType, *[]byte, error) {
	typ, r, err := c.Reader(ctx)
	if err != nil {
		return 0, nil, err
	}
	bp := bufPool.Get().(*[]byte)
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			*bp = b
			putBuf(bp)
			return 0, nil, err
		}
	}
	*bp = b
	return typ, bp, nil
}
