// Package workerimagetest gives tests the real worker image
// (workerimage/Dockerfile) in a Fly emulator image store, built once by
// scripts/worker-image.sh and cached by content: the first test run on a
// machine builds it (minutes: a Debian rootfs and Claude Code from the
// package repositories), later runs only check it is current.
package workerimagetest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Ref is the name tests give the image.
const Ref = "hangar-worker:test"

var (
	once    sync.Once
	store   string
	onceErr string
)

// Store returns the image store holding Ref, building the image when the
// cache lacks it. It skips the test when images cannot be built or run here
// (not root); any other failure fails it.
func Store(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the worker image is built with buildah and run with runc: needs root")
	}
	once.Do(func() {
		root, err := repoRoot()
		if err != nil {
			onceErr = err.Error()
			return
		}
		start := time.Now()
		cmd := exec.Command(filepath.Join(root, "scripts", "worker-image.sh"))
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "WORKER_IMAGE="+Ref, "WORKER_BUILDER=buildah")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			onceErr = "scripts/worker-image.sh: " + err.Error() + "\n" + tail(out.String(), 4000)
			return
		}
		store = os.Getenv("HANGAR_IMAGE_STORE")
		if store == "" {
			store = filepath.Join(cacheDir(), "images")
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Logf("built the worker image in %v", d.Round(time.Second))
		}
	})
	if onceErr != "" {
		t.Fatal(onceErr)
	}
	return store
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
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
