package tunnel

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"

	"github.com/hangarhq/hangar/internal/agentauth"
)

// Authorizer decides whether a verified machine may open a tunnel (is it a
// machine of one of the daemon's pools). nil accepts every machine. Its error
// text is sent to the agent with a 403.
type Authorizer func(ctx context.Context, id *Identity) error

// Locator records where tunnels live across replicas; the daemon implements
// it on its store. Withdraw must only remove the record if it still names
// this replica (a newer tunnel may have moved to another one).
type Locator interface {
	// Announce records that this replica holds machineID's tunnel.
	Announce(ctx context.Context, machineID string) error
	// Withdraw removes the record if it names this replica.
	Withdraw(ctx context.Context, machineID string) error
	// Lookup returns the replica holding machineID's tunnel and the address
	// (host:port) of its internal listener; ErrNoTunnel when none.
	Lookup(ctx context.Context, machineID string) (replicaID, addr string, err error)
}

// RegistryConfig configures a Registry.
type RegistryConfig struct {
	ReplicaID string // this replica; the subject of its relay tokens
	Audience  string // the daemon URL agents are told to dial (the token's aud)

	Signer     *agentauth.Signer   // broker key: proofs and relay tokens
	PublicKeys []ed25519.PublicKey // accepted relay token keys (default: the Signer's)

	Verifier  Verifier   // checks agent tokens (required)
	Authorize Authorizer // nil: accept every verified machine

	Locator         Locator      // nil: single replica
	RelayHTTPClient *http.Client // for relay upgrades; a keep-alive-less client when nil
	Logger          hclog.Logger

	KeepAlive time.Duration // yamux keepalive (default DefaultKeepAlive)

	OnConnect    func(*Identity)        // a tunnel came up on this replica
	OnDisconnect func(machineID string) // this replica's tunnel for the machine ended
}

// Registry holds the tunnels agents opened to this replica and dials
// machines through them (or through the replica that holds them).
type Registry struct {
	cfg         RegistryConfig
	log         hclog.Logger
	audience    string
	ymx         *yamux.Config
	client      *http.Client
	relayClient *http.Client
	closedCh    chan struct{}

	mu      sync.Mutex
	closed  bool
	tunnels map[string]*tunnel
	waiters map[string]*waiter
}

type tunnel struct {
	id     *Identity
	sess   *yamux.Session
	cancel context.CancelFunc
	relay  *agentauth.Verifier // relay tokens for this machine (single-use within the tunnel's life)
}

func (t *tunnel) close() {
	_ = t.sess.Close()
	t.cancel()
}

type waiter struct {
	ch chan struct{} // closed when a tunnel for the machine arrives
	n  int
}

// NewRegistry returns a Registry.
func NewRegistry(cfg RegistryConfig) (*Registry, error) {
	if cfg.Signer == nil {
		return nil, errors.New("tunnel: registry needs the broker Signer")
	}
	if cfg.Verifier == nil {
		return nil, errors.New("tunnel: registry needs a token Verifier")
	}
	if cfg.Audience == "" {
		return nil, errors.New("tunnel: registry needs the Audience (daemon URL)")
	}
	if cfg.Locator != nil && cfg.ReplicaID == "" {
		return nil, errors.New("tunnel: a registry with a Locator needs its ReplicaID")
	}
	if len(cfg.PublicKeys) == 0 {
		cfg.PublicKeys = []ed25519.PublicKey{cfg.Signer.PublicKey()}
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	r := &Registry{
		cfg:      cfg,
		log:      log,
		audience: strings.TrimRight(cfg.Audience, "/"),
		ymx:      yamuxConfig(cfg.KeepAlive, log),
		closedCh: make(chan struct{}),
		tunnels:  map[string]*tunnel{},
		waiters:  map[string]*waiter{},
	}
	r.relayClient = cfg.RelayHTTPClient
	if r.relayClient == nil {
		r.relayClient = &http.Client{Transport: &http.Transport{
			DialContext:       (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			DisableKeepAlives: true,
		}}
	}
	// No pooled connections: a stream is cheap to open on a live tunnel,
	// and a pooled one may belong to a tunnel that was replaced (the agent
	// redialled), where a POST would fail with EOF instead of being
	// carried by the new tunnel.
	r.client = &http.Client{Transport: ctxTransport{&http.Transport{
		DialContext:       r.DialContext,
		DisableKeepAlives: true,
	}}}
	return r, nil
}

// ServeTunnel is the handler for Path: it authenticates the agent, proves
// the broker key, upgrades and keeps the tunnel until it ends.
func (r *Registry) ServeTunnel(w http.ResponseWriter, req *http.Request) {
	if r.isClosed() {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "shutting down")
		return
	}
	if !offers(req.Header.Values("Sec-WebSocket-Protocol"), Subprotocol) {
		writeError(w, http.StatusBadRequest, "bad_request", "a WebSocket upgrade with subprotocol "+Subprotocol+" is required")
		return
	}
	challenge, err := base64.RawURLEncoding.DecodeString(req.Header.Get(HeaderChallenge))
	if err != nil || len(challenge) != ChallengeSize {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("%s must be %d bytes, base64url without padding", HeaderChallenge, ChallengeSize))
		return
	}
	raw, err := agentauth.BearerToken(req)
	if err != nil {
		r.log.Info("tunnel refused", "remote", req.RemoteAddr, "reason", "no bearer token")
		writeError(w, http.StatusUnauthorized, "unauthorized", "a machine OIDC token is required")
		return
	}
	id, err := r.cfg.Verifier.Verify(req.Context(), raw)
	if err == nil && id.MachineID == "" {
		err = unauthorized("no machine id")
	}
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			r.log.Warn("tunnel refused: cannot verify tokens", "remote", req.RemoteAddr, "error", err)
			writeError(w, http.StatusServiceUnavailable, "unavailable", "cannot verify machine tokens now")
			return
		}
		m, app := claimed(raw)
		r.log.Info("tunnel refused", "claimed_machine", m, "claimed_app", app, "remote", req.RemoteAddr, "reason", err.Error())
		writeError(w, http.StatusUnauthorized, "unauthorized", "machine token refused: "+err.Error())
		return
	}
	if !validMachineID(id.MachineID) {
		r.log.Info("tunnel refused", "remote", req.RemoteAddr, "reason", "malformed machine id")
		writeError(w, http.StatusUnauthorized, "unauthorized", "malformed machine id")
		return
	}
	if r.cfg.Authorize != nil {
		if err := r.cfg.Authorize(req.Context(), id); err != nil {
			r.log.Info("tunnel refused", "machine", id.MachineID, "app", id.AppName, "remote", req.RemoteAddr, "reason", err.Error())
			writeError(w, http.StatusForbidden, "forbidden", err.Error())
			return
		}
	}
	relayV, err := agentauth.NewVerifier(r.cfg.PublicKeys, relayAudience(id.MachineID))
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	proof := r.cfg.Signer.Sign(ProofMessage(r.audience, id.MachineID, challenge))
	w.Header().Set(HeaderProof, base64.RawURLEncoding.EncodeToString(proof))
	c, err := websocket.Accept(w, req, &websocket.AcceptOptions{
		Subprotocols:    []string{Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		r.log.Info("tunnel upgrade failed", "machine", id.MachineID, "error", err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.SetReadLimit(maxMessage)
	sess, err := yamux.Client(newWSConn(ctx, c, r.audience, req.RemoteAddr), r.ymx)
	if err != nil { // only a bad config
		cancel()
		r.log.Error("tunnel session", "error", err)
		return
	}
	t := &tunnel{id: id, sess: sess, cancel: cancel, relay: relayV}
	if !r.install(t) {
		t.close()
		return
	}
	r.log.Info("tunnel up", "machine", id.MachineID, "app", id.AppName, "region", id.Region, "remote", req.RemoteAddr)
	<-sess.CloseChan()
	if r.drop(t) {
		r.log.Info("tunnel down", "machine", id.MachineID, "app", id.AppName)
	}
	cancel()
}

// claimed reads the machine and app a refused token claims, unverified,
// for the refusal's log line.
func claimed(raw string) (machine, app string) {
	var c struct {
		MachineID string `json:"machine_id"`
		AppName   string `json:"app_name"`
		jwt.RegisteredClaims
	}
	if _, _, err := jwt.NewParser().ParseUnverified(raw, &c); err != nil {
		return "", ""
	}
	clip := func(s string) string {
		if len(s) > 64 {
			return s[:64]
		}
		return s
	}
	return clip(c.MachineID), clip(c.AppName)
}

func offers(values []string, proto string) bool {
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			if strings.TrimSpace(p) == proto {
				return true
			}
		}
	}
	return false
}

// install makes t the machine's tunnel, closing a previous one, announcing
// it and waking waiters. It reports false when the registry is closed.
func (r *Registry) install(t *tunnel) bool {
	mid := t.id.MachineID
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return false
	}
	old := r.tunnels[mid]
	r.tunnels[mid] = t
	if w := r.waiters[mid]; w != nil {
		close(w.ch)
		delete(r.waiters, mid)
	}
	r.mu.Unlock()
	if old != nil {
		r.log.Info("tunnel replaced by a newer one", "machine", mid)
		old.close()
	}
	if r.cfg.Locator != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := r.cfg.Locator.Announce(ctx, mid); err != nil {
			r.log.Warn("announce tunnel", "machine", mid, "error", err)
		}
		cancel()
	}
	if r.cfg.OnConnect != nil {
		r.cfg.OnConnect(t.id)
	}
	return true
}

// drop forgets t if it is still the machine's tunnel (withdrawing it) and
// reports whether it was.
func (r *Registry) drop(t *tunnel) bool {
	mid := t.id.MachineID
	r.mu.Lock()
	ours := r.tunnels[mid] == t
	if ours {
		delete(r.tunnels, mid)
	}
	r.mu.Unlock()
	if !ours {
		return false
	}
	if r.cfg.Locator != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := r.cfg.Locator.Withdraw(ctx, mid); err != nil {
			r.log.Warn("withdraw tunnel", "machine", mid, "error", err)
		}
		cancel()
	}
	if r.cfg.OnDisconnect != nil {
		r.cfg.OnDisconnect(mid)
	}
	return true
}

func (r *Registry) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// local returns the machine's tunnel on this replica, or registers a waiter
// for its arrival (release it with unwait).
func (r *Registry) local(machineID string, wait bool) (*tunnel, *waiter, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, nil, ErrClosed
	}
	if t := r.tunnels[machineID]; t != nil {
		return t, nil, nil
	}
	if !wait {
		return nil, nil, nil
	}
	w := r.waiters[machineID]
	if w == nil {
		w = &waiter{ch: make(chan struct{})}
		r.waiters[machineID] = w
	}
	w.n++
	return nil, w, nil
}

func (r *Registry) unwait(machineID string, w *waiter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.n--
	if w.n == 0 && r.waiters[machineID] == w {
		delete(r.waiters, machineID)
	}
}

// errRelayGone: the replica named by the Locator no longer has the tunnel.
var errRelayGone = errors.New("tunnel: relay target has no tunnel")

// DialMachine opens a stream to the machine's agent: through this replica's
// tunnel, or through the replica the Locator names (the relay). It waits for
// a tunnel — woken by local arrivals, polling the Locator with backoff —
// until ctx ends; the error then matches ErrNoTunnel and ctx's error. The
// returned conn is not bound to ctx.
func (r *Registry) DialMachine(ctx context.Context, machineID string) (net.Conn, error) {
	if !validMachineID(machineID) {
		return nil, fmt.Errorf("tunnel: malformed machine id %q", machineID)
	}
	return r.await(ctx, machineID, true)
}

// Wait returns when a tunnel for the machine is up on some replica, or with
// ctx's error (matching ErrNoTunnel too).
func (r *Registry) Wait(ctx context.Context, machineID string) error {
	_, err := r.await(ctx, machineID, false)
	return err
}

func (r *Registry) await(ctx context.Context, machineID string, dial bool) (net.Conn, error) {
	bo := backoff{min: 50 * time.Millisecond, max: 2 * time.Second}
	for {
		t, w, err := r.local(machineID, true)
		if err != nil {
			return nil, err
		}
		if t != nil {
			if !dial {
				return nil, nil
			}
			s, err := t.sess.OpenStream()
			if err == nil {
				return s, nil
			}
			// The session is ending: forget it and look again.
			r.log.Debug("open stream on a dying tunnel", "machine", machineID, "error", err)
			t.close()
			r.drop(t)
			continue
		}
		var retry <-chan time.Time
		var timer *time.Timer
		if r.cfg.Locator != nil {
			c, found, err := r.remote(ctx, machineID, dial)
			if found {
				r.unwait(machineID, w)
				return c, err
			}
			if err != nil && ctx.Err() == nil {
				r.log.Debug("tunnel lookup", "machine", machineID, "error", err)
			}
			timer = time.NewTimer(bo.next())
			retry = timer.C
		}
		select {
		case <-w.ch:
		case <-retry:
		case <-ctx.Done():
			stopTimer(timer)
			r.unwait(machineID, w)
			return nil, fmt.Errorf("%w %s: %w", ErrNoTunnel, machineID, ctx.Err())
		case <-r.closedCh:
			stopTimer(timer)
			r.unwait(machineID, w)
			return nil, ErrClosed
		}
		stopTimer(timer)
		r.unwait(machineID, w)
	}
}

// remote asks the Locator; found is true when the lookup named another
// replica and (when dialing) the relay succeeded or failed for good.
func (r *Registry) remote(ctx context.Context, machineID string, dial bool) (net.Conn, bool, error) {
	replica, addr, err := r.cfg.Locator.Lookup(ctx, machineID)
	if err != nil {
		return nil, false, err
	}
	if replica == r.cfg.ReplicaID {
		return nil, false, nil // stale record of our own (or an arrival in flight)
	}
	if !dial {
		return nil, true, nil
	}
	c, err := r.dialRelay(ctx, machineID, addr)
	if err != nil {
		return nil, false, err
	}
	return c, true, nil
}

// dialRelay asks the replica at addr to open a stream to the machine's
// agent and hands back the upgraded connection.
func (r *Registry) dialRelay(ctx context.Context, machineID, hostport string) (net.Conn, error) {
	tok, err := r.cfg.Signer.Token(relayAudience(machineID), r.cfg.ReplicaID)
	if err != nil {
		return nil, err
	}
	u := "http://" + hostport + RelayPath + url.PathEscape(machineID)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", RelayUpgrade)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := r.relayClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("tunnel relay to %s: %w", hostport, err)
	}
	switch resp.StatusCode {
	case http.StatusSwitchingProtocols:
		rwc, ok := resp.Body.(io.ReadWriteCloser)
		if !ok {
			resp.Body.Close()
			return nil, fmt.Errorf("tunnel relay to %s: the HTTP client cannot upgrade", hostport)
		}
		return &relayConn{ReadWriteCloser: rwc, local: addr(r.cfg.ReplicaID), remote: addr(hostport)}, nil
	case http.StatusNotFound:
		resp.Body.Close()
		return nil, errRelayGone
	default:
		code, msg := readError(resp.Body)
		resp.Body.Close()
		return nil, fmt.Errorf("tunnel relay to %s: %s %s: %s", hostport, resp.Status, code, msg)
	}
}

// relayConn is an upgraded relay connection. Deadlines are not supported
// (the HTTP client does not expose the socket); bound calls with contexts.
type relayConn struct {
	io.ReadWriteCloser
	local, remote net.Addr
}

var errNoDeadline = fmt.Errorf("tunnel: relay and tunnel connections have no deadlines: %w", errors.ErrUnsupported)

func (c *relayConn) LocalAddr() net.Addr                { return c.local }
func (c *relayConn) RemoteAddr() net.Addr               { return c.remote }
func (c *relayConn) SetDeadline(t time.Time) error      { return errNoDeadline }
func (c *relayConn) SetReadDeadline(t time.Time) error  { return errNoDeadline }
func (c *relayConn) SetWriteDeadline(t time.Time) error { return errNoDeadline }

// ServeRelay is the handler for RelayPath (internal listener only): another
// replica asks for a stream to a machine whose tunnel is here. It answers
// 404 when the tunnel is not (or no longer) here, 401 on a bad relay token,
// else 101 and pipes the connection to a new stream both ways.
func (r *Registry) ServeRelay(w http.ResponseWriter, req *http.Request) {
	mid := strings.TrimPrefix(req.URL.Path, RelayPath)
	if !validMachineID(mid) {
		writeError(w, http.StatusNotFound, "not_found", "no such machine")
		return
	}
	if !strings.EqualFold(req.Header.Get("Upgrade"), RelayUpgrade) {
		writeError(w, http.StatusBadRequest, "bad_request", "Upgrade: "+RelayUpgrade+" is required")
		return
	}
	t, _, _ := r.local(mid, false)
	if t == nil {
		writeError(w, http.StatusNotFound, "not_found", "no tunnel for this machine here")
		return
	}
	claims, err := t.relay.VerifyRequest(req)
	if err != nil {
		r.log.Info("relay refused", "machine", mid, "remote", req.RemoteAddr, "reason", err.Error())
		writeError(w, http.StatusUnauthorized, "unauthorized", "invalid relay token")
		return
	}
	stream, err := t.sess.OpenStream()
	if err != nil {
		t.close()
		r.drop(t)
		writeError(w, http.StatusNotFound, "not_found", "the tunnel ended")
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		stream.Close()
		writeError(w, http.StatusInternalServerError, "internal", "cannot hijack")
		return
	}
	_, err = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + RelayUpgrade + "\r\n\r\n")
	if err == nil {
		err = brw.Flush()
	}
	if err != nil {
		conn.Close()
		stream.Close()
		return
	}
	r.log.Debug("relaying", "machine", mid, "for", claims.SessionID)
	var from io.Reader = conn
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		from = io.MultiReader(bytes.NewReader(bytes.Clone(b)), conn)
	}
	pipe(conn, stream, from)
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// pipe copies both ways between a hijacked connection and a stream,
// propagating half-closes, until both directions end.
func pipe(conn net.Conn, stream *yamux.Stream, from io.Reader) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(stream, from)
		_ = stream.Close() // half-close: FIN to the agent
	}()
	_, _ = io.Copy(conn, stream)
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	} else {
		_ = conn.Close()
	}
	<-done
	_ = conn.Close()
	_ = stream.Close()
}

// DialContext dials an AgentURL host (addr "<machine>.tunnel.hangar.invalid:80")
// with DialMachine. It is the HTTPClient's dialer.
func (r *Registry) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	mid, ok := MachineFromHost(address)
	if !ok {
		return nil, fmt.Errorf("tunnel: %s is not an agent tunnel address", address)
	}
	if rc, ok := ctx.Value(reqCtxKey{}).(context.Context); ok {
		// http.Transport detaches dials from the request's cancellation;
		// waiting for a tunnel must still end with the request.
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		stop := context.AfterFunc(rc, func() { cancel(context.Cause(rc)) })
		defer stop()
		defer cancel(nil)
	}
	return r.DialMachine(ctx, mid)
}

type reqCtxKey struct{}

// ctxTransport hands the request's context to DialContext (as a value,
// which survives the Transport's detaching of the dial context).
type ctxTransport struct{ t *http.Transport }

func (c ctxTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	return c.t.RoundTrip(req.WithContext(context.WithValue(ctx, reqCtxKey{}, ctx)))
}

func (c ctxTransport) CloseIdleConnections() { c.t.CloseIdleConnections() }

// HTTPClient returns the client for AgentURL base URLs: it routes their
// hosts through tunnels. It has no overall timeout (contexts bound calls);
// idle keep-alive connections are kept briefly.
func (r *Registry) HTTPClient() *http.Client { return r.client }

// Connected reports whether a tunnel for the machine is up on this replica.
func (r *Registry) Connected(machineID string) bool {
	t, _, _ := r.local(machineID, false)
	return t != nil && !t.sess.IsClosed()
}

// Probe reports whether this replica's tunnel to the machine answers a
// ping within d (ProbeTimeout when d <= 0). A tunnel that does not is
// closed and forgotten, so that dials wait for the agent's next tunnel
// instead of writing into a dead connection. Without a tunnel here it
// reports false. The daemon probes after resuming a suspended machine:
// only a dead tunnel needs the agent to redial, and making a live one
// redial would cut the calls already on it.
func (r *Registry) Probe(machineID string, d time.Duration) bool {
	if d <= 0 {
		d = ProbeTimeout
	}
	t, _, _ := r.local(machineID, false)
	if t == nil {
		return false
	}
	if probe(t.sess, d) {
		return true
	}
	r.log.Info("tunnel did not answer a ping; dropping it", "machine", machineID)
	t.close()
	r.drop(t)
	return false
}

// Disconnect drops this replica's tunnel for the machine, if any.
func (r *Registry) Disconnect(machineID string) {
	t, _, _ := r.local(machineID, false)
	if t == nil {
		return
	}
	t.close()
	r.drop(t)
}

// Count returns the number of tunnels on this replica.
func (r *Registry) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.tunnels)
}

// Close drops every tunnel (withdrawing them) and fails pending and later
// dials with ErrClosed.
func (r *Registry) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.closedCh)
	ts := make([]*tunnel, 0, len(r.tunnels))
	for _, t := range r.tunnels {
		ts = append(ts, t)
	}
	r.mu.Unlock()
	for _, t := range ts {
		t.close()
		r.drop(t)
	}
	r.client.CloseIdleConnections()
	return nil
}
