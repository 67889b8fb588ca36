package sessions

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hangarhq/hangar/daemon/agents"
	"github.com/hangarhq/hangar/daemon/poolcache"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
)

// leaseTTL is how long a claim's Fly lease on a machine lasts unless the
// claim renews it; the claim renews it every leaseRenew while it works and
// releases it once the machine is started. Short, so that the machine of a
// claim that died with its replica can be destroyed seconds later.
const (
	leaseTTL   = 8 * time.Second
	leaseRenew = 2 * time.Second
)

// errWait: no machine for this claim now; it stays pending, in line.
var errWait = errors.New("no capacity: waiting in line")

// errStartRefused: Fly refused to start the claimed machine before it ran
// anything — no room on its host (insufficient capacity) or a machine stuck
// in "created" (412). The machine is no use to anyone now; the session goes
// back in line for another.
var errStartRefused = errors.New("Fly refused to start the machine")

// maxRefusedStarts is how many standbys a session may see refused before its
// claim clones the template instead: a machine created to boot at once is
// never stuck in "created", and a clone tries every region.
const maxRefusedStarts = 2

// claimed is a machine a claim holds.
type claimed struct {
	app      string
	mach     *fly.Machine
	nonce    string // Fly lease nonce while held
	launched bool   // created to boot at once (a clone): no start call
	// stopRenew stops renewing the lease; call it before releasing the
	// lease or destroying the machine (a renewal after a release could take
	// a fresh lease with the old nonce).
	stopRenew func()
}

// keepLease renews c's lease every leaseRenew until stopRenew.
func (m *Manager) keepLease(c *claimed) {
	if c.nonce == "" {
		c.stopRenew = func() {}
		return
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	app, id, nonce := c.app, c.mach.ID, c.nonce
	go func() {
		defer close(done)
		t := time.NewTicker(leaseRenew)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), leaseRenew)
			_, err := m.fly.RefreshLease(ctx, app, id, nonce, leaseTTL)
			cancel()
			if err != nil {
				m.log.Warn("renew the claim's lease", "machine", id, "error", err)
			}
		}
	}()
	var once sync.Once
	c.stopRenew = func() { once.Do(func() { close(stop); <-done }) }
}

// claim takes one pending session to ready (or failed). errWait leaves it pending.
func (m *Manager) claim(ctx context.Context, id string) error {
	s, err := m.store.GetSession(ctx, id)
	if err != nil || s.State != store.StatePending || s.Owner != m.cfg.DaemonID {
		return err
	}
	start := time.Now()
	creds, ok := m.takeCreds(id)
	if !ok {
		m.destroySessionMachines(ctx, s)
		m.fail(ctx, s, nil, "", "the daemon replica that accepted this session lost its credentials (restarted); create a new session")
		return nil
	}
	p, err := m.cfg.Pools.Get(ctx, s.Pool)
	if errors.Is(err, poolcache.ErrNotFound) {
		m.fail(ctx, s, nil, "", fmt.Sprintf("pool %q no longer exists", s.Pool))
		return nil
	}
	if err != nil {
		m.log.Warn("claim: read pool", "session", id, "error", err)
		return errWait
	}
	tmpl := p.Template(s.TenantImage)
	if tmpl == nil {
		m.fail(ctx, s, nil, "", fmt.Sprintf("pool %q has no template for tenant image %q", s.Pool, s.TenantImage))
		return nil
	}
	if tmpl.Spec.Draining {
		m.fail(ctx, s, nil, "", fmt.Sprintf("pool %q is being deleted", s.Pool))
		return nil
	}
	regions := tmpl.Spec.Regions
	if s.Region != "" {
		regions = []string{s.Region}
	}

	source := "standby"
	var c *claimed
	m.mu.Lock()
	lost := m.lostCreate[s.ID]
	m.mu.Unlock()
	if lost {
		source = "adopted"
		c, err = m.adoptLost(ctx, s, p.App)
	}
	m.mu.Lock()
	refused := m.refusedStarts[s.ID]
	m.mu.Unlock()
	if err == nil && c == nil && refused < maxRefusedStarts {
		source = "standby"
		c, err = m.leaseStandby(ctx, s, p, tmpl, regions)
	}
	if err == nil && c == nil {
		source = "clone"
		c, err = m.cloneMachine(ctx, s, p, tmpl, regions)
	}
	if err != nil {
		if errors.Is(err, errWait) {
			return errWait
		}
		if errors.Is(err, store.ErrStateChanged) {
			return nil // ended meanwhile; nothing was taken
		}
		if permanent(err) {
			m.fail(ctx, s, nil, "", "cannot get a machine: "+err.Error())
			return nil
		}
		m.log.Warn("claim: no machine yet", "session", id, "error", err)
		return errWait
	}
	m.log.Info("claimed machine", "session", id, "machine", c.mach.ID, "source", source, "region", c.mach.Region)
	m.keepLease(c)
	defer c.stopRenew()
	outcome := "ready"
	err = m.bringUp(ctx, s.ID, c, creds)
	if errors.Is(err, errStartRefused) && m.requeue(ctx, s, c, err) {
		// Back in line with its credentials; the dispatcher, woken when
		// this returns, claims it again.
		if m.cfg.Metrics != nil {
			m.cfg.Metrics.ClaimSeconds.WithLabelValues(source, "requeued").Observe(time.Since(start).Seconds())
		}
		return nil
	}
	if err != nil {
		outcome = "failed"
		m.abort(ctx, s.ID, c, err)
	}
	m.dropCreds(id)
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.ClaimSeconds.WithLabelValues(source, outcome).Observe(time.Since(start).Seconds())
	}
	return nil
}

// leaseStandby takes a standby of the right template under its Fly lease,
// marks the session claiming and the machine a session machine. (nil, nil)
// means there is none.
func (m *Manager) leaseStandby(ctx context.Context, s *store.Session, p *poolcache.Pool, tmpl *pool.Template, regions []string) (*claimed, error) {
	rank := map[string]int{}
	for i, r := range regions {
		rank[r] = i + 1
	}
	keep := func(mm *fly.Machine) bool {
		return claimable(mm) && pool.TenantImageOf(mm) == s.TenantImage && pool.SpecHashOf(mm) == tmpl.Hash && rank[mm.Region] != 0
	}
	// Candidates come from the replica's view of the pool, not a list per
	// claim: Fly allows about one list per app per second.
	for {
		cand, err := m.standbys.next(ctx, p.App, p.Name, keep, func(mm *fly.Machine) int { return rank[mm.Region] })
		if err != nil {
			return nil, err
		}
		if cand == nil {
			return nil, nil
		}
		if cand.HostUnreachable() {
			// Fly cannot act on it until its host is back; the reconciler
			// reports it.
			m.log.Warn("standby's host is unreachable; trying another", "session", s.ID, "machine", cand.ID, "host_status", cand.HostStatus)
			continue
		}
		lease, err := m.fly.AcquireLease(ctx, p.App, cand.ID, leaseTTL, "hangar claim "+s.ID)
		if err != nil {
			if !errors.Is(err, fly.ErrConflict) && !errors.Is(err, fly.ErrNotFound) {
				m.log.Debug("lease standby", "machine", cand.ID, "error", err)
			}
			continue
		}
		c := &claimed{app: p.App, nonce: lease.Nonce()}
		// Under the lease, re-read: someone may have claimed it just before.
		mach, err := m.fly.GetMachine(ctx, p.App, cand.ID)
		if err != nil || !claimable(mach) {
			m.release(c.app, cand.ID, c.nonce)
			continue
		}
		c.mach = mach
		if _, err := m.store.UpdateSession(ctx, s.ID, []store.SessionState{store.StatePending}, func(s *store.Session) error {
			s.State, s.MachineID, s.AppName, s.Region = store.StateClaiming, mach.ID, p.App, mach.Region
			return nil
		}); err != nil {
			m.release(c.app, mach.ID, c.nonce)
			return nil, err
		}
		role, sid := pool.RoleSession, s.ID
		if err := m.fly.UpdateMetadata(ctx, p.App, mach.ID, fly.UpdateMetadataRequest{Metadata: map[string]*string{pool.KeyRole: &role, pool.KeySession: &sid}}, c.nonce); err != nil {
			// The machine is still a standby; give it back and try again later.
			m.release(c.app, mach.ID, c.nonce)
			// If this fails the claim stays claiming; ready_timeout fails it.
			_, _ = m.store.UpdateSession(ctx, s.ID, []store.SessionState{store.StateClaiming}, func(s *store.Session) error {
				s.State, s.MachineID, s.Region = store.StatePending, "", ""
				return nil
			})
			return nil, fmt.Errorf("mark machine %s as session: %w", mach.ID, err)
		}
		return c, nil
	}
}

// adoptLost looks for a machine made for session s by a create whose
// answer was lost (Fly acted, the answer never came) and claims it, rather
// than taking another and leaving that one running for the reaper. (nil,
// nil) means there is none.
func (m *Manager) adoptLost(ctx context.Context, s *store.Session, app string) (*claimed, error) {
	ms, err := m.fly.ListMachines(ctx, app, fly.ListMachinesOptions{Metadata: map[string]string{pool.KeySession: s.ID}})
	if err != nil {
		return nil, fmt.Errorf("look for the machine of a create whose answer was lost: %w", err)
	}
	m.mu.Lock()
	delete(m.lostCreate, s.ID)
	m.mu.Unlock()
	for i := range ms {
		mm := &ms[i]
		if !pool.IsSession(mm) || mm.State == fly.StateDestroyed || mm.State == fly.StateDestroying {
			continue
		}
		c := &claimed{app: app, mach: mm, launched: mm.State == fly.StateStarting || mm.State == fly.StateStarted}
		if _, err := m.store.UpdateSession(ctx, s.ID, []store.SessionState{store.StatePending}, func(s *store.Session) error {
			s.State, s.AppName, s.MachineID, s.Region = store.StateClaiming, app, mm.ID, mm.Region
			return nil
		}); err != nil {
			m.claims.Destroy(app, mm.ID, "")
			return nil, err
		}
		m.log.Info("adopted the machine of a create whose answer was lost", "session", s.ID, "machine", mm.ID)
		return c, nil
	}
	return nil, nil
}

// claimable: a standby that can be started.
func claimable(mm *fly.Machine) bool {
	if !pool.IsStandby(mm) {
		return false
	}
	switch mm.State {
	case fly.StateCreated, fly.StateStopped, fly.StateSuspended:
		return true
	}
	return false
}

func (m *Manager) release(app, id, nonce string) {
	if nonce == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.fly.ReleaseLease(ctx, app, id, nonce); err != nil && !errors.Is(err, fly.ErrNotFound) {
		m.log.Debug("release lease", "machine", id, "error", err)
	}
}

// cloneMachine creates a session machine from the template while the pool
// is under max_machines, trying the next region on insufficient capacity.
// Counting and creating run under a per-pool lock (in-process and, with
// Postgres, across replicas) so that racing replicas don't overshoot.
func (m *Manager) cloneMachine(ctx context.Context, s *store.Session, p *poolcache.Pool, tmpl *pool.Template, regions []string) (*claimed, error) {
	release, err := m.locks.Lock(ctx, "clone:"+p.Name)
	if errors.Is(err, store.ErrLockBusy) {
		return nil, errWait // another replica is cloning for the pool
	}
	if err != nil {
		return nil, err
	}
	defer release()

	listedAt := time.Now()
	ms, err := m.fly.ListMachines(ctx, p.App, fly.ListMachinesOptions{Metadata: map[string]string{pool.KeyPool: p.Name}})
	if err != nil {
		return nil, fmt.Errorf("count machines of %s: %w", p.App, err)
	}
	m.standbys.update(p.App, p.Name, ms, listedAt)
	n := 0
	for i := range ms {
		if (pool.IsStandby(&ms[i]) || pool.IsSession(&ms[i])) && ms[i].State != fly.StateDestroyed && ms[i].State != fly.StateDestroying {
			n++
		}
	}
	maxM := p.Spec().MaxMachines
	if maxM > 0 && n >= maxM {
		return nil, errWait
	}
	cfg, err := pool.CloneConfig(tmpl.Machine, pool.RoleSession, s.ID)
	if err != nil {
		return nil, fmt.Errorf("clone template: %w", err)
	}
	// The session stays pending (in line) until a machine exists: a failed
	// attempt leaves no trace in its state.
	var lastErr error
	for _, region := range regions {
		mach, err := m.fly.CreateMachine(ctx, p.App, fly.CreateMachineRequest{Config: cfg, Region: region, LeaseTTL: int(leaseTTL / time.Second)})
		if err != nil {
			lastErr = err
			if !permanent(err) {
				// Fly may have made it and lost the answer: the next
				// attempt looks for it before taking anything else.
				m.mu.Lock()
				m.lostCreate[s.ID] = true
				m.mu.Unlock()
			}
			if errors.Is(err, fly.ErrInsufficientCapacity) {
				m.log.Info("no capacity in region; trying the next", "session", s.ID, "region", region)
				continue
			}
			break
		}
		c := &claimed{app: p.App, mach: mach, nonce: mach.Nonce, launched: true}
		if _, err := m.store.UpdateSession(ctx, s.ID, []store.SessionState{store.StatePending}, func(s *store.Session) error {
			s.State, s.AppName, s.MachineID, s.Region = store.StateClaiming, p.App, mach.ID, mach.Region
			return nil
		}); err != nil {
			// Ended while the machine was being made: it has no use.
			m.claims.Destroy(c.app, mach.ID, c.nonce)
			return nil, err
		}
		return c, nil
	}
	if errors.Is(lastErr, fly.ErrInsufficientCapacity) {
		return nil, errWait
	}
	return nil, fmt.Errorf("create session machine: %w", lastErr)
}

// permanent reports whether a Fly error will not go away by retrying (a
// 4xx other than timeouts, conflicts and rate limits).
func permanent(err error) bool {
	st := fly.StatusCode(err)
	return st >= 400 && st < 500 && st != 408 && st != 409 && st != 429
}

// bringUp starts the claimed machine, waits for its agent, inits it with the
// user's credentials and marks the session ready.
func (m *Manager) bringUp(ctx context.Context, id string, c *claimed, creds *Credentials) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ReadyTimeout)
	defer cancel()
	s, err := m.store.UpdateSession(ctx, id, []store.SessionState{store.StateClaiming}, func(s *store.Session) error {
		s.State = store.StateStarting
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark starting: %w", err)
	}
	switch c.mach.State {
	case fly.StateCreated, fly.StateStopped, fly.StateSuspended:
		if c.launched {
			break
		}
		// A start whose answer was lost may have started the machine: the
		// retry finds it starting or started, which Fly answers like a start.
		if err := m.retryFly(ctx, id, "start machine", func() error {
			_, err := m.fly.StartMachine(ctx, c.app, c.mach.ID, c.nonce)
			return err
		}); err != nil {
			if errors.Is(err, fly.ErrInsufficientCapacity) || errors.Is(err, fly.ErrPreconditionFailed) {
				return fmt.Errorf("%w: %w", errStartRefused, err)
			}
			return err // the client's error names the start and the machine
		}
	}
	resumed := c.mach.State == fly.StateSuspended
	// A tunnelled agent is reached by its machine ID over the tunnel it
	// dials as soon as its process runs (or, resumed, keeps or redials):
	// wait for it and init it while Fly still reports the start, instead of
	// after. Its address does not matter (a dialled agent's might, so those
	// wait). A call that went into a resumed agent's dead tunnel fails when
	// the redial below replaces it, and is sent again over the new one.
	var early chan initResult
	if agents.Tunnelled(c.mach) {
		ectx, ecancel := context.WithCancel(ctx)
		defer ecancel()
		early = make(chan initResult, 1)
		mach := c.mach // c.mach is replaced by the read after started
		go func() {
			st, err := m.initAgent(ectx, id, s, mach.ID, m.agentClient(ectx, s, mach), creds)
			early <- initResult{st, err}
		}()
		defer func() {
			ecancel()
			<-early // done with the credentials before the claim returns
		}()
	}
	if err := m.retryFly(ctx, id, "wait for machine", func() error {
		_, err := m.fly.WaitMachine(ctx, c.app, c.mach.ID, fly.WaitOptions{States: []string{fly.StateStarted}, Timeout: m.cfg.ReadyTimeout})
		return err
	}); err != nil {
		return fmt.Errorf("wait for machine %s to start: %w", c.mach.ID, err)
	}
	c.stopRenew()
	m.release(c.app, c.mach.ID, c.nonce)
	c.nonce = ""
	var mach *fly.Machine
	if err := m.retryFly(ctx, id, "read machine", func() (err error) {
		mach, err = m.fly.GetMachine(ctx, c.app, c.mach.ID)
		return err
	}); err != nil {
		return fmt.Errorf("read machine %s: %w", c.mach.ID, err)
	}
	c.mach = mach
	agent := m.agentClient(ctx, s, mach)
	if resumed && agents.Tunnelled(mach) && !m.tunnelAlive(mach.ID) && !m.healthyWithin(ctx, agent, coldBootGrace) {
		// Not before coldBootGrace: Fly may have lost the snapshot, and a
		// cold-booted agent killed by a SIGUSR1 that arrives before it
		// could catch it would never come up (it dials a new tunnel by
		// itself within the grace).
		// The tunnel a suspended agent held died while it slept (its peer
		// timed it out, or Fly moved the snapshot); the agent would notice
		// only at its next keepalive. The signal makes it redial at once.
		// A tunnel that still answers is kept: the redial would cost a
		// handshake and cut the calls that follow (the agent also keeps a
		// tunnel that answers it).
		if err := m.fly.SignalMachine(ctx, c.app, mach.ID, "SIGUSR1", ""); err != nil {
			m.log.Warn("signal the resumed agent to redial", "machine", mach.ID, "error", err)
		}
	}
	var st *agentapi.StatusResponse
	if early != nil {
		r := <-early
		early <- r // for the deferred drain
		if r.err != nil {
			return r.err
		}
		st = r.st
	} else if st, err = m.initAgent(ctx, id, s, mach.ID, agent, creds); err != nil {
		return err
	}
	// An agent that answers init before it is ready (none does today: init
	// waits for the workspace and the command) is asked again, soon at
	// first.
	poll := 10 * time.Millisecond
	for st.State == agentapi.StateInitializing || st.State == agentapi.StateIdle {
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent init: %w", ctx.Err())
		case <-time.After(poll):
		}
		poll = min(2*poll, 200*time.Millisecond)
		if err := retryAgentCall(ctx, func() (err error) {
			st, err = agent.Status(ctx, id)
			return err
		}); err != nil {
			return fmt.Errorf("agent status after init: %w", agentapi.Describe(err))
		}
	}
	if st.State == agentapi.StateFailed {
		return fmt.Errorf("agent init failed: %s", st.Error)
	}
	now := time.Now()
	if _, err := m.store.UpdateSession(ctx, id, []store.SessionState{store.StateStarting}, func(s *store.Session) error {
		s.State, s.ReadyAt = store.StateReady, &now
		return nil
	}); err != nil {
		return fmt.Errorf("mark ready: %w", err)
	}
	m.log.Info("session ready", "session", id, "machine", mach.ID)
	return nil
}

// initResult is an agent's answer to init, or why there is none.
type initResult struct {
	st  *agentapi.StatusResponse
	err error
}

// initAgent waits until the session's agent answers its health check and
// inits it with the session and the user's credentials (dropped from this
// replica once handed over or refused).
func (m *Manager) initAgent(ctx context.Context, id string, s *store.Session, machineID string, agent *agentapi.Client, creds *Credentials) (*agentapi.StatusResponse, error) {
	t0 := time.Now()
	if err := m.waitHealthy(ctx, agent); err != nil {
		return nil, fmt.Errorf("agent on %s never became healthy: %w", machineID, err)
	}
	m.log.Debug("agent healthy", "session", id, "machine", machineID, "waited", time.Since(t0))
	// The session may have been ended while the machine started.
	if cur, err := m.store.GetSession(ctx, id); err != nil || cur.State != store.StateStarting {
		return nil, fmt.Errorf("session left starting: %w", store.ErrStateChanged)
	}
	req := &agentapi.InitRequest{
		SessionID: id, Repo: s.Repo, Branch: s.Branch, SessionBranch: s.SessionBranch,
		Mode: agentapi.Mode(s.Mode), Command: s.Command, Env: s.Env, Cols: s.Cols, Rows: s.Rows,
	}
	if !creds.Empty() {
		req.Credentials = creds
	}
	if s.GitAuthorName != "" {
		req.GitAuthor = &agentapi.GitAuthor{Name: s.GitAuthorName, Email: s.GitAuthorEmail}
	}
	var st *agentapi.StatusResponse
	err := retryAgentCall(ctx, func() (err error) {
		st, err = agent.Init(ctx, req)
		return err
	})
	m.dropCreds(id) // handed over (or refused): this replica forgets them either way
	if err != nil {
		return nil, fmt.Errorf("agent init: %w", agentapi.Describe(err))
	}
	m.log.Debug("agent initialised", "session", id, "machine", machineID, "state", st.State, "since_healthy", time.Since(t0))
	return st, nil
}

// retryAgentCall runs call until it gets an answer from the agent: a call
// cut by the transport (the agent's tunnel dropped under it and the agent is
// redialling) is sent again over the next tunnel until ctx ends. The agent's
// init and status are idempotent for one session — a repeated init waits for
// or reports the first — so nothing is done twice. An answer from the agent,
// even an error, ends the retries.
func retryAgentCall(ctx context.Context, call func() error) error {
	delay := 50 * time.Millisecond
	for {
		err := call()
		if err == nil || isAgentAnswer(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// retryFly runs call until it succeeds, fails for a reason retrying will
// not cure, or ctx (the claim's ready timeout) ends. Once a claim holds a
// machine, a rate limit or a Fly 5xx that outlasted the client's own
// retries is worth waiting out: failing would throw the machine away and
// the session with it. The error returned names what was being done.
func (m *Manager) retryFly(ctx context.Context, session, what string, call func() error) error {
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := call()
		if err == nil || !fly.IsTransient(err) {
			return err
		}
		m.log.Warn("transient Fly error after the claim took its machine; retrying", "session", session, "action", what, "attempt", attempt, "error", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (still failing after %d attempts when the ready timeout ran out)", err, attempt)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// isAgentAnswer reports whether err is the agent's own answer (an HTTP
// error it sent), as opposed to a failure to reach it.
func isAgentAnswer(err error) bool {
	var ae *agentapi.Error
	return errors.As(err, &ae)
}

// coldBootGrace is how long a resumed agent has to answer before the claim
// signals it to redial: far longer than a process needs to install its
// signal handlers, short next to a claim.
const coldBootGrace = 300 * time.Millisecond

// healthyWithin reports whether the agent answers its health check within d.
func (m *Manager) healthyWithin(ctx context.Context, agent *agentapi.Client, d time.Duration) bool {
	hctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	h, err := agent.Health(hctx)
	return err == nil && h.OK
}

// tunnelAlive reports whether this replica holds the machine's tunnel and
// it answers a ping (a dead one is dropped, so calls wait for the next).
func (m *Manager) tunnelAlive(machineID string) bool {
	r := m.cfg.Agents.Tunnels
	return r != nil && r.Probe(machineID, 0)
}

// waitHealthy calls the agent's health check until it answers OK: soon
// again at first (an agent answers within milliseconds of its process
// starting, a claim should not wait out a fixed interval after that), then
// every 100 ms.
func (m *Manager) waitHealthy(ctx context.Context, agent *agentapi.Client) error {
	var last error
	pause := 5 * time.Millisecond
	for {
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		h, err := agent.Health(hctx)
		cancel()
		if err == nil && h.OK {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return last
		case <-time.After(pause):
		}
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// abort handles a claim that failed after taking a machine: the machine is
// destroyed and the session failed, or, if it was ended meanwhile, ended.
func (m *Manager) abort(ctx context.Context, id string, c *claimed, cause error) {
	c.stopRenew()
	m.claims.Destroy(c.app, c.mach.ID, c.nonce)
	bg := context.Background()
	if m.settleEnding(bg, id, nil) {
		return
	}
	s, err := m.store.GetSession(bg, id)
	if err != nil {
		return
	}
	m.fail(bg, s, nil, "", "claim failed: "+cause.Error())
}

// requeue gives session s back to the line after Fly refused to start its
// claimed machine (cause): the machine is destroyed (the reconciler replaces
// standbys) and the session is pending again, as before the claim. It
// reports false when the session left starting meanwhile (the caller
// aborts as for any failure).
func (m *Manager) requeue(ctx context.Context, s *store.Session, c *claimed, cause error) bool {
	c.stopRenew()
	m.claims.Destroy(c.app, c.mach.ID, c.nonce)
	if _, err := m.store.UpdateSession(context.WithoutCancel(ctx), s.ID, []store.SessionState{store.StateStarting}, func(cur *store.Session) error {
		cur.State, cur.MachineID, cur.AppName, cur.Region = store.StatePending, "", "", s.Region
		return nil
	}); err != nil {
		return false
	}
	m.mu.Lock()
	m.refusedStarts[s.ID]++
	n := m.refusedStarts[s.ID]
	m.mu.Unlock()
	m.log.Warn("Fly refused to start the claimed machine; the session is back in line for another", "session", s.ID, "machine", c.mach.ID, "refused", n, "error", cause)
	return true
}
