package server

import (
	"fmt"
	"sync"
	"time"
)

// AttachLimits cap concurrent attachments on this replica. Every attachment
// holds a few goroutines and buffers (docs/operations.md gives the bound),
// so without a cap one share link could hold the daemon's memory hostage.
// Zero fields take the defaults; a negative one means no limit.
type AttachLimits struct {
	// PerSession caps the attachments to one session (default 64).
	PerSession int
	// PerTicket caps the attachments opened with one ticket (default 32):
	// a share link (up to 10,000 uses) opens at most that many at a time.
	PerTicket int
	// PerTenant caps all attachments of one tenant (default 256).
	PerTenant int
	// RetryAfter is the retry hint of a refusal (default 5 s).
	RetryAfter time.Duration
}

// Default attach limits.
const (
	DefaultAttachesPerSession = 64
	DefaultAttachesPerTicket  = 32
	DefaultAttachesPerTenant  = 256
	DefaultAttachRetryAfter   = 5 * time.Second
)

func (l AttachLimits) withDefaults() AttachLimits {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.PerSession, DefaultAttachesPerSession)
	def(&l.PerTicket, DefaultAttachesPerTicket)
	def(&l.PerTenant, DefaultAttachesPerTenant)
	if l.RetryAfter <= 0 {
		l.RetryAfter = DefaultAttachRetryAfter
	}
	return l
}

// attachCounter counts live attachments per session, ticket and tenant.
type attachCounter struct {
	lim AttachLimits
	mu  sync.Mutex
	n   map[string]int
}

func newAttachCounter(l AttachLimits) *attachCounter {
	return &attachCounter{lim: l.withDefaults(), n: map[string]int{}}
}

// acquire takes one attachment slot for the session, the ticket (its hash;
// "" for an API key) and the tenant, all or none. It returns the release
// function, or an error saying which limit was hit.
func (c *attachCounter) acquire(sessionID, ticketHash, tenantID string) (func(), error) {
	type slot struct {
		key, what string
		max       int
	}
	slots := []slot{{"s:" + sessionID, "this session", c.lim.PerSession}, {"t:" + tenantID, "this tenant", c.lim.PerTenant}}
	if ticketHash != "" {
		slots = append(slots, slot{"k:" + ticketHash, "this ticket", c.lim.PerTicket})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range slots {
		if s.max >= 0 && c.n[s.key] >= s.max {
			return nil, fmt.Errorf("too many attachments to %s (at most %d at a time)", s.what, s.max)
		}
	}
	for _, s := range slots {
		c.n[s.key]++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, s := range slots {
				if c.n[s.key]--; c.n[s.key] <= 0 {
					delete(c.n, s.key)
				}
			}
		})
	}, nil
}
