package sessions

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/hangarhq/hangar/daemon/poolcache"
	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/api"
	"github.com/hangarhq/hangar/internal/validate"
)

// Credentials are the user's own secrets for one session. They live only in
// the accepting replica's memory until the agent's init, and are never
// stored, logged or returned. Formatting redacts them (agentapi.Credentials).
type Credentials = agentapi.Credentials

// InvalidError is a request field that fails validation (HTTP 422).
type InvalidError struct {
	Field   string
	Message string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Message }

func invalid(field, format string, args ...any) *InvalidError {
	return &InvalidError{Field: field, Message: fmt.Sprintf(format, args...)}
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	regionRE = regexp.MustCompile(`^[a-z]{3}$`)
)

// Limits on request fields not covered by package validate.
const (
	maxCols      = 1000
	maxRows      = 500
	maxSecretLen = 8192
)

// ValidateRequest checks every field of a POST /v1/sessions body that does
// not need the pool, and sets the default mode; allowFile lets file:// repos
// through (development and tests only).
func ValidateRequest(r *api.CreateSessionRequest, allowFile bool) error {
	if r.Pool == "" {
		return invalid("pool", "is required")
	}
	if !nameRE.MatchString(r.Pool) {
		return invalid("pool", "%q is not a pool name", r.Pool)
	}
	if r.TenantImage != "" && !nameRE.MatchString(r.TenantImage) {
		return invalid("tenant_image", "%q is not a tenant image name", r.TenantImage)
	}
	if r.Region != "" && !regionRE.MatchString(r.Region) {
		return invalid("region", "%q is not a Fly region code", r.Region)
	}
	if r.Repo != "" {
		if err := validate.RepoURL(r.Repo, validate.RepoPolicy{AllowFile: allowFile}); err != nil {
			return invalid("repo", "%v", err)
		}
	}
	if r.Branch != "" {
		if err := validate.Branch(r.Branch); err != nil {
			return invalid("branch", "%v", err)
		}
	}
	if r.SessionBranch != "" {
		if err := validate.Branch(r.SessionBranch); err != nil {
			return invalid("session_branch", "%v", err)
		}
	}
	switch r.Mode {
	case "":
		r.Mode = string(agentapi.ModePTY)
	case string(agentapi.ModePTY), string(agentapi.ModeJSONL):
	default:
		return invalid("mode", "%q: want pty or jsonl", r.Mode)
	}
	if err := validate.Command(r.Command); err != nil {
		return invalid("command", "%v", err)
	}
	if err := validate.Env(r.Env); err != nil {
		return invalid("env", "%v", err)
	}
	if r.Cols < 0 || r.Cols > maxCols {
		return invalid("cols", "want 1..%d", maxCols)
	}
	if r.Rows < 0 || r.Rows > maxRows {
		return invalid("rows", "want 1..%d", maxRows)
	}
	if a := r.GitAuthor; a != nil {
		// git needs both to commit; a half author would fail only at the end.
		switch {
		case strings.TrimSpace(a.Name) == "":
			return invalid("git_author.name", "is required when git_author is given")
		case len(a.Name) > 200 || strings.ContainsAny(a.Name, "<>\n\r\x00"):
			return invalid("git_author.name", "want a plain name of at most 200 characters")
		case a.Email == "":
			return invalid("git_author.email", "is required when git_author is given")
		case len(a.Email) > 200 || strings.ContainsAny(a.Email, "<>\n\r\x00 ") || !strings.Contains(a.Email, "@"):
			return invalid("git_author.email", "want an email address")
		}
	}
	if c := r.Credentials; c != nil {
		if c.AnthropicAPIKey != "" && c.ClaudeOAuthToken != "" {
			return invalid("credentials", "give anthropic_api_key or claude_oauth_token, not both")
		}
		for name, v := range map[string]string{"anthropic_api_key": c.AnthropicAPIKey, "claude_oauth_token": c.ClaudeOAuthToken, "git_token": c.GitToken} {
			if len(v) > maxSecretLen || strings.IndexFunc(v, func(r rune) bool { return unicode.IsControl(r) || r == ' ' }) >= 0 {
				// The message names the field, never the value.
				return invalid("credentials."+name, "too long or contains spaces or control characters")
			}
		}
	}
	return nil
}

// Create validates a request for tenant t, records the claim (pending) and
// hands it to this replica's claim workers. It returns at once.
func (m *Manager) Create(ctx context.Context, t *store.Tenant, req *api.CreateSessionRequest) (*store.Session, error) {
	if err := ValidateRequest(req, m.cfg.AllowFileRepos); err != nil {
		return nil, err
	}
	// A pool the tenant may not use is answered exactly like one that does
	// not exist, and before the pool is looked up (no timing difference
	// either): a tenant must not learn which pools exist.
	if !Granted(t, req.Pool) {
		return nil, noPool(req.Pool)
	}
	p, err := m.cfg.Pools.Get(ctx, req.Pool)
	if errors.Is(err, poolcache.ErrNotFound) {
		return nil, noPool(req.Pool)
	}
	if err != nil {
		return nil, fmt.Errorf("look up pool %s: %w", req.Pool, err)
	}
	tmpl := p.Template(req.TenantImage)
	if tmpl == nil {
		if req.TenantImage == "" {
			return nil, invalid("pool", "pool %q has no default image", req.Pool)
		}
		return nil, invalid("tenant_image", "pool %q has no tenant image %q", req.Pool, req.TenantImage)
	}
	if req.TenantImage != "" && tmpl.Spec.Tenant != t.Name {
		// Tenant images declare their tenant by name; another tenant's
		// image is as good as absent.
		return nil, invalid("tenant_image", "pool %q has no tenant image %q", req.Pool, req.TenantImage)
	}
	if tmpl.Spec.Draining {
		return nil, invalid("pool", "pool %q is being deleted", req.Pool)
	}
	if req.Region != "" && !slices.Contains(tmpl.Spec.Regions, req.Region) {
		return nil, invalid("region", "pool %q does not run in %q (regions: %s)", req.Pool, req.Region, strings.Join(tmpl.Spec.Regions, ", "))
	}
	if t.MaxSessions > 0 {
		// Count and create under the tenant's lock (in-process and, with
		// Postgres, across replicas) so that concurrent requests cannot
		// overshoot the limit.
		release, err := m.locks.Lock(ctx, "tenant:"+t.ID)
		if err != nil {
			return nil, fmt.Errorf("lock tenant %s: %w", t.Name, err)
		}
		defer release()
		n, err := m.store.CountLiveSessions(ctx, t.ID)
		if err != nil {
			return nil, fmt.Errorf("count sessions: %w", err)
		}
		if n >= t.MaxSessions {
			return nil, &QuotaError{Limit: t.MaxSessions, RetryAfter: 30 * time.Second}
		}
	}
	id := NewSessionID()
	s := &store.Session{
		ID: id, TenantID: t.ID, Pool: req.Pool, TenantImage: req.TenantImage, Region: req.Region,
		State: store.StatePending, AppName: p.App, Repo: req.Repo, Branch: req.Branch,
		SessionBranch: req.SessionBranch, Mode: req.Mode, Command: req.Command, Env: req.Env,
		Cols: req.Cols, Rows: req.Rows, Owner: m.cfg.DaemonID,
	}
	if s.SessionBranch == "" {
		s.SessionBranch = "hangar/" + id
	}
	s.Command = sessionCommand(req, m.cfg.DefaultCommand)
	if req.GitAuthor != nil {
		s.GitAuthorName, s.GitAuthorEmail = req.GitAuthor.Name, req.GitAuthor.Email
	}
	creds := &Credentials{}
	if req.Credentials != nil {
		c := *req.Credentials
		creds = &c
	}
	m.claims.Hold(id, creds)
	if err := m.store.CreateSession(ctx, s); err != nil {
		m.claims.Forget(id)
		return nil, fmt.Errorf("record session: %w", err)
	}
	m.log.Info("session requested", "session", id, "tenant", t.Name, "pool", s.Pool, "tenant_image", s.TenantImage, "repo", s.Repo)
	m.wake()
	return s, nil
}

// noPool is the one answer for a pool that does not exist or is not the
// tenant's.
func noPool(name string) *InvalidError { return invalid("pool", "no pool named %q", name) }

// Granted reports whether tenant t may use pool (a "*" grant means every pool).
func Granted(t *store.Tenant, pool string) bool {
	for _, p := range t.Pools {
		if p == pool || p == "*" {
			return true
		}
	}
	return false
}

// sessionCommand is the argv a session runs: the request's own, else the
// pool's default. A pool's default command is a terminal program, so it does
// not apply in jsonl mode: there the agent builds claude's stream-json
// invocation itself when no command is named.
func sessionCommand(req *api.CreateSessionRequest, defaults map[string][]string) []string {
	if len(req.Command) > 0 || req.Mode == string(agentapi.ModeJSONL) {
		return req.Command
	}
	return defaults[req.Pool]
}
