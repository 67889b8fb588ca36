package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/streamstate"
	"github.com/hangarhq/hangar/internal/wire"
)

// Errors that end an attachment for good (Run returns them wrapped).
var (
	// ErrSessionGone: the session ended or no longer exists (close 4004, or
	// 404/409 before the upgrade).
	ErrSessionGone = errors.New("session is gone")
	// ErrSuperseded: a newer writer took over the session (close 4008).
	ErrSuperseded = errors.New("another writer took over this session")
	// ErrForbidden: the role does not allow what was attempted (close 4003).
	ErrForbidden = errors.New("not allowed for this role")
	// ErrReconnectTimeout: the session could not be reached again in time.
	ErrReconnectTimeout = errors.New("gave up reconnecting")
)

// AttachOptions configures an attachment.
type AttachOptions struct {
	// Role is rw (default) or ro.
	Role wire.Role
	// Mode is "pty" (default) or "jsonl": it picks the subprotocol.
	Mode string
	// Cols and Rows are the terminal size sent with every attach (0 = keep).
	Cols, Rows int
	// From is the output offset of the first attach: 0 replays everything
	// still buffered (the default), wire.LiveTail starts at the head.
	From int64
	// Window is the credit window (bytes, or lines in jsonl); 0 = none.
	Window int64
	// Ticket, if set, is called before every connection for a fresh ticket,
	// which is then passed as ?ticket= instead of the bearer key.
	Ticket func(ctx context.Context) (string, error)
	// ReconnectTimeout bounds how long Run keeps trying to reach the session
	// again after a dropped connection (default 10 minutes).
	ReconnectTimeout time.Duration
	// IdleTimeout closes and reconnects a link on which nothing arrived for
	// this long (default 3 × wire.PingInterval).
	IdleTimeout time.Duration

	// Callbacks, all optional, called from Run's goroutine.
	OnState        func(wire.State)
	OnAttached     func(a wire.Attached, reconnected bool)
	OnReplayed     func(at int64)
	OnGap          func(wire.Gap)
	OnSize         func(cols, rows int)
	OnError        func(wire.Error)
	OnReconnecting func(attempt int, err error)
}

// Attachment is one client's reconnecting attachment to a session. Output
// goes to the writer given to Run; Write sends input. After a dropped
// connection it re-attaches with from = the output offset already written
// and input_from = the input sent so far, then resends only the input the
// server reports as not applied: no output is lost, no keystroke doubled.
type Attachment struct {
	c    *Client
	id   string
	opts AttachOptions
	mode streamstate.Mode

	mu     sync.Mutex
	conn   *websocket.Conn       // the current connection, nil between connections
	live   bool                  // attached: input may flow on conn
	out    streamstate.Output    // Next: the next output offset to write (= rendered so far)
	in     *streamstate.InputLog // input not known to be applied; End: input queued in total
	cols   int
	rows   int
	closed bool
}

// maxInputLog bounds the input kept for resending after a reconnect.
const maxInputLog = 1 << 20

// Attach prepares an attachment to session id; Run connects it.
func (c *Client) Attach(id string, opts AttachOptions) *Attachment {
	if opts.Role == "" {
		opts.Role = wire.RoleWriter
	}
	if opts.Mode == "" {
		opts.Mode = "pty"
	}
	if opts.ReconnectTimeout <= 0 {
		opts.ReconnectTimeout = 10 * time.Minute
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 3 * wire.PingInterval
	}
	mode := streamstate.Bytes
	if opts.Mode == "jsonl" {
		mode = streamstate.Lines
	}
	return &Attachment{c: c, id: id, opts: opts, mode: mode, cols: opts.Cols, rows: opts.Rows,
		out: streamstate.NewOutput(opts.Window, opts.From), in: streamstate.NewInputLog(mode, maxInputLog)}
}

// Offset returns the output offset written so far.
func (a *Attachment) Offset() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.out.Next()
}

// InputSent returns the input offset after the last input queued (bytes, or
// lines in jsonl), in the session's count, which starts with the input
// other clients had sent before this one attached: the next input_from.
func (a *Attachment) InputSent() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.in.End()
}

// Write queues input (in jsonl mode, p is one JSON line without newline) and
// sends it if connected. Input written while disconnected is sent after the
// next attach. It fails only after Close or for a read-only attachment.
func (a *Attachment) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if a.opts.Role == wire.RoleReader {
		return 0, ErrForbidden
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return 0, io.ErrClosedPipe
	}
	a.in.Append(p)
	if a.live && a.conn != nil {
		a.sendLocked(websocket.MessageBinary, p)
	}
	return len(p), nil
}

// sendLocked writes one frame on the current connection; a failure closes
// the connection so that Run reconnects. Callers hold a.mu, which keeps
// frames in order.
func (a *Attachment) sendLocked(typ websocket.MessageType, data []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.conn.Write(ctx, typ, data); err != nil {
		a.conn.CloseNow()
		a.live = false
	}
}

func (a *Attachment) sendControl(m wire.Message) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conn != nil && a.live {
		a.sendLocked(websocket.MessageText, wire.MustEncode(m))
	}
}

// Resize sends the new terminal size (and remembers it for later attaches).
func (a *Attachment) Resize(cols, rows int) {
	if cols <= 0 || rows <= 0 {
		return
	}
	a.mu.Lock()
	a.cols, a.rows = cols, rows
	a.mu.Unlock()
	if a.opts.Role == wire.RoleWriter {
		a.sendControl(&wire.Resize{Cols: cols, Rows: rows})
	}
}

// Signal delivers a signal (INT, TERM, KILL, HUP) to the session's process.
func (a *Attachment) Signal(name string) error {
	if !wire.ValidSignal(name) {
		return fmt.Errorf("unknown signal %q", name)
	}
	a.sendControl(&wire.Signal{Name: name})
	return nil
}

// Close ends the attachment: Run returns and later writes fail.
func (a *Attachment) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	if a.conn != nil {
		a.conn.Close(websocket.StatusNormalClosure, "detached")
	}
}

// Run connects and serves the attachment until the process exits (it returns
// the exit frame), the session is gone or the link cannot be re-established
// (an error), or ctx ends. Output is written to out.
func (a *Attachment) Run(ctx context.Context, out io.Writer) (*wire.Exit, error) {
	backoff := 100 * time.Millisecond
	var downSince time.Time
	attempt := 0
	for {
		attached, exit, err := a.connectOnce(ctx, out, attempt > 0)
		if exit != nil {
			return exit, nil
		}
		a.mu.Lock()
		closed := a.closed
		a.mu.Unlock()
		if closed {
			return nil, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var perm *permanentError
		if errors.As(err, &perm) {
			return nil, perm.err
		}
		if attached {
			// The link was good: the first retry comes quickly.
			backoff = 20 * time.Millisecond
			downSince = time.Time{}
		}
		if downSince.IsZero() {
			downSince = time.Now()
		}
		if time.Since(downSince) > a.opts.ReconnectTimeout {
			return nil, fmt.Errorf("%w after %s: %v", ErrReconnectTimeout, a.opts.ReconnectTimeout, err)
		}
		// A link that dropped while the session ended: stop instead of retrying.
		if a.opts.Ticket == nil && a.c.token != "" {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			s, gerr := a.c.GetSession(sctx, a.id)
			cancel()
			if IsNotFound(gerr) {
				return nil, fmt.Errorf("%w: %v", ErrSessionGone, gerr)
			}
			if gerr == nil && Terminal(s.State) {
				return nil, fmt.Errorf("%w: session %s is %s %s", ErrSessionGone, a.id, s.State, s.Reason)
			}
		}
		attempt++
		if a.opts.OnReconnecting != nil {
			a.opts.OnReconnecting(attempt, err)
		}
		wait := backoff
		var ra *retryAfterError
		if errors.As(err, &ra) && ra.after > wait {
			wait = ra.after
		}
		wait += time.Duration(rand.Int64N(int64(wait/4) + 1))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// AttachURL returns the WebSocket URL of a session's attach endpoint.
func (c *Client) AttachURL(id, ticket string) string {
	u := *c.base
	switch u.Scheme {
	case "https":
		u.Scheme = "wss"
	default:
		u.Scheme = "ws"
	}
	u.Path = strings.TrimRight(u.Path, "/") + "/v1/sessions/" + url.PathEscape(id) + "/attach"
	if ticket != "" {
		u.RawQuery = url.Values{"ticket": {ticket}}.Encode()
	}
	return u.String()
}

// connectOnce runs one connection. attached reports whether it got as far
// as an attached frame; exit is set when the process ended.
func (a *Attachment) connectOnce(ctx context.Context, out io.Writer, reconnect bool) (attached bool, exit *wire.Exit, err error) {
	subproto := wire.SubprotocolPTY
	if a.mode == streamstate.Lines {
		subproto = wire.SubprotocolJSONL
	}
	hdr := http.Header{}
	ticket := ""
	if a.opts.Ticket != nil {
		ticket, err = a.opts.Ticket(ctx)
		if err != nil {
			var ae *APIError
			if errors.As(err, &ae) && ae.StatusCode < 500 && ae.StatusCode != http.StatusTooManyRequests {
				return false, nil, &permanentError{err}
			}
			return false, nil, fmt.Errorf("get attach ticket: %w", err)
		}
	} else if a.c.token != "" {
		hdr.Set("Authorization", "Bearer "+a.c.token)
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	conn, resp, err := websocket.Dial(dctx, a.c.AttachURL(a.id, ticket), &websocket.DialOptions{
		HTTPHeader:   hdr,
		HTTPClient:   a.c.http, // its Timeout bounds only the handshake
		Subprotocols: []string{subproto},
	})
	cancel()
	if err != nil {
		return false, nil, classifyDial(a.id, resp, err)
	}
	conn.SetReadLimit(16 << 20)
	defer conn.CloseNow()

	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		conn.Close(websocket.StatusNormalClosure, "detached")
		return false, nil, nil
	}
	a.conn = conn
	a.live = false
	from := a.out.Next()
	att := &wire.Attach{From: from, InputFrom: a.in.End(), Cols: a.cols, Rows: a.rows, Role: a.opts.Role, Window: a.opts.Window}
	if a.opts.Role == wire.RoleReader {
		att.InputFrom = 0
	}
	werr := conn.Write(ctx, websocket.MessageText, wire.MustEncode(att))
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.conn, a.live = nil, false
		a.mu.Unlock()
	}()
	if werr != nil {
		return false, nil, fmt.Errorf("send attach: %w", werr)
	}

	// Keepalive: ping every PingInterval; a link silent for IdleTimeout is dead.
	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	var lastRecv sync.Mutex
	last := time.Now()
	go func() {
		t := time.NewTicker(min(wire.PingInterval, a.opts.IdleTimeout/2))
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
				lastRecv.Lock()
				idle := time.Since(last)
				lastRecv.Unlock()
				if idle > a.opts.IdleTimeout {
					conn.CloseNow()
					return
				}
				a.sendControl(&wire.Ping{TS: time.Now().UnixMilli()})
			}
		}
	}()

	var lastErr *wire.Error
	for {
		typ, data, rerr := conn.Read(ctx)
		if rerr != nil {
			return attached, exit, a.classifyClose(rerr, lastErr, exit)
		}
		lastRecv.Lock()
		last = time.Now()
		lastRecv.Unlock()
		if typ == websocket.MessageBinary {
			if _, werr := out.Write(data); werr != nil {
				conn.Close(websocket.StatusNormalClosure, "output closed")
				return attached, nil, &permanentError{fmt.Errorf("write output: %w", werr)}
			}
			a.mu.Lock()
			a.out.Advance(a.mode.Units(data))
			needAck := a.out.AckDue()
			a.mu.Unlock()
			if needAck {
				a.ack()
			}
			continue
		}
		m, derr := wire.Decode(data)
		if derr != nil {
			continue // unknown control frames are ignored, as the protocol allows growth
		}
		switch m := m.(type) {
		case *wire.State:
			if a.opts.OnState != nil {
				a.opts.OnState(*m)
			}
		case *wire.Attached:
			attached = true
			a.mu.Lock()
			a.out.Attached(m.From)
			if m.Cols > 0 && m.Rows > 0 && a.cols == 0 {
				a.cols, a.rows = m.Cols, m.Rows
			}
			a.live = true
			if a.opts.Role == wire.RoleWriter {
				a.resendLocked(m.InputApplied)
			}
			a.mu.Unlock()
			if a.opts.OnAttached != nil {
				a.opts.OnAttached(*m, reconnect)
			}
		case *wire.Gap:
			if m.Restore != "" {
				if _, werr := io.WriteString(out, m.Restore); werr != nil {
					return attached, nil, &permanentError{fmt.Errorf("write output: %w", werr)}
				}
			}
			a.mu.Lock()
			a.out.Gap(m.Oldest)
			a.mu.Unlock()
			if a.opts.OnGap != nil {
				a.opts.OnGap(*m)
			}
		case *wire.Replayed:
			if a.opts.OnReplayed != nil {
				a.opts.OnReplayed(m.At)
			}
		case *wire.Size:
			if a.opts.OnSize != nil {
				a.opts.OnSize(m.Cols, m.Rows)
			}
		case *wire.Ping:
			a.sendControl(&wire.Pong{TS: m.TS})
		case *wire.Exit:
			e := *m
			exit = &e
		case *wire.Error:
			e := *m
			lastErr = &e
			if a.opts.OnError != nil {
				a.opts.OnError(e)
			}
		}
	}
}

// resendLocked sends the retained input from offset applied on: what the
// server has not applied yet. Input the log no longer holds, or that the
// server cannot tell apart from another writer's, cannot be recovered:
// Resume still returns what is best to send. Callers hold a.mu.
func (a *Attachment) resendLocked(applied int64) {
	chunks, _ := a.in.Resume(applied)
	for _, c := range chunks {
		a.sendLocked(websocket.MessageBinary, c)
		if !a.live {
			return
		}
	}
}

func (a *Attachment) ack() {
	a.mu.Lock()
	off := a.out.Ack()
	a.mu.Unlock()
	a.sendControl(&wire.Ack{Offset: off})
}

// classifyClose decides what a closed connection means.
func (a *Attachment) classifyClose(err error, last *wire.Error, exit *wire.Exit) error {
	msg := ""
	if last != nil {
		msg = ": " + last.Message
	}
	switch code := websocket.CloseStatus(err); int(code) {
	case wire.CloseNormal:
		if exit != nil {
			return nil
		}
		return fmt.Errorf("connection closed%s", msg)
	case wire.CloseSessionGone:
		return &permanentError{fmt.Errorf("%w%s", ErrSessionGone, msg)}
	case wire.CloseSuperseded:
		return &permanentError{fmt.Errorf("%w%s", ErrSuperseded, msg)}
	case wire.CloseForbidden:
		return &permanentError{fmt.Errorf("%w%s", ErrForbidden, msg)}
	case wire.CloseRateLimited, wire.CloseUnavailable:
		after := time.Second
		if last != nil && last.RetryAfterMS > 0 {
			after = time.Duration(last.RetryAfterMS) * time.Millisecond
		}
		return &retryAfterError{fmt.Errorf("closed with %d%s", code, msg), after}
	case -1:
		return fmt.Errorf("connection lost: %w", err)
	default:
		return fmt.Errorf("closed with %d%s", code, msg)
	}
}

// classifyDial turns a failed WebSocket handshake into an error: API errors
// that cannot get better by retrying are permanent.
func classifyDial(id string, resp *http.Response, err error) error {
	if resp == nil || resp.StatusCode == http.StatusSwitchingProtocols {
		return fmt.Errorf("connect to session %s: %w", id, err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	ae := decodeError(resp, body)
	if ae.Message == "" || !json.Valid(body) && len(body) == 0 {
		ae.Message = http.StatusText(resp.StatusCode)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound, resp.StatusCode == http.StatusConflict, resp.StatusCode == http.StatusGone:
		return &permanentError{fmt.Errorf("attach to session %s: %w: %w", id, ErrSessionGone, ae)}
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return &retryAfterError{fmt.Errorf("attach to session %s: %w", id, ae), ae.RetryAfter}
	default:
		return &permanentError{fmt.Errorf("attach to session %s: %w", id, ae)}
	}
}
