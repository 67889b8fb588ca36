// Package agentauth authenticates the daemon to the agents: every daemon
// replica shares one ed25519 broker key and signs a short-lived EdDSA JWT per
// agent call (aud = the Fly machine id, sub = the session id); agents verify
// it against the public key(s) from HANGAR_BROKER_PUBLIC_KEY.
package agentauth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxLifetime is the longest a token may live (exp - iat).
const MaxLifetime = 5 * time.Minute

// DefaultLifetime is the lifetime of tokens made by a Signer unless changed.
const DefaultLifetime = 2 * time.Minute

// Leeway tolerates clock skew between daemon and agent on exp and iat.
const Leeway = 30 * time.Second

// EnvPublicKey is the agent's env variable holding the broker public key(s).
const EnvPublicKey = "HANGAR_BROKER_PUBLIC_KEY"

// GenerateKey makes a new broker key pair.
func GenerateKey() (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return priv, nil
}

// EncodePrivateKey renders a private key as standard base64 of its 32-byte
// seed, the form ParsePrivateKey and key files accept.
func EncodePrivateKey(k ed25519.PrivateKey) string {
	return base64.StdEncoding.EncodeToString(k.Seed())
}

// EncodePublicKey renders a public key as standard base64 of its 32 raw bytes,
// the form of HANGAR_BROKER_PUBLIC_KEY.
func EncodePublicKey(k ed25519.PublicKey) string {
	return base64.StdEncoding.EncodeToString(k)
}

// ParsePrivateKey reads a private key given as base64 (standard or URL, padded
// or not) or hex of the 32-byte seed or the 64-byte private key, or as a PEM
// "PRIVATE KEY" (PKCS#8) block. Surrounding whitespace is ignored.
func ParsePrivateKey(s string) (ed25519.PrivateKey, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("parse broker private key: empty")
	}
	if strings.HasPrefix(s, "-----BEGIN") {
		block, _ := pem.Decode([]byte(s))
		if block == nil {
			return nil, errors.New("parse broker private key: bad PEM")
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse broker private key: %w", err)
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("parse broker private key: PEM holds %T, not ed25519", k)
		}
		return ek, nil
	}
	raw, err := decodeBytes(s)
	if err != nil {
		return nil, fmt.Errorf("parse broker private key: %w", err)
	}
	switch len(raw) {
	case ed25519.SeedSize:
		return ed25519.NewKeyFromSeed(raw), nil
	case ed25519.PrivateKeySize:
		k := ed25519.PrivateKey(raw)
		// The second half must be the public key of the first, or the key is corrupt.
		if !ed25519.NewKeyFromSeed(k.Seed()).Equal(k) {
			return nil, errors.New("parse broker private key: inconsistent 64-byte key")
		}
		return k, nil
	}
	return nil, fmt.Errorf("parse broker private key: %d bytes, want 32 (seed) or 64", len(raw))
}

// LoadPrivateKeyFile reads a private key file in any form ParsePrivateKey accepts.
func LoadPrivateKeyFile(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read broker key file: %w", err)
	}
	k, err := ParsePrivateKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// ParsePublicKey reads one public key: base64 (standard or URL, padded or not)
// of the 32 raw bytes.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	raw, err := decodeBytes(s)
	if err != nil {
		return nil, fmt.Errorf("parse broker public key: %w", err)
	}
	if len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("parse broker public key: %d bytes, want %d", len(raw), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(raw), nil
}

// ParsePublicKeys reads a comma-separated list of public keys (several during
// a rotation). At least one key is required; empty items are ignored.
func ParsePublicKeys(s string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for i, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, err := ParsePublicKey(part)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no broker public key")
	}
	return keys, nil
}

// EncodePublicKeys joins keys into the comma-separated env form.
func EncodePublicKeys(keys ...ed25519.PublicKey) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = EncodePublicKey(k)
	}
	return strings.Join(parts, ",")
}

func decodeBytes(s string) ([]byte, error) {
	if len(s) == 2*ed25519.SeedSize || len(s) == 2*ed25519.PrivateKeySize {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64 or hex")
}

// Signer mints agent tokens with the broker private key. Safe for concurrent use.
type Signer struct {
	key      ed25519.PrivateKey
	lifetime time.Duration
	now      func() time.Time
}

// NewSigner returns a Signer minting tokens of DefaultLifetime.
func NewSigner(key ed25519.PrivateKey) *Signer {
	return &Signer{key: key, lifetime: DefaultLifetime, now: time.Now}
}

// WithLifetime returns a copy of s minting tokens that live d (capped at MaxLifetime).
func (s *Signer) WithLifetime(d time.Duration) *Signer {
	c := *s
	if d <= 0 || d > MaxLifetime {
		d = MaxLifetime
	}
	c.lifetime = d
	return &c
}

// PublicKey returns the public half of the signing key.
func (s *Signer) PublicKey() ed25519.PublicKey {
	return s.key.Public().(ed25519.PublicKey)
}

// Token returns a fresh single-use token for one call to the agent on
// machineID serving sessionID. Each call gets a new jti: agents refuse a
// replayed token, so never reuse one across calls or reconnects.
func (s *Signer) Token(machineID, sessionID string) (string, error) {
	if machineID == "" {
		return "", errors.New("sign agent token: empty machine id")
	}
	now := s.now()
	jti, err := randomID()
	if err != nil {
		return "", err
	}
	claims := jwt.RegisteredClaims{
		Audience:  jwt.ClaimStrings{machineID},
		Subject:   sessionID,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(s.lifetime)),
		ID:        jti,
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(s.key)
	if err != nil {
		return "", fmt.Errorf("sign agent token: %w", err)
	}
	return tok, nil
}

// Sign returns the raw ed25519 signature of msg by the broker key. It is for
// proofs of key possession (internal/tunnel): msg must be domain-separated by
// the caller so that it can never be mistaken for a token's signing input.
func (s *Signer) Sign(msg []byte) []byte {
	return ed25519.Sign(s.key, msg)
}

// VerifySignature reports whether sig is a valid ed25519 signature of msg by
// any of keys (a rotation list); malformed keys never match.
func VerifySignature(keys []ed25519.PublicKey, msg, sig []byte) bool {
	if len(sig) != ed25519.SignatureSize {
		return false
	}
	for _, k := range keys {
		if len(k) == ed25519.PublicKeySize && ed25519.Verify(k, msg, sig) {
			return true
		}
	}
	return false
}

func randomID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random jti: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ErrUnauthorized is matched (errors.Is) by every verification failure.
var ErrUnauthorized = errors.New("unauthorized")

// Claims are the verified facts of a token.
type Claims struct {
	MachineID string
	SessionID string
	ID        string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Verifier checks agent tokens for one machine. Safe for concurrent use.
type Verifier struct {
	keys      []ed25519.PublicKey
	machineID string
	now       func() time.Time

	mu   sync.Mutex
	seen map[string]time.Time // jti -> when it may be forgotten
}

// NewVerifier returns a Verifier accepting tokens signed by any of keys and
// addressed to machineID.
func NewVerifier(keys []ed25519.PublicKey, machineID string) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("new verifier: no public key")
	}
	if machineID == "" {
		return nil, errors.New("new verifier: empty machine id")
	}
	return &Verifier{keys: keys, machineID: machineID, now: time.Now, seen: map[string]time.Time{}}, nil
}

// SetClock replaces the clock (tests).
func (v *Verifier) SetClock(now func() time.Time) { v.now = now }

func unauthorized(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnauthorized, fmt.Sprintf(format, args...))
}

// Verify checks a token: algorithm EdDSA only (alg none and all others are
// refused), a signature by one of the keys, aud = the machine id, exp and iat
// present and valid (with Leeway), a lifetime of at most MaxLifetime, a jti,
// and no earlier use of that jti.
func (v *Verifier) Verify(token string) (*Claims, error) {
	var rc jwt.RegisteredClaims
	keyset := jwt.VerificationKeySet{}
	for _, k := range v.keys {
		keyset.Keys = append(keyset.Keys, k)
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithAudience(v.machineID),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(v.now),
	)
	if _, err := parser.ParseWithClaims(token, &rc, func(*jwt.Token) (any, error) { return keyset, nil }); err != nil {
		return nil, unauthorized("%v", err)
	}
	if rc.IssuedAt == nil {
		return nil, unauthorized("token has no iat")
	}
	iat, exp := rc.IssuedAt.Time, rc.ExpiresAt.Time
	if exp.Sub(iat) > MaxLifetime {
		return nil, unauthorized("token lifetime %s exceeds %s", exp.Sub(iat), MaxLifetime)
	}
	if rc.ID == "" {
		return nil, unauthorized("token has no jti")
	}
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	for id, until := range v.seen {
		if now.After(until) {
			delete(v.seen, id)
		}
	}
	if _, dup := v.seen[rc.ID]; dup {
		return nil, unauthorized("token replayed")
	}
	v.seen[rc.ID] = exp.Add(Leeway)
	return &Claims{MachineID: v.machineID, SessionID: rc.Subject, ID: rc.ID, IssuedAt: iat, ExpiresAt: exp}, nil
}

// BearerToken extracts the token of an "Authorization: Bearer" header.
func BearerToken(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", unauthorized("missing bearer token")
	}
	return strings.TrimSpace(h[len(prefix):]), nil
}

// VerifyRequest verifies the bearer token of r.
func (v *Verifier) VerifyRequest(r *http.Request) (*Claims, error) {
	tok, err := BearerToken(r)
	if err != nil {
		return nil, err
	}
	return v.Verify(tok)
}
