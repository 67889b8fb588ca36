package sessions

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/hangarhq/hangar/internal/fly"
)

// machineReadTTL is how long one read of a session's machine answers every
// attach that resolves the session's agent.
const machineReadTTL = time.Second

// machineReads shares reads of a machine among the attaches that resolve
// its agent at once. Fly allows about five reads of one machine a second,
// and the agent's own tunnel admission needs one of them: hundreds of
// viewers (re)attaching to one session, each reading the machine, used up
// that budget and held the agent's redial behind them for tens of seconds.
// Concurrent reads of a machine are one call, and its answer serves for
// machineReadTTL.
type machineReads struct {
	fly Fly
	ttl time.Duration // machineReadTTL; tests change it
	sf  singleflight.Group

	mu   sync.Mutex
	last map[string]machineRead // by app/id
}

type machineRead struct {
	m  *fly.Machine
	at time.Time
}

func newMachineReads(c Fly) *machineReads {
	return &machineReads{fly: c, ttl: machineReadTTL, last: map[string]machineRead{}}
}

// get returns machine id of app as read at most machineReadTTL ago.
func (r *machineReads) get(ctx context.Context, app, id string) (*fly.Machine, error) {
	key := app + "/" + id
	now := time.Now()
	r.mu.Lock()
	if c, ok := r.last[key]; ok && now.Sub(c.at) < r.ttl {
		r.mu.Unlock()
		return c.m, nil
	}
	r.mu.Unlock()
	v, err, _ := r.sf.Do(key, func() (any, error) {
		// The read outlives a caller that gives up: the others wait on it.
		m, err := r.fly.GetMachine(context.WithoutCancel(ctx), app, id)
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		for k, c := range r.last {
			if time.Since(c.at) >= r.ttl {
				delete(r.last, k)
			}
		}
		r.last[key] = machineRead{m: m, at: time.Now()}
		return m, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*fly.Machine), nil
}
