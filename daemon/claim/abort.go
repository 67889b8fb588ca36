package claim

import (
	"context"

	"github.com/hangarhq/hangar/daemon/store"
)

// abort gives up a claim that failed after taking a machine: the machine is
// destroyed. Its session is the caller's to fail, or, if it was ended
// meanwhile, to end (Failure.Aborted).
func (cl *Claimer) abort(c *claimed) {
	c.stopRenew()
	cl.Destroy(c.app, c.mach.ID, c.nonce)
}

// requeue gives session s back to the line after Fly refused to start its
// claimed machine (cause): the machine is destroyed (the reconciler replaces
// standbys) and the session is pending again, as before the claim. It
// reports false when the session left starting meanwhile (the caller
// aborts as for any failure).
func (cl *Claimer) requeue(ctx context.Context, s *store.Session, c *claimed, cause error) bool {
	c.stopRenew()
	cl.Destroy(c.app, c.mach.ID, c.nonce)
	if _, err := cl.store.UpdateSession(context.WithoutCancel(ctx), s.ID, []store.SessionState{store.StateStarting}, func(cur *store.Session) error {
		cur.State, cur.MachineID, cur.AppName, cur.Region = store.StatePending, "", "", s.Region
		return nil
	}); err != nil {
		return false
	}
	cl.mu.Lock()
	cl.refusedStarts[s.ID]++
	n := cl.refusedStarts[s.ID]
	cl.mu.Unlock()
	cl.log.Warn("Fly refused to start the claimed machine; the session is back in line for another", "session", s.ID, "machine", c.mach.ID, "refused", n, "error", cause)
	return true
}
