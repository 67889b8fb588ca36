package tunnel

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/hangarhq/hangar/internal/agentauth"
)

func TestProofMessageIsDomainSeparated(t *testing.T) {
	a := ProofMessage("http://d", "m1", []byte("c"))
	b := ProofMessage("http://dm", "1", []byte("c"))
	if bytes.Equal(a, b) {
		t.Fatal("field boundaries are ambiguous")
	}
	if !bytes.HasPrefix(a, []byte("hangar.tunnel.v1 proof\x00")) {
		t.Fatalf("no domain prefix: %q", a)
	}
}

func TestAgentURLRoundTrip(t *testing.T) {
	u := AgentURL("148e21ea7e2d89")
	if u != "http://148e21ea7e2d89.tunnel.hangar.invalid" {
		t.Fatal(u)
	}
	for host, want := range map[string]string{
		"148e21ea7e2d89.tunnel.hangar.invalid":    "148e21ea7e2d89",
		"148e21ea7e2d89.tunnel.hangar.invalid:80": "148e21ea7e2d89",
		"m.TUNNEL.hangar.invalid:80":              "m",
		"tunnel.hangar.invalid":                   "",
		".tunnel.hangar.invalid":                  "",
		"a.b.tunnel.hangar.invalid":               "",
		"example.com:80":                          "",
		"10.0.0.1:8080":                           "",
	} {
		got, ok := MachineFromHost(host)
		if got != want || ok != (want != "") {
			t.Errorf("MachineFromHost(%q) = %q, %v; want %q", host, got, ok, want)
		}
	}
}

func TestSignAndVerifySignature(t *testing.T) {
	msg := ProofMessage("aud", "m", []byte("challenge"))
	sig := testSigner.Sign(msg)
	other, _ := agentauth.GenerateKey()
	keys := []ed25519.PublicKey{other.Public().(ed25519.PublicKey), testSigner.PublicKey()}
	if !agentauth.VerifySignature(keys, msg, sig) {
		t.Fatal("valid signature refused (rotation list)")
	}
	if agentauth.VerifySignature(keys[:1], msg, sig) {
		t.Fatal("signature accepted for the wrong key")
	}
	if agentauth.VerifySignature(keys, append(msg, 0), sig) || agentauth.VerifySignature(keys, msg, sig[:10]) {
		t.Fatal("bad signature accepted")
	}
}

func TestOIDCVerifier(t *testing.T) {
	is := newIssuer(t)
	const aud = "https://hangar.example"
	v, err := NewOIDCVerifier(OIDCConfig{Issuer: is.srv.URL, Audience: aud + "/"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	c := is.claims("m1", aud)
	raw := is.sign(t, c, nil)
	id, err := v.Verify(ctx, raw)
	if err != nil {
		t.Fatalf("valid token: %v", err)
	}
	if id.MachineID != "m1" || id.AppName != "workers" || id.Region != "ams" || id.Issuer != is.srv.URL || id.ID != c["jti"] || id.Expiry.IsZero() {
		t.Fatalf("identity: %+v", id)
	}
	if _, err := v.Verify(ctx, raw); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("replayed token: %v", err)
	}

	// Without a jti the raw token's hash is the replay key.
	nojti := is.claims("m1", aud)
	delete(nojti, "jti")
	raw = is.sign(t, nojti, nil)
	if _, err := v.Verify(ctx, raw); err != nil {
		t.Fatalf("token without jti: %v", err)
	}
	if _, err := v.Verify(ctx, raw); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("replayed token without jti: %v", err)
	}

	foreign, _ := rsa.GenerateKey(rand.Reader, 2048)
	for name, mk := range map[string]func() string{
		"expired": func() string {
			c := is.claims("m1", aud)
			c["iat"], c["exp"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-time.Minute).Unix()
			return is.sign(t, c, nil)
		},
		"wrong audience": func() string { return is.sign(t, is.claims("m1", "https://other.example"), nil) },
		"foreign key":    func() string { return is.sign(t, is.claims("m1", aud), foreign) },
		"wrong issuer": func() string {
			c := is.claims("m1", aud)
			c["iss"] = "https://oidc.fly.io/someone-else"
			return is.sign(t, c, nil)
		},
		"no machine id": func() string {
			c := is.claims("m1", aud)
			delete(c, "machine_id")
			return is.sign(t, c, nil)
		},
		"alg none": func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodNone, is.claims("m1", aud)).SignedString(jwt.UnsafeAllowNoneSignatureType)
			return s
		},
		"garbage": func() string { return "not.a.token" },
	} {
		if _, err := v.Verify(ctx, mk()); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("%s: %v, want ErrUnauthorized", name, err)
		}
	}
}

func TestOIDCDiscoveryIsLazyAndRetried(t *testing.T) {
	is := newIssuer(t)
	is.down.Store(true)
	v, err := NewOIDCVerifier(OIDCConfig{Issuer: is.srv.URL, Audience: "aud"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), is.sign(t, is.claims("m1", "aud"), nil)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("issuer down: %v, want ErrUnavailable", err)
	}
	is.down.Store(false)
	if _, err := v.Verify(context.Background(), is.sign(t, is.claims("m1", "aud"), nil)); err != nil {
		t.Fatalf("issuer back: %v", err)
	}
}

func TestMemoryReplayGuardForgets(t *testing.T) {
	g := NewMemoryReplayGuard().(*memoryReplayGuard)
	now := time.Now()
	g.now = func() time.Time { return now }
	ctx := context.Background()
	if fresh, _ := g.Use(ctx, "a", now.Add(time.Minute)); !fresh {
		t.Fatal("first use refused")
	}
	if fresh, _ := g.Use(ctx, "a", now.Add(time.Minute)); fresh {
		t.Fatal("second use accepted")
	}
	now = now.Add(2 * time.Minute)
	if _, _ = g.Use(ctx, "b", now.Add(time.Minute)); len(g.seen) != 1 {
		t.Fatalf("expired keys kept: %v", g.seen)
	}
}

// dialTunnel does the agent's handshake by hand and returns the response.
func dialTunnel(t *testing.T, d *daemon, token string) (*http.Response, *websocket.Conn) {
	t.Helper()
	ch := make([]byte, ChallengeSize)
	_, _ = rand.Read(ch)
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	h.Set(HeaderChallenge, base64.RawURLEncoding.EncodeToString(ch))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, d.srv.URL+Path, &websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{Subprotocol}})
	if err == nil {
		t.Cleanup(func() { c.CloseNow() })
		sig, _ := base64.RawURLEncoding.DecodeString(resp.Header.Get(HeaderProof))
		// The machine id is m1 in all callers.
		if !agentauth.VerifySignature([]ed25519.PublicKey{testSigner.PublicKey()}, ProofMessage(d.srv.URL, "m1", ch), sig) {
			t.Error("the daemon's proof does not verify")
		}
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	return resp, c
}

func TestServeTunnelRefusals(t *testing.T) {
	is := newIssuer(t)
	d := newDaemon(t, is, daemonOpts{authorize: func(ctx context.Context, id *Identity) error {
		if id.AppName != "workers" {
			return fmt.Errorf("%w: app %s is not a pool of this daemon", ErrForbidden, id.AppName)
		}
		return nil
	}})
	aud := d.srv.URL
	foreign, _ := rsa.GenerateKey(rand.Reader, 2048)
	valid := is.sign(t, is.claims("m1", aud), nil)

	resp, _ := dialTunnel(t, d, valid)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("valid token: %s", resp.Status)
	}
	eventually(t, "the tunnel to register", func() bool { return d.reg.Connected("m1") })

	cases := []struct {
		name   string
		token  string
		status int
		code   string
	}{
		{"replayed", valid, 401, "unauthorized"},
		{"missing", "", 401, "unauthorized"},
		{"expired", func() string {
			c := is.claims("m1", aud)
			c["iat"], c["exp"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-time.Minute).Unix()
			return is.sign(t, c, nil)
		}(), 401, "unauthorized"},
		{"wrong audience", is.sign(t, is.claims("m1", "https://elsewhere"), nil), 401, "unauthorized"},
		{"foreign key", is.sign(t, is.claims("m1", aud), foreign), 401, "unauthorized"},
		{"wrong issuer", func() string {
			c := is.claims("m1", aud)
			c["iss"] = "https://issuer.invalid"
			return is.sign(t, c, nil)
		}(), 401, "unauthorized"},
		{"authorizer", func() string {
			c := is.claims("m1", aud)
			c["app_name"] = "strangers"
			return is.sign(t, c, nil)
		}(), 403, "forbidden"},
	}
	for _, tc := range cases {
		resp, _ := dialTunnel(t, d, tc.token)
		code, msg := readError(resp.Body)
		if resp.StatusCode != tc.status || code != tc.code {
			t.Errorf("%s: %d %s %q, want %d %s", tc.name, resp.StatusCode, code, msg, tc.status, tc.code)
		}
		if tc.name == "authorizer" && !strings.Contains(msg, "strangers") {
			t.Errorf("403 message %q lacks the Authorizer's text", msg)
		}
	}
	if logs := d.log.String(); strings.Contains(logs, valid) || !strings.Contains(logs, "tunnel refused: claimed_machine=m1 claimed_app=workers") ||
		!strings.Contains(logs, "machine=m1 app=strangers") {
		t.Errorf("refusal logs: %s", logs)
	}
}

func TestAgentRefusesDaemonWithoutBrokerKey(t *testing.T) {
	is := newIssuer(t)
	otherKey, _ := agentauth.GenerateKey()
	d := newDaemon(t, is, daemonOpts{signer: agentauth.NewSigner(otherKey)})
	l, logs := startAgent(t, d, is, "m1")
	eventually(t, "two refused attempts", func() bool {
		return d.connects.Load() >= 2 && strings.Count(logs.String(), "did not prove the broker key") >= 2
	})
	if l.Connected() {
		t.Fatal("the agent accepted a daemon without the broker key")
	}
	if !strings.Contains(logs.String(), "[ERROR]") {
		t.Fatalf("bad proof not logged at error: %s", logs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, AgentURL("m1")+"/hello", nil)
	if resp, err := d.reg.HTTPClient().Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a request went through a refused tunnel: %s", resp.Status)
	}
}

func TestHTTPAndWebSocketThroughTunnel(t *testing.T) {
	is := newIssuer(t)
	d := newDaemon(t, is, daemonOpts{})
	l, _ := startAgent(t, d, is, "m1")
	<-l.Up()
	if got := get(t, d.reg.HTTPClient(), AgentURL("m1")+"/hello"); got != "hello from m1" {
		t.Fatalf("got %q", got)
	}
	if d.reg.Count() != 1 || !d.reg.Connected("m1") || !l.Connected() {
		t.Fatalf("count %d connected %v/%v", d.reg.Count(), d.reg.Connected("m1"), l.Connected())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://m1.tunnel.hangar.invalid/ws", &websocket.DialOptions{HTTPClient: d.reg.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	for i := range 3 {
		msg := fmt.Sprintf("frame %d", i)
		if err := ws.Write(ctx, websocket.MessageBinary, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, b, err := ws.Read(ctx)
		if err != nil || string(b) != "echo: "+msg {
			t.Fatalf("read %q, %v", b, err)
		}
	}
	ws.Close(websocket.StatusNormalClosure, "")
}

// A stalled reader on one stream never holds up the others (yamux gives
// each stream its own window).
func TestStalledStreamDoesNotBlockOthers(t *testing.T) {
	is := newIssuer(t)
	d := newDaemon(t, is, daemonOpts{})
	l, _ := startAgent(t, d, is, "m1")
	<-l.Up()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Stalled: asks for 16 MiB and never reads.
	stalled, err := d.reg.DialMachine(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	fmt.Fprintf(stalled, "GET /bytes?n=%d HTTP/1.1\r\nHost: m1\r\n\r\n", 16<<20)

	const streams, size = 8, 1 << 20
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for range streams {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/bytes?n=%d", AgentURL("m1"), size), nil)
			resp, err := d.reg.HTTPClient().Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err == nil && n != size {
				err = fmt.Errorf("read %d bytes, want %d", n, size)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// The stalled stream still works once read.
	buf := make([]byte, 1<<10)
	if _, err := io.ReadFull(stalled, buf); err != nil {
		t.Fatalf("stalled stream: %v", err)
	}
}

func TestAgentRedialsAfterConnectionLoss(t *testing.T) {
	is := newIssuer(t)
	d := newDaemon(t, is, daemonOpts{})
	l, _ := startAgent(t, d, is, "m1")
	<-l.Up()
	get(t, d.reg.HTTPClient(), AgentURL("m1")+"/hello")

	d.killConns()
	eventually(t, "a second tunnel", func() bool { return d.connects.Load() >= 2 && d.reg.Connected("m1") })
	<-l.Up()
	if got := get(t, d.reg.HTTPClient(), AgentURL("m1")+"/hello"); got != "hello from m1" {
		t.Fatalf("after redial: %q", got)
	}
}

// Redial (SIGUSR1 after a resume) keeps a tunnel that still answers: a
// call already running on it completes (it used to fail with EOF when the
// redial cut the tunnel under a resumed claim's init).
func TestRedialKeepsLiveTunnel(t *testing.T) {
	is := newIssuer(t)
	d := newDaemon(t, is, daemonOpts{})
	entered, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /init", func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "initialised")
	})
	l := startAgentWith(t, d, is, "m1", nil, mux)
	<-l.Up()
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, AgentURL("m1")+"/init", strings.NewReader("{}"))
		resp, err := d.reg.HTTPClient().Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- result{string(b), err}
	}()
	<-entered
	l.Redial()
	close(release)
	if r := <-done; r.err != nil || r.body != "initialised" {
		t.Fatalf("call across Redial: %q, %v", r.body, r.err)
	}
	if n := d.connects.Load(); n != 1 || !l.Connected() {
		t.Fatalf("%d tunnels, connected %v: a live tunnel was replaced", n, l.Connected())
	}
}

// Redial replaces a tunnel whose daemon no longer answers at once.
func TestRedialReplacesDeadTunnel(t *testing.T) {
	is := newIssuer(t)
	d := newDaemon(t, is, daemonOpts{})
	var f freezer
	l := startAgentWith(t, d, is, "m1", f.client(), agentHandler("m1"))
	<-l.Up()
	f.freeze(t) // the agent hears nothing on its tunnel any more
	l.Redial()
	eventually(t, "a second tunnel", func() bool { return d.connects.Load() >= 2 && d.reg.Connected("m1") })
	if got := get(t, d.reg.HTTPClient(), AgentURL("m1")+"/hello"); got != "hello from m1" {
		t.Fatalf("after redial: %q", got)
	}
}

// Probe tells a live tunnel from a dead one and drops the dead one, so
// that dials wait for the agent's next tunnel.
func TestProbe(t *testing.T) {
	is := newIssuer(t)
	d := newDaemon(t, is, daemonOpts{})
	if d.reg.Probe("m1", 0) {
		t.Fatal("probe without a tunnel succeeded")
	}
	var f freezer
	l := startAgentWith(t, d, is, "m1", f.client(), agentHandler("m1"))
	<-l.Up()
	eventually(t, "the tunnel", func() bool { return d.reg.Connected("m1") })
	if !d.reg.Probe("m1", 0) {
		t.Fatal("live tunnel failed the probe")
	}
	thaw := f.freeze(t) // a suspended agent: its socket is not read
	if d.reg.Probe("m1", 100*time.Millisecond) {
		t.Fatal("a frozen agent answered the probe")
	}
	if d.reg.Connected("m1") {
		t.Fatal("the dead tunnel is still registered")
	}
	thaw() // the agent resumes, finds its tunnel closed and dials again
	eventually(t, "a second tunnel", func() bool { return d.connects.Load() >= 2 && d.reg.Connected("m1") })
	if !d.reg.Probe("m1", 0) {
		t.Fatal("new tunnel failed the probe")
	}
}

func TestNewerTunnelReplacesOlder(t *testing.T) {
	is := newIssuer(t)
	d := newDaemon(t, is, daemonOpts{})
	a, _ := startAgent(t, d, is, "m1")
	<-a.Up()
	b, _ := startAgent(t, d, is, "m1")
	<-b.Up()
	eventually(t, "the older tunnel to drop", func() bool { return !a.Connected() || d.connects.Load() > 2 })
	if d.reg.Count() != 1 {
		t.Fatalf("count %d", d.reg.Count())
	}
	get(t, d.reg.HTTPClient(), AgentURL("m1")+"/hello")
}

func TestRelayBetweenReplicas(t *testing.T) {
	is := newIssuer(t)
	loc := newTestLocator()
	a := newDaemon(t, is, daemonOpts{locator: loc, replica: "A"})
	b := newDaemon(t, is, daemonOpts{locator: loc, replica: "B"})
	l, _ := startAgent(t, a, is, "m1")
	<-l.Up()
	eventually(t, "the announcement", func() bool {
		rep, _, _ := loc.forReplica("B", strings.TrimPrefix(b.srv.URL, "http://")).Lookup(context.Background(), "m1")
		return rep == "A"
	})

	if b.reg.Connected("m1") {
		t.Fatal("B has a local tunnel")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.reg.Wait(ctx, "m1"); err != nil {
		t.Fatalf("B.Wait: %v", err)
	}
	if got := get(t, b.reg.HTTPClient(), AgentURL("m1")+"/hello"); got != "hello from m1" {
		t.Fatalf("through the relay: %q", got)
	}
	ws, _, err := websocket.Dial(ctx, "ws://m1.tunnel.hangar.invalid/ws", &websocket.DialOptions{HTTPClient: b.reg.HTTPClient()})
	if err != nil {
		t.Fatalf("attach through the relay: %v", err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, m, err := ws.Read(ctx); err != nil || string(m) != "echo: hi" {
		t.Fatalf("relay echo %q %v", m, err)
	}

	// A relay request without a valid token is refused.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.srv.URL+RelayPath+"m1", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", RelayUpgrade)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("relay without token: %s", resp.Status)
	}

	// When the tunnel leaves A the record is withdrawn and B waits again.
	a.reg.Disconnect("m1")
	_ = l.Close()
	eventually(t, "the withdrawal", func() bool {
		_, _, err := loc.forReplica("B", strings.TrimPrefix(b.srv.URL, "http://")).Lookup(ctx, "m1")
		return errors.Is(err, ErrNoTunnel)
	})
	sctx, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer scancel()
	if _, err := b.reg.DialMachine(sctx, "m1"); !errors.Is(err, ErrNoTunnel) {
		t.Fatalf("dial after withdrawal: %v", err)
	}
}

// A stale Locator record (the named replica has no tunnel) is a 404 and the
// caller keeps looking.
func TestRelayToStaleReplicaKeepsWaiting(t *testing.T) {
	is := newIssuer(t)
	loc := newTestLocator()
	a := newDaemon(t, is, daemonOpts{locator: loc, replica: "A"})
	b := newDaemon(t, is, daemonOpts{locator: loc, replica: "B"})
	_ = a
	_ = loc.forReplica("A", strings.TrimPrefix(a.srv.URL, "http://")).Announce(context.Background(), "m1") // stale
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		c, err := b.reg.DialMachine(ctx, "m1")
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	l, _ := startAgent(t, a, is, "m1")
	<-l.Up()
	if err := <-done; err != nil {
		t.Fatalf("dial: %v", err)
	}
}

func TestDialMachineWaitsForTunnel(t *testing.T) {
	is := newIssuer(t)
	d := newDaemon(t, is, daemonOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, AgentURL("m1")+"/hello", nil)
		resp, err := d.reg.HTTPClient().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	eventually(t, "the dial to wait", func() bool {
		d.reg.mu.Lock()
		defer d.reg.mu.Unlock()
		return d.reg.waiters["m1"] != nil
	})
	startAgent(t, d, is, "m1")
	if err := <-done; err != nil {
		t.Fatalf("waiting request: %v", err)
	}
}

func TestDialMachineEndsWithContext(t *testing.T) {
	is := newIssuer(t)
	d := newDaemon(t, is, daemonOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := d.reg.DialMachine(ctx, "nobody")
	if !errors.Is(err, ErrNoTunnel) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	// Through the HTTP client too (its dials are detached from requests).
	ctx2, cancel2 := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx2, http.MethodGet, AgentURL("nobody")+"/hello", nil)
	done := make(chan error, 1)
	go func() {
		_, err := d.reg.HTTPClient().Do(req)
		done <- err
	}()
	eventually(t, "the dial to wait", func() bool {
		d.reg.mu.Lock()
		defer d.reg.mu.Unlock()
		return d.reg.waiters["nobody"] != nil
	})
	cancel2()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("request err = %v", err)
	}
	eventually(t, "the waiter to go", func() bool {
		d.reg.mu.Lock()
		defer d.reg.mu.Unlock()
		return len(d.reg.waiters) == 0
	})
	// Close fails pending dials.
	go func() { _, err := d.reg.DialMachine(context.Background(), "nobody"); done <- err }()
	eventually(t, "the dial to wait", func() bool {
		d.reg.mu.Lock()
		defer d.reg.mu.Unlock()
		return d.reg.waiters["nobody"] != nil
	})
	_ = d.reg.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestFlyTokenSource(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/v1/tokens/oidc" || string(b) != `{"aud":"https://d.example"}` {
			http.Error(w, "bad request: "+string(b), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "eyJ.token.sig\n")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ts := FlyTokenSource(sock)
	tok, err := ts(context.Background(), "https://d.example")
	if err != nil || tok != "eyJ.token.sig" {
		t.Fatalf("token %q, %v", tok, err)
	}
	if _, err := ts(context.Background(), "x"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("error answer: %v", err)
	}
}

// A tunnel whose agent stopped reading (a starved or frozen machine) is
// closed at once: the WebSocket closing handshake used to hold every
// yamux Session.Close — a dial that found the tunnel dead, a resume's
// probe, a replacing tunnel, the agent's redial — for 5 to 10 s.
func TestCloseDoesNotWaitForAPeerThatStoppedReading(t *testing.T) {
	is := newIssuer(t)
	d := newDaemon(t, is, daemonOpts{})
	var f freezer
	l := startAgentWith(t, d, is, "m1", f.client(), agentHandler("m1"))
	<-l.Up()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := d.reg.DialMachine(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	thaw := f.freeze(t)
	defer thaw()
	// Send into the frozen agent: what gets through sits in socket
	// buffers it no longer drains, and no close frame would be answered.
	written := make(chan int64, 64)
	go func() {
		fmt.Fprintf(s, "POST /hello HTTP/1.1\r\nHost: m1\r\nContent-Length: %d\r\n\r\n", 1<<40)
		buf := make([]byte, 64<<10)
		for {
			n, err := s.Write(buf)
			if err != nil {
				close(written)
				return
			}
			select {
			case written <- int64(n):
			default:
			}
		}
	}()
	var total int64
	for total < 128<<10 { // half the stream's window
		n, ok := <-written
		if !ok {
			t.Fatal("stream write failed before the window filled")
		}
		total += n
	}
	done := make(chan struct{})
	go func() {
		d.reg.Disconnect("m1")
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(4 * time.Second): // the handshake took ≥ 5 s
		t.Fatal("Disconnect waited for the frozen agent")
	}
}

// Many streams at once — more than yamux's accept backlog, some never
// read, some never closed — leave the tunnel opening and answering new
// streams.
func TestManyStreamsLeaveRoomForNewOnes(t *testing.T) {
	is := newIssuer(t)
	d := newDaemon(t, is, daemonOpts{})
	h := agentHandler("m1").(*http.ServeMux)
	release := make(chan struct{})
	h.HandleFunc("GET /hang", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	l := startAgentWith(t, d, is, "m1", nil, h)
	<-l.Up()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(release)
	const hanging, unread, leaked = 300, 16, 50
	for range hanging {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, AgentURL("m1")+"/hang", nil)
			if resp, err := d.reg.HTTPClient().Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	for range unread {
		s, err := d.reg.DialMachine(ctx, "m1")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		fmt.Fprintf(s, "GET /bytes?n=%d HTTP/1.1\r\nHost: m1\r\n\r\n", 4<<20)
	}
	for range leaked {
		s, err := d.reg.DialMachine(ctx, "m1")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close() // only at the end: open and silent until then
	}
	for range 20 {
		if got := get(t, d.reg.HTTPClient(), AgentURL("m1")+"/hello"); got != "hello from m1" {
			t.Fatalf("got %q", got)
		}
	}
}
