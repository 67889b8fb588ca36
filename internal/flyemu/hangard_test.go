//go:build linux

package flyemu_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/testbin"
)

// TestHangardFlyemu runs `hangard flyemu` as a real process and talks to it
// the way curl would; SIGINT shuts it down leaving no machine process.
func TestHangardFlyemu(t *testing.T) {
	bin := testbin.Path(t, testbin.Daemon)
	data := t.TempDir()
	cmd := exec.Command(bin, "flyemu", "--listen", "127.0.0.1:0", "--data", data, "--boot-delay", "10ms")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start hangard flyemu: %v", err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	var base string
	select {
	case base = <-lines:
	case <-time.After(60 * time.Second):
		t.Fatalf("hangard flyemu printed no URL; stderr:\n%s", stderr.String())
	}
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("printed %q, want the base URL", base)
	}

	// curl -s -X POST $base/v1/apps -d '{"app_name":"x","org_slug":"personal"}'
	code, _, body := raw(t, "POST", base+"/v1/apps", `{"app_name":"x","org_slug":"personal"}`)
	if code != 201 {
		t.Fatalf("create app: %d %s", code, body)
	}
	code, _, body = raw(t, "POST", base+"/v1/apps", `{"app_name":"x","org_slug":"personal"}`)
	if code != 422 || !strings.Contains(string(body), `"status":"name_taken"`) {
		t.Errorf("create the same app again: %d %s", code, body)
	}
	code, _, body = raw(t, "GET", base+"/v1/apps/x", "")
	var app fly.App
	if code != 200 || json.Unmarshal(body, &app) != nil || app.Name != "x" || app.Organization.Slug != "personal" {
		t.Errorf("get app: %d %s", code, body)
	}
	if code, er, _ := raw(t, "GET", base+"/v1/apps/missing", ""); code != 404 || er.Error == "" {
		t.Errorf("unknown app: %d %+v", code, er)
	}

	code, _, body = raw(t, "POST", base+"/v1/apps/x/machines",
		`{"config":{"image":"test","init":{"exec":["sh","-c","echo $$ > pid; exec sleep 1000"]},"restart":{"policy":"no"}}}`)
	var m fly.Machine
	if code != 200 || json.Unmarshal(body, &m) != nil || m.ID == "" {
		t.Fatalf("create machine: %d %s", code, body)
	}
	code, _, body = raw(t, "GET", base+"/v1/apps/x/machines/"+m.ID+"/wait?state=started&timeout=30", "")
	if code != 200 {
		t.Fatalf("wait started: %d %s", code, body)
	}
	pidFile := filepath.Join(data, "x", m.ID, "pid")
	eventually(t, "machine pid file", func() bool { _, ok := readInt(pidFile); return ok })
	pid, _ := readInt(pidFile)
	if len(groupMembers(pid)) == 0 {
		t.Fatalf("machine process %d not running", pid)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("hangard flyemu exited with %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("hangard flyemu did not exit on SIGINT")
	}
	waitGroupGone(t, pid)
	if _, err := os.Stat(data); err != nil {
		t.Errorf("data dir given with --data was removed: %v", err)
	}
}
