package pool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/hangarhq/hangar/internal/fly"
)

// Client is the part of the Fly Machines API client (*fly.Client) the pool
// package uses.
type Client interface {
	CreateMachine(ctx context.Context, app string, req fly.CreateMachineRequest) (*fly.Machine, error)
	GetMachine(ctx context.Context, app, id string) (*fly.Machine, error)
	ListMachines(ctx context.Context, app string, opts fly.ListMachinesOptions) ([]fly.Machine, error)
	StartMachine(ctx context.Context, app, id, nonce string) (*fly.StartResponse, error)
	SuspendMachine(ctx context.Context, app, id, nonce string) error
	DestroyMachine(ctx context.Context, app, id string, force bool, nonce string) error
	WaitMachine(ctx context.Context, app, id string, opts fly.WaitOptions) (*fly.WaitResponse, error)
	AcquireLease(ctx context.Context, app, id string, ttl time.Duration, description string) (*fly.Lease, error)
	ReleaseLease(ctx context.Context, app, id, nonce string) error
}

var _ Client = (*fly.Client)(nil)

// DefaultStandbyTimeout bounds how long CreateStandby waits for one standby.
const DefaultStandbyTimeout = 5 * time.Minute

// StandbyOptions tunes CreateStandby.
type StandbyOptions struct {
	// Mode overrides the template's standby mode ("" = the template's).
	Mode StandbyMode
	// Probe, in suspend mode, is called once the machine is started and must
	// return nil once the agent is healthy (for example by polling the
	// agent's GET /v1/health on the machine's private IP); nil skips it.
	Probe func(ctx context.Context, m *fly.Machine) error
	// Timeout bounds the whole creation (default DefaultStandbyTimeout).
	Timeout time.Duration
}

// CreateStandby creates one standby of template in region of app and waits
// until it is ready to be claimed: in stop mode created with skip_launch
// (state created); in suspend mode started, probed, then suspended (state
// suspended). On any failure it destroys what it created, so no VM leaks,
// and returns the error.
func CreateStandby(ctx context.Context, c Client, app string, template *fly.Machine, region string, opts StandbyOptions) (*fly.Machine, error) {
	cfg, err := CloneConfig(template, RoleStandby, "")
	if err != nil {
		return nil, err
	}
	mode := opts.Mode
	if mode == "" {
		spec, err := DecodeMetadata(template.GetConfig().Metadata)
		if err != nil {
			return nil, fmt.Errorf("create standby: %w", err)
		}
		mode = spec.StandbyMode
	}
	if mode == StandbySuspend {
		// Checked here too, for every template (tenant images' guest
		// overrides included) whatever wrote it: Fly would refuse the suspend
		// and leave a started standby billing by the second.
		if why := SuspendIneligible(cfg); why != "" {
			return nil, fmt.Errorf("create standby of template %s: standby_mode is suspend but %s; use standby_mode = \"stop\" or a smaller guest", template.ID, why)
		}
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultStandbyTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// A unique name lets the client re-send the create safely after an
	// ambiguous failure (it looks the name up first).
	name := "standby-" + region + "-" + randomHex(4)
	m, err := c.CreateMachine(ctx, app, fly.CreateMachineRequest{Config: cfg, Region: region, Name: name, SkipLaunch: true})
	if err != nil {
		return nil, fmt.Errorf("create standby in %s/%s: %w", app, region, err)
	}
	fail := func(err error) (*fly.Machine, error) {
		// The caller's context may be what failed: clean up with a fresh one.
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer ccancel()
		if derr := c.DestroyMachine(cctx, app, m.ID, true, ""); derr != nil && !errors.Is(derr, fly.ErrNotFound) {
			return nil, fmt.Errorf("%w (and destroying standby %s failed: %v)", err, m.ID, derr)
		}
		// Best effort: return once the VM is really gone.
		_, _ = c.WaitMachine(cctx, app, m.ID, fly.WaitOptions{States: []string{fly.StateDestroyed}, Timeout: 30 * time.Second})
		return nil, err
	}
	switch mode {
	case StandbyStop:
		if m.State != fly.StateCreated {
			if m, err = waitCreated(ctx, c, app, m.ID); err != nil {
				return fail(fmt.Errorf("create standby %s: %w", m.ID, err))
			}
		}
		return m, nil
	case StandbySuspend:
		id := m.ID
		if _, err := c.StartMachine(ctx, app, id, ""); err != nil {
			return fail(fmt.Errorf("start standby %s: %w", id, err))
		}
		if _, err := c.WaitMachine(ctx, app, id, fly.WaitOptions{States: []string{fly.StateStarted}, Timeout: time.Until(deadlineOf(ctx))}); err != nil {
			return fail(fmt.Errorf("start standby %s: %w", id, err))
		}
		if opts.Probe != nil {
			got, err := c.GetMachine(ctx, app, id)
			if err != nil {
				return fail(fmt.Errorf("probe standby %s: %w", id, err))
			}
			if err := opts.Probe(ctx, got); err != nil {
				return fail(fmt.Errorf("probe standby %s: %w", id, err))
			}
		}
		if err := c.SuspendMachine(ctx, app, id, ""); err != nil {
			return fail(fmt.Errorf("suspend standby %s: %w", id, err))
		}
		if _, err := c.WaitMachine(ctx, app, id, fly.WaitOptions{States: []string{fly.StateSuspended}, Timeout: time.Until(deadlineOf(ctx))}); err != nil {
			return fail(fmt.Errorf("suspend standby %s: %w", id, err))
		}
		got, err := c.GetMachine(ctx, app, id)
		if err != nil {
			return fail(fmt.Errorf("read standby %s: %w", id, err))
		}
		return got, nil
	default:
		return fail(fmt.Errorf("create standby %s: unknown standby mode %q", m.ID, mode))
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

func deadlineOf(ctx context.Context) time.Time {
	d, ok := ctx.Deadline()
	if !ok {
		return time.Now().Add(DefaultStandbyTimeout)
	}
	return d
}

// waitCreated polls until a skip_launch machine reports state created (Fly's
// wait endpoint has no "created" target).
func waitCreated(ctx context.Context, c Client, app, id string) (*fly.Machine, error) {
	delay := 50 * time.Millisecond
	for {
		m, err := c.GetMachine(ctx, app, id)
		if err != nil {
			return nil, err
		}
		switch m.State {
		case fly.StateCreated:
			return m, nil
		case fly.StateFailed, fly.StateDestroyed, fly.StateDestroying:
			return nil, fmt.Errorf("machine is %s, want %s", m.State, fly.StateCreated)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for state created (last %s): %w", m.State, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// Plan says how many standbys to create per region for one template.
type Plan map[string]int

// TopUpPlan returns how many standbys each region of the template needs to
// reach its min_standby, without taking the pool past max_machines (counting
// every standby and session machine of the pool in st).
func TopUpPlan(st *State, tenantImage string) Plan {
	t := st.Templates[tenantImage]
	if t == nil || t.Spec.Draining {
		return nil
	}
	room := t.Spec.MaxMachines - st.Machines()
	plan := Plan{}
	for _, r := range t.Spec.Regions {
		have := len(st.StandbysIn(tenantImage, r))
		need := t.Spec.MinStandby - have
		if need > room {
			need = room
		}
		if need > 0 {
			plan[r] = need
			room -= need
		}
	}
	return plan
}

// TopUp creates the standbys TopUpPlan asks for, at most concurrency at a
// time (default 4), and returns the machines it created. It keeps going when
// one fails and returns every error joined.
func TopUp(ctx context.Context, c Client, st *State, tenantImage string, concurrency int, opts StandbyOptions) ([]*fly.Machine, error) {
	t := st.Templates[tenantImage]
	if t == nil {
		return nil, fmt.Errorf("top up %s: no template for tenant image %q", st.App, tenantImage)
	}
	var regions []string
	for r, n := range TopUpPlan(st, tenantImage) {
		for range n {
			regions = append(regions, r)
		}
	}
	return createMany(ctx, c, st.App, t.Machine, regions, concurrency, opts)
}

func createMany(ctx context.Context, c Client, app string, template *fly.Machine, regions []string, concurrency int, opts StandbyOptions) ([]*fly.Machine, error) {
	if concurrency <= 0 {
		concurrency = 4
	}
	var (
		mu      sync.Mutex
		created []*fly.Machine
		errs    []error
	)
	var g errgroup.Group
	g.SetLimit(concurrency)
	for _, r := range regions {
		g.Go(func() error {
			m, err := CreateStandby(ctx, c, app, template, r, opts)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			} else {
				created = append(created, m)
			}
			return nil
		})
	}
	_ = g.Wait()
	return created, errors.Join(errs...)
}

// LeaseTTL is how long the pool package holds a standby's lease while it
// replaces the standby.
const LeaseTTL = 60 * time.Second

// RollResult reports what RollStale did.
type RollResult struct {
	// Replaced is the number of stale standbys destroyed and re-created.
	Replaced int
	// Skipped is the number of stale standbys whose lease someone else held
	// (a daemon claiming them); they are left to the next roll.
	Skipped int
}

// RollStale replaces the standbys of the given template whose spec hash
// differs from the template's: for each (at most concurrency at a time,
// default 2) it takes the machine's Fly lease, checks it is still a stale
// standby, destroys it and creates a fresh standby in the same region.
// Session machines are never touched; standbys leased by someone else are
// skipped. Destroy comes before create, so the pool never exceeds
// max_machines while rolling.
func RollStale(ctx context.Context, c Client, st *State, tenantImage string, concurrency int, opts StandbyOptions) (RollResult, error) {
	t := st.Templates[tenantImage]
	if t == nil {
		return RollResult{}, fmt.Errorf("roll %s: no template for tenant image %q", st.App, tenantImage)
	}
	want := SpecHashOf(t.Machine)
	if concurrency <= 0 {
		concurrency = 2
	}
	var (
		mu   sync.Mutex
		res  RollResult
		errs []error
	)
	var g errgroup.Group
	g.SetLimit(concurrency)
	for _, sb := range st.StandbysOf(tenantImage) {
		if SpecHashOf(sb) == want {
			continue
		}
		g.Go(func() error {
			replaced, err := replaceStandby(ctx, c, st.App, t.Machine, sb, want, opts)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, err)
			case replaced:
				res.Replaced++
			default:
				res.Skipped++
			}
			return nil
		})
	}
	_ = g.Wait()
	return res, errors.Join(errs...)
}

func replaceStandby(ctx context.Context, c Client, app string, template, sb *fly.Machine, want string, opts StandbyOptions) (bool, error) {
	lease, err := c.AcquireLease(ctx, app, sb.ID, LeaseTTL, "hangar: replace stale standby")
	if errors.Is(err, fly.ErrConflict) || errors.Is(err, fly.ErrNotFound) {
		return false, nil // claimed or gone meanwhile
	}
	if err != nil {
		return false, fmt.Errorf("lease standby %s: %w", sb.ID, err)
	}
	nonce := lease.Nonce()
	cur, err := c.GetMachine(ctx, app, sb.ID)
	if err != nil || !IsStandby(cur) || SpecHashOf(cur) == want || cur.State == fly.StateDestroyed {
		_ = c.ReleaseLease(context.WithoutCancel(ctx), app, sb.ID, nonce)
		if errors.Is(err, fly.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("read standby %s: %w", sb.ID, err)
		}
		return false, nil // claimed or already replaced meanwhile
	}
	if err := c.DestroyMachine(ctx, app, sb.ID, true, nonce); err != nil && !errors.Is(err, fly.ErrNotFound) {
		_ = c.ReleaseLease(context.WithoutCancel(ctx), app, sb.ID, nonce)
		return false, fmt.Errorf("destroy stale standby %s: %w", sb.ID, err)
	}
	if _, err := CreateStandby(ctx, c, app, template, sb.Region, opts); err != nil {
		return false, fmt.Errorf("replace stale standby %s: %w", sb.ID, err)
	}
	return true, nil
}
