package pool

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hangarhq/hangar/internal/fly"
)

// Metadata encodes the spec as a template's metadata: identity keys
// (KeyPool, KeyRole = template, KeyTenantImage, KeySpec) plus every spec key.
// Image, guest and env live in the template's machine config, not here.
func (s Spec) Metadata() map[string]string {
	md := map[string]string{
		KeyPool:             s.Pool,
		KeyRole:             RoleTemplate,
		KeySpec:             s.Hash(),
		KeyMinStandby:       strconv.Itoa(s.MinStandby),
		KeyMaxMachines:      strconv.Itoa(s.MaxMachines),
		KeyStandbyMode:      string(s.StandbyMode),
		KeyRegions:          strings.Join(s.Regions, ","),
		KeyIdleTimeout:      FormatDuration(s.IdleTimeout),
		KeySessionTTL:       FormatDuration(s.SessionTTL),
		KeyAgentPort:        strconv.Itoa(s.AgentPort),
		KeyBrokerPublicKeys: strings.Join(s.BrokerPublicKeys, ","),
	}
	if s.TenantImage != "" {
		md[KeyTenantImage] = s.TenantImage
		md[KeyTenant] = s.Tenant
		if s.GuestOverride {
			md[KeyGuestOverride] = "true"
		}
		if len(s.EnvOverrides) > 0 {
			md[KeyEnvOverrides] = strings.Join(s.EnvOverrides, ",")
		}
	}
	if s.Network != "" {
		md[KeyNetwork] = s.Network
	}
	if s.DaemonURL != "" {
		md[KeyDaemonURL] = s.DaemonURL
	}
	if s.AdoptedApp {
		md[KeyAdoptedApp] = "true"
	}
	if s.Draining {
		md[KeyDraining] = "true"
	}
	return md
}

// TemplateConfig is the machine config of the spec's template: the worker
// image, guest and env (with the hangar env a clone runs with, see
// hangarEnv), the spec in metadata, restart policy "no". The template is
// created with skip_launch and never started.
func (s Spec) TemplateConfig() *fly.MachineConfig {
	env := make(map[string]string, len(s.Env)+3)
	for k, v := range s.Env {
		env[k] = v
	}
	s.hangarEnv(env)
	return &fly.MachineConfig{
		Image:    s.Image,
		Guest:    &fly.Guest{CPUKind: s.Guest.CPUKind, CPUs: s.Guest.CPUs, MemoryMB: s.Guest.MemoryMB},
		Env:      env,
		Metadata: s.Metadata(),
		Restart:  &fly.Restart{Policy: fly.RestartNo},
	}
}

// hangarEnv sets the env hangar itself gives a worker (the ReservedEnv
// names) from the spec. HANGAR_DAEMON_URL is removed when the spec has no
// daemon URL, so that a pool without one keeps exactly the env it had
// before the setting existed and the agent stays in its listening mode.
func (s Spec) hangarEnv(env map[string]string) {
	env[EnvAgentPort] = strconv.Itoa(s.AgentPort)
	env[EnvBrokerPublicKey] = strings.Join(s.BrokerPublicKeys, ",")
	if s.DaemonURL != "" {
		env[EnvDaemonURL] = s.DaemonURL
	} else {
		delete(env, EnvDaemonURL)
	}
}

// TemplateName is the Fly machine name of the spec's template.
func (s Spec) TemplateName() string {
	if s.TenantImage != "" {
		return "hangar-template-" + s.TenantImage
	}
	return "hangar-template"
}

// CreateTemplateRequest is the request that creates the spec's template in
// its first region, never launched.
func (s Spec) CreateTemplateRequest() fly.CreateMachineRequest {
	region := ""
	if len(s.Regions) > 0 {
		region = s.Regions[0]
	}
	return fly.CreateMachineRequest{Config: s.TemplateConfig(), Region: region, Name: s.TemplateName(), SkipLaunch: true}
}

// IsTemplate reports whether m is a template machine.
func IsTemplate(m *fly.Machine) bool { return role(m) == RoleTemplate }

// IsStandby reports whether m is a standby machine.
func IsStandby(m *fly.Machine) bool { return role(m) == RoleStandby }

// IsSession reports whether m is a session machine.
func IsSession(m *fly.Machine) bool { return role(m) == RoleSession }

func role(m *fly.Machine) string {
	if m.GetConfig() == nil {
		return ""
	}
	return m.GetConfig().Metadata[KeyRole]
}

// MetadataOf returns m's metadata (never nil).
func MetadataOf(m *fly.Machine) map[string]string {
	if m.GetConfig() == nil || m.GetConfig().Metadata == nil {
		return map[string]string{}
	}
	return m.GetConfig().Metadata
}

// FromTemplate decodes the spec stored on a template machine of app.
func FromTemplate(app string, m *fly.Machine) (Spec, error) {
	// While the template's host is unreachable Fly sends only its
	// incomplete_config; the spec lives in its metadata, which it keeps, so
	// the pool does not vanish meanwhile.
	cfg := m.GetConfig()
	if cfg == nil {
		return Spec{}, fmt.Errorf("decode template: machine has no config")
	}
	md := cfg.Metadata
	if md[KeyRole] != RoleTemplate {
		return Spec{}, fmt.Errorf("decode template %s: %s is %q, not %q", m.ID, KeyRole, md[KeyRole], RoleTemplate)
	}
	s, err := DecodeMetadata(md)
	if err != nil {
		return Spec{}, fmt.Errorf("decode template %s: %w", m.ID, err)
	}
	s.App = app
	s.Image = cfg.Image
	if g := cfg.Guest; g != nil {
		s.Guest = Guest{CPUKind: g.CPUKind, CPUs: g.CPUs, MemoryMB: g.MemoryMB}
	}
	for k, v := range cfg.Env {
		if ReservedEnv(k) {
			continue
		}
		if s.Env == nil {
			s.Env = map[string]string{}
		}
		s.Env[k] = v
	}
	return s, nil
}

// DecodeMetadata decodes the metadata-held part of a template's spec (all
// but app, image, guest and env). Missing keys take the package defaults so
// that templates written by an older provider still decode.
func DecodeMetadata(md map[string]string) (Spec, error) {
	s := Spec{
		Pool:        md[KeyPool],
		TenantImage: md[KeyTenantImage],
		Tenant:      md[KeyTenant],
		Network:     md[KeyNetwork],
		DaemonURL:   md[KeyDaemonURL],
		AdoptedApp:  md[KeyAdoptedApp] == "true",
		Draining:    md[KeyDraining] == "true",
		StandbyMode: DefaultStandbyMode,
		AgentPort:   DefaultAgentPort,
		IdleTimeout: DefaultIdleTimeout,
		SessionTTL:  DefaultSessionTTL,
	}
	if s.Pool == "" {
		return Spec{}, fmt.Errorf("metadata key %s is missing", KeyPool)
	}
	var err error
	intKey := func(key string, dst *int) {
		v, ok := md[key]
		if !ok || err != nil {
			return
		}
		n, perr := strconv.Atoi(v)
		if perr != nil {
			err = fmt.Errorf("metadata %s=%q: not an integer", key, v)
			return
		}
		*dst = n
	}
	durKey := func(key string, dst *time.Duration) {
		v, ok := md[key]
		if !ok || err != nil {
			return
		}
		d, perr := ParseDuration(v)
		if perr != nil {
			err = fmt.Errorf("metadata %s: %w", key, perr)
			return
		}
		*dst = d
	}
	intKey(KeyMinStandby, &s.MinStandby)
	intKey(KeyMaxMachines, &s.MaxMachines)
	intKey(KeyAgentPort, &s.AgentPort)
	durKey(KeyIdleTimeout, &s.IdleTimeout)
	durKey(KeySessionTTL, &s.SessionTTL)
	if err != nil {
		return Spec{}, err
	}
	if v, ok := md[KeyStandbyMode]; ok {
		s.StandbyMode = StandbyMode(v)
	}
	s.Regions = splitList(md[KeyRegions])
	s.BrokerPublicKeys = splitList(md[KeyBrokerPublicKeys])
	s.GuestOverride = md[KeyGuestOverride] == "true"
	s.EnvOverrides = splitList(md[KeyEnvOverrides])
	sort.Strings(s.EnvOverrides)
	return s, nil
}

// splitList decodes a comma-separated list ("" = none).
func splitList(v string) []string {
	if strings.TrimSpace(v) == "" {
		return nil
	}
	parts := strings.Split(v, ",")
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// copyConfig deep-copies a machine config through its JSON form, so that
// every field the fly package knows survives.
func copyConfig(c *fly.MachineConfig) (*fly.MachineConfig, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("copy machine config: %w", err)
	}
	var out fly.MachineConfig
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("copy machine config: %w", err)
	}
	return &out, nil
}
