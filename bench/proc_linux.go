package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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

// waitRaw waits (up to 5 s) until the terminal of pty master f has echo
// off, i.e. the echo program has put it in raw mode: keys sent before
// would be echoed twice (by the line discipline, then by the program).
func waitRaw(f *os.File) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		if err != nil || t.Lflag&unix.ECHO == 0 {
			return
		}
	}
}

// cpuTime is the CPU time (user + system) process pid has used, from
// /proc/<pid>/stat (clock ticks, 10 ms at the usual 100 Hz).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count from its ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// Fields 14 (utime) and 15 (stime), counting from 1 with the pid.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc.
const clockTicks = 100
