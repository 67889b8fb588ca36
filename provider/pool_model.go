package provider

import (
	"context"
	"os"
	"sort"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"

	"github.com/hangarhq/hangar/internal/pool"
)

// guestModel is the guest object.
type guestModel struct {
	CPUKind  types.String `tfsdk:"cpu_kind"`
	CPUs     types.Int64  `tfsdk:"cpus"`
	MemoryMB types.Int64  `tfsdk:"memory_mb"`
}

var guestAttrTypes = map[string]attr.Type{
	"cpu_kind":  types.StringType,
	"cpus":      types.Int64Type,
	"memory_mb": types.Int64Type,
}

func guestObject(g pool.Guest) types.Object {
	return types.ObjectValueMust(guestAttrTypes, map[string]attr.Value{
		"cpu_kind":  types.StringValue(g.CPUKind),
		"cpus":      types.Int64Value(int64(g.CPUs)),
		"memory_mb": types.Int64Value(int64(g.MemoryMB)),
	})
}

// guestFrom reads a guest object; ok is false when it or a field is unknown
// or null.
func guestFrom(ctx context.Context, o types.Object) (pool.Guest, bool, diag.Diagnostics) {
	if o.IsNull() || o.IsUnknown() {
		return pool.Guest{}, false, nil
	}
	var g guestModel
	diags := o.As(ctx, &g, basetypes.ObjectAsOptions{})
	if diags.HasError() {
		return pool.Guest{}, false, diags
	}
	if g.CPUKind.IsUnknown() || g.CPUs.IsUnknown() || g.MemoryMB.IsUnknown() || g.CPUKind.IsNull() || g.CPUs.IsNull() || g.MemoryMB.IsNull() {
		return pool.Guest{}, false, diags
	}
	return pool.Guest{CPUKind: g.CPUKind.ValueString(), CPUs: int(g.CPUs.ValueInt64()), MemoryMB: int(g.MemoryMB.ValueInt64())}, true, diags
}

// poolModel is the hangar_pool resource.
type poolModel struct {
	ID                types.String `tfsdk:"id"`
	Name              types.String `tfsdk:"name"`
	AppName           types.String `tfsdk:"app_name"`
	AdoptApp          types.Bool   `tfsdk:"adopt_app"`
	Org               types.String `tfsdk:"org"`
	Network           types.String `tfsdk:"network"`
	Regions           types.List   `tfsdk:"regions"`
	Image             types.String `tfsdk:"image"`
	Guest             types.Object `tfsdk:"guest"`
	Env               types.Map    `tfsdk:"env"`
	MinStandby        types.Int64  `tfsdk:"min_standby"`
	MaxMachines       types.Int64  `tfsdk:"max_machines"`
	StandbyMode       types.String `tfsdk:"standby_mode"`
	IdleTimeout       types.String `tfsdk:"idle_timeout"`
	SessionTTL        types.String `tfsdk:"session_ttl"`
	AgentPort         types.Int64  `tfsdk:"agent_port"`
	BrokerPublicKey   types.String `tfsdk:"broker_public_key"`
	DaemonURL         types.String `tfsdk:"daemon_url"`
	ForceDestroy      types.Bool   `tfsdk:"force_destroy"`
	TemplateMachineID types.String `tfsdk:"template_machine_id"`
	SpecHash          types.String `tfsdk:"spec_hash"`
}

// specBuild is a spec built from a possibly incomplete model: unknown holds
// the root attributes whose values were unknown (placeholders were used).
type specBuild struct {
	spec    pool.Spec
	unknown map[string]bool
}

func (b specBuild) complete() bool { return len(b.unknown) == 0 }

// str reads a string attribute: def when null, def and marked unknown when
// unknown.
func (b specBuild) str(v types.String, name, def string) string {
	if v.IsUnknown() {
		b.unknown[name] = true
		return def
	}
	if v.IsNull() {
		return def
	}
	return v.ValueString()
}

// num reads a number attribute: def when null, placeholder and marked
// unknown when unknown.
func (b specBuild) num(v types.Int64, name string, def, placeholder int) int {
	if v.IsUnknown() {
		b.unknown[name] = true
		return placeholder
	}
	if v.IsNull() {
		return def
	}
	return int(v.ValueInt64())
}

// env reads the env attribute, marking it unknown when it or a value is.
func (b specBuild) env(ctx context.Context, v types.Map, diags *diag.Diagnostics) map[string]string {
	env, ok, d := stringMap(ctx, v)
	diags.Append(d...)
	if !ok {
		b.unknown["env"] = true
	}
	return env
}

// validSpec returns the built spec for an apply: it must be complete (else
// incomplete reports the unknown attributes, sorted) and valid.
func (b specBuild) validSpec(diags *diag.Diagnostics, incomplete func(unknown []string)) (pool.Spec, bool) {
	if diags.HasError() {
		return pool.Spec{}, false
	}
	if !b.complete() {
		keys := make([]string, 0, len(b.unknown))
		for k := range b.unknown {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		incomplete(keys)
		return pool.Spec{}, false
	}
	if err := b.spec.Validate(); err != nil {
		addSpecErrors(diags, err, nil)
		return pool.Spec{}, false
	}
	return b.spec, true
}

// checkCapacity reports specs (one pool's templates) that together exceed
// the pool's max_machines, on min_standby.
func checkCapacity(specs []pool.Spec, diags *diag.Diagnostics) bool {
	if err := pool.ValidateCapacity(specs); err != nil {
		diags.AddAttributeError(path.Root("min_standby"), "Invalid Standby Count", err.Error()+".")
		return false
	}
	return true
}

// skip reports whether an error on field comes from a placeholder.
func (b specBuild) skip(field string) bool {
	root := rootField(field)
	if b.unknown[root] {
		return true
	}
	// The capacity rule involves three attributes.
	if root == "min_standby" && (b.unknown["regions"] || b.unknown["max_machines"] || b.unknown["min_standby"]) {
		return true
	}
	// So does the rule that network requires daemon_url.
	if root == "daemon_url" && b.unknown["network"] {
		return true
	}
	return false
}

// stringList reads a list of strings; ok is false when it or an element is unknown.
func stringList(ctx context.Context, l types.List) ([]string, bool, diag.Diagnostics) {
	if l.IsUnknown() {
		return nil, false, nil
	}
	if l.IsNull() {
		return nil, true, nil
	}
	var elems []types.String
	diags := l.ElementsAs(ctx, &elems, false)
	out := make([]string, 0, len(elems))
	for _, e := range elems {
		if e.IsUnknown() {
			return nil, false, diags
		}
		out = append(out, e.ValueString())
	}
	return out, true, diags
}

// stringMap reads a map of strings; ok is false when it or a value is unknown.
func stringMap(ctx context.Context, m types.Map) (map[string]string, bool, diag.Diagnostics) {
	if m.IsUnknown() {
		return nil, false, nil
	}
	if m.IsNull() {
		return nil, true, nil
	}
	var elems map[string]types.String
	diags := m.ElementsAs(ctx, &elems, false)
	out := make(map[string]string, len(elems))
	for k, e := range elems {
		if e.IsUnknown() {
			return nil, false, diags
		}
		out[k] = e.ValueString()
	}
	return out, true, diags
}

func splitKeys(s string) []string {
	var out []string
	for _, k := range strings.Split(s, ",") {
		if k = strings.TrimSpace(k); k != "" {
			out = append(out, k)
		}
	}
	return out
}

// durationAttr parses a duration attribute, adding an attribute error when
// it is malformed. Null takes def; unknown reports ok=false.
func durationAttr(v types.String, p path.Path, def string, diags *diag.Diagnostics) (string, bool) {
	if v.IsUnknown() {
		return def, false
	}
	s := v.ValueString()
	if v.IsNull() {
		s = def
	}
	if _, err := pool.ParseDuration(s); err != nil {
		diags.AddAttributeError(p, "Invalid Duration", err.Error()+". Durations are Go duration strings: a number and a unit (ns, us, ms, s, m, h), for example \"15m\" or \"4h\".")
		return def, true
	}
	return s, true
}

// spec builds the pool spec from the model, with defaults for null values
// and valid placeholders for unknown ones. Malformed durations are reported
// in diags (and replaced by the defaults).
func (m poolModel) spec(ctx context.Context, diags *diag.Diagnostics) specBuild {
	b := specBuild{unknown: map[string]bool{}}
	s := &b.spec
	str, num := b.str, b.num
	s.Pool = str(m.Name, "name", "placeholder")
	s.App = str(m.AppName, "app_name", "placeholder")
	s.Network = str(m.Network, "network", "")
	s.AdoptedApp = !m.AdoptApp.IsUnknown() && m.AdoptApp.ValueBool()
	if m.AdoptApp.IsUnknown() {
		b.unknown["adopt_app"] = true
	}
	regions, ok, d := stringList(ctx, m.Regions)
	diags.Append(d...)
	if !ok {
		b.unknown["regions"] = true
		regions = []string{"iad"}
	}
	s.Regions = regions
	s.Image = str(m.Image, "image", "placeholder")
	if g, ok, d := guestFrom(ctx, m.Guest); ok {
		s.Guest = g
	} else {
		diags.Append(d...)
		if m.Guest.IsUnknown() || !m.Guest.IsNull() {
			b.unknown["guest"] = true
		}
		s.Guest = pool.Guest{CPUKind: pool.DefaultCPUKind, CPUs: pool.DefaultCPUs, MemoryMB: pool.DefaultMemoryMB}
	}
	s.Env = b.env(ctx, m.Env, diags)
	s.MinStandby = num(m.MinStandby, "min_standby", 1, 0)
	s.MaxMachines = num(m.MaxMachines, "max_machines", 10, 1<<30)
	s.StandbyMode = pool.StandbyMode(str(m.StandbyMode, "standby_mode", string(pool.DefaultStandbyMode)))
	idle, ok := durationAttr(m.IdleTimeout, path.Root("idle_timeout"), pool.FormatDuration(pool.DefaultIdleTimeout), diags)
	if !ok {
		b.unknown["idle_timeout"] = true
	}
	s.IdleTimeout, _ = pool.ParseDuration(idle)
	ttl, ok := durationAttr(m.SessionTTL, path.Root("session_ttl"), pool.FormatDuration(pool.DefaultSessionTTL), diags)
	if !ok {
		b.unknown["session_ttl"] = true
	}
	s.SessionTTL, _ = pool.ParseDuration(ttl)
	s.AgentPort = num(m.AgentPort, "agent_port", pool.DefaultAgentPort, pool.DefaultAgentPort)
	if m.BrokerPublicKey.IsUnknown() {
		b.unknown["broker_public_key"] = true
	} else if m.BrokerPublicKey.IsNull() {
		if env := os.Getenv(EnvBrokerPublicKey); env != "" {
			s.BrokerPublicKeys = splitKeys(env)
		} else {
			b.unknown["broker_public_key"] = true // resolved (or reported) at plan time
		}
	} else {
		s.BrokerPublicKeys = splitKeys(m.BrokerPublicKey.ValueString())
	}
	// Unlike broker_public_key, a null daemon_url is not looked up in
	// HANGAR_DAEMON_URL here: ModifyPlan resolves the fallback into the
	// plan, where null then means "no daemon URL" (the legacy mode), and an
	// apply must build exactly the spec that was planned.
	s.DaemonURL = str(m.DaemonURL, "daemon_url", "")
	return b
}

// setFromSpec copies what Fly holds into the model. Values the user wrote
// differently but equivalently (durations) keep the user's spelling.
func (m *poolModel) setFromSpec(s pool.Spec) {
	m.Name = types.StringValue(s.Pool)
	m.AppName = types.StringValue(s.App)
	m.AdoptApp = types.BoolValue(s.AdoptedApp)
	m.Network = optionalString(s.Network)
	m.Regions = regionsValue(s.Regions)
	m.Image = types.StringValue(s.Image)
	m.Guest = guestObject(s.Guest)
	m.Env = envValue(s.Env, m.Env)
	m.MinStandby = types.Int64Value(int64(s.MinStandby))
	m.MaxMachines = types.Int64Value(int64(s.MaxMachines))
	m.StandbyMode = types.StringValue(string(s.StandbyMode))
	m.IdleTimeout = durationValue(s.IdleTimeout.String(), m.IdleTimeout)
	m.SessionTTL = durationValue(s.SessionTTL.String(), m.SessionTTL)
	m.AgentPort = types.Int64Value(int64(s.AgentPort))
	m.BrokerPublicKey = types.StringValue(strings.Join(s.BrokerPublicKeys, ","))
	m.DaemonURL = optionalString(s.DaemonURL)
}

// optionalString is null for "" (a setting the pool does not have).
func optionalString(s string) types.String {
	if s == "" {
		return types.StringNull()
	}
	return types.StringValue(s)
}

func regionsValue(regions []string) types.List {
	vals := make([]attr.Value, len(regions))
	for i, r := range regions {
		vals[i] = types.StringValue(r)
	}
	return types.ListValueMust(types.StringType, vals)
}

// envValue keeps a null env null when Fly holds none.
func envValue(env map[string]string, prior types.Map) types.Map {
	if len(env) == 0 && (prior.IsNull() || prior.IsUnknown()) {
		return types.MapNull(types.StringType)
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	vals := make(map[string]attr.Value, len(env))
	for _, k := range keys {
		vals[k] = types.StringValue(env[k])
	}
	return types.MapValueMust(types.StringType, vals)
}

// durationValue returns prior if it denotes the same duration as goDur.
func durationValue(goDur string, prior types.String) types.String {
	d, _ := pool.ParseDuration(goDur)
	if !prior.IsNull() && !prior.IsUnknown() {
		if p, err := pool.ParseDuration(prior.ValueString()); err == nil && p == d {
			return prior
		}
	}
	return types.StringValue(pool.FormatDuration(d))
}
