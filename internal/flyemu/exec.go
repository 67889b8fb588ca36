package flyemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/hangarhq/hangar/internal/fly"
)

// execRequest is the body of POST .../exec (the spec's MachineExecRequest).
type execRequest struct {
	Command []string `json:"command"`
	Cmd     string   `json:"cmd"` // deprecated single string
	Stdin   string   `json:"stdin"`
	Timeout int      `json:"timeout"` // seconds
}

// execResponse is the spec's flydv1.ExecResponse.
type execResponse struct {
	ExitCode   int    `json:"exit_code"`
	ExitSignal int    `json:"exit_signal"`
	Stdout     string `json:"stdout"`
	Stderr     string `json:"stderr"`
}

const (
	defaultExecTimeout = 30 * time.Second
	maxExecTimeout     = 5 * time.Minute
	maxExecOutput      = 1 << 20
)

// execMachine runs a command "inside" a started machine: in its directory,
// with its environment, as a process of its own (not in the machine's group).
// Like Fly it answers 200 whatever the exit code.
func (e *Emulator) execMachine(r *http.Request) response {
	var req execRequest
	if resp, ok := decodeBody(r, &req, false); !ok {
		return resp
	}
	argv := req.Command
	if len(argv) == 0 {
		argv = strings.Fields(req.Cmd)
	}
	if len(argv) == 0 {
		return errResp(http.StatusBadRequest, "command is required")
	}
	if req.Timeout < 0 {
		return errResp(http.StatusBadRequest, fmt.Sprintf("invalid timeout %d", req.Timeout))
	}
	timeout := defaultExecTimeout
	if req.Timeout > 0 {
		timeout = min(time.Duration(req.Timeout)*time.Second, maxExecTimeout)
	}

	e.mu.Lock()
	m, resp, ok := e.mutableLocked(r)
	if !ok {
		e.mu.Unlock()
		return resp
	}
	if m.state != fly.StateStarted || m.proc == nil {
		e.mu.Unlock()
		return preconditionf("machine %s is not started (state %s)", m.id, m.state)
	}
	var spec processSpec
	var err error
	if m.proc.oci != nil {
		// Inside the running container (a new spec would replace its rootfs).
		spec = m.proc.oci.execSpec(argv)
		argv = spec.argv
	} else {
		spec, err = e.processSpec(m)
	}
	e.mu.Unlock()
	if err != nil {
		return errResp(http.StatusInternalServerError, err.Error())
	}

	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	go func() {
		select {
		case <-e.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return errResp(http.StatusBadRequest, fmt.Sprintf("run %q: %v", argv[0], err))
	}
	path, args := inNetns(spec.netns, path, argv[1:])
	cmd := exec.CommandContext(ctx, path, args[1:]...)
	cmd.Dir, cmd.Env = spec.dir, spec.env
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	cmd.Stdin = strings.NewReader(req.Stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &limitedBuffer{buf: &stdout, max: maxExecOutput}
	cmd.Stderr = &limitedBuffer{buf: &stderr, max: maxExecOutput}
	err = cmd.Run()
	out := execResponse{Stdout: stdout.String(), Stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return errResp(http.StatusRequestTimeout, fmt.Sprintf("deadline_exceeded: command did not finish within %s", timeout))
	case errors.As(err, &exitErr):
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			out.ExitSignal = int(ws.Signal())
			out.ExitCode = 128 + int(ws.Signal())
		} else {
			out.ExitCode = exitErr.ExitCode()
		}
	default:
		return errResp(http.StatusBadRequest, fmt.Sprintf("run %q: %v", argv[0], err))
	}
	return jsonResp(http.StatusOK, out)
}

// limitedBuffer keeps the first max bytes written and discards the rest.
type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		l.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
