// Package client is a typed Go client for the hangard HTTP API (see
// docs/DESIGN.md, "HTTP API") plus a reconnecting attach client that speaks
// the wire protocol (attach.go). The hangar CLI and the project's end-to-end
// tests use it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hangarhq/hangar/internal/api"
)

// The API's JSON types are internal/api's; these names keep the client's
// callers independent of where they are defined. Session, Pool and Tenant
// keep the object exactly as the API sent it in Raw.
type (
	// Session is the API's session object. It never carries a credential.
	Session = api.Session
	// Push is the result of pushing a session's work when it ended.
	Push = api.Push
	// GitAuthor is the author of the commit a session pushes when it ends.
	GitAuthor = api.GitAuthor
	// Credentials travel only in the create request; hangard hands them to
	// the session's agent and never stores them. Formatting and
	// json.Marshal redact them; CreateSession sends the real values.
	Credentials = api.Credentials
	// CreateSessionRequest is the body of POST /v1/sessions.
	CreateSessionRequest = api.CreateSessionRequest
	// TicketRequest is the body of POST /v1/sessions/{id}/tickets.
	TicketRequest = api.TicketRequest
	// Ticket authorises one or more WebSocket attaches.
	Ticket = api.Ticket
	// Pool is one entry of GET /v1/pools.
	Pool = api.Pool
	// StandbyCounts counts a pool's (or tenant image's) machines.
	StandbyCounts = api.StandbyCounts
	// TenantImage is a tenant's own image inside a pool.
	TenantImage = api.TenantImage
	// Tenant is a tenant as the admin API lists it.
	Tenant = api.Tenant
	// CreateTenantRequest is the body of POST /v1/tenants.
	CreateTenantRequest = api.CreateTenantRequest
)

// Session states.
const (
	StatePending  = "pending"
	StateClaiming = "claiming"
	StateStarting = "starting"
	StateReady    = "ready"
	StateEnding   = "ending"
	StateEnded    = "ended"
	StateFailed   = "failed"
)

// Terminal reports whether a session in state s will never run again.
func Terminal(s string) bool { return s == StateEnded || s == StateFailed }

// APIError is an error answer of the API: {"error":{"code","message"}}.
type APIError struct {
	StatusCode int
	Code       string
	Message    string
	// RetryAfter is the Retry-After of a 429 or 503, if given.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	if e.Code != "" {
		return fmt.Sprintf("%s (%d %s)", msg, e.StatusCode, e.Code)
	}
	return fmt.Sprintf("%s (%d)", msg, e.StatusCode)
}

// IsNotFound reports whether err is a 404 from the API.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound
}

// Client talks to one hangard. The zero value is not usable; use New.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
	// UserAgent is sent with every request.
	UserAgent string
}

// New returns a client for the daemon at baseURL (e.g. http://127.0.0.1:7070)
// that authenticates with token (a tenant API key or the admin key).
// httpClient may be nil.
func New(baseURL, token string, httpClient *http.Client) (*Client, error) {
	if baseURL == "" {
		return nil, errors.New("no hangard URL: set HANGAR_URL, pass --url, or --env-file DIR/dev.env")
	}
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("parse hangard URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("hangard URL %q: scheme must be http or https", baseURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("hangard URL %q has no host", baseURL)
	}
	if httpClient == nil {
		httpClient = &http.Client{Timeout: 60 * time.Second}
	}
	return &Client{base: u, token: token, http: httpClient, UserAgent: "hangar-cli"}, nil
}

// BaseURL returns the daemon's base URL.
func (c *Client) BaseURL() string { return c.base.String() }

// Token returns the key the client authenticates with.
func (c *Client) Token() string { return c.token }

// WithToken returns a copy of c that authenticates with token.
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.token = token
	return &cp
}

func (c *Client) endpoint(p string, q url.Values) string {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + p
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// do sends a JSON request and decodes a JSON answer into out (if non-nil).
func (c *Client) do(ctx context.Context, method, p string, q url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.endpoint(p, q), body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, p, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, p, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, p, err)
	}
	if resp.StatusCode >= 300 {
		return decodeError(resp, b)
	}
	if out == nil || len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, p, err)
	}
	return nil
}

// decodeError turns an error answer into an *APIError, keeping a short
// excerpt of a body that is not the API's JSON error shape.
func decodeError(resp *http.Response, body []byte) *APIError {
	e := &APIError{StatusCode: resp.StatusCode}
	var env api.ErrorBody
	if json.Unmarshal(body, &env) == nil && env.Error != nil {
		e.Code, e.Message = env.Error.Code, env.Error.Message
	} else {
		s := strings.TrimSpace(string(body))
		if len(s) > 200 {
			s = s[:200] + "…"
		}
		e.Message = s
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if n, err := strconv.Atoi(ra); err == nil {
			e.RetryAfter = time.Duration(n) * time.Second
		} else if t, err := http.ParseTime(ra); err == nil {
			e.RetryAfter = time.Until(t)
		}
	}
	return e
}

func sessionPath(id string) (string, error) {
	if id == "" {
		return "", errors.New("no session id")
	}
	return "/v1/sessions/" + url.PathEscape(id), nil
}

// CreateSession records a session claim (POST /v1/sessions); the answer comes
// at once, usually in state pending.
func (c *Client) CreateSession(ctx context.Context, req CreateSessionRequest) (*Session, error) {
	body, err := api.EncodeCreateSessionRequest(&req)
	if err != nil {
		return nil, fmt.Errorf("create session: encode request: %w", err)
	}
	var s Session
	if err := c.do(ctx, http.MethodPost, "/v1/sessions", nil, json.RawMessage(body), &s); err != nil {
		return nil, fmt.Errorf("create session: %w", err)
	}
	return &s, nil
}

// ListSessions lists the caller's sessions, optionally only those in state.
func (c *Client) ListSessions(ctx context.Context, state string) ([]Session, error) {
	q := url.Values{}
	if state != "" {
		q.Set("state", state)
	}
	raw := json.RawMessage{}
	if err := c.do(ctx, http.MethodGet, "/v1/sessions", q, nil, &raw); err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return decodeList[Session](raw, "sessions")
}

// decodeList accepts either a bare JSON array or an object holding the array
// under key, so the client does not depend on the envelope.
func decodeList[T any](raw json.RawMessage, key string) ([]T, error) {
	var list []T
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return list, nil
	}
	if bytes.TrimSpace(raw)[0] == '[' {
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, fmt.Errorf("decode %s: %w", key, err)
		}
		return list, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("decode %s: %w", key, err)
	}
	if v, ok := obj[key]; ok {
		if err := json.Unmarshal(v, &list); err != nil {
			return nil, fmt.Errorf("decode %s: %w", key, err)
		}
	}
	return list, nil
}

// GetSession returns one session.
func (c *Client) GetSession(ctx context.Context, id string) (*Session, error) {
	p, err := sessionPath(id)
	if err != nil {
		return nil, err
	}
	var s Session
	if err := c.do(ctx, http.MethodGet, p, nil, nil, &s); err != nil {
		return nil, fmt.Errorf("get session %s: %w", id, err)
	}
	return &s, nil
}

// EndSession asks the daemon to end a session (push its work, destroy its
// machine). It returns once the request is accepted; use WaitSession to wait
// for state ended.
func (c *Client) EndSession(ctx context.Context, id string) (*Session, error) {
	p, err := sessionPath(id)
	if err != nil {
		return nil, err
	}
	var s Session
	if err := c.do(ctx, http.MethodDelete, p, nil, nil, &s); err != nil {
		return nil, fmt.Errorf("end session %s: %w", id, err)
	}
	if s.ID == "" {
		s.ID = id
	}
	return &s, nil
}

// WaitSession polls a session until done(session) is true or ctx ends.
func (c *Client) WaitSession(ctx context.Context, id string, every time.Duration, done func(*Session) bool) (*Session, error) {
	if every <= 0 {
		every = 500 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s, err := c.GetSession(ctx, id)
		if err != nil {
			return nil, err
		}
		if done(s) {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("wait for session %s (state %s): %w", id, s.State, ctx.Err())
		case <-t.C:
		}
	}
}

// CreateTicket mints a WebSocket ticket for a session.
func (c *Client) CreateTicket(ctx context.Context, id string, req TicketRequest) (*Ticket, error) {
	p, err := sessionPath(id)
	if err != nil {
		return nil, err
	}
	var t Ticket
	if err := c.do(ctx, http.MethodPost, p+"/tickets", nil, req, &t); err != nil {
		return nil, fmt.Errorf("create ticket for session %s: %w", id, err)
	}
	return &t, nil
}

// ListPools lists the pools the caller may use.
func (c *Client) ListPools(ctx context.Context) ([]Pool, error) {
	raw := json.RawMessage{}
	if err := c.do(ctx, http.MethodGet, "/v1/pools", nil, nil, &raw); err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	return decodeList[Pool](raw, "pools")
}

// CreateTenant creates a tenant (admin key). The answer holds its API key,
// shown this once.
func (c *Client) CreateTenant(ctx context.Context, req CreateTenantRequest) (*Tenant, error) {
	var t Tenant
	if err := c.do(ctx, http.MethodPost, "/v1/tenants", nil, req, &t); err != nil {
		return nil, fmt.Errorf("create tenant %q: %w", req.Name, err)
	}
	return &t, nil
}

// ListTenants lists every tenant (admin key).
func (c *Client) ListTenants(ctx context.Context) ([]Tenant, error) {
	raw := json.RawMessage{}
	if err := c.do(ctx, http.MethodGet, "/v1/tenants", nil, nil, &raw); err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return decodeList[Tenant](raw, "tenants")
}

// DeleteTenant removes a tenant (admin key).
func (c *Client) DeleteTenant(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("no tenant id")
	}
	if err := c.do(ctx, http.MethodDelete, "/v1/tenants/"+url.PathEscape(id), nil, nil, nil); err != nil {
		return fmt.Errorf("delete tenant %s: %w", id, err)
	}
	return nil
}

// RotateTenantKey issues a new API key for a tenant (admin key); the old key
// stops working. The answer holds the new key, shown this once.
func (c *Client) RotateTenantKey(ctx context.Context, id string) (*Tenant, error) {
	if id == "" {
		return nil, errors.New("no tenant id")
	}
	var t Tenant
	if err := c.do(ctx, http.MethodPost, "/v1/tenants/"+url.PathEscape(id)+"/keys", nil, struct{}{}, &t); err != nil {
		return nil, fmt.Errorf("rotate key of tenant %s: %w", id, err)
	}
	if t.ID == "" {
		t.ID = id
	}
	return &t, nil
}
