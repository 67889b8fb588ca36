// Package agents decides which agent tunnels a replica admits and where
// admitted tunnels live: the daemon side of internal/tunnel that needs the
// daemon's own state (its pools on Fly, its store).
//
//   - Admission.Authorize accepts a machine identity only for a standby or
//     session machine of one of the daemon's pools, in the daemon's org, on
//     the pool's app, running the image of its template.
//   - Locator records in the store which replica holds each machine's
//     tunnel, so that any replica can relay to it.
//   - ReplayGuard makes identity tokens single-use across every replica.
package agents

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hangarhq/hangar/daemon/poolcache"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
	"github.com/hangarhq/hangar/internal/tunnel"
)

// Machines is the part of the Fly client admission needs.
type Machines interface {
	GetMachine(ctx context.Context, app, id string) (*fly.Machine, error)
}

// Pools is the part of the pools cache admission needs.
type Pools interface {
	List() []*poolcache.Pool
	Refresh(ctx context.Context) error
}

// Admission authorizes agent tunnels against the daemon's pools.
type Admission struct {
	// Org is the Fly organisation the daemon serves (its slug).
	Org      string
	Pools    Pools
	Machines Machines
	// RefreshEvery bounds how often an identity of an unknown app makes the
	// pools cache re-read Fly (default 10 s): a pool created a moment ago
	// is found, and a flood of foreign tunnels cannot drive Fly calls.
	RefreshEvery time.Duration

	mu          sync.Mutex
	lastRefresh time.Time
}

// Authorize implements tunnel.Authorizer. Its errors are shown to the agent
// (and logged): they name what did not match, never a secret.
func (a *Admission) Authorize(ctx context.Context, id *tunnel.Identity) error {
	if id.OrgName != a.Org {
		return fmt.Errorf("machine %s is in organisation %q, not this daemon's", id.MachineID, id.OrgName)
	}
	p := a.poolOfApp(ctx, id.AppName)
	if p == nil {
		return fmt.Errorf("app %q is not a pool of this daemon", id.AppName)
	}
	m, err := a.Machines.GetMachine(ctx, id.AppName, id.MachineID)
	if errors.Is(err, fly.ErrNotFound) {
		return fmt.Errorf("machine %s does not exist in app %s", id.MachineID, id.AppName)
	}
	if err != nil {
		return fmt.Errorf("look up machine %s: %w", id.MachineID, err)
	}
	md := pool.MetadataOf(m)
	if md[pool.KeyPool] != p.Name {
		return fmt.Errorf("machine %s is not a machine of pool %s", m.ID, p.Name)
	}
	switch md[pool.KeyRole] {
	case pool.RoleStandby, pool.RoleSession:
	default:
		return fmt.Errorf("machine %s has role %q; only standby and session machines run agents", m.ID, md[pool.KeyRole])
	}
	t := p.Template(md[pool.KeyTenantImage])
	if t == nil || t.Machine == nil {
		return fmt.Errorf("machine %s belongs to no template of pool %s", m.ID, p.Name)
	}
	want := imageOf(t.Machine)
	if id.Image != want || imageOf(m) != want {
		return fmt.Errorf("machine %s runs image %q; pool %s's template runs %q", m.ID, id.Image, p.Name, want)
	}
	return nil
}

func imageOf(m *fly.Machine) string {
	if m.GetConfig() == nil {
		return ""
	}
	return m.GetConfig().Image
}

// poolOfApp finds the pool on app, re-reading the pools at most every
// RefreshEvery when none is known.
func (a *Admission) poolOfApp(ctx context.Context, app string) *poolcache.Pool {
	find := func() *poolcache.Pool {
		for _, p := range a.Pools.List() {
			if p.App == app {
				return p
			}
		}
		return nil
	}
	if p := find(); p != nil {
		return p
	}
	every := a.RefreshEvery
	if every <= 0 {
		every = 10 * time.Second
	}
	a.mu.Lock()
	due := time.Since(a.lastRefresh) >= every
	if due {
		a.lastRefresh = time.Now()
	}
	a.mu.Unlock()
	if !due {
		return nil
	}
	if err := a.Pools.Refresh(ctx); err != nil {
		return nil
	}
	return find()
}

// Locator is tunnel.Locator on the store.
type Locator struct {
	Store     store.Store
	ReplicaID string
}

// Announce implements tunnel.Locator.
func (l *Locator) Announce(ctx context.Context, machineID string) error {
	return l.Store.AnnounceTunnel(ctx, machineID, l.ReplicaID, time.Now())
}

// Withdraw implements tunnel.Locator.
func (l *Locator) Withdraw(ctx context.Context, machineID string) error {
	return l.Store.WithdrawTunnel(ctx, machineID, l.ReplicaID)
}

// Lookup implements tunnel.Locator.
func (l *Locator) Lookup(ctx context.Context, machineID string) (string, string, error) {
	replica, addr, err := l.Store.TunnelOwner(ctx, machineID)
	if errors.Is(err, store.ErrNotFound) {
		return "", "", fmt.Errorf("machine %s: %w", machineID, tunnel.ErrNoTunnel)
	}
	if err != nil {
		return "", "", err
	}
	if addr == "" && replica != l.ReplicaID {
		return "", "", fmt.Errorf("machine %s: replica %s holds its tunnel but advertises no internal address (set internal_listen): %w", machineID, replica, tunnel.ErrNoTunnel)
	}
	return replica, addr, nil
}

// ReplayGuard is tunnel.ReplayGuard on the store, shared by every replica.
type ReplayGuard struct{ Store store.Store }

// Use implements tunnel.ReplayGuard.
func (g ReplayGuard) Use(ctx context.Context, key string, until time.Time) (bool, error) {
	return g.Store.UseToken(ctx, key, until, time.Now())
}
