//go:build linux

package flyemu_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/flyemu"
	"github.com/hangarhq/hangar/internal/flyspec"
	"github.com/hangarhq/hangar/internal/syncbuf"
)

func TestApps(t *testing.T) {
	e := start(t, flyemu.Config{})
	c := ctx(t)
	app, err := e.c.CreateApp(c, fly.CreateAppRequest{Name: "alpha", OrgSlug: "personal", Network: "alpha-net"})
	if err != nil {
		t.Fatalf("create app: %v", err)
	}
	if app.Name != "alpha" {
		t.Errorf("created app name %q", app.Name)
	}
	if _, err := e.c.CreateApp(c, fly.CreateAppRequest{Name: "alpha", OrgSlug: "personal"}); !errors.Is(err, fly.ErrNameTaken) || statusOf(err) != http.StatusUnprocessableEntity {
		t.Errorf("second create of alpha: %v, want 422 name taken", err)
	}
	// The docs' form of the body names the app "app_name".
	if code, _, _ := raw(t, "POST", e.srv.URL+"/v1/apps", `{"app_name":"beta","org_slug":"other-org"}`); code != http.StatusCreated {
		t.Errorf("create with app_name: %d", code)
	}
	got, err := e.c.GetApp(c, "alpha")
	if err != nil {
		t.Fatalf("get app: %v", err)
	}
	if got.Network != "alpha-net" || got.Organization == nil || got.Organization.Slug != "personal" {
		t.Errorf("get app = %+v", got)
	}
	apps, err := e.c.ListApps(c, "personal")
	if err != nil || len(apps) != 1 || apps[0].Name != "alpha" {
		t.Errorf("list personal = %+v, %v", apps, err)
	}
	apps, err = e.c.ListApps(c, "other-org")
	if err != nil || len(apps) != 1 || apps[0].Name != "beta" {
		t.Errorf("list other-org = %+v, %v", apps, err)
	}

	// Secrets: set, batch update, list (values only on request), delete.
	if _, err := e.c.SetSecret(c, "alpha", "API_KEY", "s3cret"); err != nil {
		t.Fatalf("set secret: %v", err)
	}
	v := "two"
	if _, err := e.c.UpdateSecrets(c, "alpha", map[string]*string{"SECOND": &v}); err != nil {
		t.Fatalf("update secrets: %v", err)
	}
	secrets, err := e.c.ListSecrets(c, "alpha", false)
	if err != nil || len(secrets) != 2 || secrets[0].Name != "API_KEY" || secrets[0].Value != "" || secrets[0].Digest == "" {
		t.Errorf("list secrets = %+v, %v", secrets, err)
	}
	secrets, err = e.c.ListSecrets(c, "alpha", true)
	if err != nil || len(secrets) != 2 || secrets[0].Value != "s3cret" {
		t.Errorf("list secrets with values = %+v, %v", secrets, err)
	}
	if err := e.c.DeleteSecret(c, "alpha", "SECOND"); err != nil {
		t.Errorf("delete secret: %v", err)
	}
	if err := e.c.DeleteSecret(c, "alpha", "SECOND"); !errors.Is(err, fly.ErrNotFound) {
		t.Errorf("delete missing secret: %v, want not found", err)
	}

	// Deleting an app kills its machines and frees the name.
	m := e.create(t, "alpha", fly.CreateMachineRequest{Config: shell("exec sleep 1000")})
	e.wait(t, "alpha", m.ID, fly.StateStarted)
	pid := e.srv.PIDs()[m.ID]
	if err := e.c.DeleteApp(c, "alpha", true); err != nil {
		t.Fatalf("delete app: %v", err)
	}
	if _, err := e.c.GetApp(c, "alpha"); !errors.Is(err, fly.ErrNotFound) {
		t.Errorf("get deleted app: %v, want not found", err)
	}
	waitGroupGone(t, pid)
	if _, err := e.c.CreateApp(c, fly.CreateAppRequest{Name: "alpha", OrgSlug: "personal"}); err != nil {
		t.Errorf("re-create deleted app: %v", err)
	}
}

func TestMachineEnvironment(t *testing.T) {
	e := start(t, flyemu.Config{Region: "ams"})
	app := e.app(t, "envapp")
	if _, err := e.c.SetSecret(ctx(t), app, "APP_SECRET", "from-secrets"); err != nil {
		t.Fatal(err)
	}
	cfg := shell(`pwd > pwd.txt; env > env.txt.tmp; mv env.txt.tmp env.txt; exec sleep 1000`)
	cfg.Env = map[string]string{"GREETING": "hello"}
	cfg.Metadata = map[string]string{"fly_process_group": "worker"}
	cfg.Guest = &fly.Guest{CPUKind: "shared", CPUs: 2, MemoryMB: 1024}
	m := e.create(t, app, fly.CreateMachineRequest{Config: cfg})
	if m.State != fly.StateCreated || m.Region != "ams" || len(m.ID) != 14 || len(m.InstanceID) != 26 {
		t.Errorf("created machine = state %s region %s id %q instance %q", m.State, m.Region, m.ID, m.InstanceID)
	}
	e.wait(t, app, m.ID, fly.StateStarted)
	dir := e.srv.MachineDir(app, m.ID)
	eventually(t, "env.txt", func() bool { return strings.Contains(readFile(filepath.Join(dir, "env.txt")), "PRIMARY_REGION") })
	envs := map[string]string{}
	for _, l := range strings.Split(readFile(filepath.Join(dir, "env.txt")), "\n") {
		k, v, _ := strings.Cut(l, "=")
		envs[k] = v
	}
	ip, err := netip.ParseAddr(m.PrivateIP)
	namespaced := e.srv.NetworkMode() == flyemu.NetworkNamespaces
	switch {
	case err != nil:
		t.Errorf("private_ip %q: %v", m.PrivateIP, err)
	case namespaced && !netip.MustParsePrefix("fdaa::/16").Contains(ip):
		t.Errorf("private_ip %q is not a 6PN address", m.PrivateIP)
	case !namespaced && (!ip.Is4() || ip.As4()[0] != 127 || ip == netip.MustParseAddr("127.0.0.1")):
		t.Errorf("private_ip %q is not a machine loopback address", m.PrivateIP)
	}
	if sock := envs[flyemu.EnvFlyAPISocket]; sock == "" {
		t.Errorf("%s not set", flyemu.EnvFlyAPISocket)
	} else if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("%s=%s is not a socket (%v)", flyemu.EnvFlyAPISocket, sock, err)
	}
	want := map[string]string{
		"FLY_APP_NAME": app, "FLY_MACHINE_ID": m.ID, "FLY_ALLOC_ID": m.ID, "FLY_REGION": "ams",
		"FLY_PRIVATE_IP": m.PrivateIP, "FLY_PUBLIC_IP": m.PrivateIP, "FLY_IMAGE_REF": cfg.Image,
		"FLY_MACHINE_VERSION": m.InstanceID, "FLY_PROCESS_GROUP": "worker", "FLY_VM_MEMORY_MB": "1024",
		"PRIMARY_REGION": "ams", "GREETING": "hello", "APP_SECRET": "from-secrets",
		"HOME": filepath.Join(dir, "home"),
	}
	for k, v := range want {
		if envs[k] != v {
			t.Errorf("env %s = %q, want %q", k, envs[k], v)
		}
	}
	if envs["PATH"] == "" {
		t.Error("PATH not set")
	}
	if got := readFile(filepath.Join(dir, "pwd.txt")); got != dir {
		t.Errorf("working dir %q, want %q", got, dir)
	}
	if namespaced {
		return // the address lives in the machine's namespace: see netns_test.go
	}
	// The address is usable: something can listen on it.
	l, err := net.Listen("tcp", net.JoinHostPort(m.PrivateIP, "0"))
	if err != nil {
		t.Errorf("listen on private_ip: %v", err)
	} else {
		l.Close()
	}
}

func TestAddressBlocksDoNotCollide(t *testing.T) {
	a := start(t, flyemu.Config{})
	b := start(t, flyemu.Config{})
	blocks := map[string]bool{}
	for _, e := range []*env{a, b} {
		app := e.app(t, "ips")
		for range 3 {
			m := e.create(t, app, fly.CreateMachineRequest{Config: shell("exit 0"), SkipLaunch: true})
			ip := netip.MustParseAddr(m.PrivateIP)
			bits := 24
			if ip.Is6() {
				bits = 64
			}
			blocks[netip.PrefixFrom(ip, bits).Masked().String()] = true
		}
	}
	if len(blocks) != 2 {
		t.Errorf("two emulators used address blocks %v, want two distinct blocks", blocks)
	}
}

func TestLifecycle(t *testing.T) {
	e := start(t, flyemu.Config{BootDelay: 20 * time.Millisecond})
	c := ctx(t)
	app := e.app(t, "life")
	cfg := shell(`echo $$ > pid; exec sleep 1000`)
	cfg.Metadata = map[string]string{"role": "worker"}
	m := e.create(t, app, fly.CreateMachineRequest{Config: cfg, Name: "first", Region: "fra"})
	e.wait(t, app, m.ID, fly.StateStarted)
	got := e.get(t, app, m.ID)
	if got.State != fly.StateStarted || got.Name != "first" || got.Config.Guest == nil || got.Config.Guest.MemoryMB != 256 {
		t.Errorf("get = state %s name %s guest %+v", got.State, got.Name, got.Config.Guest)
	}
	pid1 := e.srv.PIDs()[m.ID]
	if pid1 == 0 {
		t.Fatal("no process for a started machine")
	}

	// A second, never-launched machine in another region.
	other := e.create(t, app, fly.CreateMachineRequest{Config: shell("exec sleep 1000"), SkipLaunch: true, Region: "ord"})
	if other.State != fly.StateCreated {
		t.Errorf("skip_launch machine state %s", other.State)
	}
	if _, running := e.srv.PIDs()[other.ID]; running {
		t.Error("skip_launch machine has a process")
	}

	list := func(opts fly.ListMachinesOptions) []string {
		t.Helper()
		ms, err := e.c.ListMachines(c, app, opts)
		if err != nil {
			t.Fatalf("list %+v: %v", opts, err)
		}
		var ids []string
		for _, m := range ms {
			ids = append(ids, m.ID)
			if opts.Summary && (m.Events != nil || m.Config == nil || m.Config.Init != nil) {
				t.Errorf("summary machine carries details: %+v", m)
			}
		}
		return ids
	}
	if ids := list(fly.ListMachinesOptions{}); len(ids) != 2 {
		t.Errorf("list all = %v", ids)
	}
	if ids := list(fly.ListMachinesOptions{Metadata: map[string]string{"role": "worker"}}); !slices.Equal(ids, []string{m.ID}) {
		t.Errorf("list by metadata = %v", ids)
	}
	if ids := list(fly.ListMachinesOptions{Metadata: map[string]string{"role": "other"}}); len(ids) != 0 {
		t.Errorf("list by other metadata = %v", ids)
	}
	if ids := list(fly.ListMachinesOptions{Region: "ord"}); !slices.Equal(ids, []string{other.ID}) {
		t.Errorf("list by region = %v", ids)
	}
	if ids := list(fly.ListMachinesOptions{States: []string{fly.StateCreated, fly.StateStopped}}); !slices.Equal(ids, []string{other.ID}) {
		t.Errorf("list by state = %v", ids)
	}
	if ids := list(fly.ListMachinesOptions{Summary: true}); len(ids) != 2 {
		t.Errorf("list summary = %v", ids)
	}

	// Stop, then start: a new process.
	if err := e.c.StopMachine(c, app, m.ID, fly.StopRequest{}, ""); err != nil {
		t.Fatalf("stop: %v", err)
	}
	e.wait(t, app, m.ID, fly.StateStopped)
	waitGroupGone(t, pid1)
	if n := e.srv.ProcessCount(); n != 0 {
		t.Errorf("%d processes after stop", n)
	}
	sr, err := e.c.StartMachine(c, app, m.ID, "")
	if err != nil || sr.PreviousState != fly.StateStopped {
		t.Fatalf("start: %+v, %v", sr, err)
	}
	e.wait(t, app, m.ID, fly.StateStarted)
	pid2 := e.srv.PIDs()[m.ID]
	if pid2 == 0 || pid2 == pid1 {
		t.Errorf("restarted machine pid %d, first pid %d: want a new process", pid2, pid1)
	}

	// Restart: a new process again.
	if err := e.c.RestartMachine(c, app, m.ID, fly.RestartOptions{Timeout: time.Second}, ""); err != nil {
		t.Fatalf("restart: %v", err)
	}
	eventually(t, "restart to launch a new process", func() bool {
		p := e.srv.PIDs()[m.ID]
		return p != 0 && p != pid2
	})
	e.wait(t, app, m.ID, fly.StateStarted)

	// Update: full replace, new version, the process restarts with the new config.
	before := e.get(t, app, m.ID)
	newCfg := shell(`echo updated > updated.txt; exec sleep 1000`)
	newCfg.Metadata = map[string]string{"role": "worker", "v": "2"}
	if _, err := e.c.UpdateMachine(c, app, m.ID, fly.UpdateMachineRequest{Config: newCfg, CurrentVersion: "01HZZZZZZZZZZZZZZZZZZZZZZZ"}, ""); statusOf(err) != http.StatusPreconditionFailed {
		t.Errorf("update with a stale current_version: %v, want 412", err)
	}
	upd, err := e.c.UpdateMachine(c, app, m.ID, fly.UpdateMachineRequest{Config: newCfg, CurrentVersion: before.InstanceID}, "")
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if upd.InstanceID == before.InstanceID || upd.Config.Metadata["v"] != "2" {
		t.Errorf("update kept version %s / metadata %v", upd.InstanceID, upd.Config.Metadata)
	}
	if _, err := e.c.WaitMachine(c, app, m.ID, fly.WaitOptions{States: []string{fly.StateStarted}, Version: upd.InstanceID, Timeout: 30 * time.Second}); err != nil {
		t.Fatalf("wait for the updated version: %v", err)
	}
	eventually(t, "updated process to run", func() bool {
		return readFile(filepath.Join(e.srv.MachineDir(app, m.ID), "updated.txt")) == "updated"
	})
	// Waiting on the replaced version for "stopped" returns at once.
	if _, err := e.c.WaitMachine(c, app, m.ID, fly.WaitOptions{States: []string{fly.StateStopped}, Version: before.InstanceID, Timeout: 5 * time.Second}); err != nil {
		t.Errorf("wait for the replaced version to be stopped: %v", err)
	}

	// Signal reaches the process; with restart policy "no" it stays stopped.
	if err := e.c.SignalMachine(c, app, m.ID, "SIGTERM", ""); err != nil {
		t.Fatalf("signal: %v", err)
	}
	e.wait(t, app, m.ID, fly.StateStopped)

	// Events: newest first, millisecond timestamps, the exit recorded.
	evs, err := e.c.ListEvents(c, app, m.ID, 50)
	if err != nil || len(evs) < 8 {
		t.Fatalf("events = %d, %v", len(evs), err)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i-1].Timestamp < evs[i].Timestamp || evs[i-1].ID <= evs[i].ID {
			t.Errorf("events not newest first at %d: %+v then %+v", i, evs[i-1], evs[i])
		}
	}
	if ts := evs[0].Time(); time.Since(ts) > time.Hour || time.Since(ts) < -time.Minute {
		t.Errorf("event timestamp %d is not in milliseconds", evs[0].Timestamp)
	}
	if evs[0].Type != "exit" || evs[0].Request == nil || evs[0].Request.ExitEvent == nil || evs[0].Request.ExitEvent.Signal != 15 {
		t.Errorf("newest event = %+v, want the SIGTERM exit", evs[0])
	}
	if short, _ := e.c.ListEvents(c, app, m.ID, 2); len(short) != 2 {
		t.Errorf("events limit 2 gave %d", len(short))
	}

	// Destroy: a started machine needs force; a stopped one does not.
	if _, err := e.c.StartMachine(c, app, m.ID, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m.ID, fly.StateStarted)
	pid3 := e.srv.PIDs()[m.ID]
	if err := e.c.DestroyMachine(c, app, m.ID, false, ""); statusOf(err) != http.StatusPreconditionFailed {
		t.Errorf("destroy started machine without force: %v, want 412", err)
	}
	if err := e.c.DestroyMachine(c, app, m.ID, true, ""); err != nil {
		t.Fatalf("destroy with force: %v", err)
	}
	e.wait(t, app, m.ID, fly.StateDestroyed)
	waitGroupGone(t, pid3)
	if err := e.c.DestroyMachine(c, app, other.ID, false, ""); err != nil {
		t.Errorf("destroy created machine: %v", err)
	}
	if ids := list(fly.ListMachinesOptions{}); len(ids) != 0 {
		t.Errorf("list after destroy = %v", ids)
	}
	if ids := list(fly.ListMachinesOptions{IncludeDeleted: true}); len(ids) != 2 {
		t.Errorf("list include_deleted = %v", ids)
	}
	if _, err := e.c.StartMachine(c, app, m.ID, ""); !errors.Is(err, fly.ErrNotFound) {
		t.Errorf("start destroyed machine: %v, want not found", err)
	}
}

// TestOtherForms covers the forms other Fly clients send (fly-go's kill=true
// and numeric signals), cordoning, one secret by name, and updates of a
// machine that is not running.
func TestOtherForms(t *testing.T) {
	e := start(t, flyemu.Config{Latency: time.Millisecond})
	c := ctx(t)
	app := e.app(t, "kill")
	base := e.srv.URL + "/v1/apps/kill"

	if _, err := e.c.SetSecret(c, app, "TOKEN", "abc"); err != nil {
		t.Fatal(err)
	}
	code, _, body := raw(t, "GET", base+"/secrets/TOKEN?show_secrets=true", "")
	var sec fly.AppSecret
	if code != http.StatusOK || json.Unmarshal(body, &sec) != nil || sec.Name != "TOKEN" || sec.Value != "abc" {
		t.Errorf("get secret: %d %s", code, body)
	}
	if code, _, _ := raw(t, "GET", base+"/secrets/NOPE", ""); code != http.StatusNotFound {
		t.Errorf("get missing secret: %d", code)
	}

	m := e.create(t, app, fly.CreateMachineRequest{Config: shell("echo $$ > ready; exec sleep 1000")})
	e.wait(t, app, m.ID, fly.StateStarted)
	if err := e.c.CordonMachine(c, app, m.ID, ""); err != nil {
		t.Errorf("cordon: %v", err)
	}
	if got := e.get(t, app, m.ID); !got.Cordoned {
		t.Error("cordoned machine not reported cordoned")
	}
	if err := e.c.UncordonMachine(c, app, m.ID, ""); err != nil {
		t.Errorf("uncordon: %v", err)
	}
	if got := e.get(t, app, m.ID); got.Cordoned {
		t.Error("uncordoned machine still cordoned")
	}

	// fly-go's Kill sends the signal as a number.
	if code, _, body := raw(t, "POST", base+"/machines/"+m.ID+"/signal", `{"signal":9}`); code != http.StatusOK {
		t.Fatalf("numeric signal: %d %s", code, body)
	}
	e.wait(t, app, m.ID, fly.StateStopped)

	// Update of a stopped machine: skip_launch keeps it stopped, otherwise it starts.
	cfg := shell("exec sleep 1000")
	cfg.Metadata = map[string]string{"v": "2"}
	upd, err := e.c.UpdateMachine(c, app, m.ID, fly.UpdateMachineRequest{Config: cfg, SkipLaunch: true}, "")
	if err != nil {
		t.Fatalf("update with skip_launch: %v", err)
	}
	if got := e.get(t, app, m.ID); got.State != fly.StateStopped || got.InstanceID != upd.InstanceID {
		t.Errorf("after update with skip_launch: state %s version %s", got.State, got.InstanceID)
	}
	if _, running := e.srv.PIDs()[m.ID]; running {
		t.Error("update with skip_launch started a process")
	}
	if _, err := e.c.UpdateMachine(c, app, m.ID, fly.UpdateMachineRequest{Config: cfg}, ""); err != nil {
		t.Fatalf("update: %v", err)
	}
	e.wait(t, app, m.ID, fly.StateStarted)

	// fly-go's form of force.
	if code, _, body := raw(t, "DELETE", base+"/machines/"+m.ID+"?kill=true", ""); code != http.StatusOK {
		t.Fatalf("destroy with kill=true: %d %s", code, body)
	}
	e.wait(t, app, m.ID, fly.StateDestroyed)
	// Destroy is idempotent.
	if err := e.c.DestroyMachine(c, app, m.ID, false, ""); err != nil {
		t.Errorf("destroy a destroyed machine: %v", err)
	}
}

func TestSuspendKeepsMemory(t *testing.T) {
	e := start(t, flyemu.Config{})
	c := ctx(t)
	app := e.app(t, "susp")
	// The counter lives in the shell's memory; a new process would start at 1.
	m := e.create(t, app, fly.CreateMachineRequest{Config: shell(`i=0; while :; do i=$((i+1)); echo $i > count.tmp; mv count.tmp count; sleep 0.02; done`)})
	e.wait(t, app, m.ID, fly.StateStarted)
	count := filepath.Join(e.srv.MachineDir(app, m.ID), "count")
	eventually(t, "counter to reach 5", func() bool { n, ok := readInt(count); return ok && n >= 5 })
	pid := e.srv.PIDs()[m.ID]

	if err := e.c.SuspendMachine(c, app, m.ID, ""); err != nil {
		t.Fatalf("suspend: %v", err)
	}
	e.wait(t, app, m.ID, fly.StateSuspended)
	eventually(t, "every process of the group to be stopped", func() bool {
		members := groupMembers(pid)
		for _, st := range members {
			if st != "T" && st != "t" {
				return false
			}
		}
		return len(members) > 0
	})
	frozen, _ := readInt(count)

	sr, err := e.c.StartMachine(c, app, m.ID, "")
	if err != nil || sr.PreviousState != fly.StateSuspended {
		t.Fatalf("resume: %+v, %v", sr, err)
	}
	e.wait(t, app, m.ID, fly.StateStarted)
	if got := e.srv.PIDs()[m.ID]; got != pid {
		t.Errorf("resumed machine runs pid %d, want the same process %d", got, pid)
	}
	eventually(t, "counter to continue past the frozen value", func() bool {
		n, ok := readInt(count)
		return ok && n > frozen+3
	})

	// Stopping a suspended machine discards it; the next start is a new process.
	if err := e.c.SuspendMachine(c, app, m.ID, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.c.StopMachine(c, app, m.ID, fly.StopRequest{}, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m.ID, fly.StateStopped)
	waitGroupGone(t, pid)
	if _, err := e.c.StartMachine(c, app, m.ID, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m.ID, fly.StateStarted)
	if got := e.srv.PIDs()[m.ID]; got == pid || got == 0 {
		t.Errorf("start after stop runs pid %d, want a new process", got)
	}

	// Fly refuses to suspend machines above 2 GB.
	big := shell("exec sleep 1000")
	big.Guest = &fly.Guest{CPUKind: "performance", CPUs: 1, MemoryMB: 4096}
	bm := e.create(t, app, fly.CreateMachineRequest{Config: big})
	e.wait(t, app, bm.ID, fly.StateStarted)
	if err := e.c.SuspendMachine(c, app, bm.ID, ""); statusOf(err) != http.StatusPreconditionFailed {
		t.Errorf("suspend 4 GB machine: %v, want 412", err)
	}
}

func TestStopSignalAndTimeout(t *testing.T) {
	e := start(t, flyemu.Config{})
	c := ctx(t)
	app := e.app(t, "stops")

	// Default stop signal is SIGINT.
	m := e.create(t, app, fly.CreateMachineRequest{Config: shell(`trap 'echo INT > got; exit 0' INT; echo INT > ready; while :; do sleep 0.05; done`)})
	e.wait(t, app, m.ID, fly.StateStarted)
	ready(t, e.srv.MachineDir(app, m.ID), "INT")
	if err := e.c.StopMachine(c, app, m.ID, fly.StopRequest{}, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m.ID, fly.StateStopped)
	if got := readFile(filepath.Join(e.srv.MachineDir(app, m.ID), "got")); got != "INT" {
		t.Errorf("default stop delivered %q, want INT", got)
	}

	// stop_config's signal, overridden by the request's.
	cfg := shell(`trap 'echo TERM > got; exit 0' TERM; trap 'echo USR1 > got; exit 0' USR1; echo $$ > ready; while :; do sleep 0.05; done`)
	cfg.StopConfig = &fly.StopConfig{Signal: "SIGTERM"}
	m2 := e.create(t, app, fly.CreateMachineRequest{Config: cfg})
	e.wait(t, app, m2.ID, fly.StateStarted)
	ready(t, e.srv.MachineDir(app, m2.ID), strconv.Itoa(e.srv.PIDs()[m2.ID]))
	if err := e.c.StopMachine(c, app, m2.ID, fly.StopRequest{}, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m2.ID, fly.StateStopped)
	if got := readFile(filepath.Join(e.srv.MachineDir(app, m2.ID), "got")); got != "TERM" {
		t.Errorf("stop_config stop delivered %q, want TERM", got)
	}
	if _, err := e.c.StartMachine(c, app, m2.ID, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m2.ID, fly.StateStarted)
	ready(t, e.srv.MachineDir(app, m2.ID), strconv.Itoa(e.srv.PIDs()[m2.ID]))
	if err := e.c.StopMachine(c, app, m2.ID, fly.StopRequest{Signal: "SIGUSR1"}, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m2.ID, fly.StateStopped)
	if got := readFile(filepath.Join(e.srv.MachineDir(app, m2.ID), "got")); got != "USR1" {
		t.Errorf("stop with SIGUSR1 delivered %q", got)
	}

	// A process ignoring the signal is killed after the timeout.
	stubborn := e.create(t, app, fly.CreateMachineRequest{Config: shell(`trap '' INT; echo $$ > ready; while :; do sleep 0.05; done`)})
	e.wait(t, app, stubborn.ID, fly.StateStarted)
	pid := e.srv.PIDs()[stubborn.ID]
	ready(t, e.srv.MachineDir(app, stubborn.ID), strconv.Itoa(pid))
	if err := e.c.StopMachine(c, app, stubborn.ID, fly.StopRequest{Timeout: fly.NewDuration(200 * time.Millisecond)}, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, stubborn.ID, fly.StateStopped)
	waitGroupGone(t, pid)
	evs, _ := e.c.ListEvents(c, app, stubborn.ID, 0)
	if len(evs) == 0 || evs[0].Request == nil || evs[0].Request.ExitEvent == nil ||
		evs[0].Request.ExitEvent.Signal != 9 || !evs[0].Request.ExitEvent.RequestedStop {
		t.Errorf("exit of the stubborn machine = %+v, want SIGKILL on a requested stop", evs)
	}
}

func TestAutoDestroy(t *testing.T) {
	e := start(t, flyemu.Config{})
	c := ctx(t)
	app := e.app(t, "auto")
	cfg := shell(`exit 0`)
	cfg.AutoDestroy = true
	m := e.create(t, app, fly.CreateMachineRequest{Config: cfg})
	e.wait(t, app, m.ID, fly.StateDestroyed)

	// Also after a requested stop.
	cfg = shell(`exec sleep 1000`)
	cfg.AutoDestroy = true
	m2 := e.create(t, app, fly.CreateMachineRequest{Config: cfg})
	e.wait(t, app, m2.ID, fly.StateStarted)
	if err := e.c.StopMachine(c, app, m2.ID, fly.StopRequest{}, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m2.ID, fly.StateDestroyed)
	if ms, _ := e.c.ListMachines(c, app, fly.ListMachinesOptions{}); len(ms) != 0 {
		t.Errorf("machines left: %+v", ms)
	}
	if _, err := os.Stat(e.srv.MachineDir(app, m2.ID)); err == nil {
		eventually(t, "machine dir removal", func() bool {
			_, err := os.Stat(e.srv.MachineDir(app, m2.ID))
			return os.IsNotExist(err)
		})
	}
}

func TestRestartPolicy(t *testing.T) {
	e := start(t, flyemu.Config{})
	app := e.app(t, "policy")
	cases := []struct {
		name    string
		restart *fly.Restart
		script  string
		runs    int
	}{
		{"on-failure retries then stops", &fly.Restart{Policy: fly.RestartOnFailure, MaxRetries: 2}, `echo run >> runs; exit 3`, 3},
		{"on-failure leaves a clean exit alone", &fly.Restart{Policy: fly.RestartOnFailure, MaxRetries: 2}, `echo run >> runs; exit 0`, 1},
		{"no never restarts", &fly.Restart{Policy: fly.RestartNo}, `echo run >> runs; exit 3`, 1},
		{"always restarts a clean exit", &fly.Restart{Policy: fly.RestartAlways}, `echo run >> runs; n=$(wc -l < runs); [ "$n" -ge 4 ] && exec sleep 1000; exit 0`, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := shell(tc.script)
			cfg.Restart = tc.restart
			m := e.create(t, app, fly.CreateMachineRequest{Config: cfg})
			runs := filepath.Join(e.srv.MachineDir(app, m.ID), "runs")
			if tc.restart.Policy == fly.RestartAlways {
				eventually(t, "fourth run", func() bool { return strings.Count(readFile(runs), "run") == tc.runs })
				e.wait(t, app, m.ID, fly.StateStarted)
			} else {
				e.wait(t, app, m.ID, fly.StateStopped)
			}
			if n := strings.Count(readFile(runs), "run"); n != tc.runs {
				t.Errorf("ran %d times, want %d", n, tc.runs)
			}
		})
	}
}

func TestLeaseRace(t *testing.T) {
	e := start(t, flyemu.Config{})
	c := ctx(t)
	app := e.app(t, "lease")
	m := e.create(t, app, fly.CreateMachineRequest{Config: shell("exec sleep 1000"), SkipLaunch: true})
	other := newClient(t, e.srv.URL, "")
	clients := []*fly.Client{e.c, other}

	for round := range 5 {
		var wg sync.WaitGroup
		leases := make([]*fly.Lease, 2)
		errs := make([]error, 2)
		for i, cl := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				leases[i], errs[i] = cl.AcquireLease(c, app, m.ID, 30*time.Second, fmt.Sprintf("client %d", i))
			}()
		}
		wg.Wait()
		won := -1
		for i := range clients {
			if errs[i] == nil {
				if won >= 0 {
					t.Fatalf("round %d: both clients got the lease", round)
				}
				won = i
			} else if !errors.Is(errs[i], fly.ErrConflict) {
				t.Fatalf("round %d: loser got %v, want conflict", round, errs[i])
			}
		}
		if won < 0 {
			t.Fatalf("round %d: nobody got the lease: %v", round, errs)
		}
		nonce := leases[won].Nonce()
		loser := clients[1-won]
		if len(nonce) != 12 || leases[won].Data.Version != m.InstanceID {
			t.Errorf("lease = %+v", leases[won].Data)
		}
		// While held: the loser's mutations are refused, the winner's pass.
		if _, err := loser.StartMachine(c, app, m.ID, ""); !errors.Is(err, fly.ErrConflict) {
			t.Errorf("start without nonce: %v, want conflict", err)
		}
		if err := loser.SetMetadata(c, app, m.ID, "k", "v", "wrong-nonce"); !errors.Is(err, fly.ErrConflict) {
			t.Errorf("metadata with a wrong nonce: %v, want conflict", err)
		}
		if err := loser.DestroyMachine(c, app, m.ID, true, ""); !errors.Is(err, fly.ErrConflict) {
			t.Errorf("destroy without nonce: %v, want conflict", err)
		}
		if err := clients[won].SetMetadata(c, app, m.ID, "owner", fmt.Sprint(won), nonce); err != nil {
			t.Errorf("metadata with the nonce: %v", err)
		}
		got, err := loser.GetLease(c, app, m.ID)
		if err != nil || got.Nonce() != nonce {
			t.Errorf("get lease = %+v, %v", got, err)
		}
		ref, err := clients[won].RefreshLease(c, app, m.ID, nonce, time.Minute)
		if err != nil || ref.Nonce() != nonce || ref.Data.ExpiresAt < time.Now().Add(50*time.Second).Unix() {
			t.Errorf("refresh = %+v, %v", ref, err)
		}
		if err := loser.ReleaseLease(c, app, m.ID, "not-the-nonce"); !errors.Is(err, fly.ErrConflict) {
			t.Errorf("release with a wrong nonce: %v, want conflict", err)
		}
		if err := clients[won].ReleaseLease(c, app, m.ID, nonce); err != nil {
			t.Fatalf("release: %v", err)
		}
		if _, err := loser.GetLease(c, app, m.ID); !errors.Is(err, fly.ErrNotFound) {
			t.Errorf("get released lease: %v, want not found", err)
		}
	}

	// TTL in the query (fly-go's form), and expiry.
	code, _, body := raw(t, "POST", e.srv.URL+"/v1/apps/lease/machines/"+m.ID+"/lease?ttl=1", "")
	if code != http.StatusCreated || !strings.Contains(string(body), `"status":"success"`) {
		t.Fatalf("acquire with ?ttl=: %d %s", code, body)
	}
	eventually(t, "lease to expire", func() bool {
		_, err := e.c.GetLease(c, app, m.ID)
		return errors.Is(err, fly.ErrNotFound)
	})
	if _, err := e.c.StartMachine(c, app, m.ID, ""); err != nil {
		t.Errorf("start after the lease expired: %v", err)
	}

	// A machine created with lease_ttl comes back leased.
	lm := e.create(t, app, fly.CreateMachineRequest{Config: shell("exec sleep 1000"), SkipLaunch: true, LeaseTTL: 30})
	if lm.Nonce == "" {
		t.Fatal("create with lease_ttl returned no nonce")
	}
	if _, err := other.StartMachine(c, app, lm.ID, ""); !errors.Is(err, fly.ErrConflict) {
		t.Errorf("start of a machine leased at create: %v, want conflict", err)
	}
	if _, err := e.c.StartMachine(c, app, lm.ID, lm.Nonce); err != nil {
		t.Errorf("start with the create nonce: %v", err)
	}
}

func TestMetadata(t *testing.T) {
	e := start(t, flyemu.Config{})
	c := ctx(t)
	app := e.app(t, "meta")
	cfg := shell("exit 0")
	cfg.Metadata = map[string]string{"a": "1"}
	m := e.create(t, app, fly.CreateMachineRequest{Config: cfg, SkipLaunch: true})
	if err := e.c.SetMetadata(c, app, m.ID, "b", "2", ""); err != nil {
		t.Fatal(err)
	}
	if v, err := e.c.GetMetadataKey(c, app, m.ID, "b"); err != nil || v != "2" {
		t.Errorf("get key b = %q, %v", v, err)
	}
	if _, err := e.c.GetMetadataKey(c, app, m.ID, "zzz"); !errors.Is(err, fly.ErrNotFound) {
		t.Errorf("get missing key: %v", err)
	}
	if err := e.c.DeleteMetadata(c, app, m.ID, "a", ""); err != nil {
		t.Fatal(err)
	}
	md, err := e.c.GetMetadata(c, app, m.ID)
	if err != nil || len(md) != 1 || md["b"] != "2" {
		t.Errorf("metadata = %v, %v", md, err)
	}
	three, empty := "3", ""
	// PATCH merges; an empty value deletes.
	if err := e.c.UpdateMetadata(c, app, m.ID, fly.UpdateMetadataRequest{Metadata: map[string]*string{"c": &three, "b": &empty}, MachineVersion: m.InstanceID}, ""); err != nil {
		t.Fatalf("batch update: %v", err)
	}
	md, _ = e.c.GetMetadata(c, app, m.ID)
	if len(md) != 1 || md["c"] != "3" {
		t.Errorf("metadata after batch = %v", md)
	}
	if err := e.c.UpdateMetadata(c, app, m.ID, fly.UpdateMetadataRequest{Metadata: map[string]*string{"d": &three}, MachineVersion: "01HSTALESTALESTALESTALESTA"}, ""); !errors.Is(err, fly.ErrPreconditionFailed) {
		t.Errorf("batch update with a stale version: %v, want 412", err)
	}
	// PUT replaces the whole map.
	if code, _, body := raw(t, "PUT", e.srv.URL+"/v1/apps/meta/machines/"+m.ID+"/metadata", `{"metadata":{"only":"this"}}`); code != http.StatusNoContent {
		t.Fatalf("PUT metadata: %d %s", code, body)
	}
	md, _ = e.c.GetMetadata(c, app, m.ID)
	if len(md) != 1 || md["only"] != "this" {
		t.Errorf("metadata after PUT = %v", md)
	}
	if got := e.get(t, app, m.ID); got.Config.Metadata["only"] != "this" {
		t.Errorf("machine config metadata = %v", got.Config.Metadata)
	}
}

func TestWait(t *testing.T) {
	e := start(t, flyemu.Config{BootDelay: 50 * time.Millisecond})
	c := ctx(t)
	app := e.app(t, "wait")
	m := e.create(t, app, fly.CreateMachineRequest{Config: shell("exec sleep 1000")})
	w := e.wait(t, app, m.ID, fly.StateStarted)
	if !w.OK || w.State != fly.StateStarted || w.Version != m.InstanceID || len(w.EventID) != 26 {
		t.Errorf("wait = %+v", w)
	}
	// Several states, any of them.
	if w := e.wait(t, app, m.ID, fly.StateStopped, fly.StateStarted); w.State != fly.StateStarted {
		t.Errorf("wait stopped|started = %+v", w)
	}
	if w := e.wait(t, app, m.ID, fly.StateSettled); w.State != fly.StateStarted {
		t.Errorf("wait settled = %+v", w)
	}
	// A state that does not come: 408 per server call, ErrTimeout overall.
	_, err := e.c.WaitMachine(c, app, m.ID, fly.WaitOptions{States: []string{fly.StateStopped}, Timeout: time.Second})
	if !errors.Is(err, fly.ErrTimeout) {
		t.Errorf("wait for stopped: %v, want timeout", err)
	}
	code, er, _ := raw(t, "GET", e.srv.URL+"/v1/apps/wait/machines/"+m.ID+"/wait?state=stopped&timeout=1", "")
	if code != http.StatusRequestTimeout {
		t.Errorf("server wait timeout: %d %+v", code, er)
	}
	// Comma-separated states.
	if code, _, body := raw(t, "GET", e.srv.URL+"/v1/apps/wait/machines/"+m.ID+"/wait?state=stopped,started&timeout=5", ""); code != http.StatusOK {
		t.Errorf("comma states: %d %s", code, body)
	}
	// from_event_id: only what happens after that event counts.
	mark := w.EventID
	if err := e.c.StopMachine(c, app, m.ID, fly.StopRequest{}, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m.ID, fly.StateStopped)
	if _, err := e.c.StartMachine(c, app, m.ID, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m.ID, fly.StateStarted)
	after, err := e.c.WaitMachine(c, app, m.ID, fly.WaitOptions{States: []string{fly.StateStopped}, FromEventID: mark, Timeout: 5 * time.Second})
	if err != nil || after.State != fly.StateStopped || after.EventID <= mark {
		t.Errorf("wait stopped after %s = %+v, %v", mark, after, err)
	}
}

func TestBadInput(t *testing.T) {
	e := start(t, flyemu.Config{})
	c := ctx(t)
	app := e.app(t, "bad")
	m := e.create(t, app, fly.CreateMachineRequest{Config: shell("exec sleep 1000")})
	e.wait(t, app, m.ID, fly.StateStarted)
	base := e.srv.URL + "/v1/apps/bad/machines"

	// Through the client: Fly's 404s and 400s.
	if _, err := e.c.GetApp(c, "nope"); !errors.Is(err, fly.ErrNotFound) {
		t.Errorf("unknown app: %v", err)
	}
	if _, err := e.c.GetMachine(c, app, "0123456789abcd"); !errors.Is(err, fly.ErrNotFound) {
		t.Errorf("unknown machine: %v", err)
	}
	if _, err := e.c.ListMachines(c, "nope", fly.ListMachinesOptions{}); !errors.Is(err, fly.ErrNotFound) {
		t.Errorf("machines of an unknown app: %v", err)
	}
	guests := []struct {
		name  string
		guest fly.Guest
	}{
		{"memory not a multiple of 256", fly.Guest{CPUKind: "shared", CPUs: 1, MemoryMB: 300}},
		{"too much memory for shared", fly.Guest{CPUKind: "shared", CPUs: 1, MemoryMB: 4096}},
		{"too little memory for performance", fly.Guest{CPUKind: "performance", CPUs: 2, MemoryMB: 2048}},
		{"unknown cpu kind", fly.Guest{CPUKind: "quantum", CPUs: 1, MemoryMB: 256}},
		{"odd cpu count", fly.Guest{CPUKind: "shared", CPUs: 3, MemoryMB: 768}},
	}
	for _, g := range guests {
		cfg := shell("exit 0")
		cfg.Guest = &g.guest
		_, err := e.c.CreateMachine(c, app, fly.CreateMachineRequest{Config: cfg})
		var fe *fly.Error
		if !errors.As(err, &fe) || fe.StatusCode != http.StatusBadRequest || !strings.Contains(fe.Message, "guest") {
			t.Errorf("%s: %v, want 400 naming the guest", g.name, err)
		}
	}

	// Raw requests the client would never send.
	cases := []struct {
		name, method, url, body string
		status                  int
		msg                     string
	}{
		{"unknown app", "GET", e.srv.URL + "/v1/apps/nope", "", 404, "not found"},
		{"unknown machine", "GET", base + "/ffffffffffffff", "", 404, "not found"},
		{"unknown machine wait", "GET", base + "/ffffffffffffff/wait", "", 404, "not found"},
		{"malformed create", "POST", base, `{"config": {"image": `, 400, "invalid JSON"},
		{"malformed app", "POST", e.srv.URL + "/v1/apps", `not json`, 400, "invalid JSON"},
		{"malformed stop", "POST", base + "/" + m.ID + "/stop", `{"signal":`, 400, "invalid JSON"},
		{"missing image", "POST", base, `{"config": {}}`, 400, "image"},
		{"wrong type", "POST", base, `{"config": {"image": 5}}`, 400, "invalid JSON"},
		{"unknown wait state", "GET", base + "/" + m.ID + "/wait?state=sleeping", "", 400, "sleeping"},
		{"bad wait timeout", "GET", base + "/" + m.ID + "/wait?timeout=soon", "", 400, "timeout"},
		{"bad stop signal", "POST", base + "/" + m.ID + "/stop", `{"signal":"SIGBOGUS"}`, 400, "signal"},
		{"bad signal", "POST", base + "/" + m.ID + "/signal", `{"signal":"SIGNOPE"}`, 400, "signal"},
		{"bad restart policy", "POST", base, `{"config":{"image":"x","restart":{"policy":"sometimes"}}}`, 400, "restart"},
		{"bad app name", "POST", e.srv.URL + "/v1/apps", `{"name":"Bad Name!","org_slug":"personal"}`, 400, "app name"},
		{"no app name", "POST", e.srv.URL + "/v1/apps", `{"org_slug":"personal"}`, 400, "name"},
		{"bad lease ttl", "POST", base + "/" + m.ID + "/lease?ttl=forever", "", 400, "ttl"},
		{"release without nonce", "DELETE", base + "/" + m.ID + "/lease", "", 400, "nonce"},
		{"bad events limit", "GET", base + "/" + m.ID + "/events?limit=-1", "", 400, "limit"},
		{"unknown endpoint", "GET", e.srv.URL + "/v1/nothing/here", "", 404, "no such endpoint"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, er, body := raw(t, tc.method, tc.url, tc.body)
			if code != tc.status || !strings.Contains(er.Error, tc.msg) {
				t.Errorf("%s %s = %d %s, want %d mentioning %q", tc.method, tc.url, code, body, tc.status, tc.msg)
			}
		})
	}
	// Nothing above disturbed the running machine.
	if got := e.get(t, app, m.ID); got.State != fly.StateStarted {
		t.Errorf("machine state %s after bad input", got.State)
	}
}

func TestToken(t *testing.T) {
	e := start(t, flyemu.Config{Token: "tok-123"})
	c := ctx(t)
	if _, err := e.c.ListApps(c, "personal"); err != nil {
		t.Errorf("with the token: %v", err)
	}
	anon := newClient(t, e.srv.URL, "")
	if _, err := anon.ListApps(c, "personal"); !errors.Is(err, fly.ErrUnauthorized) {
		t.Errorf("without a token: %v, want unauthorized", err)
	}
	wrong := newClient(t, e.srv.URL, "tok-999")
	if _, err := wrong.ListApps(c, "personal"); !errors.Is(err, fly.ErrUnauthorized) {
		t.Errorf("with a wrong token: %v, want unauthorized", err)
	}
	for _, h := range []string{"Bearer tok-123", "FlyV1 tok-123", "FlyV1 fm2_other,tok-123"} {
		if code, _, _ := raw(t, "GET", e.srv.URL+"/v1/apps?org_slug=personal", "", "Authorization", h); code != http.StatusOK {
			t.Errorf("Authorization %q: %d", h, code)
		}
	}
	if code, _, _ := raw(t, "GET", e.srv.URL+"/v1/apps?org_slug=personal", "", "Authorization", "Basic tok-123"); code != http.StatusUnauthorized {
		t.Errorf("Basic scheme: %d, want 401", code)
	}
}

func TestRateLimit(t *testing.T) {
	e := start(t, flyemu.Config{RetryAfter: true})
	app := e.app(t, "rl")
	m := e.create(t, app, fly.CreateMachineRequest{Config: shell("exit 0"), SkipLaunch: true})
	// Burst 3 at 1 req/s: a quick run of calls on one machine hits the limit.
	limited := false
	for range 50 {
		code, _, _ := rawOnce(t, "POST", e.srv.URL+"/v1/apps/rl/machines/"+m.ID+"/cordon", "")
		if code == http.StatusTooManyRequests {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("50 quick cordons on one machine were never rate limited")
	}
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/apps/rl/machines/"+m.ID+"/cordon", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// The client honours Retry-After and gets through.
	if err := e.c.CordonMachine(ctx(t), app, m.ID, ""); err != nil {
		t.Errorf("client through the rate limit: %v", err)
	}
}

// TestRateLimitTable checks Fly's table as the emulator applies it by
// default: no Retry-After; gets 10 at once; lists and creates per app, 3 at
// once; other machines and other apps have their own budgets.
func TestRateLimitTable(t *testing.T) {
	e := start(t, flyemu.Config{})
	app := e.app(t, "tbl")
	other := e.app(t, "tbl2")
	m := e.create(t, app, fly.CreateMachineRequest{Config: shell("exit 0"), SkipLaunch: true})
	n := e.create(t, app, fly.CreateMachineRequest{Config: shell("exit 0"), SkipLaunch: true})
	burst := func(path string, calls int) (ok int, retryAfter bool) {
		for range calls {
			req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ok++
			}
			if resp.Header.Get("Retry-After") != "" {
				retryAfter = true
			}
		}
		return ok, retryAfter
	}
	// Calls come faster than the refill (5/s for gets): allow one extra.
	if ok, ra := burst("/v1/apps/tbl/machines/"+m.ID, 12); ok < 10 || ok > 11 || ra {
		t.Errorf("12 quick gets: %d ok (want 10-11), Retry-After %v", ok, ra)
	}
	if ok, _ := burst("/v1/apps/tbl/machines/"+n.ID, 10); ok != 10 {
		t.Errorf("gets of another machine: %d ok, want 10", ok)
	}
	if ok, _ := burst("/v1/apps/tbl/machines", 5); ok < 3 || ok > 4 {
		t.Errorf("5 quick lists: %d ok, want 3-4", ok)
	}
	if ok, _ := burst("/v1/apps/tbl2/machines", 3); ok != 3 {
		t.Errorf("lists of another app: %d ok, want 3", ok)
	}
	if e.srv.RateLimited() == 0 {
		t.Error("no 429 counted")
	}
	_ = other
}

func TestImages(t *testing.T) {
	dir := t.TempDir()
	jsonFile := filepath.Join(dir, "images.json")
	os.WriteFile(jsonFile, []byte(`{"images": {"example/worker": {"entrypoint": ["sh", "-c"], "cmd": ["echo default > out; exec sleep 1000"], "env": {"FROM_IMAGE": "yes"}}}}`), 0o644)
	hclFile := filepath.Join(dir, "images.hcl")
	os.WriteFile(hclFile, []byte(`
image "example/worker" {
  entrypoint = ["sh", "-c"]
  cmd        = ["echo default > out; exec sleep 1000"]
  env        = { FROM_IMAGE = "yes" }
}
`), 0o644)
	var images map[string]flyemu.Image
	for _, f := range []string{jsonFile, hclFile} {
		got, err := flyemu.LoadImages(f)
		if err != nil {
			t.Fatalf("load %s: %v", f, err)
		}
		if img := got["example/worker"]; len(img.Entrypoint) != 2 || img.Env["FROM_IMAGE"] != "yes" {
			t.Errorf("%s: %+v", f, got)
		}
		images = got
	}
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte(`image "x" { entrypoint = 5 `), 0o644)
	if _, err := flyemu.LoadImages(bad); err == nil {
		t.Error("broken images file loaded")
	}

	e := start(t, flyemu.Config{Images: images, AgentBinary: "/nonexistent/hangar-agent"})
	c := ctx(t)
	app := e.app(t, "img")
	// The image's command, matched without its tag.
	m := e.create(t, app, fly.CreateMachineRequest{Config: &fly.MachineConfig{Image: "example/worker:v3"}})
	e.wait(t, app, m.ID, fly.StateStarted)
	out := filepath.Join(e.srv.MachineDir(app, m.ID), "out")
	eventually(t, "image command output", func() bool { return readFile(out) == "default" })
	// init.cmd replaces the image's cmd, keeping its entrypoint.
	m2 := e.create(t, app, fly.CreateMachineRequest{Config: &fly.MachineConfig{Image: "example/worker:v3",
		Init: &fly.Init{Cmd: []string{`echo "custom $FROM_IMAGE" > out; exec sleep 1000`}}}})
	e.wait(t, app, m2.ID, fly.StateStarted)
	eventually(t, "init.cmd output", func() bool { return readFile(filepath.Join(e.srv.MachineDir(app, m2.ID), "out")) == "custom yes" })
	// An unmapped image runs the agent binary; a missing binary fails the machine.
	m3 := e.create(t, app, fly.CreateMachineRequest{Config: &fly.MachineConfig{Image: "example/unmapped:1"}})
	if w, err := e.c.WaitMachine(c, app, m3.ID, fly.WaitOptions{States: []string{fly.StateFailed}, Timeout: 10 * time.Second}); err != nil || w.State != fly.StateFailed {
		t.Errorf("unmapped image with a missing agent: %+v, %v", w, err)
	}

	// An unmapped image runs the agent binary, working inside its machine dir.
	agent := filepath.Join(dir, "fake-agent")
	os.WriteFile(agent, []byte("#!/bin/sh\necho \"$HANGAR_WORKSPACE $*\" > ws\nexec sleep 1000\n"), 0o755)
	e2 := start(t, flyemu.Config{AgentBinary: agent})
	app2 := e2.app(t, "agent")
	m4 := e2.create(t, app2, fly.CreateMachineRequest{Config: &fly.MachineConfig{Image: "registry.example/hangar-worker:1",
		Init: &fly.Init{Cmd: []string{"--flag"}}}})
	e2.wait(t, app2, m4.ID, fly.StateStarted)
	eventually(t, "agent output", func() bool {
		return readFile(filepath.Join(e2.srv.MachineDir(app2, m4.ID), "ws")) == "workspace --flag"
	})
}

func TestFaultInjectionBatch(t *testing.T) {
	e := start(t, flyemu.Config{FaultRate: 0.2, FaultSeed: 42})
	c := ctx(t)
	app := e.app(t, "faults")
	const cycles, workers = 50, 5
	work := make(chan int)
	errs := make(chan error, cycles)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				errs <- cycle(c, e.c, app, i)
			}
		}()
	}
	for i := range cycles {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	ms, err := e.c.ListMachines(c, app, fly.ListMachinesOptions{})
	if err != nil || len(ms) != 0 {
		t.Errorf("machines left: %d, %v", len(ms), err)
	}
	all, err := e.c.ListMachines(c, app, fly.ListMachinesOptions{IncludeDeleted: true})
	if err != nil || len(all) != cycles {
		t.Errorf("destroyed machines listed: %d, want %d (%v)", len(all), cycles, err)
	}
	if n := e.srv.ProcessCount(); n != 0 {
		t.Errorf("%d processes left", n)
	}
	// 50 cycles make well over 300 calls: at 20 % dozens of them failed.
	if n := e.srv.FaultsInjected(); n < 30 {
		t.Errorf("only %d faults injected", n)
	}
	t.Logf("%d faults injected", e.srv.FaultsInjected())
	pids := e.srv.LaunchedPIDs()
	if len(pids) < cycles {
		t.Errorf("only %d processes launched for %d cycles", len(pids), cycles)
	}
	for _, pid := range pids {
		waitGroupGone(t, pid)
	}
}

// cycle creates, starts, stops and destroys one machine.
func cycle(c context.Context, cl *fly.Client, app string, i int) error {
	name := fmt.Sprintf("cycle-%d", i)
	m, err := cl.CreateMachine(c, app, fly.CreateMachineRequest{Name: name, Config: shell("exec sleep 1000"), SkipLaunch: true})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	wait := func(state string) error {
		_, err := cl.WaitMachine(c, app, m.ID, fly.WaitOptions{States: []string{state}, Timeout: 30 * time.Second})
		return err
	}
	steps := []func() error{
		func() error { _, err := cl.StartMachine(c, app, m.ID, ""); return err },
		func() error { return wait(fly.StateStarted) },
		func() error { return cl.StopMachine(c, app, m.ID, fly.StopRequest{}, "") },
		func() error { return wait(fly.StateStopped) },
		func() error { return cl.DestroyMachine(c, app, m.ID, false, "") },
		func() error { return wait(fly.StateDestroyed) },
	}
	for n, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("%s step %d: %w", name, n, err)
		}
	}
	return nil
}

func TestCloseLeavesNoProcess(t *testing.T) {
	e, err := flyemu.New(flyemu.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptestServer(t, e)
	cl := newClient(t, srv, "")
	c := ctx(t)
	if _, err := cl.CreateApp(c, fly.CreateAppRequest{Name: "close", OrgSlug: "personal"}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 3 {
		// A child in the group outlives nothing: the whole group goes.
		m, err := cl.CreateMachine(c, "close", fly.CreateMachineRequest{Config: shell(fmt.Sprintf(`sleep 1000 & trap '' INT TERM; echo %d; wait`, i))})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.WaitMachine(c, "close", m.ID, fly.WaitOptions{Timeout: 30 * time.Second}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	if err := cl.SuspendMachine(c, "close", ids[0], ""); err != nil {
		t.Fatal(err)
	}
	pids := e.LaunchedPIDs()
	eventually(t, "children to start", func() bool {
		for _, p := range pids {
			if len(groupMembers(p)) < 2 {
				return false
			}
		}
		return true
	})
	if err := e.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	for _, p := range pids {
		waitGroupGone(t, p)
	}
	if n := e.ProcessCount(); n != 0 {
		t.Errorf("%d processes after close", n)
	}
}

// ready waits until the machine's script has written want to its "ready"
// file, i.e. has installed its signal traps.
func ready(t *testing.T, dir, want string) {
	t.Helper()
	eventually(t, "machine script to be ready", func() bool { return readFile(filepath.Join(dir, "ready")) == want })
}

func TestProcessOutput(t *testing.T) {
	var logs syncbuf.Buffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	e := start(t, flyemu.Config{Logger: logger, LogProcessOutput: true})
	app := e.app(t, "out")
	m := e.create(t, app, fly.CreateMachineRequest{Config: shell("echo hello-stdout; echo hello-stderr >&2; exec sleep 1000")})
	e.wait(t, app, m.ID, fly.StateStarted)
	logFile := filepath.Join(e.srv.MachineDir(app, m.ID), "machine.log")
	eventually(t, "output in machine.log and the logger", func() bool {
		f, l := readFile(logFile), logs.String()
		return strings.Contains(f, "hello-stdout") && strings.Contains(f, "hello-stderr") &&
			strings.Contains(l, "hello-stdout") && strings.Contains(l, "hello-stderr") && strings.Contains(l, m.ID)
	})
	if got, ok := e.srv.Machine(app, m.ID); !ok || got.State != fly.StateStarted || got.ID != m.ID {
		t.Errorf("Machine lookup = %+v, %v", got, ok)
	}
	if _, ok := e.srv.Machine(app, "nope"); ok {
		t.Error("Machine lookup found an unknown machine")
	}
}

// TestEscapedDescendants: a child that started its own session (as a PTY
// child does) is frozen, resumed and killed with its machine.
func TestEscapedDescendants(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, flyemu.Config{})
	c := ctx(t)
	app := e.app(t, "escape")
	cfg := shell(`"$SELF" & echo $! > child; wait`)
	cfg.Env = map[string]string{"SELF": self, helperEnv: "setsid-sleep"}
	m := e.create(t, app, fly.CreateMachineRequest{Config: cfg})
	e.wait(t, app, m.ID, fly.StateStarted)
	childFile := filepath.Join(e.srv.MachineDir(app, m.ID), "child")
	eventually(t, "child pid", func() bool { _, ok := readInt(childFile); return ok })
	child, _ := readInt(childFile)
	state := func() string { return groupMembers(child)[child] }
	eventually(t, "child in its own group", func() bool { return state() != "" })

	if err := e.c.SuspendMachine(c, app, m.ID, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "escaped child to be stopped", func() bool { s := state(); return s == "T" || s == "t" })
	if _, err := e.c.StartMachine(c, app, m.ID, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "escaped child to run again", func() bool { s := state(); return s == "S" || s == "R" })
	if err := e.c.DestroyMachine(c, app, m.ID, true, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m.ID, fly.StateDestroyed)
	waitGroupGone(t, child)
}

func TestRegionFull(t *testing.T) {
	e := start(t, flyemu.Config{})
	c := ctx(t)
	app := e.app(t, "full")
	e.srv.SetRegionFull("syd", true)
	_, err := e.c.CreateMachine(c, app, fly.CreateMachineRequest{Config: shell("exit 0"), Region: "syd", SkipLaunch: true})
	if !errors.Is(err, fly.ErrInsufficientCapacity) {
		t.Errorf("create in a full region: %v, want insufficient capacity", err)
	}
	if _, err := e.c.CreateMachine(c, app, fly.CreateMachineRequest{Config: shell("exit 0"), Region: "nrt", SkipLaunch: true}); err != nil {
		t.Errorf("create in another region: %v", err)
	}
	e.srv.SetRegionFull("syd", false)
	stopped, err := e.c.CreateMachine(c, app, fly.CreateMachineRequest{Config: shell("exec sleep 1000"), Region: "syd", SkipLaunch: true})
	if err != nil {
		t.Fatalf("create after the region has room again: %v", err)
	}
	// A machine that holds no resources (created or stopped) cannot start
	// in a full region either; one that is running keeps its place.
	e.srv.SetRegionFull("syd", true)
	if _, err := e.c.StartMachine(c, app, stopped.ID, ""); !errors.Is(err, fly.ErrInsufficientCapacity) {
		t.Errorf("start in a full region: %v, want insufficient capacity", err)
	}
	if got, err := e.c.GetMachine(c, app, stopped.ID); err != nil || got.State != fly.StateCreated {
		t.Errorf("machine after the refused start: %+v, %v; want it still created", got, err)
	}
	e.srv.SetRegionFull("syd", false)
	if _, err := e.c.StartMachine(c, app, stopped.ID, ""); err != nil {
		t.Errorf("start once the region has room: %v", err)
	}
	e.wait(t, app, stopped.ID, fly.StateStarted)
}

// TestStuckCreated: a machine created without launch may refuse to start
// for a while (412), as machines stuck in "created" do on Fly.
func TestStuckCreated(t *testing.T) {
	e := start(t, flyemu.Config{UnstartableAfterCreate: time.Hour})
	c := ctx(t)
	app := e.app(t, "stuck")
	m := e.create(t, app, fly.CreateMachineRequest{Config: shell("exec sleep 1000"), SkipLaunch: true})
	if _, err := e.c.StartMachine(c, app, m.ID, ""); !errors.Is(err, fly.ErrPreconditionFailed) {
		t.Errorf("start of a stuck machine: %v, want 412", err)
	}
	// Launched at create: never stuck.
	launched := e.create(t, app, fly.CreateMachineRequest{Config: shell("exec sleep 1000")})
	e.wait(t, app, launched.ID, fly.StateStarted)
	if err := e.srv.SetStartable(app, m.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.StartMachine(c, app, m.ID, ""); err != nil {
		t.Fatalf("start once startable: %v", err)
	}
	e.wait(t, app, m.ID, fly.StateStarted)
	if err := e.srv.SetStartable(app, "nope", true); err == nil {
		t.Error("SetStartable of an unknown machine: no error")
	}
}

// TestMigrate: a migration stops the machine as a stop would and starts a
// new process at a new private IP.
func TestMigrate(t *testing.T) {
	e := start(t, flyemu.Config{})
	c := ctx(t)
	app := e.app(t, "moving")
	m := e.create(t, app, fly.CreateMachineRequest{Config: shell("exec sleep 1000")})
	e.wait(t, app, m.ID, fly.StateStarted)
	pid := e.srv.PIDs()[m.ID]
	if err := e.srv.Migrate(app, m.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the machine to run again as a new process", func() bool {
		p := e.srv.PIDs()[m.ID]
		return p != 0 && p != pid
	})
	e.wait(t, app, m.ID, fly.StateStarted)
	got, err := e.c.GetMachine(c, app, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.PrivateIP == m.PrivateIP || got.PrivateIP == "" {
		t.Errorf("private IP after the migration = %q, before %q: want a new one", got.PrivateIP, m.PrivateIP)
	}
	// The old place is released: a destroy after the move leaves nothing.
	if err := e.c.DestroyMachine(c, app, m.ID, true, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m.ID, fly.StateDestroyed)
	if err := e.srv.Migrate(app, m.ID); err == nil {
		t.Error("migrate a destroyed machine: no error")
	}
}

func TestExec(t *testing.T) {
	e := start(t, flyemu.Config{})
	app := e.app(t, "exec")
	cfg := shell("exec sleep 1000")
	cfg.Env = map[string]string{"WHO": "machine"}
	m := e.create(t, app, fly.CreateMachineRequest{Config: cfg})
	e.wait(t, app, m.ID, fly.StateStarted)
	// Exec has no client method; send it through the spec-checking transport.
	hc := flyspec.CheckingClient(t)
	url := e.srv.URL + "/v1/apps/exec/machines/" + m.ID + "/exec"
	post := func(body string) (int, map[string]any) {
		t.Helper()
		resp, err := hc.Post(url, "application/json", strings.NewReader(body))
		for i := 0; err == nil && resp.StatusCode == http.StatusTooManyRequests && i < 40; i++ {
			// Fly's limit on exec (1/s, burst 3): wait as a paced client would.
			resp.Body.Close()
			time.Sleep(250 * time.Millisecond)
			resp, err = hc.Post(url, "application/json", strings.NewReader(body))
		}
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	code, out := post(`{"command":["sh","-c","cat; echo \"$WHO $FLY_MACHINE_ID\"; pwd; echo oops >&2; exit 4"],"stdin":"in:"}`)
	want := "in:machine " + m.ID + "\n" + e.srv.MachineDir(app, m.ID) + "\n"
	if code != http.StatusOK || out["stdout"] != want || out["stderr"] != "oops\n" || out["exit_code"] != float64(4) {
		t.Errorf("exec = %d %v, want stdout %q", code, out, want)
	}
	if code, out := post(`{"cmd":"true"}`); code != http.StatusOK || out["exit_code"] != float64(0) {
		t.Errorf("exec with cmd = %d %v", code, out)
	}
	if code, out := post(`{"command":["sleep","5"],"timeout":1}`); code != http.StatusRequestTimeout {
		t.Errorf("exec past its timeout = %d %v", code, out)
	}
	if code, out := post(`{"command":["/nonexistent/tool"]}`); code != http.StatusBadRequest {
		t.Errorf("exec of a missing program = %d %v", code, out)
	}
	if err := e.c.StopMachine(ctx(t), app, m.ID, fly.StopRequest{}, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m.ID, fly.StateStopped)
	if code, out := post(`{"command":["true"]}`); code != http.StatusPreconditionFailed {
		t.Errorf("exec on a stopped machine = %d %v", code, out)
	}
}

// TestFlyFailures covers the switchable ways Fly fails: 404 right after a
// create, 408s, a missing batch metadata endpoint and an unreachable host.
func TestFlyFailures(t *testing.T) {
	t.Run("not found after create", func(t *testing.T) {
		e := start(t, flyemu.Config{NotFoundAfterCreate: 300 * time.Millisecond})
		app := e.app(t, "fresh")
		if code, _, _ := rawOnce(t, "GET", e.srv.URL+"/v1/apps/fresh/machines", ""); code != http.StatusNotFound {
			t.Errorf("list right after the app create = %d, want 404", code)
		}
		// The client retries 404s of what it just created.
		m := e.create(t, app, fly.CreateMachineRequest{Config: shell("exit 0"), SkipLaunch: true})
		if _, err := e.c.GetMachine(ctx(t), app, m.ID); err != nil {
			t.Errorf("client get right after create: %v", err)
		}
		if _, err := e.c.ListMachines(ctx(t), app, fly.ListMachinesOptions{}); err != nil {
			t.Errorf("client list right after create: %v", err)
		}
	})
	t.Run("408", func(t *testing.T) {
		e := start(t, flyemu.Config{TimeoutRate: 0.3, FaultSeed: 7})
		app := e.app(t, "slow")
		m := e.create(t, app, fly.CreateMachineRequest{Config: shell("exit 0"), SkipLaunch: true, Name: "named"})
		for range 5 {
			if _, err := e.c.GetMachine(ctx(t), app, m.ID); err != nil {
				t.Fatalf("get through 408s: %v", err)
			}
		}
		if e.srv.FaultsInjected() == 0 {
			t.Error("no 408 injected")
		}
	})
	t.Run("no batch metadata", func(t *testing.T) {
		e := start(t, flyemu.Config{NoBatchMetadata: true})
		app := e.app(t, "meta")
		m := e.create(t, app, fly.CreateMachineRequest{Config: shell("exit 0"), SkipLaunch: true})
		if code, _, _ := raw(t, "PATCH", e.srv.URL+"/v1/apps/meta/machines/"+m.ID+"/metadata", `{"metadata":{"a":"1"}}`); code != http.StatusNotFound {
			t.Errorf("batch metadata = %d, want 404", code)
		}
		v := "1"
		if err := e.c.UpdateMetadata(ctx(t), app, m.ID, fly.UpdateMetadataRequest{Metadata: map[string]*string{"a": &v}}, ""); err != nil {
			t.Fatalf("client update metadata: %v", err)
		}
		if md, err := e.c.GetMetadata(ctx(t), app, m.ID); err != nil || md["a"] != "1" {
			t.Errorf("metadata after the per-key fallback = %v, %v", md, err)
		}
	})
	t.Run("unreachable host", func(t *testing.T) {
		e := start(t, flyemu.Config{})
		app := e.app(t, "host")
		cfg := shell("exit 0")
		cfg.Metadata = map[string]string{"role": "template"}
		m := e.create(t, app, fly.CreateMachineRequest{Config: cfg, SkipLaunch: true})
		if err := e.srv.SetHostReachable(app, m.ID, false); err != nil {
			t.Fatal(err)
		}
		got, err := e.c.GetMachine(ctx(t), app, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Config != nil || got.IncompleteConfig == nil || got.GetConfig().Metadata["role"] != "template" || !got.HostUnreachable() {
			t.Errorf("machine on an unreachable host = host_status %q config %v incomplete %v", got.HostStatus, got.Config, got.IncompleteConfig)
		}
		if _, err := e.c.StartMachine(ctx(t), app, m.ID, ""); fly.StatusCode(err) != http.StatusServiceUnavailable {
			t.Errorf("start on an unreachable host: %v, want 503", err)
		}
		if err := e.srv.SetHostReachable(app, m.ID, true); err != nil {
			t.Fatal(err)
		}
		if got, err := e.c.GetMachine(ctx(t), app, m.ID); err != nil || got.Config == nil || got.HostUnreachable() {
			t.Errorf("back: %+v, %v", got, err)
		}
	})
}

// TestLostSnapshotBootsCold: a resume whose snapshot Fly lost is a cold
// boot, a new process.
func TestLostSnapshotBootsCold(t *testing.T) {
	e := start(t, flyemu.Config{})
	c := ctx(t)
	app := e.app(t, "lost")
	m := e.create(t, app, fly.CreateMachineRequest{Config: shell("exec sleep 1000")})
	e.wait(t, app, m.ID, fly.StateStarted)
	pid := e.srv.PIDs()[m.ID]
	if err := e.c.SuspendMachine(c, app, m.ID, ""); err != nil {
		t.Fatalf("suspend: %v", err)
	}
	e.wait(t, app, m.ID, fly.StateSuspended)
	if err := e.srv.LoseSnapshot(app, m.ID); err != nil {
		t.Fatal(err)
	}
	if sr, err := e.c.StartMachine(c, app, m.ID, ""); err != nil || sr.PreviousState != fly.StateSuspended {
		t.Fatalf("resume: %+v, %v", sr, err)
	}
	e.wait(t, app, m.ID, fly.StateStarted)
	eventually(t, "a new process", func() bool {
		p := e.srv.PIDs()[m.ID]
		return p != 0 && p != pid
	})
}
