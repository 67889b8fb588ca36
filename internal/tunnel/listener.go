package tunnel

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"

	"github.com/hangarhq/hangar/internal/agentauth"
)

// TokenSource returns a fresh identity token of this machine for audience.
// It is called once per dial: the daemon accepts each token once.
type TokenSource func(ctx context.Context, audience string) (string, error)

// FlyTokenSource asks the local Machines API on the unix socket socketPath
// (DefaultFlyAPISocket when empty) for an OIDC token: POST /v1/tokens/oidc
// with {"aud": audience}; the response body is the raw JWT.
func FlyTokenSource(socketPath string) TokenSource {
	if socketPath == "" {
		socketPath = DefaultFlyAPISocket
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		DisableKeepAlives: true,
	}}
	return func(ctx context.Context, audience string) (string, error) {
		body, _ := json.Marshal(map[string]string{"aud": audience})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://localhost/v1/tokens/oidc", bytes.NewReader(body))
		if err != nil {
			return "", err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return "", fmt.Errorf("machine OIDC token: %w", err)
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return "", fmt.Errorf("machine OIDC token: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			msg := strings.TrimSpace(string(data))
			if len(msg) > 200 {
				msg = msg[:200]
			}
			return "", fmt.Errorf("machine OIDC token: %s: %s", resp.Status, msg)
		}
		tok := strings.TrimSpace(string(data))
		if tok == "" {
			return "", errors.New("machine OIDC token: empty response")
		}
		return tok, nil
	}
}

// ListenerConfig configures the agent's side of the tunnel.
type ListenerConfig struct {
	DaemonURL  string              // where to dial (Path is appended); also the token audience
	MachineID  string              // this machine (FLY_MACHINE_ID): the proof names it
	PublicKeys []ed25519.PublicKey // broker public keys the daemon's proof must verify against
	Token      TokenSource         // required
	HTTPClient *http.Client        // for the WebSocket dial; http.DefaultClient when nil
	Logger     hclog.Logger

	MinBackoff time.Duration // first redial delay (default 100 ms)
	MaxBackoff time.Duration // largest redial delay (default 5 s)
	KeepAlive  time.Duration // yamux keepalive (default DefaultKeepAlive)
}

// stableAfter: a tunnel that stayed up this long resets the backoff.
const stableAfter = 30 * time.Second

// Listener is the agent's end of the tunnel: a net.Listener whose Accept
// yields the streams the daemon opens, across reconnects. It dials and
// redials in the background until closed (or its context ends).
type Listener struct {
	cfg      ListenerConfig
	log      hclog.Logger
	audience string
	url      string
	ymx      *yamux.Config

	ctx    context.Context
	cancel context.CancelFunc
	conns  chan net.Conn
	redial chan struct{} // buffered 1: skip the backoff wait
	done   chan struct{} // the dial loop ended

	mu         sync.Mutex
	sess       *yamux.Session
	up         chan struct{} // closed while a tunnel is up
	dialCancel context.CancelFunc
}

// Listen validates cfg and returns at once; the tunnel is dialled in the
// background and redialled whenever it drops.
func Listen(ctx context.Context, cfg ListenerConfig) (*Listener, error) {
	if cfg.DaemonURL == "" {
		return nil, errors.New("tunnel: no daemon URL")
	}
	if !strings.HasPrefix(cfg.DaemonURL, "http://") && !strings.HasPrefix(cfg.DaemonURL, "https://") {
		return nil, fmt.Errorf("tunnel: daemon URL %q: want http:// or https://", cfg.DaemonURL)
	}
	if cfg.MachineID == "" {
		return nil, errors.New("tunnel: no machine id")
	}
	if len(cfg.PublicKeys) == 0 {
		return nil, errors.New("tunnel: no broker public key")
	}
	if cfg.Token == nil {
		return nil, errors.New("tunnel: no token source")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	aud := strings.TrimRight(cfg.DaemonURL, "/")
	l := &Listener{
		cfg:      cfg,
		log:      log,
		audience: aud,
		url:      aud + Path,
		ymx:      yamuxConfig(cfg.KeepAlive, log),
		conns:    make(chan net.Conn),
		redial:   make(chan struct{}, 1),
		done:     make(chan struct{}),
		up:       make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancel(ctx)
	go l.run()
	return l, nil
}

// Accept waits for the next stream the daemon opens.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close ends the tunnel and the redialling; Accept then fails with
// net.ErrClosed. Streams already accepted stay open until the tunnel closes.
func (l *Listener) Close() error {
	l.cancel()
	l.mu.Lock()
	s := l.sess
	l.mu.Unlock()
	if s != nil {
		_ = s.Close()
	}
	<-l.done
	return nil
}

// Addr names the tunnel ("hangar-tunnel", the daemon URL).
func (l *Listener) Addr() net.Addr { return addr(l.url) }

// Connected reports whether a tunnel is up.
func (l *Listener) Connected() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sess != nil
}

// Up returns a channel that is closed while a tunnel is up: already closed
// when one is up now, else closed when the next one is established. After a
// tunnel drops, Up returns a new, open channel.
func (l *Listener) Up() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.up
}

// Redial makes sure the tunnel works after a resume. The agent calls it on
// SIGUSR1, which the daemon sends after resuming a suspended machine whose
// tunnel it found dead. A tunnel that answers a ping within ProbeTimeout is
// kept: dropping a live one would cut the calls the daemon already runs on
// it (a resumed claim's init failed with EOF that way). A tunnel that does
// not answer is dropped and dialled again at once, without backoff; a dial
// in progress is aborted and restarted (its connection may predate the
// suspension); a backoff wait is cut short.
func (l *Listener) Redial() {
	l.mu.Lock()
	s := l.sess
	l.mu.Unlock()
	if s != nil && probe(s, ProbeTimeout) {
		l.log.Info("tunnel answers; keeping it")
		return
	}
	l.mu.Lock()
	cur, dc := l.sess, l.dialCancel
	l.mu.Unlock()
	if cur != s {
		return // a new tunnel came up meanwhile: it is fresh
	}
	select {
	case l.redial <- struct{}{}:
	default:
	}
	if dc != nil {
		dc()
	}
	if s != nil {
		_ = s.Close()
	}
}

func (l *Listener) run() {
	defer close(l.done)
	bo := backoff{min: l.cfg.MinBackoff, max: l.cfg.MaxBackoff}
	for l.ctx.Err() == nil {
		sess, err := l.dial()
		if err != nil {
			if l.ctx.Err() != nil {
				return
			}
			var re *refusedError
			switch {
			case errors.Is(err, errBadProof):
				l.log.Error("tunnel refused: the daemon did not prove the broker key", "url", l.url, "error", err)
			case errors.As(err, &re):
				l.log.Warn("tunnel refused by the daemon", "url", l.url, "status", re.status, "code", re.code, "message", re.msg)
			default:
				l.log.Warn("tunnel dial failed", "url", l.url, "error", err)
			}
			if !l.pause(bo.next()) {
				return
			}
			continue
		}
		start := time.Now()
		l.setSession(sess)
		l.log.Info("tunnel up", "url", l.url)
		l.serve(sess)
		l.clearSession(sess)
		if l.ctx.Err() != nil {
			return
		}
		l.log.Info("tunnel down", "url", l.url, "after", time.Since(start).Round(time.Millisecond))
		if time.Since(start) >= stableAfter {
			bo.reset()
		}
		if !l.pause(bo.next()) {
			return
		}
	}
}

// pause waits d, or less on Redial; false when the listener is closed.
func (l *Listener) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.redial:
		return true
	case <-l.ctx.Done():
		return false
	}
}

func (l *Listener) setSession(s *yamux.Session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sess = s
	close(l.up)
}

func (l *Listener) clearSession(s *yamux.Session) {
	_ = s.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sess = nil
	l.up = make(chan struct{})
}

// serve hands the session's streams to Accept until the session ends.
func (l *Listener) serve(s *yamux.Session) {
	for {
		c, err := s.Accept()
		if err != nil {
			if !s.IsClosed() && errors.Is(err, yamux.ErrConnectionWriteTimeout) {
				// The stream's ACK waited ConnectionWriteTimeout behind
				// other frames (a daemon slow to read, a starved CPU);
				// yamux still sends it, the session lives on, and its
				// keepalive decides whether the tunnel is dead. Dropping
				// the tunnel here cut every stream on it and made the
				// daemon wait for a redial.
				l.log.Debug("stream accept slow; tunnel kept", "error", err)
				continue
			}
			return
		}
		select {
		case l.conns <- c:
		case <-l.ctx.Done():
			_ = c.Close()
			return
		}
	}
}

var errBadProof = errors.New("bad or missing " + HeaderProof)

type refusedError struct {
	status    int
	code, msg string
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("tunnel refused: %d %s: %s", e.status, e.code, e.msg)
}

func (e *refusedError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.status == http.StatusUnauthorized
	case ErrForbidden:
		return e.status == http.StatusForbidden
	}
	return false
}

// dial opens one tunnel: a fresh token, the WebSocket handshake, the proof
// check, then a yamux server session.
func (l *Listener) dial() (*yamux.Session, error) {
	ctx, cancel := context.WithTimeout(l.ctx, DialTimeout)
	defer cancel()
	l.mu.Lock()
	l.dialCancel = cancel
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.dialCancel = nil
		l.mu.Unlock()
	}()

	tok, err := l.cfg.Token(ctx, l.audience)
	if err != nil {
		return nil, err
	}
	challenge := make([]byte, ChallengeSize)
	if _, err := rand.Read(challenge); err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	h.Set(HeaderChallenge, base64.RawURLEncoding.EncodeToString(challenge))
	c, resp, err := websocket.Dial(ctx, l.url, &websocket.DialOptions{
		HTTPClient:      l.cfg.HTTPClient,
		HTTPHeader:      h,
		Subprotocols:    []string{Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			code, msg := readError(resp.Body)
			return nil, &refusedError{status: resp.StatusCode, code: code, msg: msg}
		}
		return nil, err
	}
	sig, err := base64.RawURLEncoding.DecodeString(resp.Header.Get(HeaderProof))
	if err != nil || !agentauth.VerifySignature(l.cfg.PublicKeys, ProofMessage(l.audience, l.cfg.MachineID, challenge), sig) {
		c.Close(websocket.StatusPolicyViolation, "bad proof")
		return nil, errBadProof
	}
	if c.Subprotocol() != Subprotocol {
		c.Close(websocket.StatusPolicyViolation, "subprotocol")
		return nil, fmt.Errorf("tunnel: the daemon did not accept subprotocol %s", Subprotocol)
	}
	c.SetReadLimit(maxMessage)
	nc := newWSConn(l.ctx, c, "agent:"+l.cfg.MachineID, l.url)
	s, err := yamux.Server(nc, l.ymx)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	return s, nil
}
