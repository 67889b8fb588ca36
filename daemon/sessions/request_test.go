package sessions

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hangarhq/hangar/daemon/store"
	"github.com/hangarhq/hangar/internal/api"
	"github.com/hangarhq/hangar/internal/pool"
)

// TestRequestValidateRepo: the repo URLs the daemon used to accept and the
// agent (or git) refused only after a VM was claimed are refused at the API,
// naming the field and never repeating a token.
func TestRequestValidateRepo(t *testing.T) {
	for _, c := range []struct {
		repo, branch string
		allowFile    bool
		field        string // "" = valid
	}{
		{"https://github.com/o/r.git", "main", false, ""},
		{"http://127.0.0.1:3000/r.git", "", false, ""},
		{"git@github.com:o/r.git", "", false, ""},
		{"file:///srv/r.git", "", true, ""},
		{"file:///srv/r.git", "", false, "repo"},
		{"https://ghp_0123456789abcdefABCDEF@github.com/o/r.git", "", false, "repo"},
		{"git://github.com/o/r.git", "", false, "repo"},
		{"http://example.com/o/r.git", "", false, "repo"},
		{"git@-oProxyCommand:x", "", false, "repo"},
		{"ssh://-oProxyCommand@host/o/r.git", "", false, "repo"},
		{"https://github.com/o/\u202ecod.exe", "", false, "repo"},
		{"https://github.com/o/r.git", "x\u202ey", false, "branch"},
		{"https://github.com/o/r.git", "HEAD", false, "branch"},
	} {
		err := ValidateRequest(&api.CreateSessionRequest{Pool: "p", Repo: c.repo, Branch: c.branch}, c.allowFile)
		var ie *InvalidError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%q %q: %v", c.repo, c.branch, err)
		case c.field != "" && (!errors.As(err, &ie) || ie.Field != c.field):
			t.Errorf("%q %q: error %v; want one naming %s", c.repo, c.branch, err, c.field)
		case err != nil && strings.Contains(err.Error(), "ghp_"):
			t.Errorf("%q: the error repeats the token: %v", c.repo, err)
		}
	}
}

func TestRequestValidateKeepsSecretsOutOfErrors(t *testing.T) {
	secret := "sk-ant-very-secret value"
	r := &api.CreateSessionRequest{Pool: "p", Credentials: &Credentials{AnthropicAPIKey: secret}}
	err := ValidateRequest(r, false)
	if err == nil || strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprintf("%+v", r), secret) {
		t.Fatalf("err %v / request %+v", err, r)
	}
	ok := &api.CreateSessionRequest{Pool: "p"}
	if err := ValidateRequest(ok, false); err != nil || ok.Mode != "pty" {
		t.Fatalf("defaults: %v %q", err, ok.Mode)
	}
}

func TestRequestValidateGitAuthor(t *testing.T) {
	for _, c := range []struct {
		author *api.GitAuthor
		field  string // "" = valid
	}{
		{nil, ""},
		{&api.GitAuthor{Name: "Ada", Email: "ada@example.com"}, ""},
		{&api.GitAuthor{Name: "Ada"}, "git_author.email"},
		{&api.GitAuthor{Email: "ada@example.com"}, "git_author.name"},
		{&api.GitAuthor{}, "git_author.name"},
		{&api.GitAuthor{Name: " ", Email: "ada@example.com"}, "git_author.name"},
		{&api.GitAuthor{Name: "Ada <x>", Email: "ada@example.com"}, "git_author.name"},
		{&api.GitAuthor{Name: "Ada", Email: "not-an-address"}, "git_author.email"},
		{&api.GitAuthor{Name: "Ada", Email: "a da@example.com"}, "git_author.email"},
	} {
		err := ValidateRequest(&api.CreateSessionRequest{Pool: "p", GitAuthor: c.author}, false)
		var ie *InvalidError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%+v: %v", c.author, err)
		case c.field != "" && (!errors.As(err, &ie) || ie.Field != c.field):
			t.Errorf("%+v: error %v; want one naming %s", c.author, err, c.field)
		}
	}
}

func TestEffectiveTTLAndPrice(t *testing.T) {
	if got := EffectiveTTL(4*time.Hour, &store.Tenant{MaxSessionDuration: time.Hour}); got != time.Hour {
		t.Errorf("capped TTL %v", got)
	}
	if got := EffectiveTTL(time.Hour, &store.Tenant{MaxSessionDuration: 4 * time.Hour}); got != time.Hour {
		t.Errorf("pool TTL %v", got)
	}
	if got := EffectiveTTL(0, &store.Tenant{MaxSessionDuration: 2 * time.Hour}); got != 2*time.Hour {
		t.Errorf("tenant-only TTL %v", got)
	}
	small := PricePerSecond(pool.Guest{CPUKind: "shared", CPUs: 1, MemoryMB: 256})
	big := PricePerSecond(pool.Guest{CPUKind: "shared", CPUs: 1, MemoryMB: 2048})
	perf := PricePerSecond(pool.Guest{CPUKind: "performance", CPUs: 1, MemoryMB: 2048})
	if small != sharedCPUPerSecond || big <= small || perf != performanceCPUPerSecond {
		t.Errorf("prices %v %v %v", small, big, perf)
	}
	if !Granted(&store.Tenant{Pools: []string{"*"}}, "any") || Granted(&store.Tenant{Pools: []string{"a"}}, "b") || Granted(&store.Tenant{}, "a") {
		t.Error("Granted")
	}
}

func TestSessionCommand(t *testing.T) {
	defaults := map[string][]string{"dev": {"bash"}}
	cases := []struct {
		name string
		req  api.CreateSessionRequest
		want []string
	}{
		{"pty default", api.CreateSessionRequest{Pool: "dev", Mode: "pty"}, []string{"bash"}},
		{"pty own command", api.CreateSessionRequest{Pool: "dev", Mode: "pty", Command: []string{"sh", "-c", "x"}}, []string{"sh", "-c", "x"}},
		{"jsonl leaves the agent's claude invocation", api.CreateSessionRequest{Pool: "dev", Mode: "jsonl"}, nil},
		{"jsonl own command", api.CreateSessionRequest{Pool: "dev", Mode: "jsonl", Command: []string{"fake"}}, []string{"fake"}},
		{"pool without default", api.CreateSessionRequest{Pool: "other", Mode: "pty"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := sessionCommand(&c.req, defaults)
			if strings.Join(got, " ") != strings.Join(c.want, " ") || len(got) != len(c.want) {
				t.Fatalf("sessionCommand = %q, want %q", got, c.want)
			}
		})
	}
}
