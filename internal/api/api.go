// Package api holds the JSON types of hangard's HTTP API (docs/DESIGN.md,
// "HTTP API"; the daemon serves the OpenAPI document at /v1/openapi.json).
// The daemon encodes its answers and decodes its requests with them, and the
// Go client (internal/client) does the reverse, so both sides agree on every
// field name, on omitempty, on null versus absent and on bare arrays.
//
// Validation is the daemon's (daemon/sessions and daemon/server): these
// types only describe the wire.
package api

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/hangarhq/hangar/internal/agentapi"
)

// Credentials are the user's own secrets for one session. They travel only
// in the create request; hangard keeps them in memory until the agent's init
// and never stores, logs or returns them. It is the agent API's type, so
// String, GoString, Format, LogValue and MarshalJSON all redact: encode a
// create request with EncodeCreateSessionRequest to send the real values.
type Credentials = agentapi.Credentials

// GitAuthor names the commits a session pushes when it ends.
type GitAuthor struct {
	Name  string `json:"name"`
	Email string `json:"email"`
}

// CreateSessionRequest is the body of POST /v1/sessions. Only pool is
// required; every other field may be left out.
type CreateSessionRequest struct {
	Pool        string `json:"pool"`
	TenantImage string `json:"tenant_image,omitempty"`
	Region      string `json:"region,omitempty"`
	// Repo is cloned into the workspace; Branch is checked out and
	// SessionBranch is the branch the session's work is pushed to.
	Repo          string `json:"repo,omitempty"`
	Branch        string `json:"branch,omitempty"`
	SessionBranch string `json:"session_branch,omitempty"`
	// Mode is "pty" (the default) or "jsonl".
	Mode    string            `json:"mode,omitempty"`
	Command []string          `json:"command,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	// Cols and Rows are the PTY's first size.
	Cols      int        `json:"cols,omitempty"`
	Rows      int        `json:"rows,omitempty"`
	GitAuthor *GitAuthor `json:"git_author,omitempty"`
	// Credentials redact when marshalled; see EncodeCreateSessionRequest.
	Credentials *Credentials `json:"credentials,omitempty"`
}

// EncodeCreateSessionRequest is the JSON body of POST /v1/sessions with the
// credentials' real values (json.Marshal of the request redacts them).
func EncodeCreateSessionRequest(r *CreateSessionRequest) ([]byte, error) {
	type plain CreateSessionRequest // no methods
	w := struct {
		*plain
		// Shallower than plain's field of the same name, so it wins.
		Credentials *agentapi.PlainCredentials `json:"credentials,omitempty"`
	}{plain: (*plain)(r), Credentials: r.Credentials.Plain()}
	return json.Marshal(w)
}

// Session is the API's session object (the answer to create, get and end,
// an element of the list, and the data of an "event: session"). It never
// carries a credential. Every field is always present; the times that have
// not happened yet and push are null.
type Session struct {
	ID          string `json:"id"`
	Tenant      string `json:"tenant"`
	Pool        string `json:"pool"`
	TenantImage string `json:"tenant_image"`
	Region      string `json:"region"`
	// State is pending, claiming, starting, ready, ending, ended or failed;
	// Reason says why it ended or failed.
	State  string `json:"state"`
	Reason string `json:"reason"`
	// QueuePosition is the place in the pool's queue while pending (0 otherwise).
	QueuePosition int        `json:"queue_position"`
	MachineID     string     `json:"machine_id"`
	Repo          string     `json:"repo"`
	Branch        string     `json:"branch"`
	SessionBranch string     `json:"session_branch"`
	Mode          string     `json:"mode"`
	CreatedAt     *time.Time `json:"created_at"`
	ReadyAt       *time.Time `json:"ready_at"`
	EndedAt       *time.Time `json:"ended_at"`
	// Push is the result of pushing the session's work when it ended.
	Push    *Push   `json:"push"`
	CostUSD float64 `json:"cost_usd"`

	// Raw is the object as it was decoded (nil for a Session built in Go);
	// the client keeps it to show fields it does not know yet.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes the fields and keeps the raw object in Raw.
func (s *Session) UnmarshalJSON(b []byte) error {
	type plain Session
	if err := json.Unmarshal(b, (*plain)(s)); err != nil {
		return err
	}
	s.Raw = keepRaw(b)
	return nil
}

// keepRaw copies b (the decoder's buffer may be reused) unless it is null.
func keepRaw(b []byte) json.RawMessage {
	if t := bytes.TrimSpace(b); len(t) == 0 || string(t) == "null" {
		return nil
	}
	return append(json.RawMessage(nil), b...)
}

// Push is the result of pushing a session's work when it ended.
type Push struct {
	Ref     string `json:"ref"`
	Commit  string `json:"commit"`
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

// TicketRequest is the body of POST /v1/sessions/{id}/tickets; an empty
// body asks for the defaults.
type TicketRequest struct {
	// Role is "rw" (the default) or "ro".
	Role string `json:"role,omitempty"`
	// TTL is a Go duration string such as "60s" (a JSON string) or a number
	// of seconds; absent or null means the default.
	TTL  json.RawMessage `json:"ttl,omitempty"`
	Uses int             `json:"uses,omitempty"`
}

// Ticket authorises one or more WebSocket attaches (browsers cannot set
// headers on a WebSocket). The daemon always sends every field.
type Ticket struct {
	Ticket    string     `json:"ticket"`
	Role      string     `json:"role"`
	ExpiresAt *time.Time `json:"expires_at"`
	// URL is the attach URL (ws or wss) with the ticket in its query.
	URL string `json:"url"`
}

// Pool is one element of GET /v1/pools (a bare array).
type Pool struct {
	Name        string   `json:"name"`
	AppName     string   `json:"app_name"`
	Regions     []string `json:"regions"`
	Image       string   `json:"image"`
	MinStandby  int      `json:"min_standby"`
	MaxMachines int      `json:"max_machines"`
	Machines    int      `json:"machines"`
	// StandbyMode is "stop" or "suspend".
	StandbyMode string `json:"standby_mode"`
	// IdleTimeout and SessionTTL are durations as the pool spec writes them.
	IdleTimeout string `json:"idle_timeout"`
	SessionTTL  string `json:"session_ttl"`
	Draining    bool   `json:"draining"`
	// Standby counts the machines of the pool's default image.
	Standby StandbyCounts `json:"standby"`
	// TenantImages are the tenants' own images (a tenant sees only its own).
	TenantImages []TenantImage `json:"tenant_images"`

	// Raw is the object as it was decoded (nil for a Pool built in Go).
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes the fields and keeps the raw object in Raw.
func (p *Pool) UnmarshalJSON(b []byte) error {
	type plain Pool
	if err := json.Unmarshal(b, (*plain)(p)); err != nil {
		return err
	}
	p.Raw = keepRaw(b)
	return nil
}

// StandbyCounts counts a pool's (or tenant image's) machines.
type StandbyCounts struct {
	// Total is the number of standby machines, ByState the same by Fly state.
	Total   int            `json:"total"`
	ByState map[string]int `json:"by_state"`
	// Stale standbys were made from an older spec and are being replaced.
	Stale int `json:"stale"`
	// Sessions is the number of machines running a session.
	Sessions int `json:"sessions"`
	// Unreachable counts standby and session machines whose host Fly
	// cannot reach right now.
	Unreachable int `json:"unreachable,omitempty"`
}

// TenantImage is a tenant's own image inside a pool.
type TenantImage struct {
	Name       string        `json:"name"`
	Tenant     string        `json:"tenant"`
	Image      string        `json:"image"`
	MinStandby int           `json:"min_standby"`
	Draining   bool          `json:"draining"`
	Standby    StandbyCounts `json:"standby"`
}

// Tenant is a tenant as the admin API returns it (an element of the bare
// array of GET /v1/tenants, or the answer to create and rotate).
type Tenant struct {
	ID    string   `json:"id"`
	Name  string   `json:"name"`
	Pools []string `json:"pools"`
	// MaxSessions 0 means no limit; MaxSessionDuration "" means none.
	MaxSessions        int        `json:"max_sessions"`
	MaxSessionDuration string     `json:"max_session_duration"`
	CreatedAt          *time.Time `json:"created_at"`
	// APIKey is set only in the answers to create and rotate: it is shown once.
	APIKey string `json:"api_key,omitempty"`

	// Raw is the object as it was decoded (nil for a Tenant built in Go).
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes the fields and keeps the raw object in Raw.
func (t *Tenant) UnmarshalJSON(b []byte) error {
	type plain Tenant
	if err := json.Unmarshal(b, (*plain)(t)); err != nil {
		return err
	}
	t.Raw = keepRaw(b)
	return nil
}

// CreateTenantRequest is the body of POST /v1/tenants.
type CreateTenantRequest struct {
	Name string `json:"name"`
	// Pools are the pool names granted, or "*" for every pool.
	Pools       []string `json:"pools,omitempty"`
	MaxSessions int      `json:"max_sessions,omitempty"`
	// MaxSessionDuration is a Go duration such as "2h".
	MaxSessionDuration string `json:"max_session_duration,omitempty"`
}

// ErrorBody is every error answer: {"error":{"code":...,"message":...}}.
type ErrorBody struct {
	Error *ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of an ErrorBody. Code is machine-readable
// (invalid, not_found, unauthorized, over_quota, wrong_state, ...).
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// RawJSON returns the session as the daemon sent it (nil if built in Go).
func (s Session) RawJSON() json.RawMessage { return s.Raw }

// RawJSON returns the pool as the daemon sent it (nil if built in Go).
func (p Pool) RawJSON() json.RawMessage { return p.Raw }

// RawJSON returns the tenant as the daemon sent it (nil if built in Go).
func (t Tenant) RawJSON() json.RawMessage { return t.Raw }
