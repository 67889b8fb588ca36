// Package bench is hangar's benchmark program (make bench): it starts the
// real `hangard dev` (the emulator in namespace mode when root, so agents
// sit on 6PN addresses and dial home) and measures, side by side in one
// run, the ways a client reaches a session's agent:
//
//   - "tunnel": through the daemon, which reaches the agent over the
//     agent's dial-home tunnel (yamux over one WebSocket; the dev pool's
//     design: daemon_url set);
//   - "legacy": through the daemon, which dials the agent at its private
//     IP (the design before tunnels: a pool without daemon_url);
//   - "direct": straight to the tunnel session's agent, which also listens
//     on TCP for the benchmark (HANGAR_AGENT_ADDR) — the in-run reference
//     every figure is set against;
//   - "relay": through a bare WebSocket relay to the same agent, the floor
//     of any extra hop on this machine.
//
// Figures: keystroke echo latency, attach latency, bulk output throughput,
// session-ready latency from stopped and suspended standbys of both
// designs (the emulator's boot delay reported apart), and the daemon's
// RSS, OS threads and goroutines per attached idle stream at several
// stream counts, in a fresh daemon per design. It prints one table.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"

	"github.com/hangarhq/hangar/daemon/devenv"
	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/client"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
	"github.com/hangarhq/hangar/internal/wire"
)

// Path names.
const (
	PathTunnel = "tunnel"
	PathLegacy = "legacy"
	PathDirect = "direct"
	PathRelay  = "relay"
)

// Designs of the daemon-agent hop, as the stream and ready figures name them.
const (
	DesignTunnel = PathTunnel
	DesignLegacy = PathLegacy
)

// Standby modes, as the ready figures name them.
const (
	Stopped   = "stopped"
	Suspended = "suspended"
)

// Options configure one benchmark run.
type Options struct {
	// Hangard is the hangard binary (hangar-agent must sit beside it or on PATH).
	Hangard string
	// Self is this program's binary, run as the sessions' command (EchoMain).
	Self string
	// DataDir is hangard dev's data directory (default: a temporary one, removed).
	DataDir string
	// Samples is the number of echo samples per path.
	Samples int
	// AttachSamples is the number of attach (dial -> attached) samples per path.
	AttachSamples int
	// Bursts is the number of bulk bursts per path; BurstSize their size.
	Bursts, BurstSize int
	// ReadySamples is the number of session-ready samples per design and standby mode.
	ReadySamples int
	// Streams are the idle read-only viewer counts measured (ascending,
	// cumulative, in one fresh daemon per design), spread over
	// StreamSessions sessions; empty skips the phase.
	Streams        []int
	StreamSessions int
	// NoLegacy skips the legacy design (a daemon that dials its agents).
	NoLegacy bool
	// HostileViewers read-only viewers each send HostileFrames binary frames
	// of HostileFrameSize bytes while the daemon's RSS is sampled (0 skips).
	HostileViewers, HostileFrames, HostileFrameSize int
	// HostileDropWait bounds the wait for RSS to drop back afterwards
	// (default 1 min).
	HostileDropWait time.Duration
	// OnlyHostile skips every other phase.
	OnlyHostile bool
	// BootDelay is the emulator's boot delay.
	BootDelay time.Duration
	// Out receives the report; Logs the daemons' stderr.
	Out, Logs io.Writer
}

// Results are a run's figures.
type Results struct {
	// Paths holds the echo, attach and bulk figures by path name.
	Paths map[string]*PathResults
	// Ready holds session-ready figures by design and standby mode
	// (ReadyKey).
	Ready map[string]*ReadyResults
	// LegacyErr says why the legacy design was not measured ("" if it was).
	LegacyErr string
	// Warnings are failures the run got past (retried), for the report.
	Warnings  []string
	BootDelay time.Duration
	// Streams holds the idle stream figures by design and count.
	Streams        []StreamResults
	StreamSessions int
	// NoFile is the daemon's open-file limit (soft) in the stream phase.
	NoFile int64
	// Hostile holds the hostile-viewers figures (nil: not measured).
	Hostile *HostileResults
}

// PathResults are the echo, attach and bulk figures of one path.
type PathResults struct {
	Echo, Attach []time.Duration
	Live, Replay Throughput
}

// ReadyResults are the daemon's created_at -> ready_at times and the times
// the client observed.
type ReadyResults struct {
	Server, Observed []time.Duration
}

// ReadyKey names the ready figures of a design and standby mode.
func ReadyKey(design, mode string) string { return design + "/" + mode }

// StreamResults are the daemon's figures with Count idle streams attached
// (Before: the same daemon with the streams' sessions and nothing attached).
type StreamResults struct {
	Design                         string
	Count                          int
	Before, After                  procStatus
	GoroutinesBefore, GoroutinesAt float64
	HeapBefore, HeapAt             float64 // Go heap in use, bytes
	StackBefore, StackAt           float64 // goroutine stacks in use, bytes
}

// PerStreamBytes is the daemon's RSS growth per attached idle stream.
func (s StreamResults) PerStreamBytes() float64 {
	return float64(s.After.RSSKiB-s.Before.RSSKiB) * 1024 / float64(s.Count)
}

// PerStreamThreads is the daemon's OS thread growth per attached idle stream.
func (s StreamResults) PerStreamThreads() float64 {
	return float64(s.After.Threads-s.Before.Threads) / float64(s.Count)
}

// PerStreamGoroutines is the daemon's goroutine growth per attached idle stream.
func (s StreamResults) PerStreamGoroutines() float64 {
	return (s.GoroutinesAt - s.GoroutinesBefore) / float64(s.Count)
}

// PerStreamHeap is the growth of the daemon's Go heap in use per attached
// idle stream, in bytes.
func (s StreamResults) PerStreamHeap() float64 {
	return (s.HeapAt - s.HeapBefore) / float64(s.Count)
}

// PerStreamStack is the growth of the daemon's goroutine stacks in use per
// attached idle stream, in bytes.
func (s StreamResults) PerStreamStack() float64 {
	return (s.StackAt - s.StackBefore) / float64(s.Count)
}

func (r *Results) path(name string) *PathResults {
	if r.Paths == nil {
		r.Paths = map[string]*PathResults{}
	}
	p := r.Paths[name]
	if p == nil {
		p = &PathResults{}
		r.Paths[name] = p
	}
	return p
}

func (r *Results) ready(design, mode string) *ReadyResults {
	if r.Ready == nil {
		r.Ready = map[string]*ReadyResults{}
	}
	k := ReadyKey(design, mode)
	if r.Ready[k] == nil {
		r.Ready[k] = &ReadyResults{}
	}
	return r.Ready[k]
}

// Throughput is bytes received over the time they took.
type Throughput struct {
	bytes int64
	dur   time.Duration
	lost  int64
}

// Bytes is the number of output bytes received.
func (t Throughput) Bytes() int64 { return t.bytes }

// MBps is the throughput in MB/s.
func (t Throughput) MBps() float64 { return t.mbps() }

func (t Throughput) mbps() float64 {
	if t.dur <= 0 {
		return 0
	}
	return float64(t.bytes) / t.dur.Seconds() / 1e6
}

// run is one `hangard dev` and what the benchmark made in it.
type run struct {
	opts  Options
	dev   *devDaemon
	api   *client.Client
	fly   *fly.Client
	hc    *http.Client
	res   *Results
	apps  map[string]string // pool -> app
	sent  map[string]int64  // session -> input bytes sent over all attachments
	ended []string
	// firstErr is a warm-up's first failure.
	firstErr error
	mu       sync.Mutex
	logf     func(format string, args ...any)
}

// The benchmark's pools, copies of the dev pool (same image, env, keys and
// daemon_url) differing only in what is named here, so that the designs are
// compared on otherwise equal machines.
type benchPool struct {
	name, app string
	design    string
	mode      pool.StandbyMode
	listen    bool // the agent also listens on TCP (HANGAR_AGENT_ADDR), for the direct path
}

var (
	tunnelStop    = benchPool{"bench-tunnel", "hangar-bench-tunnel", DesignTunnel, pool.StandbyStop, true}
	tunnelSuspend = benchPool{"bench-tunnel-susp", "hangar-bench-tunnel-susp", DesignTunnel, pool.StandbySuspend, false}
	legacyStop    = benchPool{"bench-legacy", "hangar-bench-legacy", DesignLegacy, pool.StandbyStop, false}
	legacySuspend = benchPool{"bench-legacy-susp", "hangar-bench-legacy-susp", DesignLegacy, pool.StandbySuspend, false}
)

// Run runs the benchmark and writes the report to opts.Out.
func Run(ctx context.Context, opts Options) (*Results, error) {
	if opts.HostileViewers > 0 && (opts.HostileFrames <= 0 || opts.HostileFrameSize <= 0) {
		return nil, errors.New("bench: hostile viewers need a frame count and size")
	}
	if opts.HostileDropWait <= 0 {
		opts.HostileDropWait = time.Minute
	}
	if opts.OnlyHostile {
		opts.Samples, opts.AttachSamples, opts.Bursts, opts.BurstSize, opts.ReadySamples, opts.StreamSessions = 1, 1, 1, 1, 1, 1
		opts.Streams = nil
	}
	if opts.Samples <= 0 || opts.AttachSamples <= 0 || opts.Bursts <= 0 || opts.BurstSize <= 0 || opts.ReadySamples <= 0 || opts.StreamSessions <= 0 {
		return nil, errors.New("bench: samples, attach samples, bursts, burst size, ready samples and stream sessions must be positive")
	}
	if opts.BurstSize > 6<<20 {
		return nil, errors.New("bench: the burst size must stay below the agent's 8 MiB ring (at most 6 MiB)")
	}
	opts.Streams = slices.Sorted(slices.Values(opts.Streams))
	if len(opts.Streams) > 0 && opts.Streams[0] <= 0 {
		return nil, errors.New("bench: stream counts must be positive")
	}
	if opts.Out == nil {
		opts.Out = os.Stdout
	}
	if opts.Logs == nil {
		opts.Logs = io.Discard
	}
	dir := opts.DataDir
	if dir == "" {
		d, err := os.MkdirTemp("", "hangar-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	}
	// Every stream costs an fd in this process and one or two in the
	// daemon (a client connection; in legacy mode also one to the agent,
	// which holds the other end); the daemon and agents inherit the limit
	// set here.
	if need := 2*maxOf(opts.Streams) + 1024; need > 0 {
		if got, err := raiseNoFile(uint64(need)); err != nil {
			logf("raise RLIMIT_NOFILE to %d: %v (limit %d)", need, err, got)
		}
	}
	res := &Results{BootDelay: opts.BootDelay, StreamSessions: opts.StreamSessions}
	if opts.HostileViewers > 0 {
		// A daemon of its own: the reading is its RSS growth.
		hr := newRun(opts, res, logf)
		if err := hr.hostilePhase(ctx, filepath.Join(dir, "hostile")); err != nil {
			return nil, fmt.Errorf("hostile viewers: %w", err)
		}
	}
	if opts.OnlyHostile {
		reportHostile(opts.Out, res.Hostile)
		return res, nil
	}
	r := newRun(opts, res, logf)
	if err := r.main(ctx, filepath.Join(dir, "main")); err != nil {
		return nil, err
	}
	for _, design := range []string{DesignTunnel, DesignLegacy} {
		if len(opts.Streams) == 0 || (design == DesignLegacy && res.LegacyErr != "") {
			continue
		}
		// A fresh daemon per design: Go keeps freed heap, so the second
		// design's streams would reuse the first one's pages and look cheap.
		sr := newRun(opts, res, logf)
		if err := sr.streamPhase(ctx, filepath.Join(dir, "streams-"+design), design); err != nil {
			return nil, fmt.Errorf("streams (%s): %w", design, err)
		}
	}
	report(opts.Out, res)
	if res.Hostile != nil {
		reportHostile(opts.Out, res.Hostile)
	}
	return res, nil
}

// hostilePhase runs the hostile-viewers measurement in a fresh daemon.
func (r *run) hostilePhase(ctx context.Context, dir string) error {
	if err := r.start(ctx, dir, 1); err != nil {
		return err
	}
	defer r.stop()
	r.logf("hostile viewers: %d x %d frames of %d bytes", r.opts.HostileViewers, r.opts.HostileFrames, r.opts.HostileFrameSize)
	h, err := r.hostile(ctx)
	if err != nil {
		return err
	}
	r.res.Hostile = h
	return nil
}

func maxOf(xs []int) int {
	if len(xs) == 0 {
		return 0
	}
	return slices.Max(xs)
}

func newRun(opts Options, res *Results, logf func(string, ...any)) *run {
	return &run{
		opts: opts, res: res, logf: logf,
		hc:   &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		apps: map[string]string{devenv.PoolName: devenv.AppName},
		sent: map[string]int64{},
	}
}

// start starts hangard dev with data in dir.
func (r *run) start(ctx context.Context, dir string, minStandby int) error {
	r.logf("starting hangard dev (data %s, boot delay %v)", dir, r.opts.BootDelay)
	dev, err := startDev(ctx, r.opts.Hangard, dir, r.opts.BootDelay, minStandby, r.opts.Logs)
	if err != nil {
		return err
	}
	r.dev = dev
	if r.api, err = client.New(dev.env["HANGAR_URL"], dev.env["HANGAR_TOKEN"], r.hc); err != nil {
		r.stop()
		return err
	}
	if r.fly, err = fly.New(fly.Options{BaseURL: dev.env["FLY_API_URL"], Token: dev.env["FLY_API_TOKEN"],
		// Its own budget, beside the daemon's: the emulator answers 429 when the
		// two together pass Fly's limits, and the bench waits them out.
		MaxAttempts: 30}); err != nil {
		r.stop()
		return err
	}
	return nil
}

// stop ends the run's sessions and stops its daemon.
func (r *run) stop() {
	if r.api != nil {
		r.endAll()
	}
	r.dev.stop()
}

// main measures the paths and session-ready latency in one daemon.
func (r *run) main(ctx context.Context, dir string) error {
	// The dev pool's own standbys would only add load: the benchmark's
	// pools are copies of it.
	if err := r.start(ctx, dir, 0); err != nil {
		return err
	}
	defer r.stop()
	pools := []benchPool{tunnelStop, tunnelSuspend}
	if !r.opts.NoLegacy {
		pools = append(pools, legacyStop, legacySuspend)
	} else {
		r.res.LegacyErr = "skipped (--no-legacy)"
	}
	// Every pool's standbys come up together, while the rest waits.
	for _, p := range pools {
		if err := r.createPool(ctx, p, 1); err != nil {
			if p.design != DesignLegacy {
				return err
			}
			r.res.LegacyErr = err.Error()
			r.logf("legacy design not measured: %v", err)
			pools = pools[:2]
			break
		}
	}

	sess, err := r.newSession(ctx, tunnelStop.name)
	if err != nil {
		return err
	}
	tunnel, direct, err := r.paths(ctx, sess, PathTunnel)
	if err != nil {
		return err
	}
	relay, err := startRelay(r.opts.Self)
	if err != nil {
		return err
	}
	defer relay.stop()
	all := []path{tunnel, direct, newRelayPath(relay.addr, direct.base, direct.machine, sess.ID, r.dev.key, r.hc)}
	if r.res.LegacyErr == "" {
		if err := func() error {
			ls, err := r.newSession(ctx, legacyStop.name)
			if err != nil {
				return err
			}
			legacy, _, err := r.paths(ctx, ls, PathLegacy)
			if err != nil {
				return err
			}
			// The daemon reaches a legacy agent only if the host reaches
			// its private IP: check before the phases count on it.
			if err := r.warmUp(ctx, legacy); err != nil {
				return err
			}
			all = append(all, legacy)
			return nil
		}(); err != nil {
			r.res.LegacyErr = err.Error()
			r.logf("legacy design not measured: %v", err)
		}
	}
	for _, p := range all {
		if err := r.warmUp(ctx, p); err != nil {
			return err
		}
	}
	r.logf("echo latency: %d samples per path", r.opts.Samples)
	if err := r.echo(ctx, all); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	r.logf("attach latency: %d samples per path", r.opts.AttachSamples)
	if err := r.attachLatency(ctx, all); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	r.logf("bulk output: %d bursts of %d bytes per path", r.opts.Bursts, r.opts.BurstSize)
	if err := r.bulk(ctx, all); err != nil {
		return fmt.Errorf("bulk: %w", err)
	}
	r.logf("session ready: %d samples per design and standby mode", r.opts.ReadySamples)
	for _, p := range pools {
		if p.design == DesignLegacy && r.res.LegacyErr != "" {
			continue
		}
		mode := Stopped
		if p.mode == pool.StandbySuspend {
			mode = Suspended
		}
		if err := r.ready(ctx, p, r.res.ready(p.design, mode)); err != nil {
			return fmt.Errorf("ready from a %s standby (%s): %w", mode, p.design, err)
		}
	}
	return nil
}

// devSpec reads the dev pool's spec from its template: hangard dev made
// it, with the daemon_url its agents dial (the agent listener on the
// emulator's internet address, which dev.env does not carry).
func (r *run) devSpec(ctx context.Context) (pool.Spec, error) {
	ms, err := r.fly.ListMachines(ctx, devenv.AppName, fly.ListMachinesOptions{Metadata: map[string]string{pool.KeyRole: pool.RoleTemplate}})
	if err != nil {
		return pool.Spec{}, fmt.Errorf("list the dev pool's templates: %w", err)
	}
	if len(ms) == 0 {
		return pool.Spec{}, errors.New("the dev pool has no template")
	}
	return pool.FromTemplate(devenv.AppName, &ms[0])
}

// createPool creates a copy of the dev pool in the embedded emulator with
// the shared pool package, as the provider would; the daemon's reconciler
// then creates its standbys (start, health check, stop or suspend).
func (r *run) createPool(ctx context.Context, p benchPool, minStandby int) error {
	spec, err := r.devSpec(ctx)
	if err != nil {
		return err
	}
	spec.Pool, spec.App, spec.StandbyMode = p.name, p.app, p.mode
	spec.MinStandby, spec.MaxMachines = minStandby, max(4, r.opts.StreamSessions+minStandby+1)
	spec.IdleTimeout, spec.SessionTTL = time.Hour, time.Hour
	spec.Env = maps.Clone(spec.Env)
	if spec.Env == nil {
		spec.Env = map[string]string{}
	}
	switch p.design {
	case DesignTunnel:
		if spec.DaemonURL == "" {
			return errors.New("the dev pool has no daemon_url: this hangard dev predates tunnels")
		}
	case DesignLegacy:
		spec.DaemonURL = "" // the daemon dials the agent at [private_ip]:agent_port
	}
	if p.listen {
		// In tunnel mode the agent listens on no TCP port unless told to:
		// the direct path needs one. [::] because the host dials the
		// machine's 6PN address.
		spec.Env["HANGAR_AGENT_ADDR"] = fmt.Sprintf("[::]:%d", spec.AgentPort)
	}
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("pool %s: %w", p.name, err)
	}
	if _, err := r.fly.CreateApp(ctx, fly.CreateAppRequest{Name: p.app, OrgSlug: r.dev.env["FLY_ORG"]}); err != nil && !errors.Is(err, fly.ErrConflict) {
		return fmt.Errorf("create pool %s's app: %w", p.name, err)
	}
	ms, err := r.fly.ListMachines(ctx, p.app, fly.ListMachinesOptions{Metadata: map[string]string{pool.KeyRole: pool.RoleTemplate}})
	if err != nil {
		return err
	}
	if len(ms) == 0 {
		if _, err := r.fly.CreateMachine(ctx, p.app, spec.CreateTemplateRequest()); err != nil {
			return fmt.Errorf("create pool %s's template: %w", p.name, err)
		}
	}
	r.apps[p.name] = p.app
	return nil
}

// newSession creates a session running the echo program and waits until
// it is ready. A session that fails is replaced (twice at most), as a user
// would start another, and reported among the warnings.
func (r *run) newSession(ctx context.Context, poolName string) (*client.Session, error) {
	for attempt := 0; ; attempt++ {
		s, err := r.tryNewSession(ctx, poolName)
		var failed *sessionFailed
		if !errors.As(err, &failed) || attempt == 2 {
			return s, err
		}
		r.logf("%v; creating another", err)
		r.mu.Lock()
		r.res.Warnings = append(r.res.Warnings, err.Error()+" (replaced by a new session)")
		r.mu.Unlock()
	}
}

// sessionFailed is a session that ended up failed instead of ready.
type sessionFailed struct{ id, pool, state, reason string }

func (e *sessionFailed) Error() string {
	return fmt.Sprintf("session %s in pool %s is %s: %s", e.id, e.pool, e.state, e.reason)
}

func (r *run) tryNewSession(ctx context.Context, poolName string) (*client.Session, error) {
	s, err := r.api.CreateSession(ctx, client.CreateSessionRequest{
		Pool: poolName, Mode: "pty", Cols: 120, Rows: 40,
		Command: []string{r.opts.Self, EchoCommand, "--burst", strconv.Itoa(r.opts.BurstSize)},
	})
	if err != nil {
		return nil, fmt.Errorf("create session in pool %s: %w", poolName, err)
	}
	r.mu.Lock()
	r.ended = append(r.ended, s.ID)
	r.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	s, err = r.api.WaitSession(wctx, s.ID, 5*time.Millisecond, func(s *client.Session) bool {
		return s.State == client.StateReady || client.Terminal(s.State)
	})
	if err != nil {
		return nil, err
	}
	if s.State != client.StateReady {
		return nil, &sessionFailed{s.ID, poolName, string(s.State), s.Reason}
	}
	return s, nil
}

// paths returns the way to the session's agent through the daemon (named
// name) and the way straight to it (at its private IP; only answered if
// the agent listens on TCP).
func (r *run) paths(ctx context.Context, s *client.Session, name string) (*daemonPath, *directPath, error) {
	app := r.apps[s.Pool]
	m, err := r.fly.GetMachine(ctx, app, s.MachineID)
	if err != nil {
		return nil, nil, fmt.Errorf("read machine %s: %w", s.MachineID, err)
	}
	port := pool.DefaultAgentPort
	if m.Config != nil {
		if v, err := strconv.Atoi(m.Config.Env[pool.EnvAgentPort]); err == nil {
			port = v
		}
	}
	d := &daemonPath{label: name, base: r.dev.env["HANGAR_URL"], token: r.dev.env["HANGAR_TOKEN"], session: s.ID, client: r.hc}
	return d, newDirectPath(agentapi.BaseURL(m.PrivateIP, port), m.ID, s.ID, r.dev.key, r.hc), nil
}

// endAll ends every session the run created.
func (r *run) endAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r.mu.Lock()
	ids := r.ended
	r.ended = nil
	r.mu.Unlock()
	var g errgroup.Group
	g.SetLimit(8)
	for _, id := range ids {
		g.Go(func() error {
			_, _ = r.api.EndSession(ctx, id)
			return nil
		})
	}
	_ = g.Wait()
}

// warmUp attaches once over p before anything is measured, retrying for up
// to a minute as a client told "unavailable, retry later" does: a session
// can be ready before the daemon reaches its agent over the path (seen
// with tunnels: the first attach's dials through the tunnel time out). The
// failures are reported, not hidden.
func (r *run) warmUp(ctx context.Context, p path) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	t0 := time.Now()
	for fails := 0; ; fails++ {
		s, err := attach(ctx, p, wire.RoleReader, -1, 0)
		if err == nil {
			s.close()
			if fails > 0 {
				r.res.Warnings = append(r.res.Warnings, fmt.Sprintf("%s: the first attach after the session was ready failed %d time(s) (%v) and succeeded %.1f s later",
					p.name(), fails, r.firstErr, time.Since(t0).Seconds()))
				r.firstErr = nil
			}
			return nil
		}
		if fails == 0 {
			r.firstErr = err
		}
		r.logf("warm-up attach (%s) failed, retrying: %v", p.name(), err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("warm-up attach (%s): %w (first error: %v)", p.name(), err, r.firstErr)
		case <-time.After(time.Second):
		}
	}
}

// echo measures keystroke echo latency in alternating blocks over every
// path, one writer attachment at a time, so that drifting machine load
// spreads over the paths alike.
func (r *run) echo(ctx context.Context, paths []path) error {
	const blocks = 10
	per := max(r.opts.Samples/blocks, 1)
	for b := 0; b < blocks; b++ {
		for _, p := range paths {
			lat, err := r.echoBlock(ctx, p, per, b == 0)
			if err != nil {
				return err
			}
			pr := r.res.path(p.name())
			pr.Echo = append(pr.Echo, lat...)
		}
	}
	return nil
}

func (r *run) echoBlock(ctx context.Context, p path, n int, warm bool) ([]time.Duration, error) {
	s, err := attach(ctx, p, wire.RoleWriter, -1, r.sent[p.sessionID()])
	if err != nil {
		return nil, err
	}
	defer s.close()
	if warm {
		n += 20
	}
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		key := []byte{byte('a' + i%26)}
		t0 := time.Now()
		if err := s.c.Write(ctx, websocket.MessageBinary, key); err != nil {
			return nil, fmt.Errorf("send key (%s): %w", p.name(), err)
		}
		r.sent[p.sessionID()]++
		for got := false; !got; {
			b, err := s.readOutput(ctx)
			if err != nil {
				return nil, fmt.Errorf("read echo (%s): %w", p.name(), err)
			}
			got = strings.IndexByte(string(b), key[0]) >= 0
		}
		out = append(out, time.Since(t0))
	}
	if warm {
		out = out[20:]
	}
	return out, nil
}

// attachLatency measures dial -> attached (a read-only viewer at the live
// tail), the paths taking turns; the first round warms connections up.
func (r *run) attachLatency(ctx context.Context, paths []path) error {
	for i := 0; i <= r.opts.AttachSamples; i++ {
		for _, p := range paths {
			t0 := time.Now()
			s, err := attach(ctx, p, wire.RoleReader, -1, 0)
			d := time.Since(t0)
			if err != nil {
				return err
			}
			s.close()
			if i > 0 {
				pr := r.res.path(p.name())
				pr.Attach = append(pr.Attach, d)
			}
		}
	}
	return nil
}

// bulk measures output throughput: live (the program writes a burst into
// its PTY, the client reads it) with the paths taking turns, and replay
// (the same burst read again from the agent's ring) over every path to
// the same session.
func (r *run) bulk(ctx context.Context, paths []path) error {
	for b := 0; b < r.opts.Bursts; b++ {
		for _, p := range paths {
			ws, err := attach(ctx, p, wire.RoleWriter, -1, r.sent[p.sessionID()])
			if err != nil {
				return err
			}
			start := ws.off
			end := start + int64(r.opts.BurstSize)
			t0 := time.Now()
			if err := ws.c.Write(ctx, websocket.MessageBinary, []byte{BurstByte}); err != nil {
				ws.close()
				return fmt.Errorf("ask for a burst (%s): %w", p.name(), err)
			}
			r.sent[p.sessionID()]++
			err = ws.readUntil(ctx, end)
			d := time.Since(t0)
			lost := ws.lost
			ws.close()
			if err != nil {
				return fmt.Errorf("read burst (%s): %w", p.name(), err)
			}
			pr := r.res.path(p.name())
			pr.Live = pr.Live.add(Throughput{bytes: end - start - lost, dur: d, lost: lost})
			// Replay the burst from the ring over every path to its
			// session, starting with the next one each time.
			var same []path
			for _, q := range paths {
				if q.sessionID() == p.sessionID() {
					same = append(same, q)
				}
			}
			for i := range same {
				rp := same[(b+i)%len(same)]
				t, err := replay(ctx, rp, start, end)
				if err != nil {
					return err
				}
				pr := r.res.path(rp.name())
				pr.Replay = pr.Replay.add(t)
			}
		}
	}
	return nil
}

func replay(ctx context.Context, p path, start, end int64) (Throughput, error) {
	s, err := attach(ctx, p, wire.RoleReader, start, 0)
	if err != nil {
		return Throughput{}, err
	}
	defer s.close()
	t0 := time.Now()
	if err := s.readUntil(ctx, end); err != nil {
		return Throughput{}, fmt.Errorf("replay (%s): %w", p.name(), err)
	}
	return Throughput{bytes: end - start - s.lost, dur: time.Since(t0), lost: s.lost}, nil
}

func (t Throughput) add(u Throughput) Throughput {
	return Throughput{bytes: t.bytes + u.bytes, dur: t.dur + u.dur, lost: t.lost + u.lost}
}

// ready measures session-ready latency from standbys of one pool: for each
// sample it waits until the reconciler has a standby at rest, creates a
// session, waits until it is ready and ends it. It records the daemon's
// own created→ready times and the times the client observed. For a
// tunnelled pool ready includes the agent dialling home (after a start) or
// redialling (after a resume), for a legacy one the daemon's first dial.
func (r *run) ready(ctx context.Context, p benchPool, out *ReadyResults) error {
	rest := []string{fly.StateCreated, fly.StateStopped}
	if p.mode == pool.StandbySuspend {
		rest = []string{fly.StateSuspended}
	}
	for i := 0; i < r.opts.ReadySamples; i++ {
		if err := r.waitStandby(ctx, p.app, rest); err != nil {
			return err
		}
		t0 := time.Now()
		s, err := r.newSession(ctx, p.name)
		if err != nil {
			return err
		}
		out.Observed = append(out.Observed, time.Since(t0))
		if s.CreatedAt != nil && s.ReadyAt != nil {
			out.Server = append(out.Server, s.ReadyAt.Sub(*s.CreatedAt))
		}
		if _, err := r.api.EndSession(ctx, s.ID); err != nil {
			return fmt.Errorf("end session %s: %w", s.ID, err)
		}
	}
	return nil
}

// waitStandby waits until app has a standby in one of the rest states.
func (r *run) waitStandby(ctx context.Context, app string, rest []string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		ms, err := r.fly.ListMachines(ctx, app, fly.ListMachinesOptions{Metadata: map[string]string{pool.KeyRole: pool.RoleStandby}})
		if err == nil {
			for _, m := range ms {
				if slices.Contains(rest, m.State) {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no %v standby in %s: %w", rest, app, ctx.Err())
		case <-time.After(standbyPoll):
		}
	}
}

// standbyPoll spaces waitStandby's listings. Fly (and the emulator) allow
// one machine listing per app and second, bursts of 3, for all callers
// together: listing every 20 ms took the whole budget, the daemon's
// reconciler got only 429s and never refilled the standby being waited
// for. The wait is between samples, outside every measured latency.
const standbyPoll = 2 * time.Second

// streamPhase starts a fresh hangard dev, attaches the idle viewers
// through it to sessions of the design's pool and reads the daemon's
// figures at each stream count.
func (r *run) streamPhase(ctx context.Context, dir, design string) error {
	if err := r.start(ctx, dir, 0); err != nil {
		return err
	}
	defer r.stop()
	poolName := devenv.PoolName // daemon_url set: the tunnel design
	if design == DesignLegacy {
		// No standbys: the sessions clone cold, and nothing else runs.
		if err := r.createPool(ctx, legacyStop, 0); err != nil {
			return err
		}
		poolName = legacyStop.name
	}
	if lim, err := readNoFile(r.dev.pid()); err == nil {
		r.res.NoFile = lim
	}
	var sessions []*client.Session
	for i := 0; i < r.opts.StreamSessions; i++ {
		s, err := r.newSession(ctx, poolName)
		if err != nil {
			return err
		}
		sessions = append(sessions, s)
	}
	var paths []path
	for _, s := range sessions {
		d, _, err := r.paths(ctx, s, design)
		if err != nil {
			return err
		}
		// One warm-up attach per session: the daemon's first use of a
		// session's agent (its tunnel's or connection's buffers) is not a
		// per-stream cost.
		if err := r.warmUp(ctx, d); err != nil {
			return err
		}
		paths = append(paths, d)
	}
	r.logf("idle streams (%s): %v read-only viewers over %d sessions", design, r.opts.Streams, r.opts.StreamSessions)
	settle()
	before, err := readProcStatus(r.dev.pid())
	if err != nil {
		return err
	}
	gBefore, hBefore, sBefore := r.goMetrics(ctx)

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		conns   []*stream
		readers sync.WaitGroup
	)
	defer func() {
		cancel()
		for _, s := range conns {
			s.c.CloseNow()
		}
		readers.Wait()
	}()
	for _, n := range r.opts.Streams {
		fresh := make([]*stream, n-len(conns))
		var g errgroup.Group
		g.SetLimit(32)
		for i := range fresh {
			k := len(conns) + i
			g.Go(func() error {
				s, err := attach(sctx, paths[k%len(paths)], wire.RoleReader, -1, 0)
				if err != nil {
					return fmt.Errorf("viewer %d: %w", k, err)
				}
				fresh[i] = s
				return nil
			})
		}
		werr := g.Wait()
		for _, s := range fresh {
			if s == nil {
				continue
			}
			conns = append(conns, s)
			// Read, as a client does: pings are answered and the
			// connection is not stalled.
			readers.Add(1)
			go func() {
				defer readers.Done()
				for {
					if _, err := s.readOutput(sctx); err != nil {
						return
					}
				}
			}()
		}
		if werr != nil {
			return werr
		}
		settle()
		after, err := readProcStatus(r.dev.pid())
		if err != nil {
			return err
		}
		gAt, hAt, sAt := r.goMetrics(ctx)
		r.res.Streams = append(r.res.Streams, StreamResults{
			Design: design, Count: n, Before: before, After: after,
			GoroutinesBefore: gBefore, GoroutinesAt: gAt, HeapBefore: hBefore, HeapAt: hAt, StackBefore: sBefore, StackAt: sAt,
		})
		r.logf("  %d streams: RSS %d -> %d KiB, threads %d -> %d", n, before.RSSKiB, after.RSSKiB, before.Threads, after.Threads)
	}
	return nil
}

// settle lets the daemon's allocations and GC settle before a reading.
func settle() { time.Sleep(3 * time.Second) }

// goMetrics reads go_goroutines and the heap and stack bytes in use from
// the daemon's /metrics (zero when unavailable): apart, because stacks
// (goroutines per stream) and heap (buffers per stream) have different
// remedies.
func (r *run) goMetrics(ctx context.Context) (goroutines, heap, stack float64) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(r.dev.env["HANGAR_URL"], "/")+"/metrics", nil)
	if err != nil {
		return 0, 0, 0
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return 0, 0, 0
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "go_goroutines":
			goroutines = v
		case "go_memstats_heap_inuse_bytes":
			heap = v
		case "go_memstats_stack_inuse_bytes":
			stack = v
		}
	}
	return goroutines, heap, stack
}
