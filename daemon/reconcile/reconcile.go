// Package reconcile is the daemon's pool reconciler: the part of "who owns
// what" (docs/DESIGN.md) that falls to the daemon at run time. On the one
// leader among replicas it periodically, for every pool of the org:
//
//   - trims standbys beyond min_standby per template and region (oldest
//     first, each under its Fly lease, so a claim in flight is never hit);
//   - replaces standbys whose hangar_spec differs from their template's
//     (internal/pool.RollStale: under their leases, destroy before create);
//   - tops standbys up to min_standby per template and region without taking
//     the pool past max_machines (every standby and session machine counts,
//     tenant images included);
//   - leaves a pool alone whose default template is gone or draining, and a
//     tenant image whose template is draining;
//   - reaps session machines that no live session owns (never templates or
//     standbys). A machine whose session this store does not know at all is
//     reaped only after this replica has seen it unknown for UnknownGrace:
//     a daemon pointed at the wrong store must not destroy the VMs of the
//     sessions another deployment runs in the same org.
//
// Replicas that stopped heartbeating are handled by the sessions manager
// (sessions.Manager.TakeOver); the reaper then catches whatever machine that
// left behind.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/hangarhq/hangar/daemon/agents"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
)

// LeaderName is the store leader lock the reconciler takes for each round.
const LeaderName = "reconciler"

// Defaults for Config's zero fields.
const (
	DefaultInterval  = 5 * time.Second
	DefaultReapGrace = 2 * time.Minute
	// DefaultUnknownGrace is long on purpose: an operator who started a
	// replica on the wrong store (say the SQLite default instead of the
	// shared Postgres) has that long to notice the warnings and stop it.
	DefaultUnknownGrace = 15 * time.Minute
	DefaultConcurrency  = 4
	// DefaultStuckAfter must exceed pool.DefaultStandbyTimeout: a suspend-mode
	// standby is "started" while it is being set up.
	DefaultStuckAfter = 15 * time.Minute
	// leaseTTL bounds how long the reconciler holds a machine's lease while
	// it destroys the machine.
	leaseTTL = 30 * time.Second
)

// Fly is the part of the Fly Machines API client the reconciler uses.
type Fly interface {
	pool.Client
	ListApps(ctx context.Context, org string) ([]fly.App, error)
}

var _ Fly = (*fly.Client)(nil)

// Config configures a Reconciler.
type Config struct {
	Fly   Fly
	Org   string
	Store store.Store
	// Interval between rounds (default DefaultInterval).
	Interval time.Duration
	// ReapGrace is how long a session machine whose session is over (or
	// runs elsewhere) is left alone before it is reaped, so that the daemon
	// ending or aborting it destroys it itself (default DefaultReapGrace).
	// A machine must also be older than this to be reaped at all.
	ReapGrace time.Duration
	// UnknownGrace is how long this reconciler must have seen a session
	// machine whose session the store does not know at all, in every round,
	// before it reaps it (default DefaultUnknownGrace). The clock starts
	// when this process first sees the machine, so a restart starts it
	// again.
	UnknownGrace time.Duration
	// StuckAfter is how long a standby may sit in a state it cannot be
	// claimed from (started, stopping, ...: a setup that was interrupted)
	// before it is destroyed and replaced; failed standbys go at once
	// (default DefaultStuckAfter).
	StuckAfter time.Duration
	// Concurrency bounds standby creations (and replacements) per template
	// at once (default DefaultConcurrency).
	Concurrency int
	// StandbyTimeout bounds one standby creation (default pool's).
	StandbyTimeout time.Duration
	// Agents reaches agents for suspend-mode health probes (through their
	// tunnels, or dialled for pools without daemon_url; default: dialled).
	Agents *agents.Router
	// Metrics, if set, counts what the reconciler does.
	Metrics *Metrics
	Logger  hclog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Reconciler converges every pool of an org on its declared standby count.
type Reconciler struct {
	cfg Config
	log hclog.Logger

	mu sync.Mutex
	// round counts rounds as leader; unknown holds, per app/machine, when a
	// session machine whose session the store does not know was first seen
	// so, and the last round that saw it so (older entries are dropped).
	round   uint64
	unknown map[string]unknownSighting
}

type unknownSighting struct {
	since time.Time
	round uint64
}

// New returns a reconciler; Run or Round drive it.
func New(cfg Config) (*Reconciler, error) {
	if cfg.Fly == nil || cfg.Store == nil {
		return nil, errors.New("reconcile: Fly and Store are required")
	}
	if cfg.Agents == nil {
		cfg.Agents = &agents.Router{}
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.ReapGrace <= 0 {
		cfg.ReapGrace = DefaultReapGrace
	}
	if cfg.UnknownGrace <= 0 {
		cfg.UnknownGrace = DefaultUnknownGrace
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.StuckAfter <= 0 {
		cfg.StuckAfter = DefaultStuckAfter
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Reconciler{cfg: cfg, log: log, unknown: map[string]unknownSighting{}}, nil
}

// Run runs a round every interval until ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := r.Round(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("reconcile round", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Report is what one round did, summed over pools.
type Report struct {
	// Leader is false when another replica held the reconciler lock (the
	// round then did nothing).
	Leader  bool
	Pools   int
	Created int
	Trimmed int
	// Cleared counts failed or stuck standbys destroyed (and so replaced).
	Cleared  int
	Replaced int
	Reaped   int
}

// Round runs one reconciliation over every pool if this replica is the
// leader. Errors of single pools or machines are joined; the round goes on
// with the rest.
func (r *Reconciler) Round(ctx context.Context) (Report, error) {
	var rep Report
	ok, release, err := r.cfg.Store.TryLeader(ctx, LeaderName)
	if err != nil {
		r.cfg.Metrics.round("error")
		return rep, fmt.Errorf("take the reconciler lock: %w", err)
	}
	if !ok {
		r.cfg.Metrics.round("follower")
		// A follower sees nothing: sightings of unknown-session machines
		// must be continuous, so they start over when this replica leads.
		r.mu.Lock()
		clear(r.unknown)
		r.mu.Unlock()
		return rep, nil
	}
	defer release()
	rep.Leader = true
	r.mu.Lock()
	r.round++
	thisRound := r.round
	r.mu.Unlock()
	defer r.forgetUnknown(thisRound)

	apps, err := r.cfg.Fly.ListApps(ctx, r.cfg.Org)
	if err != nil {
		r.cfg.Metrics.round("error")
		return rep, fmt.Errorf("list apps of org %s: %w", r.cfg.Org, err)
	}
	var (
		mu   sync.Mutex
		errs []error
	)
	var g errgroup.Group
	g.SetLimit(4)
	for _, app := range apps {
		g.Go(func() error {
			pr, err := r.reconcileApp(ctx, app.Name)
			mu.Lock()
			defer mu.Unlock()
			if pr.pool {
				rep.Pools++
			}
			rep.Created += pr.Created
			rep.Trimmed += pr.Trimmed
			rep.Cleared += pr.Cleared
			rep.Replaced += pr.Replaced
			rep.Reaped += pr.Reaped
			if err != nil {
				errs = append(errs, err)
			}
			return nil
		})
	}
	_ = g.Wait()
	err = errors.Join(errs...)
	if err != nil {
		r.cfg.Metrics.round("error")
	} else {
		r.cfg.Metrics.round("ok")
	}
	return rep, err
}

// forgetUnknown drops the sightings of unknown-session machines that the
// round did not see again (gone, known after all, or their app failed to
// load): their clock starts over if they show up again.
func (r *Reconciler) forgetUnknown(round uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, s := range r.unknown {
		if s.round != round {
			delete(r.unknown, k)
		}
	}
}

// unknownFor records that machine m of app is unknown to the store in this
// round and returns for how long this reconciler has seen it so; first is
// true on the first sighting.
func (r *Reconciler) unknownFor(app string, m *fly.Machine, now time.Time) (d time.Duration, first bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := app + "/" + m.ID
	s, ok := r.unknown[k]
	if !ok {
		s.since = now
	}
	s.round = r.round
	r.unknown[k] = s
	return now.Sub(s.since), !ok
}

type appReport struct {
	Report
	pool bool
}

// reconcileApp reconciles one Fly app (apps without hangar machines are
// skipped) in four phases, each a method below:
//
//  1. reap: session machines that no live session owns;
//  2. clear: standbys that will never be claimable (failed, stuck);
//  3. trim and roll: standbys beyond min_standby, and standbys of an older
//     spec replaced by fresh ones;
//  4. top up: standbys each template lacks, under the pool's clone lock.
//
// The app is listed once per round; only a top-up lists it again, under the
// lock, because claims clone machines meanwhile and max_machines must hold.
func (r *Reconciler) reconcileApp(ctx context.Context, app string) (appReport, error) {
	var rep appReport
	st, err := pool.Load(ctx, r.cfg.Fly, app)
	if errors.Is(err, fly.ErrNotFound) {
		return rep, nil // deleted meanwhile
	}
	if err != nil {
		return rep, err
	}
	if len(st.Templates) == 0 && len(st.Standbys) == 0 && len(st.Sessions) == 0 {
		return rep, nil
	}
	rep.pool = true
	log := r.log.With("app", app)
	reportUnreachable(st, log)
	var errs []error
	tally := func(into *int, n int, err error) {
		*into += n
		if err != nil {
			errs = append(errs, err)
		}
	}

	n, err := r.reap(ctx, st, log)
	tally(&rep.Reaped, n, err)
	cleared, err := r.clearStuck(ctx, st, log)
	tally(&rep.Cleared, len(cleared), err)
	st.Forget(cleared)

	if def := st.Default(); def == nil || def.Spec.Draining {
		if def != nil || len(st.Standbys) > 0 {
			log.Debug("pool has no default template or is draining; not refilling")
		}
		return rep, errors.Join(errs...)
	}
	images := st.ActiveImages()
	for _, ti := range images {
		n, err := r.trim(ctx, st, ti, log)
		tally(&rep.Trimmed, n, err)
	}
	for _, ti := range images {
		n, err := r.roll(ctx, st, ti, log)
		tally(&rep.Replaced, n, err)
	}
	if rep.Trimmed == 0 && rep.Replaced == 0 && len(topUpJobs(st, images)) == 0 {
		return rep, errors.Join(errs...)
	}
	n, err = r.topUpLocked(ctx, st.Default().Spec.Pool, app, log)
	tally(&rep.Created, n, err)
	return rep, errors.Join(errs...)
}

// roll replaces the standbys of template ti whose spec is older than the
// template's.
func (r *Reconciler) roll(ctx context.Context, st *pool.State, ti string, log hclog.Logger) (int, error) {
	if len(st.Stale(ti)) == 0 {
		return 0, nil
	}
	res, err := pool.RollStale(ctx, r.cfg.Fly, st, ti, r.cfg.Concurrency, r.standbyOptions(st.Templates[ti]))
	r.cfg.Metrics.add(kindReplaced, st, ti, res.Replaced)
	if res.Replaced > 0 {
		log.Info("replaced stale standbys", "tenant_image", ti, "replaced", res.Replaced, "skipped", res.Skipped)
	}
	return res.Replaced, err
}

// topUpLocked creates the standbys the pool lacks, counting and creating
// under the lock claims take to clone a machine for this pool (cluster-wide
// with Postgres), so that the two together never pass max_machines; it
// counts from what Fly says now, not from the round's first listing.
func (r *Reconciler) topUpLocked(ctx context.Context, poolName, app string, log hclog.Logger) (int, error) {
	release, ok, err := r.cloneLock(ctx, poolName)
	if err != nil || !ok {
		return 0, err
	}
	defer release()
	st, err := pool.Load(ctx, r.cfg.Fly, app)
	if err != nil {
		return 0, err
	}
	if def := st.Default(); def == nil || def.Spec.Draining {
		return 0, nil
	}
	return r.topUp(ctx, st, st.ActiveImages(), log)
}

// cloneLock takes the store lock "clone:<pool>" that claims hold while they
// count a pool's machines and clone a new one, retrying for a moment; ok is
// false if claims kept it (the next round tries again).
func (r *Reconciler) cloneLock(ctx context.Context, poolName string) (func(), bool, error) {
	for i := 0; i < 40; i++ {
		ok, release, err := r.cfg.Store.TryLeader(ctx, "clone:"+poolName)
		if err != nil {
			return nil, false, fmt.Errorf("take the clone lock of pool %s: %w", poolName, err)
		}
		if ok {
			return release, true, nil
		}
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil, false, nil
}

// standbyOptions are the CreateStandby options for a template: in suspend
// mode, the agent must answer its health check before the suspend.
func (r *Reconciler) standbyOptions(t *pool.Template) pool.StandbyOptions {
	opts := pool.StandbyOptions{Timeout: r.cfg.StandbyTimeout}
	if t != nil && t.Spec.StandbyMode == pool.StandbySuspend {
		port := t.Spec.AgentPort
		opts.Probe = func(ctx context.Context, m *fly.Machine) error {
			return r.waitAgentHealthy(ctx, m, port)
		}
	}
	return opts
}

// waitAgentHealthy asks the agent's GET /v1/health until it answers ok or
// ctx ends; a tunnelled agent's call waits for its tunnel to come up.
func (r *Reconciler) waitAgentHealthy(ctx context.Context, m *fly.Machine, port int) error {
	c := r.cfg.Agents.Client(m, port, nil)
	delay := 50 * time.Millisecond
	for {
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		h, err := c.Health(hctx)
		cancel()
		if err == nil && h.OK {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("agent reports state %q", h.State)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent on %s not healthy: %w", m.ID, err)
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// trim destroys standbys beyond min_standby per region of one template
// (all of them in regions the template no longer lists), oldest first.
// Only standbys at rest (created, stopped, suspended) are candidates: one
// being started is being claimed or set up.
func (r *Reconciler) trim(ctx context.Context, st *pool.State, ti string, log hclog.Logger) (int, error) {
	t := st.Templates[ti]
	want := map[string]int{}
	for _, reg := range t.Spec.Regions {
		want[reg] = t.Spec.MinStandby
	}
	byRegion := map[string][]*fly.Machine{}
	for _, m := range st.StandbysOf(ti) {
		byRegion[m.Region] = append(byRegion[m.Region], m)
	}
	var (
		n    int
		errs []error
	)
	for region, ms := range byRegion {
		extra := len(ms) - want[region]
		for _, m := range ms { // oldest first (pool.Load sorts by creation)
			if extra <= 0 {
				break
			}
			if !atRest(m) {
				continue
			}
			done, err := r.destroyLeased(ctx, st.App, m, pool.IsStandby, "hangar: trim standby")
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if done {
				extra--
				n++
				r.cfg.Metrics.add(kindTrimmed, st, ti, 1)
				log.Info("trimmed standby", "tenant_image", ti, "machine", m.ID, "region", region)
			}
		}
	}
	return n, errors.Join(errs...)
}

// clearStuck destroys standbys that will never be claimable: failed ones,
// and ones left in another state than at rest for StuckAfter (a suspend-mode
// setup interrupted by a crash). Those count as standbys, so without this
// they would hold their template's min_standby and max_machines room forever.
// It returns the ids of the standbys it destroyed.
func (r *Reconciler) clearStuck(ctx context.Context, st *pool.State, log hclog.Logger) (map[string]bool, error) {
	var (
		cleared = map[string]bool{}
		errs    []error
	)
	now := r.cfg.Now()
	for _, m := range st.Standbys {
		if atRest(m) || (m.State != fly.StateFailed && !olderThan(m, now, r.cfg.StuckAfter)) {
			continue
		}
		stuck := func(c *fly.Machine) bool { return pool.IsStandby(c) && !atRest(c) }
		done, err := r.destroyLeased(ctx, st.App, m, stuck, "hangar: clear stuck standby")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if done {
			cleared[m.ID] = true
			r.cfg.Metrics.add(kindTrimmed, st, pool.TenantImageOf(m), 1)
			log.Warn("destroyed a standby that cannot be claimed", "machine", m.ID, "state", m.State, "updated_at", m.UpdatedAt)
		}
	}
	return cleared, errors.Join(errs...)
}

func atRest(m *fly.Machine) bool {
	switch m.State {
	case fly.StateCreated, fly.StateStopped, fly.StateSuspended:
		return true
	}
	return false
}

type job struct {
	ti, region string
}

// topUpJobs lists the standbys each template lacks per region, sharing the
// pool's max_machines room among templates in the order of images.
func topUpJobs(st *pool.State, images []string) []job {
	maxM := st.Default().Spec.MaxMachines
	room := maxM - st.Machines()
	var jobs []job
	for _, ti := range images { // "" sorts first
		t := st.Templates[ti]
		for _, reg := range t.Spec.Regions {
			need := t.Spec.MinStandby - len(st.StandbysIn(ti, reg))
			if maxM > 0 {
				need = min(need, room)
			}
			for range max(need, 0) {
				jobs = append(jobs, job{ti, reg})
				room--
			}
		}
	}
	return jobs
}

// topUp creates the standbys each template lacks per region, sharing the
// pool's max_machines room among templates (default template first).
func (r *Reconciler) topUp(ctx context.Context, st *pool.State, images []string, log hclog.Logger) (int, error) {
	jobs := topUpJobs(st, images)
	if len(jobs) == 0 {
		return 0, nil
	}
	var (
		mu   sync.Mutex
		n    int
		errs []error
	)
	var g errgroup.Group
	g.SetLimit(r.cfg.Concurrency)
	// Fly discourages suspending many machines at once: suspend-mode
	// standbys are made (started, then suspended) one at a time.
	var suspendMu sync.Mutex
	for _, j := range jobs {
		g.Go(func() error {
			t := st.Templates[j.ti]
			if t.Spec.StandbyMode == pool.StandbySuspend {
				suspendMu.Lock()
				defer suspendMu.Unlock()
			}
			m, err := pool.CreateStandby(ctx, r.cfg.Fly, st.App, t.Machine, j.region, r.standbyOptions(t))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("top up %s/%s: %w", st.App, j.region, err))
				return nil
			}
			n++
			r.cfg.Metrics.add(kindCreated, st, j.ti, 1)
			log.Info("created standby", "tenant_image", j.ti, "machine", m.ID, "region", j.region, "state", m.State)
			return nil
		})
	}
	_ = g.Wait()
	return n, errors.Join(errs...)
}

// reap destroys session machines that no live session owns: their session
// is unknown, over (ended, failed), or live on another machine. Claims in
// flight are safe: a claim records the session as claiming before the
// machine carries its id, and the grace period gives the daemon that ends
// or aborts a session the time to destroy its machine itself.
//
// "Unknown to this store" does not prove that no live session owns a
// machine: the store may be the wrong one (a replica started without the
// shared DSN). Such a machine is reaped only once this reconciler has seen
// it unknown for UnknownGrace, with a warning on first sight and on reaping.
func (r *Reconciler) reap(ctx context.Context, st *pool.State, log hclog.Logger) (int, error) {
	var (
		n    int
		errs []error
	)
	now := r.cfg.Now()
	for _, m := range st.Sessions {
		sid := pool.MetadataOf(m)[pool.KeySession]
		why := ""
		if sid == "" {
			why = "no session id"
			if !olderThan(m, now, r.cfg.ReapGrace) {
				continue
			}
		} else {
			s, err := r.cfg.Store.GetSession(ctx, sid)
			switch {
			case errors.Is(err, store.ErrNotFound):
				seen, first := r.unknownFor(st.App, m, now)
				if first {
					log.Warn("session machine belongs to a session this store does not know; is this daemon using the right store? It is left alone for now",
						"machine", m.ID, "session", sid, "state", m.State, "reap_after", r.cfg.UnknownGrace)
				}
				if seen < r.cfg.UnknownGrace || !olderThan(m, now, r.cfg.ReapGrace) {
					continue
				}
				why = "unknown session"
			case err != nil:
				errs = append(errs, fmt.Errorf("read session %s of machine %s: %w", sid, m.ID, err))
				continue
			case !s.State.Live():
				if now.Sub(s.UpdatedAt) < r.cfg.ReapGrace {
					continue
				}
				why = "session " + string(s.State)
			case s.State == store.StatePending || s.State == store.StateClaiming:
				continue // mid-claim: the machine may be about to be recorded
			case s.MachineID != m.ID:
				if now.Sub(s.UpdatedAt) < r.cfg.ReapGrace || !olderThan(m, now, r.cfg.ReapGrace) {
					continue
				}
				why = "session runs on machine " + s.MachineID
			default:
				continue // owned by a live session
			}
		}
		done, err := r.destroyLeased(ctx, st.App, m, pool.IsSession, "hangar: reap orphan session machine")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if done {
			n++
			r.cfg.Metrics.add(kindReaped, st, pool.TenantImageOf(m), 1)
			if why == "unknown session" {
				log.Warn("reaped a session machine whose session this store has not known for the whole grace period",
					"machine", m.ID, "session", sid, "grace", r.cfg.UnknownGrace)
			} else {
				log.Info("reaped session machine", "machine", m.ID, "session", sid, "why", why)
			}
		}
	}
	return n, errors.Join(errs...)
}

// olderThan reports whether the machine was created and last updated more
// than d before now (unparseable times count as old: Fly always sets them).
func olderThan(m *fly.Machine, now time.Time, d time.Duration) bool {
	for _, s := range []string{m.CreatedAt, m.UpdatedAt} {
		if s == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err == nil && now.Sub(t) < d {
			return false
		}
	}
	return true
}

// destroyLeased destroys machine m under its Fly lease after checking,
// under the lease, that it still has the expected role (ok). A lease held
// by someone else, or a machine gone or changed meanwhile, is not an error:
// it reports false.
func (r *Reconciler) destroyLeased(ctx context.Context, app string, m *fly.Machine, ok func(*fly.Machine) bool, why string) (bool, error) {
	lease, err := r.cfg.Fly.AcquireLease(ctx, app, m.ID, leaseTTL, why)
	if errors.Is(err, fly.ErrConflict) || errors.Is(err, fly.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("lease machine %s: %w", m.ID, err)
	}
	nonce := lease.Nonce()
	cur, err := r.cfg.Fly.GetMachine(ctx, app, m.ID)
	if err != nil || !ok(cur) || pool.MetadataOf(cur)[pool.KeySession] != pool.MetadataOf(m)[pool.KeySession] ||
		cur.State == fly.StateDestroyed || cur.State == fly.StateDestroying {
		_ = r.cfg.Fly.ReleaseLease(context.WithoutCancel(ctx), app, m.ID, nonce)
		if err != nil && !errors.Is(err, fly.ErrNotFound) {
			return false, fmt.Errorf("read machine %s: %w", m.ID, err)
		}
		return false, nil
	}
	if err := r.cfg.Fly.DestroyMachine(ctx, app, m.ID, true, nonce); err != nil {
		if errors.Is(err, fly.ErrNotFound) {
			return false, nil
		}
		_ = r.cfg.Fly.ReleaseLease(context.WithoutCancel(ctx), app, m.ID, nonce)
		return false, fmt.Errorf("destroy machine %s: %w", m.ID, err)
	}
	return true, nil
}

// Metrics count what reconcilers do. A nil *Metrics counts nothing.
type Metrics struct {
	created, trimmed, replaced, reaped *prometheus.CounterVec
	rounds                             *prometheus.CounterVec
}

// NewMetrics makes the reconciler's metrics and registers them on reg
// (nil: not registered). Metrics already registered there are reused.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	labels := []string{"pool", "tenant_image"}
	m := &Metrics{
		created: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hangard", Subsystem: "reconciler",
			Name: "standbys_created_total", Help: "Standbys the reconciler created to reach min_standby."}, labels),
		trimmed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hangard", Subsystem: "reconciler",
			Name: "standbys_destroyed_total", Help: "Standbys the reconciler destroyed: beyond min_standby, failed or stuck."}, labels),
		replaced: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hangard", Subsystem: "reconciler",
			Name: "standbys_replaced_total", Help: "Stale standbys the reconciler replaced."}, labels),
		reaped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hangard", Subsystem: "reconciler",
			Name: "machines_reaped_total", Help: "Session machines no live session owned, destroyed by the reaper."}, labels),
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hangard", Subsystem: "reconciler",
			Name: "rounds_total", Help: "Reconciler rounds by outcome (ok, error, follower)."}, []string{"outcome"}),
	}
	if reg != nil {
		for _, c := range []**prometheus.CounterVec{&m.created, &m.trimmed, &m.replaced, &m.reaped, &m.rounds} {
			if err := reg.Register(*c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if errors.As(err, &are) {
					if ex, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
						*c = ex
					}
				}
			}
		}
	}
	return m
}

type kind int

const (
	kindCreated kind = iota
	kindTrimmed
	kindReplaced
	kindReaped
)

func (m *Metrics) add(k kind, st *pool.State, ti string, n int) {
	if m == nil || n <= 0 {
		return
	}
	c := [...]*prometheus.CounterVec{m.created, m.trimmed, m.replaced, m.reaped}[k]
	name := st.App
	if d := st.Default(); d != nil {
		name = d.Spec.Pool
	}
	c.WithLabelValues(name, ti).Add(float64(n))
}

func (m *Metrics) round(outcome string) {
	if m == nil {
		return
	}
	m.rounds.WithLabelValues(outcome).Inc()
}

// reportUnreachable logs the pool's machines whose host Fly cannot reach:
// Fly then sends only their incomplete_config and refuses to act on them
// until the host is back. The pool stays (its spec is in the metadata Fly
// still sends); claims skip such standbys; a template there cannot be
// cloned, so its standbys are not topped up meanwhile.
func reportUnreachable(st *pool.State, log hclog.Logger) {
	check := func(m *fly.Machine, role string) {
		if m.HostUnreachable() {
			log.Warn("machine's host is unreachable; Fly cannot act on it until the host is back",
				"machine", m.ID, "role", role, "host_status", m.HostStatus, "session", pool.MetadataOf(m)[pool.KeySession])
		}
	}
	for _, t := range st.Templates {
		check(t.Machine, pool.RoleTemplate)
	}
	for _, m := range st.Standbys {
		check(m, pool.RoleStandby)
	}
	for _, m := range st.Sessions {
		check(m, pool.RoleSession)
	}
}
