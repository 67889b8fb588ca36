package pool

import (
	"fmt"

	"github.com/hangarhq/hangar/internal/fly"
)

// CloneConfig returns the machine config of a standby (role RoleStandby,
// sessionID "") or session machine (role RoleSession) cloned from template:
// the template's config with auto_destroy true (when the agent exits, Fly
// destroys the machine), restart policy "no", metadata reduced to the
// machine's identity (pool, role, tenant image, the template's spec hash,
// session id), and env HANGAR_AGENT_PORT, HANGAR_BROKER_PUBLIC_KEY and
// (when the pool declares one) HANGAR_DAEMON_URL from the template's spec:
// the metadata is the spec's source of truth, so it wins over whatever the
// template's env holds.
func CloneConfig(template *fly.Machine, role, sessionID string) (*fly.MachineConfig, error) {
	if template == nil || template.Config == nil {
		return nil, fmt.Errorf("clone template: no template config")
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
