package flyemu_test

import (
	"testing"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/flyemu"
)

// TestFaultAfterActing: with FaultAfterRate 1 a mutating call is carried
// out but its answer lost; reads answer normally.
func TestFaultAfterActing(t *testing.T) {
	e := start(t, flyemu.Config{FaultAfterRate: 1})
	c := ctx(t)
	app := e.app(t, "after")
	// Without retries, so that the lost answer reaches the caller.
	one, err := fly.New(fly.Options{BaseURL: e.srv.URL, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := one.CreateMachine(c, app, fly.CreateMachineRequest{Config: shell("sleep 60"), SkipLaunch: true}); err == nil {
		t.Fatal("create answered although its answer should have been lost")
	}
	ms, err := one.ListMachines(c, app, fly.ListMachinesOptions{})
	if err != nil {
		t.Fatalf("list (a read) failed: %v", err)
	}
	if len(ms) != 1 {
		t.Fatalf("%d machines after the lost create; want 1 (it acted)", len(ms))
	}
	if e.srv.FaultsInjected() == 0 {
		t.Error("no fault counted")
	}
}
