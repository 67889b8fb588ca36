// Package devenv prepares `hangard dev`: a Fly emulator embedded in the
// daemon, a SQLite store, a broker key and admin key kept in the data
// directory, a `dev` pool whose template runs the real hangar-agent, a dev
// tenant granted every pool, and DIR/dev.env for scripts, the CLI and
// terraform. Restarts reuse the keys and the tenant.
package devenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hangarhq/hangar/daemon/auth"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/flyemu"
	"github.com/hangarhq/hangar/internal/pool"
)

// Names of the dev environment.
const (
	PoolName   = "dev"
	AppName    = "hangar-dev"
	TenantName = "dev"
	Org        = "personal"
	Region     = "iad"
	// DevImage is the dev pool's image; the emulator runs hangar-agent for it.
	DevImage = "hangar-worker:dev"
)

// Files in the data directory.
const (
	BrokerKeyFile = "broker.key"
	AdminKeyFile  = "admin.key"
	TenantKeyFile = "tenant.key"
	FlyTokenFile  = "fly.token"
	StoreFile     = "hangard.db"
	EnvFile       = "dev.env"
)

// Options configure the dev environment.
type Options struct {
	// DataDir holds keys, the store, the emulator's machine dirs and dev.env.
	DataDir string
	// AgentBinary runs the dev pool's machines ("" = hangar-agent beside
	// the running executable, else on PATH).
	AgentBinary string
	// Images maps other image refs to commands (flyemu image map), e.g. for
	// the quickstart's pools.
	Images map[string]flyemu.Image
	// ImageStore is the emulator's image store: pools whose image it holds
	// (the dev pool's DevImage, the quickstart's) run it as containers.
	ImageStore string
	// BootDelay is the emulator's boot delay.
	BootDelay time.Duration
	// MinStandby of the dev pool: nil means 1, and 0 means no standby
	// (every session then waits for a cold clone).
	MinStandby *int
	// MaxMachines of the dev pool (0 = 20).
	MaxMachines int
	// StandbyMode of the dev pool (default stop).
	StandbyMode pool.StandbyMode
	Logger      hclog.Logger
}

// Env is a prepared dev environment. Close stops the emulator (and with it
// every machine process).
type Env struct {
	DataDir     string
	BrokerKey   string // private key text
	PublicKey   string // standard base64
	AdminKey    string
	FlyToken    string
	FlyURL      string // emulator base URL (no /v1)
	StoreDSN    string
	Emulator    *flyemu.Emulator
	emuServer   *http.Server
	emuListener net.Listener
	// AgentListener is where the dev pool's agents reach the daemon: on the
	// emulator's internet address, the only host address its machines can
	// reach. The daemon serves its API there too (service.Options).
	AgentListener net.Listener
	// DaemonURL is AgentListener's URL: the dev pool's daemon_url.
	DaemonURL string
}

// secretFile returns the content of DataDir/name, creating it with make()
// (mode 0600) if absent.
func secretFile(dir, name string, make func() (string, error)) (string, error) {
	p := filepath.Join(dir, name)
	b, err := os.ReadFile(p)
	if err == nil {
		if v := strings.TrimSpace(string(b)); v != "" {
			return v, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	v, err := make()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", p, err)
	}
	return v, nil
}

// Prepare creates (or reuses) the keys, starts the emulator on a random
// loopback port and creates the dev pool in it.
func Prepare(ctx context.Context, opts Options) (*Env, error) {
	if opts.DataDir == "" {
		return nil, errors.New("dev: --data DIR is required")
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	dir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	e := &Env{DataDir: dir, StoreDSN: "sqlite://" + filepath.Join(dir, StoreFile)}
	if e.BrokerKey, err = secretFile(dir, BrokerKeyFile, func() (string, error) {
		k, err := agentauth.GenerateKey()
		if err != nil {
			return "", err
		}
		return agentauth.EncodePrivateKey(k), nil
	}); err != nil {
		return nil, err
	}
	key, err := agentauth.ParsePrivateKey(e.BrokerKey)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", BrokerKeyFile, err)
	}
	e.PublicKey = agentauth.EncodePublicKey(agentauth.NewSigner(key).PublicKey())
	if e.AdminKey, err = secretFile(dir, AdminKeyFile, func() (string, error) { return auth.NewSecret("hga_") }); err != nil {
		return nil, err
	}
	if e.FlyToken, err = secretFile(dir, FlyTokenFile, func() (string, error) { return auth.NewSecret("flyemu_") }); err != nil {
		return nil, err
	}

	emu, err := flyemu.New(flyemu.Config{
		DataDir: filepath.Join(dir, "machines"), AgentBinary: opts.AgentBinary, Images: opts.Images, ImageStore: opts.ImageStore,
		Org: Org, Region: Region, Token: e.FlyToken, BootDelay: opts.BootDelay,
		Logger: opts.Logger.Named("flyemu"),
	})
	if err != nil {
		return nil, fmt.Errorf("start Fly emulator: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		emu.Close()
		return nil, fmt.Errorf("listen for Fly emulator: %w", err)
	}
	e.Emulator, e.emuListener = emu, ln
	e.emuServer = &http.Server{Handler: emu, ReadHeaderTimeout: 10 * time.Second}
	// Serve returns ErrServerClosed when Close stops it.
	go func() { _ = e.emuServer.Serve(ln) }()
	e.FlyURL = "http://" + ln.Addr().String()
	emu.SetBaseURL(e.FlyURL)
	agentLn, err := net.Listen("tcp", net.JoinHostPort(emu.InternetAddr().String(), "0"))
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("listen for agents on the emulator's internet address: %w", err)
	}
	e.AgentListener, e.DaemonURL = agentLn, "http://"+agentLn.Addr().String()

	if err := e.ensurePool(ctx, opts); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Fly returns a client for the embedded emulator.
func (e *Env) Fly(log hclog.Logger) (*fly.Client, error) {
	return fly.New(fly.Options{BaseURL: e.FlyURL, Token: e.FlyToken, Logger: log})
}

// ensurePool creates the dev app, its template and min_standby standbys
// unless a template exists.
func (e *Env) ensurePool(ctx context.Context, opts Options) error {
	c, err := e.Fly(opts.Logger.Named("fly"))
	if err != nil {
		return err
	}
	if _, err := c.GetApp(ctx, AppName); errors.Is(err, fly.ErrNotFound) {
		if _, err := c.CreateApp(ctx, fly.CreateAppRequest{Name: AppName, OrgSlug: Org}); err != nil {
			return fmt.Errorf("create dev app: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("read dev app: %w", err)
	}
	ms, err := c.ListMachines(ctx, AppName, fly.ListMachinesOptions{Metadata: map[string]string{pool.KeyRole: pool.RoleTemplate}})
	if err != nil {
		return fmt.Errorf("list dev templates: %w", err)
	}
	if len(ms) > 0 {
		return e.pointPoolHere(ctx, c, &ms[0])
	}
	spec := pool.Spec{
		Pool: PoolName, App: AppName, Regions: []string{Region}, Image: DevImage,
		Guest: pool.Guest{CPUKind: pool.DefaultCPUKind, CPUs: 1, MemoryMB: 1024},
		// Relative to each emulated machine's own directory.
		Env:        map[string]string{"HANGAR_WORKSPACE": "workspace"},
		MinStandby: 1, MaxMachines: orDefault(opts.MaxMachines, 20),
		StandbyMode: opts.StandbyMode, IdleTimeout: time.Hour, SessionTTL: 8 * time.Hour,
		AgentPort: pool.DefaultAgentPort, BrokerPublicKeys: []string{e.PublicKey},
		DaemonURL: e.DaemonURL,
	}
	if opts.MinStandby != nil {
		spec.MinStandby = *opts.MinStandby
	}
	if spec.StandbyMode == "" {
		spec.StandbyMode = pool.StandbyStop
	}
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("dev pool spec: %w", err)
	}
	tmpl, err := c.CreateMachine(ctx, AppName, spec.CreateTemplateRequest())
	if err != nil {
		return fmt.Errorf("create dev template: %w", err)
	}
	for i := 0; i < spec.MinStandby; i++ {
		if _, err := pool.CreateStandby(ctx, c, AppName, tmpl, Region, pool.StandbyOptions{}); err != nil {
			return fmt.Errorf("create dev standby: %w", err)
		}
	}
	return nil
}

// pointPoolHere updates a dev template made by an earlier run whose agents
// dialled another address (the agent listener's port is picked anew each
// run); the reconciler then replaces the stale standbys.
func (e *Env) pointPoolHere(ctx context.Context, c *fly.Client, tmpl *fly.Machine) error {
	spec, err := pool.FromTemplate(AppName, tmpl)
	if err != nil {
		return fmt.Errorf("read dev template: %w", err)
	}
	if spec.DaemonURL == e.DaemonURL {
		return nil
	}
	spec.DaemonURL = e.DaemonURL
	if _, err := c.UpdateMachine(ctx, AppName, tmpl.ID, fly.UpdateMachineRequest{
		Config: spec.TemplateConfig(), SkipLaunch: true, CurrentVersion: tmpl.InstanceID,
	}, ""); err != nil {
		return fmt.Errorf("point the dev template at this daemon: %w", err)
	}
	return nil
}

func orDefault(v, d int) int {
	if v > 0 {
		return v
	}
	return d
}

// EnsureTenant returns the dev tenant's API key, creating the tenant (granted
// every pool) or giving it a new key when the key file was lost.
func (e *Env) EnsureTenant(ctx context.Context, st store.Store) (string, error) {
	p := filepath.Join(e.DataDir, TenantKeyFile)
	if b, err := os.ReadFile(p); err == nil {
		key := strings.TrimSpace(string(b))
		if _, err := st.TenantByKeyHash(ctx, auth.Hash(key)); err == nil {
			return key, nil
		}
	}
	key, err := auth.NewSecret(auth.TenantKeyPrefix)
	if err != nil {
		return "", err
	}
	t := &store.Tenant{Name: TenantName, Pools: []string{"*"}, KeyHash: auth.Hash(key)}
	err = st.CreateTenant(ctx, t)
	if errors.Is(err, store.ErrConflict) {
		ts, lerr := st.ListTenants(ctx)
		if lerr != nil {
			return "", fmt.Errorf("list tenants: %w", lerr)
		}
		for _, x := range ts {
			if x.Name == TenantName {
				err = st.SetTenantKey(ctx, x.ID, auth.Hash(key))
				break
			}
		}
	}
	if err != nil {
		return "", fmt.Errorf("create dev tenant: %w", err)
	}
	if err := os.WriteFile(p, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", p, err)
	}
	return key, nil
}

// WriteEnvFile writes DIR/dev.env with exactly the variables scripts, the
// CLI and terraform need.
func (e *Env) WriteEnvFile(hangarURL, tenantKey string) (string, error) {
	p := filepath.Join(e.DataDir, EnvFile)
	content := strings.Join([]string{
		"HANGAR_URL=" + hangarURL,
		"HANGAR_TOKEN=" + tenantKey,
		"HANGAR_ADMIN_TOKEN=" + e.AdminKey,
		"FLY_API_URL=" + e.FlyURL,
		"FLY_API_TOKEN=" + e.FlyToken,
		"FLY_ORG=" + Org,
		"HANGAR_BROKER_PUBLIC_KEY=" + e.PublicKey,
	}, "\n") + "\n"
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", fmt.Errorf("write %s: %w", p, err)
	}
	return p, nil
}

// Close stops the emulator's server and every machine process.
func (e *Env) Close() error {
	var err error
	if e.Emulator != nil {
		err = e.Emulator.Close()
	}
	if e.emuServer != nil {
		e.emuServer.Close()
	}
	if e.AgentListener != nil {
		e.AgentListener.Close()
	}
	return err
}
