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

const poolAddr = "hangar_pool.test"

// specHashIs checks the spec_hash in state against the live template and
// returns it through got.
func (e *testEnv) specHashIs(app string, got *string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		rs := s.RootModule().Resources[poolAddr]
		if rs == nil {
			return fmt.Errorf("%s not in state", poolAddr)
		}
		st, err := e.load(app)
		if err != nil {
			return err
		}
		t := st.Default()
		if t == nil {
			return fmt.Errorf("no template in %s", app)
		}
		if rs.Primary.Attributes["spec_hash"] != pool.SpecHashOf(t.Machine) {
			return fmt.Errorf("state spec_hash %s, template %s", rs.Primary.Attributes["spec_hash"], pool.SpecHashOf(t.Machine))
		}
		if rs.Primary.Attributes["template_machine_id"] != t.Machine.ID {
			return fmt.Errorf("state template_machine_id %s, live template %s", rs.Primary.Attributes["template_machine_id"], t.Machine.ID)
		}
		if got != nil {
			*got = pool.SpecHashOf(t.Machine)
		}
		return nil
	}
}

func differs(old *string, app string, e *testEnv) resource.TestCheckFunc {
	return func(*terraform.State) error {
		st, err := e.load(app)
		if err != nil {
			return err
		}
		if h := pool.SpecHashOf(st.Default().Machine); h == *old {
			return fmt.Errorf("spec hash did not change (%s)", h)
		}
		return nil
	}
}

// TestAccPool covers create, the empty plan after apply, import, an
// in-place update that rolls the standbys, suspend mode, a replacing change
// and a destroy that leaves nothing behind.
func TestAccPool(t *testing.T) {
	e := newTestEnv(t)
	var firstHash string
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             e.checkNothingLeft("hangar-default", "hangar-other"),
		Steps: []resource.TestStep{
			{
				Config: e.poolHCL(poolConfig{MinStandby: 1}),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(poolAddr, tfjsonpath.New("id"), knownvalue.StringExact("default")),
					statecheck.ExpectKnownValue(poolAddr, tfjsonpath.New("org"), knownvalue.StringExact(testOrg)),
					statecheck.ExpectKnownValue(poolAddr, tfjsonpath.New("agent_port"), knownvalue.Int64Exact(8080)),
					statecheck.ExpectKnownValue(poolAddr, tfjsonpath.New("adopt_app"), knownvalue.Bool(false)),
					statecheck.ExpectKnownValue(poolAddr, tfjsonpath.New("template_machine_id"), knownvalue.NotNull()),
					statecheck.ExpectKnownValue(poolAddr, tfjsonpath.New("spec_hash"), knownvalue.StringRegexp(regexp.MustCompile(`^[0-9a-f]{16}$`))),
				},
				Check: resource.ComposeTestCheckFunc(
					e.specHashIs("hangar-default", &firstHash),
					e.checkStandbys("hangar-default", "", 2, fly.StateCreated),
				),
				ConfigPlanChecks: resource.ConfigPlanChecks{PostApplyPostRefresh: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}},
			},
			{
				// Same config again: nothing to do.
				Config:           e.poolHCL(poolConfig{MinStandby: 1}),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}},
			},
			{
				ResourceName:                         poolAddr,
				ImportState:                          true,
				ImportStateId:                        "default",
				ImportStateVerify:                    true,
				ImportStateVerifyIdentifierAttribute: "name",
			},
			{
				// In place: new image, more standbys; the stale ones roll.
				Config: e.poolHCL(poolConfig{MinStandby: 2, Image: testImage2, Extra: `env = { LOG_LEVEL = "debug" }`}),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(poolAddr, plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeTestCheckFunc(
					differs(&firstHash, "hangar-default", e),
					e.specHashIs("hangar-default", nil),
					e.checkStandbys("hangar-default", "", 4, fly.StateCreated),
				),
			},
			{
				// Suspend mode: standbys are booted once, then suspended.
				Config: e.poolHCL(poolConfig{MinStandby: 1, Image: testImage2, Mode: "suspend", Extra: `env = { LOG_LEVEL = "debug" }`}),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(poolAddr, plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeTestCheckFunc(
					e.specHashIs("hangar-default", nil),
					e.checkStandbys("hangar-default", "", 2, fly.StateSuspended),
				),
			},
			{
				// A new app replaces the pool.
				Config: e.poolHCL(poolConfig{MinStandby: 1, App: "hangar-other"}),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(poolAddr, plancheck.ResourceActionDestroyBeforeCreate),
				}},
				Check: resource.ComposeTestCheckFunc(
					e.checkStandbys("hangar-other", "", 2, fly.StateCreated),
					func(*terraform.State) error {
						if _, err := e.client.GetApp(e.ctx(), "hangar-default"); err == nil {
							return fmt.Errorf("the replaced pool's app hangar-default still exists")
						}
						return nil
					},
				),
			},
		},
	})
}

// TestAccPoolDrift destroys a standby, then the template, then the whole
// app behind Terraform's back; each next apply repairs the pool.
func TestAccPoolDrift(t *testing.T) {
	e := newTestEnv(t)
	cfg := e.poolHCL(poolConfig{MinStandby: 1})
	const app = "hangar-default"
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             e.checkNothingLeft(app),
		Steps: []resource.TestStep{
			{Config: cfg, Check: e.checkStandbys(app, "", 2, fly.StateCreated)},
			{
				PreConfig: func() {
					e.destroyOutOfBand(app, func(st *pool.State) *fly.Machine { return st.StandbysIn("", "ams")[0] })
				},
				Config: cfg,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(poolAddr, plancheck.ResourceActionUpdate),
				}},
				Check: e.checkStandbys(app, "", 2, fly.StateCreated),
			},
			{
				PreConfig: func() {
					e.destroyOutOfBand(app, func(st *pool.State) *fly.Machine { return st.Default().Machine })
				},
				Config: cfg,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(poolAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectUnknownValue(poolAddr, tfjsonpath.New("template_machine_id")),
				}},
				Check: resource.ComposeTestCheckFunc(
					e.specHashIs(app, nil),
					e.checkStandbys(app, "", 2, fly.StateCreated),
				),
			},
			{
				PreConfig: func() {
					if err := e.client.DeleteApp(e.ctx(), app, true); err != nil {
						t.Fatal(err)
					}
				},
				Config: cfg,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(poolAddr, plancheck.ResourceActionCreate),
				}},
				Check: e.checkStandbys(app, "", 2, fly.StateCreated),
			},
		},
	})
}

// TestAccPoolForceDestroy: with a session machine running, destroy refuses
// unless force_destroy is set; forced, it leaves nothing behind.
func TestAccPoolForceDestroy(t *testing.T) {
	e := newTestEnv(t)
	const app = "hangar-default"
	var sessionID string
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             e.checkNothingLeft(app),
		Steps: []resource.TestStep{
			{
				Config: e.poolHCL(poolConfig{MinStandby: 1, Regions: []string{"iad"}}),
				Check: func(*terraform.State) error {
					sessionID = e.startSession(app)
					return nil
				},
			},
			{
				Config:      e.poolHCL(poolConfig{MinStandby: 1, Regions: []string{"iad"}}),
				Destroy:     true,
				ExpectError: regexp.MustCompile(`(?s)Pool Has Running Sessions.*session machine`),
			},
			{
				// The refused destroy left the pool whole, not draining.
				Config: e.poolHCL(poolConfig{MinStandby: 1, Regions: []string{"iad"}, ForceDestroy: true}),
				Check: func(*terraform.State) error {
					st, err := e.load(app)
					if err != nil {
						return err
					}
					if st.Default() == nil || st.Default().Spec.Draining {
						return fmt.Errorf("template missing or still draining after a refused destroy")
					}
					if len(st.Sessions) != 1 || st.Sessions[0].ID != sessionID {
						return fmt.Errorf("session machine %s was touched: sessions %v", sessionID, st.Sessions)
					}
					return e.checkStandbys(app, "", 1, fly.StateCreated)(nil)
				},
			},
		},
	})
}

// TestAccPoolValidation: bad input fails at plan time, naming the attribute.
func TestAccPoolValidation(t *testing.T) {
	e := newTestEnv(t)
	base := poolConfig{MinStandby: 1}
	guest := func(g string) string {
		return replace(e.poolHCL(base), `guest             = { cpu_kind = "shared", cpus = 1, memory_mb = 1024 }`, `guest             = `+g)
	}
	guestErr := func(detail string) *regexp.Regexp {
		return attrError("Invalid Guest Size", "hangar_pool", "test", "guest", detail)
	}
	twoProblems := guest(`{ cpu_kind = "shared", cpus = 3, memory_mb = 100 }`)
	cases := []struct {
		name string
		cfg  string
		want *regexp.Regexp
	}{
		// Guest problems are attached to the guest attribute, each reported.
		{"guest memory", guest(`{ cpu_kind = "shared", cpus = 1, memory_mb = 1000 }`), guestErr(`guest\.memory_mb:\s+1000\s+MB\s+is\s+not\s+a\s+positive\s+multiple\s+of\s+256`)},
		{"guest cpus", guest(`{ cpu_kind = "shared", cpus = 3, memory_mb = 1024 }`), guestErr(`guest\.cpus:\s+3\s+CPUs\s+is\s+not\s+a\s+Fly\s+shared\s+size`)},
		{"guest memory range", guest(`{ cpu_kind = "shared", cpus = 1, memory_mb = 4096 }`), guestErr(`guest\.memory_mb:\s+4096\s+MB\s+is\s+outside\s+Fly's\s+range`)},
		{"guest cpu kind", guest(`{ cpu_kind = "dedicated", cpus = 1, memory_mb = 1024 }`), guestErr(`guest\.cpu_kind:\s+"dedicated"\s+is\s+not\s+a\s+Fly\s+CPU\s+kind`)},
		{"guest two problems: cpus", twoProblems, guestErr(`guest\.cpus:\s+3\s+CPUs`)},
		{"guest two problems: memory", twoProblems, guestErr(`guest\.memory_mb:\s+100\s+MB\s+is\s+not\s+a\s+positive\s+multiple`)},
		{"region", e.poolHCL(poolConfig{MinStandby: 1, Regions: []string{"iad", "Amsterdam"}}), regexp.MustCompile(`(?s)regions\[1\].*Fly region`)},
		{"capacity", e.poolHCL(poolConfig{MinStandby: 6}), attrError("Invalid Standby Count", "hangar_pool", "test", "min_standby", `min_standby:.*exceeds\s+max_machines\s+10`)},
		{"negative min_standby", e.poolHCL(poolConfig{MinStandby: -1}), attrError("Invalid Attribute Value", "hangar_pool", "test", "min_standby", `Attribute\s+min_standby\s+value\s+must\s+be\s+at\s+least\s+0`)},
		{"empty image", replace(e.poolHCL(base), `image             = "`+testImage+`"`, `image = ""`), attrError("Invalid Image", "hangar_pool", "test", "image", `image:\s+an\s+image\s+reference\s+is\s+required`)},
		{"duration", replace(e.poolHCL(base), `idle_timeout      = "15m"`, `idle_timeout = "5 parsecs"`), regexp.MustCompile(`(?s)idle_timeout.*"5 parsecs"\s+is\s+not\s+a\s+duration`)},
		{"mode", e.poolHCL(poolConfig{MinStandby: 1, Mode: "hibernate"}), regexp.MustCompile(`(?s)standby_mode.*hibernate`)},
		{"broker key", replace(e.poolHCL(base), e.key, "bm90IGEga2V5"), regexp.MustCompile(`(?s)broker_public_key.*ed25519`)},
		{"missing broker key", replace(e.poolHCL(base), `broker_public_key = "`+e.key+`"`, ``), regexp.MustCompile(`(?s)broker_public_key.*HANGAR_BROKER_PUBLIC_KEY`)},
		{"reserved env", e.poolHCL(poolConfig{MinStandby: 1, Extra: `env = { HANGAR_AGENT_PORT = "1" }`}), regexp.MustCompile(`(?s)env.*HANGAR_AGENT_PORT\s+is\s+set\s+by\s+hangar`)},
		// Fly suspends only machines with at most 2 GB: refused at plan time, on guest.
		{"suspend 4 GB", replace(e.poolHCL(poolConfig{MinStandby: 1, Mode: "suspend"}), `guest             = { cpu_kind = "shared", cpus = 1, memory_mb = 1024 }`, `guest = { cpu_kind = "shared", cpus = 2, memory_mb = 4096 }`),
			attrError("Guest Too Large to Suspend", "hangar_pool", "test", "guest", `guest\.memory_mb:\s+4096\s+MB\s+cannot\s+be\s+suspended`)},
	}
	steps := make([]resource.TestStep, 0, len(cases))
	for _, c := range cases {
		steps = append(steps, resource.TestStep{Config: c.cfg, PlanOnly: true, ExpectError: c.want})
	}
	resource.ParallelTest(t, resource.TestCase{ProtoV6ProviderFactories: protoV6ProviderFactories, Steps: steps})
	// Nothing was created.
	if list, err := e.client.ListApps(e.ctx(), testOrg); err != nil || len(list) != 0 {
		t.Fatalf("plan-time failures created apps: %v %v", list, err)
	}
}

func replace(s, old, new string) string {
	if !regexp.MustCompile(regexp.QuoteMeta(old)).MatchString(s) {
		panic("test config does not contain " + old)
	}
	return regexp.MustCompile(regexp.QuoteMeta(old)).ReplaceAllLiteralString(s, new)
}
