package service_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/flyemu"
	"github.com/hangarhq/hangar/internal/pool"
	"github.com/hangarhq/hangar/internal/workerimagetest"
)

// claudeLoginMarker is what Claude Code shows at its prompt without
// credentials (the agent has seeded onboarding and workspace trust): its
// sign-in screen is /login.
const claudeLoginMarker = "Not logged in"

// newImageEnv is the harness with the pool on the real worker image, which
// the emulator runs as containers (image mode).
func newImageEnv(t *testing.T, standbys int, tune func(*pool.Spec)) *env {
	t.Helper()
	store, ref := workerimagetest.Store(t)
	e := newEnvEmu(t, flyemu.Config{ImageStore: store}, standbys, func(s *pool.Spec) {
		s.Image = ref
		// The image's own workspace (/workspace). The git server's CA file
		// is on the host, out of the containers' reach: its certificate
		// is not checked (the TLS itself still is TLS).
		s.Env = map[string]string{"GIT_SSL_NO_VERIFY": "true"}
		if tune != nil {
			tune(s)
		}
	})
	// Unpack the image before anything waits on a machine's start.
	if ok, err := e.emu.PrepareImage(ref); err != nil || !ok {
		t.Fatalf("prepare %s: %v %v", ref, ok, err)
	}
	return e
}

// TestSessionOnWorkerImage: whole sessions on the real image. The first
// claims a standby, clones the repo, changes the rootfs and the workspace,
// starts the real Claude Code (which, without credentials, shows its login
// screen), ends, and its push is read back; its machine is destroyed. The
// next session's machine sees none of the first one's rootfs changes.
func TestSessionOnWorkerImage(t *testing.T) {
	e := newImageEnv(t, 1, nil)
	d := e.start(t, "")
	a := newAPI(t, d.URL, "")
	tn := a.createTenant("imgco", nil)
	ua := a.with(tn.APIKey)
	git := e.git(t)
	repo := git.CreateRepo(t, "proj", map[string]string{"README.md": "hello\n"})

	var s session
	ua.json("POST", "/v1/sessions", map[string]any{
		"pool": testPool, "repo": repo, "command": []string{"bash", "--norc", "--noprofile"},
		"env":         map[string]string{"PS1": "$ "},
		"git_author":  map[string]string{"name": "Image Tester", "email": "img@example.com"},
		"credentials": map[string]string{"git_token": git.Token},
	}, http.StatusAccepted, &s)
	tm, err := dialAttach(t, wsURL(d.URL)+"/v1/sessions/"+s.ID+"/attach", bearer(tn.APIKey), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	tm.send("echo who=$(id -un) in=$(pwd) os=$(. /etc/os-release; echo $ID); cat README.md\n")
	tm.readUntil("who=hangar in=/workspace os=debian")
	tm.readUntil("hello")
	tm.send("echo changed > /tmp/rootfs-marker && echo from-the-image > result.txt && echo marked-$((2+3))\n")
	tm.readUntil("marked-5")
	// The real CLI, as the image installed it.
	tm.send("claude\n")
	tm.readUntil(claudeLoginMarker)
	tm.close()

	var ended session
	ua.json("DELETE", "/v1/sessions/"+s.ID, nil, http.StatusAccepted, &ended)
	ended = ua.waitState(s.ID, isState("ended", "failed"))
	if ended.State != "ended" || ended.Push == nil || !ended.Push.OK || ended.Push.Commit == "" {
		t.Fatalf("ended session: %+v push %+v", ended, ended.Push)
	}
	if content, ok := git.ReadFile(t, "proj", ended.Push.Commit, "result.txt"); !ok || !strings.Contains(content, "from-the-image") {
		t.Fatalf("result.txt in the pushed commit: %q %v", content, ok)
	}
	assertMachineGone(t, e, ended.MachineID)

	// The next session runs on another machine, on a fresh rootfs.
	var s2 session
	ua.json("POST", "/v1/sessions", map[string]any{
		"pool": testPool, "command": []string{"bash", "--norc", "--noprofile"}, "env": map[string]string{"PS1": "$ "},
	}, http.StatusAccepted, &s2)
	tm2, err := dialAttach(t, wsURL(d.URL)+"/v1/sessions/"+s2.ID+"/attach", bearer(tn.APIKey), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	tm2.send("if [ -e /tmp/rootfs-marker ]; then echo STALE-$((1+1)); else echo FRESH-$((1+1)); fi\n")
	tm2.readUntil("-2")
	if strings.Contains(string(tm2.out), "STALE-2") {
		t.Fatal("the second session's machine sees the first one's rootfs change")
	}
	tm2.readUntil("FRESH-2")
	tm2.close()
	ua.json("DELETE", "/v1/sessions/"+s2.ID, nil, http.StatusAccepted, nil)
	if got := ua.waitState(s2.ID, isState("ended", "failed")); got.MachineID == ended.MachineID {
		t.Errorf("both sessions ran on machine %s", got.MachineID)
	}

	// Every machine of the pool ran in image mode.
	ms, err := e.fly.ListMachines(context.Background(), testApp, fly.ListMachinesOptions{IncludeDeleted: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		full, err := e.fly.GetMachine(context.Background(), testApp, m.ID)
		if err != nil {
			continue
		}
		for _, ev := range full.Events {
			if ev.Request != nil && ev.Request.Mode != "" && ev.Request.Mode != "image" {
				t.Errorf("machine %s launched in %s mode", m.ID, ev.Request.Mode)
			}
		}
	}
}

// TestSessionOOMOnWorkerImage: on a 256 MB machine, a session whose command
// allocates without bound is ended by the machine's out-of-memory killer
// (the emulator's cgroup limit), and hangar ends the session saying so.
func TestSessionOOMOnWorkerImage(t *testing.T) {
	e := newImageEnv(t, 1, func(s *pool.Spec) { s.Guest.MemoryMB = 256 })
	d := e.start(t, "")
	a := newAPI(t, d.URL, "")
	ua := a.with(a.createTenant("hungry", nil).APIKey)
	var s session
	// tail keeps the last line of an input without newlines: all of it.
	ua.json("POST", "/v1/sessions", map[string]any{"pool": testPool, "command": []string{"tail", "-n1", "/dev/zero"}}, http.StatusAccepted, &s)
	got := ua.waitState(s.ID, isState("ended", "failed"))
	if !strings.Contains(got.Reason, "out of memory") || !strings.Contains(got.Reason, "256 MB") {
		t.Fatalf("session ended %s with reason %q, want the out-of-memory killer named", got.State, got.Reason)
	}
	assertMachineGone(t, e, got.MachineID)
}
