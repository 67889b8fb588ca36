package provider

import (
	"fmt"
	"os"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
)

// daemonURLHCL is a pool on its own network with the given daemon_url line
// ("" leaves the attribute out), a tenant image and the pool data source.
func (e *testEnv) daemonURLHCL(daemonURL string) string {
	line := ""
	if daemonURL != "" {
		line = fmt.Sprintf("daemon_url = %q", daemonURL)
	}
	return e.poolHCL(poolConfig{MinStandby: 1, Extra: `network = "hangar-default"
  ` + line}) + `
resource "hangar_tenant_image" "acme" {
  name        = "acme-node22"
  pool        = hangar_pool.test.name
  tenant      = "acme"
  image       = "registry.fly.io/acme-worker:2.3"
  min_standby = 1
}

data "hangar_pool" "test" {
  name       = hangar_pool.test.name
  depends_on = [hangar_tenant_image.acme]
}
`
}

// checkDaemonURL verifies that every template of app (the pool's and its
// tenant images') carries want in its metadata and env, and every standby
// in its env.
func (e *testEnv) checkDaemonURL(app, want string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		st, err := e.load(app)
		if err != nil {
			return err
		}
		if len(st.Templates) != 2 {
			return fmt.Errorf("app %s has %d templates, want the pool's and the tenant image's", app, len(st.Templates))
		}
		for ti, t := range st.Templates {
			md, env := t.Machine.Config.Metadata[pool.KeyDaemonURL], t.Machine.Config.Env[pool.EnvDaemonURL]
			if md != want || env != want || t.Spec.DaemonURL != want {
				return fmt.Errorf("template of %q: metadata %s=%q, env %s=%q, want %q", ti, pool.KeyDaemonURL, md, pool.EnvDaemonURL, env, want)
			}
		}
		if len(st.Standbys) != 4 {
			return fmt.Errorf("app %s has %d standbys, want 4", app, len(st.Standbys))
		}
		for _, m := range st.Standbys {
			if got := m.Config.Env[pool.EnvDaemonURL]; got != want {
				return fmt.Errorf("standby %s (%q): env %s=%q, want %q", m.ID, pool.TenantImageOf(m), pool.EnvDaemonURL, got, want)
			}
		}
		return nil
	}
}

// setenv sets an environment variable for the provider, which runs in the
// test process, until the test ends.
func setenv(t *testing.T, k, v string) {
	t.Helper()
	t.Setenv(k, v)
}

// TestAccPoolDaemonURL: daemon_url reaches the templates and the standbys
// of the pool and its tenant image; import and the data source read it back;
// changing it rolls every standby; without the attribute it comes from
// HANGAR_DAEMON_URL, else stays as the pool has it.
func TestAccPoolDaemonURL(t *testing.T) {
	e := newTestEnv(t)
	const app = "hangar-default"
	var firstHash string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             e.checkNothingLeft(app),
		Steps: []resource.TestStep{
			{
				Config: e.daemonURLHCL("https://hangar.example.com"),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(poolAddr, tfjsonpath.New("daemon_url"), knownvalue.StringExact("https://hangar.example.com")),
					statecheck.ExpectKnownValue(dsAddr, tfjsonpath.New("daemon_url"), knownvalue.StringExact("https://hangar.example.com")),
				},
				Check: resource.ComposeTestCheckFunc(
					e.specHashIs(app, &firstHash),
					e.checkDaemonURL(app, "https://hangar.example.com"),
				),
				ConfigPlanChecks: resource.ConfigPlanChecks{PostApplyPostRefresh: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}},
			},
			{
				ResourceName:                         poolAddr,
				ImportState:                          true,
				ImportStateId:                        "default",
				ImportStateVerify:                    true,
				ImportStateVerifyIdentifierAttribute: "name",
			},
			{
				// A new URL rolls the standbys of the pool and of the tenant image.
				Config: e.daemonURLHCL("https://hangar2.example.com:8443"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(poolAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(poolAddr, tfjsonpath.New("daemon_url"), knownvalue.StringExact("https://hangar2.example.com:8443")),
				}},
				Check: resource.ComposeTestCheckFunc(
					differs(&firstHash, app, e),
					e.specHashIs(app, nil),
					e.checkStandbys(app, "", 2, fly.StateCreated),
					e.checkStandbys(app, "acme-node22", 2, fly.StateCreated),
					e.checkDaemonURL(app, "https://hangar2.example.com:8443"),
				),
			},
			{
				// Left out of the configuration: HANGAR_DAEMON_URL.
				PreConfig: func() { setenv(t, EnvDaemonURL, "http://10.0.0.5:8080") },
				Config:    e.daemonURLHCL(""),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(poolAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(poolAddr, tfjsonpath.New("daemon_url"), knownvalue.StringExact("http://10.0.0.5:8080")),
				}},
				Check: e.checkDaemonURL(app, "http://10.0.0.5:8080"),
			},
			{
				// Neither set: the pool keeps the URL it has.
				PreConfig: func() { os.Unsetenv(EnvDaemonURL) },
				Config:    e.daemonURLHCL(""),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectEmptyPlan(),
				}},
				Check: e.checkDaemonURL(app, "http://10.0.0.5:8080"),
			},
		},
	})
}

// TestAccPoolDaemonURLValidation: a bad daemon_url, a bad HANGAR_DAEMON_URL
// and a network without either fail at plan time on daemon_url.
func TestAccPoolDaemonURLValidation(t *testing.T) {
	e := newTestEnv(t)
	withNetwork := func(extra string) string {
		return e.poolHCL(poolConfig{MinStandby: 1, Extra: "network = \"hangar-default\"\n  " + extra})
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:      withNetwork(`daemon_url = "https://hangar.example.com/"`),
				PlanOnly:    true,
				ExpectError: attrError("Invalid Daemon URL", "hangar_pool", "test", "daemon_url", `daemon_url:\s+"https://hangar.example.com/"\s+has\s+a\s+path`),
			},
			{
				// Not in the configuration: Terraform shows the resource
				// block, the detail names the attribute and the way out.
				Config:      withNetwork(""),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Error: Invalid Daemon URL.*daemon_url:\s+network\s+"hangar-default"\s+isolates\s+the\s+workers.*Set\s+daemon_url\s+\(or\s+HANGAR_DAEMON_URL\)`),
			},
			{
				PreConfig:   func() { setenv(t, EnvDaemonURL, "hangar.example.com") },
				Config:      withNetwork(""),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Error: Invalid Daemon URL.*HANGAR_DAEMON_URL,\s+which\s+daemon_url\s+defaults\s+to,\s+is\s+not\s+a\s+daemon\s+URL`),
			},
		},
	})
	if list, err := e.client.ListApps(e.ctx(), testOrg); err != nil || len(list) != 0 {
		t.Fatalf("plan-time failures created apps: %v %v", list, err)
	}
}
