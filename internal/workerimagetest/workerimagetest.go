// Package workerimagetest gives tests the real worker image
// (workerimage/Dockerfile) in a Fly emulator image store, built once by
// scripts/worker-image.sh and cached by content: the first test run on a
// machine builds it (minutes: a Debian rootfs and Claude Code from the
// package repositories), later runs only check it is current.
package workerimagetest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Name is the image name tests ask for. The script appends the build key to
// its tag (WORKER_IMAGE_KEYED): checkouts sharing the cache (~/.cache/hangar)
// each boot their own agent, never one another's exported under one name.
const Name = "hangar-worker:test"

// BuildTimeout bounds a build started by a test. A cold build (a Debian
// rootfs, Node and Claude Code from the package repositories) took 4 to 8
// minutes on a loaded 2-core machine; a stalled download must fail the test,
// not hang the run until go test's own timeout, which would leave the build
// running and holding the cache's lock.
const BuildTimeout = 25 * time.Minute

var (
	once    sync.Once
	store   string
	ref     string
	onceErr string
)

// Store returns the image store and the ref of this checkout's worker image
// in it, building the image when the cache lacks it. It skips the test when
// images cannot be built or run here (not root); any other failure fails it.
func Store(t testing.TB) (dir, image string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the worker image is built with buildah and run with runc: needs root")
	}
	once.Do(func() {
		store, ref, onceErr = build(t)
	})
	if onceErr != "" {
		t.Fatal(onceErr)
	}
	return store, ref
}

func build(t testing.TB) (dir, image, failure string) {
	root, err := repoRoot()
	if err != nil {
		return "", "", err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), BuildTimeout)
	defer cancel()
	if dt, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if d, ok := dt.Deadline(); ok {
			// Leave the test binary time to report before go test kills it.
			ctx, cancel = context.WithDeadline(ctx, d.Add(-30*time.Second))
			defer cancel()
		}
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "worker-image.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "WORKER_IMAGE="+Name, "WORKER_IMAGE_KEYED=1", "WORKER_BUILDER=buildah")
	// Its own process group, killed whole at the deadline: buildah and
	// mmdebstrap run below the script.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (gave up after %v)", err, time.Since(start).Round(time.Second))
		}
		return "", "", "scripts/worker-image.sh: " + err.Error() + "\n" + tail(stderr.String(), 4000)
	}
	// The script prints the image's name last.
	lines := strings.Fields(stdout.String())
	if len(lines) == 0 {
		return "", "", "scripts/worker-image.sh printed no image name\n" + tail(stderr.String(), 4000)
	}
	image = lines[len(lines)-1]
	dir = os.Getenv("HANGAR_IMAGE_STORE")
	if dir == "" {
		dir = filepath.Join(cacheDir(), "images")
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Logf("built the worker image %s in %v", image, d.Round(time.Second))
	}
	return dir, image, ""
}

// cacheDir mirrors scripts/worker-image.sh's default.
func cacheDir() string {
	if d := os.Getenv("HANGAR_CACHE_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "hangar")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "hangar")
}

func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the repository root (go env GOMOD): %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
