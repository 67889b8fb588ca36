package fly

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The types in this file mirror the JSON of Fly's Machines API (Fly's published
// OpenAPI document, internal/flyspec/machines-openapi.json, plus the fields the
// live service and fly-go are known to use beyond it). Field names and
// omitempty follow what Fly sends, so that a config read from Fly and written
// back round-trips unchanged.

// Machine states reported by the API.
const (
	StateCreated    = "created"
	StateStarting   = "starting"
	StateStarted    = "started"
	StateStopping   = "stopping"
	StateStopped    = "stopped"
	StateSuspending = "suspending"
	StateSuspended  = "suspended"
	StateRestarting = "restarting"
	StateUpdating   = "updating"
	StateReplacing  = "replacing"
	StateDestroying = "destroying"
	StateDestroyed  = "destroyed"
	StateFailed     = "failed"
	StateReplaced   = "replaced"
	StateMigrated   = "migrated"
	// StateLaunchFailed is reported for a version that could not be launched.
	StateLaunchFailed = "launch_failed"
	// StateSettled is a wait target only: any non-transient state.
	StateSettled = "settled"
)

// LeaseNonceHeader is the request header that proves the caller holds a machine's lease.
const LeaseNonceHeader = "fly-machine-lease-nonce"

// RequestIDHeader is the response header Fly uses to identify a request in its logs.
const RequestIDHeader = "fly-request-id"

// Duration is a time.Duration that Fly writes as a Go duration string ("10s").
// It also accepts an integer number of nanoseconds, as older docs describe and
// fly-go accepts.
type Duration struct {
	time.Duration
}

// NewDuration returns a *Duration for d, convenient for optional config fields.
func NewDuration(d time.Duration) *Duration { return &Duration{Duration: d} }

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.Duration.String())
}

// UnmarshalJSON accepts a Go duration string or integer nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s == "" {
			d.Duration = 0
			return nil
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("fly duration %q: %w", s, err)
		}
		d.Duration = v
		return nil
	}
	if string(b) == "null" {
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("fly duration %s: want a duration string or integer nanoseconds", b)
	}
	d.Duration = time.Duration(n)
	return nil
}

// Autostop is a service's autostop mode. Fly's spec declares the string enum
// "off" | "stop" | "suspend", which is what we send; older clients (fly-go)
// send a bool for off/stop, which is accepted when reading.
type Autostop string

// Autostop modes.
const (
	AutostopOff     Autostop = "off"
	AutostopStop    Autostop = "stop"
	AutostopSuspend Autostop = "suspend"
)

// UnmarshalJSON accepts "off" | "stop" | "suspend" or a bool (true = stop).
func (a *Autostop) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case "true":
		*a = AutostopStop
		return nil
	case "false":
		*a = AutostopOff
		return nil
	case "null":
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("fly autostop %s: want a bool or a string", b)
	}
	*a = Autostop(s)
	return nil
}

// PersistRootfs is a rootfs persistence mode ("never" | "always" | "restart").
// Reading also accepts fly-go's integer enum (0 never, 1 always, 2 restart).
type PersistRootfs string

// Rootfs persistence modes.
const (
	PersistRootfsNever   PersistRootfs = "never"
	PersistRootfsAlways  PersistRootfs = "always"
	PersistRootfsRestart PersistRootfs = "restart"
)

// UnmarshalJSON accepts a string or fly-go's integer enum.
func (p *PersistRootfs) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] != '"' {
		n, err := strconv.Atoi(string(b))
		if err != nil {
			return fmt.Errorf("fly persist_rootfs %s: want a string or an integer", b)
		}
		switch n {
		case 0:
			*p = PersistRootfsNever
		case 1:
			*p = PersistRootfsAlways
		case 2:
			*p = PersistRootfsRestart
		default:
			return fmt.Errorf("fly persist_rootfs %d: unknown value", n)
		}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*p = PersistRootfs(s)
	return nil
}

// ---- Apps ----

// App is an app as returned by GET /apps/{app}.
type App struct {
	ID                string           `json:"id,omitempty"`
	Name              string           `json:"name,omitempty"`
	Status            string           `json:"status,omitempty"`
	Network           string           `json:"network,omitempty"`
	InternalNumericID int64            `json:"internal_numeric_id,omitempty"`
	MachineCount      int              `json:"machine_count,omitempty"`
	VolumeCount       int              `json:"volume_count,omitempty"`
	Organization      *AppOrganization `json:"organization,omitempty"`
}

// AppOrganization is the organization an app belongs to.
type AppOrganization struct {
	Name              string `json:"name,omitempty"`
	Slug              string `json:"slug,omitempty"`
	InternalNumericID int64  `json:"internal_numeric_id,omitempty"`
}

// CreateAppRequest is the body of POST /apps. The spec's field is "name"
// (docs examples show "app_name"; we send the spec form).
type CreateAppRequest struct {
	Name             string `json:"name"`
	OrgSlug          string `json:"org_slug"`
	Network          string `json:"network,omitempty"`
	EnableSubdomains bool   `json:"enable_subdomains,omitempty"`
}

// ListAppsResponse is the body of GET /apps?org_slug=.
type ListAppsResponse struct {
	Apps      []App `json:"apps"`
	TotalApps int   `json:"total_apps"`
}

// ---- Machines ----

// Machine is a machine as returned by the machines endpoints.
type Machine struct {
	ID               string         `json:"id,omitempty"`
	Name             string         `json:"name,omitempty"`
	State            string         `json:"state,omitempty"`
	Region           string         `json:"region,omitempty"`
	InstanceID       string         `json:"instance_id,omitempty"`
	Version          string         `json:"version,omitempty"` // same as InstanceID on the live service; not in the spec
	PrivateIP        string         `json:"private_ip,omitempty"`
	Config           *MachineConfig `json:"config,omitempty"`
	IncompleteConfig *MachineConfig `json:"incomplete_config,omitempty"`
	ImageRef         *ImageRef      `json:"image_ref,omitempty"`
	Events           []MachineEvent `json:"events,omitempty"`
	Checks           []CheckStatus  `json:"checks,omitempty"`
	Nonce            string         `json:"nonce,omitempty"`
	HostStatus       string         `json:"host_status,omitempty"`
	Cordoned         bool           `json:"cordoned,omitempty"` // live service only; not in the spec
	CreatedAt        string         `json:"created_at,omitempty"`
	UpdatedAt        string         `json:"updated_at,omitempty"`
}

// Host statuses Fly reports on a machine.
const (
	HostStatusOK          = "ok"
	HostStatusUnreachable = "unreachable"
)

// GetConfig returns the machine's config, else (its host being unreachable,
// when Fly sends only what it still knows) its incomplete_config, as fly-go's
// GetConfig does. Nil when neither is present.
func (m *Machine) GetConfig() *MachineConfig {
	if m == nil {
		return nil
	}
	if m.Config != nil {
		return m.Config
	}
	return m.IncompleteConfig
}

// HostUnreachable reports whether Fly says the machine's host is not
// reachable (host_status other than "ok"); its config may then be incomplete
// and operations on it fail until the host is back.
func (m *Machine) HostUnreachable() bool {
	return m != nil && m.HostStatus != "" && m.HostStatus != HostStatusOK
}

// ImageRef describes the image a machine runs.
type ImageRef struct {
	Registry   string            `json:"registry,omitempty"`
	Repository string            `json:"repository,omitempty"`
	Tag        string            `json:"tag,omitempty"`
	Digest     string            `json:"digest,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// CheckStatus is the last result of one health check.
type CheckStatus struct {
	Name      string `json:"name,omitempty"`
	Status    string `json:"status,omitempty"` // passing | warning | critical
	Output    string `json:"output,omitempty"`
	UpdatedAt string `json:"updated_at,omitempty"`
}

// MachineEvent is one entry of a machine's event log (newest first).
// Timestamp is in milliseconds since the Unix epoch.
type MachineEvent struct {
	ID        string               `json:"id,omitempty"`
	Type      string               `json:"type,omitempty"`   // launch, start, exit, stop, update, restart, destroy, suspend, ...
	Status    string               `json:"status,omitempty"` // the state the event led to
	Source    string               `json:"source,omitempty"` // user | flyd
	Timestamp int64                `json:"timestamp,omitempty"`
	Request   *MachineEventRequest `json:"request,omitempty"`
}

// Time returns the event's timestamp as a time.Time.
func (e MachineEvent) Time() time.Time { return time.UnixMilli(e.Timestamp) }

// MachineEventRequest holds the details Fly attaches to an event (the spec
// declares it a free-form object; these are the fields clients read).
type MachineEventRequest struct {
	ExitEvent    *ExitEvent    `json:"exit_event,omitempty"`
	MonitorEvent *MonitorEvent `json:"MonitorEvent,omitempty"`
	RestartCount int           `json:"restart_count,omitempty"`
	// Mode is set by the Fly emulator (internal/flyemu) on the event of a
	// launch: "image" (an OCI container of the image) or "process". Fly
	// never sends it.
	Mode string `json:"hangar_emulator_mode,omitempty"`
}

// MonitorEvent is the older wrapper fly-go also reads an exit event from.
type MonitorEvent struct {
	ExitEvent *ExitEvent `json:"exit_event,omitempty"`
}

// ExitEvent describes how a machine's main process ended.
type ExitEvent struct {
	ExitCode      int    `json:"exit_code"`
	GuestExitCode int    `json:"guest_exit_code,omitempty"`
	GuestSignal   int    `json:"guest_signal,omitempty"`
	Signal        int    `json:"signal,omitempty"`
	OOMKilled     bool   `json:"oom_killed,omitempty"`
	RequestedStop bool   `json:"requested_stop,omitempty"`
	Restarting    bool   `json:"restarting,omitempty"`
	ExitedAt      string `json:"exited_at,omitempty"`
}

// MachineConfig is a machine's configuration (the spec's fly.MachineConfig).
type MachineConfig struct {
	Image                   string            `json:"image"`
	Guest                   *Guest            `json:"guest,omitempty"`
	Size                    string            `json:"size,omitempty"` // deprecated preset name, exclusive with Guest
	Env                     map[string]string `json:"env,omitempty"`
	Metadata                map[string]string `json:"metadata,omitempty"`
	Init                    *Init             `json:"init,omitempty"`
	Processes               []Process         `json:"processes,omitempty"`
	Services                []Service         `json:"services,omitempty"`
	Checks                  map[string]Check  `json:"checks,omitempty"`
	Restart                 *Restart          `json:"restart,omitempty"`
	AutoDestroy             bool              `json:"auto_destroy,omitempty"`
	StopConfig              *StopConfig       `json:"stop_config,omitempty"`
	Files                   []File            `json:"files,omitempty"`
	Mounts                  []Mount           `json:"mounts,omitempty"`
	Schedule                string            `json:"schedule,omitempty"`
	Standbys                []string          `json:"standbys,omitempty"`
	DNS                     *DNSConfig        `json:"dns,omitempty"`
	Metrics                 *Metrics          `json:"metrics,omitempty"`
	Statics                 []Static          `json:"statics,omitempty"`
	Rootfs                  *Rootfs           `json:"rootfs,omitempty"`
	CacheDrive              *CacheDrive       `json:"cache_drive,omitempty"`
	Containers              []ContainerConfig `json:"containers,omitempty"`
	DisableMachineAutostart *bool             `json:"disable_machine_autostart,omitempty"`
}

// Guest is the VM size.
type Guest struct {
	CPUKind          string        `json:"cpu_kind,omitempty"` // shared | performance
	CPUs             int           `json:"cpus,omitempty"`
	MemoryMB         int           `json:"memory_mb,omitempty"`
	GPUs             int           `json:"gpus,omitempty"`
	GPUKind          string        `json:"gpu_kind,omitempty"`
	MaxMemoryMB      int           `json:"max_memory_mb,omitempty"`
	KernelArgs       []string      `json:"kernel_args,omitempty"`
	HostDedicationID string        `json:"host_dedication_id,omitempty"`
	PersistRootfs    PersistRootfs `json:"persist_rootfs,omitempty"` // deprecated; see Rootfs
}

// Init overrides the image's entrypoint and command. Exec, when set, replaces both.
type Init struct {
	Exec       []string `json:"exec,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Tty        bool     `json:"tty,omitempty"`
	SwapSizeMB *int     `json:"swap_size_mb,omitempty"`
	KernelArgs []string `json:"kernel_args,omitempty"`
}

// Restart is the restart policy.
type Restart struct {
	Policy      string  `json:"policy,omitempty"` // no | always | on-failure | spot-price
	MaxRetries  int     `json:"max_retries,omitempty"`
	GPUBidPrice float64 `json:"gpu_bid_price,omitempty"`
}

// Restart policies.
const (
	RestartNo        = "no"
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartSpotPrice = "spot-price"
)

// StopConfig is how Fly stops a machine: Signal (default SIGINT), then SIGKILL after Timeout.
type StopConfig struct {
	Signal  string    `json:"signal,omitempty"`
	Timeout *Duration `json:"timeout,omitempty"`
}

// Process is one of a machine's processes (the spec's fly.MachineProcess).
type Process struct {
	Exec             []string          `json:"exec,omitempty"`
	Entrypoint       []string          `json:"entrypoint,omitempty"`
	Cmd              []string          `json:"cmd,omitempty"`
	User             string            `json:"user,omitempty"`
	Env              map[string]string `json:"env,omitempty"`
	EnvFrom          []EnvFrom         `json:"env_from,omitempty"`
	Secrets          []MachineSecret   `json:"secrets,omitempty"`
	IgnoreAppSecrets bool              `json:"ignore_app_secrets,omitempty"`
}

// EnvFrom sets an env var from a machine field (id, version, app_name, private_ip, region, image).
type EnvFrom struct {
	EnvVar   string `json:"env_var,omitempty"`
	FieldRef string `json:"field_ref,omitempty"`
}

// MachineSecret exposes an app secret as an env var.
type MachineSecret struct {
	EnvVar string `json:"env_var,omitempty"`
	Name   string `json:"name,omitempty"`
}

// Service is a Fly Proxy service of a machine.
type Service struct {
	Protocol                 string              `json:"protocol,omitempty"` // tcp | udp
	InternalPort             int                 `json:"internal_port,omitempty"`
	Ports                    []Port              `json:"ports,omitempty"`
	Autostart                *bool               `json:"autostart,omitempty"`
	Autostop                 *Autostop           `json:"autostop,omitempty"`
	MinMachinesRunning       *int                `json:"min_machines_running,omitempty"`
	Concurrency              *ServiceConcurrency `json:"concurrency,omitempty"`
	Checks                   []ServiceCheck      `json:"checks,omitempty"`
	ForceInstanceKey         string              `json:"force_instance_key,omitempty"`
	ForceInstanceDescription string              `json:"force_instance_description,omitempty"`
}

// Port is a public port of a service.
type Port struct {
	Port              *int               `json:"port,omitempty"`
	StartPort         *int               `json:"start_port,omitempty"`
	EndPort           *int               `json:"end_port,omitempty"`
	Handlers          []string           `json:"handlers,omitempty"`
	ForceHTTPS        bool               `json:"force_https,omitempty"`
	TLSOptions        *TLSOptions        `json:"tls_options,omitempty"`
	HTTPOptions       *HTTPOptions       `json:"http_options,omitempty"`
	ProxyProtoOptions *ProxyProtoOptions `json:"proxy_proto_options,omitempty"`
}

// TLSOptions configures TLS termination on a port.
type TLSOptions struct {
	ALPN              []string `json:"alpn,omitempty"`
	Versions          []string `json:"versions,omitempty"`
	DefaultSelfSigned *bool    `json:"default_self_signed,omitempty"`
}

// HTTPOptions configures the HTTP handler on a port.
type HTTPOptions struct {
	Compress           *bool                `json:"compress,omitempty"`
	H2Backend          *bool                `json:"h2_backend,omitempty"`
	HeadersReadTimeout *int                 `json:"headers_read_timeout,omitempty"`
	IdleTimeout        *int                 `json:"idle_timeout,omitempty"`
	ReplayCache        []ReplayCache        `json:"replay_cache,omitempty"`
	Response           *HTTPResponseOptions `json:"response,omitempty"`
}

// HTTPResponseOptions adjusts responses the proxy returns.
type HTTPResponseOptions struct {
	Headers  map[string]any `json:"headers,omitempty"`
	Pristine *bool          `json:"pristine,omitempty"`
}

// ReplayCache configures fly-replay caching.
type ReplayCache struct {
	PathPrefix  string `json:"path_prefix,omitempty"`
	TTLSeconds  int    `json:"ttl_seconds,omitempty"`
	Type        string `json:"type,omitempty"` // cookie | header
	Name        string `json:"name,omitempty"`
	AllowBypass bool   `json:"allow_bypass,omitempty"`
}

// ProxyProtoOptions configures the PROXY protocol handler.
type ProxyProtoOptions struct {
	Version string `json:"version,omitempty"`
}

// ServiceConcurrency limits a service's load per machine.
type ServiceConcurrency struct {
	Type      string `json:"type,omitempty"` // connections | requests
	HardLimit int    `json:"hard_limit,omitempty"`
	SoftLimit int    `json:"soft_limit,omitempty"`
}

// ServiceCheck is a proxy health check of a service.
type ServiceCheck struct {
	Type          string       `json:"type,omitempty"` // tcp | http
	Port          *int         `json:"port,omitempty"`
	Interval      *Duration    `json:"interval,omitempty"`
	Timeout       *Duration    `json:"timeout,omitempty"`
	GracePeriod   *Duration    `json:"grace_period,omitempty"`
	Method        string       `json:"method,omitempty"`
	Path          string       `json:"path,omitempty"`
	Protocol      string       `json:"protocol,omitempty"`
	TLSSkipVerify *bool        `json:"tls_skip_verify,omitempty"`
	TLSServerName string       `json:"tls_server_name,omitempty"`
	Headers       []HTTPHeader `json:"headers,omitempty"`
}

// Check is a machine-level health check (config.checks[name]): a service
// check's fields plus its kind.
type Check struct {
	ServiceCheck
	Kind string `json:"kind,omitempty"` // informational | readiness
}

// HTTPHeader is a header sent by an HTTP check.
type HTTPHeader struct {
	Name   string   `json:"name,omitempty"`
	Values []string `json:"values,omitempty"`
}

// File is a file written into the machine before its process starts.
type File struct {
	GuestPath   string `json:"guest_path,omitempty"`
	RawValue    string `json:"raw_value,omitempty"` // base64
	SecretName  string `json:"secret_name,omitempty"`
	ImageConfig string `json:"image_config,omitempty"`
	Mode        int    `json:"mode,omitempty"`
}

// Mount attaches a volume.
type Mount struct {
	Volume                 string `json:"volume,omitempty"`
	Path                   string `json:"path,omitempty"`
	Name                   string `json:"name,omitempty"`
	SizeGB                 int    `json:"size_gb,omitempty"`
	Encrypted              bool   `json:"encrypted,omitempty"`
	ExtendThresholdPercent int    `json:"extend_threshold_percent,omitempty"`
	AddSizeGB              int    `json:"add_size_gb,omitempty"`
	SizeGBLimit            int    `json:"size_gb_limit,omitempty"`
}

// DNSConfig configures the machine's resolver and 6PN registration.
type DNSConfig struct {
	SkipRegistration bool             `json:"skip_registration,omitempty"`
	Nameservers      []string         `json:"nameservers,omitempty"`
	Searches         []string         `json:"searches,omitempty"`
	Options          []DNSOption      `json:"options,omitempty"`
	DNSForwardRules  []DNSForwardRule `json:"dns_forward_rules,omitempty"`
	Hostname         string           `json:"hostname,omitempty"`
	HostnameFQDN     string           `json:"hostname_fqdn,omitempty"`
}

// DNSOption is a resolv.conf option.
type DNSOption struct {
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}

// DNSForwardRule forwards a DNS basename to an address.
type DNSForwardRule struct {
	Basename string `json:"basename,omitempty"`
	Addr     string `json:"addr,omitempty"`
}

// Metrics tells Fly where to scrape Prometheus metrics.
type Metrics struct {
	Port  int    `json:"port,omitempty"`
	Path  string `json:"path,omitempty"`
	HTTPS bool   `json:"https,omitempty"`
}

// Static serves files from the machine or a bucket through the proxy.
type Static struct {
	GuestPath     string `json:"guest_path"`
	URLPrefix     string `json:"url_prefix"`
	TigrisBucket  string `json:"tigris_bucket,omitempty"`
	IndexDocument string `json:"index_document,omitempty"`
}

// Rootfs configures the root filesystem.
type Rootfs struct {
	Persist PersistRootfs `json:"persist,omitempty"`
	SizeGB  int           `json:"size_gb,omitempty"`
}

// CacheDrive configures a cache drive.
type CacheDrive struct {
	SizeMB int `json:"size_mb,omitempty"`
}

// ContainerConfig is one container of a multi-container machine.
type ContainerConfig struct {
	Name         string                 `json:"name,omitempty"`
	Image        string                 `json:"image,omitempty"`
	Exec         []string               `json:"exec,omitempty"`
	Entrypoint   []string               `json:"entrypoint,omitempty"`
	Cmd          []string               `json:"cmd,omitempty"`
	User         string                 `json:"user,omitempty"`
	Env          map[string]string      `json:"env,omitempty"`
	EnvFrom      []EnvFrom              `json:"env_from,omitempty"`
	Secrets      []MachineSecret        `json:"secrets,omitempty"`
	Files        []File                 `json:"files,omitempty"`
	Restart      *Restart               `json:"restart,omitempty"`
	Stop         *StopConfig            `json:"stop,omitempty"`
	DependsOn    []ContainerDependency  `json:"depends_on,omitempty"`
	Healthchecks []ContainerHealthcheck `json:"healthchecks,omitempty"`
}

// ContainerDependency orders container start.
type ContainerDependency struct {
	Name      string `json:"name,omitempty"`
	Condition string `json:"condition,omitempty"` // exited_successfully | healthy | started
}

// ContainerHealthcheck is a container-level health check. Durations are integer seconds.
type ContainerHealthcheck struct {
	Name             string           `json:"name,omitempty"`
	Kind             string           `json:"kind,omitempty"` // readiness | liveness
	Exec             *ExecHealthcheck `json:"exec,omitempty"`
	HTTP             *HTTPHealthcheck `json:"http,omitempty"`
	TCP              *TCPHealthcheck  `json:"tcp,omitempty"`
	Interval         int              `json:"interval,omitempty"`
	Timeout          int              `json:"timeout,omitempty"`
	GracePeriod      int              `json:"grace_period,omitempty"`
	FailureThreshold int              `json:"failure_threshold,omitempty"`
	SuccessThreshold int              `json:"success_threshold,omitempty"`
	Unhealthy        string           `json:"unhealthy,omitempty"` // stop
}

// ExecHealthcheck runs a command.
type ExecHealthcheck struct {
	Command []string `json:"command,omitempty"`
}

// HTTPHealthcheck requests a URL.
type HTTPHealthcheck struct {
	Port          int          `json:"port,omitempty"`
	Method        string       `json:"method,omitempty"`
	Path          string       `json:"path,omitempty"`
	Scheme        string       `json:"scheme,omitempty"` // http | https
	Headers       []HTTPHeader `json:"headers,omitempty"`
	TLSSkipVerify *bool        `json:"tls_skip_verify,omitempty"`
	TLSServerName string       `json:"tls_server_name,omitempty"`
}

// TCPHealthcheck connects to a port.
type TCPHealthcheck struct {
	Port int `json:"port,omitempty"`
}

// CreateMachineRequest is the body of POST /apps/{app}/machines.
type CreateMachineRequest struct {
	Config                  *MachineConfig `json:"config"`
	Region                  string         `json:"region,omitempty"`
	Name                    string         `json:"name,omitempty"`
	SkipLaunch              bool           `json:"skip_launch,omitempty"`
	SkipServiceRegistration bool           `json:"skip_service_registration,omitempty"`
	SkipSecrets             bool           `json:"skip_secrets,omitempty"`
	LeaseTTL                int            `json:"lease_ttl,omitempty"` // seconds; response then carries Nonce
	LSVD                    bool           `json:"lsvd,omitempty"`
	MinSecretsVersion       *int64         `json:"min_secrets_version,omitempty"`
}

// UpdateMachineRequest is the body of POST /apps/{app}/machines/{id}: a full
// replacement of the config. CurrentVersion (the machine's instance_id) makes
// the update fail if someone else updated it first.
type UpdateMachineRequest struct {
	Config                  *MachineConfig `json:"config"`
	Region                  string         `json:"region,omitempty"`
	Name                    string         `json:"name,omitempty"`
	SkipLaunch              bool           `json:"skip_launch,omitempty"`
	SkipServiceRegistration bool           `json:"skip_service_registration,omitempty"`
	SkipSecrets             bool           `json:"skip_secrets,omitempty"`
	LeaseTTL                int            `json:"lease_ttl,omitempty"`
	LSVD                    bool           `json:"lsvd,omitempty"`
	MinSecretsVersion       *int64         `json:"min_secrets_version,omitempty"`
	CurrentVersion          string         `json:"current_version,omitempty"`
}

// StopRequest is the optional body of POST .../stop. Signal is one of SIGHUP,
// SIGINT, SIGQUIT, SIGKILL, SIGUSR1, SIGUSR2, SIGTERM; Timeout is sent as a Go
// duration string.
type StopRequest struct {
	Signal  string    `json:"signal,omitempty"`
	Timeout *Duration `json:"timeout,omitempty"`
}

// SignalRequest is the body of POST .../signal.
type SignalRequest struct {
	Signal string `json:"signal"`
}

// StartResponse is the body of POST .../start.
type StartResponse struct {
	Message       string `json:"message,omitempty"`
	Status        string `json:"status,omitempty"`
	PreviousState string `json:"previous_state,omitempty"`
	Migrated      bool   `json:"migrated,omitempty"`
	NewHost       string `json:"new_host,omitempty"`
}

// OKResponse is the {"ok": true} body of stop, suspend, destroy and friends.
type OKResponse struct {
	OK bool `json:"ok"`
}

// WaitResponse is the body of GET .../wait.
type WaitResponse struct {
	OK      bool   `json:"ok"`
	State   string `json:"state,omitempty"`
	EventID string `json:"event_id,omitempty"`
	Version string `json:"version,omitempty"`
}

// ---- Leases ----

// CreateLeaseRequest is the body of POST .../lease (acquire or, with the
// nonce header, refresh). TTL is in seconds.
type CreateLeaseRequest struct {
	TTL         int    `json:"ttl,omitempty"`
	Description string `json:"description,omitempty"`
}

// Lease is the lease body the service returns: an envelope
// {"status":"success","data":{...}} (the spec models it flat; the service and
// every Fly client use the envelope). On failure Message and Code may be set.
type Lease struct {
	Status  string     `json:"status,omitempty"`
	Data    *LeaseData `json:"data,omitempty"`
	Message string     `json:"message,omitempty"`
	Code    string     `json:"code,omitempty"`
}

// Nonce returns the lease nonce, or "" when the envelope carries no data.
func (l *Lease) Nonce() string {
	if l == nil || l.Data == nil {
		return ""
	}
	return l.Data.Nonce
}

// LeaseData is the lease itself. ExpiresAt is Unix seconds; Version is the
// machine's instance_id when the lease was taken.
type LeaseData struct {
	Nonce       string `json:"nonce"`
	ExpiresAt   int64  `json:"expires_at"`
	Owner       string `json:"owner,omitempty"`
	Description string `json:"description,omitempty"`
	Version     string `json:"version,omitempty"`
}

// Expires returns ExpiresAt as a time.Time.
func (d *LeaseData) Expires() time.Time { return time.Unix(d.ExpiresAt, 0) }

// ---- Metadata ----

// MetadataValue is the body of GET .../metadata/{key}.
type MetadataValue struct {
	Value string `json:"value"`
}

// UpsertMetadataRequest is the body of POST .../metadata/{key}.
type UpsertMetadataRequest struct {
	Value     string `json:"value"`
	UpdatedAt string `json:"updated_at,omitempty"`
}

// UpdateMetadataRequest is the body of PUT/PATCH .../metadata (batch); a
// null or empty value deletes the key. The spec types the values as plain
// strings, so prefer an empty string to delete: nil is sent as null, which
// the service accepts but the spec does not declare. MachineVersion makes
// the call fail with 412 when stale.
type UpdateMetadataRequest struct {
	Metadata       map[string]*string `json:"metadata"`
	MachineVersion string             `json:"machine_version,omitempty"`
	UpdatedAt      string             `json:"updated_at,omitempty"`
}

// ---- Secrets ----

// AppSecret is one app secret. Value is present only when asked for with show_secrets.
type AppSecret struct {
	Name      string `json:"name"`
	Digest    string `json:"digest,omitempty"`
	Value     string `json:"value,omitempty"`
	CreatedAt string `json:"created_at,omitempty"`
	UpdatedAt string `json:"updated_at,omitempty"`
}

// AppSecrets is the body of GET /apps/{app}/secrets.
type AppSecrets struct {
	Secrets []AppSecret `json:"secrets"`
}

// SetAppSecretRequest is the body of POST /apps/{app}/secrets/{name}.
type SetAppSecretRequest struct {
	Value string `json:"value"`
}

// SetAppSecretResponse is the body returned by POST /apps/{app}/secrets/{name}.
type SetAppSecretResponse struct {
	Name      string `json:"name,omitempty"`
	Digest    string `json:"digest,omitempty"`
	Value     string `json:"value,omitempty"`
	CreatedAt string `json:"created_at,omitempty"`
	UpdatedAt string `json:"updated_at,omitempty"`
	Version   int64  `json:"version,omitempty"`
}

// AppSecretsUpdateRequest is the body of POST /apps/{app}/secrets (batch).
// A nil value (sent as null) deletes that secret; the spec types values as
// plain strings, so use DeleteSecret when spec conformance matters.
type AppSecretsUpdateRequest struct {
	Values map[string]*string `json:"values"`
}

// AppSecretsUpdateResponse is the body returned by POST /apps/{app}/secrets.
type AppSecretsUpdateResponse struct {
	Secrets []AppSecret `json:"secrets,omitempty"`
	Version int64       `json:"version,omitempty"`
}

// DeleteAppSecretResponse is the body returned by DELETE /apps/{app}/secrets/{name}.
type DeleteAppSecretResponse struct {
	Version int64 `json:"version,omitempty"`
}

// ---- Errors ----

// Error status codes ("status" in an error body).
const (
	StatusUnknown              = "unknown"
	StatusInsufficientCapacity = "insufficient_capacity"
	StatusNameTaken            = "name_taken"
)

// ErrorResponse is Fly's error body: {"error": "...", "status": "<code>"}.
// Message is read too (fly-go prefers it over Error when present).
type ErrorResponse struct {
	Error   string         `json:"error,omitempty"`
	Status  string         `json:"status,omitempty"`
	Message string         `json:"message,omitempty"`
	Details map[string]any `json:"details,omitempty"` // deprecated
}

// joinStates is shared by the list and wait query encodings.
func joinStates(states []string) string { return strings.Join(states, ",") }
