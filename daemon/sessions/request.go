package sessions

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"

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
