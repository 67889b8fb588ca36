package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// ErrLockBusy: Locks.Lock gave up on a lock another replica kept holding.
var ErrLockBusy = errors.New("lock held elsewhere")

// Locks are named locks held within this process and, through the store's
// TryLeader, across replicas: the session manager counts a tenant's
// sessions under one, a claim counts and clones a pool's machines under
// another, so that racing replicas cannot overshoot a limit. The in-process
// mutex comes first: with SQLite (one replica) TryLeader always grants, and
// with Postgres this process's own goroutines would only poll for it and
// give up after a while; on the mutex they queue.
type Locks struct {
	store Store

	mu    sync.Mutex
	local map[string]*sync.Mutex
}

// NewLocks returns the named locks of st.
func NewLocks(st Store) *Locks {
	return &Locks{store: st, local: map[string]*sync.Mutex{}}
}

// Lock takes lock name, in this process (waiting) and then store-wide
// (retrying briefly: ErrLockBusy when another replica keeps it). release
// gives both up.
func (l *Locks) Lock(ctx context.Context, name string) (release func(), err error) {
	mu := l.localLock(name)
	mu.Lock()
	leader, err := l.leaderLock(ctx, name)
	if err != nil {
		mu.Unlock()
		return nil, err
	}
	return func() { leader(); mu.Unlock() }, nil
}

func (l *Locks) localLock(name string) *sync.Mutex {
	l.mu.Lock()
	defer l.mu.Unlock()
	mu := l.local[name]
	if mu == nil {
		mu = &sync.Mutex{}
		l.local[name] = mu
	}
	return mu
}

// leaderLock takes a store-wide named lock, retrying briefly.
func (l *Locks) leaderLock(ctx context.Context, name string) (func(), error) {
	for i := 0; ; i++ {
		ok, release, err := l.store.TryLeader(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		if ok {
			return release, nil
		}
		if i >= 100 {
			return nil, ErrLockBusy
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(20+rand.IntN(60)) * time.Millisecond):
		}
	}
}
