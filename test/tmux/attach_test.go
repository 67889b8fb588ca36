package tmux

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/client"
	"github.com/hangarhq/hangar/internal/testbin"
)

// dev is a running `hangard dev`.
type dev struct {
	dir string
	env map[string]string
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startDev starts `hangard dev` with a `claude` on PATH that is a plain bash,
// so sessions need no Claude Code; it stops with the test.
func startDev(t *testing.T) *dev {
	t.Helper()
	hangard := testbin.Path(t, testbin.Daemon)
	testbin.Path(t, testbin.Agent) // the emulator runs the agent from beside hangard
	dir := t.TempDir()
	tools := filepath.Join(dir, "tools")
	if err := os.MkdirAll(tools, 0o755); err != nil {
		t.Fatal(err)
	}
	shim := "#!/bin/sh\nexec bash --norc --noprofile -i\n"
	if err := os.WriteFile(filepath.Join(tools, "claude"), []byte(shim), 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	logf, err := os.Create(filepath.Join(dir, "hangard.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(hangard, "dev", "--data", data, "--listen", freeAddr(t))
	cmd.Env = append(os.Environ(), "PATH="+tools+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start hangard dev: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("hangard log:\n%s", tail(string(b), 60))
		}
	})
	d := &dev{dir: data}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if env, err := readEnv(filepath.Join(data, "dev.env")); err == nil && env["HANGAR_URL"] != "" && env["HANGAR_TOKEN"] != "" {
			d.env = env
			break
		}
		select {
		case err := <-done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("hangard dev exited (%v):\n%s", err, tail(string(b), 40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("hangard dev wrote no dev.env within 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d
}

func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok && !strings.HasPrefix(k, "#") {
			env[k] = strings.Trim(v, `"'`)
		}
	}
	return env, sc.Err()
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

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
	d := startDev(t)
	hangar := testbin.Path(t, testbin.CLI)
	tm := newTmux(t)

	// From nothing to a live terminal in one command.
	cmdline := fmt.Sprintf("%s --env-file %s sessions create --pool dev --attach --env PS1=prompt: -- bash --norc --noprofile -i",
		hangar, d.dir)
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

	c, err := client.New(d.env["HANGAR_URL"], d.env["HANGAR_TOKEN"], nil)
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
	tm.run("respawn-pane", "-k", "-t", "t", fmt.Sprintf("%s --env-file %s attach %s; echo hangar-exit=$?", hangar, d.dir, id))
	tm.waitFor("hello-42", 30*time.Second)
	tm.run("send-keys", "-t", "t", "-l", "echo again-$((2+3))")
	tm.run("send-keys", "-t", "t", "Enter")
	tm.waitFor("again-5", 30*time.Second)
	tm.run("send-keys", "-t", "t", "-l", "exit 7")
	tm.run("send-keys", "-t", "t", "Enter")
	tm.waitFor("hangar-exit=7", 30*time.Second)

	if _, err := c.EndSession(ctx, id); err != nil {
		t.Fatalf("end session: %v", err)
	}
	if _, err := c.WaitSession(ctx, id, 200*time.Millisecond, func(s *client.Session) bool { return client.Terminal(s.State) }); err != nil {
		t.Fatalf("wait for the end: %v", err)
	}
}
