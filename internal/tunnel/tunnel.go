package tunnel

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
)

// Wire constants (see the package doc).
const (
	Path                = "/v1/agent/tunnel"      // daemon endpoint agents dial
	RelayPath           = "/internal/v1/tunnels/" // + machine id: replica-to-replica relay (internal listener)
	Subprotocol         = "hangar.tunnel.v1"      // WebSocket subprotocol of the tunnel
	HeaderChallenge     = "Hangar-Tunnel-Challenge"
	HeaderProof         = "Hangar-Tunnel-Proof"
	EnvDaemonURL        = "HANGAR_DAEMON_URL"     // agent: where to dial
	EnvFlyAPISocket     = "HANGAR_FLY_API_SOCKET" // agent: local Machines API socket (default DefaultFlyAPISocket)
	DefaultFlyAPISocket = "/.fly/api"

	// RelayUpgrade is the Upgrade token of relay requests.
	RelayUpgrade = "hangar-relay"
	// RelayAudiencePrefix + machine id is the audience of relay tokens.
	RelayAudiencePrefix = "hangar-relay:"
	// ChallengeSize is the size of the agent's challenge in bytes.
	ChallengeSize = 32
	// DefaultKeepAlive is the yamux keepalive interval unless configured.
	DefaultKeepAlive = 15 * time.Second
	// DialTimeout bounds one tunnel dial of the agent (token, handshake).
	DialTimeout = 10 * time.Second

	agentHostSuffix = ".tunnel.hangar.invalid"
	maxMessage      = 1 << 20 // largest WebSocket message accepted (yamux frames are ≤ 256 KiB + 12)
	writeTimeout    = 10 * time.Second
)

// Errors, usable with errors.Is.
var (
	// ErrUnauthorized: the agent's token was refused (401).
	ErrUnauthorized = errors.New("tunnel: unauthorized")
	// ErrForbidden: the Authorizer refused the machine (403). An Authorizer
	// may wrap it; any Authorizer error is a 403.
	ErrForbidden = errors.New("tunnel: forbidden")
	// ErrNoTunnel: no tunnel for the machine (Locator.Lookup, DialMachine).
	ErrNoTunnel = errors.New("tunnel: no tunnel for machine")
	// ErrUnavailable: the daemon cannot check tokens right now (issuer
	// discovery failed); the agent gets a 503 and retries.
	ErrUnavailable = errors.New("tunnel: identity issuer unavailable")
	// ErrClosed: the Registry or Listener is closed.
	ErrClosed = errors.New("tunnel: closed")
)

// ProofMessage is what the daemon signs with the broker key to prove it to
// the agent: a fixed domain-separation prefix, then the audience (the daemon
// URL the agent dialled), the machine id and the agent's challenge, each
// preceded by its length as a 4-byte big-endian integer.
func ProofMessage(audience, machineID string, challenge []byte) []byte {
	const prefix = "hangar.tunnel.v1 proof\x00"
	b := make([]byte, 0, len(prefix)+12+len(audience)+len(machineID)+len(challenge))
	b = append(b, prefix...)
	for _, f := range [][]byte{[]byte(audience), []byte(machineID), challenge} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// AgentURL is the base URL naming a machine's agent through its tunnel, for
// agentapi.NewClient with Registry.HTTPClient.
func AgentURL(machineID string) string {
	return "http://" + machineID + agentHostSuffix
}

// MachineFromHost returns the machine id of an AgentURL host, with or
// without a port.
func MachineFromHost(hostport string) (string, bool) {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if len(host) <= len(agentHostSuffix) || !strings.EqualFold(host[len(host)-len(agentHostSuffix):], agentHostSuffix) {
		return "", false
	}
	id := host[:len(host)-len(agentHostSuffix)]
	if !validMachineID(id) {
		return "", false
	}
	return id, true
}

// validMachineID accepts a DNS label (Fly machine ids are 14 hex digits).
func validMachineID(id string) bool {
	if id == "" || len(id) > 63 {
		return false
	}
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

func relayAudience(machineID string) string { return RelayAudiencePrefix + machineID }

// errorBody is the daemon's JSON error shape.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var b errorBody
	b.Error.Code, b.Error.Message = code, msg
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(&b)
}

func readError(r io.Reader) (code, msg string) {
	var b errorBody
	data, _ := io.ReadAll(io.LimitReader(r, 4<<10))
	if json.Unmarshal(data, &b) == nil && b.Error.Code != "" {
		return b.Error.Code, b.Error.Message
	}
	return "", strings.TrimSpace(string(data))
}

func yamuxConfig(keepAlive time.Duration, log hclog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	if keepAlive <= 0 {
		keepAlive = DefaultKeepAlive
	}
	c.KeepAliveInterval = keepAlive
	c.ConnectionWriteTimeout = writeTimeout
	c.StreamOpenTimeout = 30 * time.Second
	c.StreamCloseTimeout = time.Minute
	c.LogOutput = io.Discard
	if log != nil {
		// yamux reports every ended tunnel as an error; the tunnel's own
		// up/down lines carry that at Info, so its lines are debug detail.
		c.LogOutput = log.Named("yamux").StandardWriter(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug})
	}
	return c
}

// wsConn carries the tunnel's byte stream in binary WebSocket messages, one
// per Write, for yamux. It replaces websocket.NetConn, whose reads and
// writes take its context and so register (and allocate) a cancellation
// callback on every message: the tunnel carries every frame of every
// stream, so that cost was paid per keystroke and per output chunk on both
// ends. Here reads and writes take no cancellable context; ctx ending, like
// Close, closes the WebSocket (one callback for the tunnel's life), which
// unblocks them. yamux bounds its own sends and uses no deadlines.
//
// Write also joins each yamux data frame header with its body, so a data
// frame is one WebSocket message instead of two. yamux writes from a single
// send loop; the lock keeps it safe regardless.
type wsConn struct {
	c        *websocket.Conn
	stop     func() bool
	local    net.Addr
	remote   net.Addr
	readMu   sync.Mutex
	r        io.Reader // the message being read, nil between messages
	writeMu  sync.Mutex
	hdr      [yamuxHeaderSize]byte
	pending  bool // hdr holds a data frame header waiting for its body
	closeErr error
	once     sync.Once
}

const yamuxHeaderSize = 12

func newWSConn(ctx context.Context, c *websocket.Conn, local, remote string) *wsConn {
	w := &wsConn{c: c, local: addr(local), remote: addr(remote)}
	w.stop = context.AfterFunc(ctx, func() { _ = c.CloseNow() })
	return w
}

// joinBufs holds the buffers Write joins a header and its body in: one per
// write in flight, so an idle tunnel holds none.
var joinBufs = sync.Pool{New: func() any { return new([]byte) }}

func (w *wsConn) Write(p []byte) (int, error) {
	w.writeMu.Lock()
	defer w.writeMu.Unlock()
	if !w.pending && len(p) == yamuxHeaderSize && p[1] == 0 /* data */ && binary.BigEndian.Uint32(p[8:]) > 0 {
		copy(w.hdr[:], p)
		w.pending = true
		return len(p), nil
	}
	if !w.pending {
		if err := w.c.Write(context.Background(), websocket.MessageBinary, p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	w.pending = false
	bp := joinBufs.Get().(*[]byte)
	b := append(append((*bp)[:0], w.hdr[:]...), p...)
	err := w.c.Write(context.Background(), websocket.MessageBinary, b)
	*bp = b[:0]
	joinBufs.Put(bp)
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *wsConn) Read(p []byte) (int, error) {
	w.readMu.Lock()
	defer w.readMu.Unlock()
	for {
		if w.r == nil {
			typ, r, err := w.c.Reader(context.Background())
			if err != nil {
				// A peer's CloseNow (wsConn.Close) shows as EOF, a
				// handshake as a normal closure: both end the session.
				if websocket.CloseStatus(err) == websocket.StatusNormalClosure || errors.Is(err, io.EOF) {
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.MessageBinary {
				_ = w.c.Close(websocket.StatusUnsupportedData, "binary messages only")
				return 0, errors.New("tunnel: text message on the tunnel")
			}
			w.r = r
		}
		n, err := w.r.Read(p)
		if err == io.EOF {
			w.r = nil
			if n == 0 {
				continue
			}
			return n, nil
		}
		return n, err
	}
}

// Close ends the WebSocket at once, without a closing handshake. The
// handshake (websocket.Conn.Close) waits up to 5 s to write the close frame
// and 5 s more for the peer's answer: behind a peer that stopped reading (a
// starved or frozen machine) every yamux Session.Close paid that while
// holding yamux's shutdown lock, so a daemon dial that found the tunnel
// dead, a resume's probe, an install replacing a tunnel and the agent's
// redial all waited seconds for a tunnel nobody used any more. yamux needs
// no handshake: the peer's read fails and its session ends with it.
func (w *wsConn) Close() error {
	w.once.Do(func() {
		w.stop()
		w.closeErr = w.c.CloseNow()
	})
	return w.closeErr
}

func (w *wsConn) LocalAddr() net.Addr  { return w.local }
func (w *wsConn) RemoteAddr() net.Addr { return w.remote }

// Deadlines are not supported: yamux uses none, and ctx or Close end the
// connection.
func (w *wsConn) SetDeadline(time.Time) error      { return errNoDeadline }
func (w *wsConn) SetReadDeadline(time.Time) error  { return errNoDeadline }
func (w *wsConn) SetWriteDeadline(time.Time) error { return errNoDeadline }

// ProbeTimeout bounds the ping that tells a live tunnel from a dead one
// after a resume (Registry.Probe, Listener.Redial). A live peer answers in
// one round trip; a peer across a dead connection never does.
const ProbeTimeout = time.Second

// probe reports whether s answers a ping within d. yamux bounds the ping
// itself only by its ConnectionWriteTimeout, so a late one is left to
// finish (or time out) on its own goroutine.
func probe(s *yamux.Session, d time.Duration) bool {
	ch := make(chan error, 1)
	go func() {
		_, err := s.Ping()
		ch <- err
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-ch:
		return err == nil
	case <-t.C:
		return false
	}
}

// backoff is jittered exponential backoff (half fixed, half random).
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	switch {
	case b.cur == 0:
		b.cur = b.min
	case b.cur < b.max:
		b.cur *= 2
		if b.cur > b.max {
			b.cur = b.max
		}
	}
	half := b.cur / 2
	return half + rand.N(half+1)
}

func (b *backoff) reset() { b.cur = 0 }

// addr names a tunnel endpoint.
type addr string

func (a addr) Network() string { return "hangar-tunnel" }
func (a addr) String() string  { return string(a) }
