//go:build !linux

package bench

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// dieWithParent is Linux-only (Pdeathsig); elsewhere the benchmark's own
// cleanup stops its children.
func dieWithParent(cmd *exec.Cmd, sig syscall.Signal) {}

// raiseNoFile leaves the limit alone outside Linux (the benchmark's
// emulator needs Linux for namespaces anyway).
func raiseNoFile(uint64) (uint64, error) { return 0, nil }

// waitRaw gives the echo program a moment to enter raw mode (no termios
// reading here).
func waitRaw(*os.File) { time.Sleep(100 * time.Millisecond) }

// cpuTime needs /proc.
func cpuTime(int) (time.Duration, error) { return 0, errors.New("no /proc") }
