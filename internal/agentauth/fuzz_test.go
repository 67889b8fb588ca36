package agentauth

import (
	"crypto/ed25519"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// fuzzNow is the clock of the fuzz target's signer and verifier, so that a
// committed seed token stays inside its lifetime for ever.
var fuzzNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func fuzzKey() ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i + 1)
	}
	return ed25519.NewKeyFromSeed(seed)
}

// FuzzVerify: any Authorization header either fails with ErrUnauthorized or
// yields the claims of a token the broker key really signed for this
// machine (only the seeds' subjects exist), never a panic.
func FuzzVerify(f *testing.F) {
	s := NewSigner(fuzzKey())
	s.now = func() time.Time { return fuzzNow }
	for _, sub := range []string{"s-1", "other"} {
		tok, err := s.Token("m-1", sub)
		if err != nil {
			f.Fatal(err)
		}
		f.Add("Bearer " + tok)
		f.Add("bearer " + tok + " ")
		parts := strings.Split(tok, ".")
		f.Add("Bearer " + parts[0] + "." + parts[1] + ".")
		f.Add("Bearer eyJhbGciOiJub25lIn0." + parts[1] + ".")
	}
	other, _ := s.Token("m-2", "s-1")
	f.Add("Bearer " + other)
	for _, h := range []string{"", "Bearer", "Bearer ", "Basic abc", "Bearer a.b.c", "Bearer ...", "Bearer e30.e30.e30"} {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, header string) {
		v, err := NewVerifier([]ed25519.PublicKey{s.PublicKey()}, "m-1")
		if err != nil {
			t.Fatal(err)
		}
		v.SetClock(func() time.Time { return fuzzNow })
		r, _ := http.NewRequest(http.MethodGet, "http://agent/v1/status", nil)
		r.Header.Set("Authorization", header)
		c, err := v.VerifyRequest(r)
		if err != nil {
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("error %v is not ErrUnauthorized", err)
			}
			return
		}
		if c.MachineID != "m-1" || (c.SessionID != "s-1" && c.SessionID != "other") || c.ID == "" ||
			c.ExpiresAt.Sub(c.IssuedAt) > MaxLifetime {
			t.Fatalf("accepted %q with claims %+v", header, c)
		}
		// A token is accepted once.
		if _, err := v.VerifyRequest(r); err == nil {
			t.Fatalf("%q accepted twice", header)
		}
	})
}
