package fly

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

func machinesPath(app string) string { return "/apps/" + seg(app) + "/machines" }

func machinePath(app, id string) string { return machinesPath(app) + "/" + seg(id) }

func checkIDs(op, app, id string) error {
	if app == "" {
		return fmt.Errorf("%s: app is required", op)
	}
	if id == "" {
		return fmt.Errorf("%s: machine id is required", op)
	}
	return nil
}

// CreateMachine creates a machine. Without req.SkipLaunch Fly boots it right
// away; with req.LeaseTTL the response carries the lease Nonce.
//
// A create is never re-sent blindly: after an ambiguous failure (5xx, or a
// connection lost after the request was written) the client re-sends only
// when req.Name is set and no live machine of that name exists yet; if one
// does, it is returned (or, when a lease was asked for and its nonce is
// therefore unknown, an error says so). Without a name the error is returned.
func (c *Client) CreateMachine(ctx context.Context, app string, req CreateMachineRequest) (*Machine, error) {
	if app == "" {
		return nil, errors.New("create machine: app is required")
	}
	if req.Config == nil || req.Config.Image == "" {
		return nil, fmt.Errorf("create machine in %s: config.image is required", app)
	}
	var lastErr error
	started := time.Now()
	for round := 1; round <= c.maxAttempts; round++ {
		var out Machine
		r := &request{action: "machine_create", method: http.MethodPost, path: machinesPath(app), body: req, out: &out, policy: unsentOnly}
		err := c.do(ctx, r)
		if err == nil {
			c.markCreated(app, out.ID)
			return &out, nil
		}
		lastErr = err
		if !r.ambiguous || req.Name == "" || ctx.Err() != nil {
			break
		}
		m, ferr := c.findCreated(ctx, app, req, started)
		if ferr != nil {
			break
		}
		if m != nil {
			if req.LeaseTTL > 0 {
				return nil, fmt.Errorf("create machine %s in %s: outcome ambiguous; machine %s exists but its lease nonce is unknown (the lease expires after %ds): %w",
					req.Name, app, m.ID, req.LeaseTTL, err)
			}
			c.log.Debug("fly machine create was ambiguous but the machine exists; treating as created", "app", app, "machine", m.ID, "name", req.Name)
			return m, nil
		}
		if werr := c.sleep(ctx, c.backoff(round)); werr != nil {
			break
		}
	}
	if req.Name != "" {
		return nil, fmt.Errorf("create machine %s in %s: %w", req.Name, app, lastErr)
	}
	return nil, fmt.Errorf("create machine in %s: %w", app, lastErr)
}

// createdSkew is how much older than our first attempt a machine found
// after an ambiguous create may look, to allow for clock skew with Fly.
const createdSkew = time.Minute

// findCreated looks for the machine an ambiguous create may have made: same
// name, image and metadata, alive, and not created well before the first
// attempt (so an older machine that merely shares the name, e.g. a template
// being rewritten, is not mistaken for ours).
func (c *Client) findCreated(ctx context.Context, app string, req CreateMachineRequest, started time.Time) (*Machine, error) {
	ms, err := c.ListMachines(ctx, app, ListMachinesOptions{})
	if err != nil {
		return nil, err
	}
	for i := range ms {
		m := &ms[i]
		if m.Name != req.Name || m.State == StateDestroyed || m.State == StateDestroying {
			continue
		}
		if m.Config != nil && (m.Config.Image != req.Config.Image || !maps.Equal(m.Config.Metadata, req.Config.Metadata)) {
			continue
		}
		if t, err := time.Parse(time.RFC3339, m.CreatedAt); err == nil && t.Before(started.Add(-createdSkew)) {
			continue
		}
		return m, nil
	}
	return nil, nil
}

// GetMachine returns one machine.
func (c *Client) GetMachine(ctx context.Context, app, id string) (*Machine, error) {
	if err := checkIDs("get machine", app, id); err != nil {
		return nil, err
	}
	var out Machine
	if err := c.do(ctx, &request{action: "machine_get", method: http.MethodGet, path: machinePath(app, id), out: &out}); err != nil {
		return nil, fmt.Errorf("get machine %s: %w", id, err)
	}
	return &out, nil
}

// ListMachinesOptions filters ListMachines.
type ListMachinesOptions struct {
	// Metadata keeps machines whose config.metadata has every KEY=VALUE
	// (sent as metadata.KEY=VALUE query parameters, as Fly documents).
	Metadata map[string]string
	// IncludeDeleted includes destroyed machines.
	IncludeDeleted bool
	// Region keeps machines in one region.
	Region string
	// States keeps machines in any of these states (sent comma-separated).
	States []string
	// Summary omits config, checks, events, nonce and the like.
	Summary bool
}

func (o ListMachinesOptions) query() url.Values {
	q := url.Values{}
	if o.IncludeDeleted {
		q.Set("include_deleted", "true")
	}
	if o.Region != "" {
		q.Set("region", o.Region)
	}
	if len(o.States) > 0 {
		q.Set("state", joinStates(o.States))
	}
	if o.Summary {
		q.Set("summary", "true")
	}
	for k, v := range o.Metadata {
		q.Set("metadata."+k, v)
	}
	return q
}

// ListMachines lists an app's machines.
func (c *Client) ListMachines(ctx context.Context, app string, opts ListMachinesOptions) ([]Machine, error) {
	if app == "" {
		return nil, errors.New("list machines: app is required")
	}
	for k := range opts.Metadata {
		if k == "" {
			return nil, fmt.Errorf("list machines of %s: empty metadata key in filter", app)
		}
	}
	var out []Machine
	if err := c.do(ctx, &request{action: "machine_list", method: http.MethodGet, path: machinesPath(app), query: opts.query(), out: &out}); err != nil {
		return nil, fmt.Errorf("list machines of %s: %w", app, err)
	}
	return out, nil
}

// UpdateMachine replaces a machine's config (a full replace, not a patch;
// name and region cannot change). Set req.CurrentVersion to the instance_id
// you read to fail instead of overwriting someone else's update. Fly
// restarts a running machine; req.SkipLaunch keeps a stopped one stopped.
// Not re-sent after an ambiguous failure.
func (c *Client) UpdateMachine(ctx context.Context, app, id string, req UpdateMachineRequest, nonce string) (*Machine, error) {
	if err := checkIDs("update machine", app, id); err != nil {
		return nil, err
	}
	if req.Config == nil || req.Config.Image == "" {
		return nil, fmt.Errorf("update machine %s: config.image is required", id)
	}
	var out Machine
	r := &request{action: "machine_update", method: http.MethodPost, path: machinePath(app, id), body: req, nonce: nonce, out: &out, policy: unsentOnly}
	if err := c.do(ctx, r); err != nil {
		return nil, fmt.Errorf("update machine %s: %w", id, err)
	}
	return &out, nil
}

// StartMachine starts a created or stopped machine, or resumes a suspended one.
func (c *Client) StartMachine(ctx context.Context, app, id, nonce string) (*StartResponse, error) {
	if err := checkIDs("start machine", app, id); err != nil {
		return nil, err
	}
	var out StartResponse
	r := &request{action: "machine_start", method: http.MethodPost, path: machinePath(app, id) + "/start", nonce: nonce, out: &out}
	if err := c.do(ctx, r); err != nil {
		return nil, fmt.Errorf("start machine %s: %w", id, err)
	}
	return &out, nil
}

// StopMachine stops a machine: req.Signal (default: the config's stop
// signal, else SIGINT), then SIGKILL after req.Timeout.
func (c *Client) StopMachine(ctx context.Context, app, id string, req StopRequest, nonce string) error {
	if err := checkIDs("stop machine", app, id); err != nil {
		return err
	}
	r := &request{action: "machine_stop", method: http.MethodPost, path: machinePath(app, id) + "/stop", body: req, nonce: nonce}
	if err := c.do(ctx, r); err != nil {
		return fmt.Errorf("stop machine %s: %w", id, err)
	}
	return nil
}

// SuspendMachine snapshots a started machine (memory included) and stops it.
func (c *Client) SuspendMachine(ctx context.Context, app, id, nonce string) error {
	if err := checkIDs("suspend machine", app, id); err != nil {
		return err
	}
	r := &request{action: "machine_suspend", method: http.MethodPost, path: machinePath(app, id) + "/suspend", nonce: nonce}
	if err := c.do(ctx, r); err != nil {
		return fmt.Errorf("suspend machine %s: %w", id, err)
	}
	return nil
}

// RestartOptions tunes RestartMachine.
type RestartOptions struct {
	// Signal to stop the process with (default: the machine's stop signal).
	Signal string
	// Timeout before SIGKILL (sent as a Go duration string).
	Timeout time.Duration
}

// RestartMachine restarts a started machine. Not re-sent after an ambiguous failure.
func (c *Client) RestartMachine(ctx context.Context, app, id string, opts RestartOptions, nonce string) error {
	if err := checkIDs("restart machine", app, id); err != nil {
		return err
	}
	q := url.Values{}
	if opts.Signal != "" {
		q.Set("signal", opts.Signal)
	}
	if opts.Timeout > 0 {
		q.Set("timeout", opts.Timeout.String())
	}
	r := &request{action: "machine_restart", method: http.MethodPost, path: machinePath(app, id) + "/restart", query: q, nonce: nonce, policy: unsentOnly}
	if err := c.do(ctx, r); err != nil {
		return fmt.Errorf("restart machine %s: %w", id, err)
	}
	return nil
}

// SignalMachine sends a signal (e.g. "SIGTERM") to a machine's process. Not
// re-sent after an ambiguous failure.
func (c *Client) SignalMachine(ctx context.Context, app, id, signal, nonce string) error {
	if err := checkIDs("signal machine", app, id); err != nil {
		return err
	}
	if signal == "" {
		return fmt.Errorf("signal machine %s: signal is required", id)
	}
	r := &request{action: "machine_signal", method: http.MethodPost, path: machinePath(app, id) + "/signal",
		body: SignalRequest{Signal: signal}, nonce: nonce, policy: unsentOnly}
	if err := c.do(ctx, r); err != nil {
		return fmt.Errorf("signal machine %s: %w", id, err)
	}
	return nil
}

// DestroyMachine destroys a machine; force kills it if it is running
// (sent as force=true, the documented form).
func (c *Client) DestroyMachine(ctx context.Context, app, id string, force bool, nonce string) error {
	if err := checkIDs("destroy machine", app, id); err != nil {
		return err
	}
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	r := &request{action: "machine_destroy", method: http.MethodDelete, path: machinePath(app, id), query: q, nonce: nonce}
	if err := c.do(ctx, r); err != nil {
		return fmt.Errorf("destroy machine %s: %w", id, err)
	}
	return nil
}

// CordonMachine takes a machine out of Fly Proxy routing.
func (c *Client) CordonMachine(ctx context.Context, app, id, nonce string) error {
	if err := checkIDs("cordon machine", app, id); err != nil {
		return err
	}
	r := &request{action: "machine_cordon", method: http.MethodPost, path: machinePath(app, id) + "/cordon", nonce: nonce}
	if err := c.do(ctx, r); err != nil {
		return fmt.Errorf("cordon machine %s: %w", id, err)
	}
	return nil
}

// UncordonMachine puts a machine back into Fly Proxy routing.
func (c *Client) UncordonMachine(ctx context.Context, app, id, nonce string) error {
	if err := checkIDs("uncordon machine", app, id); err != nil {
		return err
	}
	r := &request{action: "machine_uncordon", method: http.MethodPost, path: machinePath(app, id) + "/uncordon", nonce: nonce}
	if err := c.do(ctx, r); err != nil {
		return fmt.Errorf("uncordon machine %s: %w", id, err)
	}
	return nil
}

// WaitOptions tunes WaitMachine.
type WaitOptions struct {
	// States to wait for (any of them); default "started". Fly accepts
	// started, stopped, suspended, destroyed, failed and settled.
	States []string
	// Timeout is the whole wait, looped over Fly's ≤60 s long-polls.
	// Zero means 60 s.
	Timeout time.Duration
	// Version is the machine version (instance_id) the state must belong to.
	Version string
	// FromEventID considers only events after this one.
	FromEventID string
}

// WaitMachine blocks until the machine reaches one of opts.States, looping
// Fly's server-side wait (at most 60 s per call) until opts.Timeout. When the
// time runs out the error matches ErrTimeout. A 400 (e.g. the machine failed
// to reach the state) ends the wait at once.
func (c *Client) WaitMachine(ctx context.Context, app, id string, opts WaitOptions) (*WaitResponse, error) {
	if err := checkIDs("wait for machine", app, id); err != nil {
		return nil, err
	}
	states := opts.States
	if len(states) == 0 {
		states = []string{StateStarted}
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = MaxWaitPerCall
	}
	deadline := time.Now().Add(timeout)
	for {
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return nil, fmt.Errorf("wait for machine %s to be %v: gave up after %v: %w", id, states, timeout, ErrTimeout)
		}
		secs := int(math.Ceil(remaining.Seconds()))
		secs = min(max(secs, 1), int(MaxWaitPerCall/time.Second))
		q := url.Values{"state": states, "timeout": {strconv.Itoa(secs)}}
		if opts.Version != "" {
			q.Set("version", opts.Version)
		}
		if opts.FromEventID != "" {
			q.Set("from_event_id", opts.FromEventID)
		}
		var out WaitResponse
		callStart := time.Now()
		err := c.do(ctx, &request{action: "machine_wait", method: http.MethodGet, path: machinePath(app, id) + "/wait", query: q, out: &out})
		if err == nil {
			return &out, nil
		}
		if !errors.Is(err, ErrTimeout) || ctx.Err() != nil {
			return nil, fmt.Errorf("wait for machine %s to be %v: %w", id, states, err)
		}
		if time.Until(deadline) <= 0 {
			return nil, fmt.Errorf("wait for machine %s to be %v: gave up after %v: %w", id, states, timeout, err)
		}
		if time.Since(callStart) < time.Duration(secs)*time.Second/2 {
			// The server gave up well before the timeout we asked for: don't spin.
			pause := min(c.backoff(1), time.Until(deadline))
			if werr := c.sleep(ctx, pause); werr != nil {
				return nil, fmt.Errorf("wait for machine %s to be %v: %w", id, states, werr)
			}
		}
	}
}

// ListEvents returns a machine's most recent events, newest first. limit
// <= 0 leaves Fly's default (20); Fly caps it at 50.
func (c *Client) ListEvents(ctx context.Context, app, id string, limit int) ([]MachineEvent, error) {
	if err := checkIDs("list machine events", app, id); err != nil {
		return nil, err
	}
	var q url.Values
	if limit > 0 {
		q = url.Values{"limit": {strconv.Itoa(limit)}}
	}
	var out []MachineEvent
	if err := c.do(ctx, &request{action: "machine_events", method: http.MethodGet, path: machinePath(app, id) + "/events", query: q, out: &out}); err != nil {
		return nil, fmt.Errorf("list events of machine %s: %w", id, err)
	}
	return out, nil
}
