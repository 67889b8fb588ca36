// Package testbin builds the project's binaries once per test process so that
// tests can run the real programs (the agent under the Fly emulator, the CLI
// under tmux) without depending on `make build` having run first.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Import paths of the project's commands.
const (
	Agent    = "github.com/hangarhq/hangar/workerimage/cmd/hangar-agent"
	Daemon   = "github.com/hangarhq/hangar/daemon/cmd/hangard"
	CLI      = "github.com/hangarhq/hangar/cmd/hangar"
	Provider = "github.com/hangarhq/hangar"
)

var (
	mu    sync.Mutex
	dir   string
	built = map[string]string{}
)

// Path returns the path of the binary for the given import path, building it
// into a per-process temporary directory on first use. If HANGAR_BIN_DIR is
// set (make test sets it to ./bin after make build), a binary found there is
// used as is.
func Path(t testing.TB, pkg string) string {
	t.Helper()
	p, err := build(pkg)
	if err != nil {
		t.Fatalf("build %s: %v", pkg, err)
	}
	return p
}

func build(pkg string) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	if p, ok := built[pkg]; ok {
		return p, nil
	}
	name := filepath.Base(pkg)
	if pkg == Provider {
		name = "terraform-provider-hangar"
	}
	if d := os.Getenv("HANGAR_BIN_DIR"); d != "" {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			built[pkg] = p
			return p, nil
		}
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "hangar-testbin-")
		if err != nil {
			return "", err
		}
		dir = d
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command(goTool(), "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, b)
	}
	built[pkg] = out
	return out, nil
}

// goTool is the go command that runs the tests: `go test` puts its own
// GOROOT's bin first on PATH for the test binaries it runs.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}
