// Package poolcache is the daemon's cache of the worker pools, read from Fly
// (the source of truth): every app of the org that holds a template machine
// with hangar metadata is a pool. The cache is refreshed in the background;
// a miss refreshes at once, so a pool created by terraform a moment ago is
// found without waiting for the next refresh.
//
// It holds what Fly says a pool is now (templates, machine counts); what a
// pool is declared to be — the spec, its metadata encoding, standby cloning —
// is package internal/pool, which the provider shares.
package poolcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/singleflight"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
)

// ErrNotFound is returned for an unknown pool.
var ErrNotFound = errors.New("no such pool")

// Counts are a template's (or pool's) machines by role and state.
type Counts struct {
	// Standby counts standbys ready to claim, by state (created, stopped, suspended, …).
	Standby map[string]int `json:"by_state"`
	// StandbyTotal is the number of standbys; Stale those with an old spec hash.
	StandbyTotal int `json:"total"`
	Stale        int `json:"stale"`
	// Sessions is the number of session machines.
	Sessions int `json:"sessions"`
	// Unreachable counts standby and session machines whose host Fly
	// cannot reach (host_status not ok): claims skip such standbys.
	Unreachable int `json:"unreachable,omitempty"`
}

// Pool is one pool as last read from Fly.
type Pool struct {
	Name string
	App  string
	// Default is the template of the pool's default image (nil if only
	// tenant images exist, which the provider never does).
	Default *pool.Template
	// TenantImages by name.
	TenantImages map[string]*pool.Template
	// Machines counts every standby and session machine (what max_machines caps).
	Machines int
	// Counts per template: key "" is the default image.
	Counts map[string]*Counts
	// ReadAt is when this view was read.
	ReadAt time.Time
}

// Template returns the template for a tenant image ("" = the default image).
func (p *Pool) Template(tenantImage string) *pool.Template {
	if tenantImage == "" {
		return p.Default
	}
	return p.TenantImages[tenantImage]
}

// Spec returns the pool-level spec (the default template's, else any).
func (p *Pool) Spec() pool.Spec {
	if p.Default != nil {
		return p.Default.Spec
	}
	for _, t := range p.TenantImages {
		return t.Spec
	}
	return pool.Spec{Pool: p.Name, App: p.App}
}

// Fly is the part of the Fly client the cache uses.
type Fly interface {
	ListApps(ctx context.Context, org string) ([]fly.App, error)
	ListMachines(ctx context.Context, app string, opts fly.ListMachinesOptions) ([]fly.Machine, error)
}

// Shared lets replicas share their reads of Fly: what one replica read
// within the refresh interval, the others take from it instead of reading
// Fly again (store.Store implements it). Fly allows about one list per app
// per second for the whole organisation.
type Shared interface {
	SaveSnapshot(ctx context.Context, key string, data []byte, readAt time.Time) error
	LoadSnapshot(ctx context.Context, key string) (data []byte, readAt time.Time, err error)
}

// Cache holds the pools of one Fly org.
type Cache struct {
	fly Fly
	org string
	log hclog.Logger

	shared   Shared        // nil: every read goes to Fly
	shareAge time.Duration // a shared read younger than this is used

	mu     sync.RWMutex
	pools  map[string]*Pool // by pool name
	readAt time.Time
	sf     singleflight.Group
}

// New makes an empty cache; call Refresh or Run to fill it.
func New(client Fly, org string, log hclog.Logger) *Cache {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Cache{fly: client, org: org, log: log, pools: map[string]*Pool{}}
}

// Share makes the periodic refreshes share reads with other replicas
// through s (see Shared): a read of Fly younger than maxAge is taken from s.
// A refresh after a miss always reads Fly.
func (c *Cache) Share(s Shared, maxAge time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.shared, c.shareAge = s, maxAge
}

// Run refreshes the cache every interval until ctx ends.
func (c *Cache) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := c.refresh(ctx, true); err != nil && ctx.Err() == nil {
			c.log.Warn("refresh pools", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Refresh re-reads every pool from Fly. Concurrent callers share one read.
func (c *Cache) Refresh(ctx context.Context) error { return c.refresh(ctx, false) }

// refresh re-reads every pool, from what another replica read lately when
// shared is set and a Shared store is configured.
func (c *Cache) refresh(ctx context.Context, shared bool) error {
	key := "refresh"
	if shared {
		key = "refresh-shared"
	}
	_, err, _ := c.sf.Do(key, func() (any, error) {
		pools, err := c.read(ctx, shared)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.pools = pools
		c.readAt = time.Now()
		c.mu.Unlock()
		return nil, nil
	})
	return err
}

func (c *Cache) read(ctx context.Context, shared bool) (map[string]*Pool, error) {
	var apps []fly.App
	err := c.sharedRead(ctx, shared, "apps/"+c.org, &apps, func() (any, error) {
		return c.fly.ListApps(ctx, c.org)
	})
	if err != nil {
		return nil, fmt.Errorf("list apps of org %s: %w", c.org, err)
	}
	out := map[string]*Pool{}
	for _, app := range apps {
		ps, err := c.readApp(ctx, app.Name, shared)
		if err != nil {
			if errors.Is(err, fly.ErrNotFound) {
				continue // deleted between the two calls
			}
			return nil, err
		}
		for _, p := range ps {
			if prev, dup := out[p.Name]; dup {
				c.log.Warn("pool name in two apps; keeping the first", "pool", p.Name, "app", prev.App, "other_app", p.App)
				continue
			}
			out[p.Name] = p
		}
	}
	return out, nil
}

// sharedRead fills out (a pointer) with what read returns, or, when shared
// and a Shared store has a read of key younger than the share age, with that;
// a fresh read is saved for the other replicas.
func (c *Cache) sharedRead(ctx context.Context, shared bool, key string, out any, read func() (any, error)) error {
	c.mu.RLock()
	s, maxAge := c.shared, c.shareAge
	c.mu.RUnlock()
	if s != nil && shared {
		if data, at, err := s.LoadSnapshot(ctx, key); err == nil && time.Since(at) < maxAge {
			if err := json.Unmarshal(data, out); err == nil {
				return nil
			}
		}
	}
	at := time.Now()
	v, err := read()
	if err != nil {
		return err
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	if s != nil {
		if err := s.SaveSnapshot(ctx, key, data, at); err != nil {
			c.log.Debug("share a read of Fly", "key", key, "error", err)
		}
	}
	return nil
}

// readApp reads the pools held by one app (normally zero or one).
func (c *Cache) readApp(ctx context.Context, app string, shared bool) ([]*Pool, error) {
	var ms []fly.Machine
	err := c.sharedRead(ctx, shared, "machines/"+app, &ms, func() (any, error) {
		return c.fly.ListMachines(ctx, app, fly.ListMachinesOptions{})
	})
	if err != nil {
		return nil, fmt.Errorf("list machines of %s: %w", app, err)
	}
	now := time.Now()
	byName := map[string]*Pool{}
	get := func(name string) *Pool {
		p := byName[name]
		if p == nil {
			p = &Pool{Name: name, App: app, TenantImages: map[string]*pool.Template{}, Counts: map[string]*Counts{}, ReadAt: now}
			byName[name] = p
		}
		return p
	}
	// Templates first, so that standbys can be judged stale against them.
	for i := range ms {
		m := &ms[i]
		if !pool.IsTemplate(m) || gone(m.State) {
			continue
		}
		spec, err := pool.FromTemplate(app, m)
		if err != nil {
			c.log.Warn("skip undecodable template", "app", app, "machine", m.ID, "error", err)
			continue
		}
		p := get(spec.Pool)
		t := &pool.Template{Spec: spec, Hash: pool.SpecHashOf(m), Machine: m}
		if spec.TenantImage == "" {
			p.Default = t
		} else {
			p.TenantImages[spec.TenantImage] = t
		}
	}
	for i := range ms {
		m := &ms[i]
		md := pool.MetadataOf(m)
		p := byName[md[pool.KeyPool]]
		if p == nil || gone(m.State) || pool.IsTemplate(m) {
			continue
		}
		ti := md[pool.KeyTenantImage]
		cnt := p.Counts[ti]
		if cnt == nil {
			cnt = &Counts{Standby: map[string]int{}}
			p.Counts[ti] = cnt
		}
		if m.HostUnreachable() && (pool.IsStandby(m) || pool.IsSession(m)) {
			cnt.Unreachable++
		}
		switch {
		case pool.IsStandby(m):
			p.Machines++
			cnt.StandbyTotal++
			cnt.Standby[m.State]++
			if t := p.Template(ti); t != nil && pool.SpecHashOf(m) != t.Hash {
				cnt.Stale++
			}
		case pool.IsSession(m):
			p.Machines++
			cnt.Sessions++
		}
	}
	out := make([]*Pool, 0, len(byName))
	for _, p := range byName {
		out = append(out, p)
	}
	return out, nil
}

func gone(state string) bool {
	return state == fly.StateDestroyed || state == fly.StateDestroying
}

// Get returns a pool by name, refreshing once on a miss.
func (c *Cache) Get(ctx context.Context, name string) (*Pool, error) {
	c.mu.RLock()
	p := c.pools[name]
	c.mu.RUnlock()
	if p != nil {
		return p, nil
	}
	if err := c.Refresh(ctx); err != nil {
		return nil, err
	}
	c.mu.RLock()
	p = c.pools[name]
	c.mu.RUnlock()
	if p == nil {
		return nil, fmt.Errorf("pool %q: %w", name, ErrNotFound)
	}
	return p, nil
}

// AgentPort is the agent port of the template of poolName's tenantImage
// ("" = the default image), for agents that are dialled rather than
// tunnelled; 0 (the default port) when the pool or template is unknown.
func (c *Cache) AgentPort(ctx context.Context, poolName, tenantImage string) int {
	if p, err := c.Get(ctx, poolName); err == nil {
		if t := p.Template(tenantImage); t != nil {
			return t.Spec.AgentPort
		}
	}
	return 0
}

// List returns every cached pool, by name.
func (c *Cache) List() []*Pool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*Pool, 0, len(c.pools))
	for _, p := range c.pools {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ReadAt is when the cache was last filled (zero before the first read).
func (c *Cache) ReadAt() time.Time {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.readAt
}
