package flyemu

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// processSpec says how to launch one machine's main process.
type processSpec struct {
	argv    []string
	dir     string
	env     []string
	logPath string
	// netns is the network namespace to run in ("" = the host's).
	netns string
	// tee, when set, also receives every output line of the process.
	tee hclog.Logger
	// oci is set when argv is runc running the machine's image.
	oci *ociContainer
}

// exitInfo describes how a machine's main process ended.
type exitInfo struct {
	code   int            // 128+signal when killed by a signal
	signal syscall.Signal // 0 unless killed by a signal
	oom    bool           // killed by the guest's memory limit (image mode)
}

// process is one running machine process. It leads its own process group;
// every signal goes to the whole group, and when the leader exits the rest of
// the group is killed, as a VM's processes die with its init.
type process struct {
	pid  int
	cmd  *exec.Cmd
	oci  *ociContainer // image mode: pid is runc's
	done chan struct{} // closed after the process is reaped and exit is set
	exit exitInfo

	mu     sync.Mutex
	reaped bool // the group id may be reused by the system once set
}

// startProcess launches spec. onExit runs (in its own goroutine) once the
// process has exited and its whole group was killed; wg tracks that goroutine
// and copiers the output copier (which lasts as long as anything holds the
// output pipe open), so that the emulator can wait for them on close.
func startProcess(spec processSpec, wg, copiers *sync.WaitGroup, onExit func(exitInfo)) (*process, error) {
	if len(spec.argv) == 0 {
		return nil, errors.New("no command to run")
	}
	path, err := exec.LookPath(spec.argv[0])
	if err != nil {
		return nil, fmt.Errorf("find %q: %w", spec.argv[0], err)
	}
	logFile, err := os.OpenFile(spec.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open machine log: %w", err)
	}
	path, args := inNetns(spec.netns, path, spec.argv[1:])
	cmd := &exec.Cmd{Path: path, Args: args, Dir: spec.dir, Env: spec.env}
	cmd.SysProcAttr = sysProcAttr()

	var pr, pw *os.File
	if spec.tee != nil {
		if pr, pw, err = os.Pipe(); err != nil {
			logFile.Close()
			return nil, fmt.Errorf("create output pipe: %w", err)
		}
		cmd.Stdout, cmd.Stderr = pw, pw
	} else {
		// A file (not a Go writer) keeps cmd.Wait from waiting on grandchildren
		// that inherited the output.
		cmd.Stdout, cmd.Stderr = logFile, logFile
	}
	if err := cmd.Start(); err != nil {
		if spec.oci != nil {
			spec.oci.cleanup()
		}
		logFile.Close()
		if pw != nil {
			pr.Close()
			pw.Close()
		}
		return nil, fmt.Errorf("start %q: %w", spec.argv[0], err)
	}
	p := &process{pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{}), oci: spec.oci}
	if pw != nil {
		pw.Close()
		copiers.Add(1)
		go func() {
			defer copiers.Done()
			defer pr.Close()
			copyLines(pr, logFile, spec.tee, p.pid)
			logFile.Close()
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := reap(p)
		if pw == nil {
			logFile.Close()
		}
		p.exit = exitFrom(cmd.ProcessState, err)
		if p.oci != nil {
			p.oci.finish(&p.exit)
		}
		close(p.done)
		onExit(p.exit)
	}()
	return p, nil
}

// signal sends sig to the process group; it is a no-op once the process has
// exited.
func (p *process) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return
	}
	if p.oci != nil && p.oci.signal(p.pid, sig) {
		return
	}
	// Processes that started their own session (a PTY child, for one) left
	// the group but are still part of the "VM": find them before the group
	// is signalled, while they still descend from the leader.
	outside := descendantsOutsideGroup(p.pid)
	_ = syscall.Kill(-p.pid, sig)
	for _, pid := range outside {
		_ = syscall.Kill(pid, sig)
	}
}

// freeze stops every process of the "VM" (SIGSTOP), as a suspend does. A
// child forked while the group signal went out can miss it and would run on
// in a suspended machine, so processes not stopped yet are signalled again,
// for at most freezeRounds short rounds: one that still shows running then
// has the signal pending (it has not been scheduled since), which is enough.
func (p *process) freeze() {
	p.signal(syscall.SIGSTOP)
	if p.oci != nil {
		// Image mode froze the container's cgroup, which holds every
		// process of the VM, those forked meanwhile too. Its tasks are not
		// in state T, and runc outside it must go on: a SIGSTOP here would
		// outlast the thaw of a resume.
		return
	}
	for range freezeRounds {
		p.mu.Lock()
		if p.reaped {
			p.mu.Unlock()
			return
		}
		left := notStopped(p.pid)
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGSTOP)
		}
		p.mu.Unlock()
		if len(left) == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// freezeRounds bounds freeze's checks (about a millisecond apart).
const freezeRounds = 20

// killGroupLocked kills what is left of the group once the leader has exited
// and marks the group id as no longer ours. Callers hold p.mu and must not
// have reaped the leader yet where the platform allows that.
func (p *process) killGroupLocked() {
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	p.reaped = true
}

// kill kills the whole group, also when it is stopped.
func (p *process) kill() {
	p.signal(syscall.SIGKILL)
	p.signal(syscall.SIGCONT)
}

func exitFrom(ps *os.ProcessState, err error) exitInfo {
	if ps == nil {
		return exitInfo{code: -1}
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitInfo{code: 128 + int(ws.Signal()), signal: ws.Signal()}
	}
	return exitInfo{code: ps.ExitCode()}
}

func copyLines(r io.Reader, file *os.File, tee hclog.Logger, pid int) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		_, _ = file.Write(append(line, '\n'))
		tee.Info(string(line), "pid", pid)
	}
	// Drain what a scanner cannot split (overlong lines) so writers never block.
	_, _ = io.Copy(file, r)
}
