package agent

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/hangarhq/hangar/internal/agentapi"
)

// credentialHelper answers git's "get" with the token from the git process's
// own environment (HANGAR_GIT_TOKEN), so the token is never written to
// .git/config, the remote URL or any file. A username given by the URL is kept.
const credentialHelper = `!f() { test "$1" = get || exit 0; u=; while IFS= read -r l && [ -n "$l" ]; do case "$l" in username=*) u=1;; esac; done; [ -n "$u" ] || echo username=x-access-token; printf 'password=%s\n' "$HANGAR_GIT_TOKEN"; }; f`

// envGitToken carries the git token into git processes only.
const envGitToken = "HANGAR_GIT_TOKEN"

// git runs git commands in the workspace.
type git struct {
	dir    string
	token  string
	author agentapi.GitAuthor
	scrub  func(string) string
}

// gitEnv is the environment of every git process: the agent's environment
// without hangar's and Claude's secrets and settings, no prompts, and
// protocol restrictions (no ext:: or other helpers).
func (g *git) env(withToken bool) []string {
	env := childBaseEnv()
	cfg := [][2]string{
		{"protocol.allow", "never"},
		{"protocol.https.allow", "always"},
		{"protocol.http.allow", "always"}, // URLs were validated: http only to loopback
		{"protocol.ssh.allow", "always"},
		{"protocol.file.allow", "always"},
		{"credential.helper", ""}, // reset any configured helper
		{"core.askPass", ""},
		{"commit.gpgSign", "false"},
		{"init.defaultBranch", "main"},
		{"advice.detachedHead", "false"},
	}
	if withToken && g.token != "" {
		cfg = append(cfg, [2]string{"credential.helper", credentialHelper})
		env = append(env, envGitToken+"="+g.token)
	}
	env = append(env, "GIT_CONFIG_COUNT="+strconv.Itoa(len(cfg)))
	for i, kv := range cfg {
		env = append(env, fmt.Sprintf("GIT_CONFIG_KEY_%d=%s", i, kv[0]), fmt.Sprintf("GIT_CONFIG_VALUE_%d=%s", i, kv[1]))
	}
	env = append(env,
		"GIT_TERMINAL_PROMPT=0",
		"GIT_ASKPASS=false",
		"SSH_ASKPASS=false",
		"GCM_INTERACTIVE=never",
		"GIT_AUTHOR_NAME="+g.author.Name, "GIT_AUTHOR_EMAIL="+g.author.Email,
		"GIT_COMMITTER_NAME="+g.author.Name, "GIT_COMMITTER_EMAIL="+g.author.Email,
	)
	if os.Getenv("GIT_SSH_COMMAND") == "" {
		env = append(env, "GIT_SSH_COMMAND=ssh -oBatchMode=yes")
	}
	return env
}

// run runs git with args in the workspace; errors carry git's (scrubbed) stderr.
func (g *git) run(ctx context.Context, withToken bool, extraEnv []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = g.dir
	cmd.Env = append(g.env(withToken), extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(g.scrub(stderr.String()))
		if msg == "" {
			msg = err.Error()
		}
		return g.scrub(stdout.String()), &gitError{op: args[0], msg: msg}
	}
	return stdout.String(), nil
}

type gitError struct{ op, msg string }

func (e *gitError) Error() string { return "git " + e.op + ": " + e.msg }

var sessionIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func validateSessionID(id string) error {
	if !sessionIDPattern.MatchString(id) || strings.Contains(id, "..") || strings.HasSuffix(id, ".lock") || strings.HasSuffix(id, ".") {
		return fmt.Errorf("invalid session id %q (letters, digits, '.', '_', '-'; at most 128)", id)
	}
	return nil
}

// prepareWorkspace clones repo (or git-inits an empty workspace) and checks
// out the session branch: the remote's session branch if it exists (a
// resumed session), else a new branch from base (or the default branch).
func (g *git) prepareWorkspace(ctx context.Context, repo, base, sessionBranch string) error {
	if err := os.MkdirAll(g.dir, 0o755); err != nil {
		return fmt.Errorf("create workspace: %w", err)
	}
	entries, err := os.ReadDir(g.dir)
	if err != nil {
		return fmt.Errorf("read workspace: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("workspace %s is not empty", g.dir)
	}
	if repo == "" {
		if _, err := g.run(ctx, false, nil, "init", "--quiet", "--initial-branch="+sessionBranch, "."); err != nil {
			return err
		}
		return nil
	}
	args := []string{"clone", "--quiet", "--no-tags"}
	if base != "" {
		args = append(args, "--branch", base)
	}
	args = append(args, "--", repo, ".")
	if _, err := g.run(ctx, true, nil, args...); err != nil {
		return err
	}
	// Does the remote already have the session branch (a resumed session)?
	if _, err := g.run(ctx, true, nil, "fetch", "--quiet", "origin", "+refs/heads/"+sessionBranch+":refs/remotes/origin/"+sessionBranch); err == nil {
		_, err := g.run(ctx, false, nil, "checkout", "--quiet", "-B", sessionBranch, "refs/remotes/origin/"+sessionBranch)
		return err
	}
	_, err = g.run(ctx, false, nil, "checkout", "--quiet", "-B", sessionBranch)
	return err
}

// head returns HEAD's commit, or "" on an unborn branch.
func (g *git) head(ctx context.Context) string {
	out, err := g.run(ctx, false, nil, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// commitAll stages everything and commits it if anything changed. It
// returns the resulting HEAD commit and whether a new commit was made.
func (g *git) commitAll(ctx context.Context, message string) (string, bool, error) {
	if _, err := g.run(ctx, false, nil, "add", "-A"); err != nil {
		return "", false, err
	}
	_, err := g.run(ctx, false, nil, "diff", "--cached", "--quiet")
	changed := err != nil
	if changed {
		if _, err := g.run(ctx, false, nil, "commit", "--quiet", "--no-verify", "-m", message); err != nil {
			return g.head(ctx), false, err
		}
	}
	return g.head(ctx), changed, nil
}

// push pushes src to the remote ref dst.
func (g *git) push(ctx context.Context, src, dst string, force bool) error {
	args := []string{"push", "--quiet", "--no-verify"}
	if force {
		args = append(args, "--force")
	}
	args = append(args, "origin", src+":"+dst)
	_, err := g.run(ctx, true, nil, args...)
	return err
}

// snapshot commits the working tree as it is (tracked and untracked files)
// on top of HEAD without touching HEAD, the index or the branch, using a
// temporary index outside the workspace. It returns the commit and its tree.
func (g *git) snapshot(ctx context.Context, message string) (commit, tree string, err error) {
	tmp, err := os.CreateTemp("", "hangar-index-")
	if err != nil {
		return "", "", err
	}
	idx := tmp.Name()
	tmp.Close()
	defer os.Remove(idx)
	if b, err := os.ReadFile(filepath.Join(g.dir, ".git", "index")); err == nil {
		if err := os.WriteFile(idx, b, 0o600); err != nil {
			return "", "", err
		}
	} else {
		os.Remove(idx)
	}
	env := []string{"GIT_INDEX_FILE=" + idx}
	if _, err := g.run(ctx, false, env, "add", "-A"); err != nil {
		return "", "", err
	}
	out, err := g.run(ctx, false, env, "write-tree")
	if err != nil {
		return "", "", err
	}
	tree = strings.TrimSpace(out)
	args := []string{"commit-tree", tree, "-m", message}
	if h := g.head(ctx); h != "" {
		args = append(args, "-p", h)
	}
	out, err = g.run(ctx, false, nil, args...)
	if err != nil {
		return "", "", err
	}
	return strings.TrimSpace(out), tree, nil
}

// childBaseEnv is the agent's environment without hangar's own variables and
// any Claude or git credential the agent itself may have been given.
func childBaseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "HANGAR_"),
			k == "ANTHROPIC_API_KEY", k == "ANTHROPIC_AUTH_TOKEN", k == "CLAUDE_CODE_OAUTH_TOKEN",
			k == "FLY_API_TOKEN", strings.HasPrefix(k, "GIT_CONFIG"):
			continue
		}
		env = append(env, kv)
	}
	return env
}
