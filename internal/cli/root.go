package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func init() {
	// Commands are listed in the order they are added (the order people
	// use them in: create, ls, show, end), not alphabetically.
	cobra.EnableCommandSorting = false
}

const rootLong = `hangar — run Claude Code sessions on hangar (one Fly Machine per session)`

const rootExample = `  hangar --env-file .demo/data sessions create --pool dev --attach -- bash
  hangar sessions ls --state ready
  hangar attach SESSION_ID
  source <(hangar completion bash)`

// flagNote is the root help's word on how flags are written.
const flagNote = `Flags are written --name VALUE or --name=VALUE, before or after the arguments;
"--" ends the flags. (The single-dash -name of older versions is still accepted.)`

// newRootCmd builds the hangar command tree around e, whose fields the
// global flags fill. Its commands print through e.out (see leaf), report
// mistakes on the command line as usage errors (exit status 2, see Main)
// and print their help on the streams hangar always used (see the help
// func below).
func newRootCmd(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:     "hangar [global flags] <command> [flags] [args]",
		Short:   "run Claude Code sessions on hangar",
		Long:    rootLong,
		Example: rootExample,
		Args:    cobra.ArbitraryArgs,
		// Main prints errors and the hint to run hangar help itself.
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				writeHelp(e.io.Err, c)
				return &exitError{2}
			}
			return usagef("unknown command %q", args[0])
		},
	}
	root.SetIn(e.io.In)
	root.SetOut(e.io.Out)
	root.SetErr(e.io.Err)

	pf := root.PersistentFlags()
	pf.SortFlags = false
	pf.StringVar(&e.url, "url", "", "hangard `URL` (env HANGAR_URL)")
	pf.StringVar(&e.token, "token", "", "tenant API `KEY` (env HANGAR_TOKEN)")
	pf.StringVar(&e.adminToken, "admin-token", "", "admin `KEY` for tenant commands (env HANGAR_ADMIN_TOKEN)")
	pf.StringVar(&e.envFile, "env-file", "", "read HANGAR_URL, HANGAR_TOKEN, HANGAR_ADMIN_TOKEN from `PATH`, such as DIR/dev.env\n"+
		`written by "hangard dev" (a directory means DIR/dev.env)`)
	pf.StringVar(&e.output, "output", "text", "print results as `FORMAT`: text or json (json for scripts)")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))

	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		if !c.HasParent() {
			return usagef("%s", goFlagError(err))
		}
		return usagef("%s: %s", cmdName(c), goFlagError(err))
	})
	root.SetHelpFunc(func(c *cobra.Command, _ []string) {
		// -h and --help print where Go's flag package printed them:
		// stderr, except for groups (sessions, tenants, completion), whose
		// help hangar always printed on stdout.
		w := e.io.Err
		if c.HasParent() && c.HasAvailableSubCommands() {
			w = e.io.Out
		}
		writeHelp(w, c)
	})
	root.SetHelpCommand(&cobra.Command{
		Use:   "help [command]",
		Short: "show help for hangar or one of its commands",
		Args:  cobra.ArbitraryArgs,
		RunE: func(_ *cobra.Command, args []string) error {
			target, _, err := root.Find(args)
			if err != nil || target == nil {
				target = root
			}
			writeHelp(e.io.Out, target)
			return nil
		},
		ValidArgsFunction: completeCommands,
	})

	root.AddCommand(
		sessionsCmd(e),
		attachCmd(e),
		poolsCmd(e),
		tenantsCmd(e),
		versionCmd(),
	)
	// Made here rather than on the first Execute so that the shim sees its
	// commands and usage mistakes in it exit 2 like everywhere else.
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			group(e, c)
			c.Use = "completion <shell>"
			c.Short = "print a shell completion script (bash, zsh, fish, powershell)"
			for _, sh := range c.Commands() {
				sh.Args = positional(0, 0)
				sh.Short = "print the completion script for " + sh.Name()
			}
		}
	}
	return root
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version",
		// hangar version ignored whatever followed it; it still does.
		DisableFlagParsing: true,
		Args:               cobra.ArbitraryArgs,
		Run: func(c *cobra.Command, _ []string) {
			fmt.Fprintln(c.OutOrStdout(), "hangar", Version)
		},
	}
}

// group makes c a command group: without a subcommand it prints its help on
// stderr and exits 2, "help" prints it on stdout, anything else is an
// unknown command.
func group(e *env, c *cobra.Command) *cobra.Command {
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(c *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			writeHelp(e.io.Err, c)
			return &exitError{2}
		case args[0] == "help":
			writeHelp(e.io.Out, c)
			return nil
		}
		return usagef("unknown command \"%s %s\"", cmdName(c), args[0])
	}
	return c
}

// leaf makes c a command that checks its positional arguments (at least
// minPos, at most maxPos, -1 for any) and --output, then runs fn with the
// positional arguments and those after "--".
func leaf(e *env, c *cobra.Command, minPos, maxPos int, fn func(ctx context.Context, pos, tail []string) error) *cobra.Command {
	c.Flags().SortFlags = false
	c.Args = positional(minPos, maxPos)
	c.RunE = func(c *cobra.Command, args []string) error {
		out, err := newPrinter(e.output, e.io.Out)
		if err != nil {
			return err
		}
		e.out = out
		pos, tail := splitDash(c, args)
		return fn(c.Context(), pos, tail)
	}
	return c
}

// splitDash splits a command's arguments at "--": those after it are not
// positional arguments but the remote command.
func splitDash(c *cobra.Command, args []string) (pos, tail []string) {
	if n := c.ArgsLenAtDash(); n >= 0 {
		return args[:n], args[n:]
	}
	return args, nil
}

// positional checks the number of positional arguments (those before "--").
func positional(minPos, maxPos int) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		pos, _ := splitDash(c, args)
		name := cmdName(c)
		switch {
		case len(pos) >= minPos && (maxPos < 0 || len(pos) <= maxPos):
			return nil
		case maxPos == 0:
			return usagef("%s takes no arguments, got %q", name, strings.Join(pos, " "))
		case len(pos) < minPos:
			return usagef("%s: missing argument (see %s -h)", name, name)
		}
		return usagef("%s: unexpected arguments %q", name, strings.Join(pos[maxPos:], " "))
	}
}

// cmdName is how messages name c: its path without "hangar", or the name
// its "name" annotation gives (pools is pools ls).
func cmdName(c *cobra.Command) string {
	if n := c.Annotations["name"]; n != "" {
		return n
	}
	return strings.TrimPrefix(c.CommandPath(), c.Root().Name()+" ")
}

// goFlagError words a flag parsing error as Go's flag package did, the
// words hangar's users and scripts have seen ("flag provided but not
// defined: -x").
func goFlagError(err error) string {
	var (
		notExist *pflag.NotExistError
		noValue  *pflag.ValueRequiredError
		invalid  *pflag.InvalidValueError
	)
	switch {
	case errors.As(err, &notExist):
		name := notExist.GetSpecifiedName()
		if s := notExist.GetSpecifiedShortnames(); s != "" {
			name = s
		}
		return "flag provided but not defined: -" + name
	case errors.As(err, &noValue):
		return "flag needs an argument: -" + noValue.GetFlag().Name
	case errors.As(err, &invalid):
		f := invalid.GetFlag()
		cause := invalid.Unwrap()
		var ne *strconv.NumError
		switch {
		case errors.As(cause, &ne) && errors.Is(ne.Err, strconv.ErrRange):
			cause = errors.New("value out of range")
		case f.Value.Type() == "bool" || f.Value.Type() == "int" || f.Value.Type() == "duration":
			cause = errors.New("parse error")
		}
		if f.Value.Type() == "bool" {
			return fmt.Sprintf("invalid boolean value %q for -%s: %v", invalid.GetValue(), f.Name, cause)
		}
		return fmt.Sprintf("invalid value %q for flag -%s: %v", invalid.GetValue(), f.Name, cause)
	}
	return err.Error()
}

// writeHelp writes c's help: what it does, its usage line, its commands,
// its flags and the global ones, examples.
func writeHelp(w io.Writer, c *cobra.Command) {
	var b strings.Builder
	text := c.Long
	if text == "" {
		text = c.Short
	}
	if text != "" {
		b.WriteString(strings.TrimRight(text, "\n") + "\n\n")
	}
	use := c.Use
	if c.HasParent() {
		use = c.Parent().CommandPath() + " " + c.Use
	}
	fmt.Fprintf(&b, "usage: %s\n", use)
	if len(c.Aliases) > 0 {
		fmt.Fprintf(&b, "aliases: %s\n", strings.Join(append([]string{c.Name()}, c.Aliases...), ", "))
	}

	var subs []*cobra.Command
	width := 0
	for _, s := range c.Commands() {
		if s.IsAvailableCommand() || s.Name() == "help" {
			subs = append(subs, s)
			if n := len(subUse(c, s)); n <= 40 {
				width = max(width, n)
			}
		}
	}
	if len(subs) > 0 {
		b.WriteString("\ncommands:\n")
		for _, s := range subs {
			u := subUse(c, s)
			if len(u) > width {
				fmt.Fprintf(&b, "  %s\n  %-*s  %s\n", u, width, "", s.Short)
				continue
			}
			fmt.Fprintf(&b, "  %-*s  %s\n", width, u, s.Short)
		}
	}

	root := c.Root()
	local := pflag.NewFlagSet(c.Name(), pflag.ContinueOnError)
	local.SortFlags = false
	c.InitDefaultHelpFlag() // cobra adds -h only when c runs; hangar help NAME did not run it
	c.Flags().VisitAll(func(f *pflag.Flag) {
		if root.PersistentFlags().Lookup(f.Name) == nil {
			local.AddFlag(f)
		}
	})
	if local.HasAvailableFlags() && !c.DisableFlagParsing {
		fmt.Fprintf(&b, "\nflags:\n%s", local.FlagUsages())
	}
	if !c.DisableFlagParsing {
		fmt.Fprintf(&b, "\nglobal flags (also accepted after the command):\n%s", root.PersistentFlags().FlagUsages())
	}
	if c.Example != "" {
		fmt.Fprintf(&b, "\nexamples:\n%s\n", strings.TrimRight(c.Example, "\n"))
	}
	if !c.HasParent() {
		fmt.Fprintf(&b, "\n%s\n", flagNote)
	}
	if len(subs) > 0 {
		fmt.Fprintf(&b, "\nRun \"%s <command> --help\" for a command's help.\n", c.CommandPath())
	}
	fmt.Fprint(w, b.String())
}

// subUse is how a command list shows sub: its usage synopsis within a
// group ("show ID"), its name at the top.
func subUse(parent, sub *cobra.Command) string {
	if !parent.HasParent() {
		return sub.Name()
	}
	return sub.Use
}

// completeCommands completes the command names that hangar help takes.
func completeCommands(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	target, _, err := c.Root().Find(args)
	if err != nil || target == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, s := range target.Commands() {
		if s.IsAvailableCommand() && strings.HasPrefix(s.Name(), toComplete) {
			out = append(out, cobra.CompletionWithDesc(s.Name(), s.Short))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
