package flyemu

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hangarhq/hangar/internal/fly"
)

var regionRE = regexp.MustCompile(`^[a-z][a-z0-9]{1,15}$`)

// machineLocked finds the app and machine named in the path.
func (e *Emulator) machineLocked(r *http.Request) (*machine, response, bool) {
	a, resp, ok := e.appLocked(r)
	if !ok {
		return nil, resp, false
	}
	id := r.PathValue("id")
	m := a.machines[id]
	if m == nil {
		return nil, errResp(http.StatusNotFound, fmt.Sprintf("machine %q not found", id)), false
	}
	return m, response{}, true
}

// mutableLocked finds the machine for a mutating call: it must not be
// destroyed, and while a lease is held the caller must present its nonce.
func (e *Emulator) mutableLocked(r *http.Request) (*machine, response, bool) {
	m, resp, ok := e.machineLocked(r)
	if !ok {
		return nil, resp, false
	}
	if m.state == fly.StateDestroyed {
		return nil, errResp(http.StatusNotFound, fmt.Sprintf("machine %q not found (destroyed)", m.id)), false
	}
	if m.hostDown {
		return nil, errResp(http.StatusServiceUnavailable, fmt.Sprintf("failed to reach the host of machine %s: host unreachable", m.id)), false
	}
	if resp, ok := leaseCheckLocked(m, r); !ok {
		return nil, resp, false
	}
	return m, response{}, true
}

func leaseCheckLocked(m *machine, r *http.Request) (response, bool) {
	l := m.leaseHeld(time.Now())
	if l == nil || r.Header.Get(fly.LeaseNonceHeader) == l.nonce {
		return response{}, true
	}
	return errResp(http.StatusConflict, fmt.Sprintf(
		"machine %s is leased by %s until %s; pass the lease nonce in the %s header",
		m.id, l.owner, l.expires.UTC().Format(time.RFC3339), fly.LeaseNonceHeader)), false
}

func preconditionf(format string, args ...any) response {
	return errResp(http.StatusPreconditionFailed, "failed_precondition: "+fmt.Sprintf(format, args...))
}

// normalizeConfig validates a machine config and fills Fly's defaults.
func normalizeConfig(cfg *fly.MachineConfig) error {
	if cfg == nil {
		return fmt.Errorf("config is required")
	}
	if strings.TrimSpace(cfg.Image) == "" {
		return fmt.Errorf("config.image is required")
	}
	if cfg.Size != "" {
		if cfg.Guest != nil {
			return fmt.Errorf("config.size and config.guest are mutually exclusive")
		}
		g, ok := presetGuest(cfg.Size)
		if !ok {
			return fmt.Errorf("invalid guest size %q", cfg.Size)
		}
		cfg.Guest, cfg.Size = &g, ""
	}
	if cfg.Guest == nil {
		cfg.Guest = &fly.Guest{}
	}
	if err := validateGuest(cfg.Guest); err != nil {
		return err
	}
	if cfg.Restart != nil {
		switch cfg.Restart.Policy {
		case "", fly.RestartNo, fly.RestartAlways, fly.RestartOnFailure, fly.RestartSpotPrice:
		default:
			return fmt.Errorf("invalid restart policy %q (want no, always, on-failure or spot-price)", cfg.Restart.Policy)
		}
		if cfg.Restart.MaxRetries < 0 {
			return fmt.Errorf("invalid restart max_retries %d", cfg.Restart.MaxRetries)
		}
	}
	if sc := cfg.StopConfig; sc != nil {
		if sc.Signal != "" {
			if name, _, ok := parseSignal(sc.Signal); !ok || !stopSignals[name] {
				return fmt.Errorf("invalid stop_config.signal %q", sc.Signal)
			}
		}
		if sc.Timeout != nil && sc.Timeout.Duration < 0 {
			return fmt.Errorf("invalid stop_config.timeout %s", sc.Timeout.Duration)
		}
	}
	return nil
}

var (
	sharedCPUs      = []int{1, 2, 4, 6, 8}
	performanceCPUs = []int{1, 2, 4, 6, 8, 10, 12, 14, 16}
)

// presetGuest maps Fly's size presets (shared-cpu-2x, performance-4x) to a guest.
func presetGuest(size string) (fly.Guest, bool) {
	for _, p := range []struct {
		prefix, kind string
		cpus         []int
		memPerCPU    int
	}{{"shared-cpu-", "shared", sharedCPUs, 256}, {"performance-", "performance", performanceCPUs, 2048}} {
		rest, ok := strings.CutPrefix(size, p.prefix)
		if !ok {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSuffix(rest, "x"))
		if err != nil || !strings.HasSuffix(rest, "x") || !slices.Contains(p.cpus, n) {
			return fly.Guest{}, false
		}
		return fly.Guest{CPUKind: p.kind, CPUs: n, MemoryMB: n * p.memPerCPU}, true
	}
	return fly.Guest{}, false
}

// validateGuest applies Fly's sizing rules: shared 1-8 CPUs with 256-2048 MB
// each, performance 1-16 CPUs with 2048-8192 MB each, memory in 256 MB steps.
func validateGuest(g *fly.Guest) error {
	if g.CPUKind == "" {
		g.CPUKind = "shared"
	}
	var cpus []int
	var minPer, maxPer int
	switch g.CPUKind {
	case "shared":
		cpus, minPer, maxPer = sharedCPUs, 256, 2048
	case "performance":
		cpus, minPer, maxPer = performanceCPUs, 2048, 8192
	default:
		return fmt.Errorf("invalid guest cpu_kind %q (want shared or performance)", g.CPUKind)
	}
	if g.CPUs == 0 {
		g.CPUs = 1
	}
	if !slices.Contains(cpus, g.CPUs) {
		return fmt.Errorf("invalid guest: %d %s CPUs not available (choose from %v)", g.CPUs, g.CPUKind, cpus)
	}
	if g.MemoryMB == 0 {
		g.MemoryMB = minPer * g.CPUs
	}
	if g.MemoryMB%256 != 0 {
		return fmt.Errorf("invalid guest: memory_mb %d is not a multiple of 256", g.MemoryMB)
	}
	if lo, hi := minPer*g.CPUs, maxPer*g.CPUs; g.MemoryMB < lo || g.MemoryMB > hi {
		return fmt.Errorf("invalid guest: memory_mb %d out of range for %d %s CPUs (%d-%d)", g.MemoryMB, g.CPUs, g.CPUKind, lo, hi)
	}
	return nil
}

func (e *Emulator) createMachine(r *http.Request) response {
	var req fly.CreateMachineRequest
	if resp, ok := decodeBody(r, &req, false); !ok {
		return resp
	}
	if err := normalizeConfig(req.Config); err != nil {
		return errResp(http.StatusBadRequest, err.Error())
	}
	region := req.Region
	if region == "" {
		region = e.cfg.Region
	}
	if !regionRE.MatchString(region) {
		return errResp(http.StatusBadRequest, fmt.Sprintf("invalid region %q", region))
	}
	if req.LeaseTTL < 0 {
		return errResp(http.StatusBadRequest, fmt.Sprintf("invalid lease_ttl %d", req.LeaseTTL))
	}
	e.mu.Lock()
	a, resp, ok := e.appLocked(r)
	if !ok {
		e.mu.Unlock()
		return resp
	}
	if e.full[region] {
		e.mu.Unlock()
		return errCode(http.StatusPreconditionFailed,
			fmt.Sprintf("insufficient resources available to fulfill request in region %s", region),
			fly.StatusInsufficientCapacity)
	}
	org, network := a.org, a.network
	e.mu.Unlock()
	// Building a namespace takes a few exec calls: not under the lock.
	mn, err := e.net.attach(r.Context(), org, network)
	if err != nil {
		return errResp(http.StatusInternalServerError, err.Error())
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || e.apps[a.name] != a {
		go e.net.detach(context.Background(), mn)
		return errResp(http.StatusNotFound, fmt.Sprintf("app %q not found", a.name))
	}
	now := time.Now()
	name := req.Name
	if name == "" {
		name = randomName()
	}
	m := &machine{
		app:         a,
		id:          newMachineID(),
		name:        name,
		region:      region,
		config:      cloneConfig(*req.Config),
		skipSecrets: req.SkipSecrets,
		createdAt:   now,
		net:         mn,
		cordoned:    req.SkipServiceRegistration,
		changed:     make(chan struct{}),
	}
	for a.machines[m.id] != nil {
		m.id = newMachineID()
	}
	if m.api, err = e.serveLocalAPILocked(m); err != nil {
		go e.net.detach(context.Background(), mn)
		return errResp(http.StatusInternalServerError, err.Error())
	}
	m.instanceID = e.newULID()
	m.versions = []string{m.instanceID}
	a.machines[m.id] = m
	e.setStateLocked(m, fly.StateCreated, "launch", "user", nil)
	view := m.view(false)
	if req.LeaseTTL > 0 {
		l := e.newLeaseLocked(m, "", time.Duration(req.LeaseTTL)*time.Second, "")
		view.Nonce = l.nonce
	}
	e.log.Info("machine created", "app", a.name, "machine", m.id, "region", region, "private_ip", mn.addr, "netns", mn.netns, "skip_launch", req.SkipLaunch)
	if !req.SkipLaunch {
		e.launchLocked(m, "start", "user", nil)
	}
	return jsonResp(http.StatusOK, view)
}

func (e *Emulator) listMachines(r *http.Request) response {
	q := r.URL.Query()
	includeDeleted, _ := strconv.ParseBool(q.Get("include_deleted"))
	summary, _ := strconv.ParseBool(q.Get("summary"))
	region := q.Get("region")
	var states []string
	for _, v := range q["state"] {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				states = append(states, s)
			}
		}
	}
	meta := map[string]string{}
	for k, v := range q {
		if key, ok := strings.CutPrefix(k, "metadata."); ok && len(v) > 0 {
			meta[key] = v[0]
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	a, resp, ok := e.appLocked(r)
	if !ok {
		return resp
	}
	list := make([]*machine, 0, len(a.machines))
	for _, m := range a.machines {
		if m.state == fly.StateDestroyed && !includeDeleted {
			continue
		}
		if region != "" && m.region != region {
			continue
		}
		if len(states) > 0 && !slices.Contains(states, m.state) {
			continue
		}
		match := true
		for k, v := range meta {
			if got, ok := m.config.Metadata[k]; !ok || got != v {
				match = false
				break
			}
		}
		if match {
			list = append(list, m)
		}
	}
	sort.Slice(list, func(i, j int) bool {
		if !list[i].createdAt.Equal(list[j].createdAt) {
			return list[i].createdAt.Before(list[j].createdAt)
		}
		return list[i].id < list[j].id
	})
	out := make([]fly.Machine, 0, len(list))
	for _, m := range list {
		out = append(out, m.view(summary))
	}
	return jsonResp(http.StatusOK, out)
}

func (e *Emulator) getMachine(r *http.Request) response {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, resp, ok := e.machineLocked(r)
	if !ok {
		return resp
	}
	v := m.view(false)
	if l := m.leaseHeld(time.Now()); l != nil && r.Header.Get(fly.LeaseNonceHeader) == l.nonce {
		v.Nonce = l.nonce
	}
	return jsonResp(http.StatusOK, v)
}

func (e *Emulator) updateMachine(r *http.Request) response {
	var req fly.UpdateMachineRequest
	if resp, ok := decodeBody(r, &req, false); !ok {
		return resp
	}
	if err := normalizeConfig(req.Config); err != nil {
		return errResp(http.StatusBadRequest, err.Error())
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	m, resp, ok := e.mutableLocked(r)
	if !ok {
		return resp
	}
	if req.CurrentVersion != "" && req.CurrentVersion != m.instanceID {
		return preconditionf("machine %s is at version %s, not %s", m.id, m.instanceID, req.CurrentVersion)
	}
	if req.Region != "" && req.Region != m.region {
		return errResp(http.StatusBadRequest, fmt.Sprintf("cannot change region of machine %s from %s to %s", m.id, m.region, req.Region))
	}
	if transient(m.state) && m.state != fly.StateStarting {
		return preconditionf("unable to update machine in state %s", m.state)
	}
	// The old process stops the way the old config says.
	sig, timeout, err := stopParams(&m.config, "", 0)
	if err != nil {
		sig, timeout = syscall.SIGINT, defaultStopTimeout
	}
	prev := m.state
	if req.Name != "" {
		m.name = req.Name
	}
	m.config = cloneConfig(*req.Config)
	m.skipSecrets = req.SkipSecrets
	m.instanceID = e.newULID()
	m.versions = append(m.versions, m.instanceID)
	e.setStateLocked(m, fly.StateUpdating, "update", "user", nil)
	switch {
	case m.proc != nil:
		m.skipAfter = req.SkipLaunch
		e.stopLocked(m, sig, timeout, intentUpdate)
	case req.SkipLaunch:
		if prev == fly.StateFailed {
			prev = fly.StateStopped
		}
		e.setStateLocked(m, prev, "update", "flyd", nil)
	default:
		m.restarts = 0
		e.launchLocked(m, "update", "flyd", nil)
	}
	v := m.view(false)
	if req.LeaseTTL > 0 {
		if l := m.leaseHeld(time.Now()); l == nil {
			v.Nonce = e.newLeaseLocked(m, "", time.Duration(req.LeaseTTL)*time.Second, "").nonce
		}
	}
	return jsonResp(http.StatusOK, v)
}

func (e *Emulator) startMachine(r *http.Request) response {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, resp, ok := e.mutableLocked(r)
	if !ok {
		return resp
	}
	prev := m.state
	switch prev {
	case fly.StateStarting, fly.StateStarted:
		// Already on its way; answering like a successful start keeps a
		// retried start harmless.
	case fly.StateSuspended:
		if e.snapshotLostLocked(m) {
			// Fly does not promise that a snapshot survives: the machine
			// boots cold, a new process (launched when the old one is gone).
			e.log.Info("suspend snapshot lost; booting cold", "app", m.app.name, "machine", m.id)
			m.snapshotLost = false
			e.setStateLocked(m, fly.StateStarting, "start", "user", nil)
			m.intent = intentRestart
			m.proc.kill()
			break
		}
		e.resumeLocked(m)
	case fly.StateCreated, fly.StateStopped, fly.StateFailed:
		if prev == fly.StateCreated && e.stuckCreatedLocked(m, time.Now()) {
			return preconditionf("machine %s is not ready to start yet (still being created); try again later", m.id)
		}
		if e.full[m.region] {
			// Not launched, the machine holds no resources on its host.
			return errCode(http.StatusPreconditionFailed,
				fmt.Sprintf("insufficient resources available to start machine %s in region %s", m.id, m.region),
				fly.StatusInsufficientCapacity)
		}
		m.restarts = 0
		e.launchLocked(m, "start", "user", nil)
	default:
		return preconditionf("unable to start machine from current state: '%s'", prev)
	}
	return jsonResp(http.StatusOK, fly.StartResponse{PreviousState: prev})
}

// stuckCreatedLocked reports whether m, in state created, refuses to start
// now (SetStartable, else Config.UnstartableAfterCreate).
func (e *Emulator) stuckCreatedLocked(m *machine, now time.Time) bool {
	switch m.startable {
	case startableYes:
		return false
	case startableNo:
		return true
	}
	return now.Sub(m.createdAt) < e.cfg.UnstartableAfterCreate
}

func (e *Emulator) stopMachine(r *http.Request) response {
	var req fly.StopRequest
	if resp, ok := decodeBody(r, &req, true); !ok {
		return resp
	}
	var timeout time.Duration
	if req.Timeout != nil {
		if req.Timeout.Duration < 0 {
			return errResp(http.StatusBadRequest, fmt.Sprintf("invalid timeout %s", req.Timeout.Duration))
		}
		timeout = req.Timeout.Duration
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	m, resp, ok := e.mutableLocked(r)
	if !ok {
		return resp
	}
	sig, timeout, err := stopParams(&m.config, req.Signal, timeout)
	if err != nil {
		return errResp(http.StatusBadRequest, err.Error())
	}
	switch {
	case m.proc != nil && m.state != fly.StateStopping && m.state != fly.StateDestroying:
		e.setStateLocked(m, fly.StateStopping, "stop", "user", nil)
		e.stopLocked(m, sig, timeout, intentStop)
	case m.proc != nil:
		// Already stopping (or being destroyed): nothing more to do.
	case m.state == fly.StateCreated || m.state == fly.StateFailed:
		e.setStateLocked(m, fly.StateStopping, "stop", "user", nil)
		e.setStateLocked(m, fly.StateStopped, "stop", "flyd", nil)
	}
	return jsonResp(http.StatusOK, fly.OKResponse{OK: true})
}

// maxSuspendMemoryMB is Fly's limit for suspend.
const maxSuspendMemoryMB = 2048

func (e *Emulator) suspendMachine(r *http.Request) response {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, resp, ok := e.mutableLocked(r)
	if !ok {
		return resp
	}
	switch {
	case m.state == fly.StateSuspended:
		return jsonResp(http.StatusOK, fly.OKResponse{OK: true})
	case m.state != fly.StateStarted || m.proc == nil:
		return preconditionf("unable to suspend machine from current state: '%s'", m.state)
	case m.config.Guest != nil && m.config.Guest.MemoryMB > maxSuspendMemoryMB:
		return preconditionf("machines with more than %d MB of memory cannot be suspended", maxSuspendMemoryMB)
	}
	e.setStateLocked(m, fly.StateSuspending, "suspend", "user", nil)
	m.proc.freeze()
	m.frozen = true
	e.setStateLocked(m, fly.StateSuspended, "suspend", "flyd", nil)
	return jsonResp(http.StatusOK, fly.OKResponse{OK: true})
}

func (e *Emulator) restartMachine(r *http.Request) response {
	q := r.URL.Query()
	var timeout time.Duration
	if s := q.Get("timeout"); s != "" {
		d, err := parseSecondsOrDuration(s)
		if err != nil || d < 0 {
			return errResp(http.StatusBadRequest, fmt.Sprintf("invalid timeout %q", s))
		}
		timeout = d
	}
	signal := q.Get("signal")
	if force, _ := strconv.ParseBool(q.Get("force_stop")); force {
		signal = "SIGKILL"
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	m, resp, ok := e.mutableLocked(r)
	if !ok {
		return resp
	}
	sig, timeout, err := stopParams(&m.config, signal, timeout)
	if err != nil {
		return errResp(http.StatusBadRequest, err.Error())
	}
	if m.proc == nil || (m.state != fly.StateStarted && m.state != fly.StateSuspended) {
		return preconditionf("unable to restart machine from current state: '%s'", m.state)
	}
	e.setStateLocked(m, fly.StateRestarting, "restart", "user", nil)
	e.stopLocked(m, sig, timeout, intentRestart)
	return jsonResp(http.StatusOK, fly.OKResponse{OK: true})
}

func (e *Emulator) signalMachine(r *http.Request) response {
	var req struct {
		Signal json.RawMessage `json:"signal"`
	}
	if resp, ok := decodeBody(r, &req, false); !ok {
		return resp
	}
	raw := strings.Trim(string(req.Signal), `"`)
	name, sig, valid := parseSignal(raw)
	if !valid {
		return errResp(http.StatusBadRequest, fmt.Sprintf("invalid signal %s", req.Signal))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	m, resp, ok := e.mutableLocked(r)
	if !ok {
		return resp
	}
	if m.proc == nil {
		return preconditionf("machine %s has no running process (state %s)", m.id, m.state)
	}
	e.log.Debug("signal machine", "machine", m.id, "signal", name)
	m.proc.signal(sig)
	return jsonResp(http.StatusOK, fly.OKResponse{OK: true})
}

func (e *Emulator) cordon(on bool) func(*http.Request) response {
	return func(r *http.Request) response {
		e.mu.Lock()
		defer e.mu.Unlock()
		m, resp, ok := e.mutableLocked(r)
		if !ok {
			return resp
		}
		m.cordoned = on
		m.touchLocked(time.Now())
		return jsonResp(http.StatusOK, fly.OKResponse{OK: true})
	}
}

func (e *Emulator) destroyMachine(r *http.Request) response {
	q := r.URL.Query()
	force, _ := strconv.ParseBool(q.Get("force"))
	if kill, _ := strconv.ParseBool(q.Get("kill")); kill {
		force = true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	m, resp, ok := e.machineLocked(r)
	if !ok {
		return resp
	}
	if m.state == fly.StateDestroyed || m.state == fly.StateDestroying {
		return jsonResp(http.StatusOK, fly.OKResponse{OK: true})
	}
	if resp, ok := leaseCheckLocked(m, r); !ok {
		return resp
	}
	switch m.state {
	case fly.StateCreated, fly.StateStopped, fly.StateSuspended, fly.StateFailed:
	default:
		if !force {
			return preconditionf("unable to destroy machine, not currently stopped, suspended, or failed (state %s); use force=true", m.state)
		}
	}
	e.destroyLocked(m)
	return jsonResp(http.StatusOK, fly.OKResponse{OK: true})
}

// destroyLocked kills m's process, if any, and destroys it.
func (e *Emulator) destroyLocked(m *machine) {
	if m.state == fly.StateDestroyed {
		return
	}
	e.setStateLocked(m, fly.StateDestroying, "destroy", "user", nil)
	if m.proc != nil {
		m.intent = intentDestroy
		m.proc.kill()
		return
	}
	e.finishDestroyLocked(m)
}

// waitStates are the states wait accepts.
var waitStates = map[string]bool{
	fly.StateStarted: true, fly.StateStopped: true, fly.StateSuspended: true,
	fly.StateDestroyed: true, fly.StateFailed: true, fly.StateSettled: true,
	fly.StateCreated: true,
}

func parseSecondsOrDuration(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(s)
}

func (e *Emulator) waitMachine(r *http.Request) response {
	q := r.URL.Query()
	want := map[string]bool{}
	for _, v := range q["state"] {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			if !waitStates[s] {
				return errResp(http.StatusBadRequest, fmt.Sprintf("invalid state %q: want one of started, stopped, suspended, destroyed, failed, settled", s))
			}
			want[s] = true
		}
	}
	if len(want) == 0 {
		want[fly.StateStarted] = true
	}
	timeout := 60 * time.Second
	if s := q.Get("timeout"); s != "" {
		d, err := parseSecondsOrDuration(s)
		if err != nil {
			return errResp(http.StatusBadRequest, fmt.Sprintf("invalid timeout %q", s))
		}
		timeout = min(max(d, time.Second), 60*time.Second)
	}
	version := q.Get("version")
	if version == "" {
		version = q.Get("instance_id")
	}
	fromEvent := q.Get("from_event_id")
	matches := func(state string) bool {
		return want[state] || (want[fly.StateSettled] && !transient(state))
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		e.mu.Lock()
		m, resp, ok := e.machineLocked(r)
		if !ok {
			e.mu.Unlock()
			return resp
		}
		if version != "" && !slices.Contains(m.versions, version) {
			e.mu.Unlock()
			return errResp(http.StatusBadRequest, fmt.Sprintf("machine %s has no version %q", m.id, version))
		}
		done, state, eventID := false, "", ""
		switch {
		case version != "" && version != m.instanceID:
			// That version was replaced: it is stopped for good.
			if want[fly.StateStopped] || want[fly.StateDestroyed] || want[fly.StateSettled] {
				done, state = true, fly.StateStopped
				if want[fly.StateDestroyed] && !want[fly.StateStopped] {
					state = fly.StateDestroyed
				}
			}
		case fromEvent != "":
			for _, ev := range m.events {
				if ev.ID > fromEvent && matches(ev.state) {
					done, state, eventID = true, ev.state, ev.ID
					break
				}
			}
		default:
			if matches(m.state) {
				done, state = true, m.state
			}
		}
		if done {
			if eventID == "" && len(m.events) > 0 {
				eventID = m.events[len(m.events)-1].ID
			}
			resp := jsonResp(http.StatusOK, fly.WaitResponse{OK: true, State: state, EventID: eventID, Version: m.instanceID})
			e.mu.Unlock()
			return resp
		}
		if m.state == fly.StateDestroyed {
			e.mu.Unlock()
			return errResp(http.StatusBadRequest, fmt.Sprintf("machine %s was destroyed and will not reach the desired state", m.id))
		}
		ch := m.changed
		e.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return errResp(http.StatusRequestTimeout, fmt.Sprintf("deadline_exceeded: machine %s did not reach the desired state within %s", m.id, timeout))
		case <-r.Context().Done():
			return errResp(http.StatusRequestTimeout, "request cancelled")
		case <-e.closing:
			return errResp(http.StatusServiceUnavailable, "emulator is shutting down")
		}
	}
}

func (e *Emulator) listEvents(r *http.Request) response {
	limit := 20
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return errResp(http.StatusBadRequest, fmt.Sprintf("invalid limit %q", s))
		}
		if n > 0 {
			limit = min(n, 50)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	m, resp, ok := e.machineLocked(r)
	if !ok {
		return resp
	}
	return jsonResp(http.StatusOK, m.eventViews(limit))
}

// ---- leases ----

const defaultLeaseTTL = 30 * time.Second

func (e *Emulator) newLeaseLocked(m *machine, nonce string, ttl time.Duration, desc string) *lease {
	if nonce == "" {
		nonce = randomHex(12)
	}
	m.lease = &lease{
		nonce:       nonce,
		expires:     time.Now().Add(ttl),
		owner:       "flyemu@localhost",
		description: desc,
		version:     m.instanceID,
	}
	return m.lease
}

func (e *Emulator) getLease(r *http.Request) response {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, resp, ok := e.machineLocked(r)
	if !ok {
		return resp
	}
	l := m.leaseHeld(time.Now())
	if l == nil {
		return errResp(http.StatusNotFound, fmt.Sprintf("machine %s has no lease", m.id))
	}
	return jsonResp(http.StatusOK, l.view())
}

func (e *Emulator) acquireLease(r *http.Request) response {
	var req fly.CreateLeaseRequest
	if resp, ok := decodeBody(r, &req, true); !ok {
		return resp
	}
	ttlSecs := req.TTL
	if s := r.URL.Query().Get("ttl"); s != "" && ttlSecs == 0 {
		n, err := strconv.Atoi(s)
		if err != nil {
			return errResp(http.StatusBadRequest, fmt.Sprintf("invalid ttl %q", s))
		}
		ttlSecs = n
	}
	if ttlSecs < 0 {
		return errResp(http.StatusBadRequest, fmt.Sprintf("invalid ttl %d", ttlSecs))
	}
	ttl := defaultLeaseTTL
	if ttlSecs > 0 {
		ttl = time.Duration(ttlSecs) * time.Second
	}
	nonce := r.Header.Get(fly.LeaseNonceHeader)
	e.mu.Lock()
	defer e.mu.Unlock()
	m, resp, ok := e.machineLocked(r)
	if !ok {
		return resp
	}
	if m.state == fly.StateDestroyed {
		return errResp(http.StatusNotFound, fmt.Sprintf("machine %q not found (destroyed)", m.id))
	}
	now := time.Now()
	if l := m.leaseHeld(now); l != nil {
		if nonce == "" || nonce != l.nonce {
			resp := errResp(http.StatusConflict, fmt.Sprintf("machine %s is already leased by %s until %s",
				m.id, l.owner, l.expires.UTC().Format(time.RFC3339)))
			return resp
		}
		l.expires = now.Add(ttl)
		if req.Description != "" {
			l.description = req.Description
		}
		return jsonResp(http.StatusCreated, l.view())
	}
	// A refresh of an expired lease nobody else took gets the same nonce back.
	l := e.newLeaseLocked(m, nonce, ttl, req.Description)
	return jsonResp(http.StatusCreated, l.view())
}

func (e *Emulator) releaseLease(r *http.Request) response {
	nonce := r.Header.Get(fly.LeaseNonceHeader)
	if nonce == "" {
		return errResp(http.StatusBadRequest, fmt.Sprintf("the %s header is required", fly.LeaseNonceHeader))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	m, resp, ok := e.machineLocked(r)
	if !ok {
		return resp
	}
	l := m.leaseHeld(time.Now())
	if l == nil {
		return errResp(http.StatusNotFound, fmt.Sprintf("lease not found on machine %s", m.id))
	}
	if l.nonce != nonce {
		return errResp(http.StatusConflict, fmt.Sprintf("machine %s is leased with another nonce", m.id))
	}
	m.lease = nil
	m.touchLocked(time.Now())
	return jsonResp(http.StatusOK, map[string]any{"status": "success", "data": map[string]bool{"ok": true}})
}

// ---- metadata ----

func (e *Emulator) getMetadata(r *http.Request) response {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, resp, ok := e.machineLocked(r)
	if !ok {
		return resp
	}
	md := map[string]string{}
	for k, v := range m.config.Metadata {
		md[k] = v
	}
	return jsonResp(http.StatusOK, md)
}

func (e *Emulator) getMetadataKey(r *http.Request) response {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, resp, ok := e.machineLocked(r)
	if !ok {
		return resp
	}
	key := r.PathValue("key")
	v, found := m.config.Metadata[key]
	if !found {
		return errResp(http.StatusNotFound, fmt.Sprintf("metadata key %q not found", key))
	}
	return jsonResp(http.StatusOK, fly.MetadataValue{Value: v})
}

func (e *Emulator) setMetadataKey(r *http.Request) response {
	var req fly.UpsertMetadataRequest
	if resp, ok := decodeBody(r, &req, false); !ok {
		return resp
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	m, resp, ok := e.mutableLocked(r)
	if !ok {
		return resp
	}
	if m.config.Metadata == nil {
		m.config.Metadata = map[string]string{}
	}
	m.config.Metadata[r.PathValue("key")] = req.Value
	m.touchLocked(time.Now())
	return noContent()
}

func (e *Emulator) deleteMetadataKey(r *http.Request) response {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, resp, ok := e.mutableLocked(r)
	if !ok {
		return resp
	}
	delete(m.config.Metadata, r.PathValue("key"))
	m.touchLocked(time.Now())
	return noContent()
}

// updateMetadata is the batch endpoint: PUT replaces the whole map, PATCH
// merges; a null or empty value deletes a key.
func (e *Emulator) updateMetadata(replace bool) func(*http.Request) response {
	return func(r *http.Request) response {
		if e.cfg.NoBatchMetadata {
			return errResp(http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
		}
		var req fly.UpdateMetadataRequest
		if resp, ok := decodeBody(r, &req, false); !ok {
			return resp
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		m, resp, ok := e.mutableLocked(r)
		if !ok {
			return resp
		}
		if req.MachineVersion != "" && req.MachineVersion != m.instanceID {
			return preconditionf("machine %s is at version %s, not %s", m.id, m.instanceID, req.MachineVersion)
		}
		md := map[string]string{}
		if !replace {
			for k, v := range m.config.Metadata {
				md[k] = v
			}
		}
		for k, v := range req.Metadata {
			if v == nil || *v == "" {
				delete(md, k)
			} else {
				md[k] = *v
			}
		}
		m.config.Metadata = md
		m.touchLocked(time.Now())
		return noContent()
	}
}
