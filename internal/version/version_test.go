package version_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReleaseBuildsReportVersion builds every binary the way a release does
// (goreleaser's -X on internal/version) and checks that each reports the
// stamped version.
func TestReleaseBuildsReportVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds four binaries")
	}
	const want = "v9.9.9-test"
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// go test puts the go command that runs it first on PATH.
	goBin := "go"
	dir := t.TempDir()
	ldflags := "-X github.com/hangarhq/hangar/internal/version.Version=" + want
	build := func(out, pkg string) string {
		t.Helper()
		bin := filepath.Join(dir, out)
		cmd := exec.Command(goBin, "build", "-ldflags", ldflags, "-o", bin, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
		return bin
	}
	for _, c := range []struct {
		name, pkg string
		args      []string
		want      string
	}{
		{"hangard", "./daemon/cmd/hangard", []string{"version"}, "hangard " + want},
		{"hangard", "./daemon/cmd/hangard", []string{"--version"}, "hangard " + want},
		{"hangar", "./cmd/hangar", []string{"version"}, "hangar " + want},
		{"hangar-agent", "./workerimage/cmd/hangar-agent", []string{"--version"}, "hangar-agent " + want},
		{"terraform-provider-hangar", ".", []string{"-version"}, "terraform-provider-hangar " + want},
	} {
		bin := filepath.Join(dir, c.name)
		if _, err := os.Stat(bin); err != nil {
			bin = build(c.name, c.pkg)
		}
		out, err := exec.Command(bin, c.args...).CombinedOutput()
		if err != nil {
			t.Errorf("%s %v: %v\n%s", c.name, c.args, err, out)
			continue
		}
		if got := strings.TrimSpace(string(out)); got != c.want {
			t.Errorf("%s %v printed %q, want %q", c.name, c.args, got, c.want)
		}
	}
}
