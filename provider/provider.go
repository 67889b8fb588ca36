// Package provider is the Terraform provider for hangar (terraform-provider-hangar):
// worker pools and tenant images on Fly.io, declared as code. The pool's
// spec lives on Fly, in the metadata of a template machine (see
// internal/pool); standby machines are cloned from it.
package provider

import (
	"context"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/hangarhq/hangar/internal/fly"
)

// Environment variables the provider reads as fallbacks.
const (
	EnvFlyAPIURL          = "FLY_API_URL"
	EnvFlyAPIToken        = "FLY_API_TOKEN"
	EnvFlyOrg             = "FLY_ORG"
	EnvBrokerPublicKey    = "HANGAR_BROKER_PUBLIC_KEY"
	EnvDaemonURL          = "HANGAR_DAEMON_URL"
	defaultOrg            = "personal"
	providerTypeName      = "hangar"
	flyAPIURLDescription  = "Base URL of the Fly Machines API, without `/v1`. Defaults to the `FLY_API_URL` environment variable, else Fly's public Machines API (`https://api.machines.dev`). Point it at `hangard flyemu` (for example `http://127.0.0.1:4280`) to run against the local Fly emulator."
	flyAPITokenDescrption = "Fly API token used for every Machines API call (a deploy token scoped to the pool apps' organization is enough). Defaults to the `FLY_API_TOKEN` environment variable. Prefer the environment variable so the token stays out of configuration files; it is never written to state."
	orgDescription        = "Slug of the Fly organization new pool apps are created in. Defaults to the `FLY_ORG` environment variable, else `personal`. A pool can override it with its own `org`."
)

// hangarProvider is the provider implementation.
type hangarProvider struct {
	version string
}

var _ provider.Provider = (*hangarProvider)(nil)

// New returns a constructor for the provider at the given version (set by
// goreleaser through ldflags; "dev" for local builds, "test" in tests).
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &hangarProvider{version: version} }
}

// providerModel is the provider block.
type providerModel struct {
	FlyAPIURL   types.String `tfsdk:"fly_api_url"`
	FlyAPIToken types.String `tfsdk:"fly_api_token"`
	Org         types.String `tfsdk:"org"`
}

// providerData is what resources and data sources get from Configure.
type providerData struct {
	client *fly.Client
	org    string
}

func (p *hangarProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = providerTypeName
	resp.Version = p.version
}

func (p *hangarProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Manage hangar worker pools and tenant images on Fly.io.",
		MarkdownDescription: "The hangar provider declares hangar worker pools and tenant images on Fly.io: " +
			"a pool is a Fly app holding a *template* machine (the declared spec, stored in the machine's metadata) and warm *standby* machines cloned from it, " +
			"which the hangar daemon claims for user sessions. After `terraform apply` the standbys exist whether or not a daemon runs.",
		Attributes: map[string]schema.Attribute{
			"fly_api_url": schema.StringAttribute{
				Optional:            true,
				Description:         stripMarkdown(flyAPIURLDescription),
				MarkdownDescription: flyAPIURLDescription,
			},
			"fly_api_token": schema.StringAttribute{
				Optional:            true,
				Sensitive:           true,
				Description:         stripMarkdown(flyAPITokenDescrption),
				MarkdownDescription: flyAPITokenDescrption,
			},
			"org": schema.StringAttribute{
				Optional:            true,
				Description:         stripMarkdown(orgDescription),
				MarkdownDescription: orgDescription,
			},
		},
	}
}

func (p *hangarProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var cfg providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	// A value that depends on a resource not created yet is unknown at plan
	// time: leave the provider unconfigured; resources then plan without
	// asking Fly and Terraform configures the provider again before apply.
	if cfg.FlyAPIURL.IsUnknown() || cfg.FlyAPIToken.IsUnknown() || cfg.Org.IsUnknown() {
		tflog.Debug(ctx, "hangar provider configuration has unknown values; deferring Fly API access")
		return
	}
	url := firstNonEmpty(cfg.FlyAPIURL.ValueString(), os.Getenv(EnvFlyAPIURL), fly.DefaultBaseURL)
	token := firstNonEmpty(cfg.FlyAPIToken.ValueString(), os.Getenv(EnvFlyAPIToken))
	org := firstNonEmpty(cfg.Org.ValueString(), os.Getenv(EnvFlyOrg), defaultOrg)

	client, err := fly.New(fly.Options{
		BaseURL:   url,
		Token:     token,
		Logger:    hclog.NewNullLogger(),
		UserAgent: "terraform-provider-hangar/" + p.version,
	})
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("fly_api_url"), "Invalid Fly API URL",
			"The Fly Machines API URL must look like https://api.machines.dev or http://127.0.0.1:4280 (without /v1). "+
				"Set fly_api_url or FLY_API_URL.\n\nOriginal Error: "+err.Error())
		return
	}
	tflog.Debug(ctx, "configured hangar provider", map[string]any{"version": p.version, "fly_api_url": url, "org": org, "token_set": token != ""})
	data := &providerData{client: client, org: org}
	resp.ResourceData = data
	resp.DataSourceData = data
}

func (p *hangarProvider) Resources(_ context.Context) []func() resource.Resource {
	return []func() resource.Resource{NewPoolResource, NewTenantImageResource}
}

func (p *hangarProvider) DataSources(_ context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{NewPoolDataSource}
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// stripMarkdown turns a MarkdownDescription into the plain Description.
func stripMarkdown(s string) string {
	return strings.NewReplacer("`", "", "*", "").Replace(s)
}
