package agent_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/gittest"
	"github.com/hangarhq/hangar/internal/wire"
)

// TestPTYSessionEndToEnd: clone with a token, branch, run, input, resize,
// signals, exit, finish pushing a commit read back from the server, and no
// credential anywhere in the workspace, logs or responses.
func TestPTYSessionEndToEnd(t *testing.T) {
	git := gittest.Start(t)
	repoURL := git.CreateRepo(t, "acme/app", map[string]string{"README.md": "hello\n"})
	a := startAgent(t, agentOpts{})
	creds := &agentapi.Credentials{
		AnthropicAPIKey:  "sk-ant-api03-TESTKEY-abcdefghijklmnopqrstuvwxyz0123456789",
		ClaudeOAuthToken: "sk-ant-oat01-TESTOAUTH-0123456789abcdef",
		GitToken:         git.Token,
	}
	st := a.init(&agentapi.InitRequest{
		SessionID: "sess1", Repo: repoURL, Branch: "main", Mode: agentapi.ModePTY,
		Cols: 90, Rows: 20, Credentials: creds, GitAuthor: &agentapi.GitAuthor{Name: "Ada", Email: "ada@example.com"},
	})
	if st.State != agentapi.StateRunning || st.SessionBranch != "hangar/sess1" || st.PID == 0 {
		t.Fatalf("init status %+v", st)
	}
	// Idempotent for the same session.
	if st2 := a.init(&agentapi.InitRequest{SessionID: "sess1", Repo: repoURL, Branch: "main", Credentials: creds}); st2.PID != st.PID {
		t.Fatalf("second init restarted the command: %d vs %d", st2.PID, st.PID)
	}
	c := a.attach("sess1", wire.SubprotocolPTY, wire.Attach{From: 0, Role: wire.RoleWriter})
	if c.attached.Session != "sess1" || c.attached.From != 0 || c.attached.Cols != 90 || c.attached.Rows != 20 {
		t.Fatalf("attached %+v", c.attached)
	}
	c.waitOutput("fake claude")
	c.input("hello agent\r")
	c.waitOutput("you said: hello agent")

	// The command runs in the workspace on the session branch, with the
	// Claude settings and credentials in its env and no git token.
	c.input("/pwd\r")
	c.waitOutput("pwd: " + a.workspace)
	for name, want := range map[string]string{"ANTHROPIC_API_KEY": "set", "CLAUDE_CODE_OAUTH_TOKEN": "set", "HANGAR_GIT_TOKEN": "unset",
		"HANGAR_BROKER_PUBLIC_KEY": "unset", "DISABLE_AUTOUPDATER": "set", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "set", "CLAUDE_CONFIG_DIR": "set"} {
		c.input("/env " + name + "\r")
		c.waitOutput("env " + name + "=" + want)
	}
	if b := gittest.Git(t, a.workspace, "rev-parse", "--abbrev-ref", "HEAD"); strings.TrimSpace(b) != "hangar/sess1" {
		t.Fatalf("branch %q", b)
	}

	// Resize: reported to the client and seen by the program.
	c.send(&wire.Resize{Cols: 120, Rows: 40})
	c.waitCtrl("size", func(m wire.Message) bool { s, ok := m.(*wire.Size); return ok && s.Cols == 120 && s.Rows == 40 })
	c.input("/size\r")
	c.waitOutput("size: 40x120")
	// Absurd sizes are refused; the connection survives.
	c.send(&wire.Resize{Cols: 0, Rows: 0})
	c.waitError(wire.ErrCodeInvalidSize)
	c.ctrl = nil
	c.send(&wire.Resize{Cols: 100000, Rows: 50})
	c.waitError(wire.ErrCodeInvalidSize)
	c.input("/size\r")
	c.waitFor("size unchanged", func() bool { return strings.Count(c.out.String(), "size: 40x120") == 2 })

	// Signals reach the program.
	c.send(&wire.Signal{Name: wire.SignalINT})
	c.waitOutput("got SIGINT")
	c.send(&wire.Signal{Name: "STOP"})
	c.waitError(wire.ErrCodeInvalidSignal)

	// Work, then exit 0: exit frame and close 1000.
	c.input("/write notes/result.txt done by the agent\r")
	c.waitOutput("wrote notes/result.txt")
	c.input("/exit\r")
	ex := c.waitCtrl("exit", func(m wire.Message) bool { _, ok := m.(*wire.Exit); return ok }).(*wire.Exit)
	if ex.Code != 0 || ex.Signal != "" {
		t.Fatalf("exit %+v", ex)
	}
	if code := c.waitClosed(); code != 1000 {
		t.Fatalf("close code %d", code)
	}
	st = a.status("sess1")
	if st.State != agentapi.StateExited || st.ExitCode == nil || *st.ExitCode != 0 || st.Head != ex.At || st.BytesIn == 0 || st.LastInputAt == nil {
		t.Fatalf("status after exit %+v", st)
	}

	// Claude Code's config was seeded outside the workspace.
	var cfg map[string]any
	b, err := os.ReadFile(filepath.Join(a.home, ".claude", ".claude.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	proj := cfg["projects"].(map[string]any)[a.workspace].(map[string]any)
	approved := cfg["customApiKeyResponses"].(map[string]any)["approved"].([]any)
	if cfg["hasCompletedOnboarding"] != true || proj["hasTrustDialogAccepted"] != true ||
		len(approved) != 1 || approved[0] != creds.AnthropicAPIKey[len(creds.AnthropicAPIKey)-20:] {
		t.Fatalf("claude config %s", b)
	}

	res := a.finish("sess1", &agentapi.FinishRequest{Message: "Session work"})
	if !res.OK || res.Ref != "refs/heads/hangar/sess1" || res.Commit == "" {
		t.Fatalf("finish %+v", res)
	}
	if got := git.Commit(t, "acme/app", "hangar/sess1"); got != res.Commit {
		t.Fatalf("server has %s, finish said %s", got, res.Commit)
	}
	if content, ok := git.ReadFile(t, "acme/app", "hangar/sess1", "notes/result.txt"); !ok || content != "done by the agent\n" {
		t.Fatalf("pushed file %q %v", content, ok)
	}
	if info := git.CommitInfo(t, "acme/app", res.Commit); info != "Ada <ada@example.com>\nSession work" {
		t.Fatalf("commit info %q", info)
	}
	if git.Commit(t, "acme/app", "main") == res.Commit {
		t.Fatal("main moved")
	}
	if code := a.waitExit(); code != 0 {
		t.Fatalf("agent exit code %d", code)
	}
	scanForSecrets(t, a, creds.Secrets())
}

// scanForSecrets checks the workspace (including .git), the agent's logs
// and every response for the credentials.
func scanForSecrets(t *testing.T, a *agentProc, secrets []string) {
	t.Helper()
	check := func(where, content string) {
		for _, s := range secrets {
			if strings.Contains(content, s) {
				t.Errorf("credential %.8s… found in %s", s, where)
			}
		}
	}
	// The workspace (with .git) and the home holding Claude Code's config.
	for _, root := range []string{a.workspace, a.home} {
		err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			check(p, string(b))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(a.workspace, ".git", "config")); err != nil {
		t.Fatalf("no .git/config scanned: %v", err)
	}
	check("agent logs", a.logs.String())
	check("responses", a.allResponses())
	if !strings.Contains(a.logs.String(), "preparing workspace") {
		t.Error("logs not captured")
	}
}
