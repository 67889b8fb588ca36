package pool

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// StandbyMode is how a standby machine waits to be claimed.
type StandbyMode string

// Standby modes.
const (
	// StandbyStop: created with skip_launch and never started (state created).
	StandbyStop StandbyMode = "stop"
	// StandbySuspend: started once, healthy, then suspended (state suspended).
	StandbySuspend StandbyMode = "suspend"
)

// Defaults the provider applies when an attribute is not set.
const (
	DefaultAgentPort   = 8080
	DefaultStandbyMode = StandbyStop
	DefaultIdleTimeout = 15 * time.Minute
	DefaultSessionTTL  = 4 * time.Hour
	DefaultCPUKind     = "shared"
	DefaultCPUs        = 1
	DefaultMemoryMB    = 2048
)

// Guest is a machine size.
type Guest struct {
	CPUKind  string `json:"cpu_kind"`
	CPUs     int    `json:"cpus"`
	MemoryMB int    `json:"memory_mb"`
}

// Spec is one template's declared spec: the pool's default image, or a tenant
// image (TenantImage != ""). A tenant image's Spec is complete: the fields it
// does not override are copied from the pool's Spec (see Spec.ForTenantImage).
type Spec struct {
	// Pool is the pool name.
	Pool string
	// App is the Fly app holding the pool's machines.
	App string
	// Network is the app's isolated 6PN network ("" = the org's default).
	// An isolated worker cannot be reached from the daemon's network, so a
	// Network requires a DaemonURL.
	Network string
	// DaemonURL is the hangar daemon's URL that agents dial to open their
	// outbound tunnel (scheme http or https, a host, an optional port, and
	// nothing else: see ValidateDaemonURL). "" is the legacy mode in which
	// the daemon dials the agent over the private network.
	DaemonURL string
	// AdoptedApp is true when the app existed before the pool (adopt_app):
	// deleting the pool then leaves the app in place.
	AdoptedApp bool
	// Regions are the Fly regions standbys are kept in, in declared order.
	Regions []string
	// Image is the worker image reference.
	Image string
	// Guest is the machine size.
	Guest Guest
	// Env is the machine env as declared (no hangar-reserved names).
	Env map[string]string
	// MinStandby is the number of standbys per region for this template.
	MinStandby int
	// MaxMachines caps standby plus session machines over the whole pool.
	MaxMachines int
	// StandbyMode is stop or suspend.
	StandbyMode StandbyMode
	// IdleTimeout ends a session without input or attachment for this long.
	IdleTimeout time.Duration
	// SessionTTL is the maximum lifetime of a session.
	SessionTTL time.Duration
	// AgentPort is the port the agent listens on.
	AgentPort int
	// BrokerPublicKeys are the broker's ed25519 public keys (standard base64).
	BrokerPublicKeys []string

	// TenantImage is the tenant image name ("" for the pool's default template).
	TenantImage string
	// Tenant is the tenant allowed to use the tenant image.
	Tenant string
	// GuestOverride is true when the tenant image sets its own guest.
	GuestOverride bool
	// EnvOverrides are the env names the tenant image sets over the pool's env.
	EnvOverrides []string

	// Draining is true while the template is being deleted.
	Draining bool
}

// ForTenantImage returns the complete spec of a tenant image of pool p: the
// pool's spec with the tenant image's name, tenant, image, min standby and
// overrides applied. guest may be nil (inherit); env is merged over the pool's.
func (p Spec) ForTenantImage(name, tenant, image string, minStandby int, guest *Guest, env map[string]string) Spec {
	s := p.clone()
	s.TenantImage = name
	s.Tenant = tenant
	s.Image = image
	s.MinStandby = minStandby
	s.Draining = false
	s.GuestOverride = guest != nil
	if guest != nil {
		s.Guest = *guest
	}
	s.EnvOverrides = nil
	if len(env) > 0 {
		if s.Env == nil {
			s.Env = map[string]string{}
		}
		for k, v := range env {
			s.Env[k] = v
			s.EnvOverrides = append(s.EnvOverrides, k)
		}
		sort.Strings(s.EnvOverrides)
	}
	return s
}

// OverrideEnv returns the env a tenant image declared itself (EnvOverrides).
func (s Spec) OverrideEnv() map[string]string {
	if len(s.EnvOverrides) == 0 {
		return nil
	}
	out := make(map[string]string, len(s.EnvOverrides))
	for _, k := range s.EnvOverrides {
		if v, ok := s.Env[k]; ok {
			out[k] = v
		}
	}
	return out
}

func (s Spec) clone() Spec {
	c := s
	c.Regions = slices.Clone(s.Regions)
	c.BrokerPublicKeys = slices.Clone(s.BrokerPublicKeys)
	c.EnvOverrides = slices.Clone(s.EnvOverrides)
	if s.Env != nil {
		c.Env = make(map[string]string, len(s.Env))
		for k, v := range s.Env {
			c.Env[k] = v
		}
	}
	return c
}

// Hash is a stable hash of the parts of the spec that go into a standby's
// machine config (image, guest, env, agent port, broker keys, daemon URL,
// standby mode, and which template it belongs to). Standbys whose KeySpec
// differs from their template's are stale and get replaced. Counts, regions,
// timeouts and draining do not change a standby, so they are not part of the
// hash. The daemon URL enters the hash only when set, so that the hash of
// every pool declared before it existed stays the same and an upgrade rolls
// no standbys.
func (s Spec) Hash() string {
	doc := struct {
		V           int               `json:"v"`
		Pool        string            `json:"pool"`
		TenantImage string            `json:"tenant_image"`
		Image       string            `json:"image"`
		Guest       Guest             `json:"guest"`
		Env         map[string]string `json:"env"`
		Mode        StandbyMode       `json:"standby_mode"`
		AgentPort   int               `json:"agent_port"`
		BrokerKeys  []string          `json:"broker_public_keys"`
		DaemonURL   string            `json:"daemon_url,omitempty"` // omitempty: see above
	}{1, s.Pool, s.TenantImage, s.Image, s.Guest, s.Env, s.StandbyMode, s.AgentPort, s.BrokerPublicKeys, s.DaemonURL}
	if doc.Env == nil {
		doc.Env = map[string]string{}
	}
	if doc.BrokerKeys == nil {
		doc.BrokerKeys = []string{}
	}
	b, err := json.Marshal(doc) // map keys are sorted: the encoding is canonical
	if err != nil {
		panic(fmt.Sprintf("pool: marshal spec hash document: %v", err)) // plain data: cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// FieldError is one invalid field. Field is the Terraform attribute path
// ("guest.memory_mb", "regions[1]", "min_standby").
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// ValidationError lists every invalid field of a spec.
type ValidationError []*FieldError

func (v ValidationError) Error() string {
	msgs := make([]string, len(v))
	for i, e := range v {
		msgs[i] = e.Error()
	}
	return "invalid pool spec: " + strings.Join(msgs, "; ")
}

// Fields returns the field errors of err if it is (or wraps) a ValidationError.
func Fields(err error) []*FieldError {
	var v ValidationError
	if errors.As(err, &v) {
		return v
	}
	var f *FieldError
	if errors.As(err, &f) {
		return []*FieldError{f}
	}
	return nil
}

var (
	regionRE  = regexp.MustCompile(`^[a-z]{3}$`)
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	tenantRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$`)
)

// Allowed CPU counts per CPU kind, and memory bounds per CPU (MB).
var (
	sharedCPUs      = []int{1, 2, 4, 6, 8}
	performanceCPUs = []int{1, 2, 4, 6, 8, 10, 12, 14, 16}
)

// ValidateRegion checks a Fly region code (three lowercase letters).
func ValidateRegion(r string) error {
	if !regionRE.MatchString(r) {
		return fmt.Errorf("%q is not a Fly region code (three lowercase letters, like \"iad\" or \"ams\")", r)
	}
	return nil
}

// ValidateName checks a pool, tenant image, app or network name: lowercase
// letters, digits and dashes, starting with a letter or digit, at most 63.
func ValidateName(n string) error {
	if !nameRE.MatchString(n) {
		return fmt.Errorf("%q is not a valid name (lowercase letters, digits and dashes, starting with a letter or digit, at most 63 characters)", n)
	}
	return nil
}

// ValidateGuest checks a guest against Fly's allowed sizes and returns every
// problem, one per field. Field names are relative to the guest ("cpu_kind",
// "cpus", "memory_mb"). When the CPU kind or count is itself invalid, memory
// is still checked as far as it can be: a positive multiple of 256, within
// the kind's overall range (any kind's, for an unknown kind).
func ValidateGuest(g Guest) []*FieldError {
	var errs []*FieldError
	var cpus []int
	var minPer, maxPer int
	switch g.CPUKind {
	case "shared":
		cpus, minPer, maxPer = sharedCPUs, 256, 2048
	case "performance":
		cpus, minPer, maxPer = performanceCPUs, 2048, 8192
	default:
		errs = append(errs, &FieldError{"cpu_kind", fmt.Sprintf("%q is not a Fly CPU kind; use \"shared\" or \"performance\"", g.CPUKind)})
		if !slices.Contains(sharedCPUs, g.CPUs) && !slices.Contains(performanceCPUs, g.CPUs) {
			errs = append(errs, &FieldError{"cpus", fmt.Sprintf("%d CPUs is not a Fly size; allowed: %s (shared), %s (performance)",
				g.CPUs, joinInts(sharedCPUs), joinInts(performanceCPUs))})
		}
		if g.MemoryMB%256 != 0 || g.MemoryMB <= 0 {
			errs = append(errs, &FieldError{"memory_mb", fmt.Sprintf("%d MB is not a positive multiple of 256", g.MemoryMB)})
		}
		return errs
	}
	cpusOK := slices.Contains(cpus, g.CPUs)
	if !cpusOK {
		errs = append(errs, &FieldError{"cpus", fmt.Sprintf("%d CPUs is not a Fly %s size; allowed: %s", g.CPUs, g.CPUKind, joinInts(cpus))})
	}
	lo, hi := minPer*g.CPUs, maxPer*g.CPUs
	if !cpusOK {
		// No valid count to scale by: the kind's smallest and largest sizes.
		lo, hi = minPer*cpus[0], maxPer*cpus[len(cpus)-1]
	}
	switch {
	case g.MemoryMB%256 != 0 || g.MemoryMB <= 0:
		errs = append(errs, &FieldError{"memory_mb", fmt.Sprintf("%d MB is not a positive multiple of 256", g.MemoryMB)})
	case cpusOK && (g.MemoryMB < lo || g.MemoryMB > hi):
		errs = append(errs, &FieldError{"memory_mb", fmt.Sprintf("%d MB is outside Fly's range for %d %s CPU(s): %d to %d MB (%d to %d MB per CPU)",
			g.MemoryMB, g.CPUs, g.CPUKind, lo, hi, minPer, maxPer)})
	case !cpusOK && (g.MemoryMB < lo || g.MemoryMB > hi):
		errs = append(errs, &FieldError{"memory_mb", fmt.Sprintf("%d MB is outside Fly's range for %s machines: %d to %d MB (%d to %d MB per CPU)",
			g.MemoryMB, g.CPUKind, lo, hi, minPer, maxPer)})
	}
	return errs
}

// ValidateTenant checks a tenant name: letters, digits, '.', '_', '@' and
// '-', starting with a letter or digit, at most 128 characters.
func ValidateTenant(t string) error {
	if !tenantRE.MatchString(t) {
		return fmt.Errorf("%q is not a tenant name (letters, digits, '.', '_', '@', '-', starting with a letter or digit, at most 128 characters)", t)
	}
	return nil
}

// ValidateBrokerPublicKey checks one broker public key: standard base64 of
// the 32 raw bytes of an ed25519 public key.
func ValidateBrokerPublicKey(k string) error {
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil || len(b) != 32 {
		return fmt.Errorf("not an ed25519 public key (standard base64 of 32 bytes, as printed by `hangard keygen`)")
	}
	return nil
}

// ValidateDaemonURL checks a daemon URL: "http://" or "https://", a host,
// an optional port, and nothing else (no user info, path, query or
// fragment, not even a trailing "/"). One spelling per URL, because agents
// append the tunnel path to it and present it as the audience of their
// identity token, which the daemon compares as a string; and the provider
// stores it as written, so a normalized copy would show as drift.
func ValidateDaemonURL(raw string) error {
	const form = `use the daemon's base URL, like "https://hangar.example.com" or "http://10.0.0.5:8080"`
	if strings.IndexFunc(raw, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return fmt.Errorf("%q contains whitespace or control characters; %s", raw, form)
	}
	if !strings.HasPrefix(raw, "http://") && !strings.HasPrefix(raw, "https://") {
		return fmt.Errorf("%q is not an http:// or https:// URL; %s", raw, form)
	}
	if strings.ContainsAny(raw, "?#") {
		return fmt.Errorf("%q has a query or fragment; %s", raw, form)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q is not a URL (%v); %s", raw, errors.Unwrap(err), form)
	}
	switch {
	case u.User != nil:
		return fmt.Errorf("%q carries user info; agents authenticate with their machine identity, so %s", raw, form)
	case u.Hostname() == "":
		return fmt.Errorf("%q has no host; %s", raw, form)
	case u.Path != "" || u.RawPath != "":
		return fmt.Errorf("%q has a path (%q); agents add the tunnel path themselves, so %s", raw, u.EscapedPath(), form)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q has port %s, not a TCP port (1-65535)", raw, p)
		}
	}
	return nil
}

// ReservedEnv reports whether an env name is set by hangar itself.
func ReservedEnv(name string) bool {
	_, ok := reservedEnv[name]
	return ok
}

// reservedEnv maps each env name hangar sets to the pool attribute it comes
// from, for the message that refuses it in env.
var reservedEnv = map[string]string{
	EnvAgentPort:       "agent_port",
	EnvBrokerPublicKey: "broker_public_key",
	EnvDaemonURL:       "daemon_url",
}

// Validate checks the spec and returns a ValidationError naming every invalid
// field, or nil.
func (s Spec) Validate() error {
	var errs ValidationError
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{field, fmt.Sprintf(format, args...)})
	}
	if s.TenantImage == "" {
		if err := ValidateName(s.Pool); err != nil {
			add("name", "%v", err)
		}
		if err := ValidateName(s.App); err != nil {
			add("app_name", "%v", err)
		}
		if s.Network != "" {
			if err := ValidateName(s.Network); err != nil {
				add("network", "%v", err)
			}
		}
		// Pool-wide settings: a tenant image inherits them as the pool has
		// them, so they are checked on the pool's own spec only.
		switch {
		case s.DaemonURL != "":
			if err := ValidateDaemonURL(s.DaemonURL); err != nil {
				add("daemon_url", "%v", err)
			}
		case s.Network != "":
			add("daemon_url", "network %q isolates the workers, so the daemon cannot connect to them: they must dial the daemon. "+
				"Set daemon_url (or HANGAR_DAEMON_URL) to the daemon's public URL", s.Network)
		}
	} else {
		if err := ValidateName(s.TenantImage); err != nil {
			add("name", "%v", err)
		}
		if err := ValidateTenant(s.Tenant); err != nil {
			add("tenant", "%v", err)
		}
	}
	if len(s.Regions) == 0 {
		add("regions", "at least one region is required")
	}
	seen := map[string]bool{}
	for i, r := range s.Regions {
		if err := ValidateRegion(r); err != nil {
			add(fmt.Sprintf("regions[%d]", i), "%v", err)
		} else if seen[r] {
			add(fmt.Sprintf("regions[%d]", i), "region %q is listed twice", r)
		}
		seen[r] = true
	}
	if strings.TrimSpace(s.Image) == "" {
		add("image", "an image reference is required (for example \"registry.fly.io/hangar-worker:1.0.0\")")
	} else if strings.ContainsAny(s.Image, " \t\n") {
		add("image", "%q contains whitespace", s.Image)
	}
	for _, e := range ValidateGuest(s.Guest) {
		add("guest."+e.Field, "%s", e.Message)
	}
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch {
		case !envNameRE.MatchString(k):
			add("env", "%q is not a valid environment variable name", k)
		case ReservedEnv(k):
			add("env", "%s is set by hangar from the pool's %s; remove it from env", k, reservedEnv[k])
		}
	}
	if s.MinStandby < 0 {
		add("min_standby", "must be 0 or more, got %d", s.MinStandby)
	}
	if s.MaxMachines < 1 {
		add("max_machines", "must be at least 1, got %d", s.MaxMachines)
	} else if s.MinStandby > 0 && len(s.Regions) > 0 && s.MinStandby*len(s.Regions) > s.MaxMachines {
		add("min_standby", "min_standby %d per region × %d region(s) = %d standbys exceeds max_machines %d; lower min_standby or raise max_machines",
			s.MinStandby, len(s.Regions), s.MinStandby*len(s.Regions), s.MaxMachines)
	}
	if s.StandbyMode != StandbyStop && s.StandbyMode != StandbySuspend {
		add("standby_mode", "%q is not a standby mode; use \"stop\" or \"suspend\"", s.StandbyMode)
	}
	if s.StandbyMode == StandbySuspend && s.Guest.MemoryMB > SuspendMaxMemoryMB {
		add("guest.memory_mb", "%d MB cannot be suspended: Fly suspends only machines with at most %d MB; use standby_mode = \"stop\" or at most %d MB",
			s.Guest.MemoryMB, SuspendMaxMemoryMB, SuspendMaxMemoryMB)
	}
	if s.IdleTimeout <= 0 {
		add("idle_timeout", "must be a positive duration, got %s", s.IdleTimeout)
	}
	if s.SessionTTL <= 0 {
		add("session_ttl", "must be a positive duration, got %s", s.SessionTTL)
	}
	if s.AgentPort < 1 || s.AgentPort > 65535 {
		add("agent_port", "%d is not a TCP port (1-65535)", s.AgentPort)
	}
	if len(s.BrokerPublicKeys) == 0 {
		add("broker_public_key", "a broker public key is required (set broker_public_key or HANGAR_BROKER_PUBLIC_KEY; `hangard keygen` prints one)")
	}
	for _, k := range s.BrokerPublicKeys {
		if err := ValidateBrokerPublicKey(k); err != nil {
			add("broker_public_key", "%q is %v", k, err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

// ValidateCapacity checks that min_standby × regions summed over all the
// templates of one pool stays within the pool's max_machines (taken from the
// default template, else the first spec).
func ValidateCapacity(specs []Spec) error {
	if len(specs) == 0 {
		return nil
	}
	max := specs[0].MaxMachines
	for _, s := range specs {
		if s.TenantImage == "" {
			max = s.MaxMachines
		}
	}
	total := 0
	var parts []string
	for _, s := range specs {
		n := s.MinStandby * len(s.Regions)
		total += n
		name := "pool " + s.Pool
		if s.TenantImage != "" {
			name = "tenant image " + s.TenantImage
		}
		parts = append(parts, fmt.Sprintf("%s %d", name, n))
	}
	if total > max {
		return &FieldError{"min_standby", fmt.Sprintf("standbys summed over the pool's templates (%s) = %d exceed max_machines %d; lower min_standby or raise max_machines",
			strings.Join(parts, ", "), total, max)}
	}
	return nil
}

// ParseDuration parses a positive Go duration ("15m", "4h", "1h30m").
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration; use a number with a unit such as \"90s\", \"15m\" or \"4h\"", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q must be a positive duration", s)
	}
	return d, nil
}

// FormatDuration writes d as a Go duration without zero trailing units
// ("4h", "15m", "1h30m"), which ParseDuration reads back to the same value.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ", ")
}
