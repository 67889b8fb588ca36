package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/hangarhq/hangar/daemon/store"
)

// watchSessions subscribes to s's session notices for the rest of t.
func watchSessions(t *testing.T, s store.Store) <-chan store.SessionChange {
	t.Helper()
	ch := make(chan store.SessionChange, 64)
	cancel := s.Notifier().Subscribe(store.ChannelSessions, func(msg string) {
		if c, ok := store.ParseSessionChange(msg); ok {
			select {
			case ch <- c:
			default: // a full buffer fails the test by timing out below
			}
		}
	})
	t.Cleanup(cancel)
	return ch
}

// awaitChange waits (up to ctx's deadline) for the notice of session id in
// state want, skipping others.
func awaitChange(ctx context.Context, t *testing.T, ch <-chan store.SessionChange, id string, want store.SessionState) store.SessionChange {
	t.Helper()
	for {
		select {
		case c := <-ch:
			if c.ID == id && c.State == want {
				return c
			}
		case <-ctx.Done():
			t.Fatalf("no notice of session %s becoming %s", id, want)
			return store.SessionChange{}
		}
	}
}

// testSessionNotices: every session write through a store is announced on
// its own notifier, with the fields subscribers filter on.
func testSessionNotices(t *testing.T, s store.Store) {
	testNoticesAcross(t, s, s)
	// A cancelled subscription hears nothing more; publishing is fine.
	ctx := testContext(t)
	got := make(chan string, 1)
	cancel := s.Notifier().Subscribe("other", func(msg string) {
		select {
		case got <- msg:
		default:
		}
	})
	if err := s.Notifier().Publish(ctx, "other", "hello"); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "hello" {
			t.Fatalf("got %q, want hello", m)
		}
	case <-ctx.Done():
		t.Fatal("no notice on channel other")
	}
	cancel()
	cancel()
}

// testNoticesAcross: a session written through a is announced to b's
// subscribers (b is a on one store, another replica's store on Postgres).
func testNoticesAcross(t *testing.T, a, b store.Store) {
	ctx := testContext(t)
	ch := watchSessions(t, b)
	ten := mustTenant(t, a, fmt.Sprintf("notices-%d", sessionSeq.Add(1)))
	sess := mustSession(t, a, ten.ID, "pool")
	c := awaitChange(ctx, t, ch, sess.ID, store.StatePending)
	if c.TenantID != ten.ID || c.Pool != "pool" {
		t.Fatalf("notice %+v: want tenant %s, pool pool", c, ten.ID)
	}
	if _, err := a.UpdateSession(ctx, sess.ID, nil, func(s *store.Session) error {
		s.State, s.Owner = store.StateClaiming, "d-1"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if c := awaitChange(ctx, t, ch, sess.ID, store.StateClaiming); c.Owner != "d-1" {
		t.Fatalf("notice %+v: want owner d-1", c)
	}
}
