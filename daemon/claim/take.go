package claim

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hangarhq/hangar/daemon/poolcache"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
)

// leaseStandby takes a standby of the right template under its Fly lease,
// marks the session claiming and the machine a session machine. (nil, nil)
// means there is none.
func (cl *Claimer) leaseStandby(ctx context.Context, s *store.Session, p *poolcache.Pool, tmpl *pool.Template, regions []string) (*claimed, error) {
	rank := map[string]int{}
	for i, r := range regions {
		rank[r] = i + 1
	}
	keep := func(mm *fly.Machine) bool {
		return claimable(mm) && pool.TenantImageOf(mm) == s.TenantImage && pool.SpecHashOf(mm) == tmpl.Hash && rank[mm.Region] != 0
	}
	// Candidates come from the replica's view of the pool, not a list per
	// claim: Fly allows about one list per app per second.
	for {
		cand, err := cl.standbys.next(ctx, p.App, p.Name, keep, func(mm *fly.Machine) int { return rank[mm.Region] })
		if err != nil {
			return nil, err
		}
		if cand == nil {
			return nil, nil
		}
		if cand.HostUnreachable() {
			// Fly cannot act on it until its host is back; the reconciler
			// reports it.
			cl.log.Warn("standby's host is unreachable; trying another", "session", s.ID, "machine", cand.ID, "host_status", cand.HostStatus)
			continue
		}
		lease, err := cl.fly.AcquireLease(ctx, p.App, cand.ID, leaseTTL, "hangar claim "+s.ID)
		if err != nil {
			if !errors.Is(err, fly.ErrConflict) && !errors.Is(err, fly.ErrNotFound) {
				cl.log.Debug("lease standby", "machine", cand.ID, "error", err)
			}
			continue
		}
		c := &claimed{app: p.App, nonce: lease.Nonce()}
		// Under the lease, re-read: someone may have claimed it just before.
		mach, err := cl.fly.GetMachine(ctx, p.App, cand.ID)
		if err != nil || !claimable(mach) {
			cl.release(c.app, cand.ID, c.nonce)
			continue
		}
		c.mach = mach
		if _, err := cl.store.UpdateSession(ctx, s.ID, []store.SessionState{store.StatePending}, func(s *store.Session) error {
			s.State, s.MachineID, s.AppName, s.Region = store.StateClaiming, mach.ID, p.App, mach.Region
			return nil
		}); err != nil {
			cl.release(c.app, mach.ID, c.nonce)
			return nil, err
		}
		role, sid := pool.RoleSession, s.ID
		if err := cl.fly.UpdateMetadata(ctx, p.App, mach.ID, fly.UpdateMetadataRequest{Metadata: map[string]*string{pool.KeyRole: &role, pool.KeySession: &sid}}, c.nonce); err != nil {
			// The machine is still a standby; give it back and try again later.
			cl.release(c.app, mach.ID, c.nonce)
			// If this fails the claim stays claiming; ready_timeout fails it.
			_, _ = cl.store.UpdateSession(ctx, s.ID, []store.SessionState{store.StateClaiming}, func(s *store.Session) error {
				s.State, s.MachineID, s.Region = store.StatePending, "", ""
				return nil
			})
			return nil, fmt.Errorf("mark machine %s as session: %w", mach.ID, err)
		}
		return c, nil
	}
}

// adoptLost looks for a machine made for session s by a create whose
// answer was lost (Fly acted, the answer never came) and claims it, rather
// than taking another and leaving that one running for the reaper. (nil,
// nil) means there is none.
func (cl *Claimer) adoptLost(ctx context.Context, s *store.Session, app string) (*claimed, error) {
	ms, err := cl.fly.ListMachines(ctx, app, fly.ListMachinesOptions{Metadata: map[string]string{pool.KeySession: s.ID}})
	if err != nil {
		return nil, fmt.Errorf("look for the machine of a create whose answer was lost: %w", err)
	}
	cl.mu.Lock()
	delete(cl.lostCreate, s.ID)
	cl.mu.Unlock()
	for i := range ms {
		mm := &ms[i]
		if !pool.IsSession(mm) || mm.State == fly.StateDestroyed || mm.State == fly.StateDestroying {
			continue
		}
		c := &claimed{app: app, mach: mm, launched: mm.State == fly.StateStarting || mm.State == fly.StateStarted}
		if _, err := cl.store.UpdateSession(ctx, s.ID, []store.SessionState{store.StatePending}, func(s *store.Session) error {
			s.State, s.AppName, s.MachineID, s.Region = store.StateClaiming, app, mm.ID, mm.Region
			return nil
		}); err != nil {
			cl.Destroy(app, mm.ID, "")
			return nil, err
		}
		cl.log.Info("adopted the machine of a create whose answer was lost", "session", s.ID, "machine", mm.ID)
		return c, nil
	}
	return nil, nil
}

// claimable: a standby that can be started.
func claimable(mm *fly.Machine) bool {
	if !pool.IsStandby(mm) {
		return false
	}
	switch mm.State {
	case fly.StateCreated, fly.StateStopped, fly.StateSuspended:
		return true
	}
	return false
}

func (cl *Claimer) release(app, id, nonce string) {
	if nonce == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.fly.ReleaseLease(ctx, app, id, nonce); err != nil && !errors.Is(err, fly.ErrNotFound) {
		cl.log.Debug("release lease", "machine", id, "error", err)
	}
}

// cloneMachine creates a session machine from the template while the pool
// is under max_machines, trying the next region on insufficient capacity.
// Counting and creating run under a per-pool lock (in-process and, with
// Postgres, across replicas) so that racing replicas don't overshoot.
func (cl *Claimer) cloneMachine(ctx context.Context, s *store.Session, p *poolcache.Pool, tmpl *pool.Template, regions []string) (*claimed, error) {
	release, err := cl.locks.Lock(ctx, "clone:"+p.Name)
	if errors.Is(err, store.ErrLockBusy) {
		return nil, ErrWait // another replica is cloning for the pool
	}
	if err != nil {
		return nil, err
	}
	defer release()

	listedAt := time.Now()
	ms, err := cl.fly.ListMachines(ctx, p.App, fly.ListMachinesOptions{Metadata: map[string]string{pool.KeyPool: p.Name}})
	if err != nil {
		return nil, fmt.Errorf("count machines of %s: %w", p.App, err)
	}
	cl.standbys.update(p.App, p.Name, ms, listedAt)
	n := 0
	for i := range ms {
		if (pool.IsStandby(&ms[i]) || pool.IsSession(&ms[i])) && ms[i].State != fly.StateDestroyed && ms[i].State != fly.StateDestroying {
			n++
		}
	}
	maxM := p.Spec().MaxMachines
	if maxM > 0 && n >= maxM {
		return nil, ErrWait
	}
	cfg, err := pool.CloneConfig(tmpl.Machine, pool.RoleSession, s.ID)
	if err != nil {
		return nil, fmt.Errorf("clone template: %w", err)
	}
	// The session stays pending (in line) until a machine exists: a failed
	// attempt leaves no trace in its state.
	var lastErr error
	for _, region := range regions {
		mach, err := cl.fly.CreateMachine(ctx, p.App, fly.CreateMachineRequest{Config: cfg, Region: region, LeaseTTL: int(leaseTTL / time.Second)})
		if err != nil {
			lastErr = err
			if !permanent(err) {
				// Fly may have made it and lost the answer: the next
				// attempt looks for it before taking anything else.
				cl.mu.Lock()
				cl.lostCreate[s.ID] = true
				cl.mu.Unlock()
			}
			if errors.Is(err, fly.ErrInsufficientCapacity) {
				cl.log.Info("no capacity in region; trying the next", "session", s.ID, "region", region)
				continue
			}
			break
		}
		c := &claimed{app: p.App, mach: mach, nonce: mach.Nonce, launched: true}
		if _, err := cl.store.UpdateSession(ctx, s.ID, []store.SessionState{store.StatePending}, func(s *store.Session) error {
			s.State, s.AppName, s.MachineID, s.Region = store.StateClaiming, p.App, mach.ID, mach.Region
			return nil
		}); err != nil {
			// Ended while the machine was being made: it has no use.
			cl.Destroy(c.app, mach.ID, c.nonce)
			return nil, err
		}
		return c, nil
	}
	if errors.Is(lastErr, fly.ErrInsufficientCapacity) {
		return nil, ErrWait
	}
	return nil, fmt.Errorf("create session machine: %w", lastErr)
}

// permanent reports whether a Fly error will not go away by retrying (a
// 4xx other than timeouts, conflicts and rate limits).
func permanent(err error) bool {
	st := fly.StatusCode(err)
	return st >= 400 && st < 500 && st != 408 && st != 409 && st != 429
}
