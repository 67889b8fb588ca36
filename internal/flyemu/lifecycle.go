package flyemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/hangarhq/hangar/internal/fly"
)

// Defaults Fly applies to stops.
const (
	defaultStopSignal  = "SIGINT"
	defaultStopTimeout = 5 * time.Second
	maxStopTimeout     = 300 * time.Second
	defaultMaxRetries  = 10
)

// transient reports whether state is one a machine passes through.
func transient(state string) bool {
	switch state {
	case fly.StateCreated, fly.StateStarted, fly.StateStopped, fly.StateSuspended,
		fly.StateFailed, fly.StateDestroyed:
		return false
	}
	return true
}

// touchLocked wakes everyone waiting on the machine.
func (m *machine) touchLocked(now time.Time) {
	m.updatedAt = now
	close(m.changed)
	m.changed = make(chan struct{})
}

// setStateLocked moves m to state and records the event that did it.
func (e *Emulator) setStateLocked(m *machine, state, typ, source string, req *fly.MachineEventRequest) {
	now := time.Now()
	m.state = state
	m.events = append(m.events, event{state: state, MachineEvent: fly.MachineEvent{
		ID:        e.newULID(),
		Type:      typ,
		Status:    state,
		Source:    source,
		Timestamp: now.UnixMilli(),
		Request:   req,
	}})
	if len(m.events) > 500 {
		m.events = append([]event(nil), m.events[len(m.events)-500:]...)
	}
	m.touchLocked(now)
	e.log.Debug("machine state", "app", m.app.name, "machine", m.id, "state", state, "event", typ)
}

// launchLocked starts a new process for m: starting, then started after the
// boot delay; failed when the process cannot be launched.
func (e *Emulator) launchLocked(m *machine, typ, source string, req *fly.MachineEventRequest) {
	e.setStateLocked(m, fly.StateStarting, typ, source, req)
	if e.closed {
		e.setStateLocked(m, fly.StateFailed, "launch", "flyd", nil)
		return
	}
	spec, err := e.processSpec(m)
	var p *process
	if err == nil {
		p, err = startProcess(spec, &e.procWG, &e.copyWG, func(x exitInfo) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.exitedLocked(m, p, x)
		})
	}
	if err != nil {
		e.log.Warn("machine launch failed", "app", m.app.name, "machine", m.id, "error", err)
		e.setStateLocked(m, fly.StateFailed, "launch", "flyd", nil)
		return
	}
	m.proc = p
	e.launched = append(e.launched, p.pid)
	mode := "process"
	if spec.oci != nil {
		mode = "image"
	}
	// Say how the machine runs: in the log, and in its events (the start
	// event's request, which Fly leaves empty).
	e.log.Info("machine launched", "app", m.app.name, "machine", m.id, "image", m.config.Image, "mode", mode, "pid", p.pid)
	e.log.Debug("machine process started", "app", m.app.name, "machine", m.id, "pid", p.pid, "argv", spec.argv)
	if last := &m.events[len(m.events)-1]; last.Request == nil {
		last.Request = &fly.MachineEventRequest{}
	}
	m.events[len(m.events)-1].Request.Mode = mode
	e.bootLocked(m)
}

// bootLocked reports m started once the boot delay has passed (if it is still
// starting the same process by then).
func (e *Emulator) bootLocked(m *machine) {
	m.gen++
	if e.cfg.BootDelay <= 0 {
		e.setStateLocked(m, fly.StateStarted, "start", "flyd", nil)
		return
	}
	gen := m.gen
	time.AfterFunc(e.cfg.BootDelay, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if !e.closed && m.gen == gen && m.state == fly.StateStarting && m.proc != nil {
			e.setStateLocked(m, fly.StateStarted, "start", "flyd", nil)
		}
	})
}

// resumeLocked continues a suspended process.
func (e *Emulator) resumeLocked(m *machine) {
	e.setStateLocked(m, fly.StateStarting, "start", "user", nil)
	m.proc.signal(syscall.SIGCONT)
	m.frozen = false
	e.bootLocked(m)
}

// stopLocked ends m's process: sig to the group, SIGKILL after timeout. A
// suspended machine is killed at once (its snapshot is discarded). What
// happens after the exit is decided by in.
func (e *Emulator) stopLocked(m *machine, sig syscall.Signal, timeout time.Duration, in intent) {
	p := m.proc
	m.intent = in
	if m.frozen || sig == syscall.SIGKILL {
		p.kill()
	} else {
		p.signal(sig)
	}
	if m.stopTimer != nil {
		m.stopTimer.Stop()
	}
	m.stopTimer = time.AfterFunc(timeout, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if m.proc == p {
			e.log.Debug("stop timeout, killing", "machine", m.id, "pid", p.pid)
			p.kill()
		}
	})
}

// stopParams resolves the signal and timeout of a stop: the request's, else
// the config's stop_config, else Fly's defaults.
func stopParams(cfg *fly.MachineConfig, reqSignal string, reqTimeout time.Duration) (syscall.Signal, time.Duration, error) {
	name := reqSignal
	if name == "" && cfg.StopConfig != nil {
		name = cfg.StopConfig.Signal
	}
	if name == "" {
		name = defaultStopSignal
	}
	canon, sig, ok := parseSignal(name)
	if !ok || !stopSignals[canon] {
		return 0, 0, fmt.Errorf("invalid stop signal %q", name)
	}
	timeout := reqTimeout
	if timeout == 0 && cfg.StopConfig != nil && cfg.StopConfig.Timeout != nil {
		timeout = cfg.StopConfig.Timeout.Duration
	}
	if timeout <= 0 {
		timeout = defaultStopTimeout
	}
	return sig, min(timeout, maxStopTimeout), nil
}

// exitedLocked handles the end of m's process p.
func (e *Emulator) exitedLocked(m *machine, p *process, x exitInfo) {
	if m.proc != p {
		return
	}
	m.proc = nil
	m.frozen = false
	if m.stopTimer != nil {
		m.stopTimer.Stop()
		m.stopTimer = nil
	}
	in := m.intent
	m.intent = intentNone
	ev := &fly.ExitEvent{
		ExitCode:      x.code,
		Signal:        int(x.signal),
		OOMKilled:     x.oom,
		RequestedStop: in != intentNone,
		ExitedAt:      time.Now().UTC().Format(time.RFC3339Nano),
	}
	req := &fly.MachineEventRequest{ExitEvent: ev}
	e.log.Debug("machine process exited", "app", m.app.name, "machine", m.id, "pid", p.pid, "code", x.code, "intent", in)
	if e.closed {
		e.setStateLocked(m, fly.StateDestroyed, "exit", "flyd", req)
		return
	}
	switch in {
	case intentDestroy:
		e.setStateLocked(m, fly.StateDestroying, "exit", "flyd", req)
		e.finishDestroyLocked(m)
	case intentRestart:
		e.launchLocked(m, "restart", "flyd", req)
	case intentMigrate:
		e.moveHostLocked(m, req)
	case intentUpdate:
		if m.skipAfter {
			e.setStateLocked(m, fly.StateStopped, "exit", "flyd", req)
		} else {
			e.launchLocked(m, "update", "flyd", req)
		}
	case intentStop:
		e.setStateLocked(m, fly.StateStopped, "exit", "flyd", req)
		if m.config.AutoDestroy {
			e.finishDestroyLocked(m)
		}
	default:
		if e.shouldRestart(m, x) {
			m.restarts++
			ev.Restarting = true
			req.RestartCount = m.restarts
			e.launchLocked(m, "restart", "flyd", req)
			return
		}
		e.setStateLocked(m, fly.StateStopped, "exit", "flyd", req)
		if m.config.AutoDestroy {
			e.finishDestroyLocked(m)
		}
	}
}

// moveHostLocked starts m again on "another host" after its migration stop:
// a new place on its network (Fly gives a migrated machine a new 6PN
// address), then a new process. Attaching runs a few exec calls, so it runs
// outside the lock; the machine stays stopping meanwhile.
func (e *Emulator) moveHostLocked(m *machine, req *fly.MachineEventRequest) {
	org, network, old := m.app.org, m.app.network, m.net
	e.procWG.Add(1)
	go func() {
		defer e.procWG.Done()
		mn, err := e.net.attach(context.Background(), org, network)
		e.mu.Lock()
		defer e.mu.Unlock()
		if err == nil && (e.closed || m.state != fly.StateStopping || m.proc != nil) {
			// Destroyed (which released the old address) or otherwise moved
			// on while the new host was being set up: the new place has no use.
			e.procWG.Add(1)
			go func() { defer e.procWG.Done(); e.net.detach(context.Background(), mn) }()
			return
		}
		if err != nil {
			e.log.Warn("migration: attach the machine on its new host", "app", m.app.name, "machine", m.id, "error", err)
			e.setStateLocked(m, fly.StateFailed, "migrate", "flyd", req)
			return
		}
		m.net = mn
		e.procWG.Add(1)
		go func() { defer e.procWG.Done(); e.net.detach(context.Background(), old) }()
		e.log.Info("machine migrated; starting on its new host", "app", m.app.name, "machine", m.id, "private_ip", mn.addr)
		e.launchLocked(m, "migrate", "flyd", req)
	}()
}

// shouldRestart applies the restart policy to a process that exited by
// itself. Without a policy Fly uses on-failure.
func (e *Emulator) shouldRestart(m *machine, x exitInfo) bool {
	policy, retries := fly.RestartOnFailure, defaultMaxRetries
	if r := m.config.Restart; r != nil {
		if r.Policy != "" {
			policy = r.Policy
		}
		if r.MaxRetries > 0 {
			retries = r.MaxRetries
		}
	}
	switch policy {
	case fly.RestartAlways:
		return true
	case fly.RestartOnFailure:
		return x.code != 0 && m.restarts < retries
	}
	return false
}

// finishDestroyLocked marks m destroyed and frees what it held.
func (e *Emulator) finishDestroyLocked(m *machine) {
	e.setStateLocked(m, fly.StateDestroyed, "destroy", "flyd", nil)
	m.lease = nil
	delete(e.apis, m.api)
	m.api.close()
	m.api = nil
	if !e.closed {
		// Close removes the whole network at once.
		mn := m.net
		e.procWG.Add(1)
		go func() {
			defer e.procWG.Done()
			e.net.detach(context.Background(), mn)
		}()
	}
	if e.cfg.KeepMachineDirs || e.closed {
		return
	}
	dir := e.MachineDir(m.app.name, m.id)
	e.procWG.Add(1)
	go func() {
		defer e.procWG.Done()
		if err := os.RemoveAll(dir); err != nil {
			e.log.Warn("remove machine dir", "dir", dir, "error", err)
		}
	}()
}

// processSpec resolves what m runs and with which environment.
func (e *Emulator) processSpec(m *machine) (processSpec, error) {
	cfg := &m.config
	stored, inStore, err := e.images.Lookup(cfg.Image)
	if err != nil {
		return processSpec{}, err
	}
	img, mapped := e.image(cfg.Image)
	if inStore {
		img, mapped = stored.asImage(), true
	}
	if !mapped {
		// The agent's default workspace (/workspace) would be shared by every
		// machine on the host; a relative one lands in the machine's dir.
		img = Image{Entrypoint: []string{e.cfg.AgentBinary}, Env: map[string]string{"HANGAR_WORKSPACE": "workspace"}}
	}
	var argv []string
	if cfg.Init != nil && len(cfg.Init.Exec) > 0 {
		argv = cfg.Init.Exec
	} else {
		entry, cmd := img.Entrypoint, img.Cmd
		if cfg.Init != nil && len(cfg.Init.Entrypoint) > 0 {
			entry, cmd = cfg.Init.Entrypoint, nil
		}
		if cfg.Init != nil && len(cfg.Init.Cmd) > 0 {
			cmd = cfg.Init.Cmd
		}
		argv = append(append([]string(nil), entry...), cmd...)
	}
	if len(argv) == 0 {
		return processSpec{}, fmt.Errorf("image %q has no command", cfg.Image)
	}
	dir := e.MachineDir(m.app.name, m.id)
	home, sock := filepath.Join(dir, "home"), m.api.socketPath()
	env := map[string]string{"PATH": os.Getenv("PATH")}
	if inStore {
		// Inside the image: its own PATH and HOME, the socket where Fly has it.
		env = map[string]string{}
		home, sock = stored.home(), flyAPIPath
	}
	if err := os.MkdirAll(home, 0o755); err != nil && !inStore {
		return processSpec{}, fmt.Errorf("create machine dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return processSpec{}, fmt.Errorf("create machine dir: %w", err)
	}
	for k, v := range img.Env {
		env[k] = v
	}
	if !m.skipSecrets {
		for k, s := range m.app.secrets {
			env[k] = s.value
		}
	}
	for k, v := range cfg.Env {
		env[k] = v
	}
	if env["PATH"] == "" {
		env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
	}
	primary := env["PRIMARY_REGION"]
	if primary == "" {
		primary = m.region
	}
	group := cfg.Metadata["fly_process_group"]
	if group == "" {
		group = "app"
	}
	mem := 256
	if cfg.Guest != nil && cfg.Guest.MemoryMB > 0 {
		mem = cfg.Guest.MemoryMB
	}
	ip := m.net.addr.String()
	for k, v := range map[string]string{
		"HOME":                home,
		"FLY_APP_NAME":        m.app.name,
		"FLY_MACHINE_ID":      m.id,
		"FLY_ALLOC_ID":        m.id,
		"FLY_REGION":          m.region,
		"FLY_PRIVATE_IP":      ip,
		"FLY_PUBLIC_IP":       ip,
		"FLY_IMAGE_REF":       cfg.Image,
		"FLY_MACHINE_VERSION": m.instanceID,
		"FLY_PROCESS_GROUP":   group,
		"FLY_VM_MEMORY_MB":    strconv.Itoa(mem),
		"PRIMARY_REGION":      primary,
		EnvFlyAPISocket:       sock,
	} {
		env[k] = v
	}
	list := make([]string, 0, len(env))
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	sort.Strings(list)
	if inStore {
		spec, c, err := e.ociSpecLocked(m, stored, argv, list, mem, dir)
		spec.oci = c
		if err == nil && e.cfg.LogProcessOutput && e.cfg.Logger != nil {
			spec.tee = e.log.Named("machine").With("app", m.app.name, "machine", m.id)
		}
		return spec, err
	}
	spec := processSpec{argv: argv, dir: dir, env: list, logPath: filepath.Join(dir, "machine.log"), netns: m.net.netns}
	if e.cfg.LogProcessOutput && e.cfg.Logger != nil {
		spec.tee = e.log.Named("machine").With("app", m.app.name, "machine", m.id)
	}
	return spec, nil
}
