package sessions

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"unicode"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/api"
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
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	regionRE  = regexp.MustCompile(`^[a-z]{3}$`)
	scpLikeRE = regexp.MustCompile(`^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[A-Za-z0-9._~/-]+$`)
)

// credentialEnv are env names that would carry a credential: such values
// would be stored with the session, so they must come in "credentials".
var credentialEnv = map[string]bool{
	"ANTHROPIC_API_KEY": true, "ANTHROPIC_AUTH_TOKEN": true, "CLAUDE_CODE_OAUTH_TOKEN": true,
	"GIT_TOKEN": true, "GITHUB_TOKEN": true, "GH_TOKEN": true, "GIT_PASSWORD": true,
	"AWS_SECRET_ACCESS_KEY": true, "AWS_SESSION_TOKEN": true,
}

// Limits on request fields.
const (
	maxArgs      = 64
	maxArgLen    = 4096
	maxEnv       = 64
	maxEnvValue  = 4096
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
		if err := ValidateRepoURL(r.Repo, allowFile); err != nil {
			return invalid("repo", "%v", err)
		}
	}
	if r.Branch != "" {
		if err := ValidateBranch(r.Branch); err != nil {
			return invalid("branch", "%v", err)
		}
	}
	if r.SessionBranch != "" {
		if err := ValidateBranch(r.SessionBranch); err != nil {
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
	if len(r.Command) > maxArgs {
		return invalid("command", "at most %d arguments", maxArgs)
	}
	for i, a := range r.Command {
		if i == 0 && strings.TrimSpace(a) == "" {
			return invalid("command", "the program name is empty")
		}
		if len(a) > maxArgLen || strings.ContainsRune(a, 0) {
			return invalid("command", "argument %d is too long or contains NUL", i)
		}
	}
	if len(r.Env) > maxEnv {
		return invalid("env", "at most %d variables", maxEnv)
	}
	for k, v := range r.Env {
		switch {
		case !envNameRE.MatchString(k):
			return invalid("env", "%q is not a variable name", k)
		case strings.HasPrefix(k, "HANGAR_") || strings.HasPrefix(k, "FLY_"):
			return invalid("env", "%s: HANGAR_* and FLY_* are reserved", k)
		case credentialEnv[k]:
			return invalid("env", "%s carries a credential: pass it in \"credentials\", which is never stored", k)
		case len(v) > maxEnvValue || strings.ContainsRune(v, 0):
			return invalid("env", "%s: value too long or contains NUL", k)
		}
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

var transportHelperRE = regexp.MustCompile(`^[A-Za-z0-9+.-]*::`)

// ValidateRepoURL accepts https, http, ssh and git URLs and scp-like
// user@host:path, plus file URLs when allowFile; it refuses everything git
// could take as an option or a remote helper (leading '-', "ext::", "fd::"),
// control characters and passwords in the URL.
func ValidateRepoURL(s string, allowFile bool) error {
	if len(s) > 2048 {
		return fmt.Errorf("URL too long")
	}
	if strings.HasPrefix(s, "-") {
		return fmt.Errorf("%q looks like a command-line option", s)
	}
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) >= 0 {
		return fmt.Errorf("URL contains spaces or control characters")
	}
	// git's "<transport>::<address>" syntax; an IPv6 host ("[fd00::1]")
	// also holds "::", but only after the scheme.
	if transportHelperRE.MatchString(s) {
		return fmt.Errorf("git remote-helper transports (like ext::) are not allowed")
	}
	if scpLikeRE.MatchString(s) && !strings.Contains(s, "://") {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL: %v", err)
	}
	switch u.Scheme {
	case "https", "http", "ssh", "git":
		if u.Host == "" || strings.HasPrefix(u.Host, "-") {
			return fmt.Errorf("URL has no valid host")
		}
		if _, hasPw := u.User.Password(); hasPw {
			return fmt.Errorf("URL contains a password: pass it as credentials.git_token, which is never stored")
		}
	case "file":
		if !allowFile {
			return fmt.Errorf("file URLs are not allowed")
		}
		if u.Path == "" || strings.HasPrefix(u.Path, "-") {
			return fmt.Errorf("file URL has no path")
		}
	default:
		return fmt.Errorf("scheme %q is not allowed (want https, ssh, git or user@host:path)", u.Scheme)
	}
	if strings.HasPrefix(u.Path, "-") || strings.Contains(u.Path, "/-") && strings.HasPrefix(strings.TrimPrefix(u.Path, "/"), "-") {
		return fmt.Errorf("path looks like a command-line option")
	}
	return nil
}

// ValidateBranch applies git check-ref-format's rules to a branch name.
func ValidateBranch(b string) error {
	bad := func(why string) error { return fmt.Errorf("%q is not a valid branch name: %s", b, why) }
	switch {
	case b == "" || len(b) > 200:
		return bad("empty or longer than 200 characters")
	case b == "@":
		return bad("is @")
	case strings.HasPrefix(b, "-"):
		return bad("starts with '-'")
	case strings.HasPrefix(b, "/") || strings.HasSuffix(b, "/"):
		return bad("starts or ends with '/'")
	case strings.HasSuffix(b, ".") || strings.HasSuffix(b, ".lock"):
		return bad("ends with '.' or '.lock'")
	case strings.Contains(b, "..") || strings.Contains(b, "//") || strings.Contains(b, "@{"):
		return bad("contains '..', '//' or '@{'")
	case strings.ContainsAny(b, " ~^:?*[\\\x7f"):
		return bad("contains a space or one of ~^:?*[\\")
	}
	for _, r := range b {
		if r < 0x20 {
			return bad("contains a control character")
		}
	}
	for _, part := range strings.Split(b, "/") {
		if strings.HasPrefix(part, ".") || strings.HasSuffix(part, ".lock") {
			return bad("a component starts with '.' or ends with '.lock'")
		}
	}
	return nil
}
