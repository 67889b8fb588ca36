//go:build linux

package flyemu_test

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/flyemu"
)

// socketClient talks HTTP over a machine's local API socket.
func socketClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}, Timeout: 10 * time.Second}
}

// machineToken asks m's socket for a token.
func machineToken(t *testing.T, sock, body string) (int, string, string) {
	t.Helper()
	resp, err := socketClient(sock).Post("http://flyapi/v1/tokens/oidc", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST /v1/tokens/oidc on %s: %v", sock, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// machineSocket reads the socket path from the machine's environment, as the
// machine itself would.
func (e *env) machineSocket(t *testing.T, app, id string) string {
	t.Helper()
	var sock string
	eventually(t, "machine env", func() bool {
		for _, l := range strings.Split(readFile(e.srv.MachineDir(app, id)+"/env.txt"), "\n") {
			if v, ok := strings.CutPrefix(l, flyemu.EnvFlyAPISocket+"="); ok {
				sock = v
				return true
			}
		}
		return false
	})
	return sock
}

// jwksKeyfunc follows the issuer's discovery document to its key set, as a
// relying party does.
func jwksKeyfunc(t *testing.T, issuer string) jwt.Keyfunc {
	t.Helper()
	var disc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
		Claims  []string `json:"claims_supported"`
	}
	getJSON(t, issuer+"/.well-known/openid-configuration", &disc)
	if disc.Issuer != issuer || len(disc.Algs) != 1 || disc.Algs[0] != "RS256" || len(disc.Claims) == 0 {
		t.Fatalf("discovery document: %+v, want issuer %s", disc, issuer)
	}
	var set struct {
		Keys []struct{ Kty, Kid, Alg, Use, N, E string } `json:"keys"`
	}
	getJSON(t, disc.JWKSURI, &set)
	keys := map[string]*rsa.PublicKey{}
	for _, k := range set.Keys {
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		ex, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if k.Kty != "RSA" || k.Alg != "RS256" || k.Use != "sig" || k.Kid == "" || err1 != nil || err2 != nil {
			t.Fatalf("JWK %+v", k)
		}
		keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(ex).Int64())}
	}
	return func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		if k := keys[kid]; k != nil {
			return k, nil
		}
		return nil, errors.New("unknown kid " + kid)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// TestMachineOIDCToken: each machine's socket hands out a token naming that
// machine, verifiable through the issuer's discovery document and key set;
// the socket goes away with the machine.
func TestMachineOIDCToken(t *testing.T) {
	e := start(t, flyemu.Config{Token: "fly-secret"}) // discovery and JWKS need no Fly token
	e.c = newClient(t, e.srv.URL, "fly-secret")
	app := e.app(t, "oidc")
	cfg := shell(`env > env.txt.tmp; mv env.txt.tmp env.txt; exec sleep 1000`)
	cfg.Image = "registry.example/worker:7@sha256:abc123"
	m1 := e.create(t, app, fly.CreateMachineRequest{Config: cfg, Name: "first", Region: "ams"})
	m2 := e.create(t, app, fly.CreateMachineRequest{Config: cfg, Name: "second"})
	s1, s2 := e.machineSocket(t, app, m1.ID), e.machineSocket(t, app, m2.ID)
	if s1 == s2 {
		t.Fatalf("both machines got socket %s", s1)
	}

	issuer := e.srv.OIDCIssuer("personal")
	if issuer != e.srv.URL+"/oidc/personal" {
		t.Fatalf("issuer %q", issuer)
	}
	keyfunc := jwksKeyfunc(t, issuer)
	verify := func(tok string) (jwt.MapClaims, error) {
		claims := jwt.MapClaims{}
		_, err := jwt.ParseWithClaims(tok, claims, keyfunc, jwt.WithIssuer(issuer), jwt.WithAudience("https://hangar.example"),
			jwt.WithValidMethods([]string{"RS256"}), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
		return claims, err
	}

	for _, c := range []struct {
		sock string
		m    *fly.Machine
		name string
	}{{s1, m1, "first"}, {s2, m2, "second"}} {
		// What the caller claims to be is ignored: the socket knows.
		code, ct, tok := machineToken(t, c.sock, `{"aud":"https://hangar.example","machine_id":"someone-else"}`)
		if code != http.StatusOK || !strings.HasPrefix(ct, "text/plain") {
			t.Fatalf("token: %d %s %q", code, ct, tok)
		}
		claims, err := verify(tok)
		if err != nil {
			t.Fatalf("verify %s's token: %v", c.name, err)
		}
		want := map[string]any{
			"iss": issuer, "sub": "personal:oidc:" + c.name, "aud": "https://hangar.example",
			"app_name": "oidc", "machine_id": c.m.ID, "machine_name": c.name, "machine_version": c.m.InstanceID,
			"org_name": "personal", "region": c.m.Region, "image": cfg.Image, "image_digest": "sha256:abc123",
		}
		for k, v := range want {
			if claims[k] != v {
				t.Errorf("%s's token: claim %s = %v, want %v", c.name, k, claims[k], v)
			}
		}
		for _, k := range []string{"app_id", "org_id", "jti", "iat", "nbf", "exp"} {
			if claims[k] == nil || claims[k] == "" {
				t.Errorf("%s's token: claim %s missing", c.name, k)
			}
		}
		if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != 600 {
			t.Errorf("token lifetime %v s, want 600", exp-iat)
		}
	}

	if code, _, body := machineToken(t, s1, `{}`); code != http.StatusBadRequest {
		t.Errorf("token without aud: %d %s", code, body)
	}
	resp, err := socketClient(s1).Get("http://flyapi/v1/apps")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown path: %s", resp.Status)
	}

	// The forging hook: an expired token fails verification as expired.
	old, err := e.srv.OIDCToken(app, m1.ID, "https://hangar.example", -time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verify(old); !errors.Is(err, jwt.ErrTokenExpired) {
		t.Errorf("expired token: %v, want ErrTokenExpired", err)
	}
	if _, err := e.srv.OIDCToken(app, "nope", "x", 0); err == nil {
		t.Error("token for an unknown machine")
	}

	if err := e.c.DestroyMachine(ctx(t), app, m1.ID, true, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m1.ID, fly.StateDestroyed)
	eventually(t, "the destroyed machine's socket to go", func() bool {
		_, err := os.Stat(s1)
		return errors.Is(err, os.ErrNotExist)
	})
}
