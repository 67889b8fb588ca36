package flyemu

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// defaultOIDCLifetime is how long a machine's token lasts, as on Fly.
const defaultOIDCLifetime = 10 * time.Minute

// oidcKey is the emulator's signing key, made on first use: RSA key
// generation is slow enough (more so under -race) that emulators which never
// issue a token should not pay for it.
type oidcKey struct {
	key *rsa.PrivateKey
	kid string
	jwk map[string]string
}

func (e *Emulator) signingKey() (*oidcKey, error) {
	e.oidcOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			e.oidcErr = fmt.Errorf("generate OIDC signing key: %w", err)
			return
		}
		n := base64.RawURLEncoding.EncodeToString(k.N.Bytes())
		ex := base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes())
		// The kid is the key's RFC 7638 thumbprint.
		sum := sha256.Sum256([]byte(`{"e":"` + ex + `","kty":"RSA","n":"` + n + `"}`))
		kid := base64.RawURLEncoding.EncodeToString(sum[:])
		e.oidc = &oidcKey{key: k, kid: kid, jwk: map[string]string{
			"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": n, "e": ex,
		}}
	})
	return e.oidc, e.oidcErr
}

// SetBaseURL tells the emulator the URL it is served at (without /v1), which
// its OIDC issuer URLs are built on. Whoever serves the emulator calls it.
func (e *Emulator) SetBaseURL(u string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.baseURL = strings.TrimRight(u, "/")
}

// OIDCIssuer returns the issuer URL of org's machine tokens, as Fly's
// https://oidc.fly.io/<org>; "" until SetBaseURL was called.
func (e *Emulator) OIDCIssuer(org string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.issuerLocked(org)
}

func (e *Emulator) issuerLocked(org string) string {
	if e.baseURL == "" {
		return ""
	}
	return e.baseURL + "/oidc/" + org
}

// OIDCToken mints the token machineID of app would get from its local API
// socket for audience. It exists for tests that need tokens the socket would
// not give: another machine's, or (lifetime < 0) one that has already
// expired. lifetime 0 means Fly's 10 minutes.
func (e *Emulator) OIDCToken(app, machineID, audience string, lifetime time.Duration) (string, error) {
	e.mu.Lock()
	a := e.apps[app]
	var m *machine
	if a != nil {
		m = a.machines[machineID]
	}
	if m == nil {
		e.mu.Unlock()
		return "", fmt.Errorf("mint OIDC token: machine %s/%s not found", app, machineID)
	}
	claims, err := e.oidcClaimsLocked(m, audience, lifetime)
	e.mu.Unlock()
	if err != nil {
		return "", err
	}
	return e.signOIDC(claims)
}

// oidcClaimsLocked builds the claims Fly puts in a machine's token.
func (e *Emulator) oidcClaimsLocked(m *machine, audience string, lifetime time.Duration) (jwt.MapClaims, error) {
	if audience == "" {
		return nil, errors.New("mint OIDC token: audience is required")
	}
	iss := e.issuerLocked(m.app.org)
	if iss == "" {
		return nil, errors.New("mint OIDC token: the emulator's base URL is not set (SetBaseURL)")
	}
	if lifetime == 0 {
		lifetime = defaultOIDCLifetime
	}
	now := time.Now()
	iat := now
	if lifetime < 0 {
		iat = now.Add(lifetime - defaultOIDCLifetime)
		lifetime = defaultOIDCLifetime
	}
	digest := imageRef(m.config.Image).Digest
	return jwt.MapClaims{
		"iss":             iss,
		"sub":             m.app.org + ":" + m.app.name + ":" + m.name,
		"aud":             audience,
		"iat":             iat.Unix(),
		"nbf":             iat.Unix(),
		"exp":             iat.Add(lifetime).Unix(),
		"jti":             randomHex(32),
		"app_id":          m.app.id,
		"app_name":        m.app.name,
		"image":           m.config.Image,
		"image_digest":    digest,
		"machine_id":      m.id,
		"machine_name":    m.name,
		"machine_version": m.instanceID,
		"org_id":          orgID(m.app.org),
		"org_name":        m.app.org,
		"region":          m.region,
	}, nil
}

// orgID stands in for Fly's numeric organization id: stable per slug.
func orgID(org string) string {
	sum := sha256.Sum256([]byte("org:" + org))
	return new(big.Int).SetBytes(sum[:6]).String()
}

func (e *Emulator) signOIDC(claims jwt.MapClaims) (string, error) {
	k, err := e.signingKey()
	if err != nil {
		return "", err
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = k.kid
	s, err := t.SignedString(k.key)
	if err != nil {
		return "", fmt.Errorf("sign OIDC token: %w", err)
	}
	return s, nil
}

// oidcRoutes serves each org's discovery document and key set. They need no
// Fly token: relying parties fetch them anonymously.
func (e *Emulator) oidcRoutes() {
	e.mux.HandleFunc("GET /oidc/{org}/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		iss := e.OIDCIssuer(r.PathValue("org"))
		if iss == "" {
			// Not told where it is served: the request says.
			scheme := "http"
			if r.TLS != nil {
				scheme = "https"
			}
			iss = scheme + "://" + r.Host + "/oidc/" + r.PathValue("org")
		}
		writeJSON(w, map[string]any{
			"issuer":                                iss,
			"jwks_uri":                              iss + "/.well-known/jwks",
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"scopes_supported":                      []string{"openid"},
			"claims_supported": []string{
				"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "app_id", "app_name", "image",
				"image_digest", "machine_id", "machine_name", "machine_version", "org_id", "org_name", "region",
			},
		})
	})
	e.mux.HandleFunc("GET /oidc/{org}/.well-known/jwks", func(w http.ResponseWriter, r *http.Request) {
		k, err := e.signingKey()
		if err != nil {
			errResp(http.StatusInternalServerError, err.Error()).write(w)
			return
		}
		writeJSON(w, map[string]any{"keys": []map[string]string{k.jwk}})
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		errResp(http.StatusInternalServerError, "encode response: "+err.Error()).write(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}
