package tunnel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Identity is the verified claims of a Fly machine OIDC token.
type Identity struct {
	Issuer         string
	Subject        string
	ID             string // jti
	AppID          string
	AppName        string
	Image          string
	ImageDigest    string
	MachineID      string
	MachineName    string
	MachineVersion string
	OrgID          string
	OrgName        string
	Region         string
	IssuedAt       time.Time
	Expiry         time.Time
}

// Verifier checks an agent's token and says which machine it is.
type Verifier interface {
	Verify(ctx context.Context, raw string) (*Identity, error)
}

// ReplayGuard makes a token single-use. Use reports whether key is new and
// records it until the given time; the daemon gives one backed by its store
// so that replicas share it.
type ReplayGuard interface {
	Use(ctx context.Context, key string, until time.Time) (fresh bool, err error)
}

// OIDCConfig configures an OIDCVerifier.
type OIDCConfig struct {
	Issuer     string       // e.g. https://oidc.fly.io/<org-slug>; discovery at Issuer/.well-known/openid-configuration
	Audience   string       // the daemon URL agents dial (tokens must name it in aud)
	HTTPClient *http.Client // for discovery and the JWKS; http.DefaultClient when nil
	Replay     ReplayGuard  // NewMemoryReplayGuard() when nil
	Now        func() time.Time
}

// OIDCVerifier verifies Fly machine OIDC tokens: signature against the
// issuer's JWKS (cached; refreshed on an unknown key id), issuer, audience,
// expiry, machine_id present, and single use.
type OIDCVerifier struct {
	cfg OIDCConfig
	sem chan struct{} // one discovery at a time

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
}

// NewOIDCVerifier returns a verifier. Discovery is lazy: it happens on the
// first Verify and is retried by later ones until it succeeds.
func NewOIDCVerifier(cfg OIDCConfig) (*OIDCVerifier, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("tunnel: OIDC issuer is required")
	}
	if cfg.Audience == "" {
		return nil, errors.New("tunnel: OIDC audience is required")
	}
	cfg.Audience = strings.TrimRight(cfg.Audience, "/")
	if cfg.Replay == nil {
		cfg.Replay = NewMemoryReplayGuard()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &OIDCVerifier{cfg: cfg, sem: make(chan struct{}, 1)}, nil
}

func (v *OIDCVerifier) idVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	v.mu.Lock()
	iv := v.verifier
	v.mu.Unlock()
	if iv != nil {
		return iv, nil
	}
	select {
	case v.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
	defer func() { <-v.sem }()
	v.mu.Lock()
	iv = v.verifier
	v.mu.Unlock()
	if iv != nil {
		return iv, nil
	}
	dctx := ctx
	if v.cfg.HTTPClient != nil {
		dctx = oidc.ClientContext(ctx, v.cfg.HTTPClient)
	}
	p, err := oidc.NewProvider(dctx, v.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("%w: discovery of %s: %w", ErrUnavailable, v.cfg.Issuer, err)
	}
	// Provider.Verifier fetches the JWKS with the discovery client and a
	// background context: the key cache outlives this call.
	iv = p.Verifier(&oidc.Config{ClientID: v.cfg.Audience, Now: v.cfg.Now})
	v.mu.Lock()
	v.verifier = iv
	v.mu.Unlock()
	return iv, nil
}

type flyClaims struct {
	ID             string `json:"jti"`
	AppID          string `json:"app_id"`
	AppName        string `json:"app_name"`
	Image          string `json:"image"`
	ImageDigest    string `json:"image_digest"`
	MachineID      string `json:"machine_id"`
	MachineName    string `json:"machine_name"`
	MachineVersion string `json:"machine_version"`
	OrgID          string `json:"org_id"`
	OrgName        string `json:"org_name"`
	Region         string `json:"region"`
}

func unauthorized(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnauthorized, fmt.Sprintf(format, args...))
}

// Verify checks a raw token. Token problems match ErrUnauthorized; an
// unreachable issuer (before the first successful discovery) matches
// ErrUnavailable.
func (v *OIDCVerifier) Verify(ctx context.Context, raw string) (*Identity, error) {
	iv, err := v.idVerifier(ctx)
	if err != nil {
		return nil, err
	}
	tok, err := iv.Verify(ctx, raw)
	if err != nil {
		return nil, unauthorized("%v", err)
	}
	var c flyClaims
	if err := tok.Claims(&c); err != nil {
		return nil, unauthorized("claims: %v", err)
	}
	if c.MachineID == "" {
		return nil, unauthorized("token has no machine_id")
	}
	if tok.Expiry.IsZero() {
		return nil, unauthorized("token has no exp")
	}
	key := "jti:" + c.ID
	if c.ID == "" {
		sum := sha256.Sum256([]byte(raw))
		key = "sha256:" + hex.EncodeToString(sum[:])
	}
	fresh, err := v.cfg.Replay.Use(ctx, key, tok.Expiry)
	if err != nil {
		return nil, fmt.Errorf("%w: replay guard: %w", ErrUnavailable, err)
	}
	if !fresh {
		return nil, unauthorized("token replayed")
	}
	return &Identity{
		Issuer: tok.Issuer, Subject: tok.Subject, ID: c.ID,
		AppID: c.AppID, AppName: c.AppName, Image: c.Image, ImageDigest: c.ImageDigest,
		MachineID: c.MachineID, MachineName: c.MachineName, MachineVersion: c.MachineVersion,
		OrgID: c.OrgID, OrgName: c.OrgName, Region: c.Region,
		IssuedAt: tok.IssuedAt, Expiry: tok.Expiry,
	}, nil
}

// memoryReplayGuard remembers keys until their time passes.
type memoryReplayGuard struct {
	mu        sync.Mutex
	seen      map[string]time.Time
	nextSweep time.Time
	now       func() time.Time
}

// NewMemoryReplayGuard returns a process-local ReplayGuard. It forgets a key
// once its until time has passed (swept at most once a minute), so its size
// is bounded by the tokens seen within their lifetimes.
func NewMemoryReplayGuard() ReplayGuard {
	return &memoryReplayGuard{seen: map[string]time.Time{}, now: time.Now}
}

func (g *memoryReplayGuard) Use(_ context.Context, key string, until time.Time) (bool, error) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.After(g.nextSweep) {
		for k, u := range g.seen {
			if now.After(u) {
				delete(g.seen, k)
			}
		}
		g.nextSweep = now.Add(time.Minute)
	}
	if u, ok := g.seen[key]; ok && !now.After(u) {
		return false, nil
	}
	g.seen[key] = until
	return true, nil
}
