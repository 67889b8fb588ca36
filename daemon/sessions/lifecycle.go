package sessions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hangarhq/hangar/daemon/health"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
)

var liveStates = []store.SessionState{store.StatePending, store.StateClaiming, store.StateStarting, store.StateReady, store.StateEnding}

// startFinish runs finish for an ending session in the background, once per replica.
func (m *Manager) startFinish(s *store.Session) {
	m.mu.Lock()
	if m.ending[s.ID] {
		m.mu.Unlock()
		return
	}
	m.ending[s.ID] = true
	m.mu.Unlock()
	m.work.Add(1)
	go func() {
		defer m.work.Done()
		defer func() {
			m.mu.Lock()
			delete(m.ending, s.ID)
			m.mu.Unlock()
		}()
		m.finish(m.workCtx, s)
	}()
}

// finish asks the agent to commit and push, records the result, destroys
// the machine and marks the session ended.
func (m *Manager) finish(ctx context.Context, s *store.Session) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var push *store.Push
	if s.MachineID != "" {
		push = &store.Push{Ref: "refs/heads/" + s.SessionBranch}
		mach, err := m.fly.GetMachine(ctx, s.AppName, s.MachineID)
		switch {
		case err != nil:
			push.Message = "the machine is gone; nothing was pushed"
		case mach.State != fly.StateStarted:
			push.Message = fmt.Sprintf("the machine is %s; nothing was pushed", mach.State)
		default:
			req := &agentapi.FinishRequest{Message: "hangar session " + s.ID}
			if s.GitAuthorName != "" {
				req.Author = &agentapi.GitAuthor{Name: s.GitAuthorName, Email: s.GitAuthorEmail}
			}
			fr, err := m.agentClient(ctx, s, mach).Finish(ctx, s.ID, req)
			if err != nil {
				push.Message = "finish failed: " + agentapi.Describe(err).Error()
			} else {
				push = &store.Push{Ref: fr.Ref, Commit: fr.Commit, OK: fr.OK, Message: fr.Message}
			}
		}
		m.claims.Destroy(s.AppName, s.MachineID, "")
	}
	now := time.Now()
	cost := m.Cost(ctx, s, now)
	s2, err := m.store.UpdateSession(context.Background(), s.ID, []store.SessionState{store.StateEnding}, func(s *store.Session) error {
		s.State, s.EndedAt, s.Push, s.CostUSD = store.StateEnded, &now, push, cost
		return nil
	})
	if err != nil {
		m.log.Warn("mark session ended", "session", s.ID, "error", err)
		return
	}
	m.log.Info("session ended", "session", s.ID, "reason", s2.Reason, "pushed", push != nil && push.OK)
	m.finished(s2)
}

func (m *Manager) sweepLoop(ctx context.Context) {
	t := time.NewTicker(m.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.Sweep(ctx)
	}
}

// Sweep checks this replica's ready sessions for TTL, idle timeout, process
// exit and a vanished machine, and resumes ends left half-done.
func (m *Manager) Sweep(ctx context.Context) {
	ready, err := m.store.ListSessions(ctx, store.SessionFilter{Owner: m.cfg.DaemonID, States: []store.SessionState{store.StateReady}})
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("sweep: list sessions", "error", err)
		}
		return
	}
	tenants := map[string]*store.Tenant{}
	for _, s := range ready {
		if ctx.Err() != nil {
			return
		}
		t, ok := tenants[s.TenantID]
		if !ok {
			t, _ = m.store.GetTenant(ctx, s.TenantID)
			tenants[s.TenantID] = t
		}
		m.check(ctx, s, t)
	}
	ending, err := m.store.ListSessions(ctx, store.SessionFilter{Owner: m.cfg.DaemonID, States: []store.SessionState{store.StateEnding}})
	if err != nil {
		return
	}
	for _, s := range ending {
		m.mu.Lock()
		busy := m.inflight[s.ID]
		m.mu.Unlock()
		if !busy {
			m.startFinish(s)
		}
	}
}

// check ends one ready session if its time is up, it is idle, or its process exited.
func (m *Manager) check(ctx context.Context, s *store.Session, t *store.Tenant) {
	var ttl, idle time.Duration
	if p, err := m.cfg.Pools.Get(ctx, s.Pool); err == nil {
		if tm := p.Template(s.TenantImage); tm != nil {
			ttl, idle = tm.Spec.SessionTTL, tm.Spec.IdleTimeout
		}
	}
	ttl = EffectiveTTL(ttl, t)
	since := s.CreatedAt
	if s.ReadyAt != nil {
		since = *s.ReadyAt
	}
	now := time.Now()
	if ttl > 0 && now.Sub(since) > ttl {
		m.endBy(ctx, s, fmt.Sprintf("the session reached its maximum duration of %v", ttl))
		return
	}
	mach, err := m.fly.GetMachine(ctx, s.AppName, s.MachineID)
	if err == nil && mach.State == fly.StateStopping {
		// Fly is stopping it (a migration, say): the agent is pushing its
		// last checkpoint; destroying the machine now would cut that off.
		// The next sweep sees where it went.
		return
	}
	if errors.Is(err, fly.ErrNotFound) || (err == nil && mach.State != fly.StateStarted && mach.State != fly.StateStarting) {
		state := "gone"
		if err == nil {
			state = mach.State
		}
		reason := fmt.Sprintf("the session's machine %s is %s%s", s.MachineID, state, pushedOnStop(s))
		if err == nil && oomKilled(mach) {
			// Fly reports the kernel's OOM kill in the exit event: say so,
			// since the cure (a bigger guest) is the tenant's to choose. No
			// checkpoint claim: a SIGKILL gives the agent no chance to push.
			mem := 0
			if mach.Config != nil && mach.Config.Guest != nil {
				mem = mach.Config.Guest.MemoryMB
			}
			reason = fmt.Sprintf("the session's machine %s ran out of memory (%d MB) and was stopped", s.MachineID, mem)
		}
		m.failFrom(ctx, s, []store.SessionState{store.StateReady}, nil, "", reason)
		return
	}
	if err != nil {
		m.log.Debug("sweep: get machine", "session", s.ID, "error", err)
		return
	}
	if mach.HostUnreachable() {
		// Not lost: Fly cannot reach the host now; the session goes on
		// once it is back (or its TTL ends it). Its reason says so.
		m.log.Warn("session's machine is on an unreachable host", "session", s.ID, "machine", mach.ID, "host_status", mach.HostStatus)
		m.setNotice(ctx, s, fmt.Sprintf("%s (machine %s, host_status %q); the session goes on when the host is back", unreachableNotice, mach.ID, mach.HostStatus))
		return
	}
	m.setNotice(ctx, s, "")
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	st, err := m.agentClient(ctx, s, mach).Status(sctx, s.ID)
	cancel()
	if err != nil {
		m.log.Debug("sweep: agent status", "session", s.ID, "error", err)
		return
	}
	if st.State == agentapi.StateIdle {
		// A fresh agent on the session's machine: Fly stopped and started it
		// again (a host migration, or a host reboot), which ends the session.
		m.failFrom(ctx, s, []store.SessionState{store.StateReady}, nil, "", fmt.Sprintf(
			"the session's machine %s was restarted by Fly (a host migration?), which ends the session%s", s.MachineID, pushedOnStop(s)))
		return
	}
	if st.State == agentapi.StateExited || st.State == agentapi.StateFinished {
		reason := "the process exited"
		if st.ExitCode != nil {
			reason = fmt.Sprintf("the process exited with code %d", *st.ExitCode)
		}
		if st.OOMKilled {
			mem := 0
			if mach.Config != nil && mach.Config.Guest != nil {
				mem = mach.Config.Guest.MemoryMB
			}
			reason = fmt.Sprintf("the process ran out of memory: the machine's out-of-memory killer ended it (the machine has %d MB; a pool with a larger guest avoids this)", mem)
		}
		m.endBy(ctx, s, reason)
		return
	}
	if idle > 0 {
		last := since
		for _, ts := range []*time.Time{st.LastInputAt, st.LastOutputAt} {
			if ts != nil && ts.After(last) {
				last = *ts
			}
		}
		if now.Sub(last) > idle {
			m.endBy(ctx, s, fmt.Sprintf("the session was idle for more than %v", idle))
		}
	}
}

// unreachableNotice starts the reason of a ready session whose machine's
// host Fly cannot reach.
const unreachableNotice = "Fly cannot reach the host of the session's machine"

// setNotice sets the reason of ready session s to notice (what is wrong with
// it now; "" when nothing is), unless it says that already. A ready
// session's reason is only ever such a notice: ending replaces it.
func (m *Manager) setNotice(ctx context.Context, s *store.Session, notice string) {
	if s.Reason == notice {
		return
	}
	if _, err := m.store.UpdateSession(ctx, s.ID, []store.SessionState{store.StateReady}, func(cur *store.Session) error {
		cur.Reason = notice
		return nil
	}); err != nil && !errors.Is(err, store.ErrStateChanged) {
		m.log.Warn("record the session's notice", "session", s.ID, "error", err)
	}
}

func (m *Manager) endBy(ctx context.Context, s *store.Session, reason string) {
	if _, err := m.End(ctx, "", s.ID, reason); err != nil && !errors.Is(err, ErrWrongState) {
		m.log.Warn("end session", "session", s.ID, "error", err)
	}
}

func (m *Manager) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(m.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		err := m.store.Heartbeat(ctx, m.cfg.DaemonID, time.Now())
		if ctx.Err() == nil {
			// A failing heartbeat means the store cannot be written: this
			// replica cannot take work, and readiness says so.
			m.cfg.Health.Observe(health.CheckStoreWrite, err)
			if err != nil {
				m.log.Warn("heartbeat", "error", err)
			}
		}
		m.TakeOver(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// TakeOver handles replicas that stopped heartbeating: their claims that
// never became ready fail (the credentials died with them) and their
// machines are destroyed; their ready and ending sessions move to this
// replica, which then enforces their TTL and finishes their ends.
func (m *Manager) TakeOver(ctx context.Context) {
	dead, err := m.store.DeadDaemons(ctx, time.Now().Add(-m.cfg.DeadAfter))
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("list dead replicas", "error", err)
		}
		return
	}
	for _, d := range dead {
		if d == m.cfg.DaemonID {
			continue
		}
		ss, err := m.store.ListSessions(ctx, store.SessionFilter{Owner: d, States: liveStates})
		if err != nil {
			m.log.Warn("list sessions of dead replica", "daemon", d, "error", err)
			continue
		}
		for _, s := range ss {
			switch s.State {
			case store.StatePending, store.StateClaiming, store.StateStarting:
				m.failFrom(ctx, s, []store.SessionState{store.StatePending, store.StateClaiming, store.StateStarting}, nil, "", fmt.Sprintf("the daemon replica %s that accepted this session stopped before the session was ready; its credentials were held only there; create a new session", d))
			case store.StateReady, store.StateEnding:
				s2, err := m.store.UpdateSession(ctx, s.ID, []store.SessionState{store.StateReady, store.StateEnding}, func(x *store.Session) error {
					if x.Owner != d {
						return store.ErrStateChanged
					}
					x.Owner = m.cfg.DaemonID
					return nil
				})
				if err == nil {
					m.log.Info("took over session from dead replica", "session", s.ID, "daemon", d)
					if s2.State == store.StateEnding {
						m.startFinish(s2)
					}
				}
			}
		}
		if err := m.store.ForgetDaemon(ctx, d); err != nil {
			m.log.Warn("forget dead replica", "daemon", d, "error", err)
		} else {
			m.log.Info("forgot dead replica", "daemon", d)
		}
	}
}

// CountByState counts live sessions by state (for metrics).
func (m *Manager) CountByState(ctx context.Context) (map[string]int, error) {
	ss, err := m.store.ListSessions(ctx, store.SessionFilter{States: liveStates})
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, st := range liveStates {
		out[string(st)] = 0
	}
	for _, s := range ss {
		out[string(s.State)]++
	}
	return out, nil
}

// SettleOwnClaims fails the claims a previous process of this replica (the
// same DaemonID) left before they were ready: their credentials died with
// it, so they can never finish. Their machines are destroyed, now or, while
// the dead claim's short Fly lease still holds them, by the destroy loop. A
// clone made just before the crash may not be recorded on its session yet:
// it is found by its metadata. Ready and ending sessions need nothing: this
// replica's sweep goes on with them.
func (m *Manager) SettleOwnClaims(ctx context.Context) {
	ss, err := m.store.ListSessions(ctx, store.SessionFilter{Owner: m.cfg.DaemonID, States: []store.SessionState{store.StatePending, store.StateClaiming, store.StateStarting}})
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("list claims left by this replica's previous process", "error", err)
		}
		return
	}
	for _, s := range ss {
		m.mu.Lock()
		mine := m.inflight[s.ID] || m.claims.Holds(s.ID)
		m.mu.Unlock()
		if mine {
			continue // this process's own (Run called late); not a leftover
		}
		m.log.Info("settling a claim left by this replica's previous process", "session", s.ID, "state", s.State, "machine", s.MachineID)
		m.destroySessionMachines(ctx, s)
		m.failFrom(ctx, s, []store.SessionState{store.StatePending, store.StateClaiming, store.StateStarting}, nil, "",
			fmt.Sprintf("the daemon replica %s that accepted this session restarted before the session was ready; its credentials were held only in the process that died; create a new session", m.cfg.DaemonID))
	}
}

// destroySessionMachines destroys the machines made for a claim that never
// recorded one: a clone created just before a crash carries the session in
// its metadata only.
func (m *Manager) destroySessionMachines(ctx context.Context, s *store.Session) {
	if s.MachineID != "" || s.AppName == "" {
		return
	}
	ms, err := m.fly.ListMachines(ctx, s.AppName, fly.ListMachinesOptions{Metadata: map[string]string{pool.KeySession: s.ID}})
	if err != nil {
		m.log.Warn("look for the machines of a claim left behind; the reaper's grace is left", "session", s.ID, "error", err)
		return
	}
	for i := range ms {
		if ms[i].State != fly.StateDestroyed && ms[i].State != fly.StateDestroying {
			m.claims.Destroy(s.AppName, ms[i].ID, "")
		}
	}
}

// pushedOnStop tells where the agent put the work when Fly stopped the
// machine: on a stop signal it pushes a last checkpoint (within the
// stop_config timeout clones get) before it exits.
func pushedOnStop(s *store.Session) string {
	if s.Repo == "" {
		return ""
	}
	return "; work in progress was pushed to refs/hangar/checkpoints/" + s.ID + " when the machine was stopped"
}

// oomKilled reports whether the machine's last exit was an OOM kill (its
// events are newest first).
func oomKilled(mach *fly.Machine) bool {
	for _, ev := range mach.Events {
		if ev.Request != nil && ev.Request.ExitEvent != nil {
			return ev.Request.ExitEvent.OOMKilled
		}
	}
	return false
}
