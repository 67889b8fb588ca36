package pool

import (
	"fmt"
	"strings"
	"time"

	"github.com/hangarhq/hangar/internal/fly"
)

// Stop settings of standby and session machines. Fly stops a machine (when
// asked, and when it migrates it to another host) with SIGINT and kills it
// 5 s later unless stop_config says otherwise; the agent's last checkpoint
// alone may take 10 s. So clones stop with SIGTERM (the agent's shutdown
// signal, whichever page of Fly's docs is right about the default) and
// StopTimeout to finish: the agent's shutdown (checkpoint ≤ 10 s, command
// 1 s, server 5 s) fits in it with room to spare, well under Fly's 300 s cap.
const (
	StopSignal  = "SIGTERM"
	StopTimeout = 30 * time.Second
)

// CloneConfig returns the machine config of a standby (role RoleStandby,
// sessionID "") or session machine (role RoleSession) cloned from template:
// the template's config with auto_destroy true (when the agent exits, Fly
// destroys the machine), restart policy "no", metadata reduced to the
// machine's identity (pool, role, tenant image, the template's spec hash,
// session id), stop_config (StopSignal, StopTimeout), and env HANGAR_AGENT_PORT, HANGAR_BROKER_PUBLIC_KEY and
// (when the pool declares one) HANGAR_DAEMON_URL from the template's spec:
// the metadata is the spec's source of truth, so it wins over whatever the
// template's env holds.
func CloneConfig(template *fly.Machine, role, sessionID string) (*fly.MachineConfig, error) {
	if template == nil || template.GetConfig() == nil {
		return nil, fmt.Errorf("clone template: no template config")
	}
	if template.Config == nil {
		// Cloning what Fly still knows could drop what it does not: wait for the host.
		return nil, fmt.Errorf("clone template %s: its host is unreachable (host_status %q) and Fly sends only an incomplete config; try again once the host is back",
			template.ID, template.HostStatus)
	}
	md := template.Config.Metadata
	if md[KeyRole] != RoleTemplate {
		return nil, fmt.Errorf("clone template %s: machine is not a template (%s=%q)", template.ID, KeyRole, md[KeyRole])
	}
	switch role {
	case RoleStandby:
		if sessionID != "" {
			return nil, fmt.Errorf("clone template %s: a standby has no session id", template.ID)
		}
	case RoleSession:
		if sessionID == "" {
			return nil, fmt.Errorf("clone template %s: a session machine needs a session id", template.ID)
		}
	default:
		return nil, fmt.Errorf("clone template %s: role %q is not %q or %q", template.ID, role, RoleStandby, RoleSession)
	}
	spec, err := DecodeMetadata(md)
	if err != nil {
		return nil, fmt.Errorf("clone template %s: %w", template.ID, err)
	}
	cfg, err := copyConfig(template.Config)
	if err != nil {
		return nil, fmt.Errorf("clone template %s: %w", template.ID, err)
	}
	cfg.AutoDestroy = true
	cfg.Restart = &fly.Restart{Policy: fly.RestartNo}
	cfg.StopConfig = &fly.StopConfig{Signal: StopSignal, Timeout: &fly.Duration{Duration: StopTimeout}}
	cfg.Metadata = map[string]string{
		KeyPool: md[KeyPool],
		KeyRole: role,
		KeySpec: md[KeySpec],
	}
	if ti := md[KeyTenantImage]; ti != "" {
		cfg.Metadata[KeyTenantImage] = ti
	}
	if sessionID != "" {
		cfg.Metadata[KeySession] = sessionID
	}
	if cfg.Env == nil {
		cfg.Env = map[string]string{}
	}
	spec.hangarEnv(cfg.Env)
	return cfg, nil
}

// SpecHashOf returns the KeySpec of a machine ("" if none).
func SpecHashOf(m *fly.Machine) string { return MetadataOf(m)[KeySpec] }

// TenantImageOf returns the KeyTenantImage of a machine ("" for the pool's default image).
func TenantImageOf(m *fly.Machine) string { return MetadataOf(m)[KeyTenantImage] }

// SuspendMaxMemoryMB is the most memory Fly suspends a machine with
// (reference/suspend-resume; a blueprint says 4 GB: the stricter wins).
const SuspendMaxMemoryMB = 2048

// SuspendIneligible says why Fly would refuse to suspend a machine with cfg
// ("" when it would not): more than SuspendMaxMemoryMB of memory, swap, a
// schedule or a GPU.
func SuspendIneligible(cfg *fly.MachineConfig) string {
	if cfg == nil {
		return ""
	}
	var why []string
	if g := cfg.Guest; g != nil {
		if g.MemoryMB > SuspendMaxMemoryMB {
			why = append(why, fmt.Sprintf("%d MB of memory (at most %d)", g.MemoryMB, SuspendMaxMemoryMB))
		}
		if g.GPUs > 0 || g.GPUKind != "" {
			why = append(why, "a GPU")
		}
	}
	if cfg.Schedule != "" {
		why = append(why, "a schedule")
	}
	if cfg.Init != nil && cfg.Init.SwapSizeMB != nil && *cfg.Init.SwapSizeMB > 0 {
		why = append(why, "swap")
	}
	if len(why) == 0 {
		return ""
	}
	return "Fly suspends only machines with at most 2 GB of memory and no swap, schedule or GPU; this one has " + strings.Join(why, ", ")
}
