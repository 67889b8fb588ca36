// Package config loads hangard's configuration: defaults, then an HCL file,
// then HANGARD_* (and the shared FLY_*) environment variables, then flags.
// Secrets (the Fly token, the admin key, the broker key) may come from the
// environment so that they never have to sit in a file.
package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2/hclsimple"
)

// Config is the whole daemon configuration.
type Config struct {
	// Listen is the HTTP listen address.
	Listen string
	// TLSCert and TLSKey enable HTTPS when both are set.
	TLSCert, TLSKey string
	// TrustedProxyHeaders makes the daemon believe X-Forwarded-Proto/-Host
	// (set it only behind a proxy that terminates TLS, such as Fly's).
	TrustedProxyHeaders bool
	// PublicURL, when set, is the daemon's external base URL (used in ticket URLs).
	PublicURL string
	// DaemonURL is the URL workers dial for their tunnel (the pools'
	// daemon_url, and the audience of the machine identity tokens they
	// present). Empty: PublicURL, else the listen address.
	DaemonURL string
	// InternalListen is the replica-to-replica listener (tunnel relay);
	// empty disables it, which is right for a single replica. It must not be
	// reachable by workers or users.
	InternalListen string
	// AdvertiseAddr is the host:port other replicas dial to reach
	// InternalListen (default: InternalListen when it names a host, else
	// [FLY_PRIVATE_IP]:port on Fly).
	AdvertiseAddr string
	// FlyOIDCIssuer is the issuer of the machine identity tokens agents
	// present (default https://oidc.fly.io/<fly org>).
	FlyOIDCIssuer string
	// AllowedOrigins lists the Origins (scheme://host[:port], or "*") allowed
	// to open WebSockets besides the daemon's own.
	AllowedOrigins []string

	// Fly Machines API.
	FlyAPIURL   string
	FlyAPIToken string
	FlyOrg      string

	// StoreDSN: sqlite:///path.db, a path ending in .db, or postgres://…
	StoreDSN string
	// ReplicaID names this replica in the store, the same across its
	// restarts, so that a restarted replica settles the claims its previous
	// process left at once. Empty: FLY_MACHINE_ID on Fly, else (SQLite) an
	// id kept in a file beside the database, else a fresh one per process.
	// Two live processes must never share one.
	ReplicaID string

	// BrokerKeyFile is a file holding the broker's ed25519 private key;
	// BrokerKey is the key itself (from HANGARD_BROKER_KEY). One is required.
	BrokerKeyFile string
	BrokerKey     string

	// AdminKey guards /v1/tenants. Without it the admin API answers 401.
	AdminKey string

	// LogFormat is "json" or "text"; LogLevel a go-hclog level name.
	LogFormat string
	LogLevel  string

	// ClaimWorkers bounds the number of claims this replica works on at once.
	ClaimWorkers int
	// HeartbeatInterval is how often this replica records that it is alive;
	// a replica silent for DeadAfter is considered dead.
	HeartbeatInterval time.Duration
	DeadAfter         time.Duration
	// SweepInterval is how often the replica checks its ready sessions for
	// TTL, idle timeout and process exit.
	SweepInterval time.Duration
	// PoolRefresh is how often the pools cache is re-read from Fly.
	PoolRefresh time.Duration
	// ReadyTimeout bounds a claim from lease to ready.
	ReadyTimeout time.Duration
	// MaxAttachesPerSession, MaxAttachesPerTicket and MaxAttachesPerTenant
	// cap this replica's concurrent attachments (0: the default; -1: no
	// limit). See server.AttachLimits.
	MaxAttachesPerSession int
	MaxAttachesPerTicket  int
	MaxAttachesPerTenant  int
}

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		Listen:            "127.0.0.1:7780",
		FlyAPIURL:         "https://api.machines" + ".dev",
		FlyOrg:            "personal",
		StoreDSN:          "sqlite:///var/lib/hangard/hangard.db",
		LogFormat:         "json",
		LogLevel:          "info",
		ClaimWorkers:      8,
		HeartbeatInterval: 5 * time.Second,
		DeadAfter:         30 * time.Second,
		SweepInterval:     15 * time.Second,
		PoolRefresh:       30 * time.Second,
		ReadyTimeout:      3 * time.Minute,
	}
}

// file is the HCL file's schema. Every attribute is optional.
type file struct {
	Listen              *string  `hcl:"listen,optional"`
	TLSCert             *string  `hcl:"tls_cert,optional"`
	TLSKey              *string  `hcl:"tls_key,optional"`
	TrustedProxyHeaders *bool    `hcl:"trusted_proxy_headers,optional"`
	PublicURL           *string  `hcl:"public_url,optional"`
	DaemonURL           *string  `hcl:"daemon_url,optional"`
	InternalListen      *string  `hcl:"internal_listen,optional"`
	AdvertiseAddr       *string  `hcl:"advertise_addr,optional"`
	FlyOIDCIssuer       *string  `hcl:"fly_oidc_issuer,optional"`
	AllowedOrigins      []string `hcl:"allowed_origins,optional"`
	FlyAPIURL           *string  `hcl:"fly_api_url,optional"`
	FlyAPIToken         *string  `hcl:"fly_api_token,optional"`
	FlyOrg              *string  `hcl:"fly_org,optional"`
	StoreDSN            *string  `hcl:"store_dsn,optional"`
	ReplicaID           *string  `hcl:"replica_id,optional"`
	BrokerKeyFile       *string  `hcl:"broker_key_file,optional"`
	AdminKey            *string  `hcl:"admin_key,optional"`
	LogFormat           *string  `hcl:"log_format,optional"`
	LogLevel            *string  `hcl:"log_level,optional"`
	ClaimWorkers        *int     `hcl:"claim_workers,optional"`
	HeartbeatInterval   *string  `hcl:"heartbeat_interval,optional"`
	DeadAfter           *string  `hcl:"dead_after,optional"`
	SweepInterval       *string  `hcl:"sweep_interval,optional"`
	PoolRefresh         *string  `hcl:"pool_refresh,optional"`
	ReadyTimeout        *string  `hcl:"ready_timeout,optional"`
	MaxAttachesSession  *int     `hcl:"max_attaches_per_session,optional"`
	MaxAttachesTicket   *int     `hcl:"max_attaches_per_ticket,optional"`
	MaxAttachesTenant   *int     `hcl:"max_attaches_per_tenant,optional"`
}

// LoadFile applies an HCL configuration file on top of c.
func (c *Config) LoadFile(path string) error {
	var f file
	if err := hclsimple.DecodeFile(path, nil, &f); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	setS := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	setS(&c.Listen, f.Listen)
	setS(&c.TLSCert, f.TLSCert)
	setS(&c.TLSKey, f.TLSKey)
	if f.TrustedProxyHeaders != nil {
		c.TrustedProxyHeaders = *f.TrustedProxyHeaders
	}
	setS(&c.PublicURL, f.PublicURL)
	setS(&c.DaemonURL, f.DaemonURL)
	setS(&c.InternalListen, f.InternalListen)
	setS(&c.AdvertiseAddr, f.AdvertiseAddr)
	setS(&c.FlyOIDCIssuer, f.FlyOIDCIssuer)
	if f.AllowedOrigins != nil {
		c.AllowedOrigins = f.AllowedOrigins
	}
	setS(&c.FlyAPIURL, f.FlyAPIURL)
	setS(&c.FlyAPIToken, f.FlyAPIToken)
	setS(&c.FlyOrg, f.FlyOrg)
	setS(&c.StoreDSN, f.StoreDSN)
	setS(&c.ReplicaID, f.ReplicaID)
	setS(&c.BrokerKeyFile, f.BrokerKeyFile)
	setS(&c.AdminKey, f.AdminKey)
	setS(&c.LogFormat, f.LogFormat)
	setS(&c.LogLevel, f.LogLevel)
	if f.ClaimWorkers != nil {
		c.ClaimWorkers = *f.ClaimWorkers
	}
	for _, x := range []struct {
		dst *int
		v   *int
	}{{&c.MaxAttachesPerSession, f.MaxAttachesSession}, {&c.MaxAttachesPerTicket, f.MaxAttachesTicket}, {&c.MaxAttachesPerTenant, f.MaxAttachesTenant}} {
		if x.v != nil {
			*x.dst = *x.v
		}
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
		v    *string
	}{
		{"heartbeat_interval", &c.HeartbeatInterval, f.HeartbeatInterval},
		{"dead_after", &c.DeadAfter, f.DeadAfter},
		{"sweep_interval", &c.SweepInterval, f.SweepInterval},
		{"pool_refresh", &c.PoolRefresh, f.PoolRefresh},
		{"ready_timeout", &c.ReadyTimeout, f.ReadyTimeout},
	} {
		if d.v == nil {
			continue
		}
		v, err := time.ParseDuration(*d.v)
		if err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, d.name, err)
		}
		*d.dst = v
	}
	return nil
}

// EnvVar describes one environment override.
type EnvVar struct {
	Names []string // the first set one wins
	Apply func(c *Config, v string) error
}

func str(dst func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *dst(c) = v; return nil }
}

func dur(name string, dst func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		*dst(c) = d
		return nil
	}
}

func num(name string, dst func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		*dst(c) = n
		return nil
	}
}

// EnvVars lists every environment override, in the documented order.
var EnvVars = []EnvVar{
	{[]string{"HANGARD_LISTEN"}, str(func(c *Config) *string { return &c.Listen })},
	{[]string{"HANGARD_TLS_CERT"}, str(func(c *Config) *string { return &c.TLSCert })},
	{[]string{"HANGARD_TLS_KEY"}, str(func(c *Config) *string { return &c.TLSKey })},
	{[]string{"HANGARD_TRUSTED_PROXY_HEADERS"}, func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("HANGARD_TRUSTED_PROXY_HEADERS: %w", err)
		}
		c.TrustedProxyHeaders = b
		return nil
	}},
	{[]string{"HANGARD_PUBLIC_URL"}, str(func(c *Config) *string { return &c.PublicURL })},
	{[]string{"HANGARD_DAEMON_URL"}, str(func(c *Config) *string { return &c.DaemonURL })},
	{[]string{"HANGARD_INTERNAL_LISTEN"}, str(func(c *Config) *string { return &c.InternalListen })},
	{[]string{"HANGARD_ADVERTISE_ADDR"}, str(func(c *Config) *string { return &c.AdvertiseAddr })},
	{[]string{"HANGARD_FLY_OIDC_ISSUER"}, str(func(c *Config) *string { return &c.FlyOIDCIssuer })},
	{[]string{"HANGARD_ALLOWED_ORIGINS"}, func(c *Config, v string) error {
		c.AllowedOrigins = splitList(v)
		return nil
	}},
	{[]string{"HANGARD_FLY_API_URL", "FLY_API_URL"}, str(func(c *Config) *string { return &c.FlyAPIURL })},
	{[]string{"HANGARD_FLY_API_TOKEN", "FLY_API_TOKEN"}, str(func(c *Config) *string { return &c.FlyAPIToken })},
	{[]string{"HANGARD_FLY_ORG", "FLY_ORG"}, str(func(c *Config) *string { return &c.FlyOrg })},
	{[]string{"HANGARD_STORE_DSN"}, str(func(c *Config) *string { return &c.StoreDSN })},
	{[]string{"HANGARD_REPLICA_ID"}, str(func(c *Config) *string { return &c.ReplicaID })},
	{[]string{"HANGARD_BROKER_KEY_FILE"}, str(func(c *Config) *string { return &c.BrokerKeyFile })},
	{[]string{"HANGARD_BROKER_KEY"}, str(func(c *Config) *string { return &c.BrokerKey })},
	{[]string{"HANGARD_ADMIN_KEY"}, str(func(c *Config) *string { return &c.AdminKey })},
	{[]string{"HANGARD_LOG_FORMAT"}, str(func(c *Config) *string { return &c.LogFormat })},
	{[]string{"HANGARD_LOG_LEVEL"}, str(func(c *Config) *string { return &c.LogLevel })},
	{[]string{"HANGARD_CLAIM_WORKERS"}, func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("HANGARD_CLAIM_WORKERS: %w", err)
		}
		c.ClaimWorkers = n
		return nil
	}},
	{[]string{"HANGARD_MAX_ATTACHES_PER_SESSION"}, num("HANGARD_MAX_ATTACHES_PER_SESSION", func(c *Config) *int { return &c.MaxAttachesPerSession })},
	{[]string{"HANGARD_MAX_ATTACHES_PER_TICKET"}, num("HANGARD_MAX_ATTACHES_PER_TICKET", func(c *Config) *int { return &c.MaxAttachesPerTicket })},
	{[]string{"HANGARD_MAX_ATTACHES_PER_TENANT"}, num("HANGARD_MAX_ATTACHES_PER_TENANT", func(c *Config) *int { return &c.MaxAttachesPerTenant })},
	{[]string{"HANGARD_HEARTBEAT_INTERVAL"}, dur("HANGARD_HEARTBEAT_INTERVAL", func(c *Config) *time.Duration { return &c.HeartbeatInterval })},
	{[]string{"HANGARD_DEAD_AFTER"}, dur("HANGARD_DEAD_AFTER", func(c *Config) *time.Duration { return &c.DeadAfter })},
	{[]string{"HANGARD_SWEEP_INTERVAL"}, dur("HANGARD_SWEEP_INTERVAL", func(c *Config) *time.Duration { return &c.SweepInterval })},
	{[]string{"HANGARD_POOL_REFRESH"}, dur("HANGARD_POOL_REFRESH", func(c *Config) *time.Duration { return &c.PoolRefresh })},
	{[]string{"HANGARD_READY_TIMEOUT"}, dur("HANGARD_READY_TIMEOUT", func(c *Config) *time.Duration { return &c.ReadyTimeout })},
}

// LoadEnv applies environment overrides read through getenv (os.Getenv in
// production) on top of c.
func (c *Config) LoadEnv(getenv func(string) string) error {
	for _, e := range EnvVars {
		for _, n := range e.Names {
			if v := getenv(n); v != "" {
				if err := e.Apply(c, v); err != nil {
					return err
				}
				break
			}
		}
	}
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Flags binds command-line flags that override the file and environment.
// Call Apply after fs.Parse.
type Flags struct {
	fs                *flag.FlagSet
	configFile        string
	listen, storeDSN  string
	brokerKeyFile     string
	logFormat         string
	logLevel          string
	allowedOrigins    string
	flyAPIURL, flyOrg string
	publicURL         string
	daemonURL         string
	internalListen    string
	advertiseAddr     string
	flyOIDCIssuer     string
	tlsCert, tlsKey   string
	replicaID         string
	trustProxy        bool
}

// BindFlags registers the shared flags on fs. --config names the HCL file.
func BindFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{fs: fs}
	fs.StringVar(&f.configFile, "config", "", "HCL configuration file")
	fs.StringVar(&f.listen, "listen", "", "HTTP listen address (HANGARD_LISTEN)")
	fs.StringVar(&f.storeDSN, "store", "", "store DSN: sqlite:///file.db or postgres://… (HANGARD_STORE_DSN)")
	fs.StringVar(&f.replicaID, "replica-id", "", "this replica's id, stable across restarts (HANGARD_REPLICA_ID)")
	fs.StringVar(&f.brokerKeyFile, "broker-key-file", "", "broker private key file (HANGARD_BROKER_KEY_FILE; or HANGARD_BROKER_KEY)")
	fs.StringVar(&f.logFormat, "log-format", "", "log format: json or text (HANGARD_LOG_FORMAT)")
	fs.StringVar(&f.logLevel, "log-level", "", "log level: trace, debug, info, warn, error (HANGARD_LOG_LEVEL)")
	fs.StringVar(&f.allowedOrigins, "allowed-origins", "", "comma-separated WebSocket origins allowed (HANGARD_ALLOWED_ORIGINS)")
	fs.StringVar(&f.flyAPIURL, "fly-api-url", "", "Fly Machines API base URL without /v1 (FLY_API_URL)")
	fs.StringVar(&f.flyOrg, "fly-org", "", "Fly organisation slug (FLY_ORG)")
	fs.StringVar(&f.publicURL, "public-url", "", "external base URL of the daemon (HANGARD_PUBLIC_URL)")
	fs.StringVar(&f.daemonURL, "daemon-url", "", "URL workers dial for their tunnel; default the public URL (HANGARD_DAEMON_URL)")
	fs.StringVar(&f.internalListen, "internal-listen", "", "replica-to-replica listen address, never public (HANGARD_INTERNAL_LISTEN)")
	fs.StringVar(&f.advertiseAddr, "advertise-addr", "", "host:port other replicas reach --internal-listen on (HANGARD_ADVERTISE_ADDR)")
	fs.StringVar(&f.flyOIDCIssuer, "fly-oidc-issuer", "", "issuer of machine identity tokens; default https://oidc.fly.io/<org> (HANGARD_FLY_OIDC_ISSUER)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "TLS certificate file (HANGARD_TLS_CERT)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "TLS key file (HANGARD_TLS_KEY)")
	fs.BoolVar(&f.trustProxy, "trusted-proxy-headers", false, "believe X-Forwarded-Proto/-Host, behind a proxy that terminates TLS; --trusted-proxy-headers=false turns it off (HANGARD_TRUSTED_PROXY_HEADERS)")
	return f
}

// Load builds the configuration: defaults, the --config file, the
// environment (through getenv), then the flags that were set.
func (f *Flags) Load(base Config, getenv func(string) string) (Config, error) {
	c := base
	if f.configFile != "" {
		if err := c.LoadFile(f.configFile); err != nil {
			return c, err
		}
	}
	if err := c.LoadEnv(getenv); err != nil {
		return c, err
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	apply := func(name string, dst *string, v string) {
		if set[name] {
			*dst = v
		}
	}
	apply("listen", &c.Listen, f.listen)
	apply("store", &c.StoreDSN, f.storeDSN)
	apply("replica-id", &c.ReplicaID, f.replicaID)
	apply("broker-key-file", &c.BrokerKeyFile, f.brokerKeyFile)
	apply("log-format", &c.LogFormat, f.logFormat)
	apply("log-level", &c.LogLevel, f.logLevel)
	apply("fly-api-url", &c.FlyAPIURL, f.flyAPIURL)
	apply("fly-org", &c.FlyOrg, f.flyOrg)
	apply("public-url", &c.PublicURL, f.publicURL)
	apply("daemon-url", &c.DaemonURL, f.daemonURL)
	apply("internal-listen", &c.InternalListen, f.internalListen)
	apply("advertise-addr", &c.AdvertiseAddr, f.advertiseAddr)
	apply("fly-oidc-issuer", &c.FlyOIDCIssuer, f.flyOIDCIssuer)
	apply("tls-cert", &c.TLSCert, f.tlsCert)
	apply("tls-key", &c.TLSKey, f.tlsKey)
	if set["trusted-proxy-headers"] {
		c.TrustedProxyHeaders = f.trustProxy
	}
	if set["allowed-origins"] {
		c.AllowedOrigins = splitList(f.allowedOrigins)
	}
	return c, c.Validate()
}

// Validate checks the configuration for mistakes that would only show later.
func (c *Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("listen address is empty"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("tls_cert and tls_key must be set together"))
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		errs = append(errs, fmt.Errorf("log_format %q: want json or text", c.LogFormat))
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("public_url %q: want http(s)://host", c.PublicURL))
		}
	}
	for name, v := range map[string]string{"daemon_url": c.DaemonURL, "fly_oidc_issuer": c.FlyOIDCIssuer} {
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			errs = append(errs, fmt.Errorf("%s %q: want http(s)://host", name, v))
		}
	}
	if c.AdvertiseAddr != "" {
		if _, _, err := net.SplitHostPort(c.AdvertiseAddr); err != nil {
			errs = append(errs, fmt.Errorf("advertise_addr %q: want host:port", c.AdvertiseAddr))
		}
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" {
			errs = append(errs, fmt.Errorf("allowed origin %q: want scheme://host[:port] or *", o))
		}
	}
	for name, n := range map[string]int{"max_attaches_per_session": c.MaxAttachesPerSession,
		"max_attaches_per_ticket": c.MaxAttachesPerTicket, "max_attaches_per_tenant": c.MaxAttachesPerTenant} {
		if n < -1 {
			errs = append(errs, fmt.Errorf("%s %d: want a count, 0 (the default) or -1 (no limit)", name, n))
		}
	}
	if c.ClaimWorkers < 1 {
		errs = append(errs, fmt.Errorf("claim_workers %d: want at least 1", c.ClaimWorkers))
	}
	for name, d := range map[string]time.Duration{
		"heartbeat_interval": c.HeartbeatInterval, "dead_after": c.DeadAfter,
		"sweep_interval": c.SweepInterval, "pool_refresh": c.PoolRefresh, "ready_timeout": c.ReadyTimeout,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	if c.DeadAfter > 0 && c.DeadAfter < 2*c.HeartbeatInterval {
		errs = append(errs, errors.New("dead_after must be at least twice heartbeat_interval"))
	}
	return errors.Join(errs...)
}

// TunnelAudience is the daemon URL agents dial and name as the audience of
// their identity tokens: DaemonURL, else PublicURL, else listenURL (the URL
// the replica serves on).
func (c *Config) TunnelAudience(listenURL string) string {
	for _, u := range []string{c.DaemonURL, c.PublicURL, listenURL} {
		if u != "" {
			return strings.TrimRight(u, "/")
		}
	}
	return ""
}

// OIDCIssuer is the machine identity issuer: FlyOIDCIssuer, else Fly's
// issuer for FlyOrg.
func (c *Config) OIDCIssuer() string {
	if c.FlyOIDCIssuer != "" {
		return strings.TrimRight(c.FlyOIDCIssuer, "/")
	}
	return "https://oidc.fly.io/" + c.FlyOrg
}

// Advertise is the address other replicas reach this one's internal
// listener on (bound: the address it actually listens on): AdvertiseAddr,
// else bound when it names a host, else [FLY_PRIVATE_IP]:port from getenv.
func (c *Config) Advertise(bound string, getenv func(string) string) (string, error) {
	if c.AdvertiseAddr != "" {
		return c.AdvertiseAddr, nil
	}
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return "", fmt.Errorf("internal listener %q: %w", bound, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		return bound, nil
	}
	if ip := getenv("FLY_PRIVATE_IP"); ip != "" {
		return net.JoinHostPort(ip, port), nil
	}
	return "", fmt.Errorf("internal_listen %q binds every address: set advertise_addr to the host:port other replicas dial", bound)
}

// LoadBrokerKey returns the broker private key text: HANGARD_BROKER_KEY if
// set, else the key file's content. It is an error to have neither: the
// daemon must never run with a key of its own invention, or replicas would
// not agree.
func (c *Config) LoadBrokerKey() (string, error) {
	if c.BrokerKey != "" {
		return c.BrokerKey, nil
	}
	if c.BrokerKeyFile == "" {
		return "", errors.New("no broker key: set broker_key_file, --broker-key-file or HANGARD_BROKER_KEY (make one with `hangard keygen`)")
	}
	b, err := os.ReadFile(c.BrokerKeyFile)
	if err != nil {
		return "", fmt.Errorf("read broker key: %w", err)
	}
	return string(b), nil
}
