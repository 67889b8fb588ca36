package e2e

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/hangarhq/hangar/internal/testbin"
	"github.com/hangarhq/hangar/test/devtest"
)

// hangarCLI runs the hangar binary against dev and returns stdout, stderr
// and the exit status.
func hangarCLI(t *testing.T, bin string, dev *devtest.Dev, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--env-file", dev.Dir}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run hangar %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), code
}

// jsonOf runs the CLI with --output json and decodes what it printed.
func jsonOf[T any](t *testing.T, bin string, dev *devtest.Dev, args ...string) T {
	t.Helper()
	out, errs, code := hangarCLI(t, bin, dev, append([]string{"--output", "json"}, args...)...)
	if code != 0 {
		t.Fatalf("hangar %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("hangar %s printed no JSON (%v):\n%s", strings.Join(args, " "), err, out)
	}
	return v
}

func hasKeys(t *testing.T, what string, obj map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := obj[k]; !ok {
			t.Errorf("%s has no %q: %v", what, k, obj)
		}
	}
}

// sessionKeys are the session object's fields (docs/DESIGN.md, "HTTP API").
var sessionKeys = []string{"id", "tenant", "pool", "tenant_image", "region", "state", "reason", "queue_position",
	"machine_id", "repo", "branch", "session_branch", "mode", "created_at", "ready_at", "ended_at", "push", "cost_usd"}

// TestCLIAgainstDaemon drives the hangar binary against a real daemon:
// --output json keeps every field the API sends (empty or not), a session
// without a repo ends with "nothing pushed" as information, and tenants are
// found by name as well as by id.
func TestCLIAgainstDaemon(t *testing.T) {
	dev := devtest.Start(t)
	bin := testbin.Path(t, testbin.CLI)

	s := jsonOf[map[string]any](t, bin, dev, "sessions", "create", "--pool", "dev", "--wait", "--", "bash", "--norc", "-i")
	hasKeys(t, "sessions create --wait", s, sessionKeys...)
	id, _ := s["id"].(string)
	if s["state"] != "ready" || s["machine_id"] == "" {
		t.Fatalf("created session: %v", s)
	}
	list := jsonOf[[]map[string]any](t, bin, dev, "sessions", "ls")
	if len(list) != 1 {
		t.Fatalf("sessions ls: %v", list)
	}
	hasKeys(t, "sessions ls", list[0], sessionKeys...)
	pools := jsonOf[[]map[string]any](t, bin, dev, "pools")
	if len(pools) == 0 {
		t.Fatal("pools: none")
	}
	hasKeys(t, "pools", pools[0], "name", "app_name", "regions", "image", "min_standby", "max_machines", "machines",
		"standby_mode", "idle_timeout", "session_ttl", "draining", "standby", "tenant_images")

	ended := jsonOf[map[string]any](t, bin, dev, "sessions", "end", id)
	hasKeys(t, "sessions end", ended, sessionKeys...)
	push, _ := ended["push"].(map[string]any)
	if ended["state"] != "ended" || push == nil {
		t.Fatalf("ended session: %v", ended)
	}
	hasKeys(t, "push", push, "ref", "commit", "ok", "message")
	show, _, code := hangarCLI(t, bin, dev, "sessions", "show", id)
	if code != 0 || strings.Contains(show, "FAILED") || !strings.Contains(show, "nothing pushed") {
		t.Errorf("sessions show of a session without a repo: exit %d\n%s", code, show)
	}

	// Attaching to the ended session fails, and says why.
	_, errs, code := hangarCLI(t, bin, dev, "attach", id)
	if code == 0 || !strings.Contains(errs, "has already ended") {
		t.Errorf("attach to an ended session: exit %d: %s", code, errs)
	}

	// Tenants: create by name, then rotate and remove by that name.
	tn := jsonOf[map[string]any](t, bin, dev, "tenants", "create", "e2e-tenant")
	hasKeys(t, "tenants create", tn, "id", "name", "api_key", "pools", "max_sessions", "max_session_duration", "created_at")
	tenants := jsonOf[[]map[string]any](t, bin, dev, "tenants", "ls")
	for _, x := range tenants {
		hasKeys(t, "tenants ls", x, "id", "name", "pools", "max_sessions", "max_session_duration", "created_at")
	}
	rot := jsonOf[map[string]any](t, bin, dev, "tenants", "rotate", "e2e-tenant")
	if rot["id"] != tn["id"] || rot["api_key"] == "" || rot["api_key"] == tn["api_key"] {
		t.Errorf("rotate by name: %v (created %v)", rot, tn)
	}
	out, errs, code := hangarCLI(t, bin, dev, "tenants", "rm", "e2e-tenant")
	if code != 0 || !strings.Contains(out, "deleted") {
		t.Errorf("rm by name: exit %d: %s%s", code, out, errs)
	}
	if _, errs, code := hangarCLI(t, bin, dev, "tenants", "rm", "e2e-tenant"); code != 1 || !strings.Contains(errs, `no tenant with id or name "e2e-tenant"`) {
		t.Errorf("rm of a removed tenant: exit %d: %s", code, errs)
	}
}
