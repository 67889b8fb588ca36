// Package devtest starts a real `hangard dev` (daemon, embedded Fly emulator,
// hangar-agent machines) for end-to-end tests of the CLI and clients. The
// sessions' default command `claude` is a plain bash here, so no test needs
// Claude Code.
package devtest

import (
	"bufio"
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

// Dev is a running `hangard dev`.
type Dev struct {
	// Dir is the data directory; Dir/dev.env holds Env.
	Dir string
	// Env is the content of dev.env (HANGAR_URL, HANGAR_TOKEN, …).
	Env map[string]string
}

// Client returns an API client with the dev tenant's key.
func (d *Dev) Client(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.New(d.Env["HANGAR_URL"], d.Env["HANGAR_TOKEN"], nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Start starts `hangard dev` in a temporary directory and stops it (and
// every machine) when the test ends; on failure its log is printed.
func Start(t testing.TB) *Dev {
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
	cmd := exec.Command(hangard, "dev", "--data", data, "--listen", FreeAddr(t))
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
			t.Logf("hangard log:\n%s", Tail(string(b), 60))
		}
	})
	d := &Dev{Dir: data}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if env, err := ReadEnv(filepath.Join(data, "dev.env")); err == nil && env["HANGAR_URL"] != "" && env["HANGAR_TOKEN"] != "" {
			d.Env = env
			return d
		}
		select {
		case err := <-done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("hangard dev exited (%v):\n%s", err, Tail(string(b), 40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("hangard dev wrote no dev.env within 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ReadEnv reads a KEY=VALUE file such as dev.env.
func ReadEnv(path string) (map[string]string, error) {
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

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
