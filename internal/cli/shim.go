package cli

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// normalizeArgs rewrites the single-dash long flags that hangar accepted
// while it parsed its command line with Go's flag package (-pool dev,
// -output=json, -attach) into the --name form that cobra understands, so
// that scripts written then keep working. --name is the form to use.
//
// The rules, applied to args in order:
//   - an argument "-name" or "-name=value", where name is a long flag of the
//     command named so far (its own flags, the global flags or help), becomes
//     "--name" or "--name=value";
//   - the argument after a flag that takes a value ("--pool dev", "-pool dev")
//     is that value and is never rewritten;
//   - nothing after "--" is touched: it is the remote command; a "--" before
//     the command name only ended the global flags (Go's flag package read
//     "hangar -- sessions ls" so) and is dropped;
//   - anything else (positional arguments, "-h", unknown flags, "-") is left
//     as it is, for cobra to accept or refuse.
//
// The command is followed the way cobra finds it: the first positional
// argument at each level that names a subcommand (or an alias of one) moves
// down to that subcommand. Shell completion requests (hangar __complete …)
// are normalized after their first word.
func normalizeArgs(root *cobra.Command, args []string) []string {
	out := make([]string, 0, len(args)) // never nil: cobra reads os.Args on nil
	if len(args) > 0 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd) {
		out = append(out, args[0])
		args = args[1:]
	}
	cmd := root
	descend := true // until a positional argument names no subcommand
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if cmd == root && descend {
				continue
			}
			return append(out, args[i:]...)
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a[1:], "=")
			if lookupFlag(cmd, name) != nil {
				a = "-" + a
			}
		}
		out = append(out, a)
		switch {
		case strings.HasPrefix(a, "--"):
			name, _, hasValue := strings.Cut(a[2:], "=")
			if f := lookupFlag(cmd, name); f != nil && !hasValue && f.NoOptDefVal == "" && i+1 < len(args) {
				i++
				out = append(out, args[i]) // the flag's value, verbatim
			}
		case !strings.HasPrefix(a, "-") && descend:
			if sub := subcommand(cmd, a); sub != nil {
				cmd = sub
			} else {
				descend = false
			}
		}
	}
	return out
}

// lookupFlag finds the long flag name among cmd's own flags and the
// persistent flags of cmd and its parents; help is known to every command
// (cobra adds it only when the command runs).
func lookupFlag(cmd *cobra.Command, name string) *pflag.Flag {
	if name == "help" {
		return &pflag.Flag{Name: "help", NoOptDefVal: "true"}
	}
	if f := cmd.Flags().Lookup(name); f != nil {
		return f
	}
	for c := cmd; c != nil; c = c.Parent() {
		if f := c.PersistentFlags().Lookup(name); f != nil {
			return f
		}
	}
	return nil
}

// subcommand returns the subcommand of cmd that name or an alias names.
func subcommand(cmd *cobra.Command, name string) *cobra.Command {
	for _, c := range cmd.Commands() {
		if c.Name() == name || c.HasAlias(name) {
			return c
		}
	}
	return nil
}
