package claim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hangarhq/hangar/daemon/agents"
	"github.com/hangarhq/hangar/daemon/metrics"
	"github.com/hangarhq/hangar/daemon/poolcache"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/fly"
)

// DefaultReadyTimeout is Config.ReadyTimeout's default.
const DefaultReadyTimeout = 3 * time.Minute

// Config wires a Claimer.
type Config struct {
	Store   store.Store
	Fly     Fly
	Pools   *poolcache.Cache
	Signer  *agentauth.Signer
	Metrics *metrics.Metrics
	// Logger is the session manager's: the claim's log lines keep the name
	// they always had ("sessions").
	Logger hclog.Logger
	// Agents reaches agents: through their tunnels, or dialled for pools
	// without daemon_url (default: dialled only).
	Agents *agents.Router
	// ReadyTimeout bounds bringing a claimed machine up to a ready session
	// (default DefaultReadyTimeout).
	ReadyTimeout time.Duration
}

// Fly is the part of the Fly client a claim uses.
type Fly interface {
	ListMachines(ctx context.Context, app string, opts fly.ListMachinesOptions) ([]fly.Machine, error)
	GetMachine(ctx context.Context, app, id string) (*fly.Machine, error)
	CreateMachine(ctx context.Context, app string, req fly.CreateMachineRequest) (*fly.Machine, error)
	StartMachine(ctx context.Context, app, id, nonce string) (*fly.StartResponse, error)
	WaitMachine(ctx context.Context, app, id string, opts fly.WaitOptions) (*fly.WaitResponse, error)
	DestroyMachine(ctx context.Context, app, id string, force bool, nonce string) error
	AcquireLease(ctx context.Context, app, id string, ttl time.Duration, description string) (*fly.Lease, error)
	ReleaseLease(ctx context.Context, app, id, nonce string) error
	UpdateMetadata(ctx context.Context, app, id string, req fly.UpdateMetadataRequest, nonce string) error
	SignalMachine(ctx context.Context, app, id, signal, nonce string) error
	RefreshLease(ctx context.Context, app, id, nonce string, ttl time.Duration) (*fly.Lease, error)
}

// Claimer runs the claims of this replica's sessions (doc.go has the
// steps) and holds their credentials until each claim hands them to its
// agent. Create it with New.
type Claimer struct {
	cfg   Config
	store store.Store
	fly   Fly
	log   hclog.Logger
	locks *store.Locks // a pool's clones

	mu    sync.Mutex
	creds map[string]*agentapi.Credentials // by session id, until init
	// lostCreate marks claims whose clone create failed ambiguously: Fly
	// may have made the machine and lost the answer.
	lostCreate map[string]bool
	// refusedStarts counts, per pending session, claimed standbys that Fly
	// refused to start; past maxRefusedStarts the claim clones instead.
	refusedStarts map[string]int
	standbys      *standbyViews // per-pool views of claimable standbys
}

// New makes a Claimer.
func New(cfg Config) *Claimer {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Agents == nil {
		cfg.Agents = &agents.Router{}
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	return &Claimer{
		cfg: cfg, store: cfg.Store, fly: cfg.Fly, log: cfg.Logger, locks: store.NewLocks(cfg.Store),
		creds: map[string]*agentapi.Credentials{}, lostCreate: map[string]bool{}, refusedStarts: map[string]int{},
		standbys: newStandbyViews(cfg.Fly),
	}
}

// The verdicts of Claim that leave the session to its caller.
var (
	// ErrWait: no machine for this claim now; it stays pending, in line.
	ErrWait = errors.New("no capacity: waiting in line")
	// ErrNoCredentials: this replica does not hold the session's
	// credentials (a previous process accepted it): the claim can never
	// finish. Nothing was taken.
	ErrNoCredentials = errors.New("no credentials held for the session")
)

// Failure is a claim's verdict that its session cannot be served: the
// caller fails the session with Reason. Any machine the claim took is
// destroyed already.
type Failure struct {
	Reason string
	// Aborted: the claim had taken a machine when it failed. The session
	// may have been ended meanwhile (then it is ended, not failed), and it
	// is to be read again: the claim changed it.
	Aborted bool
}

func (f *Failure) Error() string { return f.Reason }

// leaseTTL is how long a claim's Fly lease on a machine lasts unless the
// claim renews it; the claim renews it every leaseRenew while it works and
// releases it once the machine is started. Short, so that the machine of a
// claim that died with its replica can be destroyed seconds later.
const (
	leaseTTL   = 8 * time.Second
	leaseRenew = 2 * time.Second
)

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
func (cl *Claimer) keepLease(c *claimed) {
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
			_, err := cl.fly.RefreshLease(ctx, app, id, nonce, leaseTTL)
			cancel()
			if err != nil {
				cl.log.Warn("renew the claim's lease", "machine", id, "error", err)
			}
		}
	}()
	var once sync.Once
	c.stopRenew = func() { once.Do(func() { close(stop); <-done }) }
}

// Claim takes pending session s, accepted by this replica, to ready. It
// returns nil when s is ready, back in line for another machine (Fly
// refused to start the one it took), or was ended meanwhile; ErrWait when
// s must wait in line; ErrNoCredentials; or a *Failure when s cannot be
// served.
func (cl *Claimer) Claim(ctx context.Context, s *store.Session) error {
	id := s.ID
	start := time.Now()
	creds, ok := cl.takeCreds(id)
	if !ok {
		return ErrNoCredentials
	}
	p, err := cl.cfg.Pools.Get(ctx, s.Pool)
	if errors.Is(err, poolcache.ErrNotFound) {
		return &Failure{Reason: fmt.Sprintf("pool %q no longer exists", s.Pool)}
	}
	if err != nil {
		cl.log.Warn("claim: read pool", "session", id, "error", err)
		return ErrWait
	}
	tmpl := p.Template(s.TenantImage)
	if tmpl == nil {
		return &Failure{Reason: fmt.Sprintf("pool %q has no template for tenant image %q", s.Pool, s.TenantImage)}
	}
	if tmpl.Spec.Draining {
		return &Failure{Reason: fmt.Sprintf("pool %q is being deleted", s.Pool)}
	}
	regions := tmpl.Spec.Regions
	if s.Region != "" {
		regions = []string{s.Region}
	}

	source := "standby"
	var c *claimed
	cl.mu.Lock()
	lost := cl.lostCreate[s.ID]
	cl.mu.Unlock()
	if lost {
		source = "adopted"
		c, err = cl.adoptLost(ctx, s, p.App)
	}
	cl.mu.Lock()
	refused := cl.refusedStarts[s.ID]
	cl.mu.Unlock()
	if err == nil && c == nil && refused < maxRefusedStarts {
		source = "standby"
		c, err = cl.leaseStandby(ctx, s, p, tmpl, regions)
	}
	if err == nil && c == nil {
		source = "clone"
		c, err = cl.cloneMachine(ctx, s, p, tmpl, regions)
	}
	if err != nil {
		if errors.Is(err, ErrWait) {
			return ErrWait
		}
		if errors.Is(err, store.ErrStateChanged) {
			return nil // ended meanwhile; nothing was taken
		}
		if permanent(err) {
			return &Failure{Reason: "cannot get a machine: " + err.Error()}
		}
		cl.log.Warn("claim: no machine yet", "session", id, "error", err)
		return ErrWait
	}
	cl.log.Info("claimed machine", "session", id, "machine", c.mach.ID, "source", source, "region", c.mach.Region)
	cl.keepLease(c)
	defer c.stopRenew()
	outcome := "ready"
	err = cl.bringUp(ctx, s.ID, c, creds)
	if errors.Is(err, errStartRefused) && cl.requeue(ctx, s, c, err) {
		// Back in line with its credentials; the dispatcher, woken when
		// this returns, claims it again.
		if cl.cfg.Metrics != nil {
			cl.cfg.Metrics.ClaimSeconds.WithLabelValues(source, "requeued").Observe(time.Since(start).Seconds())
		}
		return nil
	}
	var failure error
	if err != nil {
		outcome = "failed"
		cl.abort(c)
		failure = &Failure{Reason: "claim failed: " + err.Error(), Aborted: true}
	}
	cl.Forget(id)
	if cl.cfg.Metrics != nil {
		cl.cfg.Metrics.ClaimSeconds.WithLabelValues(source, outcome).Observe(time.Since(start).Seconds())
	}
	return failure
}

// agentClient returns a client for the agent of machine mach of session s.
func (cl *Claimer) agentClient(ctx context.Context, s *store.Session, mach *fly.Machine) *agentapi.Client {
	return cl.cfg.Agents.Client(mach, cl.cfg.Pools.AgentPort(ctx, s.Pool, s.TenantImage), cl.cfg.Signer)
}
