package claim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
)

// standbyViewTTL is how long one listing of a pool's standbys serves the
// claims of this replica. Fly allows one list per app per second (bursts of
// 3) for the whole organisation; listing per claim made that the ceiling of
// claims per pool. Within the TTL claims take from the view and strike what
// they took, so each standby is tried by one claim here; a claim that finds
// the view empty clones (which counts the pool afresh under its lock).
//
// An older view (up to standbyViewMaxAge, e.g. the reconciler's last
// listing, fed in with Claimer.ObserveStandbys) is still tried first: a
// claim verifies its candidate under the lease anyway, and listing again
// would wait for the app's listing budget (up to a second when the
// reconciler just took it). Only when the old view yields nothing is the
// app listed again.
const (
	standbyViewTTL    = 2 * time.Second
	standbyViewMaxAge = 30 * time.Second
)

// standbyViews is the replica's per-pool view of claimable standbys.
type standbyViews struct {
	fly Fly
	sf  singleflight.Group

	mu    sync.Mutex
	views map[string]*standbyView // by app
}

type standbyView struct {
	readAt   time.Time
	machines []*fly.Machine // not yet taken by a claim of this replica
}

func newStandbyViews(f Fly) *standbyViews {
	return &standbyViews{fly: f, views: map[string]*standbyView{}}
}

// next takes one standby from the pool's view: among those accepted by
// keep, one of the lowest rank, at random (so that replicas racing for the
// same pool mostly try different machines), struck from the view so that no
// other claim of this replica tries it. The view is read again once it is
// older than standbyViewTTL and yields nothing, or older than
// standbyViewMaxAge (one read at a time per app). nil: none left.
func (v *standbyViews) next(ctx context.Context, app, poolName string, keep func(*fly.Machine) bool, rank func(*fly.Machine) int) (*fly.Machine, error) {
	v.mu.Lock()
	cur := v.views[app]
	age := time.Duration(-1)
	if cur != nil {
		age = time.Since(cur.readAt)
	}
	v.mu.Unlock()
	if age < 0 || age >= standbyViewMaxAge {
		if err := v.list(ctx, app, poolName); err != nil {
			return nil, err
		}
	} else if age >= standbyViewTTL {
		// An old view: take from it if it has one, else list afresh.
		if m := v.take(app, keep, rank); m != nil {
			return m, nil
		}
		if err := v.list(ctx, app, poolName); err != nil {
			return nil, err
		}
	}
	return v.take(app, keep, rank), nil
}

// list reads the pool's standbys into the view (one read at a time per app).
func (v *standbyViews) list(ctx context.Context, app, poolName string) error {
	_, err, _ := v.sf.Do(app, func() (any, error) {
		at := time.Now()
		ms, err := v.fly.ListMachines(ctx, app, fly.ListMachinesOptions{Metadata: map[string]string{pool.KeyPool: poolName, pool.KeyRole: pool.RoleStandby}})
		if err != nil {
			return nil, fmt.Errorf("list standbys of %s: %w", app, err)
		}
		v.update(app, poolName, ms, at)
		return nil, nil
	})
	return err
}

// take strikes the best candidate from the view and returns it (nil: none).
func (v *standbyViews) take(app string, keep func(*fly.Machine) bool, rank func(*fly.Machine) int) *fly.Machine {
	v.mu.Lock()
	defer v.mu.Unlock()
	cur := v.views[app]
	if cur == nil {
		return nil
	}
	best, n := -1, 0
	for i, m := range cur.machines {
		if !keep(m) {
			continue
		}
		switch {
		case best < 0 || rank(m) < rank(cur.machines[best]):
			best, n = i, 1
		case rank(m) == rank(cur.machines[best]):
			n++
			if rand.IntN(n) == 0 { // reservoir sampling among equals
				best = i
			}
		}
	}
	if best < 0 {
		return nil
	}
	m := cur.machines[best]
	cur.machines = append(cur.machines[:best:best], cur.machines[best+1:]...)
	return m
}

// update replaces the view of app with the pool's standbys in ms, a listing
// of the app made at at (any listing: a clone counting the pool's machines
// feeds the view too, so that claims need no list of their own while
// clones happen).
func (v *standbyViews) update(app, poolName string, ms []fly.Machine, at time.Time) {
	view := &standbyView{readAt: at}
	for i := range ms {
		if pool.IsStandby(&ms[i]) && pool.MetadataOf(&ms[i])[pool.KeyPool] == poolName {
			view.machines = append(view.machines, &ms[i])
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur := v.views[app]; cur != nil && cur.readAt.After(at) {
		return // a newer view is there already
	}
	v.views[app] = view
}

// ObserveStandbys feeds a listing of the pool's standbys made at at (by the
// reconciler, which lists every pool's app each round) into the view the
// replica's claims take standbys from, so that a claim finds them without
// a listing of its own.
func (cl *Claimer) ObserveStandbys(app, poolName string, standbys []*fly.Machine, at time.Time) {
	ms := make([]fly.Machine, 0, len(standbys))
	for _, sb := range standbys {
		ms = append(ms, *sb)
	}
	cl.standbys.update(app, poolName, ms, at)
}
