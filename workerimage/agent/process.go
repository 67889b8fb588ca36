package agent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// process is the session's command. The agent reaps it on SIGCHLD with a
// non-blocking wait4 rather than parking a thread in Wait, and reads its
// output through Go's netpoller (the pty master and pipes are non-blocking),
// so a session costs no dedicated OS threads.
type process struct {
	pid int
	pty *os.File // pty mode: the master, non-blocking
	in  *os.File // jsonl mode: the child's stdin (write end)
	out *os.File // jsonl mode: the child's stdout (read end)
	err *os.File // jsonl mode: the child's stderr (read end)

	exited chan struct{} // closed once reaped
	status unix.WaitStatus
}

// procSpec says what to start.
type procSpec struct {
	argv       []string
	env        []string
	dir        string
	pty        bool
	cols, rows int
}

func startProcess(spec procSpec) (*process, error) {
	if len(spec.argv) == 0 {
		return nil, errors.New("empty command")
	}
	path, err := lookPath(spec.argv[0], spec.env)
	if err != nil {
		return nil, err
	}
	p := &process{exited: make(chan struct{})}
	attr := &os.ProcAttr{Dir: spec.dir, Env: spec.env}
	var closeAfter []*os.File
	if spec.pty {
		master, tty, err := openPTY(spec.cols, spec.rows)
		if err != nil {
			return nil, err
		}
		p.pty = master
		closeAfter = append(closeAfter, tty)
		attr.Files = []*os.File{tty, tty, tty}
		attr.Sys = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	} else {
		inR, inW, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("stdin pipe: %w", err)
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			inR.Close()
			inW.Close()
			return nil, fmt.Errorf("stdout pipe: %w", err)
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			inR.Close()
			inW.Close()
			outR.Close()
			outW.Close()
			return nil, fmt.Errorf("stderr pipe: %w", err)
		}
		p.in, p.out, p.err = inW, outR, errR
		closeAfter = append(closeAfter, inR, outW, errW)
		attr.Files = []*os.File{inR, outW, errW}
		attr.Sys = &syscall.SysProcAttr{Setpgid: true}
	}
	reaper.start()
	reaper.mu.Lock() // hold off the reaper until p is registered
	proc, err := os.StartProcess(path, spec.argv, attr)
	for _, f := range closeAfter {
		f.Close()
	}
	if err != nil {
		reaper.mu.Unlock()
		p.closeFiles()
		return nil, fmt.Errorf("start %s: %w", spec.argv[0], err)
	}
	p.pid = proc.Pid
	// The agent reaps by pid; the handle's pidfd is not needed.
	_ = proc.Release()
	reaper.procs[p.pid] = p
	reaper.mu.Unlock()
	reaper.poke()
	return p, nil
}

func (p *process) closeFiles() {
	for _, f := range []*os.File{p.pty, p.in, p.out, p.err} {
		if f != nil {
			f.Close()
		}
	}
}

// openPTY opens a pty pair and returns a non-blocking, poller-backed master.
// creack/pty's ioctls put the master it opens into blocking mode (they call
// Fd), so the agent duplicates the descriptor, makes it non-blocking and
// wraps it with os.NewFile, which registers it with the netpoller.
func openPTY(cols, rows int) (master, tty *os.File, err error) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	defer ptmx.Close()
	if err := pty.Setsize(tty, &pty.Winsize{Cols: uint16(cols), Rows: uint16(rows)}); err != nil {
		tty.Close()
		return nil, nil, fmt.Errorf("set pty size: %w", err)
	}
	fd, err := unix.Dup(int(ptmx.Fd()))
	if err != nil {
		tty.Close()
		return nil, nil, fmt.Errorf("dup pty: %w", err)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		tty.Close()
		return nil, nil, fmt.Errorf("pty non-blocking: %w", err)
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), tty, nil
}

// setSize resizes the pty without touching the master's blocking mode.
func (p *process) setSize(cols, rows int) error {
	if p.pty == nil {
		return nil
	}
	sc, err := p.pty.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	err = sc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Col: uint16(cols), Row: uint16(rows)})
	})
	if err != nil {
		return err
	}
	return ioErr
}

// signalGroup delivers sig to the process group (the command and its children).
func (p *process) signalGroup(sig syscall.Signal) error {
	select {
	case <-p.exited:
		return errors.New("process already exited")
	default:
	}
	if err := unix.Kill(-p.pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

// stop asks the process group to end (close stdin in jsonl mode, then
// SIGTERM), then kills it after grace.
func (p *process) stop(grace time.Duration) {
	if p.in != nil {
		p.in.Close()
		select {
		case <-p.exited:
			return
		case <-time.After(grace):
		}
	}
	_ = p.signalGroup(unix.SIGHUP)
	_ = p.signalGroup(unix.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.signalGroup(unix.SIGKILL)
		<-p.exited
	}
}

// exitCode returns the exit status (128+n when killed by signal n) and the
// signal's short name ("KILL") or "".
func (p *process) exitCode() (int, string) {
	ws := p.status
	if ws.Signaled() {
		return 128 + int(ws.Signal()), strings.TrimPrefix(unix.SignalName(ws.Signal()), "SIG")
	}
	return ws.ExitStatus(), ""
}

// reaper waits for the agent's children without a thread per child.
var reaper = &reaperT{procs: map[int]*process{}}

type reaperT struct {
	once  sync.Once
	mu    sync.Mutex
	procs map[int]*process
	wake  chan struct{}
}

func (r *reaperT) start() {
	r.once.Do(func() {
		r.wake = make(chan struct{}, 1)
		ch := make(chan os.Signal, 8)
		signal.Notify(ch, unix.SIGCHLD)
		go func() {
			// A slow tick backs up SIGCHLD (signals coalesce; a missed one
			// would otherwise leave a zombie unnoticed).
			t := time.NewTicker(2 * time.Second)
			for {
				select {
				case <-ch:
				case <-r.wake:
				case <-t.C:
				}
				r.reap()
			}
		}()
	})
}

func (r *reaperT) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *reaperT) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for pid, p := range r.procs {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if got == pid || errors.Is(err, unix.ECHILD) {
			if errors.Is(err, unix.ECHILD) {
				ws = unix.WaitStatus(255 << 8)
			}
			p.status = ws
			delete(r.procs, pid)
			close(p.exited)
		}
	}
}

// lookPath finds argv0 on the PATH of the child's environment.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return exec.LookPath(name)
	}
	path := os.Getenv("PATH")
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		if p, err := exec.LookPath(dir + "/" + name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q not found in PATH", name)
}
