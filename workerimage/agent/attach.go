package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/streamstate"
	"github.com/hangarhq/hangar/internal/wire"
)

// attachment is one WebSocket attached to the session. A sender goroutine
// owns every write (output, replay, control frames) and its cursor; the
// handler goroutine reads the client's frames.
type attachment struct {
	s      *session
	conn   *websocket.Conn
	role   wire.Role
	window int64

	cursor   int64        // next output offset to send (sender only)
	acked    atomic.Int64 // last ack
	gapFloor atomic.Int64 // oldest after the last gap: nothing below can be acked
	revoked  atomic.Bool  // superseded writer: its input is refused

	ctrl     chan []byte   // control frames to send
	poke     chan struct{} // ack arrived
	killOnce sync.Once
	killCh   chan struct{}
	killCode websocket.StatusCode
	killErr  *wire.Error
	ctx      context.Context
	cancel   context.CancelFunc
	// wd closes the connection when one write takes longer than
	// writeTimeout. One timer for the attachment's life, re-armed per write:
	// a context with a deadline per write (and the cancellation callback the
	// WebSocket library registers for any cancellable context) cost four
	// allocations per output frame.
	wd *time.Timer

	violations int
}

// creditBase is the offset the window counts from.
func (at *attachment) creditBase() int64 { return max(at.acked.Load(), at.gapFloor.Load()) }

func (at *attachment) sendCtrl(b []byte) {
	select {
	case at.ctrl <- b:
	default:
		// A client this far behind on control frames is not reading at all.
		at.kill(websocket.StatusPolicyViolation, &wire.Error{Code: wire.ErrCodeRateLimited, Message: "client not reading"})
	}
}

func (at *attachment) sendError(code, msg string) {
	at.sendCtrl(wire.MustEncode(&wire.Error{Code: code, Message: msg}))
}

// kill closes the attachment with code after sending e (if any).
func (at *attachment) kill(code websocket.StatusCode, e *wire.Error) {
	at.killOnce.Do(func() {
		at.killCode, at.killErr = code, e
		close(at.killCh)
	})
}

// write sends one frame. Reads and writes take no cancellable context (see
// wd); the attachment's end closes the connection instead (attach), which
// fails a write or read in progress.
func (at *attachment) write(typ websocket.MessageType, b []byte) error {
	at.wd.Reset(writeTimeout)
	err := at.conn.Write(context.Background(), typ, b)
	at.wd.Stop()
	return err
}

func (at *attachment) writeMsg(m wire.Message) error {
	return at.write(websocket.MessageText, wire.MustEncode(m))
}

// closeWith sends the error frame (if any) and closes the socket.
func (at *attachment) closeWith(code websocket.StatusCode, e *wire.Error) {
	if e != nil {
		_ = at.writeMsg(e)
	}
	reason := ""
	if e != nil {
		reason = e.Code
	}
	_ = at.conn.Close(code, reason)
	at.cancel()
}

// run is the sender: control frames first, then output from the cursor
// within the credit window, a gap when the cursor was evicted, replayed
// once the historical part is out, and exit + close 1000 at the end.
func (at *attachment) run(replayEnd int64) {
	defer at.cancel()
	s := at.s
	buf := make([]byte, maxFramePayload)
	replayed := false
	exitedCh := s.exited // set to nil once seen: a closed channel would spin the select
	ping := time.NewTicker(wire.PingInterval)
	defer ping.Stop()
	for {
		select {
		case b := <-at.ctrl:
			if at.write(websocket.MessageText, b) != nil {
				at.conn.CloseNow()
				return
			}
			continue
		case <-at.killCh:
			at.closeWith(at.killCode, at.killErr)
			return
		case <-at.ctx.Done():
			at.conn.CloseNow()
			return
		default:
		}
		if !replayed && at.cursor >= replayEnd {
			replayed = true
			if at.writeMsg(&wire.Replayed{At: at.cursor}) != nil {
				at.conn.CloseNow()
				return
			}
			continue
		}
		wake := s.out.changed()
		limit := min(int64(maxFramePayload), streamstate.Credit(at.window, at.creditBase(), at.cursor))
		if limit > 0 {
			frame, n, gap := s.out.next(at.cursor, limit, buf)
			if gap != nil {
				if at.writeMsg(gap) != nil {
					at.conn.CloseNow()
					return
				}
				at.cursor = gap.Oldest
				at.gapFloor.Store(gap.Oldest)
				replayEnd = max(replayEnd, at.cursor)
				continue
			}
			if n > 0 {
				if at.write(websocket.MessageBinary, frame) != nil {
					at.conn.CloseNow()
					return
				}
				at.cursor += n
				if at.role == wire.RoleWriter && s.mode == agentapi.ModeJSONL && at.window == 0 {
					s.advanceProtect(at, at.cursor)
				}
				continue
			}
		}
		s.mu.Lock()
		exit := s.exit
		s.mu.Unlock()
		if exit != nil && at.cursor >= exit.At {
			if replayed || at.writeMsg(&wire.Replayed{At: at.cursor}) == nil {
				if at.writeMsg(exit) == nil {
					_ = at.conn.Close(websocket.StatusNormalClosure, "exit")
				}
			}
			at.conn.CloseNow()
			return
		}
		select {
		case <-wake:
		case <-at.poke:
		case <-exitedCh:
			exitedCh = nil
		case b := <-at.ctrl:
			if at.write(websocket.MessageText, b) != nil {
				at.conn.CloseNow()
				return
			}
		case <-at.killCh:
			at.closeWith(at.killCode, at.killErr)
			return
		case <-ping.C:
			if at.writeMsg(&wire.Ping{TS: time.Now().UnixMilli()}) != nil {
				at.conn.CloseNow()
				return
			}
		case <-at.ctx.Done():
			at.conn.CloseNow()
			return
		}
	}
}

// advanceProtect moves the jsonl protection mark for the current writer.
func (s *session) advanceProtect(at *attachment, off int64) {
	s.mu.Lock()
	if s.writer == at && off > s.protect {
		s.protect = off
	}
	s.mu.Unlock()
	s.pokeFlow()
}

// errTooBig reports a frame over the configured limit (already discarded).
var errTooBig = errors.New("frame too large")

// readFrame reads one message of at most limit bytes; a larger one is read
// to its end and discarded, so the connection stays usable.
func readFrame(r io.Reader, limit int) ([]byte, error) {
	buf := make([]byte, 0, min(limit+1, 4096))
	lr := io.LimitReader(r, int64(limit)+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if len(buf) > limit {
		if _, err := io.Copy(io.Discard, r); err != nil {
			return nil, err
		}
		return nil, errTooBig
	}
	return buf, nil
}

// serve handles frames from the client until the connection ends.
func (at *attachment) serve() {
	s := at.s
	limit := s.a.cfg.MaxFrame
	for {
		typ, r, err := at.conn.Reader(context.Background())
		if err != nil {
			return
		}
		data, err := readFrame(r, limit)
		if errors.Is(err, errTooBig) {
			at.sendError(wire.ErrCodeFrameTooLarge, fmt.Sprintf("frame larger than %d bytes ignored", limit))
			continue
		}
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary {
			if at.role != wire.RoleWriter {
				at.refuse("read-only viewers cannot send input")
				continue
			}
			if e := s.writeInput(at, data); e != nil {
				at.sendCtrl(wire.MustEncode(e))
			}
			continue
		}
		at.handleControl(data)
	}
}

// refuse answers a forbidden action of a viewer; persistent offenders are
// closed with 4003.
func (at *attachment) refuse(msg string) {
	at.violations++
	if at.violations >= maxViolations {
		at.kill(wire.CloseForbidden, &wire.Error{Code: wire.ErrCodeForbidden, Message: msg + " (closing)"})
		return
	}
	at.sendError(wire.ErrCodeForbidden, msg)
}

func (at *attachment) handleControl(data []byte) {
	s := at.s
	m, err := wire.Decode(data)
	if err != nil {
		if errors.Is(err, wire.ErrUnknownType) {
			at.sendError(wire.ErrCodeUnknownType, err.Error())
		} else {
			at.sendError(wire.ErrCodeBadRequest, err.Error())
		}
		return
	}
	switch m := m.(type) {
	case *wire.Ack:
		if m.Offset > at.acked.Load() {
			at.acked.Store(m.Offset)
		}
		select {
		case at.poke <- struct{}{}:
		default:
		}
		if at.role == wire.RoleWriter && s.mode == agentapi.ModeJSONL && at.window > 0 {
			s.advanceProtect(at, at.creditBase())
		}
	case *wire.Resize:
		if at.role != wire.RoleWriter {
			at.refuse("read-only viewers cannot resize")
			return
		}
		if s.mode != agentapi.ModePTY {
			at.sendError(wire.ErrCodeBadRequest, "resize applies to pty sessions only")
			return
		}
		if e := s.resize(m.Cols, m.Rows); e != nil {
			at.sendCtrl(wire.MustEncode(e))
		}
	case *wire.Signal:
		if at.role != wire.RoleWriter {
			at.refuse("read-only viewers cannot send signals")
			return
		}
		if e := s.signal(m.Name); e != nil {
			at.sendCtrl(wire.MustEncode(e))
		}
	case *wire.Ping:
		at.sendCtrl(wire.MustEncode(&wire.Pong{TS: m.TS}))
	case *wire.Pong:
	case *wire.Attach:
		at.sendError(wire.ErrCodeBadRequest, "already attached")
	default:
		at.sendError(wire.ErrCodeBadRequest, fmt.Sprintf("%q is not a client message", m.MessageType()))
	}
}

// attach runs one attachment on an accepted connection.
func (s *session) attach(ctx context.Context, conn *websocket.Conn, req *wire.Attach) {
	ctx, cancel := context.WithCancel(ctx)
	at := &attachment{
		s: s, conn: conn, role: req.Role, window: req.Window,
		ctrl: make(chan []byte, 256), poke: make(chan struct{}, 1), killCh: make(chan struct{}),
		ctx: ctx, cancel: cancel,
	}
	defer cancel()
	at.wd = time.AfterFunc(writeTimeout, func() { at.conn.CloseNow() })
	at.wd.Stop()
	// The attachment's end (run or serve returning, the request ending)
	// closes the connection: reads and writes wait on no context.
	context.AfterFunc(ctx, func() { at.conn.CloseNow() })
	if at.role == "" {
		at.role = wire.RoleWriter
	}
	if at.role == wire.RoleWriter && s.mode == agentapi.ModePTY && (req.Cols != 0 || req.Rows != 0) {
		if e := s.resize(req.Cols, req.Rows); e != nil {
			_ = at.writeMsg(e) // reported; the attachment goes on at the current size
		}
	}
	s.mu.Lock()
	var old *attachment
	if at.role == wire.RoleWriter {
		old = s.writer
		if old != nil {
			old.revoked.Store(true)
		}
		s.writer = at
	}
	s.attachments[at] = struct{}{}
	_, head := s.out.bounds()
	from := streamstate.ResolveFrom(req.From, head)
	at.cursor = from
	at.acked.Store(from)
	at.gapFloor.Store(from)
	if at.role == wire.RoleWriter && s.mode == agentapi.ModeJSONL {
		oldest, _ := s.out.bounds()
		s.protect = max(from, oldest)
	}
	cols, rows := s.cols, s.rows
	s.mu.Unlock()
	// Taking the input lock after revoking the old writer waits out any
	// input it is applying, so input_applied is final for it.
	s.inMu.Lock()
	applied := s.inputApplied.Load()
	s.inMu.Unlock()
	if old != nil {
		old.kill(wire.CloseSuperseded, &wire.Error{Code: wire.ErrCodeSuperseded, Message: "a newer writer attached"})
	}
	s.pokeFlow()
	defer s.detach(at)
	s.a.log.Debug("attached", "session", s.id, "role", at.role, "from", from, "head", head, "window", at.window)
	if at.writeMsg(&wire.Attached{Session: s.id, Role: at.role, From: from, Head: head,
		InputApplied: applied, Cols: cols, Rows: rows}) != nil {
		return
	}
	go at.run(head)
	at.serve()
}

func (s *session) detach(at *attachment) {
	s.mu.Lock()
	delete(s.attachments, at)
	if s.writer == at {
		s.writer = nil
	}
	s.mu.Unlock()
	s.pokeFlow()
}
