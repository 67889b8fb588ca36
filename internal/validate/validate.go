// Package validate holds the one set of rules for what a session request
// may name: repository URLs, branches, environment variables and the
// terminal command. The daemon applies them at the API (before anything is
// claimed), the agent at init, and the CLI before it sends a request, so a
// value is refused at the first hop that sees it and never later, after a
// VM was spent on it. docs/api.md lists the same rules for people.
package validate

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"unicode"
)

// Limits on request fields.
const (
	// MaxRepoURL is the longest repository URL accepted.
	MaxRepoURL = 2048
	// MaxBranch is the longest branch name accepted.
	MaxBranch = 200
	// MaxArgs and MaxArgLen bound the command.
	MaxArgs   = 64
	MaxArgLen = 4096
	// MaxEnv, MaxEnvName and MaxEnvValue bound the environment.
	MaxEnv      = 64
	MaxEnvName  = 128
	MaxEnvValue = 4096
)

// RepoPolicy is what a deployment allows beyond the fixed rules.
type RepoPolicy struct {
	// AllowFile accepts file:///absolute/path URLs: `hangard dev`, tests,
	// and the agent (a file URL there names the VM's own disk).
	AllowFile bool
}

var (
	// hostRE is a DNS name or IPv4 address: letters, digits, '.' and '-',
	// never starting with '-' (git would pass it to ssh as an option).
	hostRE = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})$`)
	// loginRE is an ssh login name as Unix spells them (git, deploy): the
	// only user part accepted, and only for ssh. Mixed case, digits first
	// and '-' first are refused, so a token or an option cannot pass for one.
	loginRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	// pathRE is the path of a repository: no spaces, quotes, shell or URL
	// metacharacters.
	pathRE = regexp.MustCompile(`^[A-Za-z0-9._~/+-]+$`)
	// scpRE is git's ssh shorthand user@host:path.
	scpRE = regexp.MustCompile(`^([^@/:]+)@([^@/:]+):(.+)$`)
	// transportRE matches git's "<transport>::<address>" remote helpers.
	transportRE = regexp.MustCompile(`^[A-Za-z0-9+.-]*::`)
	envNameRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// RepoURL checks a repository URL. Accepted:
//
//   - https://host[:port]/path — no user part (put a token in
//     credentials.git_token, which is never stored);
//   - ssh://[login@]host[:port]/path and login@host:path, where login is a
//     Unix login name such as git;
//   - http://host[:port]/path only to a loopback host (local development
//     and tests);
//   - file:///path only with p.AllowFile.
//
// Everything else is refused: other schemes (git://, ext::, fd::, any
// "transport::"), a leading '-', a host or path starting with '-', a user
// part in an http(s) URL, a password anywhere, a query or fragment, and any
// byte outside printable ASCII (spaces, controls, and Unicode such as
// U+202E that could make a URL read differently than it works).
func RepoURL(s string, p RepoPolicy) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > MaxRepoURL:
		return fmt.Errorf("longer than %d bytes", MaxRepoURL)
	case strings.HasPrefix(s, "-"):
		return errors.New("starts with '-' (it would be read as an option)")
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f {
			return errors.New("contains spaces, control characters or non-ASCII characters")
		}
	}
	if transportRE.MatchString(s) {
		return errors.New("git remote-helper transports (like ext::) are not allowed")
	}
	if !strings.Contains(s, "://") {
		return scpLike(s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(s, "?#") {
		return errors.New("a query or fragment is not allowed")
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			return errors.New("contains a password: pass it as credentials.git_token, which is never stored")
		}
	}
	switch u.Scheme {
	case "https", "http", "ssh":
		if u.Scheme == "ssh" {
			if u.User != nil && !loginRE.MatchString(u.User.Username()) {
				return errors.New("the ssh user must be a login name like git")
			}
		} else if u.User != nil {
			return errors.New("a user part is not allowed: pass a token as credentials.git_token, which is never stored")
		}
		if err := checkHost(u); err != nil {
			return err
		}
		if u.Scheme == "http" && !isLoopback(u.Hostname()) {
			return errors.New("http is allowed only to a loopback host; use https")
		}
	case "file":
		if !p.AllowFile {
			return errors.New("file URLs are not allowed")
		}
		if u.User != nil || (u.Host != "" && u.Host != "localhost") {
			return errors.New("file URLs must be local (file:///path)")
		}
		if !strings.HasPrefix(u.Path, "/") {
			return errors.New("file URL needs an absolute path")
		}
	default:
		return fmt.Errorf("scheme %q is not allowed (want https, ssh or login@host:path)", u.Scheme)
	}
	return checkPath(u.Path, true)
}

func checkHost(u *url.URL) error {
	h := u.Hostname()
	if strings.HasPrefix(u.Host, "[") {
		if ip := net.ParseIP(h); ip == nil || ip.To4() != nil {
			return errors.New("bad IPv6 host")
		}
	} else if !hostRE.MatchString(h) || strings.Contains(h, "..") {
		return errors.New("no valid host")
	}
	if port := u.Port(); port != "" {
		for _, c := range port {
			if c < '0' || c > '9' {
				return errors.New("bad port")
			}
		}
		if len(port) > 5 {
			return errors.New("bad port")
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return errors.New("empty port")
	}
	return nil
}

func checkPath(path string, slash bool) error {
	if slash {
		if !strings.HasPrefix(path, "/") {
			return errors.New("no repository path")
		}
		path = path[1:]
	}
	if path == "" || path == "/" {
		return errors.New("no repository path")
	}
	if !pathRE.MatchString(path) {
		return errors.New("the path may hold only letters, digits and . _ ~ / + -")
	}
	for _, seg := range strings.Split(path, "/") {
		if strings.HasPrefix(seg, "-") {
			return errors.New("a path component starts with '-'")
		}
	}
	return nil
}

// scpLike checks git's ssh shorthand login@host:path.
func scpLike(s string) error {
	m := scpRE.FindStringSubmatch(s)
	if m == nil {
		return errors.New("want https://host/path, ssh://host/path or login@host:path")
	}
	if !loginRE.MatchString(m[1]) {
		return errors.New("the ssh user must be a login name like git")
	}
	if !hostRE.MatchString(m[2]) || strings.Contains(m[2], "..") {
		return errors.New("no valid host")
	}
	return checkPath(m[3], false)
}

func isLoopback(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Branch checks a branch name against git check-ref-format's rules for
// refs/heads/<name>, plus: at most MaxBranch bytes, not starting with '-'
// (git would read it as an option), not HEAD, and only printable
// characters (no Unicode format characters such as U+202E).
func Branch(b string) error {
	bad := func(why string) error { return fmt.Errorf("%q is not a valid branch name: %s", b, why) }
	switch {
	case b == "" || len(b) > MaxBranch:
		return bad(fmt.Sprintf("empty or longer than %d bytes", MaxBranch))
	case b == "@" || b == "HEAD":
		return bad("is @ or HEAD")
	case strings.HasPrefix(b, "-"):
		return bad("starts with '-'")
	case strings.HasPrefix(b, "/") || strings.HasSuffix(b, "/"):
		return bad("starts or ends with '/'")
	case strings.HasSuffix(b, "."):
		return bad("ends with '.'")
	case strings.Contains(b, "..") || strings.Contains(b, "//") || strings.Contains(b, "@{"):
		return bad("contains '..', '//' or '@{'")
	case strings.ContainsAny(b, " ~^:?*[\\\x7f"):
		return bad("contains a space or one of ~^:?*[\\")
	}
	for _, r := range b {
		if r < 0x20 || r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			return bad("contains a control, format or invalid character")
		}
	}
	for _, part := range strings.Split(b, "/") {
		if strings.HasPrefix(part, ".") || strings.HasSuffix(part, ".lock") {
			return bad("a component starts with '.' or ends with '.lock'")
		}
	}
	return nil
}

// credentialEnv are env names that would carry a credential: env is stored
// with the session, so such values must come in "credentials", which is not.
var credentialEnv = map[string]bool{
	"ANTHROPIC_API_KEY": true, "ANTHROPIC_AUTH_TOKEN": true, "CLAUDE_CODE_OAUTH_TOKEN": true,
	"GIT_TOKEN": true, "GITHUB_TOKEN": true, "GH_TOKEN": true, "GIT_PASSWORD": true,
	"AWS_SECRET_ACCESS_KEY": true, "AWS_SESSION_TOKEN": true,
}

// EnvName checks one environment variable name: [A-Za-z_][A-Za-z0-9_]*, at
// most MaxEnvName bytes, not HANGAR_* or FLY_* (the platform's own), and
// not a name that carries a credential (ANTHROPIC_API_KEY, GITHUB_TOKEN…).
func EnvName(k string) error {
	switch {
	case len(k) > MaxEnvName || !envNameRE.MatchString(k):
		return fmt.Errorf("%q is not a variable name", k)
	case strings.HasPrefix(k, "HANGAR_") || strings.HasPrefix(k, "FLY_"):
		return fmt.Errorf("%s: HANGAR_* and FLY_* are reserved", k)
	case credentialEnv[k]:
		return fmt.Errorf("%s carries a credential: pass it in \"credentials\", which is never stored", k)
	}
	return nil
}

// Env checks a whole environment: at most MaxEnv variables, each name
// passing EnvName, each value at most MaxEnvValue bytes without NUL. The
// error names the variable, never its value.
func Env(env map[string]string) error {
	if len(env) > MaxEnv {
		return fmt.Errorf("at most %d variables", MaxEnv)
	}
	for k, v := range env {
		if err := EnvName(k); err != nil {
			return err
		}
		if len(v) > MaxEnvValue || strings.ContainsRune(v, 0) {
			return fmt.Errorf("%s: value longer than %d bytes or contains NUL", k, MaxEnvValue)
		}
	}
	return nil
}

// Command checks a terminal command (argv): at most MaxArgs arguments of at
// most MaxArgLen bytes, no NUL, and a non-blank program name. An empty
// command means the pool's default.
func Command(argv []string) error {
	if len(argv) > MaxArgs {
		return fmt.Errorf("at most %d arguments", MaxArgs)
	}
	for i, a := range argv {
		if i == 0 && strings.TrimSpace(a) == "" {
			return errors.New("the program name is empty")
		}
		if len(a) > MaxArgLen || strings.ContainsRune(a, 0) {
			return fmt.Errorf("argument %d is longer than %d bytes or contains NUL", i, MaxArgLen)
		}
	}
	return nil
}
