package claim

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
)

// listCounter is a Fly that only lists: the given standbys, counting calls.
type listCounter struct {
	Fly
	lists    atomic.Int32
	machines []fly.Machine
}

func (l *listCounter) ListMachines(context.Context, string, fly.ListMachinesOptions) ([]fly.Machine, error) {
	l.lists.Add(1)
	return l.machines, nil
}

func standby(id string) fly.Machine {
	return fly.Machine{ID: id, State: fly.StateStopped, Config: &fly.MachineConfig{Metadata: map[string]string{
		pool.KeyPool: "p", pool.KeyRole: pool.RoleStandby}}}
}

// An old view (the reconciler's last round) serves a claim without a listing
// as long as it holds a candidate; an old view without one is listed afresh.
func TestStandbyViewOldViewServesBeforeListing(t *testing.T) {
	f := &listCounter{machines: []fly.Machine{standby("b")}}
	v := newStandbyViews(f)
	any := func(*fly.Machine) bool { return true }
	rank := func(*fly.Machine) int { return 0 }
	a := standby("a")
	v.update("app", "p", []fly.Machine{a}, time.Now().Add(-10*time.Second))

	m, err := v.next(context.Background(), "app", "p", any, rank)
	if err != nil || m == nil || m.ID != "a" {
		t.Fatalf("first claim: %v, %v; want the old view's standby a", m, err)
	}
	if n := f.lists.Load(); n != 0 {
		t.Fatalf("%d listings; the old view's candidate needs none", n)
	}
	m, err = v.next(context.Background(), "app", "p", any, rank)
	if err != nil || m == nil || m.ID != "b" {
		t.Fatalf("second claim: %v, %v; want the fresh listing's standby b", m, err)
	}
	if n := f.lists.Load(); n != 1 {
		t.Fatalf("%d listings, want 1 (the old view was empty)", n)
	}
	if m, _ := v.next(context.Background(), "app", "p", any, rank); m != nil {
		t.Fatalf("third claim got %s from a fresh, empty view", m.ID)
	}
	if n := f.lists.Load(); n != 1 {
		t.Fatalf("%d listings, want 1 (a fresh view is not listed again)", n)
	}
}

// A view past its maximum age is listed before anything is taken from it.
func TestStandbyViewTooOldIsListed(t *testing.T) {
	f := &listCounter{machines: []fly.Machine{standby("b")}}
	v := newStandbyViews(f)
	v.update("app", "p", []fly.Machine{standby("a")}, time.Now().Add(-2*standbyViewMaxAge))
	m, err := v.next(context.Background(), "app", "p", func(*fly.Machine) bool { return true }, func(*fly.Machine) int { return 0 })
	if err != nil || m == nil || m.ID != "b" {
		t.Fatalf("claim: %v, %v; want the listing's standby b", m, err)
	}
}
