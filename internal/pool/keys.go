// Package pool is the one definition of a hangar worker pool shared by the
// Terraform provider and the daemon: the pool spec, its validation rules, its
// encoding into a template machine's metadata on Fly (Fly is the source of
// truth for capacity), the spec hash that tells stale standbys apart, cloning a
// template into standby and session machine configs, creating standbys, and
// reading a pool's live state back from Fly.
package pool

// Machine metadata keys. All values are strings. Lists are comma-separated,
// durations are Go duration strings ("15m", "4h"), booleans are "true" (absent
// means false), integers are decimal.
const (
	// KeyPool is the pool name, on every machine of the pool.
	KeyPool = "hangar_pool"
	// KeyRole is RoleTemplate, RoleStandby or RoleSession.
	KeyRole = "hangar_role"
	// KeyTenantImage is the tenant image name; absent for the pool's default image.
	KeyTenantImage = "hangar_tenant_image"
	// KeySession is the session id, on a claimed (session) machine.
	KeySession = "hangar_session"
	// KeySpec is the spec hash (Spec.Hash) of the template a machine was
	// cloned from; on a template, the hash of its own spec.
	KeySpec = "hangar_spec"

	// The rest of the spec, on templates only.

	// KeyMinStandby is the number of standbys per region for this template.
	KeyMinStandby = "hangar_min_standby"
	// KeyMaxMachines is the pool-wide cap on standby plus session machines.
	KeyMaxMachines = "hangar_max_machines"
	// KeyStandbyMode is StandbyStop or StandbySuspend.
	KeyStandbyMode = "hangar_standby_mode"
	// KeyRegions is the comma-separated list of regions, in declared order.
	KeyRegions = "hangar_regions"
	// KeyIdleTimeout is the session idle timeout (Go duration).
	KeyIdleTimeout = "hangar_idle_timeout"
	// KeySessionTTL is the maximum session lifetime (Go duration).
	KeySessionTTL = "hangar_session_ttl"
	// KeyAgentPort is the port the agent listens on.
	KeyAgentPort = "hangar_agent_port"
	// KeyBrokerPublicKeys is the comma-separated list of broker public keys
	// (standard base64 of 32 raw ed25519 bytes).
	KeyBrokerPublicKeys = "hangar_broker_public_keys"
	// KeyTenant is the tenant a tenant image belongs to.
	KeyTenant = "hangar_tenant"
	// KeyDraining is "true" once the pool (or tenant image) is being deleted:
	// the daemon stops refilling and claiming from it.
	KeyDraining = "hangar_draining"
	// KeyNetwork is the app's 6PN network name, if any.
	KeyNetwork = "hangar_network"
	// KeyDaemonURL is the URL of the hangar daemon the pool's agents dial
	// (Spec.DaemonURL); absent for a pool whose daemon dials its agents.
	KeyDaemonURL = "hangar_daemon_url"
	// KeyAdoptedApp is "true" when the app existed before the pool and must
	// survive the pool's deletion.
	KeyAdoptedApp = "hangar_adopted_app"
	// KeyGuestOverride is "true" on a tenant image template whose guest was
	// set on the tenant image rather than inherited from the pool.
	KeyGuestOverride = "hangar_guest_override"
	// KeyEnvOverrides is the comma-separated list of env names a tenant image
	// sets on top of the pool's env.
	KeyEnvOverrides = "hangar_env_overrides"
)

// Machine roles (values of KeyRole).
const (
	RoleTemplate = "template"
	RoleStandby  = "standby"
	RoleSession  = "session"
)

// Environment variables the pool sets on every standby and session machine.
const (
	// EnvAgentPort carries Spec.AgentPort.
	EnvAgentPort = "HANGAR_AGENT_PORT"
	// EnvBrokerPublicKey carries Spec.BrokerPublicKeys, comma-separated.
	EnvBrokerPublicKey = "HANGAR_BROKER_PUBLIC_KEY"
	// EnvDaemonURL carries Spec.DaemonURL, the URL hangar-agent opens its
	// outbound tunnel to; set only when the pool declares one.
	EnvDaemonURL = "HANGAR_DAEMON_URL"
)
