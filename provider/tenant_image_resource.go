package provider

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
)

// tenantImageResource is hangar_tenant_image.
type tenantImageResource struct {
	data *providerData
}

var (
	_ resource.ResourceWithConfigure      = (*tenantImageResource)(nil)
	_ resource.ResourceWithImportState    = (*tenantImageResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*tenantImageResource)(nil)
	_ resource.ResourceWithValidateConfig = (*tenantImageResource)(nil)
)

// NewTenantImageResource returns the hangar_tenant_image resource.
func NewTenantImageResource() resource.Resource { return &tenantImageResource{} }

type tenantImageModel struct {
	ID                types.String `tfsdk:"id"`
	Name              types.String `tfsdk:"name"`
	Pool              types.String `tfsdk:"pool"`
	Tenant            types.String `tfsdk:"tenant"`
	Image             types.String `tfsdk:"image"`
	Guest             types.Object `tfsdk:"guest"`
	Env               types.Map    `tfsdk:"env"`
	MinStandby        types.Int64  `tfsdk:"min_standby"`
	ForceDestroy      types.Bool   `tfsdk:"force_destroy"`
	AppName           types.String `tfsdk:"app_name"`
	TemplateMachineID types.String `tfsdk:"template_machine_id"`
	ImageDigest       types.String `tfsdk:"image_digest"`
	SpecHash          types.String `tfsdk:"spec_hash"`
}

func (r *tenantImageResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_tenant_image"
}

func (r *tenantImageResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.data = configureData(req.ProviderData, &resp.Diagnostics)
}

func (r *tenantImageResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	attrs := map[string]schema.Attribute{}
	add := func(name string, a schema.Attribute) { attrs[name] = a }
	add("name", nameAttribute("Tenant image name, unique within the pool; API clients pick it with `tenant_image` in `POST /v1/sessions`. Lowercase letters, digits and dashes. Changing it replaces the tenant image."))
	add("pool", nameAttribute("Name of the `hangar_pool` this image belongs to (use `hangar_pool.<x>.name` so Terraform creates the pool first). The tenant image's machines live in the pool's app, inherit its regions, standby mode, timeouts, agent port, broker key and daemon URL, and count against its `max_machines`. Changing it replaces the tenant image."))
	d, m := md("Name of the hangar tenant (as created with `POST /v1/tenants`) allowed to start sessions on this image.")
	add("tenant", schema.StringAttribute{Required: true, Description: d, MarkdownDescription: m,
		Validators: []validator.String{tenantValidator()}})
	add("image", imageAttribute("Worker image for this tenant, for example `registry.fly.io/acme-worker:2.3`; it must run `hangar-agent`. A reference with a digest (`…@sha256:…`) is used as is and its digest is reported in `image_digest`; a tag is kept as given (no registry is queried). Changing it rolls this image's standbys."))
	add("guest", guestSchema(true))
	add("env", envAttribute("Non-secret environment variables set on top of the pool's `env` for this image's machines. Never put credentials here."))
	add("min_standby", minStandbyAttribute("Standby machines to keep per pool region for this image. Counts against the pool's `max_machines` together with the pool's own `min_standby`. Default `1`."))
	add("force_destroy", forceDestroyAttribute("Destroy the tenant image even while session machines started from it are running. Only its template and standby machines are destroyed: "+
		"the running sessions are left to end on their own (they keep their machines until they finish, idle out or reach `session_ttl`), "+
		"but no new session can start on this image. With `false` (the default) destroy refuses and lists the running sessions. "+
		"To end them as well, end the sessions through the hangar daemon (`DELETE /v1/sessions/{id}`) or destroy the pool with its own `force_destroy`."))
	add("id", stableComputedAttribute("The tenant image's ID: `<pool>/<name>`, also the import ID."))
	add("app_name", stableComputedAttribute("The Fly app of the pool."))
	add("template_machine_id", stableComputedAttribute("ID of the template machine holding this image's spec."))
	add("image_digest", computedAttribute("Digest of the image as Fly reports it, when the reference carries one; null when the image is referenced by tag only."))
	add("spec_hash", computedAttribute("Hash of the spec this image's standbys are built from (see `hangar_pool.spec_hash`); it also changes when the pool's inherited settings change."))
	resp.Schema = schema.Schema{
		Description: "A tenant image: a second template (and its standbys) in a hangar pool's app, with its own image and optional guest and env overrides, for one tenant.",
		MarkdownDescription: "A tenant image: a second *template* machine, with its own standbys, inside a `hangar_pool`'s Fly app. It runs a tenant-specific worker image " +
			"(with optional `guest` and `env` overrides) and inherits everything else from the pool. Destroying it destroys its template and standbys. " +
			"While session machines started from it are running, destroy refuses unless `force_destroy = true`; forced, it still never destroys a session machine: " +
			"the sessions are left to end on their own.",
		Attributes: attrs,
	}
}

func (m tenantImageModel) id() string { return m.Pool.ValueString() + "/" + m.Name.ValueString() }

// placeholderPool is a valid pool spec for plan-time checks of a tenant
// image whose pool is not readable yet.
func placeholderPool() pool.Spec {
	return pool.Spec{Pool: "placeholder", App: "placeholder", Regions: []string{"iad"}, Image: "placeholder",
		Guest: pool.Guest{CPUKind: pool.DefaultCPUKind, CPUs: pool.DefaultCPUs, MemoryMB: pool.DefaultMemoryMB}, MaxMachines: 1 << 30,
		StandbyMode: pool.StandbyStop, IdleTimeout: pool.DefaultIdleTimeout, SessionTTL: pool.DefaultSessionTTL, AgentPort: pool.DefaultAgentPort,
		BrokerPublicKeys: []string{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}
}

// spec builds the tenant image's spec over pool spec p; unknown lists the
// attributes that were unknown.
func (m tenantImageModel) spec(ctx context.Context, p pool.Spec, diags *diag.Diagnostics) specBuild {
	b := specBuild{unknown: map[string]bool{}}
	name := b.str(m.Name, "name", "placeholder")
	tenant := b.str(m.Tenant, "tenant", "placeholder")
	image := b.str(m.Image, "image", "placeholder")
	minStandby := b.num(m.MinStandby, "min_standby", 1, 0)
	var guest *pool.Guest
	if g, ok, d := guestFrom(ctx, m.Guest); ok {
		guest = &g
	} else {
		diags.Append(d...)
		if !m.Guest.IsNull() {
			b.unknown["guest"] = true
		}
	}
	b.spec = p.ForTenantImage(name, tenant, image, minStandby, guest, b.env(ctx, m.Env, diags))
	return b
}

// fromSpec copies what Fly holds into the model.
func (m *tenantImageModel) fromSpec(t *pool.Template) {
	s := t.Spec
	m.Name = types.StringValue(s.TenantImage)
	m.Pool = types.StringValue(s.Pool)
	m.Tenant = types.StringValue(s.Tenant)
	m.Image = types.StringValue(s.Image)
	if s.GuestOverride {
		m.Guest = guestObject(s.Guest)
	} else {
		m.Guest = types.ObjectNull(guestAttrTypes)
	}
	m.Env = envValue(s.OverrideEnv(), m.Env)
	m.MinStandby = types.Int64Value(int64(s.MinStandby))
	m.AppName = types.StringValue(s.App)
	m.TemplateMachineID = types.StringValue(t.Machine.ID)
	m.SpecHash = types.StringValue(pool.SpecHashOf(t.Machine))
	m.ImageDigest = types.StringNull()
	if ref := t.Machine.ImageRef; ref != nil && ref.Digest != "" {
		m.ImageDigest = types.StringValue(ref.Digest)
	}
	m.ID = types.StringValue(m.id())
}

func (r *tenantImageResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var cfg tenantImageModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var diags diag.Diagnostics
	b := cfg.spec(ctx, placeholderPool(), &diags)
	if err := b.spec.Validate(); err != nil {
		addSpecErrors(&resp.Diagnostics, err, func(field string) bool {
			switch rootField(field) {
			case "name", "image", "tenant", "guest":
				return true // attribute validators report these
			}
			return b.skip(field) || negativeCount(field, cfg.MinStandby)
		})
	}
}

func (r *tenantImageResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() || req.State.Raw.IsNull() || r.data == nil || r.data.client == nil {
		return
	}
	var plan, state tenantImageModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || state.AppName.IsNull() {
		return
	}
	st, ok := loadForPlan(ctx, r.data.client, state.AppName.ValueString(), "Tenant Image State Not Checked", &resp.Diagnostics)
	if !ok {
		return
	}
	name := state.Name.ValueString()
	if st.Templates[name] == nil || !plan.SpecHash.Equal(state.SpecHash) {
		return
	}
	if problems := standbyProblems(st, name); len(problems) > 0 {
		plan.SpecHash = types.StringUnknown()
		resp.Diagnostics.AddWarning("Tenant Image Standbys Will Be Repaired",
			fmt.Sprintf("Tenant image %q of pool %q: %s. This apply replaces or tops up its standbys.", name, state.Pool.ValueString(), strings.Join(problems, "; ")))
		resp.Diagnostics.Append(resp.Plan.Set(ctx, &plan)...)
	}
}

// loadPool finds the pool's app and live state; diagnostics name the pool.
func (r *tenantImageResource) loadPool(ctx context.Context, poolName, app string, diags *diag.Diagnostics) (*pool.State, bool) {
	st, ok := loadNamedPool(ctx, r.data, poolName, app, path.Root("pool"),
		"Create the pool first (reference hangar_pool.<x>.name so Terraform orders it), or check the name.", "Find Pool Error", diags)
	if !ok {
		return nil, false
	}
	if st.Default() == nil {
		diags.AddAttributeError(path.Root("pool"), "Pool Not Found",
			fmt.Sprintf("App %s has no template machine for pool %q (it was destroyed outside Terraform). Apply the hangar_pool first to repair it.", st.App, poolName))
		return nil, false
	}
	return st, true
}

// checkedSpec builds and validates the tenant image's spec over the live pool.
func (r *tenantImageResource) checkedSpec(ctx context.Context, plan tenantImageModel, st *pool.State, diags *diag.Diagnostics) (pool.Spec, bool) {
	spec, ok := plan.spec(ctx, st.Default().Spec, diags).validSpec(diags, func([]string) {
		diags.AddError("Incomplete Tenant Image Specification", "Some attributes are still unknown at apply time. This is always a bug in the provider; please report it.")
	})
	if !ok {
		return pool.Spec{}, false
	}
	specs := []pool.Spec{spec}
	for ti, t := range st.Templates {
		if ti != spec.TenantImage && !t.Spec.Draining {
			specs = append(specs, t.Spec)
		}
	}
	if !checkCapacity(specs, diags) {
		return pool.Spec{}, false
	}
	return spec, true
}

func (r *tenantImageResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan tenantImageModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() || !requireClient(r.data, &resp.Diagnostics) {
		return
	}
	st, ok := r.loadPool(ctx, plan.Pool.ValueString(), "", &resp.Diagnostics)
	if !ok {
		return
	}
	name := plan.Name.ValueString()
	if t := st.Templates[name]; t != nil {
		resp.Diagnostics.AddError("Tenant Image Already Exists",
			fmt.Sprintf("Pool %q already has a tenant image %q (template machine %s). Import it instead: terraform import <address> %s.", plan.Pool.ValueString(), name, t.Machine.ID, plan.id()))
		return
	}
	spec, ok := r.checkedSpec(ctx, plan, st, &resp.Diagnostics)
	if !ok {
		return
	}
	c := r.data.client
	t, err := createTemplate(ctx, c, st, spec)
	if err != nil {
		addFlyError(&resp.Diagnostics, "Create Tenant Image Error", "create the tenant image's template machine in app "+st.App, err)
		return
	}
	if err := topUp(ctx, c, st, name); err != nil {
		// The create failed either way; a failed cleanup leaves machines the
		// next apply's plan shows.
		_ = r.cleanup(ctx, st.App, name)
		addFlyError(&resp.Diagnostics, "Create Tenant Image Error", "create the tenant image's standby machines", err)
		return
	}
	tflog.Info(ctx, "created hangar tenant image", map[string]any{"pool": spec.Pool, "tenant_image": name, "template": t.Machine.ID})
	plan.fromSpec(t)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// cleanup destroys a tenant image's template and standbys.
func (r *tenantImageResource) cleanup(ctx context.Context, app, name string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	c := r.data.client
	st, err := pool.Load(ctx, c, app)
	if err != nil {
		return err
	}
	machines := st.StandbysOf(name)
	if t := st.Templates[name]; t != nil {
		machines = append(machines, t.Machine)
	}
	for _, m := range st.ExtraTemplates {
		if pool.TenantImageOf(m) == name {
			machines = append(machines, m)
		}
	}
	return destroyMachines(ctx, c, app, machines)
}

func (r *tenantImageResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state tenantImageModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || !requireClient(r.data, &resp.Diagnostics) {
		return
	}
	c := r.data.client
	app := state.AppName.ValueString()
	st, err := pool.Load(ctx, c, app)
	if errors.Is(err, fly.ErrNotFound) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addFlyError(&resp.Diagnostics, "Read Tenant Image Error", "list the machines of app "+app, err)
		return
	}
	t := st.Templates[state.Name.ValueString()]
	if t == nil {
		tflog.Warn(ctx, "tenant image template is gone; removing it from state", map[string]any{"app": app, "tenant_image": state.Name.ValueString()})
		resp.State.RemoveResource(ctx)
		return
	}
	state.fromSpec(t)
	if state.ForceDestroy.IsNull() || state.ForceDestroy.IsUnknown() {
		state.ForceDestroy = types.BoolValue(false)
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *tenantImageResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state tenantImageModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || !requireClient(r.data, &resp.Diagnostics) {
		return
	}
	st, ok := r.loadPool(ctx, plan.Pool.ValueString(), state.AppName.ValueString(), &resp.Diagnostics)
	if !ok {
		return
	}
	spec, ok := r.checkedSpec(ctx, plan, st, &resp.Diagnostics)
	if !ok {
		return
	}
	c := r.data.client
	if _, err := writeTemplate(ctx, c, st, spec); err != nil {
		addFlyError(&resp.Diagnostics, "Update Tenant Image Error", "write the tenant image's template machine", err)
		return
	}
	if err := converge(ctx, c, st.App, []string{spec.TenantImage}); err != nil {
		addFlyError(&resp.Diagnostics, "Update Tenant Image Error", "replace and top up the tenant image's standby machines", err)
		return
	}
	st, err := pool.Load(ctx, c, st.App)
	if err != nil || st.Templates[spec.TenantImage] == nil {
		if err == nil {
			err = fmt.Errorf("template of tenant image %s vanished during the update", spec.TenantImage)
		}
		addFlyError(&resp.Diagnostics, "Update Tenant Image Error", "read the tenant image back", err)
		return
	}
	plan.fromSpec(st.Templates[spec.TenantImage])
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *tenantImageResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state tenantImageModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || !requireClient(r.data, &resp.Diagnostics) {
		return
	}
	c := r.data.client
	app := state.AppName.ValueString()
	name := state.Name.ValueString()
	st, err := pool.Load(ctx, c, app)
	if errors.Is(err, fly.ErrNotFound) {
		return
	}
	if err != nil {
		addFlyError(&resp.Diagnostics, "Delete Tenant Image Error", "list the machines of app "+app, err)
		return
	}
	force := state.ForceDestroy.ValueBool()
	if len(st.SessionsOf(name)) > 0 && !force {
		resp.Diagnostics.AddError("Tenant Image Has Running Sessions", tenantSessionsDetail(state.Pool.ValueString(), name, st))
		return
	}
	// Mark the template draining so daemons stop claiming and refilling.
	var templates []*fly.Machine
	if t := st.Templates[name]; t != nil {
		templates = []*fly.Machine{t.Machine}
	}
	if _, err := markDraining(ctx, c, app, templates); err != nil {
		addFlyError(&resp.Diagnostics, "Delete Tenant Image Error", "mark the tenant image's template draining", err)
		return
	}
	// A claim may have slipped in before the daemons saw the mark.
	if !force {
		if st, err = pool.Load(ctx, c, app); err != nil {
			addFlyError(&resp.Diagnostics, "Delete Tenant Image Error", "list the machines of app "+app, err)
			return
		}
		if len(st.SessionsOf(name)) > 0 {
			unmarkDraining(ctx, c, app, templates)
			resp.Diagnostics.AddError("Tenant Image Has Running Sessions", tenantSessionsDetail(state.Pool.ValueString(), name, st))
			return
		}
	}
	// Session machines are never destroyed here, forced or not.
	if err := r.cleanup(ctx, app, name); err != nil {
		addFlyError(&resp.Diagnostics, "Delete Tenant Image Error", "destroy the tenant image's machines", err)
		return
	}
	if n := len(st.SessionsOf(name)); n > 0 {
		tflog.Warn(ctx, "tenant image destroyed with running sessions left in place", map[string]any{"pool": state.Pool.ValueString(), "tenant_image": name, "sessions": n})
	}
}

func tenantSessionsDetail(poolName, name string, st *pool.State) string {
	sessions := st.SessionsOf(name)
	return fmt.Sprintf("Tenant image %q of pool %q still has %d session machine(s) running in app %s: %s. "+
		"End the sessions first (DELETE /v1/sessions/{id} on the hangar daemon), or set force_destroy = true on the tenant image, apply, and destroy again: "+
		"that destroys only the tenant image's template and standbys and leaves the running sessions to end on their own.",
		name, poolName, len(sessions), st.App, sessionList(sessions))
}

func (r *tenantImageResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if !requireClient(r.data, &resp.Diagnostics) {
		return
	}
	poolName, name, ok := strings.Cut(strings.TrimSpace(req.ID), "/")
	if !ok || pool.ValidateName(poolName) != nil || pool.ValidateName(name) != nil {
		resp.Diagnostics.AddError("Invalid Import ID",
			fmt.Sprintf("Import a tenant image as <pool>/<name>, for example: terraform import hangar_tenant_image.acme default/acme-node22. Got %q.", req.ID))
		return
	}
	st, ok := r.loadPool(ctx, poolName, "", &resp.Diagnostics)
	if !ok {
		return
	}
	if st.Templates[name] == nil {
		resp.Diagnostics.AddError("Tenant Image Not Found", fmt.Sprintf("Pool %q (app %s) has no tenant image %q.", poolName, st.App, name))
		return
	}
	m := tenantImageModel{Name: types.StringValue(name), Pool: types.StringValue(poolName), Env: types.MapNull(types.StringType), ForceDestroy: types.BoolValue(false)}
	m.fromSpec(st.Templates[name])
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
