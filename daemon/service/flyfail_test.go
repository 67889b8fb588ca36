package service_test

import (
	"context"
	"net/http"
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
