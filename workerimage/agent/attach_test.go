package agent_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/gittest"
	"github.com/hangarhq/hangar/internal/wire"
)

// TestGapPastTheBuffer: with a small ring, a client asking for evicted
// output gets a gap (with the terminal modes to restore), then the
// retained output; a slow client with a credit window skips ahead too,
// while the program never waits for it.
func TestGapPastTheBuffer(t *testing.T) {
	a := startAgent(t, agentOpts{env: map[string]string{"HANGAR_AGENT_BUFFER": "4KiB"}})
	a.init(&agentapi.InitRequest{SessionID: "gap", Command: []string{a.fake}})
	w := a.attach("gap", wire.SubprotocolPTY, wire.Attach{From: wire.LiveTail, Role: wire.RoleWriter})
	w.input("/alt\r")
	w.input("/spam 400\r")
	w.input("done spamming\r")
	w.waitOutput("you said: done spamming")
	st := a.status("gap")
	if st.Head < 8<<10 || st.Oldest != st.Head-4096 {
		t.Fatalf("status %+v", st)
	}

	c := a.attach("gap", wire.SubprotocolPTY, wire.Attach{From: 0, Role: wire.RoleReader})
	g := c.waitCtrl("gap", func(m wire.Message) bool { _, ok := m.(*wire.Gap); return ok }).(*wire.Gap)
	if g.Requested != 0 || g.Oldest < st.Oldest || g.Oldest > st.Head {
		t.Fatalf("gap %+v, status %+v", g, st)
	}
	for _, mode := range []string{"\x1b[?1049h", "\x1b[?2004h", "\x1b[?25l"} {
		if !strings.Contains(g.Restore, mode) {
			t.Errorf("restore %q lacks %q", g.Restore, mode)
		}
	}
	if c.out.Len() != 0 {
		t.Fatal("output before the gap")
	}
	c.waitCtrl("replayed", func(m wire.Message) bool { _, ok := m.(*wire.Replayed); return ok })
	if int64(c.out.Len()) < st.Head-g.Oldest || !strings.Contains(c.out.String(), "you said: done spamming") {
		t.Fatalf("replay after the gap: %d bytes", c.out.Len())
	}

	// A viewer with a small credit window gets exactly its window, no more.
	slow := a.attach("gap", wire.SubprotocolPTY, wire.Attach{From: st.Oldest, Role: wire.RoleReader, Window: 512})
	slow.waitFor("a window's worth", func() bool { return slow.out.Len() >= 512 })
	for slow.pump(200 * time.Millisecond) {
	}
	slow.closed = nil
	if slow.out.Len() != 512 {
		t.Fatalf("viewer with window 512 got %d bytes without acking", slow.out.Len())
	}
	// More output evicts what it has not received; the program did not wait.
	w.input("/spam 400\r")
	w.input("spammed again\r")
	w.waitOutput("you said: spammed again")
	slow.send(&wire.Ack{Offset: st.Oldest + 512})
	sg := slow.waitCtrl("slow gap", func(m wire.Message) bool { _, ok := m.(*wire.Gap); return ok }).(*wire.Gap)
	if sg.Requested != st.Oldest+512 || sg.Oldest <= sg.Requested {
		t.Fatalf("slow gap %+v", sg)
	}
	// The window counts from the gap: the viewer receives again.
	slow.waitFor("output after the gap", func() bool { return slow.out.Len() >= 1024 })
}

// TestWriterTakeoverAndViewers: a newer writer supersedes the older (close
// 4008); read-only viewers see everything but cannot type, resize or signal.
func TestWriterTakeoverAndViewers(t *testing.T) {
	a := startAgent(t, agentOpts{})
	a.init(&agentapi.InitRequest{SessionID: "tk", Command: []string{a.fake}})
	w1 := a.attach("tk", wire.SubprotocolPTY, wire.Attach{From: 0, Role: wire.RoleWriter})
	v := a.attach("tk", wire.SubprotocolPTY, wire.Attach{From: 0, Role: wire.RoleReader})
	if v.attached.Role != wire.RoleReader {
		t.Fatalf("viewer attached as %s", v.attached.Role)
	}
	w1.input("from one\r")
	w1.waitOutput("you said: from one")
	v.waitOutput("you said: from one")

	w2 := a.attach("tk", wire.SubprotocolPTY, wire.Attach{From: wire.LiveTail, InputFrom: 0, Role: wire.RoleWriter})
	if w2.attached.InputApplied != int64(len("from one\r")) {
		t.Fatalf("input_applied %d", w2.attached.InputApplied)
	}
	w1.waitError(wire.ErrCodeSuperseded)
	if code := w1.waitClosed(); code != wire.CloseSuperseded {
		t.Fatalf("superseded writer closed with %d", code)
	}
	w2.input("from two\r")
	w2.waitOutput("you said: from two")
	v.waitOutput("you said: from two")

	v.input("viewer typing\r")
	v.waitError(wire.ErrCodeForbidden)
	v.send(&wire.Resize{Cols: 50, Rows: 10})
	v.send(&wire.Signal{Name: wire.SignalKILL})
	v.waitFor("three refusals", func() bool { return countErrors(v, wire.ErrCodeForbidden) == 3 })
	w2.input("/size\r")
	w2.waitOutput("size: 24x80")
	if strings.Contains(v.out.String(), "viewer typing") {
		t.Fatal("viewer input reached the program")
	}
	// Still attached and watching.
	w2.input("after refusals\r")
	v.waitOutput("you said: after refusals")
	eventually(t, "two attachments, one writer", func() bool {
		st := a.status("tk")
		return st.Attachments == 2 && st.Writer
	})
	// A viewer that keeps typing is closed with 4003.
	for i := 0; i < 20; i++ {
		if v.conn.Write(t.Context(), websocket.MessageBinary, []byte("x")) != nil {
			break
		}
	}
	if code := v.waitClosed(); code != wire.CloseForbidden {
		t.Fatalf("persistent viewer closed with %d", code)
	}
}

// TestExitCodesAndSignals: a crash's exit code and a kill's signal are
// reported to every attachment, which then closes with 1000; a client
// attaching after the exit gets the replay, then the exit.
func TestExitCodesAndSignals(t *testing.T) {
	t.Run("code", func(t *testing.T) {
		a := startAgent(t, agentOpts{})
		a.init(&agentapi.InitRequest{SessionID: "x1", Command: []string{a.fake}})
		w := a.attach("x1", wire.SubprotocolPTY, wire.Attach{From: 0, Role: wire.RoleWriter})
		v := a.attach("x1", wire.SubprotocolPTY, wire.Attach{From: 0, Role: wire.RoleReader})
		w.waitOutput("> ")
		w.input("/crash\r")
		for _, c := range []*wsClient{w, v} {
			ex := c.waitCtrl("exit", func(m wire.Message) bool { _, ok := m.(*wire.Exit); return ok }).(*wire.Exit)
			if ex.Code != 3 || ex.Signal != "" {
				t.Fatalf("exit %+v", ex)
			}
			if code := c.waitClosed(); code != websocket.StatusNormalClosure {
				t.Fatalf("close %d", code)
			}
		}
		late := a.attach("x1", wire.SubprotocolPTY, wire.Attach{From: 0, Role: wire.RoleReader})
		late.waitCtrl("exit", func(m wire.Message) bool { _, ok := m.(*wire.Exit); return ok })
		if !bytes.Equal(late.out.Bytes(), w.out.Bytes()) {
			t.Fatalf("late replay differs: %q vs %q", late.out.String(), w.out.String())
		}
		st := a.status("x1")
		if st.State != agentapi.StateExited || *st.ExitCode != 3 {
			t.Fatalf("status %+v", st)
		}
	})
	t.Run("signal", func(t *testing.T) {
		a := startAgent(t, agentOpts{})
		a.init(&agentapi.InitRequest{SessionID: "x2", Command: []string{"bash", "--noprofile", "--norc", "-i"}})
		w := a.attach("x2", wire.SubprotocolPTY, wire.Attach{From: 0, Role: wire.RoleWriter})
		w.input("echo $TERM-$((6*7))\r")
		w.waitOutput("xterm-256color-42")
		w.send(&wire.Signal{Name: wire.SignalKILL})
		ex := w.waitCtrl("exit", func(m wire.Message) bool { _, ok := m.(*wire.Exit); return ok }).(*wire.Exit)
		if ex.Code != 128+9 || ex.Signal != "KILL" {
			t.Fatalf("exit %+v", ex)
		}
		st := a.status("x2")
		if st.ExitSignal != "KILL" {
			t.Fatalf("status %+v", st)
		}
	})
}

// TestAttachWhileInitializing: an attach that arrives while the clone runs
// gets state frames, then attached once the command started.
func TestAttachWhileInitializing(t *testing.T) {
	git := gittest.Start(t)
	repoURL := git.CreateRepo(t, "team/slow", nil)
	a := startAgent(t, agentOpts{})
	release := git.Hold()
	defer release()
	initDone := make(chan error, 1)
	go func() {
		_, err := a.client.Init(context.Background(), &agentapi.InitRequest{SessionID: "slow", Repo: repoURL,
			Command: []string{a.fake}, Credentials: &agentapi.Credentials{GitToken: git.Token}})
		initDone <- err
	}()
	eventually(t, "initializing", func() bool {
		code, body := a.call("GET", "/v1/health", "slow", nil)
		return code == 200 && strings.Contains(body, `"state":"initializing"`)
	})
	conn, _, err := a.dial("slow", wire.SubprotocolPTY)
	if err != nil {
		t.Fatal(err)
	}
	c := newWSClient(t, a, conn)
	c.send(&wire.Attach{From: 0, Role: wire.RoleWriter})
	st := c.waitCtrl("state", func(m wire.Message) bool { _, ok := m.(*wire.State); return ok }).(*wire.State)
	if st.State != agentapi.StateInitializing {
		t.Fatalf("state %+v", st)
	}
	release()
	c.waitCtrl("attached", func(m wire.Message) bool { _, ok := m.(*wire.Attached); return ok })
	c.waitOutput("fake claude")
	if err := <-initDone; err != nil {
		t.Fatal(err)
	}
}

// TestTakeoverWhileInputIsBlocked: a program that never reads its terminal
// blocks the writer's input; a new writer still takes over, and
// input_applied says exactly how much went in.
func TestTakeoverWhileInputIsBlocked(t *testing.T) {
	a := startAgent(t, agentOpts{})
	a.init(&agentapi.InitRequest{SessionID: "blk", Command: []string{"sleep", "1000"}})
	w1 := a.attach("blk", wire.SubprotocolPTY, wire.Attach{From: 0, Role: wire.RoleWriter})
	big := bytes.Repeat([]byte("y"), 1<<20)
	go func() {
		// The agent stops reading this socket while the input is stuck, so
		// these writes may never finish: they end with the connection.
		for i := 0; i < 4; i++ {
			if w1.conn.Write(context.Background(), websocket.MessageBinary, big[i*len(big)/4:(i+1)*len(big)/4]) != nil {
				return
			}
		}
	}()
	eventually(t, "input stuck", func() bool {
		st := a.status("blk")
		return st.InputApplied > 0 && st.InputApplied < int64(len(big))
	})
	w2 := a.attach("blk", wire.SubprotocolPTY, wire.Attach{From: wire.LiveTail, InputFrom: int64(len(big)), Role: wire.RoleWriter})
	if ap := w2.attached.InputApplied; ap <= 0 || ap >= int64(len(big)) {
		t.Fatalf("input_applied %d", ap)
	}
	if code := w1.waitClosed(); code != wire.CloseSuperseded {
		t.Fatalf("old writer closed with %d", code)
	}
	if st := a.status("blk"); st.InputApplied != w2.attached.InputApplied {
		t.Fatalf("input applied after take-over: %d, attached said %d", st.InputApplied, w2.attached.InputApplied)
	}
}
