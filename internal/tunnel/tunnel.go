package tunnel

import (
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

// frameConn joins each yamux frame header with its body into one Write, so a
// data frame is one WebSocket message instead of two. yamux writes from a
// single send loop, but the lock keeps it safe regardless.
type frameConn struct {
	net.Conn
	mu  sync.Mutex
	hdr []byte
}

const yamuxHeaderSize = 12

func (c *frameConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hdr == nil && len(p) == yamuxHeaderSize && p[1] == 0 /* data */ && binary.BigEndian.Uint32(p[8:]) > 0 {
		c.hdr = append(make([]byte, 0, yamuxHeaderSize), p...)
		return len(p), nil
	}
	if c.hdr != nil {
		buf := make([]byte, 0, len(c.hdr)+len(p))
		buf = append(append(buf, c.hdr...), p...)
		c.hdr = nil
		n, err := c.Conn.Write(buf)
		n -= yamuxHeaderSize
		if n < 0 {
			n = 0
		}
		return n, err
	}
	return c.Conn.Write(p)
}

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
