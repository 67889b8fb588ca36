package pool

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/flyemu"
	"github.com/hangarhq/hangar/internal/flyemu/flyemutest"
)

// emuPool starts an emulator whose worker image runs sleep, creates an app
// and the template of a pool spec in it.
func emuPool(t *testing.T, mode StandbyMode) (*flyemutest.Server, *fly.Client, *fly.Machine, Spec) {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatalf("need sleep(1): %v", err)
	}
	emu := flyemutest.Start(t, flyemu.Config{Images: map[string]flyemu.Image{
		"registry.fly.io/hangar-worker": {Entrypoint: []string{sleep}, Cmd: []string{"3600"}},
	}})
	c, err := fly.New(fly.Options{BaseURL: emu.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := validSpec(t)
	s.StandbyMode = mode
	if _, err := c.CreateApp(ctx, fly.CreateAppRequest{Name: s.App, OrgSlug: "personal"}); err != nil {
		t.Fatal(err)
	}
	tmpl, err := c.CreateMachine(ctx, s.App, s.CreateTemplateRequest())
	if err != nil {
		t.Fatal(err)
	}
	return emu, c, tmpl, s
}

func TestCreateStandby(t *testing.T) {
	for _, tc := range []struct {
		mode  StandbyMode
		state string
		procs int
	}{{StandbyStop, fly.StateCreated, 0}, {StandbySuspend, fly.StateSuspended, 1}} {
		t.Run(string(tc.mode), func(t *testing.T) {
			emu, c, tmpl, s := emuPool(t, tc.mode)
			ctx := context.Background()
			probed := false
			m, err := CreateStandby(ctx, c, s.App, tmpl, "ams", StandbyOptions{Probe: func(ctx context.Context, m *fly.Machine) error {
				probed = m.State == fly.StateStarted && m.PrivateIP != ""
				return nil
			}})
			if err != nil {
				t.Fatalf("CreateStandby: %v", err)
			}
			got, err := c.GetMachine(ctx, s.App, m.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.State != tc.state || got.Region != "ams" || !IsStandby(got) || SpecHashOf(got) != s.Hash() {
				t.Fatalf("standby: state %s region %s metadata %v", got.State, got.Region, got.Config.Metadata)
			}
			if tc.mode == StandbySuspend && !probed {
				t.Error("probe was not called on the started machine")
			}
			if n := emu.ProcessCount(); n != tc.procs {
				t.Errorf("%d processes running, want %d", n, tc.procs)
			}
		})
	}
}

func TestCreateStandbyCleansUp(t *testing.T) {
	emu, c, tmpl, s := emuPool(t, StandbySuspend)
	ctx := context.Background()
	_, err := CreateStandby(ctx, c, s.App, tmpl, "iad", StandbyOptions{Probe: func(context.Context, *fly.Machine) error {
		return errors.New("agent unhealthy")
	}})
	if err == nil {
		t.Fatal("CreateStandby succeeded with a failing probe")
	}
	st, err := Load(ctx, c, s.App)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Standbys) != 0 {
		t.Fatalf("failed standby left behind: %v", st.Standbys)
	}
	if n := emu.ProcessCount(); n != 0 {
		t.Fatalf("%d processes left", n)
	}
	// A full region: the error says so and nothing is left.
	emu.SetRegionFull("ams", true)
	_, err = CreateStandby(ctx, c, s.App, tmpl, "ams", StandbyOptions{})
	if !errors.Is(err, fly.ErrInsufficientCapacity) {
		t.Fatalf("want insufficient capacity, got %v", err)
	}
	if st, _ := Load(ctx, c, s.App); len(st.Standbys) != 0 {
		t.Fatalf("standbys left: %v", st.Standbys)
	}
}

func TestTopUpAndRollStale(t *testing.T) {
	_, c, tmpl, s := emuPool(t, StandbyStop)
	ctx := context.Background()
	st, err := Load(ctx, c, s.App)
	if err != nil {
		t.Fatal(err)
	}
	created, err := TopUp(ctx, c, st, "", 2, StandbyOptions{})
	if err != nil || len(created) != 2 { // 1 per region
		t.Fatalf("TopUp: %d created, %v", len(created), err)
	}
	// A session machine, which a roll must never touch.
	scfg, err := CloneConfig(tmpl, RoleSession, "s1")
	if err != nil {
		t.Fatal(err)
	}
	sess, err := c.CreateMachine(ctx, s.App, fly.CreateMachineRequest{Config: scfg, Region: "iad", SkipLaunch: true})
	if err != nil {
		t.Fatal(err)
	}

	// New spec: rewrite the template.
	s2 := s.clone()
	s2.Image = "registry.fly.io/hangar-worker:2"
	if _, err := c.UpdateMachine(ctx, s.App, tmpl.ID, fly.UpdateMachineRequest{Config: s2.TemplateConfig(), SkipLaunch: true}, ""); err != nil {
		t.Fatal(err)
	}
	if st, err = Load(ctx, c, s.App); err != nil {
		t.Fatal(err)
	}
	if len(st.Stale("")) != 2 {
		t.Fatalf("want 2 stale standbys, got %d", len(st.Stale("")))
	}
	// A standby leased by someone else (a daemon claiming it) is skipped.
	held := st.StandbysIn("", "ams")[0]
	lease, err := c.AcquireLease(ctx, s.App, held.ID, 30*time.Second, "test claim")
	if err != nil {
		t.Fatal(err)
	}
	res, err := RollStale(ctx, c, st, "", 2, StandbyOptions{})
	if err != nil || res.Replaced != 1 || res.Skipped != 1 {
		t.Fatalf("RollStale = %+v, %v", res, err)
	}
	if err := c.ReleaseLease(ctx, s.App, held.ID, lease.Nonce()); err != nil {
		t.Fatal(err)
	}
	if st, err = Load(ctx, c, s.App); err != nil {
		t.Fatal(err)
	}
	if res, err = RollStale(ctx, c, st, "", 2, StandbyOptions{}); err != nil || res.Replaced != 1 {
		t.Fatalf("second RollStale = %+v, %v", res, err)
	}
	if st, err = Load(ctx, c, s.App); err != nil {
		t.Fatal(err)
	}
	if len(st.Stale("")) != 0 || len(st.StandbysIn("", "iad")) != 1 || len(st.StandbysIn("", "ams")) != 1 {
		t.Fatalf("after roll: stale %d, standbys %v", len(st.Stale("")), st.Standbys)
	}
	if len(st.Sessions) != 1 || st.Sessions[0].ID != sess.ID || SpecHashOf(st.Sessions[0]) != s.Hash() {
		t.Fatalf("session machine was touched: %v", st.Sessions)
	}
	if TopUpPlan(st, "") != nil && len(TopUpPlan(st, "")) != 0 {
		t.Fatalf("top-up wanted after the roll: %v", TopUpPlan(st, ""))
	}
}
