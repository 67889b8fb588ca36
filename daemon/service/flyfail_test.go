package service_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/pool"
)

// TestTemplateHostUnreachable: while the host of the pool's template is
// unreachable (Fly sends only incomplete_config), the pool stays, claims use
// standbys, and /v1/pools counts standbys on an unreachable host; once the
// hosts are back, everything converges.
func TestTemplateHostUnreachable(t *testing.T) {
	e := newEnv(t, 3, 6)
	d := e.start(t, "")
	tn := newAPI(t, d.URL, "").createTenant("hosts", nil)
	u := newAPI(t, d.URL, tn.APIKey)
	if err := e.emu.SetHostReachable(testApp, e.template.ID, false); err != nil {
		t.Fatal(err)
	}
	if err := e.emu.SetHostReachable(testApp, e.standbys[0], false); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := d.Pools.Refresh(ctx); err != nil {
		t.Fatalf("refresh pools with the template's host unreachable: %v", err)
	}
	var pools []struct {
		Name    string `json:"name"`
		Standby struct {
			Total       int `json:"total"`
			Unreachable int `json:"unreachable"`
		} `json:"standby"`
	}
	u.json("GET", "/v1/pools", nil, http.StatusOK, &pools)
	if len(pools) != 1 || pools[0].Name != testPool || pools[0].Standby.Unreachable != 1 {
		t.Fatalf("pools while a host is unreachable: %+v", pools)
	}
	var s session
	u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &s)
	got := u.waitState(s.ID, isState("ready", "failed", "ended"))
	if got.State != "ready" {
		t.Fatalf("session while the template's host is unreachable: %s (%s)", got.State, got.Reason)
	}
	if got.MachineID == e.standbys[0] {
		t.Fatal("claimed the standby whose host is unreachable")
	}
	// The session's own host goes away: the session is not lost, and its
	// reason says what is wrong until the host is back.
	if err := e.emu.SetHostReachable(testApp, got.MachineID, false); err != nil {
		t.Fatal(err)
	}
	if cut := u.waitState(s.ID, func(s session) bool { return s.Reason != "" || s.State != "ready" }); cut.State != "ready" || !strings.Contains(cut.Reason, "Fly cannot reach the host") {
		t.Fatalf("session while its host is unreachable: %s (%q)", cut.State, cut.Reason)
	}
	if err := e.emu.SetHostReachable(testApp, got.MachineID, true); err != nil {
		t.Fatal(err)
	}
	if back := u.waitState(s.ID, func(s session) bool { return s.Reason == "" || s.State != "ready" }); back.State != "ready" {
		t.Fatalf("session after its host came back: %s (%q)", back.State, back.Reason)
	}
	for _, id := range []string{e.template.ID, e.standbys[0]} {
		if err := e.emu.SetHostReachable(testApp, id, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Pools.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	pools = nil // unreachable is omitted when 0: decode afresh
	u.json("GET", "/v1/pools", nil, http.StatusOK, &pools)
	if len(pools) != 1 || pools[0].Standby.Unreachable != 0 {
		t.Fatalf("pools after the hosts came back: %+v", pools)
	}
	var s2 session
	u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &s2)
	if got := u.waitState(s2.ID, isState("ready", "failed", "ended")); got.State != "ready" {
		t.Fatalf("session after the hosts came back: %s (%s)", got.State, got.Reason)
	}
	for _, id := range []string{s.ID, s2.ID} {
		u.json("DELETE", "/v1/sessions/"+id, nil, http.StatusAccepted, nil)
		if got := u.waitState(id, isState("ended", "failed")); got.State != "ended" {
			t.Errorf("end %s: %s (%s)", id, got.State, got.Reason)
		}
	}
}

// TestLostSuspendSnapshot: Fly lost the snapshot of a suspended standby, so
// its resume is a cold boot (a new agent process); the claim still reaches
// ready, on that machine.
func TestLostSuspendSnapshot(t *testing.T) {
	e := newEnvMode(t, 1, 2, pool.StandbySuspend)
	sb := e.standbys[0]
	pid := e.emu.PIDs()[sb]
	if err := e.emu.LoseSnapshot(testApp, sb); err != nil {
		t.Fatal(err)
	}
	d := e.start(t, "")
	tn := newAPI(t, d.URL, "").createTenant("cold", nil)
	u := newAPI(t, d.URL, tn.APIKey)
	var s session
	start := time.Now()
	u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &s)
	got := u.waitState(s.ID, isState("ready", "failed", "ended"))
	if got.State != "ready" || got.MachineID != sb {
		t.Fatalf("session on a standby whose snapshot was lost: %s on %s (%s), want ready on %s", got.State, got.MachineID, got.Reason, sb)
	}
	if now := e.emu.PIDs()[sb]; now == pid || now == 0 {
		t.Fatalf("agent pid %d after the resume, was %d: not a cold boot", now, pid)
	}
	t.Logf("ready after a cold boot in %v", time.Since(start).Round(time.Millisecond))
	u.json("DELETE", "/v1/sessions/"+s.ID, nil, http.StatusAccepted, nil)
	if got := u.waitState(s.ID, isState("ended", "failed")); got.State != "ended" {
		t.Errorf("end: %s (%s)", got.State, got.Reason)
	}
}

// TestMigrationDuringSession: Fly migrates a session's machine (stops it
// with its stop_config — SIGTERM, 30 s — and starts it on another host). The
// agent pushes a last checkpoint within the kill timeout and exits; the
// session ends, failed with a reason saying where the work is.
func TestMigrationDuringSession(t *testing.T) {
	e := newEnv(t, 1, 3)
	d := e.start(t, "")
	tn := newAPI(t, d.URL, "").createTenant("moved", nil)
	u := newAPI(t, d.URL, tn.APIKey)
	git := e.git(t)
	repo := git.CreateRepo(t, "mig", map[string]string{"README.md": "hello\n"})
	var s session
	u.json("POST", "/v1/sessions", map[string]any{
		"pool": testPool, "repo": repo, "command": []string{"sh", "-c", "echo unsaved > wip.txt; exec sleep 600"},
		"credentials": map[string]string{"git_token": git.Token},
	}, http.StatusAccepted, &s)
	s = u.waitState(s.ID, isState("ready", "failed", "ended"))
	if s.State != "ready" {
		t.Fatalf("session: %s (%s)", s.State, s.Reason)
	}
	m, ok := e.emu.Machine(testApp, s.MachineID)
	if !ok || m.Config.StopConfig == nil || m.Config.StopConfig.Signal != "SIGTERM" || m.Config.StopConfig.Timeout.Duration != pool.StopTimeout {
		t.Fatalf("session machine's stop_config: %+v", m.Config.StopConfig)
	}
	waitCond(t, "wip.txt written", func() bool {
		_, err := os.Stat(filepath.Join(e.emu.MachineDir(testApp, s.MachineID), "workspace", "wip.txt"))
		return err == nil
	})
	if err := e.emu.Migrate(testApp, s.MachineID); err != nil {
		t.Fatal(err)
	}
	got := u.waitState(s.ID, isState("failed", "ended"))
	if !strings.Contains(got.Reason, "restarted by Fly") || !strings.Contains(got.Reason, "refs/hangar/checkpoints/"+s.ID) {
		t.Errorf("session after a migration: %s (%s)", got.State, got.Reason)
	}
	if content, ok := git.ReadFile(t, "mig", "refs/hangar/checkpoints/"+s.ID, "wip.txt"); !ok || content != "unsaved\n" {
		t.Errorf("work in progress not pushed on the migration's stop: %q %v", content, ok)
	}
}

// TestStartRefused: Fly refuses to start claimed standbys — stuck in
// "created" (412), or no room on their host (insufficient capacity). The
// session goes back in line instead of failing: refused standbys are
// destroyed, and after two refusals the claim clones the template; with
// every region full it waits in line until there is room.
func TestStartRefused(t *testing.T) {
	t.Run("stuck in created", func(t *testing.T) {
		e := newEnv(t, 3, 6)
		for _, id := range e.standbys {
			if err := e.emu.SetStartable(testApp, id, false); err != nil {
				t.Fatal(err)
			}
		}
		d := e.start(t, "")
		u := newAPI(t, d.URL, newAPI(t, d.URL, "").createTenant("stuck", nil).APIKey)
		var s session
		u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &s)
		got := u.waitState(s.ID, isState("ready", "failed", "ended"))
		if got.State != "ready" {
			t.Fatalf("session with every standby stuck in created: %s (%s)", got.State, got.Reason)
		}
		refused := 0
		for _, id := range e.standbys {
			if id == got.MachineID {
				t.Fatalf("session on stuck standby %s", id)
			}
			if m, ok := e.emu.Machine(testApp, id); !ok || m.State == "destroyed" || m.State == "destroying" {
				refused++
				assertMachineGone(t, e, id)
			}
		}
		if refused != 2 {
			t.Errorf("%d stuck standbys destroyed, want 2 (then a clone)", refused)
		}
		u.json("DELETE", "/v1/sessions/"+s.ID, nil, http.StatusAccepted, nil)
		if end := u.waitState(s.ID, isState("ended", "failed")); end.State != "ended" {
			t.Errorf("end: %s (%s)", end.State, end.Reason)
		}
		assertMachineGone(t, e, got.MachineID)
	})
	t.Run("no capacity on start", func(t *testing.T) {
		e := newEnv(t, 1, 3)
		d := e.start(t, "")
		u := newAPI(t, d.URL, newAPI(t, d.URL, "").createTenant("full", nil).APIKey)
		e.emu.SetRegionFull(region, true)
		var s session
		u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &s)
		// The standby is refused and destroyed; a clone finds no room
		// either: the session waits in line.
		waitCond(t, "the refused standby destroyed", func() bool {
			m, ok := e.emu.Machine(testApp, e.standbys[0])
			return !ok || m.State == "destroying" || m.State == "destroyed"
		})
		assertMachineGone(t, e, e.standbys[0])
		if got := u.waitState(s.ID, isState("pending")); got.MachineID != "" || got.QueuePosition != 1 {
			t.Fatalf("session with its region full: %+v", got)
		}
		e.emu.SetRegionFull(region, false)
		got := u.waitState(s.ID, isState("ready", "failed", "ended"))
		if got.State != "ready" {
			t.Fatalf("session once the region has room: %s (%s)", got.State, got.Reason)
		}
		u.json("DELETE", "/v1/sessions/"+s.ID, nil, http.StatusAccepted, nil)
		if end := u.waitState(s.ID, isState("ended", "failed")); end.State != "ended" {
			t.Errorf("end: %s (%s)", end.State, end.Reason)
		}
	})
}
