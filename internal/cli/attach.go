package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/hangarhq/hangar/internal/client"
	"github.com/hangarhq/hangar/internal/wire"
)

const attachLong = `Attaches this terminal to a session: keystrokes go to the session's terminal,
its output comes here, the size follows this window. A dropped connection is
re-established on its own without losing output or doubling keystrokes.

Escapes (after Enter): ~. detach (the session keeps running), ~? help, ~~ a "~".

When the session's process exits, the daemon ends the session (it commits and
pushes the work); hangar waits for that (up to 2 minutes), prints how the
session ended and where its work went, and exits with the process's status
(or 1 where that is 0 but the session failed or its push did). Attaching to a
session that has already ended fails with exit status 1.`

func attachCmd(e *env) *cobra.Command {
	var ro bool
	c := leaf(e, &cobra.Command{
		Use:   "attach ID [--ro]",
		Short: "attach this terminal to a session",
		Long:  attachLong,
	}, 1, 1, func(ctx context.Context, pos, _ []string) error {
		c, err := e.client()
		if err != nil {
			return err
		}
		return attachTerminal(ctx, e, c, pos[0], "", ro)
	})
	c.Flags().BoolVar(&ro, "ro", false, "attach read-only (a viewer: no input, no resize)")
	c.ValidArgsFunction = e.completeSessions
	return c
}

// terminal is the local side of an attachment: raw mode while attached and
// status lines that do not disturb the remote screen more than needed.
type terminal struct {
	in, out   *os.File
	errw      io.Writer
	raw       bool
	restore   func()
	statusing bool
}

func (t *terminal) size() (int, int) {
	if t.out == nil || !term.IsTerminal(int(t.out.Fd())) {
		return 0, 0
	}
	w, h, err := term.GetSize(int(t.out.Fd()))
	if err != nil {
		return 0, 0
	}
	return w, h
}

// status prints a transient progress line (overwritten by the next one).
func (t *terminal) status(msg string) {
	if t.out != nil && term.IsTerminal(int(t.out.Fd())) {
		fmt.Fprintf(t.errw, "\r\x1b[K[hangar] %s", msg)
		t.statusing = true
		return
	}
	fmt.Fprintf(t.errw, "[hangar] %s\n", msg)
}

// note prints a line of its own.
// gapNotice is the one line shown when output was skipped.
func gapNotice(g wire.Gap) string {
	n := g.Oldest - g.Requested
	if n < 0 {
		n = 0
	}
	return fmt.Sprintf("output skipped: %d bytes were dropped before this client could show them (offsets %d to %d)", n, g.Requested, g.Oldest)
}

func (t *terminal) note(msg string) {
	t.clearStatus()
	fmt.Fprintf(t.errw, "[hangar] %s\r\n", msg)
}

func (t *terminal) clearStatus() {
	if t.statusing {
		fmt.Fprint(t.errw, "\r\x1b[K")
		t.statusing = false
	}
}

func (t *terminal) makeRaw() error {
	if t.in == nil || !term.IsTerminal(int(t.in.Fd())) {
		return nil
	}
	st, err := term.MakeRaw(int(t.in.Fd()))
	if err != nil {
		return fmt.Errorf("put terminal in raw mode: %w", err)
	}
	t.raw = true
	t.restore = func() { _ = term.Restore(int(t.in.Fd()), st) }
	return nil
}

func (t *terminal) cooked() {
	if t.restore != nil {
		t.restore()
		t.restore = nil
	}
}

// attachTerminal attaches the process's terminal to session id until the
// process exits (its status becomes ours), the user detaches, or the
// session ends.
func attachTerminal(ctx context.Context, e *env, c *client.Client, id, mode string, ro bool) error {
	if mode == "" {
		s, err := c.GetSession(ctx, id)
		if err != nil {
			return err
		}
		if client.Terminal(s.State) {
			return endedBeforeAttach(e, s)
		}
		mode = s.Mode
	}
	t := &terminal{errw: e.io.Err}
	t.in, _ = e.io.In.(*os.File)
	t.out, _ = e.io.Out.(*os.File)
	cols, rows := t.size()
	role := wire.RoleWriter
	if ro {
		role = wire.RoleReader
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lost := false
	attachedOnce := false
	var a *client.Attachment
	a = c.Attach(id, client.AttachOptions{
		Role: role, Mode: mode, Cols: cols, Rows: rows,
		Window: 4 << 20,
		OnState: func(s wire.State) {
			msg := s.State
			if s.Detail != "" {
				msg = s.Detail
			}
			if s.QueuePosition > 0 {
				msg += fmt.Sprintf(" (queue position %d)", s.QueuePosition)
			}
			t.status(msg + "…")
		},
		OnAttached: func(at wire.Attached, reconnected bool) {
			attachedOnce = true
			t.clearStatus()
			if reconnected && lost {
				t.note("reconnected")
			}
			lost = false
			// Our size may have changed while we were away.
			if w, h := t.size(); w > 0 && role == wire.RoleWriter && (w != at.Cols || h != at.Rows) {
				go a.Resize(w, h)
			}
		},
		OnReconnecting: func(attempt int, err error) {
			if !lost {
				t.note(fmt.Sprintf("connection lost (%v); reconnecting… (~. to detach)", err))
			}
			lost = true
		},
		// A gap means output this client never saw was evicted from the
		// agent's ring: say so, or the user cannot tell the screen skipped.
		OnGap: func(g wire.Gap) {
			t.note(gapNotice(g))
		},
		OnError: func(we wire.Error) {
			if we.Code == wire.ErrCodeCredentialsRejected {
				t.note("Claude Code rejected the credentials: " + we.Message)
			}
		},
	})
	// A terminal session takes raw keystrokes; jsonl mode reads whole lines.
	if mode != "jsonl" {
		if err := t.makeRaw(); err != nil {
			return err
		}
		defer t.cooked()
	}

	// Follow the window size (SIGWINCH where there is one).
	if role == wire.RoleWriter && t.out != nil {
		lastW, lastH := cols, rows
		stop := watchResize(ctx, func() {
			if w, h := t.size(); w > 0 && (w != lastW || h != lastH) {
				lastW, lastH = w, h
				a.Resize(w, h)
			}
		})
		defer stop()
	}

	detached := make(chan struct{})
	go pumpInput(e.io.In, a, mode, role, t, func() { close(detached); a.Close() })

	out := e.io.Out
	if mode == "jsonl" {
		out = lineWriter{e.io.Out} // one JSON line per frame
	}
	exit, err := a.Run(ctx, out)
	t.cooked()
	t.clearStatus()
	select {
	case <-detached:
		fmt.Fprintf(e.io.Err, "\r\n[hangar] detached; the session keeps running. Re-attach: hangar attach %s\n", id)
		return nil
	default:
	}
	if err != nil {
		if !errors.Is(err, client.ErrSessionGone) {
			return err
		}
		// The session ended under us (or before we ever got in).
		s := waitEnded(ctx, e, c, id)
		if s == nil {
			if !attachedOnce {
				return err
			}
			fmt.Fprintf(e.io.Err, "\r\n[hangar] session %s has ended\n", id)
			return nil
		}
		if !attachedOnce && client.Terminal(s.State) {
			return endedBeforeAttach(e, s)
		}
		return reportEnd(e, s)
	}
	if exit == nil {
		return nil
	}
	how := fmt.Sprintf("exited with status %d", exit.Code)
	if exit.Signal != "" {
		how = "was killed by SIG" + exit.Signal
	}
	// The daemon ends the session by itself once its process exits: wait for
	// that and tell how it ended and where the work went.
	fmt.Fprintf(e.io.Err, "\r\n[hangar] the session's process %s; waiting for the session to end…\n", how)
	rerr := error(nil)
	if s := waitEnded(ctx, e, c, id); s != nil {
		rerr = reportEnd(e, s)
	}
	if exit.Code != 0 {
		return &exitError{exit.Code}
	}
	return rerr
}

// endWait bounds how long attach waits for a session to end after its
// process exited (the push of a large repo takes a while).
var endWait = 2 * time.Minute

// waitEnded polls session id until it has ended or failed, for at most
// endWait; it returns the last state seen (nil if none could be read), and
// says so when the wait gave up.
func waitEnded(ctx context.Context, e *env, c *client.Client, id string) *client.Session {
	wctx, cancel := context.WithTimeout(ctx, endWait)
	defer cancel()
	var last *client.Session
	for {
		s, err := c.GetSession(wctx, id)
		switch {
		case err == nil:
			last = s
			if client.Terminal(s.State) {
				return s
			}
		case client.IsNotFound(err):
			return last
		}
		select {
		case <-wctx.Done():
			if last != nil {
				fmt.Fprintf(e.io.Err, "[hangar] session %s is still %s; see: hangar sessions show %s\n", id, last.State, id)
			} else {
				fmt.Fprintf(e.io.Err, "[hangar] could not read session %s (%v); see: hangar sessions show %s\n", id, err, id)
			}
			return last
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// reportEnd tells how a session ended and what became of its work. A failed
// session or push is an error (exit status 1).
func reportEnd(e *env, s *client.Session) error {
	if !client.Terminal(s.State) {
		return nil
	}
	text, pushFailed := pushSummary(s.Push)
	if s.State == client.StateFailed {
		if text != "" {
			fmt.Fprintf(e.io.Err, "[hangar] %s\n", text)
		}
		return fmt.Errorf("session %s failed: %s", s.ID, s.Reason)
	}
	fmt.Fprintf(e.io.Err, "[hangar] session %s ended%s\n", s.ID, reasonSuffix(s.Reason))
	if text != "" {
		fmt.Fprintf(e.io.Err, "[hangar] %s\n", text)
	}
	if pushFailed {
		return errors.New("the session ended but its work was not pushed: " + s.Push.Message)
	}
	return nil
}

// endedBeforeAttach is the answer to attaching to a session that is over:
// a clear error (exit status 1) with how it ended and where its work went.
func endedBeforeAttach(e *env, s *client.Session) error {
	if text, _ := pushSummary(s.Push); text != "" {
		fmt.Fprintf(e.io.Err, "[hangar] %s\n", text)
	}
	if s.State == client.StateFailed {
		return fmt.Errorf("session %s failed%s; nothing to attach to", s.ID, reasonSuffix(s.Reason))
	}
	return fmt.Errorf("session %s has already ended%s; nothing to attach to", s.ID, reasonSuffix(s.Reason))
}

func reasonSuffix(reason string) string {
	if reason == "" {
		return ""
	}
	return ": " + reason
}

// pumpInput copies the user's input to the attachment, applying escapes.
func pumpInput(in io.Reader, a *client.Attachment, mode string, role wire.Role, t *terminal, detach func()) {
	if in == nil {
		return
	}
	esc := newEscapeFilter()
	if mode == "jsonl" {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if string(line) == "~." {
				detach()
				return
			}
			if len(line) > 0 && role == wire.RoleWriter {
				_, _ = a.Write(line)
			}
		}
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			data, act := esc.filter(buf[:n])
			if len(data) > 0 && role == wire.RoleWriter {
				_, _ = a.Write(data)
			}
			switch act {
			case escDetach:
				detach()
				return
			case escHelp:
				t.note("escapes: ~. detach   ~~ send ~   ~? this help")
			}
		}
		if err != nil {
			return
		}
	}
}

// lineWriter ends every write (one jsonl frame) with a newline.
type lineWriter struct{ w io.Writer }

func (l lineWriter) Write(p []byte) (int, error) {
	buf := make([]byte, 0, len(p)+1)
	buf = append(append(buf, p...), '\n')
	if _, err := l.w.Write(buf); err != nil {
		return 0, err
	}
	return len(p), nil
}
