package flyemu

import (
	"syscall"

	"golang.org/x/sys/unix"
)

func sysProcAttr() *syscall.SysProcAttr {
	// Pdeathsig kills the group leader if the emulator itself dies without
	// running Close (a crashed test binary, a SIGKILLed hangard).
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// reap waits for the leader to exit, kills the rest of its group while the
// leader is still an unreaped zombie (so the group id cannot have been
// reused), then reaps it.
func reap(p *process) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	p.mu.Lock()
	p.killGroupLocked()
	p.mu.Unlock()
	return p.cmd.Wait()
}
