package workerimagetest_test

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hangarhq/hangar/internal/flyemu"
	"github.com/hangarhq/hangar/internal/workerimagetest"
)

// TestWorkerImage inspects the built image: its user, entrypoint, stop
// signal, the pinned Claude Code and the agent inside it, and every layer
// for credentials or build leftovers.
func TestWorkerImage(t *testing.T) {
	dir, ref := workerimagetest.Store(t)
	st, err := flyemu.OpenImageStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	img, ok, err := st.Lookup(ref)
	if err != nil || !ok {
		t.Fatalf("%s not in the store: %v", ref, err)
	}
	df, err := os.ReadFile(filepath.Join(repoRoot(t), "workerimage", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	pin := regexp.MustCompile(`(?m)^ARG CLAUDE_CODE_VERSION=(\S+)$`).FindSubmatch(df)
	if pin == nil {
		t.Fatal("no CLAUDE_CODE_VERSION pin in the Dockerfile")
	}
	claudeVersion := string(pin[1])

	c := img.Config
	if c.User != "hangar" || !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/hangar-agent"}) ||
		c.WorkingDir != "/workspace" || c.StopSignal != "SIGINT" {
		t.Errorf("image config: user %q entrypoint %q workdir %q stop signal %q", c.User, c.Entrypoint, c.WorkingDir, c.StopSignal)
	}
	if got := c.Labels["dev.hangar.claude-code.version"]; got != claudeVersion {
		t.Errorf("Claude Code label %q, want the Dockerfile's pin %s", got, claudeVersion)
	}
	for _, kv := range c.Env {
		if k, _, _ := strings.Cut(kv, "="); strings.Contains(strings.ToUpper(k), "TOKEN") || strings.Contains(strings.ToUpper(k), "KEY") || strings.Contains(strings.ToUpper(k), "SECRET") {
			t.Errorf("image env carries %s", k)
		}
	}

	// The binaries themselves (both run on this Linux host as they are).
	rootfs, err := st.Rootfs(img)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(rootfs, "usr/local/bin/claude"), "--version").CombinedOutput(); err != nil || !strings.Contains(string(out), claudeVersion) {
		t.Errorf("claude --version in the image: %q %v, want %s", out, err, claudeVersion)
	}
	// hangar-agent --version prints "hangar-agent <version>": its last field
	// is the version the build stamped, the label's.
	agentVersion := c.Labels["dev.hangar.agent.version"]
	out, err := exec.Command(filepath.Join(rootfs, "usr/local/bin/hangar-agent"), "--version").CombinedOutput()
	fields := strings.Fields(string(out))
	if err != nil || len(fields) == 0 || fields[len(fields)-1] != agentVersion || agentVersion == "" {
		t.Errorf("hangar-agent --version in the image: %q %v, want the label's %q", out, err, agentVersion)
	}
	for _, p := range []string{"usr/bin/git", "etc/ssl/certs/ca-certificates.crt", "usr/local/bin/node"} {
		if _, err := os.Stat(filepath.Join(rootfs, p)); err != nil {
			t.Errorf("image lacks /%s", p)
		}
	}

	// No layer holds a credential file, a private key, an npm token or the
	// npm cache of the build.
	// Names of credential files, the npm cache and the build secret's mount;
	// contents: a PEM private key with its body, an npm token with a value
	// shaped like one (npm's own docs show the settings with placeholders).
	badName := regexp.MustCompile(`(^|/)(\.npmrc|\.netrc|\.git-credentials|\.credentials\.json|id_rsa|id_ecdsa|id_ed25519|\.pypirc)$|(^|/)\.docker/config\.json$|(^|/)\.aws/credentials$|(^|/)\.npm/_cacache/|^run/secrets/.`)
	badContent := regexp.MustCompile(`-----BEGIN (RSA |EC |OPENSSH |DSA |ENCRYPTED )?PRIVATE KEY-----\r?\n[A-Za-z0-9+/=]{40,}|_authToken\s*=\s*(npm_[A-Za-z0-9]{20,}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})`)
	layers, err := st.LayerReaders(img)
	if err != nil {
		t.Fatal(err)
	}
	files := 0
	for i, l := range layers {
		tr := tar.NewReader(l)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("layer %d: %v", i, err)
			}
			name := path.Clean(strings.TrimPrefix(h.Name, "/"))
			files++
			if badName.MatchString(name) {
				t.Errorf("layer %d holds %s", i, name)
			}
			// Text-sized regular files only: binaries hold key headers as
			// string constants.
			if h.Typeflag != tar.TypeReg || h.Size > 1<<20 {
				continue
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.IndexByte(b, 0) < 0 && badContent.Match(b) {
				t.Errorf("layer %d: %s holds a credential: %q", i, name, badContent.Find(b))
			}
		}
		l.Close()
	}
	if files < 1000 {
		t.Errorf("only %d files in the image's layers", files)
	}
}

func repoRoot(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}
