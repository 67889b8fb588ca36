package server

import (
	"strings"
	"testing"
)

func TestAttachCounter(t *testing.T) {
	c := newAttachCounter(AttachLimits{PerSession: 3, PerTicket: 2, PerTenant: 4})
	var rel []func()
	take := func(sess, ticket, tenant, wantErr string) {
		t.Helper()
		r, err := c.acquire(sess, ticket, tenant)
		switch {
		case wantErr == "" && err != nil:
			t.Fatalf("acquire(%s, %s, %s): %v", sess, ticket, tenant, err)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Fatalf("acquire(%s, %s, %s) = %v; want an error about %s", sess, ticket, tenant, err, wantErr)
		case err == nil:
			rel = append(rel, r)
		}
	}
	take("s1", "k1", "a", "")
	take("s1", "k1", "a", "")
	take("s1", "k1", "a", "this ticket")
	take("s1", "", "a", "")
	take("s1", "", "a", "this session")
	take("s2", "", "a", "")
	take("s3", "", "a", "this tenant")
	take("s3", "", "b", "") // another tenant is not affected
	// A refused acquire took nothing; a release frees every slot it took.
	rel[0]()
	rel[0]() // twice is harmless
	take("s1", "k1", "a", "")
	if n := len(c.n); n == 0 {
		t.Fatal("counts vanished")
	}
	for _, r := range rel {
		r()
	}
	if len(c.n) != 0 {
		t.Fatalf("counts left after every release: %v", c.n)
	}
	// Negative limits mean none.
	u := newAttachCounter(AttachLimits{PerSession: -1, PerTicket: -1, PerTenant: -1})
	for range 1000 {
		if _, err := u.acquire("s", "k", "t"); err != nil {
			t.Fatal(err)
		}
	}
}
