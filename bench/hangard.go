package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hangarhq/hangar/daemon/devenv"
	"github.com/hangarhq/hangar/internal/agentauth"
)

// devDaemon is a running `hangard dev`.
type devDaemon struct {
	cmd  *exec.Cmd
	dir  string
	env  map[string]string // dev.env
	key  *agentauth.Signer // the broker key, from the data directory
	done chan error
}

// startDev starts `hangard dev` on a loopback port with data in dir and
// waits until it is ready. (Its agents reach it on a second listener, on
// the emulator's internet address, that hangard dev opens itself.)
func startDev(ctx context.Context, hangard, dir string, bootDelay time.Duration, minStandby int, logs io.Writer) (*devDaemon, error) {
	cmd := exec.Command(hangard, "dev", "--data", dir, "--listen", "127.0.0.1:0",
		"--boot-delay", bootDelay.String(), "--min-standby", strconv.Itoa(minStandby), "--command", "cat",
		"--log-level", logLevel(),
		// The bench measures the cost per stream with more viewers per
		// session and tenant than the default attach limits allow.
		"--max-attaches-per-session", "-1", "--max-attaches-per-tenant", "-1")
	// Refill standbys fast between session-ready samples.
	cmd.Env = append(os.Environ(), "HANGARD_RECONCILE_INTERVAL=200ms")
	cmd.Stderr = logs
	dieWithParent(cmd, syscall.SIGINT)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s dev: %w", hangard, err)
	}
	d := &devDaemon{cmd: cmd, dir: dir, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.Contains(sc.Text(), "hangard dev ready at") {
				signalled = true
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, out)
		d.done <- cmd.Wait()
	}()
	select {
	case <-ready:
	case err := <-d.done:
		return nil, fmt.Errorf("hangard dev exited before it was ready: %v", err)
	case <-ctx.Done():
		d.stop()
		return nil, fmt.Errorf("wait for hangard dev: %w", ctx.Err())
	case <-time.After(2 * time.Minute):
		d.stop()
		return nil, errors.New("hangard dev not ready within 2 minutes")
	}
	if d.env, err = readEnvFile(filepath.Join(dir, devenv.EnvFile)); err != nil {
		d.stop()
		return nil, err
	}
	k, err := agentauth.LoadPrivateKeyFile(filepath.Join(dir, devenv.BrokerKeyFile))
	if err != nil {
		d.stop()
		return nil, fmt.Errorf("read the dev broker key: %w", err)
	}
	d.key = agentauth.NewSigner(k)
	return d, nil
}

// logLevel is hangard's log level: warn, unless HANGAR_BENCH_LOG_LEVEL
// names another (debug, to follow a claim or a tunnel in --daemon-log).
func logLevel() string {
	if l := os.Getenv("HANGAR_BENCH_LOG_LEVEL"); l != "" {
		return l
	}
	return "warn"
}

// stop interrupts hangard dev (which stops its machines) and waits for it.
func (d *devDaemon) stop() {
	if d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

func (d *devDaemon) pid() int { return d.cmd.Process.Pid }

func readEnvFile(p string) (map[string]string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
			env[k] = strings.Trim(v, `"'`)
		}
	}
	for _, k := range []string{"HANGAR_URL", "HANGAR_TOKEN", "FLY_API_URL", "FLY_API_TOKEN", "HANGAR_BROKER_PUBLIC_KEY"} {
		if env[k] == "" {
			return nil, fmt.Errorf("%s: no %s", p, k)
		}
	}
	return env, nil
}

// readNoFile reads the soft open-file limit of process pid.
func readNoFile(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("/proc/%d/limits: no open-file limit", pid)
}

// procStatus is what /proc/<pid>/status says about memory and threads.
type procStatus struct {
	RSSKiB  int64
	Threads int
}

func readProcStatus(pid int) (procStatus, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procStatus{}, err
	}
	var st procStatus
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			st.RSSKiB, _ = strconv.ParseInt(f[0], 10, 64)
		case "Threads":
			st.Threads, _ = strconv.Atoi(f[0])
		}
	}
	if st.RSSKiB == 0 || st.Threads == 0 {
		return st, fmt.Errorf("/proc/%d/status: no VmRSS or Threads", pid)
	}
	return st, nil
}
