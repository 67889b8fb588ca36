package cli

import (
	"strings"
	"testing"
)

// TestUsageErrors: a mistake on the command line is one line naming it, a
// hint to run hangar help, exit status 2 and nothing on stdout.
func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		msg  string
	}{
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"tenants", "frob"}, `unknown command "tenants frob"`},
		{[]string{"completion", "tcsh"}, `unknown command "completion tcsh"`},
		{[]string{"--colour", "pools"}, "flag provided but not defined: -colour"},
		{[]string{"sessions", "ls", "--colour"}, "sessions ls: flag provided but not defined: -colour"},
		{[]string{"sessions", "ls", "-x"}, "sessions ls: flag provided but not defined: -x"},
		{[]string{"sessions", "create", "--pool"}, "sessions create: flag needs an argument: -pool"},
		{[]string{"sessions", "create", "--pool", "dev", "--env", "x"}, `sessions create: invalid value "x" for flag -env: want KEY=VALUE, got "x"`},
		{[]string{"sessions", "create", "--pool", "dev", "--attach=maybe"}, `sessions create: invalid boolean value "maybe" for -attach: parse error`},
		{[]string{"sessions", "end", "s1", "--timeout", "soon"}, `sessions end: invalid value "soon" for flag -timeout: parse error`},
		{[]string{"tenants", "create", "t", "--max-sessions", "many"}, `tenants create: invalid value "many" for flag -max-sessions: parse error`},
		{[]string{"tenants", "create", "t", "--max-sessions", "-1"}, "tenants create: --max-sessions must not be negative"},
		{[]string{"sessions", "ls", "x"}, `sessions ls takes no arguments, got "x"`},
		{[]string{"pools", "x"}, `pools ls takes no arguments, got "x"`},
		{[]string{"attach"}, "attach: missing argument (see attach -h)"},
		{[]string{"tenants", "rm", "a", "b", "c"}, `tenants rm: unexpected arguments "b c"`},
		{[]string{"pools", "--output", "yaml"}, `--output must be text or json, got "yaml"`},
		{[]string{"completion", "bash", "extra"}, `completion bash takes no arguments, got "extra"`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(t, map[string]string{}, tc.args...)
			want := "hangar: " + tc.msg + "\n(run \"hangar help\" for usage)\n"
			if r.code != 2 || r.stderr != want || r.stdout != "" {
				t.Errorf("exit %d stdout %q stderr\n%q\nwant exit 2 and\n%q", r.code, r.stdout, r.stderr, want)
			}
		})
	}
}

// TestHelp: help comes where it always came (hangar help and the groups'
// on stdout, -h of hangar and of a command on stderr), with exit status 0;
// a command line that names no command (or a group without its
// subcommand) gets the help on stderr and exit status 2.
func TestHelp(t *testing.T) {
	cases := []struct {
		args   []string
		code   int
		stdout bool
		want   []string
	}{
		{[]string{"help"}, 0, true, []string{"usage: hangar [global flags] <command>", "sessions", "completion", "--env-file PATH", "--name VALUE or --name=VALUE"}},
		{[]string{"help", "sessions", "create"}, 0, true, []string{"usage: hangar sessions create --pool P", "--pool POOL"}},
		{[]string{"help", "bogus"}, 0, true, []string{"usage: hangar [global flags]"}},
		{[]string{"-h"}, 0, false, []string{"usage: hangar [global flags]", "global flags (also accepted after the command)"}},
		{[]string{"--help"}, 0, false, []string{"usage: hangar [global flags]"}},
		{[]string{"-help"}, 0, false, []string{"usage: hangar [global flags]"}},
		{nil, 2, false, []string{"usage: hangar [global flags]"}},
		{[]string{"--output", "json"}, 2, false, []string{"usage: hangar [global flags]"}},
		{[]string{"sessions"}, 2, false, []string{"usage: hangar sessions <command>", "show ID", "end ID [--no-wait]"}},
		{[]string{"sessions", "-h"}, 0, true, []string{"usage: hangar sessions <command>"}},
		{[]string{"sessions", "help"}, 0, true, []string{"usage: hangar sessions <command>"}},
		{[]string{"tenants", "--help"}, 0, true, []string{"usage: hangar tenants <command>", "HANGAR_ADMIN_TOKEN", "rotate ID|NAME"}},
		{[]string{"sessions", "create", "-h"}, 0, false, []string{"Credentials:", "--pool POOL", "--no-credentials", "--output FORMAT"}},
		{[]string{"sessions", "ls", "--help"}, 0, false, []string{"usage: hangar sessions ls", "aliases: ls, list", "--state STATE"}},
		{[]string{"attach", "-h"}, 0, false, []string{"Escapes (after Enter)", "--ro"}},
		{[]string{"pools", "-h"}, 0, false, []string{"usage: hangar pools [ls]"}},
		{[]string{"completion"}, 2, false, []string{"usage: hangar completion <shell>", "bash", "powershell"}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(t, map[string]string{}, tc.args...)
			got, other := r.stderr, r.stdout
			if tc.stdout {
				got, other = r.stdout, r.stderr
			}
			if r.code != tc.code || other != "" {
				t.Errorf("exit %d, want %d; on the other stream: %q", r.code, tc.code, other)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("help does not contain %q:\n%s", w, got)
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	old := Version
	Version = "v1.2.3-test"
	t.Cleanup(func() { Version = old })
	// hangar version ignores what follows it, as it always did.
	for _, args := range [][]string{{"version"}, {"version", "--bogus", "-h"}, {"--output", "json", "version"}} {
		r := runCLI(t, nil, args...)
		if r.code != 0 || r.stdout != "hangar v1.2.3-test\n" || r.stderr != "" {
			t.Errorf("%q: exit %d stdout %q stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
}

// TestCompletion: hangar completion SHELL prints cobra's script for hangar;
// the script's requests (hangar __complete …) are answered with commands,
// fixed flag values, and names read from the daemon.
func TestCompletion(t *testing.T) {
	for _, sh := range []struct{ name, marker string }{
		{"bash", "complete -o default -F __start_hangar hangar"},
		{"zsh", "#compdef hangar"},
		{"fish", "complete -c hangar"},
		{"powershell", "Register-ArgumentCompleter"},
	} {
		r := runCLI(t, nil, "completion", sh.name)
		if r.code != 0 || !strings.Contains(r.stdout, sh.marker) || !strings.Contains(r.stdout, "__complete") {
			t.Errorf("completion %s: exit %d stderr %q, script without %q:\n%.300s", sh.name, r.code, r.stderr, sh.marker, r.stdout)
		}
	}

	_, env := startFake(t, map[string]answer{
		"GET /v1/sessions": {body: `[{"id":"s1","pool":"dev","state":"ready"},{"id":"x2","pool":"big","state":"ended"}]`},
		"GET /v1/pools":    {body: `[{"name":"dev"},{"name":"big"}]`},
		"GET /v1/tenants":  {body: `[{"id":"t1","name":"acme"}]`},
	})
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{""}, []string{"sessions\tcreate, list, show and end sessions", "attach\t", "completion\t"}},
		{[]string{"sessions", ""}, []string{"create\t", "ls\t", "show\t", "end\t"}},
		{[]string{"sessions", "create", "--mode", ""}, []string{"pty", "jsonl"}},
		{[]string{"pools", "--output", ""}, []string{"text", "json"}},
		{[]string{"sessions", "create", "--pool", ""}, []string{"dev", "big"}},
		{[]string{"sessions", "create", "-pool", "b"}, []string{"big"}},
		{[]string{"attach", "s"}, []string{"s1\tdev ready"}},
		{[]string{"sessions", "end", ""}, []string{"s1\tdev ready", "x2\tbig ended"}},
		{[]string{"tenants", "rotate", ""}, []string{"acme\tt1"}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(t, env, append([]string{"__complete"}, tc.args...)...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("completions %q lack %q", r.stdout, w)
				}
			}
		})
	}
	if r := runCLI(t, env, "__complete", "attach", "x"); strings.Contains(r.stdout, "s1") {
		t.Errorf("completions of x: %q", r.stdout)
	}
}
