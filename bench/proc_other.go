//go:build !linux

package bench

import (
	"os/exec"
	"syscall"
)

// dieWithParent is Linux-only (Pdeathsig); elsewhere the benchmark's own
// cleanup stops its children.
func dieWithParent(cmd *exec.Cmd, sig syscall.Signal) {}
