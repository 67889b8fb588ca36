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
	resource.ParallelTest(t, resource.TestCase{
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

// TestAccTenantImageValidation: plan-time errors name the attribute, one
// diagnostic per problem.
func TestAccTenantImageValidation(t *testing.T) {
	e := newTestEnv(t)
	const img = "registry.fly.io/acme-worker:2.3"
	tiErr := func(summary, attr, detail string) *regexp.Regexp {
		return attrError(summary, "hangar_tenant_image", "acme", attr, detail)
	}
	twoProblems := e.tenantImageHCL(img, 1, `guest = { cpu_kind = "performance", cpus = 3, memory_mb = 1000 }`)
	cases := []struct {
		cfg  string
		want *regexp.Regexp
	}{
		{e.tenantImageHCL(img, 1, `guest = { cpu_kind = "shared", cpus = 1, memory_mb = 4096 }`),
			tiErr("Invalid Guest Size", "guest", `guest\.memory_mb:\s+4096\s+MB\s+is\s+outside`)},
		{twoProblems, tiErr("Invalid Guest Size", "guest", `guest\.cpus:\s+3\s+CPUs\s+is\s+not\s+a\s+Fly\s+performance\s+size`)},
		{twoProblems, tiErr("Invalid Guest Size", "guest", `guest\.memory_mb:\s+1000\s+MB\s+is\s+not\s+a\s+positive\s+multiple`)},
		{e.tenantImageHCL(img, -1, ""), tiErr("Invalid Attribute Value", "min_standby", `Attribute\s+min_standby\s+value\s+must\s+be\s+at\s+least\s+0`)},
		{e.tenantImageHCL(img, 1, `env = { HANGAR_BROKER_PUBLIC_KEY = "x" }`), regexp.MustCompile(`(?s)env.*HANGAR_BROKER_PUBLIC_KEY`)},
	}
	var steps []resource.TestStep
	for _, c := range cases {
		steps = append(steps, resource.TestStep{Config: c.cfg, PlanOnly: true, ExpectError: c.want})
	}
	bad := e.providerBlock() + `
resource "hangar_tenant_image" "bad" {
  name   = "Bad Name"
  pool   = "default"
  tenant = "acme corp"
  image  = ""
}`
	for _, want := range []*regexp.Regexp{
		attrError("Invalid Name", "hangar_tenant_image", "bad", "name", `name:\s+"Bad Name"\s+is\s+not\s+a\s+valid\s+name`),
		attrError("Invalid Image", "hangar_tenant_image", "bad", "image", `image:\s+an\s+image\s+reference\s+is\s+required`),
		attrError("Invalid Tenant", "hangar_tenant_image", "bad", "tenant", `tenant:\s+"acme corp"\s+is\s+not\s+a\s+tenant\s+name`),
	} {
		steps = append(steps, resource.TestStep{Config: bad, PlanOnly: true, ExpectError: want})
	}
	resource.ParallelTest(t, resource.TestCase{ProtoV6ProviderFactories: protoV6ProviderFactories, Steps: steps})
}

// TestAccTenantImageForceDestroy: with a session machine of the tenant image
// running, destroying the tenant image refuses unless its force_destroy is
// set; forced, it destroys the template and standbys and leaves the session
// machine running.
func TestAccTenantImageForceDestroy(t *testing.T) {
	e := newTestEnv(t)
	const (
		app = "hangar-default"
		ti  = "acme-node22"
		img = "registry.fly.io/acme-worker:2.3"
	)
	var sessionID string
	// The session machine is running and untouched.
	sessionRuns := func(st *pool.State) error {
		ss := st.SessionsOf(ti)
		if len(ss) != 1 || ss[0].ID != sessionID || ss[0].State != fly.StateStarted {
			return fmt.Errorf("session machine %s of %s was touched: sessions %v", sessionID, ti, ss)
		}
		return nil
	}
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             e.checkNothingLeft(app),
		Steps: []resource.TestStep{
			{
				Config: e.tenantImageHCL(img, 1, ""),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(tiAddr, tfjsonpath.New("force_destroy"), knownvalue.Bool(false)),
				},
				Check: func(*terraform.State) error {
					sessionID = e.startSessionOf(app, ti, "sess-ti")
					return nil
				},
			},
			{
				// Removing the tenant image from the config is refused.
				Config:      e.poolHCL(poolConfig{MinStandby: 1, Extra: `env = { LOG_LEVEL = "info" }`}),
				ExpectError: regexp.MustCompile(`(?s)Tenant Image Has Running Sessions.*acme-node22.*sess-ti.*force_destroy = true`),
			},
			{
				// So is terraform destroy; the refusals left the image whole.
				Config:      e.tenantImageHCL(img, 1, ""),
				Destroy:     true,
				ExpectError: regexp.MustCompile(`(?s)Tenant Image Has Running Sessions`),
			},
			{
				Config: e.tenantImageHCL(img, 1, "force_destroy = true"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(tiAddr, plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeTestCheckFunc(
					e.checkStandbys(app, ti, 2, fly.StateCreated),
					func(*terraform.State) error {
						st, err := e.load(app)
						if err != nil {
							return err
						}
						if st.Templates[ti] == nil || st.Templates[ti].Spec.Draining {
							return fmt.Errorf("tenant image template missing or still draining after a refused destroy")
						}
						return sessionRuns(st)
					},
				),
			},
			{
				// Forced: template and standbys go, the session machine stays.
				// The pool now holds a session of a deleted tenant image, so
				// it needs its own force_destroy for the final destroy.
				Config: e.poolHCL(poolConfig{MinStandby: 1, ForceDestroy: true, Extra: `env = { LOG_LEVEL = "info" }`}),
				Check: resource.ComposeTestCheckFunc(
					e.checkStandbys(app, "", 2, fly.StateCreated),
					func(*terraform.State) error {
						st, err := e.load(app)
						if err != nil {
							return err
						}
						if st.Templates[ti] != nil || len(st.StandbysOf(ti)) != 0 {
							return fmt.Errorf("tenant image %s left template %v and standbys %v", ti, st.Templates[ti], st.StandbysOf(ti))
						}
						return sessionRuns(st)
					},
				),
			},
		},
	})
}
