package service_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hangarhq/hangar/daemon/config"
	"github.com/hangarhq/hangar/daemon/service"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/syncbuf"
)

// flakyStore fails every write while broken is set, as a store on a full
// disk or a read-only file system does; reads keep working.
type flakyStore struct {
	store.Store
	broken atomic.Bool
}

var errDiskFull = errors.New("disk full (test)")

func (f *flakyStore) Heartbeat(ctx context.Context, id string, now time.Time) error {
	if f.broken.Load() {
		return errDiskFull
	}
	return f.Store.Heartbeat(ctx, id, now)
}

func (f *flakyStore) CreateSession(ctx context.Context, s *store.Session) error {
	if f.broken.Load() {
		return errDiskFull
	}
	return f.Store.CreateSession(ctx, s)
}

func (f *flakyStore) UpdateSession(ctx context.Context, id string, from []store.SessionState, fn func(*store.Session) error) (*store.Session, error) {
	if f.broken.Load() {
		return nil, errDiskFull
	}
	return f.Store.UpdateSession(ctx, id, from, fn)
}

// TestReadyzFollowsStoreWrites: /readyz turns 503, naming the store write
// that fails, while the store cannot be written (it used to stay 200,
// probing with a read), /metrics says the same, and both recover when the
// store does.
func TestReadyzFollowsStoreWrites(t *testing.T) {
	e := newEnv(t, 0, 4)
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "hangard.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fs := &flakyStore{Store: st}
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.FlyAPIURL, cfg.FlyOrg = e.emu.URL, "personal"
	cfg.BrokerKey, cfg.AdminKey = e.brokerKey, adminKey
	cfg.LogFormat, cfg.LogLevel = "json", "debug"
	cfg.HeartbeatInterval, cfg.DeadAfter = 100*time.Millisecond, 2*time.Second
	cfg.DaemonURL, cfg.FlyOIDCIssuer = e.lb.URL, e.emu.OIDCIssuer("personal")
	d, err := service.Start(context.Background(), service.Options{Config: cfg, LogOutput: &syncbuf.Buffer{}, Store: fs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	a := newAPI(t, d.URL, "")

	waitReady := func(want int, body string) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			code, out, _ := a.do("GET", "/readyz", nil)
			if code == want && strings.Contains(string(out), body) {
				return string(out)
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz: %d %s; want %d with %q", code, out, want, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	metric := func() string {
		t.Helper()
		_, out, _ := a.do("GET", "/metrics", nil)
		return string(out)
	}
	waitReady(200, `"ok":true`)
	if m := metric(); !strings.Contains(m, "hangard_ready 1") {
		t.Errorf("/metrics lacks hangard_ready 1")
	}

	fs.broken.Store(true)
	body := waitReady(503, "store_write")
	if !strings.Contains(body, "disk full (test)") {
		t.Errorf("/readyz %s does not name the failing write", body)
	}
	if m := metric(); !strings.Contains(m, "hangard_ready 0") || !strings.Contains(m, `hangard_readiness_problem{check="store_write",severity="unready"} 1`) {
		t.Errorf("/metrics does not report the store problem")
	}

	fs.broken.Store(false)
	waitReady(200, `"reasons":[]`)
}
