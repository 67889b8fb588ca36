package agent_test

import (
	"crypto/ed25519"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/testbin"
	"github.com/hangarhq/hangar/internal/wire"
)

func TestRefusesToStartWithoutValidKey(t *testing.T) {
	bin := testbin.Path(t, testbin.Agent)
	for name, key := range map[string]string{"missing": "", "garbage": "not-a-key", "short": "AAAA"} {
		cmd := exec.Command(bin)
		cmd.Env = []string{"HANGAR_AGENT_ADDR=127.0.0.1:0", "FLY_MACHINE_ID=m1", "HANGAR_WORKSPACE=" + t.TempDir(), "HANGAR_BROKER_PUBLIC_KEY=" + key}
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%s key: agent started", name)
		}
		if !strings.Contains(string(out), "HANGAR_BROKER_PUBLIC_KEY") {
			t.Errorf("%s key: unclear error %q", name, out)
		}
	}
}

func TestAuthentication(t *testing.T) {
	a := startAgent(t, agentOpts{})
	// Health tells anyone only whether the agent is usable; state and
	// version need a valid token.
	if code, body := a.call("GET", "/v1/health", "-", nil); code != 200 || strings.TrimSpace(body) != `{"ok":true}` {
		t.Fatalf("health without a token: %d %s", code, body)
	}
	if code, body := a.call("GET", "/v1/health", "s1", nil); code != 200 || !strings.Contains(body, `"state":"idle"`) || !strings.Contains(body, `"version"`) {
		t.Fatalf("health with a token: %d %s", code, body)
	}
	tokenWith := func(method jwt.SigningMethod, key any, mod func(jwt.MapClaims)) string {
		now := time.Now()
		c := jwt.MapClaims{"aud": a.machineID, "sub": "s1", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": time.Now().String()}
		if mod != nil {
			mod(c)
		}
		s, err := jwt.NewWithClaims(method, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	priv := keyOf(t, a)
	stranger, _ := agentauth.GenerateKey()
	otherMachine, _ := a.signer.Token("m-other", "s1")
	replayed, _ := a.signer.Token(a.machineID, "s1")
	cases := map[string]string{
		"none":          "",
		"other machine": otherMachine,
		"expired": tokenWith(jwt.SigningMethodEdDSA, priv, func(c jwt.MapClaims) {
			c["iat"], c["exp"] = time.Now().Add(-4*time.Minute).Unix(), time.Now().Add(-2*time.Minute).Unix()
		}),
		"too long-lived": tokenWith(jwt.SigningMethodEdDSA, priv, func(c jwt.MapClaims) { c["exp"] = time.Now().Add(time.Hour).Unix() }),
		"alg none":       tokenWith(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil),
		"hs256":          tokenWith(jwt.SigningMethodHS256, []byte("k"), nil),
		"bad signature":  tokenWith(jwt.SigningMethodEdDSA, stranger, nil),
		"replayed":       replayed,
	}
	// Use the replayed token once so that its second use is a replay.
	req, _ := http.NewRequest("GET", a.url+"/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+replayed)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first use of a valid token: %v %v", err, resp)
	}
	for name, tok := range cases {
		for _, ep := range []struct{ method, path string }{{"GET", "/v1/status"}, {"POST", "/v1/init"}, {"POST", "/v1/finish"}, {"GET", "/v1/attach"}} {
			req, _ := http.NewRequest(ep.method, a.url+ep.path, strings.NewReader(`{"session_id":"s1"}`))
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Errorf("%s token on %s %s: status %d", name, ep.method, ep.path, resp.StatusCode)
			}
		}
	}
	// The WebSocket upgrade is authenticated too.
	if _, resp, err := a.dialWithToken("garbage", wire.SubprotocolPTY); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("attach with a bad token: %v", err)
	}
	// The second key of the rotation list works (the signer's is second).
	if code, _ := a.call("GET", "/v1/status", "s1", nil); code != 200 {
		t.Fatalf("rotated key refused: %d", code)
	}
	if _, err := a.client.Status(t.Context(), "s1"); err != nil {
		t.Fatalf("client status: %v", err)
	}
}

func keyOf(t *testing.T, a *agentProc) ed25519.PrivateKey {
	t.Helper()
	return a.key
}

// TestUnauthorizedLogRateLimited: a flood of refused requests is logged a
// few times, not once per request (anyone on the private network can send
// them).
func TestUnauthorizedLogRateLimited(t *testing.T) {
	a := startAgent(t, agentOpts{})
	for range 200 {
		if code, _ := a.call("GET", "/v1/status", "-", nil); code != 401 {
			t.Fatalf("status without a token: %d", code)
		}
	}
	// The agent logs the first refusal before it answers it.
	if n := strings.Count(a.logs.String(), "unauthorized request"); n < 1 || n > 3 {
		t.Fatalf("%d log lines for 200 refused requests:\n%s", n, a.logs.String())
	}
}
