package agentauth

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func mustKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyEncoding(t *testing.T) {
	k := mustKey(t)
	for _, s := range []string{EncodePrivateKey(k), base64.StdEncoding.EncodeToString(k), " " + EncodePrivateKey(k) + "\n"} {
		got, err := ParsePrivateKey(s)
		if err != nil || !got.Equal(k) {
			t.Fatalf("parse %q: %v", s, err)
		}
	}
	pub := k.Public().(ed25519.PublicKey)
	got, err := ParsePublicKey(EncodePublicKey(pub))
	if err != nil || !got.Equal(pub) {
		t.Fatalf("public round trip: %v", err)
	}
	k2 := mustKey(t)
	keys, err := ParsePublicKeys(EncodePublicKeys(pub, k2.Public().(ed25519.PublicKey)) + ",")
	if err != nil || len(keys) != 2 {
		t.Fatalf("list: %v %d", err, len(keys))
	}
	for _, bad := range []string{"", ",", "abc", base64.StdEncoding.EncodeToString([]byte("short"))} {
		if _, err := ParsePublicKeys(bad); err == nil {
			t.Errorf("ParsePublicKeys(%q) accepted", bad)
		}
	}
	if _, err := ParsePrivateKey("nope!"); err == nil {
		t.Error("bad private key accepted")
	}
}

func TestVerify(t *testing.T) {
	k, other := mustKey(t), mustKey(t)
	signer := NewSigner(k)
	v, err := NewVerifier([]ed25519.PublicKey{other.Public().(ed25519.PublicKey), signer.PublicKey()}, "m1")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := signer.Token("m1", "s1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(tok)
	if err != nil {
		t.Fatalf("valid token refused: %v", err)
	}
	if c.SessionID != "s1" || c.MachineID != "m1" || c.ID == "" {
		t.Errorf("claims %+v", c)
	}
	if _, err := v.Verify(tok); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("replay accepted: %v", err)
	}

	now := time.Now()
	sign := func(method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	base := func() jwt.MapClaims {
		return jwt.MapClaims{"aud": "m1", "sub": "s1", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": randomString(t)}
	}
	otherMachine, _ := signer.Token("m2", "s1")
	badSig, _ := NewSigner(mustKey(t)).Token("m1", "s1")
	cases := map[string]string{
		"other machine": otherMachine,
		"bad signature": badSig,
		"alg none":      sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, base()),
		"hmac":          sign(jwt.SigningMethodHS256, []byte("secret"), base()),
		"expired": sign(jwt.SigningMethodEdDSA, k, func() jwt.MapClaims {
			c := base()
			c["iat"], c["exp"] = now.Add(-4*time.Minute).Unix(), now.Add(-2*time.Minute).Unix()
			return c
		}()),
		"too long": sign(jwt.SigningMethodEdDSA, k, func() jwt.MapClaims { c := base(); c["exp"] = now.Add(time.Hour).Unix(); return c }()),
		"no exp":   sign(jwt.SigningMethodEdDSA, k, func() jwt.MapClaims { c := base(); delete(c, "exp"); return c }()),
		"no iat":   sign(jwt.SigningMethodEdDSA, k, func() jwt.MapClaims { c := base(); delete(c, "iat"); return c }()),
		"no jti":   sign(jwt.SigningMethodEdDSA, k, func() jwt.MapClaims { c := base(); delete(c, "jti"); return c }()),
		"future iat": sign(jwt.SigningMethodEdDSA, k, func() jwt.MapClaims {
			c := base()
			c["iat"], c["exp"] = now.Add(10*time.Minute).Unix(), now.Add(11*time.Minute).Unix()
			return c
		}()),
		"garbage": "a.b.c",
		"empty":   "",
	}
	for name, tok := range cases {
		if _, err := v.Verify(tok); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
	good := sign(jwt.SigningMethodEdDSA, k, base())
	if _, err := v.Verify(good); err != nil {
		t.Errorf("hand-made valid token refused: %v", err)
	}
}

func TestBearer(t *testing.T) {
	r, _ := http.NewRequest("GET", "/", nil)
	if _, err := BearerToken(r); err == nil {
		t.Error("no header accepted")
	}
	r.Header.Set("Authorization", "Bearer abc")
	if tok, err := BearerToken(r); err != nil || tok != "abc" {
		t.Errorf("bearer: %q %v", tok, err)
	}
	r.Header.Set("Authorization", "Basic abc")
	if _, err := BearerToken(r); err == nil {
		t.Error("basic accepted")
	}
}

func TestSignerLifetimeCapped(t *testing.T) {
	s := NewSigner(mustKey(t)).WithLifetime(time.Hour)
	tok, _ := s.Token("m", "s")
	var rc jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &rc); err != nil {
		t.Fatal(err)
	}
	if d := rc.ExpiresAt.Sub(rc.IssuedAt.Time); d > MaxLifetime {
		t.Errorf("lifetime %s", d)
	}
	if !strings.Contains(tok, ".") {
		t.Error("not a JWT")
	}
}

func randomString(t *testing.T) string {
	s, err := randomID()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
