package provider

import (
	"fmt"
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

const (
	tiAddr = "hangar_tenant_image.acme"
	dsAddr = "data.hangar_pool.test"
)

func (e *testEnv) tenantImageHCL(image string, minStandby int, extra string) string {
	return e.poolHCL(poolConfig{MinStandby: 1, Extra: `env = { LOG_LEVEL = "info" }`}) + fmt.Sprintf(`
resource "hangar_tenant_image" "acme" {
  name        = "acme-node22"
  pool        = hangar_pool.test.name
  tenant      = "acme"
  image       = %q
  min_standby = %d
%s
}

data "hangar_pool" "test" {
  name       = hangar_pool.test.name
  depends_on = [hangar_tenant_image.acme]
}
`, image, minStandby, extra)
}

// TestAccTenantImage covers a tenant image's create, data source view,
// import, an update that rolls its standbys while the pool's stay, drift,
// a capacity error and destroy.
func TestAccTenantImage(t *testing.T) {
	e := newTestEnv(t)
	const app = "hangar-default"
	var poolStandbys []string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             e.checkNothingLeft(app),
		Steps: []resource.TestStep{
			{
				Config: e.tenantImageHCL("registry.fly.io/acme-worker:2.3", 1, ""),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(tiAddr, tfjsonpath.New("id"), knownvalue.StringExact("default/acme-node22")),
					statecheck.ExpectKnownValue(tiAddr, tfjsonpath.New("app_name"), knownvalue.StringExact(app)),
					statecheck.ExpectKnownValue(tiAddr, tfjsonpath.New("guest"), knownvalue.Null()),
					statecheck.ExpectKnownValue(tiAddr, tfjsonpath.New("image_digest"), knownvalue.Null()),
					statecheck.ExpectKnownValue(dsAddr, tfjsonpath.New("standby"), knownvalue.Int64Exact(4)),
					statecheck.ExpectKnownValue(dsAddr, tfjsonpath.New("sessions"), knownvalue.Int64Exact(0)),
					statecheck.ExpectKnownValue(dsAddr, tfjsonpath.New("total"), knownvalue.Int64Exact(4)),
					statecheck.ExpectKnownValue(dsAddr, tfjsonpath.New("standby_by_state"), knownvalue.MapExact(map[string]knownvalue.Check{"created": knownvalue.Int64Exact(4)})),
					statecheck.ExpectKnownValue(dsAddr, tfjsonpath.New("standby_by_region"), knownvalue.MapExact(map[string]knownvalue.Check{
						"iad": knownvalue.Int64Exact(2), "ams": knownvalue.Int64Exact(2)})),
					statecheck.ExpectKnownValue(dsAddr, tfjsonpath.New("tenant_images"), knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact("acme-node22")})),
					statecheck.ExpectKnownValue(dsAddr, tfjsonpath.New("app_name"), knownvalue.StringExact(app)),
				},
				Check: resource.ComposeTestCheckFunc(
					e.checkStandbys(app, "", 2, fly.StateCreated),
					e.checkStandbys(app, "acme-node22", 2, fly.StateCreated),
					func(*terraform.State) error {
						st, err := e.load(app)
						if err != nil {
							return err
						}
						t := st.Templates["acme-node22"]
						if t.Spec.Tenant != "acme" || t.Machine.Config.Env["LOG_LEVEL"] != "info" || t.Machine.Config.Image != "registry.fly.io/acme-worker:2.3" {
							return fmt.Errorf("tenant image template: %+v", t.Spec)
						}
						for _, m := range st.StandbysOf("") {
							poolStandbys = append(poolStandbys, m.ID)
						}
						return nil
					},
				),
			},
			{
				ResourceName:      tiAddr,
				ImportState:       true,
				ImportStateId:     "default/acme-node22",
				ImportStateVerify: true,
			},
			{
				// New image and overrides: only the tenant image's standbys roll.
				Config: e.tenantImageHCL("registry.fly.io/acme-worker:2.4", 1,
					`guest = { cpu_kind = "performance", cpus = 1, memory_mb = 2048 }
  env   = { NODE_VERSION = "22" }`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(tiAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectResourceAction(poolAddr, plancheck.ResourceActionNoop),
				}},
				Check: resource.ComposeTestCheckFunc(
					e.checkStandbys(app, "acme-node22", 2, fly.StateCreated),
					func(*terraform.State) error {
						st, err := e.load(app)
						if err != nil {
							return err
						}
						for _, m := range st.StandbysOf("acme-node22") {
							if m.Config.Guest.CPUKind != "performance" || m.Config.Env["NODE_VERSION"] != "22" || m.Config.Env["LOG_LEVEL"] != "info" {
								return fmt.Errorf("standby %s not rebuilt from the new spec: %+v %v", m.ID, m.Config.Guest, m.Config.Env)
							}
						}
						var now []string
						for _, m := range st.StandbysOf("") {
							now = append(now, m.ID)
						}
						if fmt.Sprint(now) != fmt.Sprint(poolStandbys) {
							return fmt.Errorf("pool standbys changed from %v to %v", poolStandbys, now)
						}
						return nil
					},
				),
			},
			{
				// The tenant image's template destroyed out of band: recreated.
				PreConfig: func() {
					e.destroyOutOfBand(app, func(st *pool.State) *fly.Machine { return st.Templates["acme-node22"].Machine })
				},
				Config: e.tenantImageHCL("registry.fly.io/acme-worker:2.4", 1,
					`guest = { cpu_kind = "performance", cpus = 1, memory_mb = 2048 }
  env   = { NODE_VERSION = "22" }`),
				Check: e.checkStandbys(app, "acme-node22", 2, fly.StateCreated),
			},
			{
				// 1×2 for the pool + 5×2 for the image > max_machines 10.
				Config:      e.tenantImageHCL("registry.fly.io/acme-worker:2.4", 5, ""),
				ExpectError: regexp.MustCompile(`(?s)Invalid Standby Count.*exceed\s+max_machines\s+10`),
			},
		},
	})
}

// TestAccTenantImageValidation: plan-time errors name the attribute.
func TestAccTenantImageValidation(t *testing.T) {
	e := newTestEnv(t)
	cases := []struct{ extra, want string }{
		{`guest = { cpu_kind = "shared", cpus = 1, memory_mb = 4096 }`, `(?s)guest.memory_mb.*outside`},
		{`env = { HANGAR_BROKER_PUBLIC_KEY = "x" }`, `(?s)env.*HANGAR_BROKER_PUBLIC_KEY`},
	}
	var steps []resource.TestStep
	for _, c := range cases {
		steps = append(steps, resource.TestStep{Config: e.tenantImageHCL("registry.fly.io/acme-worker:2.3", 1, c.extra), PlanOnly: true, ExpectError: regexp.MustCompile(c.want)})
	}
	steps = append(steps, resource.TestStep{
		Config: e.providerBlock() + `
resource "hangar_tenant_image" "bad" {
  name   = "Bad Name"
  pool   = "default"
  tenant = "acme"
  image  = ""
}`,
		PlanOnly:    true,
		ExpectError: regexp.MustCompile(`(?s)(Invalid Name.*Invalid Image|Invalid Image.*Invalid Name)`),
	})
	resource.Test(t, resource.TestCase{ProtoV6ProviderFactories: protoV6ProviderFactories, Steps: steps})
}
