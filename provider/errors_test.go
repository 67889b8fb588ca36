package provider

import (
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/flyemu"
	"github.com/hangarhq/hangar/internal/flyemu/flyemutest"
)

// TestAccFlyErrors: Fly's errors become diagnostics that say what to do and
// end with the original error.
func TestAccFlyErrors(t *testing.T) {
	e := newTestEnv(t)
	badToken := strings.Replace(e.poolHCL(poolConfig{MinStandby: 1}), fmt.Sprintf("fly_api_token = %q", testToken), `fly_api_token = "wrong"`, 1)
	// An app of that name exists already and is not adopted.
	if _, err := e.client.CreateApp(e.ctx(), fly.CreateAppRequest{Name: "hangar-taken", OrgSlug: testOrg}); err != nil {
		t.Fatal(err)
	}
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		Steps: []resource.TestStep{
			{Config: badToken, ExpectError: regexp.MustCompile(`(?s)Fly rejected the API token \(401\).*Original Error:.*401`)},
			{Config: e.poolHCL(poolConfig{MinStandby: 1, App: "hangar-taken"}), ExpectError: regexp.MustCompile(`(?s)App Already Exists.*adopt_app = true.*Original Error`)},
			{Config: e.poolHCL(poolConfig{MinStandby: 1, App: "hangar-missing", Extra: "adopt_app = true"}), ExpectError: regexp.MustCompile(`(?s)App Not Found.*hangar-missing`)},
		},
	})
}

// TestAccPoolAdoptApp: a pool in an existing app leaves the app (and its
// other machines) in place when destroyed.
func TestAccPoolAdoptApp(t *testing.T) {
	e := newTestEnv(t)
	const app = "hangar-default"
	if _, err := e.client.CreateApp(e.ctx(), fly.CreateAppRequest{Name: app, OrgSlug: testOrg}); err != nil {
		t.Fatal(err)
	}
	other, err := e.client.CreateMachine(e.ctx(), app, fly.CreateMachineRequest{Config: &fly.MachineConfig{Image: testImage}, SkipLaunch: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.poolHCL(poolConfig{MinStandby: 1, Extra: "adopt_app = true"})
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy: func(*terraform.State) error {
			st, err := e.load(app)
			if err != nil {
				return fmt.Errorf("adopted app is gone: %w", err)
			}
			if len(st.Templates) != 0 || len(st.Standbys) != 0 {
				return fmt.Errorf("pool machines left: %v %v", st.Templates, st.Standbys)
			}
			if _, err := e.client.GetMachine(e.ctx(), app, other.ID); err != nil {
				return fmt.Errorf("the app's own machine was touched: %w", err)
			}
			return nil
		},
		Steps: []resource.TestStep{
			{Config: cfg, Check: e.checkStandbys(app, "", 2, fly.StateCreated)},
			{ResourceName: poolAddr, ImportState: true, ImportStateId: "default", ImportStateVerify: true, ImportStateVerifyIdentifierAttribute: "name"},
		},
	})
}

// TestAccPoolFaults: with a share of Fly calls failing (429, 500, dropped
// connections), create and destroy still converge and leave nothing behind.
func TestAccPoolFaults(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	emu := flyemutest.Start(t, flyemu.Config{
		Token: testToken, Org: testOrg, FaultRate: 0.1, FaultSeed: 7,
		Images: map[string]flyemu.Image{"registry.fly.io/hangar-worker": {Entrypoint: []string{sleep}, Cmd: []string{"3600"}}},
	})
	c, err := fly.New(fly.Options{BaseURL: emu.URL, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, emu: emu, client: c, key: newKey(t)}
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             e.checkNothingLeft("hangar-default"),
		Steps: []resource.TestStep{
			{Config: e.poolHCL(poolConfig{MinStandby: 2}), Check: e.checkStandbys("hangar-default", "", 4, fly.StateCreated)},
		},
	})
}

// TestAccPoolFlyEventualConsistency: apply and destroy cycles converge while
// Fly answers 404 to reads of what was just created and 408 to a share of
// all calls, as it may.
func TestAccPoolFlyEventualConsistency(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	emu := flyemutest.Start(t, flyemu.Config{
		Token: testToken, Org: testOrg, NotFoundAfterCreate: 500 * time.Millisecond, TimeoutRate: 0.05, FaultSeed: 11,
		Images: map[string]flyemu.Image{"registry.fly.io/hangar-worker": {Entrypoint: []string{sleep}, Cmd: []string{"3600"}}},
	})
	c, err := fly.New(fly.Options{BaseURL: emu.URL, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, emu: emu, client: c, key: newKey(t)}
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6ProviderFactories,
		CheckDestroy:             e.checkNothingLeft("hangar-default"),
		Steps: []resource.TestStep{
			{Config: e.poolHCL(poolConfig{MinStandby: 2}), Check: e.checkStandbys("hangar-default", "", 4, fly.StateCreated)},
		},
	})
	if emu.FaultsInjected() == 0 {
		t.Error("no 408 injected")
	}
}
