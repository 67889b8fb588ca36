// Package health tracks whether this replica can take work: the outcomes of
// the things it depends on (store writes, the Fly API), as its loops see
// them. /readyz and /metrics report the same view.
package health

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// Checks the daemon reports on.
const (
	// CheckDraining: the replica is shutting down.
	CheckDraining = "draining"
	// CheckStoreRead: the readiness probe's own store read.
	CheckStoreRead = "store_read"
	// CheckStoreWrite: the replica's heartbeat, a store write it makes
	// every heartbeat interval.
	CheckStoreWrite = "store_write"
	// CheckFly: the Fly Machines API (degraded only: Fly failing fails
	// every replica alike, so taking one out of rotation would not help).
	CheckFly = "fly"
)

// Problem is one reason the replica is not (fully) ready.
type Problem struct {
	Check  string
	Detail string
	// Degraded problems are reported but leave the replica ready.
	Degraded bool
}

func (p Problem) String() string { return p.Check + ": " + p.Detail }

// Tracker records the latest outcome of each check.
type Tracker struct {
	mu     sync.Mutex
	checks map[string]*state
	now    func() time.Time
}

type state struct {
	okAt, failAt time.Time
	err          error
	// staleAfter, if set, makes the check a problem when it has not
	// succeeded for that long (a loop that stopped running, or hangs).
	staleAfter time.Duration
	degraded   bool
	since      time.Time // when the check was registered
}

// New makes an empty tracker.
func New() *Tracker { return &Tracker{checks: map[string]*state{}, now: time.Now} }

// Expect registers check: it is a problem until it succeeds, and again
// whenever it has not succeeded for staleAfter (0: never stale). degraded
// checks never make the replica unready.
func (t *Tracker) Expect(check string, staleAfter time.Duration, degraded bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.get(check).staleAfter, t.get(check).degraded = staleAfter, degraded
}

func (t *Tracker) get(check string) *state {
	s := t.checks[check]
	if s == nil {
		s = &state{since: t.now()}
		t.checks[check] = s
	}
	return s
}

// Observe records an outcome of check: err nil is a success.
func (t *Tracker) Observe(check string, err error) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.get(check)
	if err == nil {
		s.okAt, s.err = t.now(), nil
		return
	}
	s.failAt, s.err = t.now(), err
}

// Problems lists the checks that are failing now, sorted by check.
func (t *Tracker) Problems() []Problem {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var out []Problem
	for name, s := range t.checks {
		switch {
		case s.err != nil && !s.failAt.Before(s.okAt):
			out = append(out, Problem{Check: name, Detail: fmt.Sprintf("failing since %s: %v", s.failAt.UTC().Format(time.RFC3339), s.err), Degraded: s.degraded})
		case s.staleAfter > 0 && s.okAt.IsZero() && now.Sub(s.since) > s.staleAfter:
			out = append(out, Problem{Check: name, Detail: fmt.Sprintf("no success in the %v since start", now.Sub(s.since).Round(time.Millisecond)), Degraded: s.degraded})
		case s.staleAfter > 0 && !s.okAt.IsZero() && now.Sub(s.okAt) > s.staleAfter:
			out = append(out, Problem{Check: name, Detail: fmt.Sprintf("last success %v ago", now.Sub(s.okAt).Round(time.Millisecond)), Degraded: s.degraded})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Check < out[j].Check })
	return out
}
