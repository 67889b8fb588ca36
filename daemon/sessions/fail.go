package sessions

import (
	"context"
	"time"

	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/fly"
)

// fail marks a live session failed with reason and destroys its machine.
// mach may be nil; then s.MachineID is destroyed, if any.
func (m *Manager) fail(ctx context.Context, s *store.Session, mach *fly.Machine, nonce, reason string) {
	m.failFrom(ctx, s, liveStates, mach, nonce, reason)
}

// failFrom is fail, but only while the session is in one of from and still
// has the owner s had when it was read: a replica working from a stale read
// must not fail a session another replica took over or is ending.
func (m *Manager) failFrom(ctx context.Context, s *store.Session, from []store.SessionState, mach *fly.Machine, nonce, reason string) {
	now := time.Now()
	s2, err := m.store.UpdateSession(ctx, s.ID, from, func(cur *store.Session) error {
		if cur.Owner != s.Owner {
			return store.ErrStateChanged
		}
		cur.State, cur.Reason, cur.EndedAt = store.StateFailed, reason, &now
		return nil
	})
	m.claims.Forget(s.ID)
	id := s.MachineID
	if mach != nil {
		id = mach.ID
	}
	if err == nil {
		id = firstNonEmpty(id, s2.MachineID)
	}
	// Only the one that failed the session may destroy its machine (unless
	// the caller holds the machine itself): a lost race means someone else
	// owns it now.
	if err == nil || mach != nil {
		m.claims.Destroy(firstNonEmpty(s.AppName, appOf(s2)), id, nonce)
	}
	if err == nil {
		m.log.Warn("session failed", "session", s.ID, "reason", reason)
		m.finished(s2)
	}
}

func appOf(s *store.Session) string {
	if s == nil {
		return ""
	}
	return s.AppName
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// settleAborted settles a session whose claim failed after it took a
// machine (which the claimer destroyed): ended if it was ended meanwhile,
// else failed with reason. It uses a context of its own: the claim's may
// have ended (a shutdown past its grace), and the session must not be left
// starting.
func (m *Manager) settleAborted(id, reason string) {
	bg := context.Background()
	if m.settleEnding(bg, id, nil) {
		return
	}
	s, err := m.store.GetSession(bg, id)
	if err != nil {
		return
	}
	m.fail(bg, s, nil, "", reason)
}

// settleEnding finishes a session that was ended while its claim ran: it is
// marked ended (its machine, if any, is already destroyed). It reports
// whether the session was in state ending.
func (m *Manager) settleEnding(ctx context.Context, id string, push *store.Push) bool {
	now := time.Now()
	s, err := m.store.UpdateSession(ctx, id, []store.SessionState{store.StateEnding}, func(s *store.Session) error {
		s.State, s.EndedAt, s.Push = store.StateEnded, &now, push
		return nil
	})
	if err != nil {
		return false
	}
	m.claims.Forget(id)
	m.finished(s)
	return true
}
