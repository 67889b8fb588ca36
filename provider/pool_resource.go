package provider

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/objectdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
)

// Concurrency of standby creation and replacement.
const (
	createConcurrency = 4
	rollConcurrency   = 2
)

// poolResource is hangar_pool.
type poolResource struct {
	data *providerData
}

var (
	_ resource.ResourceWithConfigure      = (*poolResource)(nil)
	_ resource.ResourceWithImportState    = (*poolResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*poolResource)(nil)
	_ resource.ResourceWithValidateConfig = (*poolResource)(nil)
)

// NewPoolResource returns the hangar_pool resource.
func NewPoolResource() resource.Resource { return &poolResource{} }

func (r *poolResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_pool"
}

func (r *poolResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.data = configureData(req.ProviderData, &resp.Diagnostics)
}

func (r *poolResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	attrs := map[string]schema.Attribute{}
	add := func(name string, a schema.Attribute) { attrs[name] = a }
	add("name", nameAttribute("The pool name, referenced as `pool` by `hangar_tenant_image` and by API clients in `POST /v1/sessions`. Lowercase letters, digits and dashes. Changing it replaces the pool. It is also the import ID."))
	add("app_name", nameAttribute("Name of the Fly app that holds the pool's machines, for example `hangar-default`. Fly app names are global: pick one nobody else uses. The provider creates the app, unless `adopt_app = true`. Changing it replaces the pool."))
	d, m := md("Use an existing Fly app named `app_name` instead of creating one. An adopted app is left in place when the pool is destroyed; only hangar's machines are removed. Default `false`.")
	add("adopt_app", schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(false), Description: d, MarkdownDescription: m})
	d, m = md("Slug of the Fly organization the app is created in. Defaults to the provider's `org`. Changing it replaces the pool.")
	add("org", schema.StringAttribute{Optional: true, Computed: true, Description: d, MarkdownDescription: m,
		PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()}})
	d, m = md("Name of an isolated 6PN private network for the pool's app. Recommended: one network per tenant pool, so one tenant's workers never share a private network with another's. " +
		"A worker on it can reach the daemon's public URL (`daemon_url`, its tunnel) and the internet (git servers, Anthropic's API); " +
		"it cannot reach other apps' machines, the daemon's internal listener, or the organization's default network. " +
		"Requires `daemon_url`: the daemon cannot connect into an isolated network, so workers must dial it. " +
		"Omit to use the organization's default network. Changing it replaces the pool.")
	add("network", schema.StringAttribute{Optional: true, Description: d, MarkdownDescription: m,
		PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
		Validators:    []validator.String{nameValidator()}})
	d, m = md("Fly regions to keep standby machines in, for example `[\"iad\", \"ams\"]` (three-letter region codes). When a region has no capacity, a claim tries the next one in this order. The template machine lives in the first region.")
	add("regions", schema.ListAttribute{Required: true, ElementType: types.StringType, Description: d, MarkdownDescription: m,
		Validators: []validator.List{listvalidator.SizeAtLeast(1), listvalidator.UniqueValues(), listvalidator.ValueStringsAre(regionValidator())}})
	add("image", imageAttribute("Default worker image, for example `registry.fly.io/hangar-worker:1.0.0`. It must run `hangar-agent` (see `workerimage/`). Changing it rolls the standbys onto the new image."))
	add("guest", guestSchema(false))
	add("env", envAttribute("Non-secret environment variables for every worker machine, for example `{ LOG_LEVEL = \"info\" }`. Values are stored in plain text in Fly machine configs and in Terraform state: never put credentials here. `HANGAR_AGENT_PORT`, `HANGAR_BROKER_PUBLIC_KEY` and `HANGAR_DAEMON_URL` are set by hangar and cannot be overridden."))
	add("min_standby", minStandbyAttribute("Standby machines to keep per region for the default image. The provider creates them on apply; at run time the hangar daemon tops them up after claims. `min_standby` × regions, summed with the pool's tenant images, must not exceed `max_machines`. Default `1`."))
	d, m = md("Upper bound on the pool's machines: every standby and session machine, tenant images included. Sessions beyond it queue. Default `10`.")
	add("max_machines", schema.Int64Attribute{Optional: true, Computed: true, Default: int64default.StaticInt64(10), Description: d, MarkdownDescription: m,
		Validators: []validator.Int64{int64validator.AtLeast(1)}})
	d, m = md("How standbys wait: `stop` (created and never started; a claim boots it in about a second, and it costs nothing but storage) or `suspend` (booted once, then suspended with its memory; a claim resumes it in a few hundred milliseconds). Changing it rolls the standbys. Default `stop`.")
	add("standby_mode", schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString(string(pool.StandbyStop)), Description: d, MarkdownDescription: m,
		Validators: []validator.String{stringvalidator.OneOf(string(pool.StandbyStop), string(pool.StandbySuspend))}})
	d, m = md("A session with no input and no attached client for this long is ended (work pushed, machine destroyed). A Go duration such as `15m` or `1h30m`. Default `15m`.")
	add("idle_timeout", schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString("15m"), Description: d, MarkdownDescription: m,
		Validators: []validator.String{durationValidator()}})
	d, m = md("Maximum lifetime of a session, after which it is ended like an idle one. A Go duration such as `4h`. Default `4h`.")
	add("session_ttl", schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString("4h"), Description: d, MarkdownDescription: m,
		Validators: []validator.String{durationValidator()}})
	d, m = md("TCP port `hangar-agent` listens on inside worker machines (passed as `HANGAR_AGENT_PORT`); without `daemon_url`, the daemon dials it over the private network. Default `8080`.")
	add("agent_port", schema.Int64Attribute{Optional: true, Computed: true, Default: int64default.StaticInt64(pool.DefaultAgentPort), Description: d, MarkdownDescription: m,
		Validators: []validator.Int64{int64validator.Between(1, 65535)}})
	d, m = md("The hangar daemon's broker public key (standard base64 of the 32-byte ed25519 key, as printed by `hangard keygen`); agents accept only tokens signed by it. During a key rotation, give both keys comma-separated. Defaults to the `HANGAR_BROKER_PUBLIC_KEY` environment variable. Changing it rolls the standbys.")
	add("broker_public_key", schema.StringAttribute{Optional: true, Computed: true, Description: d, MarkdownDescription: m,
		Validators: []validator.String{brokerKeyValidator()}})
	d, m = md("URL of the hangar daemon that workers dial (their outbound tunnel; the daemon never connects to a worker). Defaults to `HANGAR_DAEMON_URL`. Required with `network`. " +
		"`http://` or `https://`, a host and an optional port, nothing else (no path, not even a trailing `/`), for example `https://hangar.example.com`; use `https://` outside local development. " +
		"Passed to workers as `HANGAR_DAEMON_URL`; tenant images inherit it. Changing it rolls the standbys. " +
		"Without it (and without `network`) the pool runs in the legacy mode in which the daemon dials `agent_port` over the organization's private network.")
	add("daemon_url", schema.StringAttribute{Optional: true, Computed: true, Description: d, MarkdownDescription: m,
		Validators: []validator.String{daemonURLValidator()}})
	add("force_destroy", forceDestroyAttribute("Destroy the pool even while session machines are running (their sessions end without pushing work). With `false` (the default) destroy refuses and lists the running sessions."))
	add("id", stableComputedAttribute("The pool's ID: its name."))
	add("template_machine_id", stableComputedAttribute("ID of the Fly machine that stores the pool's spec (the *template*, never started). Standbys are cloned from its config."))
	add("spec_hash", computedAttribute("Hash of the parts of the spec that go into a standby (image, guest, env, agent port, broker keys, daemon URL, standby mode). Every standby carries the hash of the spec it was cloned from in its `hangar_spec` metadata; standbys with another hash are stale and get replaced. Shown as unknown in a plan when the provider will repair the pool (a template or standby destroyed outside Terraform, or stale standbys)."))

	resp.Schema = schema.Schema{
		Description: "A hangar worker pool: a Fly app with a template machine holding the declared spec and warm standby machines cloned from it.",
		MarkdownDescription: "A hangar worker pool: a Fly app with a *template* machine holding the declared spec (in its metadata, so the daemon and `terraform import` read it back from Fly) " +
			"and `min_standby` warm *standby* machines per region, cloned from the template. Standby counts are run-time state owned by the hangar daemon and are never stored in Terraform state; " +
			"the `hangar_pool` data source shows them. An apply repairs what was destroyed outside Terraform and replaces standbys built from an older spec, under their Fly leases, without touching session machines.",
		Attributes: attrs,
	}
}

// guestSchema is the guest attribute; for a tenant image it is optional and
// inherits the pool's when omitted.
func guestSchema(tenantImage bool) schema.SingleNestedAttribute {
	inner := map[string]schema.Attribute{
		// Checked with the other fields by guestValidator on the object.
		"cpu_kind": schema.StringAttribute{Required: true,
			Description: "shared or performance.", MarkdownDescription: "`shared` or `performance`."},
		"cpus": schema.Int64Attribute{Required: true,
			Description:         "Number of CPUs: 1, 2, 4, 6 or 8 for shared; 1 to 16 (even above 1) for performance.",
			MarkdownDescription: "Number of CPUs: `1`, `2`, `4`, `6` or `8` for `shared`; `1`, `2`, `4` … `16` (even numbers above 1) for `performance`."},
		"memory_mb": schema.Int64Attribute{Required: true,
			Description:         "Memory in MB, a multiple of 256: 256 to 2048 per CPU for shared, 2048 to 8192 per CPU for performance.",
			MarkdownDescription: "Memory in MB, a multiple of 256: 256–2048 MB per CPU for `shared`, 2048–8192 MB per CPU for `performance`. Claude Code wants at least 1024."},
	}
	if tenantImage {
		d, m := md("Machine size for this tenant image's machines. Omit to inherit the pool's `guest`.")
		return schema.SingleNestedAttribute{Optional: true, Attributes: inner, Description: d, MarkdownDescription: m,
			Validators: []validator.Object{guestValidator{}}}
	}
	d, m := md("Machine size of every worker machine, validated against Fly's allowed sizes. Default `{ cpu_kind = \"shared\", cpus = 1, memory_mb = 2048 }`. Changing it rolls the standbys.")
	return schema.SingleNestedAttribute{Optional: true, Computed: true, Attributes: inner, Description: d, MarkdownDescription: m,
		Validators: []validator.Object{guestValidator{}},
		Default:    objectdefault.StaticValue(guestObject(pool.Guest{CPUKind: pool.DefaultCPUKind, CPUs: pool.DefaultCPUs, MemoryMB: pool.DefaultMemoryMB}))}
}

func (r *poolResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var cfg poolModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var diags diag.Diagnostics
	b := cfg.spec(ctx, &diags)
	// The attribute validators already report most fields; keep the rest,
	// so that one bad value yields one diagnostic.
	if err := b.spec.Validate(); err != nil {
		addSpecErrors(&resp.Diagnostics, err, func(field string) bool {
			return b.skip(field) || attributeValidated(field) || negativeCount(field, cfg.MinStandby)
		})
	}
	// Suspend eligibility spans two attributes, so no attribute validator
	// sees it: report it on guest, the one to change (or standby_mode).
	if !b.skip("guest") && !b.skip("standby_mode") && b.spec.StandbyMode == pool.StandbySuspend && b.spec.Guest.MemoryMB > pool.SuspendMaxMemoryMB {
		resp.Diagnostics.AddAttributeError(path.Root("guest"), "Guest Too Large to Suspend",
			fmt.Sprintf("guest.memory_mb: %d MB cannot be suspended: Fly suspends only machines with at most %d MB of memory (and no swap, schedule or GPU). Use standby_mode = \"stop\", or at most %d MB.",
				b.spec.Guest.MemoryMB, pool.SuspendMaxMemoryMB, pool.SuspendMaxMemoryMB))
	}
}

// attributeValidated lists fields whose errors the attribute validators
// already report, so a bad value yields one diagnostic.
func attributeValidated(field string) bool {
	switch rootField(field) {
	case "regions", "standby_mode", "idle_timeout", "session_ttl", "agent_port", "max_machines", "name", "app_name", "network", "broker_public_key",
		"image", "guest",
		// daemon_url's format, when set. When it is null, the one rule left
		// (network requires it) is checked by ModifyPlan, after the fallback
		// to HANGAR_DAEMON_URL and to the pool's current URL.
		"daemon_url":
		return true
	}
	return false
}

// negativeCount reports a min_standby error that the attribute's AtLeast(0)
// validator already reports. Other min_standby errors (the capacity rule)
// come only from the spec and are kept.
func negativeCount(field string, minStandby types.Int64) bool {
	return field == "min_standby" && !minStandby.IsNull() && !minStandby.IsUnknown() && minStandby.ValueInt64() < 0
}

func (r *poolResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() {
		return // destroy: checks happen in Delete
	}
	var plan, cfg poolModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	var state *poolModel
	if !req.State.Raw.IsNull() {
		state = &poolModel{}
		resp.Diagnostics.Append(req.State.Get(ctx, state)...)
	}
	if resp.Diagnostics.HasError() {
		return
	}

	// broker_public_key falls back to HANGAR_BROKER_PUBLIC_KEY, then to
	// what the pool already has.
	if cfg.BrokerPublicKey.IsNull() {
		switch env := strings.TrimSpace(os.Getenv(EnvBrokerPublicKey)); {
		case env != "":
			plan.BrokerPublicKey = types.StringValue(env)
		case state != nil && state.BrokerPublicKey.ValueString() != "":
			plan.BrokerPublicKey = state.BrokerPublicKey
		default:
			resp.Diagnostics.AddAttributeError(path.Root("broker_public_key"), "Missing Broker Public Key",
				"The pool needs the hangar daemon's broker public key so that its agents accept the daemon's tokens. "+
					"Set broker_public_key, or the HANGAR_BROKER_PUBLIC_KEY environment variable; `hangard keygen` creates a key pair and prints the public key.")
			return
		}
		for _, k := range splitKeys(plan.BrokerPublicKey.ValueString()) {
			if err := pool.ValidateBrokerPublicKey(k); err != nil {
				resp.Diagnostics.AddAttributeError(path.Root("broker_public_key"), "Invalid Broker Public Key",
					fmt.Sprintf("HANGAR_BROKER_PUBLIC_KEY holds %q, which is %v.", k, err))
				return
			}
		}
	}
	// daemon_url falls back the same way, except that without either the
	// pool has none (the legacy mode), which is an error only with network.
	if cfg.DaemonURL.IsNull() {
		switch env := strings.TrimSpace(os.Getenv(EnvDaemonURL)); {
		case env != "":
			if err := pool.ValidateDaemonURL(env); err != nil {
				resp.Diagnostics.AddAttributeError(path.Root("daemon_url"), "Invalid Daemon URL",
					fmt.Sprintf("HANGAR_DAEMON_URL, which daemon_url defaults to, is not a daemon URL: %v.", err))
				return
			}
			plan.DaemonURL = types.StringValue(env)
		case state != nil && state.DaemonURL.ValueString() != "":
			plan.DaemonURL = state.DaemonURL
		default:
			plan.DaemonURL = types.StringNull()
		}
	}
	if cfg.Org.IsNull() {
		switch {
		case r.data != nil:
			plan.Org = types.StringValue(r.data.org)
		case state != nil:
			plan.Org = state.Org
		default:
			plan.Org = types.StringUnknown()
		}
	}
	plan.ID = plan.Name

	var diags diag.Diagnostics
	b := plan.spec(ctx, &diags)
	if cfg.DaemonURL.IsNull() {
		// ValidateConfig left the rule "network requires daemon_url" to
		// this point, where the fallback is resolved.
		if err := b.spec.Validate(); err != nil {
			addSpecErrors(&resp.Diagnostics, err, func(field string) bool { return rootField(field) != "daemon_url" || b.skip(field) })
			if resp.Diagnostics.HasError() {
				return
			}
		}
	}
	if b.complete() && !diags.HasError() && b.spec.Validate() == nil {
		plan.SpecHash = types.StringValue(b.spec.Hash())
	} else {
		plan.SpecHash = types.StringUnknown()
	}

	if state != nil && r.data != nil && r.data.client != nil && !state.AppName.IsNull() {
		r.planRepair(ctx, &plan, state, b, resp)
	}
	resp.Diagnostics.Append(resp.Plan.Set(ctx, &plan)...)
}

// planRepair compares the live pool with the plan: capacity over all
// templates, a missing template, missing or stale standbys.
func (r *poolResource) planRepair(ctx context.Context, plan, state *poolModel, b specBuild, resp *resource.ModifyPlanResponse) {
	app := state.AppName.ValueString()
	st, ok := loadForPlan(ctx, r.data.client, app, "Pool State Not Checked", &resp.Diagnostics)
	if !ok {
		return
	}
	if b.complete() {
		specs := []pool.Spec{b.spec}
		for ti, t := range st.Templates {
			if ti != "" && !t.Spec.Draining {
				s := t.Spec
				s.Regions = b.spec.Regions
				specs = append(specs, s)
			}
		}
		if !checkCapacity(specs, &resp.Diagnostics) {
			return
		}
	}
	t := st.Default()
	if t == nil {
		plan.TemplateMachineID = types.StringUnknown()
		plan.SpecHash = types.StringUnknown()
		resp.Diagnostics.AddWarning("Pool Template Will Be Recreated",
			fmt.Sprintf("The template machine %s of pool %q is gone from app %s (destroyed outside Terraform). This apply recreates it from the configuration and tops up the standbys.",
				state.TemplateMachineID.ValueString(), state.Name.ValueString(), app))
		return
	}
	if plan.SpecHash.ValueString() != state.SpecHash.ValueString() {
		return // the update rolls the standbys anyway
	}
	if problems := standbyProblems(st, ""); len(problems) > 0 {
		plan.SpecHash = types.StringUnknown()
		resp.Diagnostics.AddWarning("Pool Standbys Will Be Repaired",
			fmt.Sprintf("Pool %q in app %s: %s. This apply replaces or tops up the standbys (a running hangar daemon would do the same shortly).",
				state.Name.ValueString(), app, strings.Join(problems, "; ")))
	}
}

func (r *poolResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan poolModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() || !requireClient(r.data, &resp.Diagnostics) {
		return
	}
	spec, ok := r.validSpec(ctx, plan, &resp.Diagnostics)
	if !ok {
		return
	}
	c := r.data.client
	app := spec.App
	org := plan.Org.ValueString()
	if org == "" {
		org = r.data.org
	}

	createdApp := false
	if spec.AdoptedApp {
		if _, err := c.GetApp(ctx, app); err != nil {
			if errors.Is(err, fly.ErrNotFound) {
				resp.Diagnostics.AddAttributeError(path.Root("app_name"), "App Not Found",
					fmt.Sprintf("adopt_app = true, but Fly has no app named %q. Create the app first, or set adopt_app = false to let the provider create it.\n\nOriginal Error: %s", app, err))
				return
			}
			addFlyError(&resp.Diagnostics, "Read App Error", "read app "+app, err)
			return
		}
	} else {
		_, err := c.CreateApp(ctx, fly.CreateAppRequest{Name: app, OrgSlug: org, Network: spec.Network})
		if err != nil {
			if errors.Is(err, fly.ErrNameTaken) || fly.StatusCode(err) == 422 {
				resp.Diagnostics.AddAttributeError(path.Root("app_name"), "App Already Exists",
					fmt.Sprintf("Fly already has an app named %q. Choose another app_name, set adopt_app = true to put the pool into that app, "+
						"or, if the app holds this pool already, import it: terraform import <address> %s.\n\nOriginal Error: %s", app, spec.Pool, err))
				return
			}
			addFlyError(&resp.Diagnostics, "Create App Error", fmt.Sprintf("create app %s in organization %s", app, org), err)
			return
		}
		createdApp = true
	}

	st, err := pool.Load(ctx, c, app)
	if err != nil {
		r.cleanupCreate(ctx, app, createdApp)
		addFlyError(&resp.Diagnostics, "Create Pool Error", "list the machines of app "+app, err)
		return
	}
	if t := st.Default(); t != nil {
		resp.Diagnostics.AddError("Pool Already Exists",
			fmt.Sprintf("App %s already holds the template machine %s of pool %q. Import it instead: terraform import <address> %s.", app, t.Machine.ID, t.Spec.Pool, spec.Pool))
		return
	}
	tmpl, err := createTemplate(ctx, c, st, spec)
	if err != nil {
		r.cleanupCreate(ctx, app, createdApp)
		addFlyError(&resp.Diagnostics, "Create Pool Error", "create the template machine in app "+app, err)
		return
	}
	if err := topUp(ctx, c, st, ""); err != nil {
		r.cleanupCreate(ctx, app, createdApp)
		addFlyError(&resp.Diagnostics, "Create Pool Error", "create the pool's standby machines", err)
		return
	}
	tflog.Info(ctx, "created hangar pool", map[string]any{"pool": spec.Pool, "app": app, "template": tmpl.Machine.ID})

	plan.ID = types.StringValue(spec.Pool)
	plan.Org = types.StringValue(org)
	plan.TemplateMachineID = types.StringValue(tmpl.Machine.ID)
	plan.SpecHash = types.StringValue(spec.Hash())
	plan.BrokerPublicKey = types.StringValue(strings.Join(spec.BrokerPublicKeys, ","))
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// cleanupCreate removes what a failed create made: the pool's machines and,
// if the provider created it, the app.
func (r *poolResource) cleanupCreate(ctx context.Context, app string, createdApp bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	c := r.data.client
	if createdApp {
		if err := c.DeleteApp(ctx, app, true); err != nil {
			tflog.Warn(ctx, "cleanup after failed create: delete app", map[string]any{"app": app, "error": err.Error()})
		}
		return
	}
	if st, err := pool.Load(ctx, c, app); err == nil {
		_ = destroyMachines(ctx, c, app, append(append(st.Standbys, st.ExtraTemplates...), templateMachines(st)...))
	}
}

func templateMachines(st *pool.State) []*fly.Machine {
	var out []*fly.Machine
	for _, t := range st.Templates {
		out = append(out, t.Machine)
	}
	return out
}

// validSpec builds and validates the spec of a plan at apply time.
func (r *poolResource) validSpec(ctx context.Context, plan poolModel, diags *diag.Diagnostics) (pool.Spec, bool) {
	return plan.spec(ctx, diags).validSpec(diags, func(unknown []string) {
		diags.AddError("Incomplete Pool Specification",
			"These attributes are still unknown at apply time: "+strings.Join(unknown, ", ")+". This is always a bug in the provider; please report it.")
	})
}

func (r *poolResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state poolModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || !requireClient(r.data, &resp.Diagnostics) {
		return
	}
	c := r.data.client
	app := state.AppName.ValueString()
	a, err := c.GetApp(ctx, app)
	if errors.Is(err, fly.ErrNotFound) {
		tflog.Warn(ctx, "pool app is gone; removing the pool from state", map[string]any{"app": app})
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addFlyError(&resp.Diagnostics, "Read Pool Error", "read app "+app, err)
		return
	}
	st, err := pool.Load(ctx, c, app)
	if err != nil {
		addFlyError(&resp.Diagnostics, "Read Pool Error", "list the machines of app "+app, err)
		return
	}
	if a.Organization != nil && a.Organization.Slug != "" {
		state.Org = types.StringValue(a.Organization.Slug)
	} else if state.Org.IsNull() || state.Org.IsUnknown() {
		state.Org = types.StringValue(r.data.org)
	}
	if state.ForceDestroy.IsNull() || state.ForceDestroy.IsUnknown() {
		state.ForceDestroy = types.BoolValue(false)
	}
	t := st.Default()
	if t == nil {
		// The template was destroyed outside Terraform: keep the declared
		// spec; the plan shows the repair (see ModifyPlan).
		tflog.Warn(ctx, "pool template machine is missing", map[string]any{"app": app, "template": state.TemplateMachineID.ValueString()})
		resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
		return
	}
	state.setFromSpec(t.Spec)
	state.ID = types.StringValue(t.Spec.Pool)
	state.TemplateMachineID = types.StringValue(t.Machine.ID)
	state.SpecHash = types.StringValue(pool.SpecHashOf(t.Machine))
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *poolResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state poolModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || !requireClient(r.data, &resp.Diagnostics) {
		return
	}
	spec, ok := r.validSpec(ctx, plan, &resp.Diagnostics)
	if !ok {
		return
	}
	c := r.data.client
	app := spec.App
	st, err := pool.Load(ctx, c, app)
	if err != nil {
		addFlyError(&resp.Diagnostics, "Update Pool Error", "list the machines of app "+app, err)
		return
	}
	// Tenant images inherit the pool's regions, counts, timeouts, port,
	// keys and (unless overridden) guest and env: rewrite them too.
	specs := []pool.Spec{spec}
	tiSpecs := map[string]pool.Spec{}
	for ti, t := range st.Templates {
		if ti == "" {
			continue
		}
		s := inheritPool(spec, t.Spec)
		tiSpecs[ti] = s
		if !s.Draining {
			specs = append(specs, s)
		}
	}
	if !checkCapacity(specs, &resp.Diagnostics) {
		return
	}

	tmplID, err := writeTemplate(ctx, c, st, spec)
	if err != nil {
		addFlyError(&resp.Diagnostics, "Update Pool Error", "write the pool's template machine", err)
		return
	}
	for _, s := range tiSpecs {
		if _, err := writeTemplate(ctx, c, st, s); err != nil {
			addFlyError(&resp.Diagnostics, "Update Pool Error", "write the template machine of tenant image "+s.TenantImage, err)
			return
		}
	}
	tis := []string{""}
	for ti := range tiSpecs {
		tis = append(tis, ti)
	}
	if err := converge(ctx, c, app, tis); err != nil {
		addFlyError(&resp.Diagnostics, "Update Pool Error", "replace and top up the pool's standby machines", err)
		return
	}
	plan.ID = types.StringValue(spec.Pool)
	plan.TemplateMachineID = types.StringValue(tmplID)
	plan.SpecHash = types.StringValue(spec.Hash())
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// inheritPool returns a tenant image's spec under a new pool spec.
func inheritPool(p, ti pool.Spec) pool.Spec {
	var guest *pool.Guest
	if ti.GuestOverride {
		g := ti.Guest
		guest = &g
	}
	s := p.ForTenantImage(ti.TenantImage, ti.Tenant, ti.Image, ti.MinStandby, guest, ti.OverrideEnv())
	s.Draining = ti.Draining
	return s
}

// writeTemplate rewrites (or, when missing, creates) the template of spec
// and returns its machine id. An unchanged template is left alone.
func writeTemplate(ctx context.Context, c *fly.Client, st *pool.State, spec pool.Spec) (string, error) {
	t := st.Templates[spec.TenantImage]
	cfg := spec.TemplateConfig()
	if t == nil {
		t, err := createTemplate(ctx, c, st, spec)
		if err != nil {
			return "", err
		}
		return t.Machine.ID, nil
	}
	if t.Machine.Config == nil {
		return "", fmt.Errorf("update template %s: its host is unreachable (host_status %q), so Fly sends only an incomplete config; run terraform apply again once the host is back",
			t.Machine.ID, t.Machine.HostStatus)
	}
	if sameTemplate(t.Machine.Config, cfg) {
		return t.Machine.ID, nil
	}
	newCfg := *t.Machine.Config // keep fields hangar does not manage (init, services, ...)
	newCfg.Image = cfg.Image
	newCfg.Guest = cfg.Guest
	newCfg.Env = cfg.Env
	newCfg.Metadata = cfg.Metadata
	newCfg.Restart = cfg.Restart
	m, err := c.UpdateMachine(ctx, st.App, t.Machine.ID, fly.UpdateMachineRequest{Config: &newCfg, SkipLaunch: true, Name: spec.TemplateName()}, "")
	if err != nil {
		return "", err
	}
	t.Machine, t.Spec = m, spec
	return m.ID, nil
}

func sameTemplate(a, b *fly.MachineConfig) bool {
	if a == nil || b == nil || a.Image != b.Image || !mapsEqual(a.Env, b.Env) || !mapsEqual(a.Metadata, b.Metadata) {
		return false
	}
	if a.Guest == nil || b.Guest == nil {
		return a.Guest == b.Guest
	}
	return a.Guest.CPUKind == b.Guest.CPUKind && a.Guest.CPUs == b.Guest.CPUs && a.Guest.MemoryMB == b.Guest.MemoryMB
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// converge brings the standbys of the given templates to their spec: it
// replaces stale standbys (rolling, under their leases), retires surplus
// ones and tops up missing ones.
func converge(ctx context.Context, c *fly.Client, app string, tenantImages []string) error {
	var errs []error
	for _, ti := range tenantImages {
		st, err := pool.Load(ctx, c, app)
		if err != nil {
			return err
		}
		if t := st.Templates[ti]; t == nil || t.Spec.Draining {
			continue
		}
		if _, err := pool.RollStale(ctx, c, st, ti, rollConcurrency, pool.StandbyOptions{}); err != nil {
			errs = append(errs, err)
		}
		if st, err = pool.Load(ctx, c, app); err != nil {
			return err
		}
		if err := retireStandbys(ctx, c, app, surplus(st, ti)); err != nil {
			errs = append(errs, err)
		}
	}
	// Top up after every template shed its surplus, so max_machines has room.
	for _, ti := range tenantImages {
		st, err := pool.Load(ctx, c, app)
		if err != nil {
			return err
		}
		if t := st.Templates[ti]; t == nil || t.Spec.Draining {
			continue
		}
		if err := topUp(ctx, c, st, ti); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *poolResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state poolModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || !requireClient(r.data, &resp.Diagnostics) {
		return
	}
	c := r.data.client
	app := state.AppName.ValueString()
	force := state.ForceDestroy.ValueBool()
	st, err := pool.Load(ctx, c, app)
	if errors.Is(err, fly.ErrNotFound) {
		return // already gone
	}
	if err != nil {
		addFlyError(&resp.Diagnostics, "Delete Pool Error", "list the machines of app "+app, err)
		return
	}
	if len(st.Sessions) > 0 && !force {
		resp.Diagnostics.AddError("Pool Has Running Sessions", sessionsDetail(state.Name.ValueString(), st))
		return
	}
	// Mark every template draining so daemons stop claiming and refilling.
	templates := append(templateMachines(st), st.ExtraTemplates...)
	if t, err := markDraining(ctx, c, app, templates); err != nil {
		addFlyError(&resp.Diagnostics, "Delete Pool Error", "mark template "+t.ID+" draining", err)
		return
	}
	// A claim may have slipped in before the daemons saw the mark.
	if st, err = pool.Load(ctx, c, app); err != nil {
		addFlyError(&resp.Diagnostics, "Delete Pool Error", "list the machines of app "+app, err)
		return
	}
	if len(st.Sessions) > 0 && !force {
		unmarkDraining(ctx, c, app, templates)
		resp.Diagnostics.AddError("Pool Has Running Sessions", sessionsDetail(state.Name.ValueString(), st))
		return
	}
	machines := append([]*fly.Machine{}, st.Standbys...)
	if force {
		machines = append(machines, st.Sessions...)
	}
	machines = append(machines, templateMachines(st)...)
	machines = append(machines, st.ExtraTemplates...)
	if err := destroyMachines(ctx, c, app, machines); err != nil {
		addFlyError(&resp.Diagnostics, "Delete Pool Error", "destroy the pool's machines", err)
		return
	}
	if !state.AdoptApp.ValueBool() {
		if err := c.DeleteApp(ctx, app, true); err != nil && !errors.Is(err, fly.ErrNotFound) {
			addFlyError(&resp.Diagnostics, "Delete Pool Error", "delete app "+app, err)
			return
		}
	}
	tflog.Info(ctx, "deleted hangar pool", map[string]any{"pool": state.Name.ValueString(), "app": app})
}

func sessionsDetail(name string, st *pool.State) string {
	return fmt.Sprintf("Pool %q still has %d session machine(s) running in app %s: %s. Destroying it now would end those sessions without pushing their work. "+
		"End the sessions first (DELETE /v1/sessions/{id} on the hangar daemon), or set force_destroy = true, apply, and destroy again.",
		name, len(st.Sessions), st.App, sessionList(st.Sessions))
}

func (r *poolResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if !requireClient(r.data, &resp.Diagnostics) {
		return
	}
	name := strings.TrimSpace(req.ID)
	if err := pool.ValidateName(name); err != nil {
		resp.Diagnostics.AddError("Invalid Import ID", "Import a pool by its name, for example: terraform import hangar_pool.default default. "+err.Error()+".")
		return
	}
	app, err := findPoolApp(ctx, r.data.client, r.data.org, name)
	if errors.Is(err, errPoolNotFound) {
		resp.Diagnostics.AddError("Pool Not Found", poolNotFoundDetail(r.data.org, name, "Check the name and the provider's org.", err))
		return
	}
	if err != nil {
		addFlyError(&resp.Diagnostics, "Import Pool Error", "find the app of pool "+name, err)
		return
	}
	for p, v := range map[string]attr.Value{
		"id": types.StringValue(name), "name": types.StringValue(name), "app_name": types.StringValue(app),
		"force_destroy": types.BoolValue(false), "env": types.MapNull(types.StringType),
	} {
		resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root(p), v)...)
	}
}
