package service_test

import (
	"context"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hangarhq/hangar/daemon/store/storetest"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/pool"
)

// flyLoadEnv turns TestFlyLoad on; its value is the number of sessions
// (`make fly-load`, FLY_LOAD_SESSIONS).
const flyLoadEnv = "HANGAR_FLY_LOAD"

// TestFlyLoad is the load figure against Fly's limits: N sessions requested
// at once on one pool (a quarter of them covered by standbys, the rest
// cloned), with one and with two replicas on Postgres, and the emulator
// enforcing Fly's rate limits. It reports sessions made ready per minute,
// the 429s Fly answered, the claims that failed and the ready latency.
func TestFlyLoad(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv(flyLoadEnv))
	if n <= 0 {
		t.Skip("set " + flyLoadEnv + "=N (make fly-load) to run the load figure")
	}
	dsn := storetest.StartPostgres(t)
	for _, replicas := range []int{1, 2} {
		t.Run(strconv.Itoa(replicas)+"-replicas", func(t *testing.T) {
			standbys := n / 4
			e := newEnv(t, standbys, n+5)
			schema := storetest.CreateSchema(t, dsn) // shared by the replicas
			var rs []*replica
			for range replicas {
				rs = append(rs, e.start(t, schema))
			}
			tn := newAPI(t, rs[0].URL, "").createTenant("load", nil)
			before := e.emu.RateLimited()
			start := time.Now()
			ids := make([]string, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					var s session
					newAPI(t, rs[i%len(rs)].URL, tn.APIKey).json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"sleep", "600"}}, http.StatusAccepted, &s)
					ids[i] = s.ID
				}(i)
			}
			wg.Wait()
			u := newAPI(t, rs[0].URL, tn.APIKey)
			var lat []time.Duration
			failed := 0
			var last time.Time
			for _, id := range ids {
				var s struct {
					session
					CreatedAt time.Time  `json:"created_at"`
					ReadyAt   *time.Time `json:"ready_at"`
				}
				u.waitState(id, isState("ready", "failed", "ended"))
				u.json("GET", "/v1/sessions/"+id, nil, http.StatusOK, &s)
				if s.State != "ready" || s.ReadyAt == nil {
					failed++
					t.Logf("session %s: %s (%s)", id, s.State, s.Reason)
					continue
				}
				lat = append(lat, s.ReadyAt.Sub(s.CreatedAt))
				if s.ReadyAt.After(last) {
					last = *s.ReadyAt
				}
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			pct := func(p float64) time.Duration {
				if len(lat) == 0 {
					return 0
				}
				return lat[min(len(lat)-1, int(p*float64(len(lat))))]
			}
			perMin := float64(len(lat)) / last.Sub(start).Minutes()
			t.Logf("fly-load: %d sessions, %d replica(s), %d standbys: %.1f ready/min, %d 429s, %d claims failed, ready p50 %v p99 %v",
				n, replicas, standbys, perMin, e.emu.RateLimited()-before, failed, pct(0.50).Round(time.Millisecond), pct(0.99).Round(time.Millisecond))
			for _, id := range ids {
				u.json("DELETE", "/v1/sessions/"+id, nil, http.StatusAccepted, nil)
			}
			for _, id := range ids {
				u.waitState(id, isState("ended", "failed"))
			}
			waitCond(t, "session machines destroyed", func() bool {
				ms, err := e.fly.ListMachines(context.Background(), testApp, fly.ListMachinesOptions{})
				if err != nil {
					return false
				}
				for i := range ms {
					if pool.IsSession(&ms[i]) && ms[i].State != fly.StateDestroyed {
						return false
					}
				}
				return true
			})
		})
	}
}

// waitCond waits for cond, failing the test after a minute.
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
