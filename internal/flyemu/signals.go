package flyemu

import (
	"strconv"
	"strings"
	"syscall"
)

// signals are the signal names Fly's API accepts (the signal endpoint's set,
// a superset of what stop and stop_config take).
var signals = map[string]syscall.Signal{
	"SIGABRT": syscall.SIGABRT,
	"SIGALRM": syscall.SIGALRM,
	"SIGFPE":  syscall.SIGFPE,
	"SIGHUP":  syscall.SIGHUP,
	"SIGILL":  syscall.SIGILL,
	"SIGINT":  syscall.SIGINT,
	"SIGKILL": syscall.SIGKILL,
	"SIGPIPE": syscall.SIGPIPE,
	"SIGQUIT": syscall.SIGQUIT,
	"SIGSEGV": syscall.SIGSEGV,
	"SIGTERM": syscall.SIGTERM,
	"SIGTRAP": syscall.SIGTRAP,
	"SIGUSR1": syscall.SIGUSR1,
	"SIGUSR2": syscall.SIGUSR2,
}

// stopSignals are the signals stop and stop_config accept.
var stopSignals = map[string]bool{
	"SIGHUP": true, "SIGINT": true, "SIGQUIT": true, "SIGKILL": true,
	"SIGUSR1": true, "SIGUSR2": true, "SIGTERM": true,
}

// parseSignal accepts a name with or without the SIG prefix, in any case, or
// a number (fly-go's Kill sends 9).
func parseSignal(s string) (string, syscall.Signal, bool) {
	s = strings.TrimSpace(s)
	if n, err := strconv.Atoi(s); err == nil {
		for name, sig := range signals {
			if int(sig) == n {
				return name, sig, true
			}
		}
		return "", 0, false
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig, ok := signals[name]
	return name, sig, ok
}
