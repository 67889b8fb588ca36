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
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hangarhq/hangar/daemon/agents"
	"github.com/hangarhq/hangar/daemon/auth"
	"github.com/hangarhq/hangar/daemon/broker"
	"github.com/hangarhq/hangar/daemon/config"
	"github.com/hangarhq/hangar/daemon/metrics"
	"github.com/hangarhq/hangar/daemon/pools"
	"github.com/hangarhq/hangar/daemon/server"
	"github.com/hangarhq/hangar/daemon/sessions"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/tunnel"
)

// Deps are a replica's shared parts, handed to background workers.
type Deps struct {
	// DaemonID identifies this replica (fresh per process).
	DaemonID string
	Config   config.Config
	Store    store.Store
	Fly      *fly.Client
	Pools    *pools.Cache
	Sessions *sessions.Manager
	Signer   *agentauth.Signer
	// Agents reaches agents (through their tunnels, or dialled).
	Agents *agents.Router
	// Tunnels holds the agent tunnels of this replica.
	Tunnels *tunnel.Registry
	Metrics *metrics.Metrics
	Logger  hclog.Logger
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
	// DispatchInterval overrides how often pending claims are looked at.
	DispatchInterval time.Duration
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
func Start(ctx context.Context, opts Options) (*Daemon, error) {
	cfg := opts.Config
	log := opts.Logger
	if log == nil {
		log = NewLogger(cfg, opts.LogOutput)
	}
	keyText, err := cfg.LoadBrokerKey()
	if err != nil {
		return nil, err
	}
	key, err := agentauth.ParsePrivateKey(keyText)
	if err != nil {
		return nil, fmt.Errorf("broker key: %w", err)
	}
	signer := agentauth.NewSigner(key)

	d := &Daemon{opts: opts, done: make(chan struct{})}
	d.DaemonID = sessions.NewDaemonID()
	d.Config, d.Logger, d.Signer = cfg, log, signer

	st := opts.Store
	if st == nil {
		st, err = store.Open(ctx, cfg.StoreDSN)
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		d.ownsStore = true
	}
	d.Store = st
	fail := func(err error) (*Daemon, error) {
		if d.ownsStore {
			st.Close()
		}
		return nil, err
	}

	ln := opts.Listener
	if ln == nil {
		ln, err = net.Listen("tcp", cfg.Listen)
		if err != nil {
			return fail(fmt.Errorf("listen on %s: %w", cfg.Listen, err))
		}
	}
	scheme := "http"
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			ln.Close()
			return fail(fmt.Errorf("load TLS certificate: %w", err))
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	d.ln = ln
	d.URL = scheme + "://" + ln.Addr().String()
	fail = func(err error) (*Daemon, error) {
		d.ln.Close()
		if d.ownsStore {
			st.Close()
		}
		return nil, err
	}

	var mgr *sessions.Manager
	d.Metrics = metrics.New(func(ctx context.Context) (map[string]int, error) {
		if mgr == nil {
			return nil, nil
		}
		return mgr.CountByState(ctx)
	})
	d.Fly, err = fly.New(fly.Options{
		BaseURL: cfg.FlyAPIURL, Token: cfg.FlyAPIToken, Logger: log.Named("fly"),
		OnResponse: d.Metrics.ObserveFly,
		// Fly's rate limits are per organisation: every replica draws from
		// one budget per action and machine (or app), kept in the store.
		Pacer: storePacer{st},
	})
	if err != nil {
		return fail(fmt.Errorf("fly client: %w", err))
	}
	d.Pools = pools.New(d.Fly, cfg.FlyOrg, log.Named("pools"))
	// One replica's periodic read of the pools serves all of them.
	d.Pools.Share(st, cfg.PoolRefresh)
	if err := d.startTunnels(ctx, cfg); err != nil {
		return fail(err)
	}
	mgr = sessions.New(sessions.Config{
		DaemonID: d.DaemonID, Store: st, Fly: d.Fly, Pools: d.Pools, Signer: signer, Logger: log,
		Metrics: d.Metrics, Workers: cfg.ClaimWorkers, HeartbeatInterval: cfg.HeartbeatInterval,
		DeadAfter: cfg.DeadAfter, SweepInterval: cfg.SweepInterval, ReadyTimeout: cfg.ReadyTimeout,
		DispatchInterval: opts.DispatchInterval, DefaultCommand: opts.DefaultCommand,
		AllowFileRepos: opts.AllowFileRepos, Agents: d.Agents,
	})
	d.Sessions = mgr
	brk := broker.New(broker.Config{
		Signer: signer, Logger: log.Named("broker"),
		Hooks: broker.Hooks{Bytes: func(toClient bool, n int) {
			dir := "to_agent"
			if toClient {
				dir = "to_client"
			}
			d.Metrics.BytesBrokered.WithLabelValues(dir).Add(float64(n))
		}},
	})
	d.api = server.New(server.Config{
		Store: st, Sessions: mgr, Pools: d.Pools, Broker: brk,
		Auth: &auth.Authenticator{Store: st, AdminKey: cfg.AdminKey}, Metrics: d.Metrics, Logger: log,
		PublicURL: cfg.PublicURL, TrustedProxyHeaders: cfg.TrustedProxyHeaders,
		AllowedOrigins: cfg.AllowedOrigins, ReadyTimeout: cfg.ReadyTimeout, Web: opts.Web,
		Tunnels: http.HandlerFunc(d.Tunnels.ServeTunnel),
	})

	// Streams (attaches, event streams) live in a context of their own that
	// shutdown cancels first: clients then reconnect to another replica.
	streamCtx, cancelStreams := context.WithCancel(context.Background())
	d.streams = cancelStreams
	d.http = &http.Server{
		Handler: d.api, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return streamCtx },
		ErrorLog:    log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	runCtx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); d.Pools.Run(runCtx, cfg.PoolRefresh) }()
	go func() { defer wg.Done(); mgr.Run(runCtx) }()
	for _, w := range opts.Workers {
		wg.Add(1)
		go func(w Worker) {
			defer wg.Done()
			if err := w.Run(runCtx, &d.Deps); err != nil && runCtx.Err() == nil {
				log.Error("background worker stopped", "worker", w.Name, "error", err)
			}
		}(w)
	}
	served := make(chan error, 2)
	go func() { served <- d.http.Serve(ln) }()
	if opts.AgentListener != nil {
		go func() { served <- d.http.Serve(opts.AgentListener) }()
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
		wg.Wait()
		close(d.done)
	}()
	log.Info("hangard started", "daemon", d.DaemonID, "url", d.URL, "fly", d.Fly.BaseURL(), "org", cfg.FlyOrg,
		"agent_url", cfg.TunnelAudience(d.URL), "oidc_issuer", cfg.OIDCIssuer(), "internal", d.advertised)
	return d, nil
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
			d.Tunnels.Close()
			return fmt.Errorf("internal listener on %s: %w", cfg.InternalListen, err)
		}
	}
	if ln == nil {
		return nil
	}
	if d.advertised, err = cfg.Advertise(ln.Addr().String(), os.Getenv); err != nil {
		ln.Close()
		d.Tunnels.Close()
		return err
	}
	if err := d.Store.AdvertiseDaemon(ctx, d.DaemonID, d.advertised, time.Now()); err != nil {
		ln.Close()
		d.Tunnels.Close()
		return fmt.Errorf("advertise the internal listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+tunnel.RelayPath+"{machine}", d.Tunnels.ServeRelay)
	d.internalLn = ln
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

// storePacer keeps the Fly client's rate budget in the store, shared by every
// replica (docs/operations.md, "Fly's rate limits").
type storePacer struct{ st store.Store }

// Reserve implements fly.Pacer.
func (p storePacer) Reserve(ctx context.Context, key string, l fly.Limit) (time.Duration, error) {
	interval := time.Duration(float64(time.Second) / float64(l.Rate))
	return p.st.ReserveRate(ctx, key, interval, l.Burst)
}
