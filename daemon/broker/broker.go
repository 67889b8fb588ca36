package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/wire"
)

// Endpoint is where a ready session's agent listens.
type Endpoint struct {
	// AgentURL is the agent's base URL, e.g. http://10.0.0.5:8080
	// (agentapi.BaseURL). ws:// and wss:// work too.
	AgentURL string
	// MachineID is the token's audience; SessionID its subject.
	MachineID, SessionID string
	// HTTPClient reaches AgentURL (an agent tunnel's client); nil: the
	// broker's own dialling client (Config.HTTPClient).
	HTTPClient *http.Client
}

// Target is the session one client attaches to.
type Target struct {
	// SessionID names the session in logs.
	SessionID string
	// Role is the most the client may do: "rw" or "ro". An "ro" target forces
	// every attach to ro; an "rw" target lets the client choose.
	Role string
	// WaitReady blocks until the session is ready and returns its agent,
	// calling progress (never nil; it sends a state frame to the client and
	// may block while the client is slow) with state updates meanwhile, and
	// never after it returned. If the session never gets ready it returns an
	// error wrapping ErrGone (close 4004), ErrUnavailable (4503) or a
	// *CloseError; the error's text goes to the client in the error frame
	// for ErrGone. The broker calls it again (with a no-op progress) before
	// each agent re-dial, so it should be cheap for a ready session.
	WaitReady func(ctx context.Context, progress func(state, detail string, queuePosition int)) (Endpoint, error)
}

// ReadyTarget returns a Target for a session that is already ready at ep (for
// benchmarks and tools that run the broker in-process against an agent).
func ReadyTarget(ep Endpoint, role string) Target {
	return Target{
		SessionID: ep.SessionID,
		Role:      role,
		WaitReady: func(context.Context, func(string, string, int)) (Endpoint, error) { return ep, nil },
	}
}

// Errors WaitReady wraps to say why a session will not become ready.
var (
	// ErrGone: the session ended or does not exist (close 4004).
	ErrGone = errors.New("session gone")
	// ErrUnavailable: the session's VM is unavailable; retry later (close 4503).
	ErrUnavailable = errors.New("session unavailable")
)

// CloseError lets WaitReady choose the close code and the error frame the
// client gets (e.g. 4029 with a retry hint). Its Message goes to the client.
type CloseError struct {
	// Code is the WebSocket close code (a wire.Close* constant).
	Code int
	// ErrCode is the error frame's code (a wire.ErrCode* constant).
	ErrCode string
	// Message is the error frame's message; it is shown to the client.
	Message string
	// RetryAfter, if set, becomes the error frame's retry_after_ms.
	RetryAfter time.Duration
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("close %d: %s: %s", e.Code, e.ErrCode, e.Message)
}

// Hooks observe the broker (all optional; called concurrently).
type Hooks struct {
	// Bytes counts payload bytes spliced, toClient = agent→client.
	Bytes func(toClient bool, n int)
	// StreamStarted and StreamEnded bracket every Serve call.
	StreamStarted func()
	StreamEnded   func()
	// Reconnected is called after each agent-hop reconnect attempt sequence
	// (err nil: the client saw nothing; else the stream was closed).
	Reconnected func(err error)
}

// Config configures a Broker. Zero durations and sizes take the defaults.
type Config struct {
	// Signer mints the per-dial agent token (required).
	Signer *agentauth.Signer
	// Logger defaults to a null logger.
	Logger hclog.Logger
	// Hooks observe streams and bytes (metrics).
	Hooks Hooks
	// HTTPClient dials agents; default: a dedicated transport without proxy.
	HTTPClient *http.Client

	// AttachTimeout bounds the wait for the client's first frame (10 s, as
	// docs/protocol.md promises).
	AttachTimeout time.Duration
	// DialTimeout bounds one agent dial and handshake up to attached (10 s).
	DialTimeout time.Duration
	// ReconnectTimeout is how long the broker tries to re-attach a dropped
	// agent hop before it closes the client with 4503 (30 s).
	ReconnectTimeout time.Duration
	// PingInterval is the keepalive period on both hops (wire.PingInterval).
	// An agent hop that sends nothing for 3 intervals is treated as dropped.
	PingInterval time.Duration
	// WriteTimeout is how long one write to the client may stay pending
	// before the client counts as not reading and is closed with 1008 (30 s,
	// the agent's own bound). It is checked on the keepalive tick, so a
	// stalled client goes within WriteTimeout + PingInterval.
	WriteTimeout time.Duration
	// MaxClientMessage is the largest frame accepted from a writer (1 MiB,
	// the agent's default HANGAR_AGENT_MAX_FRAME): a larger one is read to
	// its end without being kept, refused with frame_too_large and skipped.
	MaxClientMessage int64
	// MaxViewerMessage is the largest control frame accepted from a
	// read-only viewer (4 KiB; a viewer sends only acks and pings). A
	// viewer's binary frames (input) are never buffered: they are discarded
	// as they arrive and refused at the daemon, never forwarded.
	MaxViewerMessage int64
	// MaxAgentMessage is the largest frame accepted from an agent (16 MiB).
	MaxAgentMessage int64
	// InputLogBytes bounds the client input kept for re-sending after an
	// agent-hop reconnect (64 KiB; the newest frame is always kept).
	InputLogBytes int
}

// Default values of Config.
const (
	DefaultAttachTimeout    = 10 * time.Second
	DefaultDialTimeout      = 10 * time.Second
	DefaultReconnectTimeout = 30 * time.Second
	DefaultWriteTimeout     = 30 * time.Second
	DefaultMaxClientMessage = 1 << 20
	DefaultMaxViewerMessage = 4 << 10
	// MaxAttachFrame bounds the first frame (an attach is under 200 bytes).
	MaxAttachFrame = 4 << 10
	// MaxViolations is how many refused frames (a viewer's input, resize or
	// signal) a viewer may send before it is closed with 4003, as on the agent.
	MaxViolations          = 16
	DefaultMaxAgentMessage = 16 << 20
	DefaultInputLogBytes   = 64 << 10
)

// Broker splices client WebSockets to agents. Safe for concurrent use; one
// Broker serves any number of streams.
type Broker struct {
	cfg    Config
	log    hclog.Logger
	client *http.Client
}

// New returns a Broker. It panics if cfg.Signer is nil (a programming error).
func New(cfg Config) *Broker {
	if cfg.Signer == nil {
		panic("broker.New: nil Signer")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.AttachTimeout <= 0 {
		cfg.AttachTimeout = DefaultAttachTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ReconnectTimeout <= 0 {
		cfg.ReconnectTimeout = DefaultReconnectTimeout
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = wire.PingInterval
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxClientMessage <= 0 {
		cfg.MaxClientMessage = DefaultMaxClientMessage
	}
	if cfg.MaxViewerMessage <= 0 {
		cfg.MaxViewerMessage = DefaultMaxViewerMessage
	}
	if cfg.MaxAgentMessage <= 0 {
		cfg.MaxAgentMessage = DefaultMaxAgentMessage
	}
	if cfg.InputLogBytes <= 0 {
		cfg.InputLogBytes = DefaultInputLogBytes
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			Proxy: nil,
			DialContext: (&net.Dialer{
				Timeout:   cfg.DialTimeout,
				KeepAlive: 15 * time.Second,
			}).DialContext,
			// Upgraded connections leave the pool; nothing to keep alive.
			DisableKeepAlives: true,
			ForceAttemptHTTP2: false,
		}}
	}
	return &Broker{cfg: cfg, log: cfg.Logger.Named("broker"), client: hc}
}

// Serve splices client, an accepted WebSocket whose negotiated subprotocol
// is wire.SubprotocolPTY or wire.SubprotocolJSONL (none counts as pty), to
// the agent of t until either side ends the stream. It reads and validates
// the client's attach frame, sends state frames while t.WaitReady
// progresses, then dials the agent and splices frames both ways, re-attaching
// transparently when the agent hop drops. Serve always closes client before
// it returns and leaves no goroutine behind.
func (b *Broker) Serve(ctx context.Context, client *websocket.Conn, t Target) {
	s := newStream(b, client, t)
	s.run(ctx)
}

// Accept upgrades r to a WebSocket offering the hangar subprotocols (opts may
// add origin checks; its Subprotocols are replaced) and serves it with t. It
// is the whole attach handler for callers that need no own HTTP handling
// (benchmarks, tests, tools).
func (b *Broker) Accept(w http.ResponseWriter, r *http.Request, t Target, opts *websocket.AcceptOptions) {
	var o websocket.AcceptOptions
	if opts != nil {
		o = *opts
	}
	o.Subprotocols = wire.Subprotocols
	c, err := websocket.Accept(w, r, &o)
	if err != nil {
		b.log.Debug("accept attach", "error", err)
		return
	}
	b.Serve(r.Context(), c, t)
}

// Handler returns an http.Handler that attaches every request to t (with
// Accept): the broker as a stand-alone attach endpoint in front of one agent,
// e.g. httptest.NewServer(b.Handler(ReadyTarget(ep, "rw"))) in a benchmark.
func (b *Broker) Handler(t Target) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.Accept(w, r, t, nil)
	})
}

// attachURL is the agent's attach endpoint for its base URL.
func attachURL(base string) string {
	return strings.TrimRight(base, "/") + agentapi.PathAttach
}
