// Package auth makes and checks the daemon's bearer secrets: tenant API
// keys, the admin key and WebSocket tickets. Only SHA-256 hashes of them are
// stored; the secrets are shown once and compared in constant time.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hangarhq/hangar/daemon/store"
)

// Prefixes make leaked secrets recognisable (and greppable by secret scanners).
const (
	TenantKeyPrefix = "hgr_"
	TicketPrefix    = "hgt_"
)

// ErrUnauthenticated is returned for a missing or wrong credential.
var ErrUnauthenticated = errors.New("missing or invalid credentials")

// NewSecret returns prefix + 32 random bytes in URL-safe base64.
func NewSecret(prefix string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random secret: %w", err)
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// Hash is the stored form of a secret.
func Hash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// Equal compares two secrets in constant time (through their hashes, so
// that their lengths leak nothing either).
func Equal(a, b string) bool {
	return subtle.ConstantTimeCompare(Hash(a), Hash(b)) == 1
}

// BearerToken returns the token of an "Authorization: Bearer" header, or "".
func BearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// Authenticator resolves bearer secrets to tenants or the admin.
type Authenticator struct {
	Store    store.Store
	AdminKey string // empty: no admin access at all
}

// Tenant returns the tenant whose API key is key.
func (a *Authenticator) Tenant(ctx context.Context, key string) (*store.Tenant, error) {
	if key == "" || !strings.HasPrefix(key, TenantKeyPrefix) {
		return nil, ErrUnauthenticated
	}
	h := Hash(key)
	t, err := a.Store.TenantByKeyHash(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, fmt.Errorf("look up tenant key: %w", err)
	}
	// The lookup went through an index on the hash; compare again in
	// constant time so that a store returning a near match cannot matter.
	if subtle.ConstantTimeCompare(t.KeyHash, h) != 1 {
		return nil, ErrUnauthenticated
	}
	return t, nil
}

// Admin reports whether key is the admin key.
func (a *Authenticator) Admin(key string) bool {
	if a.AdminKey == "" || key == "" {
		return false
	}
	return Equal(a.AdminKey, key)
}

// Ticket limits.
const (
	DefaultTicketTTL = 60 * time.Second
	MaxRWTicketTTL   = time.Hour
	MaxROTicketTTL   = 24 * time.Hour
	MaxRWTicketUses  = 10
	MaxROTicketUses  = 10000
)

// UseTicket consumes one use of a ticket issued for sessionID and returns
// it. A ticket for another session is ErrUnauthenticated and keeps its uses.
func (a *Authenticator) UseTicket(ctx context.Context, ticket, sessionID string, now time.Time) (*store.Ticket, error) {
	if !strings.HasPrefix(ticket, TicketPrefix) {
		return nil, ErrUnauthenticated
	}
	t, err := a.Store.UseTicket(ctx, Hash(ticket), sessionID, now)
	if errors.Is(err, store.ErrTicketInvalid) || errors.Is(err, store.ErrNotFound) {
		return nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, fmt.Errorf("use ticket: %w", err)
	}
	return t, nil
}
