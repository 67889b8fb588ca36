package bench

import (
	"fmt"
	"os/exec"
	"syscall"
)

// dieWithParent makes the child get sig if the benchmark dies without
// cleaning up (SIGKILL), so no daemon or relay outlives it.
func dieWithParent(cmd *exec.Cmd, sig syscall.Signal) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: sig}
}

// raiseNoFile raises this process's open-file limit (soft and, when
// allowed, hard) to at least want and returns the soft limit in force.
// Children inherit it: an explicit Setrlimit stops Go from restoring the
// original soft limit in the processes it starts, so hangard dev and,
// through the emulator, its agents get it too.
func raiseNoFile(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	next := lim
	next.Cur = want
	if next.Max < want {
		next.Max = want // only root may raise the hard limit
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next); err == nil {
		return next.Cur, nil
	}
	// Unprivileged: as far as the hard limit goes.
	next = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next); err != nil {
		return lim.Cur, err
	}
	if next.Cur < want {
		return next.Cur, fmt.Errorf("the hard limit is %d", next.Max)
	}
	return next.Cur, nil
}
