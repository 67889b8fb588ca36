package bench

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the child get sig if the benchmark dies without
// cleaning up (SIGKILL), so no daemon or relay outlives it.
func dieWithParent(cmd *exec.Cmd, sig syscall.Signal) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: sig}
}
