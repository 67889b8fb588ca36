// Package bench is hangar's benchmark program (make bench): it starts the
// real `hangard dev` on loopback and measures, through the daemon and
// straight to the agent of the same session, keystroke echo latency and
// bulk output throughput; session-ready latency from a stopped and from a
// suspended standby (the emulator's boot delay reported apart); and the
// daemon's memory and OS threads per attached idle stream. It prints one
// side-by-side report with the daemon/direct ratios against the bars.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
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
	// Bursts is the number of bulk bursts per path; BurstSize their size.
	Bursts, BurstSize int
	// ReadySamples is the number of session-ready samples per standby mode.
	ReadySamples int
	// Streams is the number of idle read-only viewers, spread over
	// StreamSessions sessions.
	Streams, StreamSessions int
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
	// Out receives the report; Logs the daemon's stderr.
	Out, Logs io.Writer
}

// Results are a run's figures.
type Results struct {
	// Paths holds the echo and bulk figures by path: "daemon" (through
	// hangard), "direct" (straight to the agent) and "relay" (through the
	// bare reference relay, the floor of any extra hop on this machine).
	Paths                          map[string]*PathResults
	ReadyStopped, ReadySuspended   []time.Duration
	ObservedStopped, ObservedSusp  []time.Duration
	BootDelay                      time.Duration
	Streams, StreamSessions        int
	Before, After                  procStatus
	GoroutinesBefore, GoroutinesAt float64
	HeapBefore, HeapAt             float64 // go heap + stacks in use, bytes
	Hostile                        *HostileResults
}

// PathResults are the echo and bulk figures of one path.
type PathResults struct {
	Echo         []time.Duration
	Live, Replay Throughput
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

// run is the state of one benchmark run.
type run struct {
	opts  Options
	dev   *devDaemon
	api   *client.Client
	fly   *fly.Client
	hc    *http.Client
	res   Results
	ended []string
	mu    sync.Mutex
	logf  func(format string, args ...any)
}

const (
	suspendPool = "bench-suspend"
	suspendApp  = "hangar-bench-suspend"
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
		opts.Samples, opts.Bursts, opts.BurstSize, opts.ReadySamples, opts.StreamSessions = 1, 1, 1, 1, 1
	}
	if opts.Samples <= 0 || opts.Bursts <= 0 || opts.BurstSize <= 0 || opts.ReadySamples <= 0 || opts.Streams < 0 || opts.StreamSessions <= 0 {
		return nil, errors.New("bench: samples, bursts, burst size, ready samples and stream sessions must be positive")
	}
	if opts.BurstSize > 6<<20 {
		return nil, errors.New("bench: the burst size must stay below the agent's 8 MiB ring (at most 6 MiB)")
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
	r := &run{opts: opts, hc: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	r.res.BootDelay, r.res.Streams, r.res.StreamSessions = opts.BootDelay, opts.Streams, opts.StreamSessions
	r.logf = func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	}

	r.logf("starting hangard dev (data %s, boot delay %v)", dir, opts.BootDelay)
	dev, err := startDev(ctx, opts.Hangard, dir, opts.BootDelay, opts.Logs)
	if err != nil {
		return nil, err
	}
	defer dev.stop()
	r.dev = dev
	if r.api, err = client.New(dev.env["HANGAR_URL"], dev.env["HANGAR_TOKEN"], r.hc); err != nil {
		return nil, err
	}
	if r.fly, err = fly.New(fly.Options{BaseURL: dev.env["FLY_API_URL"], Token: dev.env["FLY_API_TOKEN"]}); err != nil {
		return nil, err
	}
	defer r.endAll()

	if opts.OnlyHostile {
		if opts.HostileViewers > 0 {
			r.logf("hostile viewers: %d x %d frames of %d bytes", opts.HostileViewers, opts.HostileFrames, opts.HostileFrameSize)
			if r.res.Hostile, err = r.hostile(ctx); err != nil {
				return nil, fmt.Errorf("hostile viewers: %w", err)
			}
			reportHostile(opts.Out, r.res.Hostile)
		}
		return &r.res, nil
	}

	// The suspend-mode pool's standbys come up while the rest runs.
	if err := r.createSuspendPool(ctx); err != nil {
		return nil, err
	}

	sess, err := r.newSession(ctx, devenv.PoolName)
	if err != nil {
		return nil, err
	}
	daemon, direct, err := r.paths(ctx, sess)
	if err != nil {
		return nil, err
	}
	relay, err := startRelay(opts.Self)
	if err != nil {
		return nil, err
	}
	defer relay.stop()
	dp := direct.(*directPath)
	ref := newRelayPath(relay.addr, dp.base, dp.machine, sess.ID, r.dev.key, r.hc)
	all := []path{daemon, direct, ref}
	r.logf("echo latency: %d samples per path", opts.Samples)
	if err := r.echo(ctx, all); err != nil {
		return nil, fmt.Errorf("echo: %w", err)
	}
	r.logf("bulk output: %d bursts of %d bytes per path", opts.Bursts, opts.BurstSize)
	if err := r.bulk(ctx, all); err != nil {
		return nil, fmt.Errorf("bulk: %w", err)
	}
	r.logf("session ready: %d samples per standby mode", opts.ReadySamples)
	if r.res.ReadyStopped, r.res.ObservedStopped, err = r.ready(ctx, devenv.PoolName, devenv.AppName, fly.StateCreated); err != nil {
		return nil, fmt.Errorf("ready from a stopped standby: %w", err)
	}
	if r.res.ReadySuspended, r.res.ObservedSusp, err = r.ready(ctx, suspendPool, suspendApp, fly.StateSuspended); err != nil {
		return nil, fmt.Errorf("ready from a suspended standby: %w", err)
	}
	if opts.Streams > 0 {
		r.logf("idle streams: %d read-only viewers over %d sessions", opts.Streams, opts.StreamSessions)
		if err := r.streams(ctx); err != nil {
			return nil, fmt.Errorf("streams: %w", err)
		}
	}
	if opts.HostileViewers > 0 {
		r.logf("hostile viewers: %d x %d frames of %d bytes", opts.HostileViewers, opts.HostileFrames, opts.HostileFrameSize)
		if r.res.Hostile, err = r.hostile(ctx); err != nil {
			return nil, fmt.Errorf("hostile viewers: %w", err)
		}
	}
	report(opts.Out, &r.res)
	if r.res.Hostile != nil {
		reportHostile(opts.Out, r.res.Hostile)
	}
	return &r.res, nil
}

// createSuspendPool creates a suspend-mode pool in the embedded emulator
// with the shared pool package, as the provider would; the daemon's
// reconciler then creates (start, health check, suspend) its standbys.
func (r *run) createSuspendPool(ctx context.Context) error {
	spec := pool.Spec{
		Pool: suspendPool, App: suspendApp, Regions: []string{devenv.Region}, Image: devenv.DevImage,
		Guest:      pool.Guest{CPUKind: pool.DefaultCPUKind, CPUs: 1, MemoryMB: 1024},
		Env:        map[string]string{"HANGAR_WORKSPACE": "workspace"},
		MinStandby: 1, MaxMachines: 4, StandbyMode: pool.StandbySuspend,
		IdleTimeout: time.Hour, SessionTTL: time.Hour, AgentPort: pool.DefaultAgentPort,
		BrokerPublicKeys: []string{r.dev.env["HANGAR_BROKER_PUBLIC_KEY"]},
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	if _, err := r.fly.CreateApp(ctx, fly.CreateAppRequest{Name: suspendApp, OrgSlug: r.dev.env["FLY_ORG"]}); err != nil && !errors.Is(err, fly.ErrConflict) {
		return fmt.Errorf("create the suspend pool's app: %w", err)
	}
	ms, err := r.fly.ListMachines(ctx, suspendApp, fly.ListMachinesOptions{Metadata: map[string]string{pool.KeyRole: pool.RoleTemplate}})
	if err != nil {
		return err
	}
	if len(ms) == 0 {
		if _, err := r.fly.CreateMachine(ctx, suspendApp, spec.CreateTemplateRequest()); err != nil {
			return fmt.Errorf("create the suspend pool's template: %w", err)
		}
	}
	return nil
}

// newSession creates a session running the echo program and waits until it is ready.
func (r *run) newSession(ctx context.Context, poolName string) (*client.Session, error) {
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
		return nil, fmt.Errorf("session %s is %s: %s", s.ID, s.State, s.Reason)
	}
	return s, nil
}

// paths returns the two ways to the session's agent.
func (r *run) paths(ctx context.Context, s *client.Session) (path, path, error) {
	app := devenv.AppName
	if s.Pool == suspendPool {
		app = suspendApp
	}
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
	d := &daemonPath{base: r.dev.env["HANGAR_URL"], token: r.dev.env["HANGAR_TOKEN"], session: s.ID, client: r.hc}
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

// inputSent counts the input bytes the run sent to the echo session over
// every attachment, so that each new writer resumes input at the right offset.
type writer struct {
	sent int64
}

// echo measures keystroke echo latency in alternating blocks over every
// path, one writer attachment at a time.
func (r *run) echo(ctx context.Context, paths []path) error {
	var w writer
	const blocks = 10
	per := max(r.opts.Samples/blocks, 1)
	for b := 0; b < blocks; b++ {
		for _, p := range paths {
			lat, err := w.echoBlock(ctx, p, per, b == 0)
			if err != nil {
				return err
			}
			pr := r.res.path(p.name())
			pr.Echo = append(pr.Echo, lat...)
		}
	}
	return nil
}

func (w *writer) echoBlock(ctx context.Context, p path, n int, warm bool) ([]time.Duration, error) {
	s, err := attach(ctx, p, wire.RoleWriter, -1, w.sent)
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
		w.sent++
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

// bulk measures output throughput: live (the program writes a burst into
// its PTY, the client reads it) with the paths taking turns, and replay
// (the same burst read again from the agent's ring) over every path.
func (r *run) bulk(ctx context.Context, paths []path) error {
	var w writer
	// The echo phase's input count: ask the agent.
	s, err := attach(ctx, paths[1], wire.RoleReader, -1, 0)
	if err != nil {
		return err
	}
	w.sent = s.attached.InputApplied
	s.close()
	for b := 0; b < len(paths)*r.opts.Bursts; b++ {
		p := paths[b%len(paths)]
		ws, err := attach(ctx, p, wire.RoleWriter, -1, w.sent)
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
		w.sent++
		err = ws.readUntil(ctx, end)
		d := time.Since(t0)
		lost := ws.lost
		ws.close()
		if err != nil {
			return fmt.Errorf("read burst (%s): %w", p.name(), err)
		}
		pr := r.res.path(p.name())
		pr.Live = pr.Live.add(Throughput{bytes: end - start - lost, dur: d, lost: lost})
		// Replay the burst from the ring over every path, in turns.
		for i := range paths {
			rp := paths[(b+i)%len(paths)]
			t, err := replay(ctx, rp, start, end)
			if err != nil {
				return err
			}
			pr := r.res.path(rp.name())
			pr.Replay = pr.Replay.add(t)
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
// session, waits until it is ready and ends it. It returns the daemon's
// own created→ready times and the times the client observed.
func (r *run) ready(ctx context.Context, poolName, app, restState string) ([]time.Duration, []time.Duration, error) {
	var server, observed []time.Duration
	for i := 0; i < r.opts.ReadySamples; i++ {
		if err := r.waitStandby(ctx, app, restState); err != nil {
			return nil, nil, err
		}
		t0 := time.Now()
		s, err := r.newSession(ctx, poolName)
		if err != nil {
			return nil, nil, err
		}
		observed = append(observed, time.Since(t0))
		if s.CreatedAt != nil && s.ReadyAt != nil {
			server = append(server, s.ReadyAt.Sub(*s.CreatedAt))
		}
		if _, err := r.api.EndSession(ctx, s.ID); err != nil {
			return nil, nil, fmt.Errorf("end session %s: %w", s.ID, err)
		}
	}
	return server, observed, nil
}

// waitStandby waits until app has a standby in state restState.
func (r *run) waitStandby(ctx context.Context, app, restState string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		ms, err := r.fly.ListMachines(ctx, app, fly.ListMachinesOptions{Metadata: map[string]string{pool.KeyRole: pool.RoleStandby}})
		if err == nil {
			for _, m := range ms {
				if m.State == restState {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no %s standby in %s: %w", restState, app, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// streams attaches Streams idle read-only viewers through the daemon and
// reads the daemon's RSS and threads before and after.
func (r *run) streams(ctx context.Context) error {
	var sessions []*client.Session
	for i := 0; i < r.opts.StreamSessions; i++ {
		s, err := r.newSession(ctx, devenv.PoolName)
		if err != nil {
			return err
		}
		sessions = append(sessions, s)
	}
	var paths []path
	for _, s := range sessions {
		d, _, err := r.paths(ctx, s)
		if err != nil {
			return err
		}
		// One warm-up attach per session: the daemon's first use of a
		// session's agent is not a per-stream cost.
		st, err := attach(ctx, d, wire.RoleReader, -1, 0)
		if err != nil {
			return err
		}
		st.close()
		paths = append(paths, d)
	}
	// Let the daemon's allocations and GC settle before each reading.
	settle := func() { time.Sleep(2 * time.Second) }
	settle()
	var err error
	if r.res.Before, err = readProcStatus(r.dev.pid()); err != nil {
		return err
	}
	r.res.GoroutinesBefore, r.res.HeapBefore = r.goMetrics(ctx)

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conns := make([]*stream, r.opts.Streams)
	var g errgroup.Group
	g.SetLimit(32)
	for i := range conns {
		g.Go(func() error {
			s, err := attach(sctx, paths[i%len(paths)], wire.RoleReader, -1, 0)
			if err != nil {
				return fmt.Errorf("viewer %d: %w", i, err)
			}
			conns[i] = s
			return nil
		})
	}
	werr := g.Wait()
	var readers sync.WaitGroup
	for _, s := range conns {
		if s == nil {
			continue
		}
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
	defer func() {
		cancel()
		for _, s := range conns {
			if s != nil {
				s.c.CloseNow()
			}
		}
		readers.Wait()
	}()
	if werr != nil {
		return werr
	}
	settle()
	if r.res.After, err = readProcStatus(r.dev.pid()); err != nil {
		return err
	}
	r.res.GoroutinesAt, r.res.HeapAt = r.goMetrics(ctx)
	return nil
}

// goMetrics reads go_goroutines and the heap and stack bytes in use from
// the daemon's /metrics (zero when unavailable).
func (r *run) goMetrics(ctx context.Context) (goroutines, inuse float64) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(r.dev.env["HANGAR_URL"], "/")+"/metrics", nil)
	if err != nil {
		return 0, 0
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, 0
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
		case "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes":
			inuse += v
		}
	}
	return goroutines, inuse
}
