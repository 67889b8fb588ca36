package sessions

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/fly"
)

// countingFly answers GetMachine and counts the calls; the rest of Fly is
// not used.
type countingFly struct {
	Fly
	gets atomic.Int64
	fail atomic.Bool
}

func (c *countingFly) GetMachine(_ context.Context, app, id string) (*fly.Machine, error) {
	c.gets.Add(1)
	if c.fail.Load() {
		return nil, errors.New("fly is down")
	}
	return &fly.Machine{ID: id, State: fly.StateStarted}, nil
}

func TestMachineReadsShareOneRead(t *testing.T) {
	c := &countingFly{}
	r := newMachineReads(c)
	r.ttl = time.Hour // no expiry during the test, however slow the machine
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if m, err := r.get(ctx, "app", "m1"); err != nil || m.ID != "m1" {
				t.Errorf("get: %+v, %v", m, err)
			}
		}()
	}
	wg.Wait()
	if n := c.gets.Load(); n != 1 {
		t.Errorf("50 attaches read the machine %d times, want once", n)
	}
	if _, err := r.get(ctx, "app", "m2"); err != nil || c.gets.Load() != 2 {
		t.Errorf("another machine: %v, %d reads", err, c.gets.Load())
	}
	// Past the TTL the machine is read again; a failed read is not kept.
	r.ttl = 0
	c.fail.Store(true)
	if _, err := r.get(ctx, "app", "m1"); err == nil {
		t.Error("a failing read answered from the cache")
	}
	c.fail.Store(false)
	if _, err := r.get(ctx, "app", "m1"); err != nil || c.gets.Load() != 4 {
		t.Errorf("read after the failure: %v, %d reads (want 4)", err, c.gets.Load())
	}
}
