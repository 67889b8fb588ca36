package agentapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/agentauth"
)

// Error is an error response from the agent.
type Error struct {
	StatusCode int
	Code       string
	Message    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("agent: %d %s: %s", e.StatusCode, e.Code, e.Message)
}

// Describe returns err, or, when it is the agent's own answer (an *Error),
// its message with status and code, for a session's reason: the reader wants
// what the agent said, not the transport's prefix.
func Describe(err error) error {
	var ae *Error
	if errors.As(err, &ae) {
		return fmt.Errorf("%s (%d %s)", ae.Message, ae.StatusCode, ae.Code)
	}
	return err
}

// Sentinels usable with errors.Is on errors from Client calls.
var (
	ErrUnauthorized   = errors.New("agent: unauthorized")
	ErrConflict       = errors.New("agent: conflict")
	ErrNotInitialized = errors.New("agent: not initialized")
)

// Is maps status codes and codes to the sentinels.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrConflict:
		return e.StatusCode == http.StatusConflict
	case ErrNotInitialized:
		return e.Code == CodeNotInitialized
	}
	return false
}

// BaseURL returns the agent's base URL for a machine's private IP and port
// (0 = DefaultPort), bracketing IPv6 addresses.
func BaseURL(privateIP string, port int) string {
	if port == 0 {
		port = DefaultPort
	}
	return "http://" + net.JoinHostPort(privateIP, strconv.Itoa(port))
}

// Client calls one agent. Safe for concurrent use.
type Client struct {
	baseURL   string
	signer    *agentauth.Signer
	machineID string
	// HTTPClient is used for every call; http.DefaultClient when nil. Calls
	// are bounded by their contexts (finish may take as long as a push).
	HTTPClient *http.Client
}

// NewClient returns a client for the agent at baseURL (e.g. BaseURL(ip, port))
// on machine machineID, signing tokens with signer.
func NewClient(baseURL string, signer *agentauth.Signer, machineID string) *Client {
	return &Client{baseURL: strings.TrimRight(baseURL, "/"), signer: signer, machineID: machineID}
}

func (c *Client) httpClient() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return http.DefaultClient
}

// AuthHeader returns a header with a fresh bearer token for sessionID.
func (c *Client) AuthHeader(sessionID string) (http.Header, error) {
	tok, err := c.signer.Token(c.machineID, sessionID)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	return h, nil
}

// AttachURL returns the WebSocket URL of the agent's attach endpoint.
func (c *Client) AttachURL() string {
	u := c.baseURL + PathAttach
	if strings.HasPrefix(u, "https://") {
		return "wss://" + strings.TrimPrefix(u, "https://")
	}
	return "ws://" + strings.TrimPrefix(u, "http://")
}

// Attach dials the agent's attach WebSocket for sessionID with the given
// subprotocol (wire.SubprotocolPTY or wire.SubprotocolJSONL) and a fresh
// token. The caller sends the attach frame. Errors before the upgrade come
// back as *Error when the agent answered with one.
func (c *Client) Attach(ctx context.Context, sessionID, subprotocol string) (*websocket.Conn, error) {
	h, err := c.AuthHeader(sessionID)
	if err != nil {
		return nil, err
	}
	conn, resp, err := websocket.Dial(ctx, c.AttachURL(), &websocket.DialOptions{
		HTTPClient:   c.HTTPClient,
		HTTPHeader:   h,
		Subprotocols: []string{subprotocol},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, responseError(resp, nil)
		}
		return nil, fmt.Errorf("attach to agent on %s: %w", c.machineID, err)
	}
	if conn.Subprotocol() != subprotocol {
		conn.Close(websocket.StatusProtocolError, "subprotocol")
		return nil, fmt.Errorf("attach to agent on %s: subprotocol %q not accepted", c.machineID, subprotocol)
	}
	return conn, nil
}

// Health calls GET /v1/health (no token).
func (c *Client) Health(ctx context.Context) (*HealthResponse, error) {
	var out HealthResponse
	if err := c.do(ctx, http.MethodGet, PathHealth, "", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Init calls POST /v1/init with a token for req.SessionID.
func (c *Client) Init(ctx context.Context, req *InitRequest) (*StatusResponse, error) {
	var out StatusResponse
	if err := c.do(ctx, http.MethodPost, PathInit, req.SessionID, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Status calls GET /v1/status.
func (c *Client) Status(ctx context.Context, sessionID string) (*StatusResponse, error) {
	var out StatusResponse
	if err := c.do(ctx, http.MethodGet, PathStatus, sessionID, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Finish calls POST /v1/finish: stop the command, commit, push. The agent
// exits after answering. A failed push is a FinishResponse with OK false,
// not an error.
func (c *Client) Finish(ctx context.Context, sessionID string, req *FinishRequest) (*FinishResponse, error) {
	if req == nil {
		req = &FinishRequest{}
	}
	var out FinishResponse
	if err := c.do(ctx, http.MethodPost, PathFinish, sessionID, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// do performs one call; sessionID "" means no token (health).
func (c *Client) do(ctx context.Context, method, path, sessionID string, in, out any) error {
	var body io.Reader
	if in != nil {
		var b []byte
		var err error
		if ir, ok := in.(*InitRequest); ok {
			b, err = EncodeInitRequest(ir)
		} else {
			b, err = json.Marshal(in)
		}
		if err != nil {
			return fmt.Errorf("agent %s %s: encode: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, body)
	if err != nil {
		return fmt.Errorf("agent %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if path != PathHealth {
		h, err := c.AuthHeader(sessionID)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", h.Get("Authorization"))
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("agent %s %s on %s: %w", method, path, c.machineID, redactURLError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("agent %s %s: read: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return responseError(resp, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("agent %s %s: decode: %w", method, path, err)
	}
	return nil
}

func responseError(resp *http.Response, body []byte) error {
	if body == nil && resp.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	}
	var eb ErrorBody
	e := &Error{StatusCode: resp.StatusCode}
	if json.Unmarshal(body, &eb) == nil && eb.Error.Code != "" {
		e.Code, e.Message = eb.Error.Code, eb.Error.Message
	} else {
		e.Code = http.StatusText(resp.StatusCode)
		e.Message = strings.TrimSpace(string(body))
	}
	return e
}

// redactURLError keeps url.Error's op and URL (which hold no secret) and the cause.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
