// Package cli implements the hangar command line: session, attach, pool and
// tenant commands on top of internal/client. cmd/hangar only calls Main.
//
// The commands are cobra commands: root.go builds the tree (the global
// flags, help, usage errors, the completion command), one file per command
// group adds its commands, and every result is printed through the printer
// of output.go (--output text|json). shim.go keeps the single-dash flags of
// the days of Go's flag package (-pool dev) working.
package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
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

// Version is what `hangar version` prints: the release version stamped
// into internal/version at build time (tests may override it).
var Version = version.Get()

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
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stdio.Err, "hangar: %s\n(run \"hangar help\" for usage)\n", ue.msg)
		return 2
	}
	fmt.Fprintf(stdio.Err, "hangar: %v\n", err)
	return 1
}

// run builds the command tree and runs the command that args name.
func run(ctx context.Context, args []string, stdio *IO) error {
	root := newRootCmd(&env{io: stdio})
	root.SetArgs(normalizeArgs(root, args))
	return root.ExecuteContext(ctx)
}

// env holds the global settings shared by every command: the global flags,
// and the printer for --output once a command runs.
type env struct {
	io         *IO
	url        string
	token      string
	adminToken string
	envFile    string
	output     string
	out        *printer
}

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

// Type names the value in help and shell completion.
func (kv keyValues) Type() string { return "KEY=VALUE" }

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
