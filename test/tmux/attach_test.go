package tmux

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/client"
	"github.com/hangarhq/hangar/internal/testbin"
	"github.com/hangarhq/hangar/test/devtest"
)

// tmuxServer is a private tmux server (its own socket and config).
type tmuxServer struct {
	t    *testing.T
	sock string
}

func newTmux(t *testing.T) *tmuxServer {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is not installed: the terminal test needs it (apt-get install tmux; .ci/run installs it)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "tmux.conf")
	// Keep the pane after hangar exits so that its last words can be read.
	if err := os.WriteFile(conf, []byte("set -g remain-on-exit on\nset -g history-limit 5000\nset -g default-terminal screen-256color\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &tmuxServer{t: t, sock: filepath.Join(dir, "sock")}
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", s.sock, "kill-server").Run() })
	return s
}

func (s *tmuxServer) run(args ...string) string {
	s.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", s.sock, "-f", filepath.Join(filepath.Dir(s.sock), "tmux.conf")}, args...)...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (s *tmuxServer) capture() string {
	return s.run("capture-pane", "-p", "-J", "-S", "-200", "-t", "t")
}

// waitFor polls the pane until it contains want.
func (s *tmuxServer) waitFor(want string, timeout time.Duration) string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := s.capture()
		if strings.Contains(out, want) {
			return out
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("pane never showed %q; it shows:\n%s", want, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestAttachInTmux(t *testing.T) {
	if testing.Short() {
		t.Skip("-short (make test-unit): the tmux terminal test runs in make test")
	}
	d := devtest.Start(t)
	hangar := testbin.Path(t, testbin.CLI)
	tm := newTmux(t)

	// From nothing to a live terminal in one command.
	cmdline := fmt.Sprintf("%s --env-file %s sessions create --pool dev --attach --env PS1=prompt: -- bash --norc --noprofile -i",
		hangar, d.Dir)
	tm.run("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", "env", "TERM=screen-256color", "sh", "-c", cmdline)
	tm.waitFor("prompt:", 90*time.Second)

	tm.run("send-keys", "-t", "t", "-l", "echo hello-$((6*7))")
	tm.run("send-keys", "-t", "t", "Enter")
	tm.waitFor("hello-42", 30*time.Second)

	// The PTY has the tmux window's size, and follows a resize.
	tm.run("send-keys", "-t", "t", "-l", "stty size")
	tm.run("send-keys", "-t", "t", "Enter")
	tm.waitFor("30 100", 30*time.Second)
	tm.run("resize-window", "-t", "t", "-x", "120", "-y", "40")
	deadline := time.Now().Add(30 * time.Second)
	for {
		tm.run("send-keys", "-t", "t", "-l", "stty size")
		tm.run("send-keys", "-t", "t", "Enter")
		time.Sleep(300 * time.Millisecond)
		if strings.Contains(tm.capture(), "40 120") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the resize never reached the PTY; pane:\n%s", tm.capture())
		}
	}

	// ~. after Enter detaches; the session keeps running.
	tm.run("send-keys", "-t", "t", "Enter")
	tm.run("send-keys", "-t", "t", "-l", "~.")
	tm.waitFor("detached", 30*time.Second)

	c, err := client.New(d.Env["HANGAR_URL"], d.Env["HANGAR_TOKEN"], nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	list, err := c.ListSessions(ctx, "ready")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("want one ready session after detaching, got %+v", list)
	}
	id := list[0].ID

	// Re-attach (output replays, input still works), then the process's exit
	// status becomes hangar's.
	tm.run("respawn-pane", "-k", "-t", "t", fmt.Sprintf("%s --env-file %s attach %s; echo hangar-exit=$?", hangar, d.Dir, id))
	tm.waitFor("hello-42", 30*time.Second)
	tm.run("send-keys", "-t", "t", "-l", "echo again-$((2+3))")
	tm.run("send-keys", "-t", "t", "Enter")
	tm.waitFor("again-5", 30*time.Second)
	tm.run("send-keys", "-t", "t", "-l", "exit 7")
	tm.run("send-keys", "-t", "t", "Enter")
	// The daemon ends the session once its process exits; hangar waits for
	// that and tells how it ended and what became of the work (no repo here).
	out := tm.waitFor("hangar-exit=7", 60*time.Second)
	for _, want := range []string{"exited with status 7", "session " + id + " ended", "no repository: nothing pushed"} {
		if !strings.Contains(out, want) {
			t.Errorf("pane does not show %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "FAILED") {
		t.Errorf("a session without a repo reported a failed push:\n%s", out)
	}
	s, err := c.GetSession(ctx, id)
	if err != nil || !client.Terminal(s.State) {
		t.Fatalf("after hangar returned the session is %+v (%v), want it over", s, err)
	}

	// Attaching to the ended session fails with a clear message.
	tm.run("respawn-pane", "-k", "-t", "t", fmt.Sprintf("%s --env-file %s attach %s; echo hangar-exit=$?", hangar, d.Dir, id))
	out = tm.waitFor("hangar-exit=1", 30*time.Second)
	if !strings.Contains(out, "has already ended") {
		t.Errorf("attach to an ended session says:\n%s", out)
	}
}
