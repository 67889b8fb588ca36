package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/testbin"
)

// startDev runs the real `hangard dev` binary and returns its dev.env.
func startDev(t *testing.T, dir string) (map[string]string, *exec.Cmd) {
	t.Helper()
	bin := testbin.Path(t, testbin.Daemon)
	agent := testbin.Path(t, testbin.Agent)
	cmd := exec.Command(bin, "dev", "--data", dir, "--listen", "127.0.0.1:0", "--agent", agent, "--command", "bash --norc --noprofile")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := false
	t.Cleanup(func() {
		if !exited {
			cmd.Process.Signal(syscall.SIGINT)
			cmd.Wait()
		}
	})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "ready at") {
				ready <- sc.Text()
			}
		}
		close(ready)
	}()
	select {
	case line, ok := <-ready:
		if !ok {
			cmd.Wait()
			exited = true
			t.Fatalf("hangard dev exited before ready:\n%s", stderr.String())
		}
		if !strings.Contains(line, "http://127.0.0.1:") {
			t.Fatalf("ready line %q", line)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("hangard dev not ready:\n%s", stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "dev.env"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	var keys []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || v == "" {
			t.Fatalf("dev.env line %q", line)
		}
		env[k] = v
		keys = append(keys, k)
	}
	want := "HANGAR_URL HANGAR_TOKEN HANGAR_ADMIN_TOKEN FLY_API_URL FLY_API_TOKEN FLY_ORG HANGAR_BROKER_PUBLIC_KEY"
	if strings.Join(keys, " ") != want {
		t.Fatalf("dev.env keys %v, want %s", keys, want)
	}
	return env, cmd
}

func call(t *testing.T, method, url, key, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// TestDev runs `hangard dev`, uses its dev.env to run a session on the dev
// pool, stops it with Ctrl-C (no machine process left), and restarts it with
// the same keys.
func TestDev(t *testing.T) {
	dir := t.TempDir()
	env, cmd := startDev(t, dir)
	if _, err := agentauth.ParsePublicKeys(env["HANGAR_BROKER_PUBLIC_KEY"]); err != nil {
		t.Fatal(err)
	}
	base, key := env["HANGAR_URL"], env["HANGAR_TOKEN"]
	st, pools := call(t, "GET", env["FLY_API_URL"]+"/v1/apps?org_slug="+env["FLY_ORG"], env["FLY_API_TOKEN"], "")
	if st != 200 || !strings.Contains(fmt.Sprint(pools), "hangar-dev") {
		t.Fatalf("emulator apps: %d %v", st, pools)
	}
	st, s := call(t, "POST", base+"/v1/sessions", key, `{"pool":"dev"}`)
	if st != http.StatusAccepted {
		t.Fatalf("create: %d %v", st, s)
	}
	id := s["id"].(string)
	deadline := time.Now().Add(60 * time.Second)
	for s["state"] != "ready" {
		if s["state"] == "failed" || time.Now().After(deadline) {
			t.Fatalf("session: %v", s)
		}
		time.Sleep(50 * time.Millisecond)
		_, s = call(t, "GET", base+"/v1/sessions/"+id, key, "")
	}
	if st, _ := call(t, "GET", base+"/v1/tenants", env["HANGAR_ADMIN_TOKEN"], ""); st != 200 {
		t.Fatalf("admin token: %d", st)
	}

	// Ctrl-C: the daemon and the emulator stop, and every machine process with them.
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("hangard dev exit: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("hangard dev did not stop")
	}
	// Session processes run in their own terminal session: they end on the
	// hangup that follows their agent's death, a moment after it.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left := processesUnder(dir)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left running in %s: %v", dir, left)
		}
	}

	// A restart keeps the keys and the tenant.
	env2, _ := startDev(t, dir)
	for _, k := range []string{"HANGAR_TOKEN", "HANGAR_ADMIN_TOKEN", "HANGAR_BROKER_PUBLIC_KEY"} {
		if env2[k] != env[k] {
			t.Errorf("%s changed across a restart", k)
		}
	}
	if st, body := call(t, "GET", env2["HANGAR_URL"]+"/v1/sessions/"+id, env2["HANGAR_TOKEN"], ""); st != 200 {
		t.Fatalf("old session after restart: %d %v", st, body)
	}
}

// processesUnder lists processes whose working directory lies in dir.
func processesUnder(dir string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err == nil && strings.HasPrefix(cwd, dir) {
			out = append(out, e.Name()+":"+cwd)
		}
	}
	return out
}

// TestServeNeedsBrokerKey: serve refuses to start without the shared key.
func TestServeNeedsBrokerKey(t *testing.T) {
	bin := testbin.Path(t, testbin.Daemon)
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--store", "sqlite://"+filepath.Join(t.TempDir(), "x.db"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "broker key") {
		t.Fatalf("serve without a key: %v\n%s", err, out)
	}
}

// TestKeygen writes a key file once and prints its public key.
func TestKeygen(t *testing.T) {
	bin := testbin.Path(t, testbin.Daemon)
	p := filepath.Join(t.TempDir(), "broker.key")
	out, err := exec.Command(bin, "keygen", "--out", p).Output()
	if err != nil {
		t.Fatal(err)
	}
	k, err := agentauth.LoadPrivateKeyFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != agentauth.EncodePublicKey(agentauth.NewSigner(k).PublicKey()) {
		t.Fatalf("printed %q", got)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", fi.Mode())
	}
	if err := exec.Command(bin, "keygen", "--out", p).Run(); err == nil {
		t.Fatal("keygen overwrote a key")
	}
}
