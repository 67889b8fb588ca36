// Package cli implements the hangar command line: session, attach, pool and
// tenant commands on top of internal/client. cmd/hangar only calls Main.
package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hangarhq/hangar/internal/client"
	"github.com/hangarhq/hangar/internal/version"
)

// IO is where a command reads and writes; Main uses the process's own.
type IO struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
	// Getenv reads the environment (os.Getenv when nil).
	Getenv func(string) string
}

func (s *IO) getenv(k string) string {
	if s.Getenv != nil {
		return s.Getenv(k)
	}
	return os.Getenv(k)
}

// exitError carries a process exit status (e.g. the remote process's).
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// usageError is a mistake on the command line (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// commands are the top-level commands; groups (sessions, tenants, pools)
// dispatch again on their first argument.
var commands = []command{
	{"sessions", "create, list, show and end sessions", runSessions},
	{"attach", "attach this terminal to a session", runAttach},
	{"pools", "list the pools you may use", runPools},
	{"tenants", "manage tenants (admin key)", runTenants},
	{"version", "print the version", func(_ context.Context, e *env, _ []string) error {
		fmt.Fprintln(e.io.Out, "hangar", Version)
		return nil
	}},
}

// Version is what `hangar version` prints: the release version stamped
// into internal/version at build time (tests may override it).
var Version = version.Get()

const topUsage = `hangar — run Claude Code sessions on hangar (one Fly Machine per session)

usage: hangar [global flags] <command> [flags] [args]

commands:
%s
global flags (also accepted after the command):
  --url URL            hangard URL (env HANGAR_URL)
  --token KEY          tenant API key (env HANGAR_TOKEN)
  --admin-token KEY    admin key for tenant commands (env HANGAR_ADMIN_TOKEN)
  --env-file PATH      read HANGAR_URL, HANGAR_TOKEN, HANGAR_ADMIN_TOKEN from a file
                       such as DIR/dev.env written by "hangard dev" (a directory
                       means DIR/dev.env)
  --output text|json   output format (json for scripts)

examples:
  hangar --env-file .demo/data sessions create --pool dev --attach -- bash
  hangar sessions ls --state ready
  hangar attach SESSION_ID
`

func printUsage(w io.Writer) {
	var b strings.Builder
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, topUsage, b.String())
}

// Main runs the hangar command line and returns the process exit status.
func Main(ctx context.Context, args []string, stdio IO) int {
	err := run(ctx, args, &stdio)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stdio.Err, "hangar: %s\n(run \"hangar help\" for usage)\n", ue.msg)
		return 2
	}
	fmt.Fprintf(stdio.Err, "hangar: %v\n", err)
	return 1
}

func run(ctx context.Context, args []string, stdio *IO) error {
	e := &env{io: stdio}
	// Global flags may come before the command.
	fs := e.flagSet("hangar")
	fs.Usage = func() { printUsage(stdio.Err) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		printUsage(stdio.Err)
		return &exitError{2}
	}
	if rest[0] == "help" {
		printUsage(stdio.Out)
		return nil
	}
	for _, c := range commands {
		if c.name == rest[0] {
			return c.run(ctx, e, rest[1:])
		}
	}
	return usagef("unknown command %q", rest[0])
}

// env holds the global settings shared by every command.
type env struct {
	io         *IO
	url        string
	token      string
	adminToken string
	envFile    string
	output     string
}

// flagSet returns a FlagSet with the global flags registered on it, so that
// they are accepted before and after a command name.
func (e *env) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.io.Err)
	fs.StringVar(&e.url, "url", e.url, "hangard URL (env HANGAR_URL)")
	fs.StringVar(&e.token, "token", e.token, "tenant API key (env HANGAR_TOKEN)")
	fs.StringVar(&e.adminToken, "admin-token", e.adminToken, "admin key (env HANGAR_ADMIN_TOKEN)")
	fs.StringVar(&e.envFile, "env-file", e.envFile, "file (or directory holding dev.env) with HANGAR_URL, HANGAR_TOKEN, HANGAR_ADMIN_TOKEN")
	fs.StringVar(&e.output, "output", e.output, "output format: text or json")
	return fs
}

// parse parses flags that may be interleaved with positional arguments; an
// argument "--" ends flag parsing and everything after it is returned as
// tail. It checks the positional count against min and max (-1: any).
func (e *env) parse(fs *flag.FlagSet, args []string, minPos, maxPos int) (pos, tail []string, err error) {
	for i, a := range args {
		if a == "--" {
			args, tail = args[:i], append([]string{}, args[i+1:]...)
			break
		}
	}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, nil, err
			}
			return nil, nil, usagef("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) < minPos || (maxPos >= 0 && len(pos) > maxPos) {
		switch {
		case maxPos == 0:
			return nil, nil, usagef("%s takes no arguments, got %q", fs.Name(), strings.Join(pos, " "))
		case len(pos) < minPos:
			return nil, nil, usagef("%s: missing argument (see %s -h)", fs.Name(), fs.Name())
		default:
			return nil, nil, usagef("%s: unexpected arguments %q", fs.Name(), strings.Join(pos[maxPos:], " "))
		}
	}
	if e.output != "" && e.output != "text" && e.output != "json" {
		return nil, nil, usagef("--output must be text or json, got %q", e.output)
	}
	return pos, tail, nil
}

func (e *env) json() bool { return e.output == "json" }

// settings resolves URL and keys: flags first, then --env-file, then the
// environment.
func (e *env) settings() (url, token, admin string, err error) {
	file := map[string]string{}
	if e.envFile != "" {
		file, err = readEnvFile(e.envFile)
		if err != nil {
			return "", "", "", err
		}
	}
	pick := func(flagVal, key string) string {
		if flagVal != "" {
			return flagVal
		}
		if v := file[key]; v != "" {
			return v
		}
		return e.io.getenv(key)
	}
	return pick(e.url, "HANGAR_URL"), pick(e.token, "HANGAR_TOKEN"), pick(e.adminToken, "HANGAR_ADMIN_TOKEN"), nil
}

// client returns an API client authenticated with the tenant key.
func (e *env) client() (*client.Client, error) {
	u, tok, _, err := e.settings()
	if err != nil {
		return nil, err
	}
	if tok == "" {
		return nil, errors.New("no API key: set HANGAR_TOKEN, pass --token, or --env-file DIR/dev.env")
	}
	return client.New(u, tok, nil)
}

// adminClient returns an API client authenticated with the admin key.
func (e *env) adminClient() (*client.Client, error) {
	u, _, admin, err := e.settings()
	if err != nil {
		return nil, err
	}
	if admin == "" {
		return nil, errors.New("no admin key: set HANGAR_ADMIN_TOKEN, pass --admin-token, or --env-file DIR/dev.env")
	}
	return client.New(u, admin, nil)
}

// readEnvFile reads KEY=VALUE lines (blank lines, # comments, an optional
// "export " prefix and quoted values are accepted). A directory means its
// dev.env.
func readEnvFile(path string) (map[string]string, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		path = filepath.Join(path, "dev.env")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read env file: %w", err)
	}
	defer f.Close()
	vals := map[string]string{}
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("read env file %s: line %d is not KEY=VALUE", path, n)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		vals[strings.TrimSpace(k)] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read env file %s: %w", path, err)
	}
	return vals, nil
}

// apiJSON is what --output json prints for an object of the API: the object
// exactly as the API sent it when the client kept it, else v re-encoded.
func apiJSON(raw json.RawMessage, v any) any {
	if raw != nil {
		return raw
	}
	return v
}

// apiJSONList is apiJSON for every element of a list.
func apiJSONList[T interface{ RawJSON() json.RawMessage }](list []T) []any {
	out := make([]any, 0, len(list))
	for _, v := range list {
		out = append(out, apiJSON(v.RawJSON(), v))
	}
	return out
}

// printJSON writes v as indented JSON.
func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.io.Out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// keyValues is a repeatable KEY=VALUE flag.
type keyValues map[string]string

func (kv keyValues) String() string {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func (kv keyValues) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	kv[k] = val
	return nil
}

func fmtTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// dispatch runs the subcommand named by args[0] of a command group.
func dispatch(ctx context.Context, e *env, group string, args []string, subs map[string]func(context.Context, *env, []string) error, usage string) error {
	if len(args) == 0 {
		fmt.Fprint(e.io.Err, usage)
		return &exitError{2}
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(e.io.Out, usage)
		return nil
	}
	run, ok := subs[args[0]]
	if !ok {
		return usagef("unknown command \"%s %s\"", group, args[0])
	}
	return run(ctx, e, args[1:])
}
