//go:build !linux

package flyemu

import "syscall"

func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// reap waits for the leader, then kills the rest of its group. Without
// waitid(WNOWAIT) there is a short window in which the group id could be
// reused; the emulator targets Linux, this keeps it building elsewhere.
func reap(p *process) error {
	err := p.cmd.Wait()
	p.mu.Lock()
	p.killGroupLocked()
	p.mu.Unlock()
	return err
}

// descendantsOutsideGroup is not tracked outside Linux: only the group is
// signalled.
func descendantsOutsideGroup(int) []int { return nil }

// notStopped is not tracked outside Linux.
func notStopped(int) []int { return nil }
