package config

import (
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hangarhq/hangar/internal/fly"
)

// Setting is one daemon setting, declared once: the Config field it fills,
// its default, and every name it answers to (HCL attribute, environment
// variables, flag). Default, LoadFile, LoadEnv, BindFlags and the table in
// docs/operations.md are all made from Settings.
type Setting struct {
	// HCL is the attribute in the --config file ("" for none: the value
	// is a secret that belongs in the environment only).
	HCL string
	// Env lists the environment variables; the first one set wins.
	Env []string
	// Flag is the flag of `hangard serve` ("" for none).
	Flag string
	// Usage is the flag's help text.
	Usage string
	// Default is the value Default gives the field (nil: the zero value).
	Default any
	// Doc explains the default in docs/operations.md: the text after the
	// default, or the whole cell when the default is the zero value.
	Doc string
	// field binds the setting to its Config field.
	field field
}

// field reads and writes one Config field from text (environment, flags)
// and from HCL values (through its Go type).
type field struct {
	kind string // "string", "bool", "int", "duration" or "list": the HCL and Go type
	ptr  func(*Config) any
}

func strField(p func(*Config) *string) field {
	return field{"string", func(c *Config) any { return p(c) }}
}
func boolField(p func(*Config) *bool) field {
	return field{"bool", func(c *Config) any { return p(c) }}
}
func intField(p func(*Config) *int) field { return field{"int", func(c *Config) any { return p(c) }} }
func durField(p func(*Config) *time.Duration) field {
	return field{"duration", func(c *Config) any { return p(c) }}
}
func listField(p func(*Config) *[]string) field {
	return field{"list", func(c *Config) any { return p(c) }}
}

// setText parses v (an environment variable or a flag) into c's field.
func (f field) setText(c *Config, v string) error {
	switch p := f.ptr(c).(type) {
	case *string:
		*p = v
	case *bool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return err
		}
		*p = b
	case *int:
		n, err := strconv.Atoi(v)
		if err != nil {
			return err
		}
		*p = n
	case *time.Duration:
		d, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		*p = d
	case *[]string:
		*p = splitList(v)
	default:
		panic(fmt.Sprintf("config: field of type %T", p))
	}
	return nil
}

// copy copies the field's value from src to dst.
func (f field) copy(dst, src *Config) {
	switch d := f.ptr(dst).(type) {
	case *string:
		*d = *f.ptr(src).(*string)
	case *bool:
		*d = *f.ptr(src).(*bool)
	case *int:
		*d = *f.ptr(src).(*int)
	case *time.Duration:
		*d = *f.ptr(src).(*time.Duration)
	case *[]string:
		*d = slices.Clone(*f.ptr(src).(*[]string))
	}
}

// setDefault stores the setting's default (of the field's own Go type).
func (s *Setting) setDefault(c *Config) {
	if s.Default == nil {
		return
	}
	switch p := s.field.ptr(c).(type) {
	case *string:
		*p = s.Default.(string)
	case *bool:
		*p = s.Default.(bool)
	case *int:
		*p = s.Default.(int)
	case *time.Duration:
		*p = s.Default.(time.Duration)
	case *[]string:
		*p = slices.Clone(s.Default.([]string))
	}
}

// Name is how errors and the docs name the setting: its HCL attribute,
// else its first environment variable.
func (s *Setting) Name() string {
	if s.HCL != "" {
		return s.HCL
	}
	return s.Env[0]
}

// Settings is every hangard setting, in the documented order.
var Settings = []Setting{
	{HCL: "listen", Env: []string{"HANGARD_LISTEN"}, Flag: "listen",
		Usage: "HTTP listen address (HANGARD_LISTEN)", Default: "127.0.0.1:7780",
		field: strField(func(c *Config) *string { return &c.Listen })},
	{HCL: "tls_cert", Env: []string{"HANGARD_TLS_CERT"}, Flag: "tls-cert",
		Usage: "TLS certificate file (HANGARD_TLS_CERT)",
		Doc:   "none (plain HTTP); set together with `tls_key`",
		field: strField(func(c *Config) *string { return &c.TLSCert })},
	{HCL: "tls_key", Env: []string{"HANGARD_TLS_KEY"}, Flag: "tls-key",
		Usage: "TLS key file (HANGARD_TLS_KEY)",
		Doc:   "none (plain HTTP); set together with `tls_cert`",
		field: strField(func(c *Config) *string { return &c.TLSKey })},
	{HCL: "trusted_proxy_headers", Env: []string{"HANGARD_TRUSTED_PROXY_HEADERS"}, Flag: "trusted-proxy-headers",
		Usage: "believe X-Forwarded-Proto/-Host, behind a proxy that terminates TLS; --trusted-proxy-headers=false turns it off (HANGARD_TRUSTED_PROXY_HEADERS)",
		Doc:   "`false`: believe `X-Forwarded-Proto`/`-Host` only behind a proxy that terminates TLS (Fly's does)",
		field: boolField(func(c *Config) *bool { return &c.TrustedProxyHeaders })},
	{HCL: "public_url", Env: []string{"HANGARD_PUBLIC_URL"}, Flag: "public-url",
		Usage: "external base URL of the daemon (HANGARD_PUBLIC_URL)",
		Doc:   "from the request",
		field: strField(func(c *Config) *string { return &c.PublicURL })},
	{HCL: "daemon_url", Env: []string{"HANGARD_DAEMON_URL"}, Flag: "daemon-url",
		Usage: "URL workers dial for their tunnel; default the public URL (HANGARD_DAEMON_URL)",
		Doc:   "`public_url`, else the listen URL: the URL workers dial (the pools' `daemon_url`, and the audience their identity tokens must name)",
		field: strField(func(c *Config) *string { return &c.DaemonURL })},
	{HCL: "internal_listen", Env: []string{"HANGARD_INTERNAL_LISTEN"}, Flag: "internal-listen",
		Usage: "replica-to-replica listen address, never public (HANGARD_INTERNAL_LISTEN)",
		Doc:   "none: the replica-to-replica listener (tunnel relay); needed with several replicas; never expose it",
		field: strField(func(c *Config) *string { return &c.InternalListen })},
	{HCL: "advertise_addr", Env: []string{"HANGARD_ADVERTISE_ADDR"}, Flag: "advertise-addr",
		Usage: "host:port other replicas reach --internal-listen on (HANGARD_ADVERTISE_ADDR)",
		Doc:   "`internal_listen` when it names a host, else `[FLY_PRIVATE_IP]:port`",
		field: strField(func(c *Config) *string { return &c.AdvertiseAddr })},
	{HCL: "fly_oidc_issuer", Env: []string{"HANGARD_FLY_OIDC_ISSUER"}, Flag: "fly-oidc-issuer",
		Usage: "issuer of machine identity tokens; default https://oidc.fly.io/<org> (HANGARD_FLY_OIDC_ISSUER)",
		Doc:   "`https://oidc.fly.io/<fly_org>`",
		field: strField(func(c *Config) *string { return &c.FlyOIDCIssuer })},
	{HCL: "allowed_origins", Env: []string{"HANGARD_ALLOWED_ORIGINS"}, Flag: "allowed-origins",
		Usage: "comma-separated WebSocket origins allowed (HANGARD_ALLOWED_ORIGINS)",
		Doc:   "the daemon's own origin only (scheme and host; behind a proxy that terminates TLS set `public_url` or `trusted_proxy_headers`, else the browser's `https://` origin does not match). A list in HCL, comma-separated elsewhere",
		field: listField(func(c *Config) *[]string { return &c.AllowedOrigins })},
	{HCL: "fly_api_url", Env: []string{"HANGARD_FLY_API_URL", "FLY_API_URL"}, Flag: "fly-api-url",
		Usage: "Fly Machines API base URL without /v1 (FLY_API_URL)", Default: fly.DefaultBaseURL,
		Doc:   "(Fly's public Machines API)",
		field: strField(func(c *Config) *string { return &c.FlyAPIURL })},
	{HCL: "fly_api_token", Env: []string{"HANGARD_FLY_API_TOKEN", "FLY_API_TOKEN"},
		Doc:   "none",
		field: strField(func(c *Config) *string { return &c.FlyAPIToken })},
	{HCL: "fly_org", Env: []string{"HANGARD_FLY_ORG", "FLY_ORG"}, Flag: "fly-org",
		Usage: "Fly organisation slug (FLY_ORG)", Default: "personal",
		field: strField(func(c *Config) *string { return &c.FlyOrg })},
	{HCL: "store_dsn", Env: []string{"HANGARD_STORE_DSN"}, Flag: "store",
		Usage: "store DSN: sqlite:///file.db or postgres://… (HANGARD_STORE_DSN)", Default: "sqlite:///var/lib/hangard/hangard.db",
		field: strField(func(c *Config) *string { return &c.StoreDSN })},
	{HCL: "replica_id", Env: []string{"HANGARD_REPLICA_ID"}, Flag: "replica-id",
		Usage: "this replica's id, stable across restarts (HANGARD_REPLICA_ID)",
		Doc:   "`fly-$FLY_MACHINE_ID` on Fly; with SQLite, an id kept in `<store file>.replica-id` (made on first start); else a fresh id per process. The replica's name in the store, the same across its restarts (see \"Crashes and restarts\"); two live processes must never share one",
		field: strField(func(c *Config) *string { return &c.ReplicaID })},
	{HCL: "broker_key_file", Env: []string{"HANGARD_BROKER_KEY_FILE"}, Flag: "broker-key-file",
		Usage: "broker private key file (HANGARD_BROKER_KEY_FILE; or HANGARD_BROKER_KEY)",
		Doc:   "required, or the key itself in `HANGARD_BROKER_KEY`",
		field: strField(func(c *Config) *string { return &c.BrokerKeyFile })},
	{Env: []string{"HANGARD_BROKER_KEY"},
		Doc:   "the broker's private key itself, instead of `broker_key_file` (environment only)",
		field: strField(func(c *Config) *string { return &c.BrokerKey })},
	{HCL: "admin_key", Env: []string{"HANGARD_ADMIN_KEY"},
		Doc:   "none: the admin API answers 401",
		field: strField(func(c *Config) *string { return &c.AdminKey })},
	{HCL: "log_format", Env: []string{"HANGARD_LOG_FORMAT"}, Flag: "log-format",
		Usage: "log format: json or text (HANGARD_LOG_FORMAT)", Default: "json",
		Doc:   "(`text` for people)",
		field: strField(func(c *Config) *string { return &c.LogFormat })},
	{HCL: "log_level", Env: []string{"HANGARD_LOG_LEVEL"}, Flag: "log-level",
		Usage: "log level: trace, debug, info, warn, error (HANGARD_LOG_LEVEL)", Default: "info",
		field: strField(func(c *Config) *string { return &c.LogLevel })},
	{HCL: "claim_workers", Env: []string{"HANGARD_CLAIM_WORKERS"}, Default: 8,
		Doc:   "claims at once per replica",
		field: intField(func(c *Config) *int { return &c.ClaimWorkers })},
	{HCL: "max_attaches_per_session", Env: []string{"HANGARD_MAX_ATTACHES_PER_SESSION"},
		Doc:   "`64` concurrent attachments to one session on this replica (`0`: that default; `-1`: no limit)",
		field: intField(func(c *Config) *int { return &c.MaxAttachesPerSession })},
	{HCL: "max_attaches_per_ticket", Env: []string{"HANGARD_MAX_ATTACHES_PER_TICKET"},
		Doc:   "`32` concurrent attachments opened with one ticket (a share link)",
		field: intField(func(c *Config) *int { return &c.MaxAttachesPerTicket })},
	{HCL: "max_attaches_per_tenant", Env: []string{"HANGARD_MAX_ATTACHES_PER_TENANT"},
		Doc:   "`256` concurrent attachments of one tenant on this replica",
		field: intField(func(c *Config) *int { return &c.MaxAttachesPerTenant })},
	{HCL: "heartbeat_interval", Env: []string{"HANGARD_HEARTBEAT_INTERVAL"}, Default: 5 * time.Second,
		Doc:   "(how often a replica records that it is alive)",
		field: durField(func(c *Config) *time.Duration { return &c.HeartbeatInterval })},
	{HCL: "dead_after", Env: []string{"HANGARD_DEAD_AFTER"}, Default: 30 * time.Second,
		Doc:   "(a replica silent that long is dead; at least twice `heartbeat_interval`)",
		field: durField(func(c *Config) *time.Duration { return &c.DeadAfter })},
	{HCL: "sweep_interval", Env: []string{"HANGARD_SWEEP_INTERVAL"}, Default: 15 * time.Second,
		Doc:   "(TTL, idle and exit checks)",
		field: durField(func(c *Config) *time.Duration { return &c.SweepInterval })},
	{HCL: "pool_refresh", Env: []string{"HANGARD_POOL_REFRESH"}, Default: 30 * time.Second,
		Doc:   "(how often the pools are re-read from Fly)",
		field: durField(func(c *Config) *time.Duration { return &c.PoolRefresh })},
	{HCL: "ready_timeout", Env: []string{"HANGARD_READY_TIMEOUT"}, Default: 3 * time.Minute,
		Doc:   "(a claim that is not ready by then fails)",
		field: durField(func(c *Config) *time.Duration { return &c.ReadyTimeout })},
}

// lookup finds the setting of an HCL attribute.
func lookup(hclName string) *Setting {
	for i := range Settings {
		if Settings[i].HCL == hclName {
			return &Settings[i]
		}
	}
	return nil
}

// formatDefault is the default as docs/operations.md shows it ("" for the
// zero value).
func (s *Setting) formatDefault() string {
	switch v := s.Default.(type) {
	case nil:
		return ""
	case time.Duration:
		t := v.String()
		if strings.HasSuffix(t, "m0s") {
			t = strings.TrimSuffix(t, "0s")
		}
		return t
	case []string:
		return strings.Join(v, ",")
	default:
		return fmt.Sprint(v)
	}
}

// MarkdownTable is the configuration table of docs/operations.md, made
// from Settings (make docs writes it there; a test keeps it current).
func MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| HCL attribute | Environment | Flag | Default |\n| --- | --- | --- | --- |\n")
	code := func(names ...string) string {
		var out []string
		for _, n := range names {
			if n != "" {
				out = append(out, "`"+n+"`")
			}
		}
		return strings.Join(out, ", ")
	}
	for i := range Settings {
		s := &Settings[i]
		hcl := code(s.HCL)
		if s.field.kind == "list" {
			hcl += " (list)"
		}
		if s.HCL == "" {
			hcl = "none (environment only)"
		}
		flagName := ""
		if s.Flag != "" {
			flagName = code("--" + s.Flag)
		}
		def := s.Doc
		if d := s.formatDefault(); d != "" {
			def = strings.TrimSpace("`" + d + "` " + s.Doc)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", hcl, code(s.Env...), flagName, def)
	}
	return b.String()
}

// flagValue is a setting's flag: it parses what it is given at once (so a
// bad value fails at fs.Parse, as with the flag package's own types) and
// remembers it for Flags.Load, which applies only the flags that were set.
type flagValue struct {
	s   *Setting
	set *Config // scratch config the flag writes into
}

func (v *flagValue) String() string {
	if v == nil || v.s == nil || v.set == nil {
		return ""
	}
	switch p := v.s.field.ptr(v.set).(type) {
	case *string:
		return *p
	case *bool:
		return strconv.FormatBool(*p)
	case *[]string:
		return strings.Join(*p, ",")
	default:
		return fmt.Sprint(p)
	}
}

func (v *flagValue) Set(text string) error { return v.s.field.setText(v.set, text) }

// IsBoolFlag lets a bool setting's flag stand alone (--trusted-proxy-headers).
func (v *flagValue) IsBoolFlag() bool { return v.s.field.kind == "bool" }

var _ flag.Value = (*flagValue)(nil)
