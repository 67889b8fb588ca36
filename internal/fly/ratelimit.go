package fly

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Fly's published Machines API limits: per action and per identifier
// (machine or app), 1 request/s sustained with bursts of 3; getting a
// machine allows 5/s with bursts of 10.
const (
	limitRate     rate.Limit = 1
	limitBurst               = 3
	getLimitRate  rate.Limit = 5
	getLimitBurst            = 10
	// maxIdleLimiters bounds the limiter table; full (idle) buckets are
	// dropped beyond it, which loses nothing since a new bucket starts full.
	maxIdleLimiters = 1024
)

// pacer keeps one token bucket per (action, path) so that the client stays
// under Fly's limits instead of collecting 429s.
type pacer struct {
	mu       sync.Mutex
	limiters map[string]*rate.Limiter
}

func newPacer() *pacer { return &pacer{limiters: map[string]*rate.Limiter{}} }

// reserve takes a token for the request at now and returns how long to
// wait before sending it.
func (p *pacer) reserve(r *request, now time.Time) time.Duration {
	key := r.action + " " + r.path
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.limiters[key]
	if !ok {
		if len(p.limiters) >= maxIdleLimiters {
			for k, old := range p.limiters {
				if old.TokensAt(now) >= float64(old.Burst()) {
					delete(p.limiters, k)
				}
			}
		}
		if r.action == "machine_get" {
			l = rate.NewLimiter(getLimitRate, getLimitBurst)
		} else {
			l = rate.NewLimiter(limitRate, limitBurst)
		}
		p.limiters[key] = l
	}
	return l.ReserveN(now, 1).DelayFrom(now)
}

// pace waits for the request's turn when pacing is on.
func (c *Client) pace(ctx context.Context, r *request) error {
	if c.pacer == nil {
		return nil
	}
	if d := c.pacer.reserve(r, c.now()); d > 0 {
		c.log.Trace("fly api pacing request", "action", r.action, "path", r.path, "delay", d)
		return c.sleep(ctx, d)
	}
	return nil
}
