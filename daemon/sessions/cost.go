package sessions

import (
	"context"
	"math"
	"time"

	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/pool"
)

// Fly's published per-second prices in its base regions (see
// docs/operations.md, "Costs"): a shared CPU with 256 MB, a performance CPU
// with 2 GB, and RAM beyond what the CPUs include. Regions may cost more;
// the figure is an estimate of the machine's compute while it ran.
const (
	sharedCPUPerSecond      = 0.0000008
	performanceCPUPerSecond = 0.0000120
	extraGBPerSecond        = 5.0 / (30 * 24 * 3600)
)

// PricePerSecond estimates what a started machine of size g costs per second.
func PricePerSecond(g pool.Guest) float64 {
	cpus := max(g.CPUs, 1)
	base, included := sharedCPUPerSecond, 256*cpus
	if g.CPUKind == "performance" {
		base, included = performanceCPUPerSecond, 2048*cpus
	}
	p := base * float64(cpus)
	if extra := g.MemoryMB - included; extra > 0 {
		p += extraGBPerSecond * float64(extra) / 1024
	}
	return p
}

// Cost estimates the compute cost of session s up to at (or its end): the
// time its machine ran (from ready, else creation) at its template's size.
func (m *Manager) Cost(ctx context.Context, s *store.Session, at time.Time) float64 {
	if s.MachineID == "" {
		return s.CostUSD
	}
	if s.State == store.StateEnded || s.State == store.StateFailed {
		if s.CostUSD > 0 || s.EndedAt != nil && at.After(*s.EndedAt) {
			at = *s.EndedAt
		}
	}
	from := s.CreatedAt
	if s.ReadyAt != nil {
		from = *s.ReadyAt
	}
	secs := at.Sub(from).Seconds()
	if secs <= 0 {
		return 0
	}
	g := pool.Guest{CPUKind: pool.DefaultCPUKind, CPUs: pool.DefaultCPUs, MemoryMB: pool.DefaultMemoryMB}
	if p, err := m.cfg.Pools.Get(ctx, s.Pool); err == nil {
		if t := p.Template(s.TenantImage); t != nil && t.Spec.Guest.CPUs > 0 {
			g = t.Spec.Guest
		}
	}
	return math.Round(secs*PricePerSecond(g)*1e6) / 1e6
}
