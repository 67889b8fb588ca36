package validate

import (
	"os/exec"
	"strings"
	"testing"
)

func TestRepoURL(t *testing.T) {
	for _, c := range []struct {
		url       string
		allowFile bool
		ok        bool
	}{
		{"https://github.com/acme/app.git", false, true},
		{"https://github.com:443/acme/app", false, true},
		{"https://git.example.com/~me/x+y.git", false, true},
		{"ssh://git@github.com/acme/app.git", false, true},
		{"ssh://github.com:2222/acme/app.git", false, true},
		{"git@github.com:acme/app.git", false, true},
		{"http://127.0.0.1:8080/x.git", false, true},
		{"http://127.0.0.5/x.git", false, true},
		{"http://[::1]/x.git", false, true},
		{"http://localhost/x.git", false, true},
		{"file:///srv/r.git", true, true},

		{"", false, false},
		{"file:///srv/r.git", false, false},
		{"file://other/x.git", true, false},
		{"file://relative", true, false},
		// A token in the user part would be stored, logged and returned.
		{"https://ghp_abcdefABCDEF0123456789@github.com/x.git", false, false},
		{"https://x-access-token@github.com/x.git", false, false},
		{"https://u:secretpw@example.com/r.git", false, false},
		{"ssh://git:pw@github.com/x.git", false, false},
		{"ssh://Ghp_Token@github.com/x.git", false, false},
		// Transports and option injection.
		{"git://github.com/x.git", false, false},
		{"http://example.com/x.git", false, false},
		{"http://10.0.0.1/x.git", false, false},
		{"git@-oProxyCommand=touch /tmp/x:x", false, false},
		{"git@-oProxyCommand:x", false, false},
		{"ssh://-oProxyCommand@host/x.git", false, false},
		{"ssh://-oProxyCommand=x/x.git", false, false},
		{"ssh://%2doProxyCommand/x.git", false, false},
		{"--upload-pack=touch /tmp/x", false, false},
		{"-oProxyCommand=x", false, false},
		{"ext::sh -c touch% /tmp/pwned", false, false},
		{"ext::sh", false, false},
		{"fd::3", false, false},
		{"https::x", false, false},
		{"git@host:-x", false, false},
		{"host:x.git", false, false},
		{"https://host/-x.git", false, false},
		{"https://host/a/-x.git", false, false},
		{"ftp://host/x", false, false},
		{"/local/path", false, false},
		{"https://host", false, false},
		{"https://host/", false, false},
		{"https://host:x/y.git", false, false},
		{"https://host/x.git?a=b", false, false},
		{"https://host/x.git#frag", false, false},
		{"https://host/x y.git", false, false},
		{"https://host/x%20y.git", false, false},
		{"https://host/x\n", false, false},
		// U+202E (right-to-left override) and other format characters.
		{"https://github.com/acme/\u202etig.ppa", false, false},
		{"https://github.com/acme/app\u200b.git", false, false},
		{"https://gïthub.com/acme/app.git", false, false},
		{"https://" + strings.Repeat("a", MaxRepoURL) + "/x.git", false, false},
	} {
		err := RepoURL(c.url, RepoPolicy{AllowFile: c.allowFile})
		if (err == nil) != c.ok {
			t.Errorf("RepoURL(%q, file=%v) = %v; want ok=%v", c.url, c.allowFile, err, c.ok)
		}
		if err != nil && strings.Contains(err.Error(), "secretpw") {
			t.Errorf("RepoURL(%q) error repeats the password: %v", c.url, err)
		}
	}
}

// branchCases are checked against Branch and, where git is installed,
// against git check-ref-format itself: Branch must never accept what git
// refuses.
var branchCases = []struct {
	name string
	ok   bool
}{
	{"main", true}, {"feature/x-1", true}, {"hangar/01jd9", true}, {"v1.2", true},
	{"ümlaut", true}, {"a@b", true},
	{"", false}, {"-x", false}, {"@", false}, {"HEAD", false}, {"a..b", false},
	{"a//b", false}, {"/a", false}, {"a/", false}, {"a.", false}, {"a.lock", false},
	{"a/.b", false}, {".a", false}, {"a/b.lock/c", false}, {"a@{1}", false},
	{"a b", false}, {"a~1", false}, {"a^", false}, {"a:b", false}, {"a?", false},
	{"a*", false}, {"a[", false}, {"a\\b", false}, {"a\x7f", false}, {"a\tb", false},
	{"a\x01", false}, {"x\u202ey", false}, {"x\u200by", false}, {"x\xffy", false},
	{strings.Repeat("a", MaxBranch+1), false},
}

func TestBranch(t *testing.T) {
	for _, c := range branchCases {
		if err := Branch(c.name); (err == nil) != c.ok {
			t.Errorf("Branch(%q) = %v; want ok=%v", c.name, err, c.ok)
		}
	}
}

func TestBranchNoLooserThanGit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	for _, c := range branchCases {
		if Branch(c.name) != nil || c.name == "" {
			continue
		}
		if err := exec.Command("git", "check-ref-format", "refs/heads/"+c.name).Run(); err != nil {
			t.Errorf("Branch accepts %q, git check-ref-format refuses it", c.name)
		}
	}
}

func TestEnv(t *testing.T) {
	for _, c := range []struct {
		env map[string]string
		ok  bool
	}{
		{map[string]string{"LOG_LEVEL": "debug", "_X": "", "a1": "x"}, true},
		{map[string]string{"1X": "x"}, false},
		{map[string]string{"A-B": "x"}, false},
		{map[string]string{"A=B": "x"}, false},
		{map[string]string{"": "x"}, false},
		{map[string]string{"HANGAR_AGENT_PORT": "1"}, false},
		{map[string]string{"FLY_MACHINE_ID": "1"}, false},
		{map[string]string{"ANTHROPIC_API_KEY": "sk"}, false},
		{map[string]string{"GITHUB_TOKEN": "ghp"}, false},
		{map[string]string{"X": "a\x00b"}, false},
		{map[string]string{"X": strings.Repeat("v", MaxEnvValue+1)}, false},
		{map[string]string{strings.Repeat("N", MaxEnvName+1): "x"}, false},
	} {
		if err := Env(c.env); (err == nil) != c.ok {
			t.Errorf("Env(%v) = %v; want ok=%v", c.env, err, c.ok)
		}
	}
	many := map[string]string{}
	for i := range MaxEnv + 1 {
		many["V"+strings.Repeat("x", i)] = ""
	}
	if Env(many) == nil {
		t.Error("Env accepts more than MaxEnv variables")
	}
}

func TestCommand(t *testing.T) {
	for _, c := range []struct {
		argv []string
		ok   bool
	}{
		{nil, true}, {[]string{"bash", "--norc"}, true}, {[]string{"claude", ""}, true},
		{[]string{""}, false}, {[]string{"  "}, false}, {[]string{"a\x00"}, false},
		{[]string{"x", strings.Repeat("a", MaxArgLen+1)}, false},
		{make([]string, MaxArgs+1), false},
	} {
		if err := Command(c.argv); (err == nil) != c.ok {
			t.Errorf("Command(%q) = %v; want ok=%v", c.argv, err, c.ok)
		}
	}
}
