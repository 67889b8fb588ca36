//go:build !linux

package bench

import (
	"os/exec"
	"syscall"
)

// dieWithParent is Linux-only (Pdeathsig); elsewhere the benchmark's own
// cleanup stops its children.
func dieWithParent(cmd *exec.Cmd, sig syscall.Signal) {}

// raiseNoFile leaves the limit alone outside Linux (the benchmark's
// emulator needs Linux for namespaces anyway).
func raiseNoFile(uint64) (uint64, error) { return 0, nil }
