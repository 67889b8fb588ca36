package claim

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hangarhq/hangar/daemon/agents"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/fly"
)

// bringUp starts the claimed machine, waits for its agent, inits it with the
// user's credentials and marks the session ready.
func (cl *Claimer) bringUp(ctx context.Context, id string, c *claimed, creds *agentapi.Credentials) error {
	ctx, cancel := context.WithTimeout(ctx, cl.cfg.ReadyTimeout)
	defer cancel()
	s, err := cl.store.UpdateSession(ctx, id, []store.SessionState{store.StateClaiming}, func(s *store.Session) error {
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
		if err := cl.retryFly(ctx, id, "start machine", func() error {
			_, err := cl.fly.StartMachine(ctx, c.app, c.mach.ID, c.nonce)
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
			st, err := cl.initAgent(ectx, id, s, mach.ID, cl.agentClient(ectx, s, mach), creds)
			early <- initResult{st, err}
		}()
		defer func() {
			ecancel()
			<-early // done with the credentials before the claim returns
		}()
	}
	if err := cl.retryFly(ctx, id, "wait for machine", func() error {
		_, err := cl.fly.WaitMachine(ctx, c.app, c.mach.ID, fly.WaitOptions{States: []string{fly.StateStarted}, Timeout: cl.cfg.ReadyTimeout})
		return err
	}); err != nil {
		return fmt.Errorf("wait for machine %s to start: %w", c.mach.ID, err)
	}
	c.stopRenew()
	cl.release(c.app, c.mach.ID, c.nonce)
	c.nonce = ""
	var mach *fly.Machine
	if err := cl.retryFly(ctx, id, "read machine", func() (err error) {
		mach, err = cl.fly.GetMachine(ctx, c.app, c.mach.ID)
		return err
	}); err != nil {
		return fmt.Errorf("read machine %s: %w", c.mach.ID, err)
	}
	c.mach = mach
	agent := cl.agentClient(ctx, s, mach)
	if resumed && agents.Tunnelled(mach) && !cl.tunnelAlive(mach.ID) && !cl.healthyWithin(ctx, agent, coldBootGrace) {
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
		if err := cl.fly.SignalMachine(ctx, c.app, mach.ID, "SIGUSR1", ""); err != nil {
			cl.log.Warn("signal the resumed agent to redial", "machine", mach.ID, "error", err)
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
	} else if st, err = cl.initAgent(ctx, id, s, mach.ID, agent, creds); err != nil {
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
	if _, err := cl.store.UpdateSession(ctx, id, []store.SessionState{store.StateStarting}, func(s *store.Session) error {
		s.State, s.ReadyAt = store.StateReady, &now
		return nil
	}); err != nil {
		return fmt.Errorf("mark ready: %w", err)
	}
	cl.log.Info("session ready", "session", id, "machine", mach.ID)
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
func (cl *Claimer) initAgent(ctx context.Context, id string, s *store.Session, machineID string, agent *agentapi.Client, creds *agentapi.Credentials) (*agentapi.StatusResponse, error) {
	t0 := time.Now()
	if err := cl.waitHealthy(ctx, agent); err != nil {
		return nil, fmt.Errorf("agent on %s never became healthy: %w", machineID, err)
	}
	cl.log.Debug("agent healthy", "session", id, "machine", machineID, "waited", time.Since(t0))
	// The session may have been ended while the machine started.
	if cur, err := cl.store.GetSession(ctx, id); err != nil || cur.State != store.StateStarting {
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
	cl.Forget(id) // handed over (or refused): this replica forgets them either way
	if err != nil {
		return nil, fmt.Errorf("agent init: %w", agentapi.Describe(err))
	}
	cl.log.Debug("agent initialised", "session", id, "machine", machineID, "state", st.State, "since_healthy", time.Since(t0))
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
func (cl *Claimer) retryFly(ctx context.Context, session, what string, call func() error) error {
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := call()
		if err == nil || !fly.IsTransient(err) {
			return err
		}
		cl.log.Warn("transient Fly error after the claim took its machine; retrying", "session", session, "action", what, "attempt", attempt, "error", err)
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
func (cl *Claimer) healthyWithin(ctx context.Context, agent *agentapi.Client, d time.Duration) bool {
	hctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	h, err := agent.Health(hctx)
	return err == nil && h.OK
}

// tunnelAlive reports whether this replica holds the machine's tunnel and
// it answers a ping (a dead one is dropped, so calls wait for the next).
func (cl *Claimer) tunnelAlive(machineID string) bool {
	r := cl.cfg.Agents.Tunnels
	return r != nil && r.Probe(machineID, 0)
}

// waitHealthy calls the agent's health check until it answers OK: soon
// again at first (an agent answers within milliseconds of its process
// starting, a claim should not wait out a fixed interval after that), then
// every 100 ms.
func (cl *Claimer) waitHealthy(ctx context.Context, agent *agentapi.Client) error {
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
