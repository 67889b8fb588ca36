// Package agentapi holds the JSON shapes of hangar-agent's HTTP API and a
// typed client for it (used by the daemon). Every call but Health carries a
// fresh agent token (internal/agentauth) whose sub is the session id.
package agentapi

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"time"
)

// HTTP paths of the agent.
const (
	PathHealth = "/v1/health"
	PathInit   = "/v1/init"
	PathAttach = "/v1/attach"
	PathStatus = "/v1/status"
	PathFinish = "/v1/finish"
)

// DefaultPort is the agent's port when HANGAR_AGENT_PORT is unset.
const DefaultPort = 8080

// Mode is how the agent runs the command.
type Mode string

// Modes.
const (
	// ModePTY runs the command under a pseudo-terminal (subprotocol hangar.pty.v1).
	ModePTY Mode = "pty"
	// ModeJSONL runs the command with stdin/stdout pipes carrying NDJSON
	// (Claude Code stream-json; subprotocol hangar.jsonl.v1).
	ModeJSONL Mode = "jsonl"
)

// Agent states reported by Status and Health.
const (
	StateIdle         = "idle"         // waiting for init
	StateInitializing = "initializing" // cloning, preparing
	StateRunning      = "running"      // the command runs
	StateExited       = "exited"       // the command ended; finish still possible
	StateFinishing    = "finishing"    // finish in progress
	StateFinished     = "finished"     // finish done; the agent is about to exit
	StateFailed       = "failed"       // init failed; see Error
)

// Credentials are the user's own secrets for one session. They live only in
// the agent's memory and the command's environment (the git token only in
// the git processes' environment). String, GoString and LogValue redact them,
// so printing or logging a Credentials never shows a secret.
type Credentials struct {
	// AnthropicAPIKey becomes ANTHROPIC_API_KEY in the command's env.
	AnthropicAPIKey string `json:"anthropic_api_key,omitempty"`
	// ClaudeOAuthToken becomes CLAUDE_CODE_OAUTH_TOKEN in the command's env.
	ClaudeOAuthToken string `json:"claude_oauth_token,omitempty"`
	// GitToken authenticates clone and push over https (as the password of
	// basic auth; user "x-access-token" unless the URL names one).
	GitToken string `json:"git_token,omitempty"`
}

func set(s string) string {
	if s == "" {
		return "unset"
	}
	return "set"
}

// String redacts every secret.
func (c Credentials) String() string {
	return fmt.Sprintf("{anthropic_api_key:%s claude_oauth_token:%s git_token:%s}",
		set(c.AnthropicAPIKey), set(c.ClaudeOAuthToken), set(c.GitToken))
}

// GoString redacts every secret (for %#v).
func (c Credentials) GoString() string { return "agentapi.Credentials" + c.String() }

// Format redacts for every verb.
func (c Credentials) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(c.String())) }

// LogValue redacts for log/slog.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

// MarshalJSON redacts too, so that a Credentials marshalled anywhere (a JSON
// log line, a stored record, a response) shows only which secrets are set.
// The real values travel only in the init call, encoded by EncodeInitRequest
// (which Client.Init uses). Decoding is the ordinary one.
func (c Credentials) MarshalJSON() ([]byte, error) {
	m := map[string]string{}
	for k, v := range map[string]string{"anthropic_api_key": c.AnthropicAPIKey, "claude_oauth_token": c.ClaudeOAuthToken, "git_token": c.GitToken} {
		if v != "" {
			m[k] = "[REDACTED]"
		}
	}
	return json.Marshal(m)
}

// PlainCredentials is Credentials without the redaction: the form in which
// the real values travel, in the daemon's create request and the agent's init
// call only. Never log or store one.
type PlainCredentials struct {
	AnthropicAPIKey  string `json:"anthropic_api_key,omitempty"`
	ClaudeOAuthToken string `json:"claude_oauth_token,omitempty"`
	GitToken         string `json:"git_token,omitempty"`
}

// Plain returns the unredacted form of c, or nil for a nil c.
func (c *Credentials) Plain() *PlainCredentials {
	if c == nil {
		return nil
	}
	return &PlainCredentials{AnthropicAPIKey: c.AnthropicAPIKey, ClaudeOAuthToken: c.ClaudeOAuthToken, GitToken: c.GitToken}
}

// EncodeInitRequest is the JSON body of POST /v1/init with the credentials'
// real values (json.Marshal of the request redacts them).
func EncodeInitRequest(r *InitRequest) ([]byte, error) {
	type plain InitRequest // no methods
	w := struct {
		*plain
		// Shallower than plain's field of the same name, so it wins.
		Credentials *PlainCredentials `json:"credentials,omitempty"`
	}{plain: (*plain)(r), Credentials: r.Credentials.Plain()}
	return json.Marshal(w)
}

// Empty reports whether no credential is set.
func (c *Credentials) Empty() bool {
	return c == nil || (c.AnthropicAPIKey == "" && c.ClaudeOAuthToken == "" && c.GitToken == "")
}

// Secrets returns the non-empty secrets (for scrubbing output).
func (c *Credentials) Secrets() []string {
	if c == nil {
		return nil
	}
	var out []string
	for _, s := range []string{c.AnthropicAPIKey, c.ClaudeOAuthToken, c.GitToken} {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// GitAuthor names the author and committer of the agent's commits.
type GitAuthor struct {
	Name  string `json:"name"`
	Email string `json:"email"`
}

// Duration is a time.Duration that travels in JSON as a Go duration string
// ("5m"); a bare number is read as seconds.
type Duration time.Duration

// MarshalJSON renders a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("duration: want a string like \"5m\" or seconds, got %s", b)
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// InitRequest is the body of POST /v1/init.
type InitRequest struct {
	// SessionID must equal the token's sub.
	SessionID string `json:"session_id"`
	// Repo is the git URL to clone (https, ssh, or file for tests); empty = an
	// empty workspace (git-initialised, so finish can still commit locally).
	Repo string `json:"repo,omitempty"`
	// Branch is the base branch to start from; empty = the remote's default.
	Branch string `json:"branch,omitempty"`
	// SessionBranch is created from Branch and pushed on finish; default hangar/<session id>.
	SessionBranch string `json:"session_branch,omitempty"`
	// Mode is pty (default) or jsonl.
	Mode Mode `json:"mode,omitempty"`
	// Command is the argv to run; default ["claude"] in pty mode and the
	// stream-json invocation in jsonl mode.
	Command []string `json:"command,omitempty"`
	// Env is extra environment for the command.
	Env map[string]string `json:"env,omitempty"`
	// Cols and Rows are the initial terminal size (default 80x24).
	Cols int `json:"cols,omitempty"`
	Rows int `json:"rows,omitempty"`
	// Credentials are the user's own; all optional.
	Credentials *Credentials `json:"credentials,omitempty"`
	// GitAuthor names commits; default "hangar" <hangar@localhost>.
	GitAuthor *GitAuthor `json:"git_author,omitempty"`
	// CheckpointInterval, when > 0, pushes work in progress every interval to
	// refs/hangar/checkpoints/<session id>.
	CheckpointInterval Duration `json:"checkpoint_interval,omitempty"`
}

// String describes the request without its credentials.
func (r InitRequest) String() string {
	return fmt.Sprintf("init{session:%s repo:%s branch:%s session_branch:%s mode:%s command:%q credentials:%v}",
		r.SessionID, r.Repo, r.Branch, r.SessionBranch, r.Mode, r.Command, r.Credentials)
}

// LogValue describes the request for log/slog without its credentials.
func (r InitRequest) LogValue() slog.Value { return slog.StringValue(r.String()) }

// CheckpointStatus reports the last checkpoint push.
type CheckpointStatus struct {
	Ref     string    `json:"ref"`
	Commit  string    `json:"commit,omitempty"`
	OK      bool      `json:"ok"`
	Message string    `json:"message,omitempty"`
	At      time.Time `json:"at"`
}

// StatusResponse answers GET /v1/status, POST /v1/init and (partly) GET /v1/health.
type StatusResponse struct {
	State         string `json:"state"`
	Session       string `json:"session,omitempty"`
	Mode          Mode   `json:"mode,omitempty"`
	Repo          string `json:"repo,omitempty"`
	Branch        string `json:"branch,omitempty"`
	SessionBranch string `json:"session_branch,omitempty"`
	Workspace     string `json:"workspace,omitempty"`
	// Error explains a failed state.
	Error string `json:"error,omitempty"`
	PID   int    `json:"pid,omitempty"`
	// ExitCode is set once the command ended (128+n when killed by signal n).
	ExitCode   *int   `json:"exit_code,omitempty"`
	ExitSignal string `json:"exit_signal,omitempty"`
	// OOMKilled tells that the machine's out-of-memory killer ended the command.
	OOMKilled bool `json:"oom_killed,omitempty"`
	// BytesIn counts input bytes applied; BytesOut output bytes produced (in
	// jsonl mode both count bytes of lines, without newlines).
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
	// LinesIn and LinesOut count lines (jsonl mode).
	LinesIn  int64 `json:"lines_in,omitempty"`
	LinesOut int64 `json:"lines_out,omitempty"`
	// LastInputAt and LastOutputAt support idle detection.
	LastInputAt  *time.Time `json:"last_input_at,omitempty"`
	LastOutputAt *time.Time `json:"last_output_at,omitempty"`
	StartedAt    *time.Time `json:"started_at,omitempty"`
	// Head and Oldest are the output ring's offsets (bytes, or lines in jsonl).
	Head         int64 `json:"head"`
	Oldest       int64 `json:"oldest"`
	InputApplied int64 `json:"input_applied"`
	Cols         int   `json:"cols,omitempty"`
	Rows         int   `json:"rows,omitempty"`
	// Attachments counts open attachments; Writer tells whether one is a writer.
	Attachments int               `json:"attachments"`
	Writer      bool              `json:"writer"`
	Checkpoint  *CheckpointStatus `json:"checkpoint,omitempty"`
}

// HealthResponse answers GET /v1/health. Without a valid token only OK is
// set: state and version are for the broker's eyes.
type HealthResponse struct {
	OK      bool   `json:"ok"`
	State   string `json:"state,omitempty"`
	Version string `json:"version,omitempty"`
}

// FinishRequest is the body of POST /v1/finish.
type FinishRequest struct {
	// Message is the commit message; default "hangar session <id>".
	Message string `json:"message,omitempty"`
	// Author overrides the init's git author for this commit.
	Author *GitAuthor `json:"author,omitempty"`
}

// FinishResponse answers POST /v1/finish: the push result.
type FinishResponse struct {
	// Ref is the pushed ref (refs/heads/<session branch>); "" without a repo.
	Ref string `json:"ref"`
	// Commit is the session branch's head commit (new or not); "" without a repo.
	Commit string `json:"commit"`
	// OK is true when the push succeeded (or there was nothing to push to).
	OK bool `json:"ok"`
	// Message says what happened ("committed; pushed hangar/…", the push
	// error, NoRepositoryMessage).
	Message string `json:"message"`
}

// NoRepositoryMessage is the finish message of a session without a repo:
// {"ok": true, "ref": "", "commit": "", "message": NoRepositoryMessage}.
// Nothing failed; there was nowhere to push.
const NoRepositoryMessage = "no repository: nothing pushed"

// ErrorBody is the JSON of every error response: {"error":{"code","message"}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of ErrorBody.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes of the agent's HTTP errors.
const (
	CodeBadRequest   = "bad_request"  // 400 malformed JSON
	CodeUnauthorized = "unauthorized" // 401
	// CodeWrongSession: 401 for a valid token whose session (sub) is not
	// the one this agent serves; the caller's session is not on this VM.
	CodeWrongSession   = "wrong_session"
	CodeNotFound       = "not_found"       // 404
	CodeConflict       = "conflict"        // 409 another session, or a wrong state
	CodeNotInitialized = "not_initialized" // 409 attach/finish before init
	CodeInvalid        = "invalid"         // 422 an invalid field
	CodeInitFailed     = "init_failed"     // 500/502 clone or start failed
	CodeInternal       = "internal"        // 500
)
