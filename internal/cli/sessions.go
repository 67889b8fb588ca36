package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/hangarhq/hangar/internal/client"
	"github.com/hangarhq/hangar/internal/validate"
)

func sessionsCmd(e *env) *cobra.Command {
	c := group(e, &cobra.Command{
		Use:   "sessions <command>",
		Short: "create, list, show and end sessions",
	})
	c.AddCommand(sessionsCreateCmd(e), sessionsListCmd(e), sessionsShowCmd(e), sessionsEndCmd(e))
	return c
}

const createLong = `Starts a session on a machine of pool P. Without --repo the session starts in
an empty workspace; with it, the repo is cloned and the work is pushed to the
session branch (default hangar/<session id>) when the session ends.
The command after "--" replaces the pool's default (claude).

Credentials: your own ANTHROPIC_API_KEY, if set in your environment, is sent
as the session's credential (or CLAUDE_CODE_OAUTH_TOKEN, your own token from
"claude setup-token"); HANGAR_GIT_TOKEN, if set, is used for clone and push.
They travel only to your session's VM, are never stored, and die with it.
Without one, sign in with /login inside Claude Code. --no-credentials sends none.`

// createFlags are the flags of sessions create.
type createFlags struct {
	req                   client.CreateSessionRequest
	env                   keyValues
	author                string
	attach, wait, noCreds bool
}

func sessionsCreateCmd(e *env) *cobra.Command {
	f := &createFlags{env: keyValues{}}
	c := leaf(e, &cobra.Command{
		Use:   "create --pool P [flags] [-- CMD ARGS…]",
		Short: "start a session (see \"hangar sessions create -h\")",
		Long:  createLong,
	}, 0, 0, func(ctx context.Context, _, tail []string) error {
		return sessionsCreate(ctx, e, f, tail)
	})
	fs := c.Flags()
	fs.StringVar(&f.req.Pool, "pool", "", "the `POOL` to run on (required)")
	fs.StringVar(&f.req.Repo, "repo", "", "git repository `URL` to clone (https, ssh or file)")
	fs.StringVar(&f.req.Branch, "branch", "", "base `BRANCH` to start from")
	fs.StringVar(&f.req.SessionBranch, "session-branch", "", "the `BRANCH` the work is pushed to (default hangar/<session id>)")
	fs.StringVar(&f.req.Mode, "mode", "pty", "session `MODE`: pty (a terminal) or jsonl (Claude Code stream-json)")
	fs.StringVar(&f.req.Region, "region", "", "preferred `REGION`")
	fs.StringVar(&f.req.TenantImage, "tenant-image", "", "the pool's tenant `IMAGE` to use")
	fs.Var(f.env, "env", "extra environment `KEY=VALUE` for the command (repeatable)")
	fs.StringVar(&f.author, "git-author", "", "the `AUTHOR` of the final commit, \"Name <email>\"")
	fs.BoolVar(&f.attach, "attach", false, "attach this terminal to the session at once")
	fs.BoolVar(&f.wait, "wait", false, "wait until the session is ready (or failed) before printing it")
	fs.BoolVar(&f.noCreds, "no-credentials", false, "send no Claude credential even if one is set in the environment")
	_ = c.RegisterFlagCompletionFunc("pool", e.completePools)
	_ = c.RegisterFlagCompletionFunc("mode", cobra.FixedCompletions([]string{"pty", "jsonl"}, cobra.ShellCompDirectiveNoFileComp))
	return c
}

func sessionsCreate(ctx context.Context, e *env, f *createFlags, tail []string) error {
	req := f.req
	if req.Pool == "" {
		return usagef("sessions create: --pool is required")
	}
	if req.Mode != "pty" && req.Mode != "jsonl" {
		return usagef("sessions create: --mode must be pty or jsonl, got %q", req.Mode)
	}
	if f.author != "" {
		a, err := mail.ParseAddress(f.author)
		if err != nil {
			return usagef("sessions create: --git-author %q: want \"Name <email>\"", f.author)
		}
		req.GitAuthor = &client.GitAuthor{Name: a.Name, Email: a.Address}
	}
	if len(f.env) > 0 {
		req.Env = f.env
	}
	req.Command = tail
	// The daemon's own rules (package validate), checked here so that a
	// refused URL, and a token in one, never leaves this machine. file://
	// is the daemon's call (hangard dev allows it).
	if err := validateCreate(&req); err != nil {
		return usagef("sessions create: %v", err)
	}
	creds := &client.Credentials{GitToken: e.io.getenv("HANGAR_GIT_TOKEN")}
	if !f.noCreds {
		if k := e.io.getenv("ANTHROPIC_API_KEY"); k != "" {
			creds.AnthropicAPIKey = k
		} else if k := e.io.getenv("CLAUDE_CODE_OAUTH_TOKEN"); k != "" {
			creds.ClaudeOAuthToken = k
		}
	}
	if !creds.Empty() {
		req.Credentials = creds
	}
	if f, ok := e.io.Out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		if w, h, err := term.GetSize(int(f.Fd())); err == nil {
			req.Cols, req.Rows = w, h
		}
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	s, err := c.CreateSession(ctx, req)
	if err != nil {
		return err
	}
	if f.attach {
		fmt.Fprintf(e.io.Err, "[hangar] session %s created (pool %s); waiting for a machine…\r\n", s.ID, s.Pool)
		return attachTerminal(ctx, e, c, s.ID, s.Mode, false)
	}
	if f.wait && !client.Terminal(s.State) && s.State != client.StateReady {
		s, err = c.WaitSession(ctx, s.ID, 200*time.Millisecond, func(s *client.Session) bool {
			return s.State == client.StateReady || client.Terminal(s.State)
		})
		if err != nil {
			return err
		}
		if s.State != client.StateReady {
			// Scripts get the failed session's object; people get the error.
			if e.out.json {
				_ = e.out.print(apiJSON(s.Raw, s), nil)
			}
			return fmt.Errorf("session %s %s: %s", s.ID, s.State, s.Reason)
		}
	}
	return e.out.print(apiJSON(s.Raw, s), func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "%s\t%s\n", s.ID, s.State)
		return err
	})
}

// sessionStates are the states sessions ls --state takes.
var sessionStates = []string{"pending", "claiming", "starting", "ready", "ending", "ended", "failed"}

func sessionsListCmd(e *env) *cobra.Command {
	var state string
	c := leaf(e, &cobra.Command{
		Use:     "ls [--state S]",
		Aliases: []string{"list"},
		Short:   "list your sessions",
	}, 0, 0, func(ctx context.Context, _, _ []string) error {
		c, err := e.client()
		if err != nil {
			return err
		}
		list, err := c.ListSessions(ctx, state)
		if err != nil {
			return err
		}
		rows := make([]string, 0, len(list))
		for _, s := range list {
			rows = append(rows, row(s.ID, s.Pool, s.State, dash(s.Region), fmtTime(s.CreatedAt), fmt.Sprintf("$%.4f", s.CostUSD), dash(s.Repo)))
		}
		return e.out.table(apiJSONList(list), "ID\tPOOL\tSTATE\tREGION\tCREATED\tCOST\tREPO", rows)
	})
	c.Flags().StringVar(&state, "state", "", "only sessions in this `STATE` ("+strings.Join(sessionStates, ", ")+")")
	_ = c.RegisterFlagCompletionFunc("state", cobra.FixedCompletions(sessionStates, cobra.ShellCompDirectiveNoFileComp))
	return c
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sessionsShowCmd(e *env) *cobra.Command {
	c := leaf(e, &cobra.Command{
		Use:   "show ID",
		Short: "show one session",
	}, 1, 1, func(ctx context.Context, pos, _ []string) error {
		c, err := e.client()
		if err != nil {
			return err
		}
		s, err := c.GetSession(ctx, pos[0])
		if err != nil {
			return err
		}
		return e.printSession(s)
	})
	c.ValidArgsFunction = e.completeSessions
	return c
}

// printSession prints a session: the API's object, or one line per field
// that has a value.
func (e *env) printSession(s *client.Session) error {
	state := s.State
	if s.QueuePosition > 0 {
		state += fmt.Sprintf(" (queue position %d)", s.QueuePosition)
	}
	// Ready and ended say nothing until they happened; created is always
	// shown.
	optTime := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return fmtTime(t)
	}
	push, _ := pushSummary(s.Push)
	return e.out.fields(apiJSON(s.Raw, s), []field{
		{"id", s.ID},
		{"tenant", s.Tenant},
		{"pool", s.Pool},
		{"tenant image", s.TenantImage},
		{"region", s.Region},
		{"state", state},
		{"reason", s.Reason},
		{"mode", s.Mode},
		{"machine", s.MachineID},
		{"repo", s.Repo},
		{"branch", s.Branch},
		{"session branch", s.SessionBranch},
		{"created", fmtTime(s.CreatedAt)},
		{"ready", optTime(s.ReadyAt)},
		{"ended", optTime(s.EndedAt)},
		{"cost", fmt.Sprintf("$%.4f", s.CostUSD)},
		{"push", push},
	})
}

// pushSummary describes a session's push result for people, and says whether
// it is a failure (work that should have been pushed was not). A session
// without a repository has nothing to push: whether the agent reports that
// with ok=false (older agents) or ok=true, it is information, not a failure.
func pushSummary(p *client.Push) (text string, failed bool) {
	if p == nil || (p.Ref == "" && p.Commit == "" && p.Message == "") {
		return "", false
	}
	if noRepository(p) {
		return p.Message, false
	}
	if p.OK {
		if p.Commit == "" && p.Message != "" {
			return p.Message, false
		}
		return joinFields("pushed", p.Ref, short(p.Commit), paren(p.Message)), false
	}
	return joinFields("push FAILED", p.Ref, short(p.Commit), paren(p.Message)), true
}

// noRepository reports whether p is the agent's "no repository: nothing
// pushed" answer for a session that was started without a repo.
func noRepository(p *client.Push) bool {
	return p != nil && (p.Ref == "" || p.OK) && strings.Contains(strings.ToLower(p.Message), "no repository")
}

func joinFields(fields ...string) string {
	var parts []string
	for _, f := range fields {
		if f != "" {
			parts = append(parts, f)
		}
	}
	return strings.Join(parts, " ")
}

func paren(s string) string {
	if s == "" {
		return ""
	}
	return "(" + s + ")"
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

func sessionsEndCmd(e *env) *cobra.Command {
	var noWait bool
	var timeout time.Duration
	c := leaf(e, &cobra.Command{
		Use:   "end ID [--no-wait]",
		Short: "end a session: push its work, destroy its machine",
	}, 1, 1, func(ctx context.Context, pos, _ []string) error {
		c, err := e.client()
		if err != nil {
			return err
		}
		s, err := c.EndSession(ctx, pos[0])
		if err != nil {
			return err
		}
		if !noWait && !client.Terminal(s.State) {
			wctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			s, err = c.WaitSession(wctx, pos[0], 300*time.Millisecond, func(s *client.Session) bool { return client.Terminal(s.State) })
			if err != nil {
				return err
			}
		}
		if err := e.printSession(s); err != nil {
			return err
		}
		if _, failed := pushSummary(s.Push); failed {
			return errors.New("the session ended but its work was not pushed: " + s.Push.Message)
		}
		return nil
	})
	c.Flags().BoolVar(&noWait, "no-wait", false, "return once the request is accepted, without waiting for the push")
	c.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long (a `DURATION` such as 90s) to wait for the session to end")
	c.ValidArgsFunction = e.completeSessions
	return c
}

// validateCreate applies package validate to the fields the daemon checks
// the same way.
func validateCreate(req *client.CreateSessionRequest) error {
	if req.Repo != "" {
		if err := validate.RepoURL(req.Repo, validate.RepoPolicy{AllowFile: true}); err != nil {
			return fmt.Errorf("--repo: %w", err)
		}
	}
	for flag, b := range map[string]string{"--branch": req.Branch, "--session-branch": req.SessionBranch} {
		if b != "" {
			if err := validate.Branch(b); err != nil {
				return fmt.Errorf("%s: %w", flag, err)
			}
		}
	}
	if err := validate.Env(req.Env); err != nil {
		return fmt.Errorf("--env: %w", err)
	}
	if err := validate.Command(req.Command); err != nil {
		return fmt.Errorf("command: %w", err)
	}
	return nil
}
