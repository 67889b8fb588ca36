package cli

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/hangarhq/hangar/internal/client"
	"github.com/hangarhq/hangar/internal/validate"
)

const sessionsUsage = `usage: hangar sessions <command>

  create --pool P [flags] [-- CMD ARGS…]   start a session (see "hangar sessions create -h")
  ls [--state S]                           list your sessions
  show ID                                  show one session
  end ID [--no-wait]                       end a session: push its work, destroy its machine
`

func runSessions(ctx context.Context, e *env, args []string) error {
	return dispatch(ctx, e, "sessions", args, map[string]func(context.Context, *env, []string) error{
		"create": sessionsCreate,
		"ls":     sessionsList,
		"list":   sessionsList,
		"show":   sessionsShow,
		"end":    sessionsEnd,
	}, sessionsUsage)
}

const createHelp = `usage: hangar sessions create --pool P [flags] [-- CMD ARGS…]

Starts a session on a machine of pool P. Without --repo the session starts in
an empty workspace; with it, the repo is cloned and the work is pushed to the
session branch (default hangar/<session id>) when the session ends.
The command after "--" replaces the pool's default (claude).

Credentials: your own ANTHROPIC_API_KEY, if set in your environment, is sent
as the session's credential (or CLAUDE_CODE_OAUTH_TOKEN, your own token from
"claude setup-token"); HANGAR_GIT_TOKEN, if set, is used for clone and push.
They travel only to your session's VM, are never stored, and die with it.
Without one, sign in with /login inside Claude Code. --no-credentials sends none.

flags:
`

func sessionsCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("sessions create")
	var req client.CreateSessionRequest
	envs := keyValues{}
	var attach, noCreds, wait bool
	var author string
	fs.StringVar(&req.Pool, "pool", "", "pool to run on (required)")
	fs.StringVar(&req.Repo, "repo", "", "git repository URL to clone (https, ssh or file)")
	fs.StringVar(&req.Branch, "branch", "", "base branch to start from")
	fs.StringVar(&req.SessionBranch, "session-branch", "", "branch the work is pushed to (default hangar/<session id>)")
	fs.StringVar(&req.Mode, "mode", "pty", "pty (a terminal) or jsonl (Claude Code stream-json)")
	fs.StringVar(&req.Region, "region", "", "preferred region")
	fs.StringVar(&req.TenantImage, "tenant-image", "", "tenant image of the pool to use")
	fs.Var(envs, "env", "extra environment KEY=VALUE for the command (repeatable)")
	fs.StringVar(&author, "git-author", "", `author of the final commit, "Name <email>"`)
	fs.BoolVar(&attach, "attach", false, "attach this terminal to the session at once")
	fs.BoolVar(&wait, "wait", false, "wait until the session is ready (or failed) before printing it")
	fs.BoolVar(&noCreds, "no-credentials", false, "send no Claude credential even if one is set in the environment")
	fs.Usage = func() { fmt.Fprint(fs.Output(), createHelp); fs.PrintDefaults() }
	_, tail, err := e.parse(fs, args, 0, 0)
	if err != nil {
		return err
	}
	if req.Pool == "" {
		return usagef("sessions create: --pool is required")
	}
	if req.Mode != "pty" && req.Mode != "jsonl" {
		return usagef("sessions create: --mode must be pty or jsonl, got %q", req.Mode)
	}
	if author != "" {
		a, err := mail.ParseAddress(author)
		if err != nil {
			return usagef("sessions create: --git-author %q: want \"Name <email>\"", author)
		}
		req.GitAuthor = &client.GitAuthor{Name: a.Name, Email: a.Address}
	}
	if len(envs) > 0 {
		req.Env = envs
	}
	req.Command = tail
	// The daemon's own rules (package validate), checked here so that a
	// refused URL, and a token in one, never leaves this machine. file://
	// is the daemon's call (hangard dev allows it).
	if err := validateCreate(&req); err != nil {
		return usagef("sessions create: %v", err)
	}
	creds := &client.Credentials{GitToken: e.io.getenv("HANGAR_GIT_TOKEN")}
	if !noCreds {
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
	if !attach {
		if wait && !client.Terminal(s.State) && s.State != client.StateReady {
			s, err = c.WaitSession(ctx, s.ID, 200*time.Millisecond, func(s *client.Session) bool {
				return s.State == client.StateReady || client.Terminal(s.State)
			})
			if err != nil {
				return err
			}
			if s.State != client.StateReady {
				if e.json() {
					_ = e.printJSON(apiJSON(s.Raw, s))
				}
				return fmt.Errorf("session %s %s: %s", s.ID, s.State, s.Reason)
			}
		}
		if e.json() {
			return e.printJSON(apiJSON(s.Raw, s))
		}
		fmt.Fprintf(e.io.Out, "%s\t%s\n", s.ID, s.State)
		return nil
	}
	fmt.Fprintf(e.io.Err, "[hangar] session %s created (pool %s); waiting for a machine…\r\n", s.ID, s.Pool)
	return attachTerminal(ctx, e, c, s.ID, s.Mode, false)
}

func sessionsList(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("sessions ls")
	state := fs.String("state", "", "only sessions in this state (pending, claiming, starting, ready, ending, ended, failed)")
	if _, _, err := e.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	list, err := c.ListSessions(ctx, *state)
	if err != nil {
		return err
	}
	if e.json() {
		return e.printJSON(apiJSONList(list))
	}
	tw := tabwriter.NewWriter(e.io.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPOOL\tSTATE\tREGION\tCREATED\tCOST\tREPO")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t$%.4f\t%s\n", s.ID, s.Pool, s.State, dash(s.Region), fmtTime(s.CreatedAt), s.CostUSD, dash(s.Repo))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sessionsShow(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("sessions show")
	pos, _, err := e.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	s, err := c.GetSession(ctx, pos[0])
	if err != nil {
		return err
	}
	return e.printSession(s)
}

func (e *env) printSession(s *client.Session) error {
	if e.json() {
		return e.printJSON(apiJSON(s.Raw, s))
	}
	tw := tabwriter.NewWriter(e.io.Out, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("id", s.ID)
	row("tenant", s.Tenant)
	row("pool", s.Pool)
	row("tenant image", s.TenantImage)
	row("region", s.Region)
	state := s.State
	if s.QueuePosition > 0 {
		state += fmt.Sprintf(" (queue position %d)", s.QueuePosition)
	}
	row("state", state)
	row("reason", s.Reason)
	row("mode", s.Mode)
	row("machine", s.MachineID)
	row("repo", s.Repo)
	row("branch", s.Branch)
	row("session branch", s.SessionBranch)
	row("created", fmtTime(s.CreatedAt))
	if s.ReadyAt != nil {
		row("ready", fmtTime(s.ReadyAt))
	}
	if s.EndedAt != nil {
		row("ended", fmtTime(s.EndedAt))
	}
	row("cost", fmt.Sprintf("$%.4f", s.CostUSD))
	if text, _ := pushSummary(s.Push); text != "" {
		row("push", text)
	}
	return tw.Flush()
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

func sessionsEnd(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("sessions end")
	noWait := fs.Bool("no-wait", false, "return once the request is accepted, without waiting for the push")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the session to end")
	pos, _, err := e.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	s, err := c.EndSession(ctx, pos[0])
	if err != nil {
		return err
	}
	if !*noWait && !client.Terminal(s.State) {
		wctx, cancel := context.WithTimeout(ctx, *timeout)
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
