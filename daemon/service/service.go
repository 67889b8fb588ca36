// Package service assembles one hangard replica from its parts (store, Fly
// client, pools cache, sessions manager, broker, HTTP server) and runs it
// until its context ends, then shuts it down gracefully: no new work, in-flight
// claims finish, running sessions keep running in their VMs.
//
// Background workers (the pool reconciler) plug in through Options.Workers
// and get the replica's shared parts in Deps.
package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"

	"github.com/hangarhq/hangar/daemon/agents"
	"github.com/hangarhq/hangar/daemon/auth"
	"github.com/hangarhq/hangar/daemon/broker"
	"github.com/hangarhq/hangar/daemon/config"
	"github.com/hangarhq/hangar/daemon/health"
	"github.com/hangarhq/hangar/daemon/metrics"
	"github.com/hangarhq/hangar/daemon/poolcache"
	"github.com/hangarhq/hangar/daemon/server"
	"github.com/hangarhq/hangar/daemon/sessions"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/tunnel"
	"github.com/hangarhq/hangar/internal/version"
)

// Deps are a replica's shared parts, handed to background workers.
type Deps struct {
	// DaemonID identifies this replica, stable across its restarts when
	// configured or derivable (see ReplicaID).
	DaemonID string
	Config   config.Config
	Store    store.Store
	Fly      *fly.Client
	Pools    *poolcache.Cache
	Sessions *sessions.Manager
	Signer   *agentauth.Signer
	// Agents reaches agents (through their tunnels, or dialled).
	Agents *agents.Router
	// Tunnels holds the agent tunnels of this replica.
	Tunnels *tunnel.Registry
	Metrics *metrics.Metrics
	Logger  hclog.Logger
	// Health is the replica's view of its dependencies (readiness).
	Health *health.Tracker
}

// Worker is a background loop run for the replica's lifetime (e.g. the
// reconciler). Run should return when ctx ends; an error is logged.
type Worker struct {
	Name string
	Run  func(ctx context.Context, d *Deps) error
}

// Options configure a replica beyond its Config.
type Options struct {
	Config config.Config
	// Logger overrides the one built from Config.LogFormat/LogLevel.
	Logger hclog.Logger
	// LogOutput is where the built logger writes (default stderr).
	LogOutput io.Writer
	// Listener overrides listening on Config.Listen.
	Listener net.Listener
	// AgentListener, if set, serves the same API on a second address, for
	// agents that cannot reach Listener (hangard dev: the emulator's
	// internet address). Production agents use the public URL.
	AgentListener net.Listener
	// InternalListener overrides listening on Config.InternalListen.
	InternalListener net.Listener
	// Store overrides opening Config.StoreDSN (the replica then does not close it).
	Store store.Store
	// Workers run in the background (the reconciler plugs in here).
	Workers []Worker
	// DefaultCommand maps pool names to the argv of sessions that name none.
	DefaultCommand map[string][]string
	// AllowFileRepos lets file:// repos through (dev mode and tests).
	AllowFileRepos bool
	// Web overrides the web terminal handler at "/".
	Web http.Handler
	// DispatchInterval overrides how often pending claims are looked at while
	// a pool waits for capacity.
	DispatchInterval time.Duration
	// HTTPTimeouts override the HTTP server's timeouts (zero fields: the
	// defaults).
	HTTPTimeouts HTTPTimeouts
	// AttachLimits cap concurrent attachments (zero fields: the defaults).
	AttachLimits server.AttachLimits
}

// HTTPTimeouts bound every request on the daemon's HTTP server, so that a
// trickled request body or an idle keep-alive connection cannot be held
// open for ever. Streams live on: an attach leaves them behind when it is
// upgraded, and the event stream extends its own write deadline per event.
type HTTPTimeouts struct {
	// ReadHeader bounds reading a request's headers (10 s).
	ReadHeader time.Duration
	// Read bounds reading a whole request, body included (30 s).
	Read time.Duration
	// Write bounds writing the answer, counted from the end of the headers
	// (2 min).
	Write time.Duration
	// Idle closes a keep-alive connection unused for that long (2 min).
	Idle time.Duration
}

// Default HTTP server timeouts.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 2 * time.Minute
	DefaultIdleTimeout       = 2 * time.Minute
)

// attachLimits are the options' limits, else the configuration's.
func attachLimits(l server.AttachLimits, cfg config.Config) server.AttachLimits {
	if l == (server.AttachLimits{}) {
		l = server.AttachLimits{PerSession: cfg.MaxAttachesPerSession, PerTicket: cfg.MaxAttachesPerTicket, PerTenant: cfg.MaxAttachesPerTenant}
	}
	return l
}

func (t HTTPTimeouts) withDefaults() HTTPTimeouts {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&t.ReadHeader, DefaultReadHeaderTimeout)
	def(&t.Read, DefaultReadTimeout)
	def(&t.Write, DefaultWriteTimeout)
	def(&t.Idle, DefaultIdleTimeout)
	return t
}

// Daemon is a running replica.
type Daemon struct {
	Deps
	// URL is the replica's base URL (http(s)://host:port).
	URL string

	opts     Options
	http     *http.Server
	internal *http.Server
	api      *server.Server
	ln       net.Listener
	// internalLn is the replica-to-replica listener (nil: none) and
	// advertised the address other replicas reach it on.
	internalLn net.Listener
	advertised string
	ownsStore  bool
	cancel     context.CancelFunc
	streams    context.CancelFunc
	done       chan struct{}
	closeOnce  sync.Once
	err        error
}

// NewLogger builds the daemon's logger from the configured format and level.
func NewLogger(cfg config.Config, out io.Writer) hclog.Logger {
	if out == nil {
		out = os.Stderr
	}
	return hclog.New(&hclog.LoggerOptions{
		Name: "hangard", Level: hclog.LevelFromString(cfg.LogLevel), Output: out,
		JSONFormat: cfg.LogFormat == "json",
	})
}

// Start opens the store, connects to Fly, starts serving and the
// replica's loops. It fails (and cleans up) when the broker key is
// missing, the store cannot be opened or the address cannot be bound.
//
// It runs in four steps: open (identity, broker key, store), listen (the
// public listener, which fixes the replica's URL), build (every part, from
// the Fly client to the HTTP server; the internal listener too) and run
// (the loops and the servers).
func Start(ctx context.Context, opts Options) (*Daemon, error) {
	d := &Daemon{opts: opts, done: make(chan struct{})}
	d.Config, d.Logger = opts.Config, opts.Logger
	if d.Logger == nil {
		d.Logger = NewLogger(d.Config, opts.LogOutput)
	}
	for _, step := range []func(context.Context) error{d.open, d.listen, d.build} {
		if err := step(ctx); err != nil {
			d.release()
			return nil, err
		}
	}
	d.run()
	d.Logger.Info("hangard started", "version", version.Get(), "daemon", d.DaemonID, "url", d.URL, "fly", d.Fly.BaseURL(), "org", d.Config.FlyOrg,
		"agent_url", d.Config.TunnelAudience(d.URL), "oidc_issuer", d.Config.OIDCIssuer(), "internal", d.advertised)
	return d, nil
}

// open settles the replica's identity and broker key and opens its store.
func (d *Daemon) open(ctx context.Context) error {
	keyText, err := d.Config.LoadBrokerKey()
	if err != nil {
		return err
	}
	key, err := agentauth.ParsePrivateKey(keyText)
	if err != nil {
		return fmt.Errorf("broker key: %w", err)
	}
	d.Signer = agentauth.NewSigner(key)
	if d.DaemonID, err = ReplicaID(d.Config, os.Getenv); err != nil {
		return err
	}
	d.Store = d.opts.Store
	if d.Store == nil {
		if d.Store, err = store.Open(ctx, d.Config.StoreDSN); err != nil {
			return fmt.Errorf("open store: %w", err)
		}
		d.ownsStore = true
	}
	// A previous process of this replica may have announced agent tunnels
	// that died with it: forget them, so no replica relays to them. (Its
	// unfinished claims are settled when the sessions manager runs.)
	if err := d.Store.ForgetDaemon(ctx, d.DaemonID); err != nil {
		return fmt.Errorf("forget the previous process of replica %s: %w", d.DaemonID, err)
	}
	return nil
}

// listen binds the public listener (TLS when configured), which gives the
// replica its URL.
func (d *Daemon) listen(context.Context) error {
	ln := d.opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", d.Config.Listen); err != nil {
			return fmt.Errorf("listen on %s: %w", d.Config.Listen, err)
		}
	}
	scheme := "http"
	if d.Config.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(d.Config.TLSCert, d.Config.TLSKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("load TLS certificate: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	d.ln = ln
	d.URL = scheme + "://" + ln.Addr().String()
	return nil
}

// build makes the replica's parts: metrics and readiness, the Fly client
// (paced from the store's shared budget), the pools cache, the agent
// tunnels, the sessions manager, the broker, the API and its HTTP server.
func (d *Daemon) build(ctx context.Context) error {
	cfg, log, st := d.Config, d.Logger, d.Store
	d.Metrics = metrics.New(func(ctx context.Context) (map[string]int, error) {
		if d.Sessions == nil {
			return nil, nil
		}
		return d.Sessions.CountByState(ctx)
	})
	d.Health = health.New()
	// The heartbeat writes every interval: three missed in a row, or one
	// failed, and the replica is not ready.
	d.Health.Expect(health.CheckStoreWrite, 3*cfg.HeartbeatInterval, false)
	d.Health.Expect(health.CheckFly, 0, true)
	var err error
	d.Fly, err = fly.New(fly.Options{
		BaseURL: cfg.FlyAPIURL, Token: cfg.FlyAPIToken, Logger: log.Named("fly"),
		UserAgent: "hangard/" + version.Get(),
		OnResponse: func(method, action string, status int, err error) {
			d.Metrics.ObserveFly(method, action, status, err)
			observeFlyHealth(d.Health, status, err)
		},
		// Fly's rate limits are per organisation: every replica draws from
		// one budget per action and machine (or app), kept in the store.
		Pacer: storePacer{st},
	})
	if err != nil {
		return fmt.Errorf("fly client: %w", err)
	}
	d.Pools = poolcache.New(d.Fly, cfg.FlyOrg, log.Named("pools"))
	// One replica's periodic read of the pools serves all of them.
	d.Pools.Share(st, cfg.PoolRefresh)
	if err := d.startTunnels(ctx, cfg); err != nil {
		return err
	}
	d.Sessions = sessions.New(sessions.Config{
		DaemonID: d.DaemonID, Store: st, Fly: d.Fly, Pools: d.Pools, Signer: d.Signer, Logger: log,
		Metrics: d.Metrics, Workers: cfg.ClaimWorkers, HeartbeatInterval: cfg.HeartbeatInterval,
		DeadAfter: cfg.DeadAfter, SweepInterval: cfg.SweepInterval, ReadyTimeout: cfg.ReadyTimeout,
		DispatchInterval: d.opts.DispatchInterval, DefaultCommand: d.opts.DefaultCommand,
		AllowFileRepos: d.opts.AllowFileRepos, Agents: d.Agents, Health: d.Health,
	})
	brk := broker.New(broker.Config{
		Signer: d.Signer, Logger: log.Named("broker"),
		Hooks: broker.Hooks{Bytes: func(toClient bool, n int) {
			dir := "to_agent"
			if toClient {
				dir = "to_client"
			}
			d.Metrics.BytesBrokered.WithLabelValues(dir).Add(float64(n))
		}},
	})
	d.api = server.New(server.Config{
		Store: st, Sessions: d.Sessions, Pools: d.Pools, Broker: brk,
		Auth: &auth.Authenticator{Store: st, AdminKey: cfg.AdminKey}, Metrics: d.Metrics, Logger: log,
		PublicURL: cfg.PublicURL, TrustedProxyHeaders: cfg.TrustedProxyHeaders,
		AllowedOrigins: cfg.AllowedOrigins, ReadyTimeout: cfg.ReadyTimeout, Web: d.opts.Web,
		Tunnels: http.HandlerFunc(d.Tunnels.ServeTunnel), AttachLimits: attachLimits(d.opts.AttachLimits, cfg), Health: d.Health,
	})
	d.Metrics.SetReadiness(d.api.Readiness)

	// Streams (attaches, event streams) live in a context of their own that
	// shutdown cancels first: clients then reconnect to another replica.
	streamCtx, cancelStreams := context.WithCancel(context.Background())
	d.streams = cancelStreams
	to := d.opts.HTTPTimeouts.withDefaults()
	d.http = &http.Server{
		Handler: d.api, ReadHeaderTimeout: to.ReadHeader, ReadTimeout: to.Read,
		WriteTimeout: to.Write, IdleTimeout: to.Idle,
		BaseContext: func(net.Listener) context.Context { return streamCtx },
		ErrorLog:    log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	return nil
}

// release undoes what a failed Start had opened.
func (d *Daemon) release() {
	if d.internalLn != nil {
		d.internalLn.Close()
	}
	if d.Tunnels != nil {
		d.Tunnels.Close()
	}
	if d.ln != nil {
		d.ln.Close()
	}
	if d.ownsStore && d.Store != nil {
		d.Store.Close()
	}
}

// run starts the replica's loops (pools refresh, sessions, the workers) and
// its servers; done closes once the loops have stopped after cancel (or a
// server failed).
func (d *Daemon) run() {
	log := d.Logger
	runCtx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	// Loops end with runCtx; a worker's error is logged, not fatal.
	var loops errgroup.Group
	loops.Go(func() error { d.Pools.Run(runCtx, d.Config.PoolRefresh); return nil })
	loops.Go(func() error { d.Sessions.Run(runCtx); return nil })
	for _, w := range d.opts.Workers {
		loops.Go(func() error {
			if err := w.Run(runCtx, &d.Deps); err != nil && runCtx.Err() == nil {
				log.Error("background worker stopped", "worker", w.Name, "error", err)
			}
			return nil
		})
	}
	served := make(chan error, 2)
	go func() { served <- d.http.Serve(d.ln) }()
	if d.opts.AgentListener != nil {
		go func() { served <- d.http.Serve(d.opts.AgentListener) }()
	}
	if d.internal != nil {
		go func() {
			if err := d.internal.Serve(d.internalLn); !errors.Is(err, http.ErrServerClosed) {
				log.Error("internal listener stopped", "error", err)
			}
		}()
	}
	go func() {
		select {
		case err := <-served:
			if !errors.Is(err, http.ErrServerClosed) {
				d.err = err
				log.Error("HTTP server stopped", "error", err)
				cancel()
			}
		case <-runCtx.Done():
		}
		_ = loops.Wait()
		close(d.done)
	}()
}

// startTunnels sets up the agent tunnels of this replica: the identity
// verifier (Fly OIDC, tokens single-use across replicas), the admission of
// machines of the daemon's pools, the registry, and the internal listener
// other replicas relay through.
func (d *Daemon) startTunnels(ctx context.Context, cfg config.Config) error {
	audience := cfg.TunnelAudience(d.URL)
	verifier, err := tunnel.NewOIDCVerifier(tunnel.OIDCConfig{
		Issuer: cfg.OIDCIssuer(), Audience: audience, Replay: agents.ReplayGuard{Store: d.Store},
	})
	if err != nil {
		return fmt.Errorf("agent identity verifier: %w", err)
	}
	admission := &agents.Admission{Org: cfg.FlyOrg, Pools: d.Pools, Machines: d.Fly}
	d.Tunnels, err = tunnel.NewRegistry(tunnel.RegistryConfig{
		ReplicaID: d.DaemonID, Audience: audience, Signer: d.Signer,
		Verifier: verifier, Authorize: admission.Authorize,
		Locator: &agents.Locator{Store: d.Store, ReplicaID: d.DaemonID},
		Logger:  d.Logger.Named("tunnels"),
	})
	if err != nil {
		return fmt.Errorf("agent tunnels: %w", err)
	}
	d.Agents = &agents.Router{Tunnels: d.Tunnels, Direct: agents.DirectClient()}

	ln := d.opts.InternalListener
	if ln == nil && cfg.InternalListen != "" {
		if ln, err = net.Listen("tcp", cfg.InternalListen); err != nil {
			return fmt.Errorf("internal listener on %s: %w", cfg.InternalListen, err)
		}
	}
	if ln == nil {
		return nil
	}
	d.internalLn = ln // release closes it if what follows fails
	if d.advertised, err = cfg.Advertise(ln.Addr().String(), os.Getenv); err != nil {
		return err
	}
	if err := d.Store.AdvertiseDaemon(ctx, d.DaemonID, d.advertised, time.Now()); err != nil {
		return fmt.Errorf("advertise the internal listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+tunnel.RelayPath+"{machine}", d.Tunnels.ServeRelay)
	d.internal = &http.Server{
		Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: d.Logger.Named("internal").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	return nil
}

// InternalAddr is the address of the replica-to-replica listener ("" when
// there is none).
func (d *Daemon) InternalAddr() string {
	if d.internalLn == nil {
		return ""
	}
	return d.internalLn.Addr().String()
}

// Handler is the replica's HTTP handler (for tests that serve it themselves).
func (d *Daemon) Handler() http.Handler { return d.api }

// Done is closed once the replica's loops have stopped.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Close shuts the replica down gracefully: it refuses new sessions, closes
// attached streams (clients reconnect elsewhere; the sessions keep running),
// stops serving, lets in-flight claims finish, then closes the store.
func (d *Daemon) Close() error {
	d.closeOnce.Do(func() {
		d.api.Drain()
		d.streams()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := d.http.Shutdown(sctx); err != nil {
			d.http.Close()
		}
		cancel()
		if d.internal != nil {
			d.internal.Close()
		}
		d.Tunnels.Close()
		d.cancel()
		<-d.done
		if d.ownsStore {
			if err := d.Store.Close(); err != nil && d.err == nil {
				d.err = err
			}
		}
		d.Logger.Info("hangard stopped", "daemon", d.DaemonID)
	})
	return d.err
}

// Run starts a replica and serves until ctx ends, then closes it.
func Run(ctx context.Context, opts Options, ready func(d *Daemon)) error {
	d, err := Start(ctx, opts)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(d)
	}
	select {
	case <-ctx.Done():
	case <-d.done:
	}
	return d.Close()
}

// observeFlyHealth feeds one Fly API attempt into readiness: no answer, a
// 5xx or a 429 count as Fly failing; any other answer shows it reachable.
// Calls cut short by this replica (a cancelled context) say nothing.
func observeFlyHealth(h *health.Tracker, status int, err error) {
	switch {
	case status == 0 && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
	case status == 0 && err != nil:
		h.Observe(health.CheckFly, fmt.Errorf("no answer: %w", err))
	case status >= 500 || status == http.StatusTooManyRequests:
		h.Observe(health.CheckFly, fmt.Errorf("answered %d", status))
	case status > 0:
		h.Observe(health.CheckFly, nil)
	}
}

// ReplicaID resolves this replica's id: the configured replica_id, else
// FLY_MACHINE_ID (stable across restarts of a Fly Machine), else, with
// SQLite, an id kept in a file beside the database (created on first use),
// else a fresh one. A stable id lets a restarted replica recognise the
// claims its previous process left and settle them at once, instead of
// waiting for others to declare it dead.
func ReplicaID(cfg config.Config, getenv func(string) string) (string, error) {
	if id := cfg.ReplicaID; id != "" {
		if !validReplicaID(id) {
			return "", fmt.Errorf("replica_id %q: want 1 to 64 letters, digits, '.', '_' or '-'", id)
		}
		return id, nil
	}
	if m := getenv("FLY_MACHINE_ID"); m != "" && validReplicaID("fly-"+m) {
		return "fly-" + m, nil
	}
	path, ok := store.SQLitePath(cfg.StoreDSN)
	if !ok {
		return sessions.NewDaemonID(), nil
	}
	file := path + ".replica-id"
	if b, err := os.ReadFile(file); err == nil {
		if id := strings.TrimSpace(string(b)); validReplicaID(id) {
			return id, nil
		}
		return "", fmt.Errorf("replica id file %s holds no valid id; remove it to make a new one", file)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read replica id file: %w", err)
	}
	id := sessions.NewDaemonID()
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return ReplicaID(cfg, getenv) // another process made it first
	}
	if err != nil {
		return "", fmt.Errorf("create replica id file: %w", err)
	}
	_, werr := f.WriteString(id + "\n")
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		return "", fmt.Errorf("write replica id file %s: %w", file, err)
	}
	return id, nil
}

func validReplicaID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// storePacer keeps the Fly client's rate budget in the store, shared by every
// replica (docs/operations.md, "Fly's rate limits").
type storePacer struct{ st store.Store }

// Reserve implements fly.Pacer.
func (p storePacer) Reserve(ctx context.Context, key string, l fly.Limit) (time.Duration, error) {
	interval := time.Duration(float64(time.Second) / float64(l.Rate))
	return p.st.ReserveRate(ctx, key, interval, l.Burst)
}
