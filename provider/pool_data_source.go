package provider

import (
	"context"
	"fmt"
	"sort"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/hangarhq/hangar/internal/pool"
)

// poolDataSource is the hangar_pool data source: a pool's live view.
type poolDataSource struct {
	data *providerData
}

var _ datasource.DataSourceWithConfigure = (*poolDataSource)(nil)

// NewPoolDataSource returns the hangar_pool data source.
func NewPoolDataSource() datasource.DataSource { return &poolDataSource{} }

type poolDataModel struct {
	Name              types.String `tfsdk:"name"`
	AppName           types.String `tfsdk:"app_name"`
	TemplateMachineID types.String `tfsdk:"template_machine_id"`
	SpecHash          types.String `tfsdk:"spec_hash"`
	Regions           types.List   `tfsdk:"regions"`
	MinStandby        types.Int64  `tfsdk:"min_standby"`
	MaxMachines       types.Int64  `tfsdk:"max_machines"`
	StandbyMode       types.String `tfsdk:"standby_mode"`
	DaemonURL         types.String `tfsdk:"daemon_url"`
	Draining          types.Bool   `tfsdk:"draining"`
	TenantImages      types.List   `tfsdk:"tenant_images"`
	StandbyByState    types.Map    `tfsdk:"standby_by_state"`
	StandbyByRegion   types.Map    `tfsdk:"standby_by_region"`
	Standby           types.Int64  `tfsdk:"standby"`
	StaleStandby      types.Int64  `tfsdk:"stale_standby"`
	Sessions          types.Int64  `tfsdk:"sessions"`
	Total             types.Int64  `tfsdk:"total"`
}

func (d *poolDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_pool"
}

func (d *poolDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.data = configureData(req.ProviderData, &resp.Diagnostics)
}

func (d *poolDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	str := func(s string, computed bool) schema.StringAttribute {
		a, b := md(s)
		return schema.StringAttribute{Computed: computed, Description: a, MarkdownDescription: b}
	}
	num := func(s string) schema.Int64Attribute {
		a, b := md(s)
		return schema.Int64Attribute{Computed: true, Description: a, MarkdownDescription: b}
	}
	nameD, nameM := md("Name of the pool to read.")
	appD, appM := md("The pool's Fly app. Found from the pool name when omitted (the apps `hangar-<name>` and `<name>` first, then every app of the provider's organization).")
	regD, regM := md("The pool's regions, in order.")
	tiD, tiM := md("Names of the pool's tenant images.")
	bsD, bsM := md("Standby machines of the pool (tenant images included) by machine state: `created` for stop-mode standbys, `suspended` for suspend-mode ones; other states are transient.")
	brD, brM := md("Standby machines of the pool (tenant images included) by region.")
	drD, drM := md("True while the pool is being deleted: daemons no longer claim or refill it.")
	resp.Schema = schema.Schema{
		Description: "The live view of a hangar pool on Fly: standby machines by state and region, session machines, and totals, for dashboards and checks.",
		MarkdownDescription: "The live view of a hangar pool, read from Fly on every refresh: standby machines by state and region, session machines and totals " +
			"(tenant images included), plus the spec stored on the pool's template. Use it in checks or outputs; these counts change as the daemon claims and refills standbys.",
		Attributes: map[string]schema.Attribute{
			"name":                schema.StringAttribute{Required: true, Description: nameD, MarkdownDescription: nameM, Validators: []validator.String{nameValidator()}},
			"app_name":            schema.StringAttribute{Optional: true, Computed: true, Description: appD, MarkdownDescription: appM},
			"template_machine_id": str("ID of the pool's template machine.", true),
			"spec_hash":           str("Spec hash of the pool's template (see `hangar_pool.spec_hash`).", true),
			"regions":             schema.ListAttribute{Computed: true, ElementType: types.StringType, Description: regD, MarkdownDescription: regM},
			"min_standby":         num("Declared standbys per region for the default image."),
			"max_machines":        num("Declared upper bound on the pool's standby plus session machines."),
			"standby_mode":        str("`stop` or `suspend`.", true),
			"daemon_url":          str("URL of the hangar daemon the pool's workers dial (see `hangar_pool.daemon_url`); null when the pool has none and the daemon dials its workers.", true),
			"draining":            schema.BoolAttribute{Computed: true, Description: drD, MarkdownDescription: drM},
			"tenant_images":       schema.ListAttribute{Computed: true, ElementType: types.StringType, Description: tiD, MarkdownDescription: tiM},
			"standby_by_state":    schema.MapAttribute{Computed: true, ElementType: types.Int64Type, Description: bsD, MarkdownDescription: bsM},
			"standby_by_region":   schema.MapAttribute{Computed: true, ElementType: types.Int64Type, Description: brD, MarkdownDescription: brM},
			"standby":             num("Standby machines in total (all states, tenant images included)."),
			"stale_standby":       num("Standby machines built from an older spec, waiting to be replaced."),
			"sessions":            num("Session machines (claimed by a session), tenant images included."),
			"total":               num("Standby plus session machines: what `max_machines` bounds."),
		},
	}
}

func (d *poolDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m poolDataModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() || !requireClient(d.data, &resp.Diagnostics) {
		return
	}
	name := m.Name.ValueString()
	st, ok := loadNamedPool(ctx, d.data, name, m.AppName.ValueString(), path.Root("name"), "Check the name, or set app_name.", "Read Pool Error", &resp.Diagnostics)
	if !ok {
		return
	}
	app := st.App
	t := st.Default()
	if t == nil || t.Spec.Pool != name {
		resp.Diagnostics.AddAttributeError(path.Root("name"), "Pool Not Found", fmt.Sprintf("App %s holds no template machine of pool %q.", app, name))
		return
	}
	m.AppName = types.StringValue(app)
	m.TemplateMachineID = types.StringValue(t.Machine.ID)
	m.SpecHash = types.StringValue(pool.SpecHashOf(t.Machine))
	m.Regions = regionsValue(t.Spec.Regions)
	m.MinStandby = types.Int64Value(int64(t.Spec.MinStandby))
	m.MaxMachines = types.Int64Value(int64(t.Spec.MaxMachines))
	m.StandbyMode = types.StringValue(string(t.Spec.StandbyMode))
	m.DaemonURL = optionalString(t.Spec.DaemonURL)
	m.Draining = types.BoolValue(t.Spec.Draining)
	var tis []string
	stale := 0
	for ti := range st.Templates {
		stale += len(st.Stale(ti))
		if ti != "" {
			tis = append(tis, ti)
		}
	}
	sort.Strings(tis)
	m.TenantImages = regionsValue(tis)
	counts := st.Count(nil)
	m.StandbyByState = countMap(counts.Standby)
	m.StandbyByRegion = countMap(counts.StandbyByRegion)
	m.Standby = types.Int64Value(int64(len(st.Standbys)))
	m.StaleStandby = types.Int64Value(int64(stale))
	m.Sessions = types.Int64Value(int64(counts.Sessions))
	m.Total = types.Int64Value(int64(counts.Total))
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func countMap(c map[string]int) types.Map {
	vals := make(map[string]attr.Value, len(c))
	for k, v := range c {
		vals[k] = types.Int64Value(int64(v))
	}
	return types.MapValueMust(types.Int64Type, vals)
}
