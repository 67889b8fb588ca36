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
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsimple"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/gocty"
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

// Default returns the configuration used when nothing is set: each
// setting's Default (see Settings).
func Default() Config {
	var c Config
	for i := range Settings {
		Settings[i].setDefault(&c)
	}
	return c
}

// fileBody is an HCL file as hclsimple hands it over: its attributes are
// decoded against Settings, so that the file knows every setting that has
// an HCL name and nothing else.
type fileBody struct {
	Body hcl.Body `hcl:",remain"`
}

// LoadFile applies an HCL configuration file (or its JSON form, by the
// file's extension) on top of c. An unknown attribute is an error, so that a
// typo does not silently fall back to a default.
func (c *Config) LoadFile(path string) error {
	var f fileBody
	if err := hclsimple.DecodeFile(path, nil, &f); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	attrs, diags := f.Body.JustAttributes()
	if diags.HasErrors() {
		return fmt.Errorf("config file %s: %w", path, diags)
	}
	names := make([]string, 0, len(attrs))
	for n := range attrs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		a := attrs[n]
		s := lookup(n)
		if s == nil {
			return fmt.Errorf("config file %s: %s: unsupported attribute %q", path, a.NameRange, n)
		}
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			return fmt.Errorf("config file %s: %w", path, diags)
		}
		if err := s.field.setHCL(c, v); err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, n, err)
		}
	}
	return nil
}

// setHCL stores an HCL value, converted as gohcl would to the field's type
// (durations are strings such as "30s").
func (f field) setHCL(c *Config, v cty.Value) error {
	want := map[string]cty.Type{"string": cty.String, "duration": cty.String, "bool": cty.Bool,
		"int": cty.Number, "list": cty.List(cty.String)}[f.kind]
	v, err := convert.Convert(v, want)
	if err != nil {
		return err
	}
	if v.IsNull() {
		return nil // as an optional attribute set to null: left as it was
	}
	if f.kind == "duration" {
		var text string
		if err := gocty.FromCtyValue(v, &text); err != nil {
			return err
		}
		return f.setText(c, text)
	}
	return gocty.FromCtyValue(v, f.ptr(c))
}

// EnvVar describes one environment override.
type EnvVar struct {
	Names []string // the first set one wins
	Apply func(c *Config, v string) error
}

// EnvVars lists every environment override, in the documented order (made
// from Settings).
var EnvVars = envVars()

func envVars() []EnvVar {
	out := make([]EnvVar, 0, len(Settings))
	for i := range Settings {
		s := &Settings[i]
		out = append(out, EnvVar{Names: s.Env, Apply: func(c *Config, v string) error {
			if err := s.field.setText(c, v); err != nil {
				return fmt.Errorf("%s: %w", s.Env[0], err)
			}
			return nil
		}})
	}
	return out
}

// LoadEnv applies environment overrides read through getenv (os.Getenv in
// production) on top of c.
func (c *Config) LoadEnv(getenv func(string) string) error {
	for _, s := range Settings {
		for _, n := range s.Env {
			if v := getenv(n); v != "" {
				if err := s.field.setText(c, v); err != nil {
					return fmt.Errorf("%s: %w", n, err)
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
// Call Load after fs.Parse.
type Flags struct {
	fs         *flag.FlagSet
	configFile string
	values     Config // what the flags that were set parsed to
}

// BindFlags registers --config (the HCL file) and the flag of every setting
// that has one on fs.
func BindFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{fs: fs}
	fs.StringVar(&f.configFile, "config", "", "HCL configuration file")
	for i := range Settings {
		s := &Settings[i]
		if s.Flag != "" {
			fs.Var(&flagValue{s: s, set: &f.values}, s.Flag, s.Usage)
		}
	}
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
	f.fs.Visit(func(fl *flag.Flag) {
		v, ok := fl.Value.(*flagValue)
		if !ok {
			return
		}
		// Copy the parsed value from the scratch config into c.
		v.s.field.copy(&c, &f.values)
	})
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
