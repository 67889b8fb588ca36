package health

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestTracker(t *testing.T) {
	now := time.Unix(1000, 0)
	tr := New()
	tr.now = func() time.Time { return now }
	tr.Expect(CheckStoreWrite, 3*time.Second, false)
	tr.Expect(CheckFly, 0, true)
	if p := tr.Problems(); len(p) != 0 {
		t.Fatalf("fresh tracker: %v", p)
	}
	now = now.Add(4 * time.Second)
	if p := tr.Problems(); len(p) != 1 || p[0].Check != CheckStoreWrite || p[0].Degraded {
		t.Fatalf("no heartbeat since start: %v", p)
	}
	tr.Observe(CheckStoreWrite, nil)
	tr.Observe(CheckFly, errors.New("answered 503"))
	p := tr.Problems()
	if len(p) != 1 || p[0].Check != CheckFly || !p[0].Degraded || !strings.Contains(p[0].Detail, "503") {
		t.Fatalf("fly failing: %v", p)
	}
	tr.Observe(CheckFly, nil)
	tr.Observe(CheckStoreWrite, errors.New("disk full"))
	if p := tr.Problems(); len(p) != 1 || p[0].Check != CheckStoreWrite || !strings.Contains(p[0].String(), "store_write: failing since") {
		t.Fatalf("store failing: %v", p)
	}
	tr.Observe(CheckStoreWrite, nil)
	now = now.Add(5 * time.Second)
	if p := tr.Problems(); len(p) != 1 || !strings.Contains(p[0].Detail, "last success 5s ago") {
		t.Fatalf("stale heartbeat: %v", p)
	}
	var nilTracker *Tracker
	nilTracker.Observe(CheckFly, nil)
	if nilTracker.Problems() != nil {
		t.Fatal("nil tracker has problems")
	}
}
