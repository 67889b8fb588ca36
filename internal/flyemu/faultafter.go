package flyemu

import (
	"fmt"
	"net/http"
	"os/exec"
	"strings"
)

// dropAfterActing loses the answer to a call that was already carried out
// (Config.FaultAfterRate): the connection is closed without a response, as
// when Fly acts and the answer is lost on the way. Only mutating calls:
// losing a read's answer tests nothing a dropped request does not.
func (e *Emulator) dropAfterActing(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return false
	}
	e.faultMu.Lock()
	if !e.faultAfterSet {
		e.faultAfter, e.faultAfterSet = e.cfg.FaultAfterRate, true
	}
	hit := e.faultAfter > 0 && e.faults.Float64() < e.faultAfter
	if hit {
		e.injected++
	}
	e.faultMu.Unlock()
	if !hit {
		return false
	}
	e.log.Debug("injected fault", "kind", "drop after acting", "method", r.Method, "path", r.URL.Path)
	hj, ok := w.(http.Hijacker)
	if !ok {
		errResp(http.StatusBadGateway, "connection dropped after acting (injected)").write(w)
		return true
	}
	if conn, _, err := hj.Hijack(); err == nil {
		conn.Close()
	}
	return true
}

// SetFaultAfterRate changes Config.FaultAfterRate while the emulator runs
// (a chaos run turns faults on after setting its pools up).
func (e *Emulator) SetFaultAfterRate(rate float64) {
	e.faultMu.Lock()
	e.faultAfter, e.faultAfterSet = rate, true
	e.faultMu.Unlock()
}

// Partition cuts (down) or restores the network link of machine id of app,
// as a network partition between the machine and everything else would:
// its process keeps running, its connections stall. It needs the
// network-namespace mode (root); in loopback mode it is an error.
func (e *Emulator) Partition(app, id string, down bool) error {
	e.mu.Lock()
	var veth string
	a := e.apps[app]
	if a == nil || a.machines[id] == nil {
		e.mu.Unlock()
		return fmt.Errorf("partition machine %s: no such machine in app %s", id, app)
	}
	veth = a.machines[id].net.veth
	e.mu.Unlock()
	if veth == "" {
		return fmt.Errorf("partition machine %s: the emulator runs in %s mode; partitions need network namespaces (root)", id, e.NetworkMode())
	}
	state := "up"
	if down {
		state = "down"
	}
	if out, err := exec.Command("ip", "link", "set", veth, state).CombinedOutput(); err != nil {
		return fmt.Errorf("partition machine %s: ip link set %s %s: %w: %s", id, veth, state, err, strings.TrimSpace(string(out)))
	}
	return nil
}
