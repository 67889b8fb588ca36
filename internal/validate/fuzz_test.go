package validate

import (
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"unicode"
)

// FuzzRepoURL: an accepted repository URL is printable ASCII, cannot be read
// by git as an option or a remote helper, carries no password and, over
// http(s), no user part at all.
func FuzzRepoURL(f *testing.F) {
	for _, s := range []string{"https://github.com/acme/app.git", "ssh://git@github.com/a/b.git",
		"git@github.com:a/b.git", "http://127.0.0.1:8080/x.git", "file:///srv/x.git", "http://[::1]/x.git",
		"https://ghp_abc@github.com/x.git", "git://h/x", "ext::sh -c x", "ssh://-oProxyCommand@h/x",
		"git@-oProxyCommand:x", "https://h/x\u202e.git", "https://u:p@h/x", "-x", "h:x"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, allowFile bool) {
		if RepoURL(s, RepoPolicy{AllowFile: allowFile}) != nil {
			return
		}
		for _, r := range s {
			if r <= ' ' || r >= 0x7f || unicode.Is(unicode.Cf, r) {
				t.Fatalf("%q accepted with %q", s, r)
			}
		}
		if strings.HasPrefix(s, "-") || transportRE.MatchString(s) || strings.ContainsAny(s, "?#") {
			t.Fatalf("%q accepted", s)
		}
		if !strings.Contains(s, "://") {
			m := scpRE.FindStringSubmatch(s)
			if m == nil || !loginRE.MatchString(m[1]) || strings.HasPrefix(m[2], "-") || strings.HasPrefix(m[3], "-") {
				t.Fatalf("%q accepted as login@host:path", s)
			}
			return
		}
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("%q accepted but does not parse: %v", s, err)
		}
		if _, pw := u.User.Password(); pw {
			t.Fatalf("%q accepted with a password", s)
		}
		switch u.Scheme {
		case "https", "http":
			if u.User != nil {
				t.Fatalf("%q accepted with a user part", s)
			}
		case "ssh":
		case "file":
			if !allowFile {
				t.Fatalf("%q accepted without AllowFile", s)
			}
		default:
			t.Fatalf("%q accepted with scheme %q", s, u.Scheme)
		}
		if strings.HasPrefix(u.Hostname(), "-") || strings.Contains(u.Path, "/-") {
			t.Fatalf("%q accepted with an option-like host or path", s)
		}
	})
}

// FuzzBranch: Branch never accepts what git check-ref-format refuses (when
// git is installed), nor a name git could read as an option.
func FuzzBranch(f *testing.F) {
	for _, c := range branchCases {
		f.Add(c.name)
	}
	_, err := exec.LookPath("git")
	haveGit := err == nil
	f.Fuzz(func(t *testing.T, b string) {
		if Branch(b) != nil {
			return
		}
		if strings.HasPrefix(b, "-") || len(b) > MaxBranch || b == "HEAD" {
			t.Fatalf("%q accepted", b)
		}
		for _, r := range b {
			if !unicode.IsPrint(r) {
				t.Fatalf("%q accepted with %U", b, r)
			}
		}
		if haveGit {
			if err := exec.Command("git", "check-ref-format", "refs/heads/"+b).Run(); err != nil {
				t.Fatalf("Branch accepts %q, git check-ref-format refuses it", b)
			}
		}
	})
}
