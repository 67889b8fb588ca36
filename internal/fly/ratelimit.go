package fly

import (
	"context"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limit is one of Fly's published Machines API rate limits: Rate requests
// per second sustained, bursts of Burst.
type Limit struct {
	Rate  rate.Limit
	Burst int
}

// Fly's published Machines API limits (docs machines/api/working-with-machines-api):
// per action and per identifier (machine, else app), 1 request/s with bursts
// of 3; getting a machine 5/s with bursts of 10; listing machines is per
// app; app deletions 100 per minute.
var (
	// DefaultLimit is every action's limit but the ones below.
	DefaultLimit = Limit{Rate: 1, Burst: 3}
	// GetMachineLimit is the limit of getting one machine.
	GetMachineLimit = Limit{Rate: 5, Burst: 10}
	// AppDeleteLimit is the limit of app deletions (per organisation; Fly
	// publishes no burst, so a small one is assumed).
	AppDeleteLimit = Limit{Rate: rate.Limit(100.0 / 60), Burst: 10}
)

// limitActions folds the client's action names onto Fly's buckets where one
// Fly action has several client calls (a lease refresh is a lease acquire
// with a nonce; cordon and uncordon are one action).
var limitActions = map[string]string{
	"lease_refresh":    "lease_acquire",
	"metadata_get_key": "metadata_get",
	"machine_uncordon": "machine_cordon",
	"secrets_list":     "secret_list",
	"secrets_update":   "secret_update",
}

// LimitKey returns the rate bucket of a call (action as the client and the
// emulator name it, on app and machine, either may be empty) and its limit.
// Calls with the same key share one budget on Fly.
func LimitKey(action, app, machine string) (string, Limit) {
	if a, ok := limitActions[action]; ok {
		action = a
	}
	switch action {
	case "machine_get":
		return action + "/" + app + "/" + machine, GetMachineLimit
	case "app_delete":
		// Counted per organisation, not per app.
		return action, AppDeleteLimit
	case "app_create", "app_list":
		return action, DefaultLimit
	}
	if machine != "" {
		return action + "/" + app + "/" + machine, DefaultLimit
	}
	return action + "/" + app, DefaultLimit
}

// requestTarget reads the app and machine a request path names
// (/apps/{app}[/machines/{id}[/...]]).
func requestTarget(path string) (app, machine string) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(parts) >= 2 && parts[0] == "apps" {
		app = parts[1]
	}
	if len(parts) >= 4 && parts[2] == "machines" {
		machine = parts[3]
	}
	return app, machine
}

// Pacer hands out Fly's rate budget. Reserve takes one request's token from
// the bucket key (whose limit is l) and returns how long the caller must wait
// before sending it. A Pacer shared by every process that uses one Fly
// organisation (the daemon keeps one in its store) keeps them all under
// Fly's limits together; LocalPacer keeps one process under them.
type Pacer interface {
	Reserve(ctx context.Context, key string, l Limit) (time.Duration, error)
}

// maxIdleLimiters bounds LocalPacer's table; full (idle) buckets are dropped
// beyond it, which loses nothing since a new bucket starts full.
const maxIdleLimiters = 1024

// LocalPacer is an in-process Pacer: one token bucket per key.
type LocalPacer struct {
	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	now      func() time.Time // tests replace it
}

// NewLocalPacer returns an empty LocalPacer.
func NewLocalPacer() *LocalPacer {
	return &LocalPacer{limiters: map[string]*rate.Limiter{}, now: time.Now}
}

// Reserve implements Pacer.
func (p *LocalPacer) Reserve(_ context.Context, key string, l Limit) (time.Duration, error) {
	return p.reserveAt(key, l, p.now()), nil
}

func (p *LocalPacer) reserveAt(key string, l Limit, now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	lim, ok := p.limiters[key]
	if !ok {
		if len(p.limiters) >= maxIdleLimiters {
			for k, old := range p.limiters {
				if old.TokensAt(now) >= float64(old.Burst()) {
					delete(p.limiters, k)
				}
			}
		}
		lim = rate.NewLimiter(l.Rate, l.Burst)
		p.limiters[key] = lim
	}
	return lim.ReserveN(now, 1).DelayFrom(now)
}

// pace waits for the request's turn when pacing is on.
func (c *Client) pace(ctx context.Context, r *request) error {
	if c.pacer == nil {
		return nil
	}
	app, machine := requestTarget(r.path)
	key, l := LimitKey(r.action, app, machine)
	d, err := c.pacer.Reserve(ctx, key, l)
	if err != nil {
		// A budget that cannot be read must not stop the work: Fly's 429s
		// (retried with backoff) are the backstop.
		c.log.Warn("fly api pacing unavailable; sending unpaced", "action", r.action, "error", err)
		return nil
	}
	if d > 0 {
		c.log.Trace("fly api pacing request", "action", r.action, "key", key, "delay", d)
		return c.sleep(ctx, d)
	}
	return nil
}
