package sessions

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/oklog/ulid/v2"

	"github.com/hangarhq/hangar/daemon/agents"
	"github.com/hangarhq/hangar/daemon/claim"
	"github.com/hangarhq/hangar/daemon/health"
	"github.com/hangarhq/hangar/daemon/metrics"
	"github.com/hangarhq/hangar/daemon/poolcache"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/fly"
)

// Errors the HTTP layer maps to statuses.
var (
	// ErrNotFound: no such session, or not the caller's (404).
	ErrNotFound = errors.New("no such session")
	// ErrWrongState: the session is not in a state that allows this (409).
	ErrWrongState = errors.New("session is in the wrong state")
)

// QuotaError says the tenant is at its concurrent session limit (429).
type QuotaError struct {
	Limit      int
	RetryAfter time.Duration
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("tenant is at its limit of %d concurrent sessions", e.Limit)
}

// Fly is the part of the Fly client the manager uses: what its claims use
// (claim.Fly), which covers the machine reads of its sweeps and ends.
type Fly = claim.Fly

// Config wires a Manager.
type Config struct {
	// DaemonID identifies this replica in the store. It may be stable
	// across restarts (service resolves it): then Run first settles the
	// claims the previous process left unfinished.
	DaemonID string
	Store    store.Store
	Fly      Fly
	Pools    *poolcache.Cache
	Signer   *agentauth.Signer
	Logger   hclog.Logger
	Metrics  *metrics.Metrics

	// Workers bounds the claims worked on at once.
	Workers int
	// HeartbeatInterval and DeadAfter: liveness of replicas.
	HeartbeatInterval, DeadAfter time.Duration
	// SweepInterval: how often ready sessions are checked for TTL, idle and exit.
	SweepInterval time.Duration
	// ReadyTimeout bounds a claim from request to ready.
	ReadyTimeout time.Duration
	// DispatchInterval is how often pending claims are looked at while a
	// line waits for capacity (default 500ms); otherwise store notices
	// wake dispatch.
	DispatchInterval time.Duration
	// ShutdownGrace is how long in-flight claims and ends may run after Run's
	// context ends (default 30s).
	ShutdownGrace time.Duration
	// DefaultCommand maps a pool name to the argv used when a request names none.
	DefaultCommand map[string][]string
	// AllowFileRepos lets file:// repos through (development and tests).
	AllowFileRepos bool
	// Agents reaches agents: through their tunnels, or dialled for pools
	// without daemon_url (default: dialled only).
	Agents *agents.Router
	// Health, if set, gets the outcome of every heartbeat (a store write),
	// for readiness.
	Health *health.Tracker
}

// Manager runs sessions. Create it with New, start its loops with Run.
type Manager struct {
	cfg   Config
	store store.Store
	fly   Fly
	log   hclog.Logger

	mu       sync.Mutex
	inflight map[string]bool // claims being worked on here
	waiting  map[string]bool // pool/tenant-image lines whose last claim found no capacity
	ending   map[string]bool // ends being worked on here
	kick     chan struct{}
	locks    *store.Locks // a tenant's count
	work     sync.WaitGroup
	workCtx  context.Context
	stopWork context.CancelFunc
	sem      chan struct{}
	machines *machineReads // shared reads of session machines, for attaches
	claims   claimer
}

// claimer is the claim (package claim) as the session lifecycle uses it.
// The manager decides when a session's claim runs and records what became
// of the session; the claimer takes and brings up the machine.
type claimer interface {
	// Hold keeps a new session's credentials for its claim, which hands
	// them to the agent; Holds reports whether they are held here.
	Hold(id string, creds *Credentials)
	Holds(id string) bool
	// Forget drops what is kept for session id's claim (its credentials
	// among it), once the session ended or failed; ForgetCredentials drops
	// every credential when the replica stops.
	Forget(id string)
	ForgetCredentials()
	// Claim takes a pending session of this replica to ready: nil (ready,
	// back in line, or ended meanwhile), claim.ErrWait (stays in line),
	// claim.ErrNoCredentials, or a *claim.Failure for the manager to fail.
	Claim(ctx context.Context, s *store.Session) error
	// ObserveStandbys feeds the reconciler's listing of a pool's standbys
	// into the view claims take standbys from.
	ObserveStandbys(app, poolName string, standbys []*fly.Machine, at time.Time)
	// Destroy destroys a machine now or records it owed in the store;
	// DestroyOwed retries those owed (by any replica).
	Destroy(app, id, nonce string)
	DestroyOwed(ctx context.Context)
}

var _ claimer = (*claim.Claimer)(nil)

// New makes a Manager.
func New(cfg Config) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 5 * time.Second
	}
	if cfg.DeadAfter <= 0 {
		cfg.DeadAfter = 6 * cfg.HeartbeatInterval
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = 15 * time.Second
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = claim.DefaultReadyTimeout
	}
	if cfg.DispatchInterval <= 0 {
		cfg.DispatchInterval = 500 * time.Millisecond
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 30 * time.Second
	}
	if cfg.Agents == nil {
		cfg.Agents = &agents.Router{}
	}
	workCtx, stop := context.WithCancel(context.Background())
	log := cfg.Logger.Named("sessions")
	return &Manager{
		cfg: cfg, store: cfg.Store, fly: cfg.Fly, log: log,
		inflight: map[string]bool{}, waiting: map[string]bool{}, ending: map[string]bool{},
		kick: make(chan struct{}, 1), locks: store.NewLocks(cfg.Store), machines: newMachineReads(cfg.Fly),
		workCtx: workCtx, stopWork: stop, sem: make(chan struct{}, cfg.Workers),
		claims: claim.New(claim.Config{
			Store: cfg.Store, Fly: cfg.Fly, Pools: cfg.Pools, Signer: cfg.Signer, Metrics: cfg.Metrics,
			Logger: log, Agents: cfg.Agents, ReadyTimeout: cfg.ReadyTimeout,
		}),
	}
}

// DaemonID is this replica's id.
func (m *Manager) DaemonID() string { return m.cfg.DaemonID }

// NewDaemonID returns a fresh replica id.
func NewDaemonID() string { return "d-" + strings.ToLower(ulid.Make().String()) }

// NewSessionID returns a fresh session id: a lowercase ULID, valid in
// branch names and JWT subjects.
func NewSessionID() string { return strings.ToLower(ulid.Make().String()) }

func (m *Manager) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run runs the replica's loops (claim dispatcher, heartbeat and takeover of
// dead replicas, sweeper) until ctx ends. Then it stops taking new work,
// lets in-flight claims and ends finish within the shutdown grace, and fails
// the claims it still holds credentials for (they would die with it). Ready
// sessions keep running in their VMs.
func (m *Manager) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(5)
	// Settling runs beside the heartbeat, not before it: it may wait on
	// Fly, and other replicas must not think this one dead meanwhile. The
	// dispatcher waits for it: it would find the leftovers without their
	// credentials and fail them without looking for their machines.
	settled := make(chan struct{})
	go func() { defer wg.Done(); defer close(settled); m.SettleOwnClaims(ctx) }()
	go func() { defer wg.Done(); m.destroyLoop(ctx) }()
	go func() {
		defer wg.Done()
		select {
		case <-settled:
			m.dispatchLoop(ctx)
		case <-ctx.Done():
		}
	}()
	go func() { defer wg.Done(); m.heartbeatLoop(ctx) }()
	go func() { defer wg.Done(); m.sweepLoop(ctx) }()
	wg.Wait()

	done := make(chan struct{})
	go func() { m.work.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(m.cfg.ShutdownGrace):
		m.log.Warn("shutdown grace over; abandoning in-flight work")
		m.stopWork()
		<-done
	}
	m.stopWork()
	// Claims that never started can't be taken by another replica (the
	// credentials are here): fail them now rather than after DeadAfter.
	bg, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pending, err := m.store.ListSessions(bg, store.SessionFilter{Owner: m.cfg.DaemonID, States: []store.SessionState{store.StatePending}})
	if err == nil {
		for _, s := range pending {
			m.fail(bg, s, nil, "", "the daemon replica that accepted this session shut down before a machine was claimed; create a new session")
		}
	}
	m.claims.ForgetCredentials()
}

// destroyInterval is how often owed destroys are retried.
func (m *Manager) destroyInterval() time.Duration {
	return min(m.cfg.HeartbeatInterval, 2*time.Second)
}

func (m *Manager) destroyLoop(ctx context.Context) {
	t := time.NewTicker(m.destroyInterval())
	defer t.Stop()
	for {
		m.claims.DestroyOwed(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// dispatchSafetyPoll is how often dispatch looks at pending claims with
// no reason to: only a lost store notice makes that find anything.
const dispatchSafetyPoll = 15 * time.Second

// dispatchLoop runs dispatch when there may be something to do: a session
// created here (kick), a store notice of a session of this replica or of a
// pool whose line waits (another session ended or failed, on any replica:
// capacity may be free), and every DispatchInterval while a line waits for
// capacity, which appears on Fly (the reconciler's top-ups) rather than in
// the store. Else it polls only as a backstop against lost notices.
func (m *Manager) dispatchLoop(ctx context.Context) {
	stop := m.store.Notifier().Subscribe(store.ChannelSessions, func(msg string) {
		// This replica's own claims wake it when they finish; a session
		// going (back) to pending here, or any change in a pool whose line
		// waits, is news.
		if c, ok := store.ParseSessionChange(msg); ok &&
			(c.Owner != m.cfg.DaemonID || c.State != store.StatePending) && !m.lineWaits(c.Pool) {
			return
		}
		m.wake()
	})
	defer stop()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		m.dispatch(ctx)
		m.mu.Lock()
		next := dispatchSafetyPoll
		if len(m.waiting) > 0 {
			next = m.cfg.DispatchInterval
		}
		m.mu.Unlock()
		t.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.kick:
		}
	}
}

// lineWaits reports whether a claim line of pool waits for capacity.
func (m *Manager) lineWaits(pool string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for line, w := range m.waiting {
		if w && strings.HasPrefix(line, pool+"/") {
			return true
		}
	}
	return false
}

// dispatch starts claims for this replica's pending sessions, oldest first,
// keeping each pool's line: once a claim of a pool waits for capacity,
// younger claims of that pool wait too.
func (m *Manager) dispatch(ctx context.Context) {
	pending, err := m.store.ListSessions(ctx, store.SessionFilter{Owner: m.cfg.DaemonID, States: []store.SessionState{store.StatePending}})
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("list pending claims", "error", err)
		}
		return
	}
	seen := map[string]bool{}
	for _, s := range pending {
		if ctx.Err() != nil {
			return
		}
		line := s.Pool + "/" + s.TenantImage
		m.mu.Lock()
		waiting := m.waiting[line]
		m.mu.Unlock()
		if waiting && seen[line] {
			continue // only the head of a full pool's line tries
		}
		seen[line] = true
		if time.Since(s.CreatedAt) > m.cfg.ReadyTimeout {
			m.failFrom(ctx, s, []store.SessionState{store.StatePending}, nil, "", fmt.Sprintf("no machine became available within %v", m.cfg.ReadyTimeout))
			continue
		}
		m.mu.Lock()
		busy := m.inflight[s.ID]
		m.mu.Unlock()
		if busy {
			continue
		}
		select {
		case m.sem <- struct{}{}:
		default:
			return // every worker is busy; the next round continues
		}
		m.mu.Lock()
		m.inflight[s.ID] = true
		m.mu.Unlock()
		m.work.Add(1)
		go func(id, line string) {
			defer m.work.Done()
			defer func() {
				<-m.sem
				m.mu.Lock()
				delete(m.inflight, id)
				m.mu.Unlock()
			}()
			err := m.claim(m.workCtx, id)
			m.mu.Lock()
			if errors.Is(err, claim.ErrWait) {
				m.waiting[line] = true
			} else {
				delete(m.waiting, line)
			}
			m.mu.Unlock()
			if !errors.Is(err, claim.ErrWait) {
				m.wake()
			}
		}(s.ID, line)
	}
}

// Get returns a session of tenant tenantID (any tenant if "").
func (m *Manager) Get(ctx context.Context, tenantID, id string) (*store.Session, error) {
	s, err := m.store.GetSession(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get session %s: %w", id, err)
	}
	if tenantID != "" && s.TenantID != tenantID {
		return nil, ErrNotFound
	}
	return s, nil
}

// QueuePosition is the session's place in its pool's line (0 unless pending).
func (m *Manager) QueuePosition(ctx context.Context, s *store.Session) int {
	if s.State != store.StatePending {
		return 0
	}
	n, err := m.store.QueuePosition(ctx, s.ID)
	if err != nil {
		return 0
	}
	return n
}

// End ends a session of tenant tenantID on request: a pending one at once,
// a ready one by finish, push and destroy in the background (state
// ending, then ended). reason is recorded.
func (m *Manager) End(ctx context.Context, tenantID, id, reason string) (*store.Session, error) {
	for attempt := 0; attempt < 10; attempt++ {
		s, err := m.Get(ctx, tenantID, id)
		if err != nil {
			return nil, err
		}
		switch s.State {
		case store.StateEnded, store.StateFailed:
			return s, ErrWrongState
		case store.StateEnding:
			return s, nil
		case store.StatePending:
			now := time.Now()
			s2, err := m.store.UpdateSession(ctx, id, []store.SessionState{store.StatePending}, func(s *store.Session) error {
				s.State, s.Reason, s.EndedAt = store.StateEnded, reason, &now
				return nil
			})
			if errors.Is(err, store.ErrStateChanged) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("end session %s: %w", id, err)
			}
			m.claims.Forget(id)
			m.finished(s2)
			return s2, nil
		case store.StateClaiming, store.StateStarting:
			// The claim worker notices at its next step and tears down.
			s2, err := m.store.UpdateSession(ctx, id, []store.SessionState{store.StateClaiming, store.StateStarting}, func(s *store.Session) error {
				s.State, s.Reason = store.StateEnding, reason
				return nil
			})
			if errors.Is(err, store.ErrStateChanged) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("end session %s: %w", id, err)
			}
			return s2, nil
		case store.StateReady:
			s2, err := m.store.UpdateSession(ctx, id, []store.SessionState{store.StateReady}, func(s *store.Session) error {
				s.State, s.Reason, s.Owner = store.StateEnding, reason, m.cfg.DaemonID
				return nil
			})
			if errors.Is(err, store.ErrStateChanged) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("end session %s: %w", id, err)
			}
			m.startFinish(s2)
			return s2, nil
		}
	}
	return nil, fmt.Errorf("end session %s: state kept changing", id)
}

// claim runs the claim of one pending session of this replica (package
// claim) and records its verdict: a session the claim cannot serve fails
// here. claim.ErrWait leaves it pending.
func (m *Manager) claim(ctx context.Context, id string) error {
	s, err := m.store.GetSession(ctx, id)
	if err != nil || s.State != store.StatePending || s.Owner != m.cfg.DaemonID {
		return err
	}
	err = m.claims.Claim(ctx, s)
	var f *claim.Failure
	switch {
	case errors.Is(err, claim.ErrNoCredentials):
		m.destroySessionMachines(ctx, s)
		m.fail(ctx, s, nil, "", "the daemon replica that accepted this session lost its credentials (restarted); create a new session")
	case errors.As(err, &f) && f.Aborted:
		m.settleAborted(s.ID, f.Reason)
	case errors.As(err, &f):
		m.fail(ctx, s, nil, "", f.Reason)
	default:
		return err // nil, or claim.ErrWait
	}
	return nil
}

// ObserveStandbys feeds the reconciler's listing of a pool's standbys,
// made at at, into the view this replica's claims take standbys from
// (claim.Claimer.ObserveStandbys).
func (m *Manager) ObserveStandbys(app, poolName string, standbys []*fly.Machine, at time.Time) {
	m.claims.ObserveStandbys(app, poolName, standbys, at)
}

// finished counts a session that reached a terminal state here.
func (m *Manager) finished(s *store.Session) {
	if m.cfg.Metrics != nil && s != nil {
		m.cfg.Metrics.SessionsFinished.WithLabelValues(string(s.State)).Inc()
	}
}

// agentClient returns a client for the agent of machine mach of session s.
func (m *Manager) agentClient(ctx context.Context, s *store.Session, mach *fly.Machine) *agentapi.Client {
	return m.cfg.Agents.Client(mach, m.cfg.Pools.AgentPort(ctx, s.Pool, s.TenantImage), m.cfg.Signer)
}

// Endpoint resolves a ready session's agent: its base URL, the client that
// reaches it, and its machine id.
func (m *Manager) Endpoint(ctx context.Context, s *store.Session) (agentURL string, hc *http.Client, machineID string, err error) {
	if s.MachineID == "" || s.AppName == "" {
		return "", nil, "", fmt.Errorf("session %s has no machine", s.ID)
	}
	mach, err := m.machines.get(ctx, s.AppName, s.MachineID)
	if err != nil {
		return "", nil, "", fmt.Errorf("get machine %s: %w", s.MachineID, err)
	}
	if mach.State != fly.StateStarted {
		return "", nil, "", fmt.Errorf("machine %s is %s: %w", mach.ID, mach.State, errMachineDown)
	}
	u, hc := m.cfg.Agents.Agent(mach, m.cfg.Pools.AgentPort(ctx, s.Pool, s.TenantImage))
	return u, hc, mach.ID, nil
}

// errMachineDown: the session's machine is not running.
var errMachineDown = errors.New("machine not running")

// IsMachineDown reports whether err says the session's machine is gone or stopped.
func IsMachineDown(err error) bool {
	return errors.Is(err, errMachineDown) || errors.Is(err, fly.ErrNotFound)
}

// EffectiveTTL is the session lifetime for tenant t in a pool with spec TTL
// poolTTL: the pool's TTL capped by the tenant's max session duration.
func EffectiveTTL(poolTTL time.Duration, t *store.Tenant) time.Duration {
	ttl := poolTTL
	if t != nil && t.MaxSessionDuration > 0 && (ttl <= 0 || t.MaxSessionDuration < ttl) {
		ttl = t.MaxSessionDuration
	}
	return ttl
}
