package tunnel

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/go-hclog"

	"github.com/hangarhq/hangar/internal/agentauth"
)

// issuer is a fake OIDC issuer: discovery and a JWKS with one RSA key.
type issuer struct {
	srv  *httptest.Server
	key  *rsa.PrivateKey
	kid  string
	down atomic.Bool // discovery answers 503
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is := &issuer{key: k, kid: "k1"}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		if is.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                is.srv.URL,
			"jwks_uri":                              is.srv.URL + "/jwks",
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
		})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		b64 := base64.RawURLEncoding.EncodeToString
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{map[string]any{
			"kty": "RSA", "alg": "RS256", "use": "sig", "kid": is.kid,
			"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes()),
		}}})
	})
	is.srv = httptest.NewServer(mux)
	t.Cleanup(is.srv.Close)
	return is
}

// claims returns a valid claim set for machineID and aud.
func (is *issuer) claims(machineID, aud string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": is.srv.URL, "sub": "org:app:" + machineID, "aud": aud,
		"jti": rand.Text(), "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
		"app_id": "app1", "app_name": "workers", "image": "registry/hangar-worker:1", "image_digest": "sha256:abc",
		"machine_id": machineID, "machine_name": "m-" + machineID, "machine_version": "v1",
		"org_id": "org1", "org_name": "hangar", "region": "ams",
	}
}

func (is *issuer) sign(t testing.TB, c jwt.MapClaims, key *rsa.PrivateKey) string {
	t.Helper()
	if key == nil {
		key = is.key
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	tok.Header["kid"] = is.kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tokenSource mints a fresh valid token per call.
func (is *issuer) tokenSource(t testing.TB, machineID string) TokenSource {
	return func(ctx context.Context, aud string) (string, error) {
		return is.sign(t, is.claims(machineID, aud), nil), nil
	}
}

// syncBuf is a concurrency-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger(name string, out io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Output: out, Level: hclog.Debug})
}

// daemon is a Registry behind an httptest server (public and internal paths).
type daemon struct {
	reg      *Registry
	srv      *httptest.Server
	log      *syncBuf
	connects atomic.Int32

	mu    sync.Mutex
	conns []net.Conn // every accepted TCP connection (to kill them)
}

type daemonOpts struct {
	signer    *agentauth.Signer
	authorize Authorizer
	locator   *testLocator
	replica   string
}

func newDaemon(t *testing.T, is *issuer, o daemonOpts) *daemon {
	t.Helper()
	d := &daemon{log: &syncBuf{}}
	mux := http.NewServeMux()
	d.srv = httptest.NewUnstartedServer(mux)
	d.srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			d.mu.Lock()
			d.conns = append(d.conns, c)
			d.mu.Unlock()
		}
	}
	d.srv.Start()
	t.Cleanup(d.srv.Close)
	if o.signer == nil {
		o.signer = testSigner
	}
	v, err := NewOIDCVerifier(OIDCConfig{Issuer: is.srv.URL, Audience: d.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	cfg := RegistryConfig{
		ReplicaID: o.replica, Audience: d.srv.URL, Signer: o.signer,
		PublicKeys: []ed25519.PublicKey{testSigner.PublicKey()},
		Verifier:   v, Authorize: o.authorize, Logger: testLogger("daemon", d.log),
		KeepAlive: time.Second,
		OnConnect: func(*Identity) { d.connects.Add(1) },
	}
	if o.locator != nil {
		cfg.Locator = o.locator.forReplica(o.replica, strings.TrimPrefix(d.srv.URL, "http://"))
	}
	d.reg, err = NewRegistry(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.reg.Close() })
	mux.HandleFunc("GET "+Path, d.reg.ServeTunnel)
	mux.HandleFunc(RelayPath, d.reg.ServeRelay)
	return d
}

// killConns closes every TCP connection the daemon accepted so far.
func (d *daemon) killConns() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		_ = c.Close()
	}
	d.conns = nil
}

var (
	testKey, _ = agentauth.GenerateKey()
	testSigner = agentauth.NewSigner(testKey)
)

// agentHandler is the fake agent API served through the tunnel.
func agentHandler(machineID string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s", machineID)
	})
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		var n int
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		chunk := bytes.Repeat([]byte("x"), 32<<10)
		for n > 0 {
			k := min(n, len(chunk))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo: "), b...)); err != nil {
				return
			}
		}
	})
	return mux
}

// startAgent runs a Listener for machineID against d and serves agentHandler.
func startAgent(t *testing.T, d *daemon, is *issuer, machineID string, keys ...ed25519.PublicKey) (*Listener, *syncBuf) {
	t.Helper()
	if len(keys) == 0 {
		keys = []ed25519.PublicKey{testSigner.PublicKey()}
	}
	buf := &syncBuf{}
	l, err := Listen(context.Background(), ListenerConfig{
		DaemonURL: d.srv.URL, MachineID: machineID, PublicKeys: keys,
		Token: is.tokenSource(t, machineID), Logger: testLogger("agent", buf),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, KeepAlive: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: agentHandler(machineID)}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = l.Close()
	})
	return l, buf
}

// eventually waits for cond, failing the test after 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

// testLocator is a shared in-memory Locator for several replicas.
type testLocator struct {
	mu      sync.Mutex
	entries map[string]string // machine -> replica
	addrs   map[string]string // replica -> addr
}

func newTestLocator() *testLocator {
	return &testLocator{entries: map[string]string{}, addrs: map[string]string{}}
}

type replicaLocator struct {
	l       *testLocator
	replica string
}

func (l *testLocator) forReplica(replica, addr string) Locator {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addrs[replica] = addr
	return replicaLocator{l, replica}
}

func (r replicaLocator) Announce(_ context.Context, m string) error {
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	r.l.entries[m] = r.replica
	return nil
}

func (r replicaLocator) Withdraw(_ context.Context, m string) error {
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	if r.l.entries[m] == r.replica {
		delete(r.l.entries, m)
	}
	return nil
}

func (r replicaLocator) Lookup(_ context.Context, m string) (string, string, error) {
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	rep, ok := r.l.entries[m]
	if !ok {
		return "", "", ErrNoTunnel
	}
	return rep, r.l.addrs[rep], nil
}

// freezer hands out TCP connections whose reads it can stop, like a
// suspended peer that no longer reads its socket.
type freezer struct {
	mu    sync.Mutex
	conns []*freezeConn
}

type freezeConn struct {
	net.Conn
	gate      atomic.Pointer[chan struct{}] // reads wait while it is open
	closed    chan struct{}
	closeOnce sync.Once
}

func (c *freezeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	// Wait after the read: one may have been blocked in it already.
	if g := c.gate.Load(); g != nil {
		select {
		case <-*g:
		case <-c.closed:
			return 0, net.ErrClosed
		}
	}
	return n, err
}

func (c *freezeConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// client returns an HTTP client dialling through the freezer.
func (f *freezer) client() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		fc := &freezeConn{Conn: c, closed: make(chan struct{})}
		f.mu.Lock()
		f.conns = append(f.conns, fc)
		f.mu.Unlock()
		return fc, nil
	}}}
}

// freeze stops reads on every connection dialled so far (later ones are
// not affected); the returned function resumes them, as does the test's
// end.
func (f *freezer) freeze(t *testing.T) (thaw func()) {
	g := make(chan struct{})
	f.mu.Lock()
	for _, c := range f.conns {
		c.gate.Store(&g)
	}
	f.mu.Unlock()
	var once sync.Once
	thaw = func() { once.Do(func() { close(g) }) }
	t.Cleanup(thaw)
	return thaw
}

// startAgentWith runs a Listener for machineID against d that dials with
// hc and serves h.
func startAgentWith(t *testing.T, d *daemon, is *issuer, machineID string, hc *http.Client, h http.Handler) *Listener {
	t.Helper()
	l, err := Listen(context.Background(), ListenerConfig{
		DaemonURL: d.srv.URL, MachineID: machineID, PublicKeys: []ed25519.PublicKey{testSigner.PublicKey()},
		Token: is.tokenSource(t, machineID), Logger: testLogger("agent", &syncBuf{}), HTTPClient: hc,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, KeepAlive: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = l.Close()
	})
	return l
}
