// Package storetest is the conformance suite every store.Store
// implementation passes, and a throw-away PostgreSQL cluster to run it on.
package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hangarhq/hangar/daemon/store"
)

// Run runs the conformance suite. newStore must return a store on a fresh,
// empty database for each call, closed by the caller's t.Cleanup (closing
// it again is allowed and must be harmless).
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"tenants/create_get", testTenantCreateGet},
		{"tenants/duplicate_name", testTenantDuplicateName},
		{"tenants/duplicate_key", testTenantDuplicateKey},
		{"tenants/invalid", testTenantInvalid},
		{"tenants/by_key", testTenantByKey},
		{"tenants/list", testTenantList},
		{"tenants/set_key", testTenantSetKey},
		{"tenants/delete", testTenantDelete},
		{"tenants/create_race", testTenantCreateRace},
		{"sessions/round_trip", testSessionRoundTrip},
		{"sessions/duplicate_id", testSessionDuplicateID},
		{"sessions/invalid", testSessionInvalid},
		{"sessions/not_found", testSessionNotFound},
		{"sessions/update_cas", testSessionUpdateCAS},
		{"sessions/update_fn_error", testSessionUpdateFnError},
		{"sessions/update_keeps_identity", testSessionUpdateKeepsIdentity},
		{"sessions/update_race_one_winner", testSessionUpdateRace},
		{"sessions/update_no_lost_updates", testSessionNoLostUpdates},
		{"sessions/list_filters", testSessionListFilters},
		{"sessions/count_live", testSessionCountLive},
		{"sessions/queue_position", testQueuePosition},
		{"sessions/time_precision", testTimePrecision},
		{"tickets/use", testTicketUse},
		{"tickets/expired", testTicketExpired},
		{"tickets/invalid", testTicketInvalid},
		{"tickets/other_session", testTicketOtherSession},
		{"tickets/race_single_use", func(t *testing.T, s store.Store) { testTicketRace(t, s, s, 1) }},
		{"tickets/race_multi_use", func(t *testing.T, s store.Store) { testTicketRace(t, s, s, 5) }},
		{"tickets/deleted_tenant", testTicketDeletedTenant},
		{"tickets/key_rotation_revokes", testTicketKeyRotation},
		{"daemons/heartbeat", testDaemons},
		{"daemons/tunnels", testTunnels},
		{"destroys/pending", testPendingDestroys},
		{"tokens/single_use", testUseToken},
		{"tokens/race_one_winner", testUseTokenRace},
		{"leader/release", testLeaderSingle},
		{"rate/budget", func(t *testing.T, s store.Store) { testRate(t, s, s) }},
		{"snapshots", testSnapshots},
		{"schema/no_credential_columns", testNoCredentialColumns},
		{"close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

// RunReplicas runs the checks that need two stores (two replicas, or two
// processes) on the same database. open returns both, closed by the
// caller's t.Cleanup. exclusiveLeader says whether TryLeader is exclusive
// across stores (Postgres) or always granted (SQLite, one replica).
func RunReplicas(t *testing.T, open func(t *testing.T) (a, b store.Store), exclusiveLeader bool) {
	t.Run("visible_across", func(t *testing.T) {
		a, b := open(t)
		ctx := testContext(t)
		ten := mustTenant(t, a, "acme")
		got, err := b.GetTenant(ctx, ten.ID)
		if err != nil || got.Name != "acme" {
			t.Fatalf("GetTenant on the other store = %+v, %v", got, err)
		}
		sess := mustSession(t, a, ten.ID, "pool")
		if _, err := b.UpdateSession(ctx, sess.ID, []store.SessionState{store.StatePending}, func(s *store.Session) error {
			s.State = store.StateClaiming
			return nil
		}); err != nil {
			t.Fatalf("UpdateSession on the other store: %v", err)
		}
		got2, err := a.GetSession(ctx, sess.ID)
		if err != nil || got2.State != store.StateClaiming {
			t.Fatalf("GetSession after the other store's update = %+v, %v", got2, err)
		}
		if err := b.Heartbeat(ctx, "d1", time.Now().Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		dead, err := a.DeadDaemons(ctx, time.Now())
		if err != nil || !reflect.DeepEqual(dead, []string{"d1"}) {
			t.Fatalf("DeadDaemons = %v, %v; want [d1]", dead, err)
		}
	})
	t.Run("update_race_across", func(t *testing.T) {
		a, b := open(t)
		ten := mustTenant(t, a, "acme")
		sess := mustSession(t, a, ten.ID, "pool")
		raceClaim(t, []store.Store{a, b}, sess.ID)
	})
	if exclusiveLeader {
		// SQLite keeps the budget in its one process, as it keeps leadership.
		t.Run("rate_across", func(t *testing.T) {
			a, b := open(t)
			testRate(t, a, b)
		})
	}
	t.Run("ticket_race_across", func(t *testing.T) {
		a, b := open(t)
		testTicketRace(t, a, b, 1)
	})
	t.Run("leader", func(t *testing.T) {
		a, b := open(t)
		ctx := testContext(t)
		okA, releaseA, err := a.TryLeader(ctx, "reconciler")
		if err != nil || !okA {
			t.Fatalf("first TryLeader = %v, %v; want granted", okA, err)
		}
		okB, releaseB, err := b.TryLeader(ctx, "reconciler")
		if err != nil {
			t.Fatalf("second TryLeader: %v", err)
		}
		if !exclusiveLeader {
			if !okB {
				t.Fatal("TryLeader refused, but this store grants leadership to everyone")
			}
			releaseA()
			releaseB()
			return
		}
		if okB {
			t.Fatal("two stores are leader of the same name at once")
		}
		releaseB() // a refused TryLeader's release is harmless
		// Another name is independent.
		okOther, releaseOther, err := b.TryLeader(ctx, "other")
		if err != nil || !okOther {
			t.Fatalf("TryLeader of another name = %v, %v; want granted", okOther, err)
		}
		releaseOther()
		// The lock is exclusive within one store too.
		if ok, _, err := a.TryLeader(ctx, "reconciler"); err != nil || ok {
			t.Fatalf("TryLeader by the holder's own store = %v, %v; want refused (not re-entrant)", ok, err)
		}
		releaseA()
		releaseA() // twice is harmless
		okB, releaseB, err = b.TryLeader(ctx, "reconciler")
		if err != nil || !okB {
			t.Fatalf("TryLeader after release = %v, %v; want granted", okB, err)
		}
		if ok, _, err := a.TryLeader(ctx, "reconciler"); err != nil || ok {
			t.Fatalf("TryLeader while the other holds it = %v, %v; want refused", ok, err)
		}
		// Closing the holder gives it up too.
		if err := b.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		releaseB() // after Close: harmless
		okA, releaseA, err = a.TryLeader(ctx, "reconciler")
		if err != nil || !okA {
			t.Fatalf("TryLeader after the holder closed = %v, %v; want granted", okA, err)
		}
		releaseA()
	})
	t.Run("leader_race", func(t *testing.T) {
		a, b := open(t)
		ctx := testContext(t)
		stores := []store.Store{a, b}
		for round := range 3 {
			const n = 8
			var granted atomic.Int32
			releases := make(chan func(), n)
			run(n, func(i int) {
				ok, release, err := stores[i%2].TryLeader(ctx, "race")
				if err != nil {
					t.Errorf("TryLeader: %v", err)
					return
				}
				if ok {
					granted.Add(1)
				}
				releases <- release
			})
			close(releases)
			want := int32(1)
			if !exclusiveLeader {
				want = n
			}
			if granted.Load() != want {
				t.Fatalf("round %d: %d of %d racing TryLeader calls were granted; want %d", round, granted.Load(), n, want)
			}
			for release := range releases {
				release()
			}
		}
	})
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func keyHash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func mustTenant(t *testing.T, s store.Store, name string) *store.Tenant {
	t.Helper()
	ten := &store.Tenant{Name: name, Pools: []string{"pool"}, KeyHash: keyHash("key-" + name)}
	if err := s.CreateTenant(testContext(t), ten); err != nil {
		t.Fatalf("CreateTenant %s: %v", name, err)
	}
	return ten
}

var sessionSeq atomic.Int64

func mustSession(t *testing.T, s store.Store, tenantID, pool string) *store.Session {
	t.Helper()
	sess := &store.Session{
		ID:       fmt.Sprintf("sess-%d", sessionSeq.Add(1)),
		TenantID: tenantID,
		Pool:     pool,
		State:    store.StatePending,
		Mode:     "pty",
	}
	if err := s.CreateSession(testContext(t), sess); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	return sess
}

func setState(t *testing.T, s store.Store, id string, st store.SessionState) {
	t.Helper()
	if _, err := s.UpdateSession(testContext(t), id, nil, func(sess *store.Session) error {
		sess.State = st
		return nil
	}); err != nil {
		t.Fatalf("set state of %s to %s: %v", id, st, err)
	}
}

// recent reports whether tm is a UTC time within a minute of now.
func recent(tm time.Time) bool {
	return tm.Location() == time.UTC && time.Since(tm) < time.Minute && time.Until(tm) < time.Minute
}

func testTenantCreateGet(t *testing.T, s store.Store) {
	ctx := testContext(t)
	ten := &store.Tenant{
		Name:               "acme",
		Pools:              []string{"default", "gpu"},
		MaxSessions:        7,
		MaxSessionDuration: 90 * time.Minute,
		KeyHash:            keyHash("k1"),
	}
	if err := s.CreateTenant(ctx, ten); err != nil {
		t.Fatalf("CreateTenant: %v", err)
	}
	if ten.ID == "" || !recent(ten.CreatedAt) {
		t.Fatalf("CreateTenant set ID %q, CreatedAt %v; want an id and a recent UTC time", ten.ID, ten.CreatedAt)
	}
	got, err := s.GetTenant(ctx, ten.ID)
	if err != nil {
		t.Fatalf("GetTenant: %v", err)
	}
	if !reflect.DeepEqual(got, ten) {
		t.Fatalf("GetTenant = %+v\nwant %+v", got, ten)
	}
	other := &store.Tenant{Name: "other"}
	if err := s.CreateTenant(ctx, other); err != nil {
		t.Fatalf("CreateTenant without pools or key: %v", err)
	}
	if other.ID == ten.ID {
		t.Fatal("two tenants got the same id")
	}
	got, err = s.GetTenant(ctx, other.ID)
	if err != nil || got.Pools != nil || got.KeyHash != nil || got.MaxSessions != 0 || got.MaxSessionDuration != 0 {
		t.Fatalf("GetTenant of a bare tenant = %+v, %v", got, err)
	}
	if _, err := s.GetTenant(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetTenant(unknown) error = %v; want ErrNotFound", err)
	}
}

func testTenantDuplicateName(t *testing.T, s store.Store) {
	ctx := testContext(t)
	mustTenant(t, s, "acme")
	err := s.CreateTenant(ctx, &store.Tenant{Name: "acme", KeyHash: keyHash("different")})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CreateTenant(duplicate name) error = %v; want ErrConflict", err)
	}
	list, err := s.ListTenants(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("after a refused duplicate, ListTenants = %d tenants, %v; want 1", len(list), err)
	}
}

func testTenantDuplicateKey(t *testing.T, s store.Store) {
	ctx := testContext(t)
	a := mustTenant(t, s, "a")
	err := s.CreateTenant(ctx, &store.Tenant{Name: "b", KeyHash: a.KeyHash})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CreateTenant(duplicate key hash) error = %v; want ErrConflict", err)
	}
}

func testTenantInvalid(t *testing.T, s store.Store) {
	ctx := testContext(t)
	for _, ten := range []*store.Tenant{
		nil,
		{Name: ""},
		{Name: "   "},
		{Name: "neg", MaxSessions: -1},
		{Name: "negdur", MaxSessionDuration: -time.Second},
	} {
		if err := s.CreateTenant(ctx, ten); err == nil {
			t.Errorf("CreateTenant(%+v) succeeded; want an error", ten)
		}
	}
	list, err := s.ListTenants(ctx)
	if err != nil || len(list) != 0 {
		t.Fatalf("after refused creates, ListTenants = %d, %v; want none", len(list), err)
	}
}

func testTenantByKey(t *testing.T, s store.Store) {
	ctx := testContext(t)
	a := mustTenant(t, s, "a")
	b := mustTenant(t, s, "b")
	for _, want := range []*store.Tenant{a, b} {
		got, err := s.TenantByKeyHash(ctx, want.KeyHash)
		if err != nil || got.ID != want.ID {
			t.Fatalf("TenantByKeyHash(%s) = %+v, %v", want.Name, got, err)
		}
	}
	for _, h := range [][]byte{keyHash("unknown"), nil, {}} {
		if _, err := s.TenantByKeyHash(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("TenantByKeyHash(%x) error = %v; want ErrNotFound", h, err)
		}
	}
}

func testTenantList(t *testing.T, s store.Store) {
	ctx := testContext(t)
	list, err := s.ListTenants(ctx)
	if err != nil || len(list) != 0 {
		t.Fatalf("ListTenants on an empty store = %v, %v", list, err)
	}
	var want []string
	for _, n := range []string{"c", "a", "b"} {
		want = append(want, mustTenant(t, s, n).ID)
	}
	list, err = s.ListTenants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ten := range list {
		got = append(got, ten.ID)
		if ten.Pools == nil || ten.KeyHash == nil {
			t.Fatalf("ListTenants lost fields: %+v", ten)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ListTenants ids = %v; want %v (oldest first)", got, want)
	}
}

func testTenantSetKey(t *testing.T, s store.Store) {
	ctx := testContext(t)
	a := mustTenant(t, s, "a")
	b := mustTenant(t, s, "b")
	newHash := keyHash("rotated")
	if err := s.SetTenantKey(ctx, a.ID, newHash); err != nil {
		t.Fatalf("SetTenantKey: %v", err)
	}
	if _, err := s.TenantByKeyHash(ctx, a.KeyHash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old key still works: %v", err)
	}
	got, err := s.TenantByKeyHash(ctx, newHash)
	if err != nil || got.ID != a.ID {
		t.Fatalf("TenantByKeyHash(new key) = %+v, %v", got, err)
	}
	if err := s.SetTenantKey(ctx, "nope", keyHash("x")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetTenantKey(unknown) error = %v; want ErrNotFound", err)
	}
	if err := s.SetTenantKey(ctx, b.ID, newHash); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("SetTenantKey(another tenant's key) error = %v; want ErrConflict", err)
	}
	if err := s.SetTenantKey(ctx, b.ID, nil); err == nil {
		t.Fatal("SetTenantKey(empty hash) succeeded")
	}
	if got, err := s.TenantByKeyHash(ctx, b.KeyHash); err != nil || got.ID != b.ID {
		t.Fatalf("refused key changes altered tenant b: %+v, %v", got, err)
	}
}

func testTenantDelete(t *testing.T, s store.Store) {
	ctx := testContext(t)
	a := mustTenant(t, s, "a")
	b := mustTenant(t, s, "b")
	if err := s.DeleteTenant(ctx, a.ID); err != nil {
		t.Fatalf("DeleteTenant: %v", err)
	}
	if _, err := s.GetTenant(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetTenant(deleted) error = %v; want ErrNotFound", err)
	}
	if _, err := s.TenantByKeyHash(ctx, a.KeyHash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted tenant's key still works: %v", err)
	}
	if err := s.DeleteTenant(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteTenant twice error = %v; want ErrNotFound", err)
	}
	if _, err := s.GetTenant(ctx, b.ID); err != nil {
		t.Fatalf("deleting a removed b too: %v", err)
	}
	// The name and key are free again.
	again := &store.Tenant{Name: "a", KeyHash: a.KeyHash}
	if err := s.CreateTenant(ctx, again); err != nil {
		t.Fatalf("re-create a deleted tenant's name: %v", err)
	}
}

func testTenantCreateRace(t *testing.T, s store.Store) {
	ctx := testContext(t)
	const n = 12
	var ok, conflict atomic.Int32
	run(n, func(i int) {
		err := s.CreateTenant(ctx, &store.Tenant{Name: "same", KeyHash: keyHash(fmt.Sprint(i))})
		switch {
		case err == nil:
			ok.Add(1)
		case errors.Is(err, store.ErrConflict):
			conflict.Add(1)
		default:
			t.Errorf("CreateTenant: %v", err)
		}
	})
	if ok.Load() != 1 || conflict.Load() != n-1 {
		t.Fatalf("racing creates of one name: %d succeeded, %d conflicted; want 1 and %d", ok.Load(), conflict.Load(), n-1)
	}
}

// run calls fn(0..n-1) in n goroutines released at once, and waits.
func run(n int, fn func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			fn(i)
		}()
	}
	close(start)
	wg.Wait()
}

func fullSession(tenantID string) *store.Session {
	ready := time.Date(2026, 1, 2, 3, 4, 5, 678901000, time.UTC)
	return &store.Session{
		ID:             fmt.Sprintf("sess-%d", sessionSeq.Add(1)),
		TenantID:       tenantID,
		Pool:           "default",
		TenantImage:    "python",
		Region:         "ams",
		State:          store.StateStarting,
		Reason:         "because",
		MachineID:      "m-123",
		AppName:        "hangar-default",
		Repo:           "https://git.example/acme/app.git",
		Branch:         "main",
		SessionBranch:  "hangar/x",
		Mode:           "jsonl",
		Command:        []string{"bash", "-lc", "echo 'hi' \"there\""},
		Env:            map[string]string{"A": "1", "EMPTY": "", "UNICODE": "é✓"},
		Cols:           120,
		Rows:           40,
		GitAuthorName:  "Ada",
		GitAuthorEmail: "ada@example.com",
		Owner:          "daemon-1",
		ReadyAt:        &ready,
		Push:           &store.Push{Ref: "refs/heads/hangar/x", Commit: "abc", OK: true, Message: "pushed"},
		CostUSD:        1.25,
	}
}

func testSessionRoundTrip(t *testing.T, s store.Store) {
	ctx := testContext(t)
	ten := mustTenant(t, s, "acme")
	sess := fullSession(ten.ID)
	if err := s.CreateSession(ctx, sess); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	if !recent(sess.CreatedAt) || !sess.UpdatedAt.Equal(sess.CreatedAt) {
		t.Fatalf("CreateSession set CreatedAt %v, UpdatedAt %v", sess.CreatedAt, sess.UpdatedAt)
	}
	got, err := s.GetSession(ctx, sess.ID)
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	if !reflect.DeepEqual(got, sess) {
		t.Fatalf("GetSession = %+v\nwant %+v", got, sess)
	}
	// A bare session: empty lists and maps come back nil, no push, no times.
	bare := &store.Session{ID: "bare", TenantID: ten.ID, Pool: "default"}
	if err := s.CreateSession(ctx, bare); err != nil {
		t.Fatalf("CreateSession(bare): %v", err)
	}
	if bare.State != store.StatePending {
		t.Fatalf("a session created without a state is %q; want pending", bare.State)
	}
	got, err = s.GetSession(ctx, "bare")
	if err != nil {
		t.Fatal(err)
	}
	if got.Command != nil || got.Env != nil || got.Push != nil || got.ReadyAt != nil || got.EndedAt != nil {
		t.Fatalf("bare session came back with %+v", got)
	}
	if !reflect.DeepEqual(got, bare) {
		t.Fatalf("GetSession(bare) = %+v\nwant %+v", got, bare)
	}
}

func testSessionDuplicateID(t *testing.T, s store.Store) {
	ctx := testContext(t)
	ten := mustTenant(t, s, "acme")
	sess := mustSession(t, s, ten.ID, "p")
	dup := &store.Session{ID: sess.ID, TenantID: ten.ID, Pool: "other"}
	if err := s.CreateSession(ctx, dup); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CreateSession(duplicate id) error = %v; want ErrConflict", err)
	}
	got, err := s.GetSession(ctx, sess.ID)
	if err != nil || got.Pool != "p" {
		t.Fatalf("duplicate create changed the session: %+v, %v", got, err)
	}
}

func testSessionInvalid(t *testing.T, s store.Store) {
	ctx := testContext(t)
	for _, sess := range []*store.Session{
		nil,
		{TenantID: "t", Pool: "p"},
		{ID: "x1", Pool: "p"},
		{ID: "x2", TenantID: "t"},
		{ID: "x3", TenantID: "t", Pool: "p", State: "bogus"},
	} {
		if err := s.CreateSession(ctx, sess); err == nil {
			t.Errorf("CreateSession(%+v) succeeded; want an error", sess)
		}
	}
	list, err := s.ListSessions(ctx, store.SessionFilter{})
	if err != nil || len(list) != 0 {
		t.Fatalf("after refused creates, ListSessions = %d, %v; want none", len(list), err)
	}
	ten := mustTenant(t, s, "acme")
	sess := mustSession(t, s, ten.ID, "p")
	_, err = s.UpdateSession(ctx, sess.ID, nil, func(s *store.Session) error {
		s.State = "bogus"
		return nil
	})
	if err == nil {
		t.Fatal("UpdateSession to an unknown state succeeded")
	}
	if got, _ := s.GetSession(ctx, sess.ID); got.State != store.StatePending {
		t.Fatalf("refused update wrote state %q", got.State)
	}
}

func testSessionNotFound(t *testing.T, s store.Store) {
	ctx := testContext(t)
	if _, err := s.GetSession(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetSession(unknown) error = %v; want ErrNotFound", err)
	}
	called := false
	_, err := s.UpdateSession(ctx, "nope", nil, func(*store.Session) error { called = true; return nil })
	if !errors.Is(err, store.ErrNotFound) || called {
		t.Fatalf("UpdateSession(unknown) error = %v, fn called %v; want ErrNotFound, not called", err, called)
	}
	if _, err := s.QueuePosition(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("QueuePosition(unknown) error = %v; want ErrNotFound", err)
	}
}

func testSessionUpdateCAS(t *testing.T, s store.Store) {
	ctx := testContext(t)
	ten := mustTenant(t, s, "acme")
	sess := mustSession(t, s, ten.ID, "p")
	ready := time.Now().Add(time.Second)
	updated, err := s.UpdateSession(ctx, sess.ID, []store.SessionState{store.StatePending, store.StateClaiming}, func(s *store.Session) error {
		if s.State != store.StatePending {
			return fmt.Errorf("fn saw state %q", s.State)
		}
		s.State = store.StateReady
		s.MachineID = "m-1"
		s.AppName = "app"
		s.Region = "fra"
		s.ReadyAt = &ready
		s.Owner = "d2"
		s.Command = []string{"claude"}
		s.Env = map[string]string{"K": "V"}
		s.Push = &store.Push{Ref: "r", OK: false, Message: "rejected"}
		s.CostUSD = 0.5
		s.Reason = "r"
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	if updated.State != store.StateReady || updated.MachineID != "m-1" || updated.ReadyAt == nil {
		t.Fatalf("UpdateSession returned %+v", updated)
	}
	if !updated.UpdatedAt.After(sess.UpdatedAt) {
		t.Fatalf("UpdatedAt %v not after %v", updated.UpdatedAt, sess.UpdatedAt)
	}
	got, err := s.GetSession(ctx, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, updated) {
		t.Fatalf("GetSession after update = %+v\nwant what UpdateSession returned %+v", got, updated)
	}
	// Wrong expected state: nothing happens, ErrStateChanged.
	called := false
	_, err = s.UpdateSession(ctx, sess.ID, []store.SessionState{store.StatePending}, func(s *store.Session) error {
		called = true
		s.State = store.StateFailed
		return nil
	})
	if !errors.Is(err, store.ErrStateChanged) || called {
		t.Fatalf("UpdateSession from the wrong state: error %v, fn called %v; want ErrStateChanged, not called", err, called)
	}
	if got2, _ := s.GetSession(ctx, sess.ID); !reflect.DeepEqual(got2, got) {
		t.Fatalf("a refused CAS changed the row: %+v", got2)
	}
	// Empty from: any state; clearing fields works.
	updated, err = s.UpdateSession(ctx, sess.ID, nil, func(s *store.Session) error {
		s.State = store.StateEnded
		s.Push = nil
		s.Env = nil
		s.Command = nil
		s.ReadyAt = nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err = s.GetSession(ctx, sess.ID)
	if err != nil || !reflect.DeepEqual(got, updated) || got.Push != nil || got.Env != nil || got.ReadyAt != nil {
		t.Fatalf("cleared fields came back as %+v, %v", got, err)
	}
}

func testSessionUpdateFnError(t *testing.T, s store.Store) {
	ctx := testContext(t)
	ten := mustTenant(t, s, "acme")
	sess := mustSession(t, s, ten.ID, "p")
	boom := errors.New("boom")
	_, err := s.UpdateSession(ctx, sess.ID, nil, func(s *store.Session) error {
		s.State = store.StateFailed
		s.MachineID = "half"
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("UpdateSession error = %v; want fn's error", err)
	}
	got, err := s.GetSession(ctx, sess.ID)
	if err != nil || !reflect.DeepEqual(got, sess) {
		t.Fatalf("fn's error left a half-written row: %+v, %v", got, err)
	}
}

func testSessionUpdateKeepsIdentity(t *testing.T, s store.Store) {
	ctx := testContext(t)
	ten := mustTenant(t, s, "acme")
	sess := mustSession(t, s, ten.ID, "p")
	updated, err := s.UpdateSession(ctx, sess.ID, nil, func(s *store.Session) error {
		s.ID = "hijack"
		s.TenantID = "other"
		s.CreatedAt = time.Unix(0, 0)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if updated.ID != sess.ID || updated.TenantID != ten.ID || !updated.CreatedAt.Equal(sess.CreatedAt) {
		t.Fatalf("UpdateSession let fn change identity: %+v", updated)
	}
	if _, err := s.GetSession(ctx, "hijack"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a session appeared under fn's id: %v", err)
	}
}

// raceClaim has many goroutines, spread over stores, try to claim one
// pending session; exactly one may win.
func raceClaim(t *testing.T, stores []store.Store, id string) {
	t.Helper()
	ctx := testContext(t)
	const n = 24
	var won, lost atomic.Int32
	var winner atomic.Value
	run(n, func(i int) {
		owner := fmt.Sprintf("daemon-%d", i)
		_, err := stores[i%len(stores)].UpdateSession(ctx, id, []store.SessionState{store.StatePending}, func(s *store.Session) error {
			s.State = store.StateClaiming
			s.Owner = owner
			return nil
		})
		switch {
		case err == nil:
			won.Add(1)
			winner.Store(owner)
		case errors.Is(err, store.ErrStateChanged):
			lost.Add(1)
		default:
			t.Errorf("UpdateSession: %v", err)
		}
	})
	if won.Load() != 1 || lost.Load() != n-1 {
		t.Fatalf("racing claims: %d won, %d lost; want exactly 1 winner and %d ErrStateChanged", won.Load(), lost.Load(), n-1)
	}
	got, err := stores[0].GetSession(ctx, id)
	if err != nil || got.State != store.StateClaiming || got.Owner != winner.Load() {
		t.Fatalf("after the race the session is %+v, %v; want claiming by %v", got, err, winner.Load())
	}
}

func testSessionUpdateRace(t *testing.T, s store.Store) {
	ten := mustTenant(t, s, "acme")
	raceClaim(t, []store.Store{s}, mustSession(t, s, ten.ID, "p").ID)
}

func testSessionNoLostUpdates(t *testing.T, s store.Store) {
	ctx := testContext(t)
	ten := mustTenant(t, s, "acme")
	sess := mustSession(t, s, ten.ID, "p")
	const n = 20
	run(n, func(int) {
		if _, err := s.UpdateSession(ctx, sess.ID, nil, func(s *store.Session) error {
			s.CostUSD++
			return nil
		}); err != nil {
			t.Errorf("UpdateSession: %v", err)
		}
	})
	got, err := s.GetSession(ctx, sess.ID)
	if err != nil || got.CostUSD != n {
		t.Fatalf("after %d concurrent increments CostUSD = %v (%v); want %d", n, got.CostUSD, err, n)
	}
}

func ids(list []*store.Session) []string {
	out := []string{}
	for _, s := range list {
		out = append(out, s.ID)
	}
	return out
}

func testSessionListFilters(t *testing.T, s store.Store) {
	ctx := testContext(t)
	a := mustTenant(t, s, "a")
	b := mustTenant(t, s, "b")
	mk := func(id, tenant, pool, owner string, st store.SessionState) {
		if err := s.CreateSession(ctx, &store.Session{ID: id, TenantID: tenant, Pool: pool, Owner: owner, State: st}); err != nil {
			t.Fatal(err)
		}
	}
	// Ids deliberately not in creation order: lists are oldest first.
	mk("z1", a.ID, "p1", "d1", store.StatePending)
	mk("y2", a.ID, "p2", "d2", store.StateReady)
	mk("x3", b.ID, "p1", "d1", store.StateReady)
	mk("w4", a.ID, "p1", "d2", store.StateEnded)
	mk("v5", b.ID, "p2", "d1", store.StateFailed)
	cases := []struct {
		name string
		f    store.SessionFilter
		want []string
	}{
		{"all", store.SessionFilter{}, []string{"z1", "y2", "x3", "w4", "v5"}},
		{"tenant", store.SessionFilter{TenantID: a.ID}, []string{"z1", "y2", "w4"}},
		{"one state", store.SessionFilter{States: []store.SessionState{store.StateReady}}, []string{"y2", "x3"}},
		{"states", store.SessionFilter{States: []store.SessionState{store.StateEnded, store.StateFailed}}, []string{"w4", "v5"}},
		{"owner", store.SessionFilter{Owner: "d1"}, []string{"z1", "x3", "v5"}},
		{"pool", store.SessionFilter{Pool: "p2"}, []string{"y2", "v5"}},
		{"combined", store.SessionFilter{TenantID: a.ID, Pool: "p1", Owner: "d2"}, []string{"w4"}},
		{"live of owner", store.SessionFilter{Owner: "d1", States: []store.SessionState{store.StatePending, store.StateReady}}, []string{"z1", "x3"}},
		{"limit", store.SessionFilter{Limit: 2}, []string{"z1", "y2"}},
		{"limit with filter", store.SessionFilter{TenantID: b.ID, Limit: 1}, []string{"x3"}},
		{"no match", store.SessionFilter{TenantID: "nobody"}, []string{}},
	}
	for _, tc := range cases {
		list, err := s.ListSessions(ctx, tc.f)
		if err != nil {
			t.Fatalf("%s: ListSessions: %v", tc.name, err)
		}
		if got := ids(list); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: ListSessions(%+v) = %v; want %v", tc.name, tc.f, got, tc.want)
		}
	}
	list, err := s.ListSessions(ctx, store.SessionFilter{TenantID: a.ID, Limit: 1})
	if err != nil || len(list) != 1 || list[0].Pool != "p1" || list[0].Owner != "d1" || list[0].CreatedAt.IsZero() {
		t.Fatalf("ListSessions returned incomplete rows: %+v, %v", list, err)
	}
}

func testSessionCountLive(t *testing.T, s store.Store) {
	ctx := testContext(t)
	a := mustTenant(t, s, "a")
	b := mustTenant(t, s, "b")
	if n, err := s.CountLiveSessions(ctx, a.ID); err != nil || n != 0 {
		t.Fatalf("CountLiveSessions(no sessions) = %d, %v", n, err)
	}
	for _, st := range []store.SessionState{store.StatePending, store.StateClaiming, store.StateStarting, store.StateReady, store.StateEnding, store.StateEnded, store.StateFailed} {
		sess := mustSession(t, s, a.ID, "p")
		setState(t, s, sess.ID, st)
	}
	mustSession(t, s, b.ID, "p")
	if n, err := s.CountLiveSessions(ctx, a.ID); err != nil || n != 5 {
		t.Fatalf("CountLiveSessions = %d, %v; want 5 (all but ended and failed)", n, err)
	}
	if n, err := s.CountLiveSessions(ctx, b.ID); err != nil || n != 1 {
		t.Fatalf("CountLiveSessions(b) = %d, %v; want 1", n, err)
	}
}

func testQueuePosition(t *testing.T, s store.Store) {
	ctx := testContext(t)
	ten := mustTenant(t, s, "a")
	p1 := []*store.Session{mustSession(t, s, ten.ID, "p1"), nil, nil, nil}
	other := mustSession(t, s, ten.ID, "p2")
	for i := 1; i < len(p1); i++ {
		p1[i] = mustSession(t, s, ten.ID, "p1")
	}
	pos := func(id string) int {
		t.Helper()
		n, err := s.QueuePosition(ctx, id)
		if err != nil {
			t.Fatalf("QueuePosition(%s): %v", id, err)
		}
		return n
	}
	for i, sess := range p1 {
		if got := pos(sess.ID); got != i+1 {
			t.Fatalf("QueuePosition of p1 session %d = %d; want %d", i, got, i+1)
		}
	}
	if got := pos(other.ID); got != 1 {
		t.Fatalf("QueuePosition in another pool = %d; want 1 (pools queue separately)", got)
	}
	setState(t, s, p1[0].ID, store.StateClaiming)
	setState(t, s, p1[2].ID, store.StateFailed)
	if got := pos(p1[0].ID); got != 0 {
		t.Fatalf("QueuePosition of a claiming session = %d; want 0", got)
	}
	if got, want := []int{pos(p1[1].ID), pos(p1[3].ID)}, []int{1, 2}; !reflect.DeepEqual(got, want) {
		t.Fatalf("positions after the head left = %v; want %v", got, want)
	}
}

func testTimePrecision(t *testing.T, s store.Store) {
	ctx := testContext(t)
	ten := mustTenant(t, s, "a")
	sess := mustSession(t, s, ten.ID, "p")
	local := time.FixedZone("UTC+5", 5*3600)
	at := time.Date(2030, 5, 6, 7, 8, 9, 123456789, local)
	if _, err := s.UpdateSession(ctx, sess.ID, nil, func(s *store.Session) error {
		s.EndedAt = &at
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSession(ctx, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2030, 5, 6, 2, 8, 9, 123456000, time.UTC)
	if got.EndedAt == nil || !got.EndedAt.Equal(want) || got.EndedAt.Location() != time.UTC {
		t.Fatalf("EndedAt came back as %v; want %v (UTC, microseconds)", got.EndedAt, want)
	}
	if got.CreatedAt.Location() != time.UTC || got.UpdatedAt.Location() != time.UTC {
		t.Fatalf("times not in UTC: %v %v", got.CreatedAt, got.UpdatedAt)
	}
	// Heartbeats keep sub-second precision: 1 ms apart is enough to tell.
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := s.Heartbeat(ctx, "d", base.Add(1500*time.Microsecond)); err != nil {
		t.Fatal(err)
	}
	if dead, err := s.DeadDaemons(ctx, base.Add(time.Millisecond)); err != nil || len(dead) != 0 {
		t.Fatalf("DeadDaemons(1 ms) = %v, %v; want none", dead, err)
	}
	if dead, err := s.DeadDaemons(ctx, base.Add(2*time.Millisecond)); err != nil || len(dead) != 1 {
		t.Fatalf("DeadDaemons(2 ms) = %v, %v; want [d]", dead, err)
	}
}

func newTicket(sessionID, tenantID string, uses int, ttl time.Duration) (*store.Ticket, []byte) {
	h := keyHash(fmt.Sprintf("ticket-%d", sessionSeq.Add(1)))
	return &store.Ticket{
		Hash:      h,
		SessionID: sessionID,
		TenantID:  tenantID,
		Role:      "ro",
		ExpiresAt: time.Now().Add(ttl),
		UsesLeft:  uses,
	}, h
}

func testTicketUse(t *testing.T, s store.Store) {
	ctx := testContext(t)
	tk, h := newTicket("s1", "t1", 2, time.Minute)
	if err := s.CreateTicket(ctx, tk); err != nil {
		t.Fatalf("CreateTicket: %v", err)
	}
	got, err := s.UseTicket(ctx, h, "s1", time.Now())
	if err != nil {
		t.Fatalf("UseTicket: %v", err)
	}
	if got.SessionID != "s1" || got.TenantID != "t1" || got.Role != "ro" || got.UsesLeft != 1 ||
		!reflect.DeepEqual(got.Hash, h) || !got.ExpiresAt.Equal(tk.ExpiresAt) {
		t.Fatalf("UseTicket = %+v; want %+v with one use left", got, tk)
	}
	if got, err := s.UseTicket(ctx, h, "s1", time.Now()); err != nil || got.UsesLeft != 0 {
		t.Fatalf("second use = %+v, %v; want ok with 0 left", got, err)
	}
	if _, err := s.UseTicket(ctx, h, "s1", time.Now()); !errors.Is(err, store.ErrTicketInvalid) {
		t.Fatalf("third use error = %v; want ErrTicketInvalid", err)
	}
	dup, _ := newTicket("s1", "t1", 1, time.Minute)
	dup.Hash = h
	if err := s.CreateTicket(ctx, dup); err != nil && !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CreateTicket(reused hash) error = %v; want nil (the used-up one was swept) or ErrConflict", err)
	}
	live, lh := newTicket("s1", "t1", 1, time.Minute)
	if err := s.CreateTicket(ctx, live); err != nil {
		t.Fatal(err)
	}
	again, _ := newTicket("s2", "t1", 1, time.Minute)
	again.Hash = lh
	if err := s.CreateTicket(ctx, again); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CreateTicket(live duplicate hash) error = %v; want ErrConflict", err)
	}
	if got, err := s.UseTicket(ctx, lh, "s1", time.Now()); err != nil || got.SessionID != "s1" {
		t.Fatalf("the refused duplicate changed the ticket: %+v, %v", got, err)
	}
}

func testTicketExpired(t *testing.T, s store.Store) {
	ctx := testContext(t)
	tk, h := newTicket("s1", "t1", 3, time.Minute)
	if err := s.CreateTicket(ctx, tk); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UseTicket(ctx, h, "s1", tk.ExpiresAt); !errors.Is(err, store.ErrTicketInvalid) {
		t.Fatalf("use at expiry error = %v; want ErrTicketInvalid", err)
	}
	if _, err := s.UseTicket(ctx, h, "s1", tk.ExpiresAt.Add(time.Hour)); !errors.Is(err, store.ErrTicketInvalid) {
		t.Fatalf("use after expiry error = %v; want ErrTicketInvalid", err)
	}
	if got, err := s.UseTicket(ctx, h, "s1", tk.ExpiresAt.Add(-time.Millisecond)); err != nil || got.UsesLeft != 2 {
		t.Fatalf("use just before expiry = %+v, %v; want ok, 2 left (expired tries use nothing)", got, err)
	}
}

// testTicketOtherSession presents a ticket for a session it was not issued
// for: refused, and it spends nothing (else anyone who knows a session id
// could burn a victim's share link by replaying it against that path).
func testTicketOtherSession(t *testing.T, s store.Store) {
	ctx := testContext(t)
	tk, h := newTicket("s1", "t1", 1, time.Minute)
	if err := s.CreateTicket(ctx, tk); err != nil {
		t.Fatal(err)
	}
	for _, sid := range []string{"s2", ""} {
		if _, err := s.UseTicket(ctx, h, sid, time.Now()); !errors.Is(err, store.ErrTicketInvalid) {
			t.Fatalf("UseTicket for session %q error = %v; want ErrTicketInvalid", sid, err)
		}
	}
	if got, err := s.UseTicket(ctx, h, "s1", time.Now()); err != nil || got.UsesLeft != 0 {
		t.Fatalf("use for the right session after refused ones = %+v, %v; want ok with 0 left", got, err)
	}
}

func testTicketInvalid(t *testing.T, s store.Store) {
	ctx := testContext(t)
	for _, h := range [][]byte{keyHash("unknown"), nil} {
		if _, err := s.UseTicket(ctx, h, "s", time.Now()); !errors.Is(err, store.ErrTicketInvalid) {
			t.Fatalf("UseTicket(%x) error = %v; want ErrTicketInvalid", h, err)
		}
	}
	bad := []func(*store.Ticket){
		func(tk *store.Ticket) { tk.Hash = nil },
		func(tk *store.Ticket) { tk.SessionID = "" },
		func(tk *store.Ticket) { tk.TenantID = "" },
		func(tk *store.Ticket) { tk.Role = "admin" },
		func(tk *store.Ticket) { tk.UsesLeft = 0 },
		func(tk *store.Ticket) { tk.ExpiresAt = time.Time{} },
	}
	for i, mut := range bad {
		tk, h := newTicket("s", "t", 1, time.Minute)
		mut(tk)
		if err := s.CreateTicket(ctx, tk); err == nil {
			t.Errorf("bad ticket %d was accepted", i)
		}
		if _, err := s.UseTicket(ctx, h, "s", time.Now()); !errors.Is(err, store.ErrTicketInvalid) {
			t.Errorf("bad ticket %d is usable: %v", i, err)
		}
	}
	if err := s.CreateTicket(ctx, nil); err == nil {
		t.Error("CreateTicket(nil) succeeded")
	}
}

// testTicketRace uses a ticket with uses uses from many goroutines at once,
// spread over two stores; exactly uses of them may succeed.
func testTicketRace(t *testing.T, a, b store.Store, uses int) {
	ctx := testContext(t)
	tk, h := newTicket("s", "t", uses, time.Minute)
	if err := a.CreateTicket(ctx, tk); err != nil {
		t.Fatal(err)
	}
	const n = 16
	var ok, invalid atomic.Int32
	var mu sync.Mutex
	left := map[int]bool{}
	run(n, func(i int) {
		s := a
		if i%2 == 1 {
			s = b
		}
		got, err := s.UseTicket(ctx, h, "s", time.Now())
		switch {
		case err == nil:
			ok.Add(1)
			mu.Lock()
			left[got.UsesLeft] = true
			mu.Unlock()
		case errors.Is(err, store.ErrTicketInvalid):
			invalid.Add(1)
		default:
			t.Errorf("UseTicket: %v", err)
		}
	})
	if int(ok.Load()) != uses || int(invalid.Load()) != n-uses {
		t.Fatalf("racing uses of a %d-use ticket: %d succeeded, %d invalid; want %d and %d", uses, ok.Load(), invalid.Load(), uses, n-uses)
	}
	for i := range uses {
		if !left[i] {
			t.Fatalf("uses left seen by the winners = %v; want each of 0..%d once", left, uses-1)
		}
	}
}

func testTicketDeletedTenant(t *testing.T, s store.Store) {
	ctx := testContext(t)
	ten := mustTenant(t, s, "a")
	tk, h := newTicket("s", ten.ID, 5, time.Hour)
	if err := s.CreateTicket(ctx, tk); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTenant(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UseTicket(ctx, h, "s", time.Now()); !errors.Is(err, store.ErrTicketInvalid) {
		t.Fatalf("a deleted tenant's ticket still works: %v", err)
	}
}

// testTicketKeyRotation: a new key revokes every ticket of that tenant (a
// leaked key must not leave a living share link behind) and no other's.
func testTicketKeyRotation(t *testing.T, s store.Store) {
	ctx := testContext(t)
	a, b := mustTenant(t, s, "a"), mustTenant(t, s, "b")
	tkA, hA := newTicket("s", a.ID, 5, time.Hour)
	tkB, hB := newTicket("s2", b.ID, 5, time.Hour)
	for _, tk := range []*store.Ticket{tkA, tkB} {
		if err := s.CreateTicket(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetTenantKey(ctx, a.ID, keyHash("rotated")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UseTicket(ctx, hA, "s", time.Now()); !errors.Is(err, store.ErrTicketInvalid) {
		t.Fatalf("a ticket survived its tenant's key rotation: %v", err)
	}
	if _, err := s.UseTicket(ctx, hB, "s2", time.Now()); err != nil {
		t.Fatalf("another tenant's ticket was revoked: %v", err)
	}
}

func testDaemons(t *testing.T, s store.Store) {
	ctx := testContext(t)
	t0 := time.Now()
	if dead, err := s.DeadDaemons(ctx, t0.Add(time.Hour)); err != nil || len(dead) != 0 {
		t.Fatalf("DeadDaemons on an empty store = %v, %v", dead, err)
	}
	for id, at := range map[string]time.Time{"d1": t0, "d2": t0.Add(10 * time.Second), "d3": t0.Add(-time.Minute)} {
		if err := s.Heartbeat(ctx, id, at); err != nil {
			t.Fatalf("Heartbeat(%s): %v", id, err)
		}
	}
	check := func(before time.Time, want ...string) {
		t.Helper()
		dead, err := s.DeadDaemons(ctx, before)
		if err != nil {
			t.Fatalf("DeadDaemons: %v", err)
		}
		if want == nil {
			want = []string{}
		}
		if dead == nil {
			dead = []string{}
		}
		if !reflect.DeepEqual(dead, want) {
			t.Fatalf("DeadDaemons(t0%+v) = %v; want %v", before.Sub(t0), dead, want)
		}
	}
	check(t0.Add(-2 * time.Minute))
	check(t0.Add(time.Second), "d1", "d3")
	check(t0, "d3") // strictly older than before
	check(t0.Add(time.Minute), "d1", "d2", "d3")
	// A fresh heartbeat revives d1.
	if err := s.Heartbeat(ctx, "d1", t0.Add(20*time.Second)); err != nil {
		t.Fatal(err)
	}
	check(t0.Add(15*time.Second), "d2", "d3")
	if err := s.ForgetDaemon(ctx, "d3"); err != nil {
		t.Fatalf("ForgetDaemon: %v", err)
	}
	check(t0.Add(15*time.Second), "d2")
	if err := s.ForgetDaemon(ctx, "d3"); err != nil {
		t.Fatalf("ForgetDaemon of a forgotten daemon: %v (want nil: forgetting is idempotent)", err)
	}
	if err := s.Heartbeat(ctx, "", t0); err == nil {
		t.Fatal("Heartbeat with an empty id succeeded")
	}
}

func testTunnels(t *testing.T, s store.Store) {
	ctx := testContext(t)
	now := time.Now()
	if _, _, err := s.TunnelOwner(ctx, "m1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("TunnelOwner with no tunnel = %v; want ErrNotFound", err)
	}
	if err := s.AdvertiseDaemon(ctx, "d1", "10.0.0.1:7781", now); err != nil {
		t.Fatalf("AdvertiseDaemon: %v", err)
	}
	if err := s.AnnounceTunnel(ctx, "m1", "d1", now); err != nil {
		t.Fatalf("AnnounceTunnel: %v", err)
	}
	owner := func(want, wantAddr string) {
		t.Helper()
		d, addr, err := s.TunnelOwner(ctx, "m1")
		if err != nil || d != want || addr != wantAddr {
			t.Fatalf("TunnelOwner(m1) = %q, %q, %v; want %q, %q", d, addr, err, want, wantAddr)
		}
	}
	owner("d1", "10.0.0.1:7781")
	// A heartbeat keeps the advertised address.
	if err := s.Heartbeat(ctx, "d1", now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	owner("d1", "10.0.0.1:7781")
	// The agent redialled and landed on d2, which advertised nothing yet.
	if err := s.AnnounceTunnel(ctx, "m1", "d2", now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	owner("d2", "")
	// d1's late withdrawal must not remove d2's tunnel.
	if err := s.WithdrawTunnel(ctx, "m1", "d1"); err != nil {
		t.Fatal(err)
	}
	owner("d2", "")
	if err := s.WithdrawTunnel(ctx, "m1", "d2"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.TunnelOwner(ctx, "m1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("TunnelOwner after withdrawal = %v; want ErrNotFound", err)
	}
	// Forgetting a dead replica forgets its tunnels.
	if err := s.AnnounceTunnel(ctx, "m2", "d1", now); err != nil {
		t.Fatal(err)
	}
	if err := s.ForgetDaemon(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.TunnelOwner(ctx, "m2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("TunnelOwner after ForgetDaemon = %v; want ErrNotFound", err)
	}
	if err := s.AnnounceTunnel(ctx, "", "d1", now); err == nil {
		t.Fatal("AnnounceTunnel with an empty machine id succeeded")
	}
	if err := s.AdvertiseDaemon(ctx, "", "x", now); err == nil {
		t.Fatal("AdvertiseDaemon with an empty id succeeded")
	}
}

func testUseToken(t *testing.T, s store.Store) {
	ctx := testContext(t)
	now := time.Now()
	use := func(key string, until, at time.Time, want bool) {
		t.Helper()
		fresh, err := s.UseToken(ctx, key, until, at)
		if err != nil || fresh != want {
			t.Fatalf("UseToken(%s) = %v, %v; want %v", key, fresh, err, want)
		}
	}
	use("a", now.Add(time.Minute), now, true)
	use("a", now.Add(time.Minute), now, false) // replayed
	use("b", now.Add(time.Minute), now, true)
	// Once a key has expired it is swept; the token itself is expired by
	// then, so its verifier refuses it before asking here.
	use("a", now.Add(3*time.Minute), now.Add(2*time.Minute), true)
	if _, err := s.UseToken(ctx, "", now, now); err == nil {
		t.Fatal("UseToken with an empty key succeeded")
	}
}

func testUseTokenRace(t *testing.T, s store.Store) {
	ctx := testContext(t)
	now := time.Now()
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fresh, err := s.UseToken(ctx, "k", now.Add(time.Minute), now)
			if err != nil {
				t.Errorf("UseToken: %v", err)
			}
			if fresh {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d concurrent uses of one token succeeded; want 1", wins.Load())
	}
}

func testLeaderSingle(t *testing.T, s store.Store) {
	ctx := testContext(t)
	ok, release, err := s.TryLeader(ctx, "reconciler")
	if err != nil || !ok || release == nil {
		t.Fatalf("TryLeader on a fresh store = %v, %v; want granted", ok, err)
	}
	release()
	release()
	ok, release, err = s.TryLeader(ctx, "reconciler")
	if err != nil || !ok {
		t.Fatalf("TryLeader after release = %v, %v; want granted", ok, err)
	}
	release()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if ok, release, err := s.TryLeader(cancelled, "other"); err == nil || ok {
		t.Fatalf("TryLeader with a cancelled context = %v, %v; want an error", ok, err)
	} else if release == nil {
		t.Fatal("TryLeader returned a nil release with its error")
	}
}

// Columns is implemented by the stores of package store, so that this suite
// can check the schema without knowing the backend.
type columnLister interface {
	Columns(ctx context.Context) (map[string][]string, error)
}

var credentialColumn = regexp.MustCompile(`(?i)token|key|secret|passw|credential|oauth|bearer|ticket`)

func testNoCredentialColumns(t *testing.T, s store.Store) {
	cl, ok := s.(columnLister)
	if !ok {
		t.Fatalf("%T does not list its columns (Columns(ctx) (map[string][]string, error))", s)
	}
	cols, err := cl.Columns(testContext(t))
	if err != nil {
		t.Fatalf("Columns: %v", err)
	}
	for _, table := range []string{"tenants", "sessions", "tickets", "daemons", "schema_migrations"} {
		if len(cols[table]) == 0 {
			t.Fatalf("table %s missing from the schema: %v", table, cols)
		}
	}
	allowed := map[string]bool{"tenants.key_hash": true, "tickets.hash": true, "used_tokens.hash": true}
	for table, names := range cols {
		for _, c := range names {
			full := table + "." + c
			if allowed[full] {
				continue
			}
			if credentialColumn.MatchString(c) {
				t.Errorf("column %s looks like it holds a credential; the store keeps hashes only", full)
			}
		}
	}
	if !contains(cols["tenants"], "key_hash") || !contains(cols["tickets"], "hash") {
		t.Fatalf("hash columns missing: %v", cols)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func testClose(t *testing.T, s store.Store) {
	ten := mustTenant(t, s, "a")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := testContext(t)
	if _, err := s.GetTenant(ctx, ten.ID); err == nil {
		t.Fatal("GetTenant after Close succeeded")
	}
	if err := s.CreateTenant(ctx, &store.Tenant{Name: "b"}); err == nil {
		t.Fatal("CreateTenant after Close succeeded")
	}
}

// testPendingDestroys: destroys owed are kept with their first reason and
// time, count attempts, keep the last error, list oldest first and are
// forgotten when done.
func testPendingDestroys(t *testing.T, s store.Store) {
	ctx := testContext(t)
	t0 := time.Now().Truncate(time.Second)
	if ps, err := s.PendingDestroys(ctx, 0); err != nil || len(ps) != 0 {
		t.Fatalf("PendingDestroys on an empty store = %v, %v", ps, err)
	}
	if err := s.RecordDestroy(ctx, "", "m1", "r", "", t0); err == nil {
		t.Fatal("RecordDestroy without an app succeeded")
	}
	if err := s.RecordDestroy(ctx, "app", "m2", "claim aborted", "409 leased", t0.Add(time.Second)); err != nil {
		t.Fatalf("RecordDestroy(m2): %v", err)
	}
	if err := s.RecordDestroy(ctx, "app", "m1", "replica restarted", "", t0); err != nil {
		t.Fatalf("RecordDestroy(m1): %v", err)
	}
	// Again: an attempt more, the first reason and time kept, the error updated.
	if err := s.RecordDestroy(ctx, "app", "m2", "other reason", "503", t0.Add(time.Minute)); err != nil {
		t.Fatalf("RecordDestroy(m2) again: %v", err)
	}
	if err := s.RecordDestroy(ctx, "app", "m2", "other reason", "", t0.Add(2*time.Minute)); err != nil {
		t.Fatalf("RecordDestroy(m2) a third time: %v", err)
	}
	ps, err := s.PendingDestroys(ctx, 0)
	if err != nil {
		t.Fatalf("PendingDestroys: %v", err)
	}
	if len(ps) != 2 || ps[0].MachineID != "m1" || ps[1].MachineID != "m2" {
		t.Fatalf("PendingDestroys = %+v; want m1, m2", ps)
	}
	m2 := ps[1]
	if m2.App != "app" || m2.Reason != "claim aborted" || !m2.Since.Equal(t0.Add(time.Second)) || m2.Attempts != 3 || m2.LastError != "503" {
		t.Errorf("m2 = %+v; want first reason and time, 3 attempts, last error 503", m2)
	}
	if ps, err := s.PendingDestroys(ctx, 1); err != nil || len(ps) != 1 || ps[0].MachineID != "m1" {
		t.Errorf("PendingDestroys(limit 1) = %v, %v", ps, err)
	}
	if err := s.DestroyDone(ctx, "app", "m1"); err != nil {
		t.Fatalf("DestroyDone(m1): %v", err)
	}
	if err := s.DestroyDone(ctx, "app", "unknown"); err != nil {
		t.Fatalf("DestroyDone(unknown): %v", err)
	}
	if ps, err := s.PendingDestroys(ctx, 0); err != nil || len(ps) != 1 || ps[0].MachineID != "m2" {
		t.Errorf("after DestroyDone: %v, %v", ps, err)
	}
}

// testRate checks ReserveRate as a shared token bucket: a and b (the same
// store, or two replicas of one) draw from one budget per key.
func testRate(t *testing.T, a, b store.Store) {
	ctx := testContext(t)
	const interval = time.Hour // nothing refills during the test
	for i, s := range []store.Store{a, b, a} {
		d, err := s.ReserveRate(ctx, "machine_start/app/m1", interval, 3)
		if err != nil || d != 0 {
			t.Fatalf("reservation %d within the burst: wait %v, %v", i, d, err)
		}
	}
	d, err := b.ReserveRate(ctx, "machine_start/app/m1", interval, 3)
	if err != nil || d < interval-time.Minute || d > interval {
		t.Fatalf("4th reservation: wait %v, %v; want about %v", d, err, interval)
	}
	if d, err := b.ReserveRate(ctx, "machine_start/app/m2", interval, 3); err != nil || d != 0 {
		t.Fatalf("another bucket: wait %v, %v", d, err)
	}
	if _, err := a.ReserveRate(ctx, "", interval, 3); err == nil {
		t.Fatal("empty key accepted")
	}
}

func testSnapshots(t *testing.T, s store.Store) {
	ctx := testContext(t)
	if _, _, err := s.LoadSnapshot(ctx, "pool-app/a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing snapshot: %v", err)
	}
	t0 := time.Now().Truncate(time.Millisecond)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.SaveSnapshot(ctx, "pool-app/a", []byte(`[1]`), t0))
	must(s.SaveSnapshot(ctx, "pool-app/a", []byte(`[0]`), t0.Add(-time.Second))) // older: ignored
	data, at, err := s.LoadSnapshot(ctx, "pool-app/a")
	if err != nil || string(data) != `[1]` || !at.Equal(t0) {
		t.Fatalf("snapshot = %s at %v, %v; want [1] at %v", data, at, err, t0)
	}
	must(s.SaveSnapshot(ctx, "pool-app/a", []byte(`[2]`), t0.Add(time.Second)))
	if data, _, _ := s.LoadSnapshot(ctx, "pool-app/a"); string(data) != `[2]` {
		t.Fatalf("newer snapshot not saved: %s", data)
	}
}
