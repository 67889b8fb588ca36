package flyemu

import (
	"os"
	"strconv"
	"strings"
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

// procEntry is one live process as /proc/<pid>/stat shows it.
type procEntry struct {
	ppid, pgrp int
	state      byte // R, S, D, T, t, …; zombies are left out
}

// procTable reads every live (non-zombie) process from /proc.
func procTable() map[int]procEntry {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	procs := map[int]procEntry{}
	for _, de := range ents {
		n, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + de.Name() + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) state ppid pgrp ...": comm may contain anything, so
		// parse after the last ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		pgrp, _ := strconv.Atoi(f[2])
		procs[n] = procEntry{ppid: ppid, pgrp: pgrp, state: f[0][0]}
	}
	return procs
}

// descendantsOutsideGroup lists the live descendants of pid that are not in
// its process group, from /proc.
func descendantsOutsideGroup(pid int) []int {
	procs := procTable()
	var out []int
	for _, c := range descendants(procs, pid) {
		if procs[c].pgrp != pid {
			out = append(out, c)
		}
	}
	return out
}

// notStopped lists the processes of the "VM" led by pid — its group and its
// descendants outside it — that are not stopped.
func notStopped(pid int) []int {
	procs := procTable()
	var out []int
	add := func(n int) {
		if st := procs[n].state; st != 'T' && st != 't' {
			out = append(out, n)
		}
	}
	for n, pe := range procs {
		if pe.pgrp == pid {
			add(n)
		}
	}
	for _, c := range descendants(procs, pid) {
		if procs[c].pgrp != pid {
			add(c)
		}
	}
	return out
}

// descendants lists every descendant of pid in procs.
func descendants(procs map[int]procEntry, pid int) []int {
	children := map[int][]int{}
	for n, pe := range procs {
		children[pe.ppid] = append(children[pe.ppid], n)
	}
	var out []int
	queue := []int{pid}
	seen := map[int]bool{pid: true}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, c := range children[cur] {
			if !seen[c] {
				seen[c] = true
				queue = append(queue, c)
				out = append(out, c)
			}
		}
	}
	return out
}
