package provider

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/flyemu"
	"github.com/hangarhq/hangar/internal/flyemu/flyemutest"
	"github.com/hangarhq/hangar/internal/pool"
)

func TestMain(m *testing.M) {
	// The in-process provider is served as hangarhq/hangar, the address
	// configs use; without this the harness would call it hashicorp/hangar.
	if os.Getenv("TF_ACC_PROVIDER_NAMESPACE") == "" {
		os.Setenv("TF_ACC_PROVIDER_NAMESPACE", "hangarhq")
	}
	// A CLI config that points at a missing file only makes terraform warn;
	// tests need no CLI config at all.
	if p := os.Getenv("TF_CLI_CONFIG_FILE"); p == "" || fileMissing(p) {
		os.Setenv("TF_CLI_CONFIG_FILE", "/dev/null")
	}
	// The tests pass keys and URLs explicitly; a developer's must not leak in.
	os.Unsetenv(EnvBrokerPublicKey)
	os.Unsetenv(EnvDaemonURL)
	os.Exit(m.Run())
}

func fileMissing(p string) bool {
	_, err := os.Stat(p)
	return err != nil
}

// protoV6ProviderFactories runs the provider in the test process.
var protoV6ProviderFactories = map[string]func() (tfprotov6.ProviderServer, error){
	"hangar": providerserver.NewProtocol6WithError(New("test")()),
}

const (
	testImage  = "registry.fly.io/hangar-worker:1.0.0"
	testImage2 = "registry.fly.io/hangar-worker:1.1.0"
	testToken  = "test-token"
	testOrg    = "personal"
)

// testEnv is one emulator with a client and the provider block that points at it.
type testEnv struct {
	t      *testing.T
	emu    *flyemutest.Server
	client *fly.Client
	key    string
}

// newTestEnv starts an emulator whose worker images run a harmless
// long-running command instead of the agent.
func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatalf("acceptance tests need sleep(1): %v", err)
	}
	img := flyemu.Image{Entrypoint: []string{sleep}, Cmd: []string{"3600"}}
	emu := flyemutest.Start(t, flyemu.Config{
		Token: testToken,
		Org:   testOrg,
		Images: map[string]flyemu.Image{
			"registry.fly.io/hangar-worker": img,
			"registry.fly.io/acme-worker":   img,
		},
	})
	c, err := fly.New(fly.Options{BaseURL: emu.URL, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, emu: emu, client: c, key: newKey(t)}
}

func newKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(pub)
}

// providerBlock is the provider configuration for this emulator.
func (e *testEnv) providerBlock() string {
	return fmt.Sprintf(`
provider "hangar" {
  fly_api_url   = %q
  fly_api_token = %q
  org           = %q
}
`, e.emu.URL, testToken, testOrg)
}

func (e *testEnv) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	e.t.Cleanup(cancel)
	return ctx
}

// load reads a pool's live state.
func (e *testEnv) load(app string) (*pool.State, error) {
	return pool.Load(e.ctx(), e.client, app)
}

// checkStandbys verifies the live pool: a template per tenant image, and for
// each the wanted number of standbys, all in state, all current.
func (e *testEnv) checkStandbys(app, tenantImage string, want int, state string) func(*terraform.State) error {
	return func(*terraform.State) error {
		st, err := e.load(app)
		if err != nil {
			return err
		}
		t := st.Templates[tenantImage]
		if t == nil {
			return fmt.Errorf("app %s has no template for tenant image %q", app, tenantImage)
		}
		if t.Machine.State != fly.StateCreated {
			return fmt.Errorf("template %s is %s, want created (never started)", t.Machine.ID, t.Machine.State)
		}
		sbs := st.StandbysOf(tenantImage)
		if len(sbs) != want {
			return fmt.Errorf("tenant image %q has %d standbys, want %d", tenantImage, len(sbs), want)
		}
		for _, m := range sbs {
			if m.State != state {
				return fmt.Errorf("standby %s is %s, want %s", m.ID, m.State, state)
			}
			if pool.SpecHashOf(m) != pool.SpecHashOf(t.Machine) {
				return fmt.Errorf("standby %s has spec %s, template has %s", m.ID, pool.SpecHashOf(m), pool.SpecHashOf(t.Machine))
			}
			if !m.Config.AutoDestroy || m.Config.Restart == nil || m.Config.Restart.Policy != fly.RestartNo {
				return fmt.Errorf("standby %s: auto_destroy=%v restart=%+v", m.ID, m.Config.AutoDestroy, m.Config.Restart)
			}
		}
		return nil
	}
}

// checkNothingLeft verifies that no app, machine or process is left.
func (e *testEnv) checkNothingLeft(apps ...string) func(*terraform.State) error {
	return func(*terraform.State) error {
		for _, app := range apps {
			if _, err := e.client.GetApp(e.ctx(), app); !errors.Is(err, fly.ErrNotFound) {
				return fmt.Errorf("app %s still exists (err %v)", app, err)
			}
		}
		list, err := e.client.ListApps(e.ctx(), testOrg)
		if err != nil {
			return err
		}
		if len(list) != 0 {
			return fmt.Errorf("apps left: %+v", list)
		}
		return e.checkNoProcess()
	}
}

// checkNoProcess verifies that no machine process (or process group) is alive.
func (e *testEnv) checkNoProcess() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var alive []int
		for _, pid := range e.emu.LaunchedPIDs() {
			if err := syscall.Kill(-pid, 0); err == nil || !errors.Is(err, syscall.ESRCH) {
				alive = append(alive, pid)
			}
		}
		if len(alive) == 0 && e.emu.ProcessCount() == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("machine processes still running: %v (emulator counts %d)", alive, e.emu.ProcessCount())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// destroyOutOfBand destroys a machine behind Terraform's back.
func (e *testEnv) destroyOutOfBand(app string, pick func(*pool.State) *fly.Machine) {
	e.t.Helper()
	st, err := e.load(app)
	if err != nil {
		e.t.Fatal(err)
	}
	m := pick(st)
	if m == nil {
		e.t.Fatal("no machine to destroy")
	}
	if err := e.client.DestroyMachine(e.ctx(), app, m.ID, true, ""); err != nil {
		e.t.Fatal(err)
	}
}

// startSession clones the pool's template into a running session machine,
// as the daemon would on a claim.
func (e *testEnv) startSession(app string) string {
	e.t.Helper()
	return e.startSessionOf(app, "", "sess-1")
}

// startSessionOf clones the template of a tenant image ("" = the pool's
// default image) into a running session machine with session id sid.
func (e *testEnv) startSessionOf(app, tenantImage, sid string) string {
	e.t.Helper()
	st, err := e.load(app)
	if err != nil {
		e.t.Fatal(err)
	}
	t := st.Templates[tenantImage]
	if t == nil {
		e.t.Fatalf("app %s has no template for tenant image %q", app, tenantImage)
	}
	cfg, err := pool.CloneConfig(t.Machine, pool.RoleSession, sid)
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := e.client.CreateMachine(e.ctx(), app, fly.CreateMachineRequest{Config: cfg, Region: "iad"})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.client.WaitMachine(e.ctx(), app, m.ID, fly.WaitOptions{States: []string{fly.StateStarted}, Timeout: 30 * time.Second}); err != nil {
		e.t.Fatal(err)
	}
	return m.ID
}

// poolConfig renders a hangar_pool resource.
type poolConfig struct {
	Name, App, Image, Mode, Extra string
	Regions                       []string
	MinStandby, MaxMachines       int
	ForceDestroy                  bool
}

func (e *testEnv) poolHCL(p poolConfig) string {
	if p.Name == "" {
		p.Name = "default"
	}
	if p.App == "" {
		p.App = "hangar-" + p.Name
	}
	if p.Image == "" {
		p.Image = testImage
	}
	if p.Mode == "" {
		p.Mode = "stop"
	}
	if len(p.Regions) == 0 {
		p.Regions = []string{"iad", "ams"}
	}
	if p.MaxMachines == 0 {
		p.MaxMachines = 10
	}
	return e.providerBlock() + fmt.Sprintf(`
resource "hangar_pool" "test" {
  name              = %q
  app_name          = %q
  regions           = [%s]
  image             = %q
  guest             = { cpu_kind = "shared", cpus = 1, memory_mb = 1024 }
  min_standby       = %d
  max_machines      = %d
  standby_mode      = %q
  idle_timeout      = "15m"
  session_ttl       = "4h"
  broker_public_key = %q
  force_destroy     = %v
%s
}
`, p.Name, p.App, quoteList(p.Regions), p.Image, p.MinStandby, p.MaxMachines, p.Mode, e.key, p.ForceDestroy, p.Extra)
}

// attrError matches one diagnostic with the given summary that Terraform
// attaches to attribute attr of resource typ.name: it shows the config line
// `attr = ...` (not the resource block's first line), followed by a detail
// matching detail (a regexp; Terraform wraps long details, so use \s+
// between words).
func attrError(summary, typ, name, attr, detail string) *regexp.Regexp {
	return regexp.MustCompile(`Error: ` + regexp.QuoteMeta(summary) + `\s+with ` + regexp.QuoteMeta(typ+"."+name) + `,\s+` +
		`on \S+ line \d+, in resource "` + regexp.QuoteMeta(typ) + `" "` + regexp.QuoteMeta(name) + `":\s+` +
		`\d+:\s+` + regexp.QuoteMeta(attr) + `\s+=[^\n]*\n\s*` + detail)
}

func quoteList(v []string) string {
	q := make([]string, len(v))
	for i, s := range v {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
