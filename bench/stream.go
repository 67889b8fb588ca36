package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/wire"
)

// path is one way to a session's agent: through the daemon (over the
// agent's tunnel or dialling the agent), straight to the agent, or through
// the bare reference relay.
type path interface {
	name() string
	// sessionID names the session the path reaches: paths to the same
	// session share its input offset and its output ring.
	sessionID() string
	dial(ctx context.Context, role wire.Role) (*websocket.Conn, error)
}

// daemonPath attaches through hangard's API with the tenant key. Whether
// the daemon reaches the agent over its tunnel or by dialling it depends on
// the session's pool (daemon_url or not), so the same code measures both.
type daemonPath struct {
	label, base, token, session string
	client                      *http.Client
}

func (d *daemonPath) name() string      { return d.label }
func (d *daemonPath) sessionID() string { return d.session }

func (d *daemonPath) dial(ctx context.Context, role wire.Role) (*websocket.Conn, error) {
	u, err := url.Parse(d.base)
	if err != nil {
		return nil, err
	}
	u.Scheme = strings.Replace(u.Scheme, "http", "ws", 1)
	u.Path = "/v1/sessions/" + d.session + "/attach"
	if role == wire.RoleReader {
		u.RawQuery = url.Values{"role": {"ro"}}.Encode()
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+d.token)
	c, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient: d.client, HTTPHeader: h, Subprotocols: []string{wire.SubprotocolPTY},
	})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("attach through the daemon: %s: %w", resp.Status, err)
		}
		return nil, fmt.Errorf("attach through the daemon: %w", err)
	}
	return c, nil
}

// directPath attaches to the agent itself with a token signed by the broker key.
type directPath struct {
	agent   *agentapi.Client
	base    string
	machine string
	session string
}

func newDirectPath(agentURL, machineID, session string, signer *agentauth.Signer, hc *http.Client) *directPath {
	c := agentapi.NewClient(agentURL, signer, machineID)
	c.HTTPClient = hc
	return &directPath{agent: c, base: agentURL, machine: machineID, session: session}
}

func (d *directPath) name() string      { return PathDirect }
func (d *directPath) sessionID() string { return d.session }

func (d *directPath) dial(ctx context.Context, role wire.Role) (*websocket.Conn, error) {
	return d.agent.Attach(ctx, d.session, wire.SubprotocolPTY)
}

// stream is one attachment, tracking the output offset.
type stream struct {
	c        *websocket.Conn
	attached *wire.Attached
	off      int64 // offset of the next output byte
	lost     int64 // bytes skipped by gaps
}

// attach dials p and sends the attach frame; it returns once `attached`
// arrived (state frames before it are skipped).
func attach(ctx context.Context, p path, role wire.Role, from, inputFrom int64) (*stream, error) {
	c, err := p.dial(ctx, role)
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(64 << 20)
	a := &wire.Attach{From: from, InputFrom: inputFrom, Cols: 120, Rows: 40, Role: role}
	if err := c.Write(ctx, websocket.MessageText, wire.MustEncode(a)); err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("send attach (%s): %w", p.name(), err)
	}
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			c.CloseNow()
			return nil, fmt.Errorf("wait for attached (%s): %w", p.name(), err)
		}
		if typ != websocket.MessageText {
			continue
		}
		m, err := wire.Decode(data)
		if err != nil {
			continue
		}
		switch m := m.(type) {
		case *wire.Attached:
			return &stream{c: c, attached: m, off: m.From}, nil
		case *wire.Error:
			c.CloseNow()
			return nil, fmt.Errorf("attach (%s): %w", p.name(), m)
		}
	}
}

// readOutput reads frames until a binary frame arrives and returns its
// bytes, handling gaps and ignoring other control frames.
func (s *stream) readOutput(ctx context.Context) ([]byte, error) {
	for {
		typ, data, err := s.c.Read(ctx)
		if err != nil {
			return nil, err
		}
		if typ == websocket.MessageBinary {
			s.off += int64(len(data))
			return data, nil
		}
		m, err := wire.Decode(data)
		if err != nil {
			continue
		}
		switch m := m.(type) {
		case *wire.Gap:
			s.lost += m.Oldest - s.off
			s.off = m.Oldest
		case *wire.Exit:
			return nil, errors.New("the session's process exited")
		case *wire.Error:
			return nil, m
		case *wire.Ping:
			_ = s.c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Pong{TS: m.TS}))
		}
	}
}

// readUntil reads output until the offset reaches end.
func (s *stream) readUntil(ctx context.Context, end int64) error {
	for s.off < end {
		if _, err := s.readOutput(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (s *stream) close() {
	s.c.Close(websocket.StatusNormalClosure, "")
}
