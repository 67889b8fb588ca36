package service_test

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hangarhq/hangar/daemon/config"
	"github.com/hangarhq/hangar/daemon/service"
	"github.com/hangarhq/hangar/daemon/store"
)

// readCountingStore counts GetSession calls per session.
type readCountingStore struct {
	store.Store
	mu    sync.Mutex
	reads map[string]int
}

func (c *readCountingStore) GetSession(ctx context.Context, id string) (*store.Session, error) {
	c.mu.Lock()
	c.reads[id]++
	c.mu.Unlock()
	return c.Store.GetSession(ctx, id)
}

func (c *readCountingStore) readsOf(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads[id]
}

// TestEventsArePushed: a session's event stream re-reads the session when
// the store's notices say it changed, not on a timer. While one session's
// stream stays open and idle, other sessions of its pool are created and
// ended, and the first is then ended: the idle stream reads its session
// (almost) never meanwhile (it used to read it every 250 ms), and still
// sees the end at once.
func TestEventsArePushed(t *testing.T) {
	e := newEnv(t, 2, 4)
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "hangard.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cs := &readCountingStore{Store: st, reads: map[string]int{}}
	d := e.startTuned(t, func(_ *config.Config, o *service.Options) { o.Store = cs })
	admin := newAPI(t, d.URL, adminKey)
	tn := admin.createTenant("pushed", nil)
	u := admin.with(tn.APIKey)
	var first session
	u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &first)
	first = u.waitState(first.ID, isState("ready", "failed"))
	if first.State != "ready" {
		t.Fatalf("first session: %+v", first)
	}

	req, _ := http.NewRequest("GET", d.URL+"/v1/sessions/"+first.ID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+tn.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("events: %v %v", err, resp)
	}
	events := newSSE(resp)
	if ev := <-events; ev == "" {
		t.Fatal("no first event")
	}
	before, idleFrom := cs.readsOf(first.ID), time.Now()

	// Other sessions of the pool come and go meanwhile: store writes,
	// notices, seconds of wall-clock time; none about the first session.
	for range 4 {
		var other session
		u.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &other)
		if other = u.waitState(other.ID, isState("ready", "failed")); other.State != "ready" {
			t.Fatalf("other session: %+v", other)
		}
		if st, b, _ := u.do("DELETE", "/v1/sessions/"+other.ID, nil); st != http.StatusAccepted {
			t.Fatalf("end: %d %s", st, b)
		}
		endAt := time.Now()
		u.waitState(other.ID, isState("ended", "failed"))
		t.Logf("another session ended in %v", time.Since(endAt).Round(time.Millisecond))
	}
	idle := time.Since(idleFrom)
	idleReads := cs.readsOf(first.ID) - before
	t.Logf("/events read its idle session %d times in %v (a 250 ms poll: about %d)", idleReads, idle.Round(time.Millisecond), idle/(250*time.Millisecond))
	// Only the safety poll (every 15 s) may read it.
	if limit := int(idle/(15*time.Second)) + 1; idleReads > limit {
		t.Errorf("the idle stream read its session %d times in %v; want at most %d", idleReads, idle, limit)
	}

	if st, b, _ := u.do("DELETE", "/v1/sessions/"+first.ID, nil); st != http.StatusAccepted {
		t.Fatalf("end: %d %s", st, b)
	}
	var last session
	endAt := time.Now()
	for ev := range events {
		if err := json.Unmarshal([]byte(ev), &last); err != nil {
			t.Fatal(err)
		}
		t.Logf("%v after the end: %s", time.Since(endAt).Round(time.Millisecond), last.State)
	}
	if last.State != "ended" && last.State != "failed" {
		t.Fatalf("the stream closed at state %q", last.State)
	}
}
