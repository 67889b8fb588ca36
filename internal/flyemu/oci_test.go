//go:build linux

package flyemu_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/flyemu"
	"github.com/hangarhq/hangar/internal/flyspec"
)

const testImage = "test/helper:1"

// requireImageMode skips when containers cannot exist here (not root);
// a missing runc is a setup error (.ci/run installs it).
func requireImageMode(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("image mode runs containers with runc: needs root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatal("runc is not installed (apt-get install runc; .ci/run does)")
	}
}

// helperStore writes an OCI layout holding testImage: a static build of
// testdata/imagehelper as entrypoint, a non-root user, env and workdir.
func helperStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "imagehelper")
	build := exec.Command("go", "build", "-o", bin, "./testdata/imagehelper")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build imagehelper: %v\n%s", err, out)
	}
	prog, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	add := func(h *tar.Header, body []byte) {
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin/", "etc/", "var/", "work/", "home/"} {
		add(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755}, nil)
	}
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777}, nil)
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "home/app/", Mode: 0o755, Uid: 1000, Gid: 1000}, nil)
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/imagehelper", Mode: 0o755}, prog)
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644}, []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"))
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/group", Mode: 0o644}, []byte("root:x:0:\napp:x:1000:\nextra:x:1500:app\n"))
	// /var is writable by the user only through the rootfs's own mode.
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "var/", Mode: 0o1777}, nil)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	blob := func(b []byte) string {
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:])
		p := filepath.Join(store, "blobs", "sha256", h)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return "sha256:" + h
	}
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	layerDigest := blob(layer.Bytes())
	cfg := mustJSON(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{
			"User": "app", "Entrypoint": []string{"/bin/imagehelper"}, "Cmd": []string{"idle"},
			"Env":        []string{"PATH=/bin", "HOME=/home/app", "IMAGE_VAR=from-image"},
			"WorkingDir": "/work",
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	cfgDigest := blob(cfg)
	manifest := mustJSON(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgDigest, "size": len(cfg)},
		"layers": []map[string]any{{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layer.Len()}},
	})
	manDigest := blob(manifest)
	index := mustJSON(map[string]any{"schemaVersion": 2, "manifests": []map[string]any{{
		"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manDigest, "size": len(manifest),
		"annotations": map[string]string{"org.opencontainers.image.ref.name": testImage},
	}}})
	if err := os.WriteFile(filepath.Join(store, "index.json"), index, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(store, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return store
}

// logHas waits until the machine's log holds line.
func logHas(t *testing.T, e *env, app, id, line string) string {
	t.Helper()
	p := filepath.Join(e.srv.MachineDir(app, id), "machine.log")
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := readFile(p)
		if strings.Contains(got, line) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("machine log does not show %q:\n%s", line, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func launchMode(t *testing.T, e *env, app, id string) string {
	t.Helper()
	evs, err := e.c.ListEvents(ctx(t), app, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs { // newest first
		if ev.Request != nil && ev.Request.Mode != "" {
			return ev.Request.Mode
		}
	}
	return ""
}

func TestImageMode(t *testing.T) {
	requireImageMode(t)
	store := helperStore(t)
	e := start(t, flyemu.Config{ImageStore: store})
	c := ctx(t)
	app := e.app(t, "img")
	cfg := &fly.MachineConfig{
		Image:   testImage,
		Env:     map[string]string{"MACHINE_VAR": "x"},
		Guest:   &fly.Guest{CPUKind: "shared", CPUs: 1, MemoryMB: 256},
		Restart: &fly.Restart{Policy: fly.RestartNo},
	}
	m := e.create(t, app, fly.CreateMachineRequest{Config: cfg})
	e.wait(t, app, m.ID, fly.StateStarted)
	if got := launchMode(t, e, app, m.ID); got != "image" {
		t.Errorf("launch event mode = %q, want image", got)
	}
	out := logHas(t, e, app, m.ID, "token ")
	for _, want := range []string{
		"uid=1000 gid=1000 cwd=/work host=" + m.ID + " pid=1",
		"env IMAGE_VAR=from-image", "env HOME=/home/app", "env PATH=/bin",
		"env FLY_MACHINE_ID=" + m.ID, "env HANGAR_FLY_API_SOCKET=/.fly/api", "env FLY_VM_MEMORY_MB=256",
		"env FLY_PRIVATE_IP=" + m.PrivateIP,
		"rootfs fresh", "token ok",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("machine log lacks %q:\n%s", want, out)
		}
	}

	// Stop: Fly's default SIGINT reaches the entrypoint, which exits 0.
	if err := e.c.StopMachine(c, app, m.ID, fly.StopRequest{}, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m.ID, fly.StateStopped)
	logHas(t, e, app, m.ID, "got interrupt")
	evs, _ := e.c.ListEvents(c, app, m.ID, 0)
	if x := evs[0].Request; x == nil || x.ExitEvent == nil || x.ExitEvent.ExitCode != 0 || x.ExitEvent.OOMKilled {
		t.Errorf("exit after stop = %+v, want code 0", evs[0])
	}

	// A new start boots a fresh rootfs: the marker written last time is gone.
	if _, err := e.c.StartMachine(c, app, m.ID, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m.ID, fly.StateStarted)
	eventually(t, "second boot to report its rootfs", func() bool {
		return strings.Count(readFile(filepath.Join(e.srv.MachineDir(app, m.ID), "machine.log")), "rootfs ") == 2
	})
	if out := readFile(filepath.Join(e.srv.MachineDir(app, m.ID), "machine.log")); strings.Contains(out, "rootfs stale") {
		t.Errorf("second boot saw the first boot's rootfs change:\n%s", out)
	}

	// Exec runs inside the running container, which it leaves running.
	resp, err := flyspec.CheckingClient(t).Post(e.srv.URL+"/v1/apps/img/machines/"+m.ID+"/exec", "application/json",
		strings.NewReader(`{"command":["/bin/imagehelper","report"]}`))
	if err != nil {
		t.Fatal(err)
	}
	var ex map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&ex)
	resp.Body.Close()
	if ex["stdout"] != "uid=1000 cwd=/work var=from-image\n" || ex["exit_code"] != float64(3) {
		t.Errorf("exec in the container = %v", ex)
	}

	// Suspend freezes the container (its counter stops), start thaws it.
	count := filepath.Join(e.srv.MachineDir(app, m.ID), "rootfs", "upper", "tmp", "count")
	eventually(t, "counter to run", func() bool { n, ok := readInt(count); return ok && n > 3 })
	if err := e.c.SuspendMachine(c, app, m.ID, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m.ID, fly.StateSuspended)
	frozen, _ := readInt(count)
	time.Sleep(200 * time.Millisecond) // the counter would tick ~10 times if it ran
	if n, _ := readInt(count); n > frozen+1 {
		t.Errorf("suspended container kept counting: %d → %d", frozen, n)
	}
	if _, err := e.c.StartMachine(c, app, m.ID, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m.ID, fly.StateStarted)
	eventually(t, "counter to continue after resume", func() bool { n, ok := readInt(count); return ok && n > frozen+3 })

	// Destroy with force kills the container and releases its mount.
	if err := e.c.DestroyMachine(c, app, m.ID, true, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m.ID, fly.StateDestroyed)

	// An image the store does not hold runs as a process.
	pm := e.create(t, app, fly.CreateMachineRequest{Config: shell("exec sleep 1000")})
	e.wait(t, app, pm.ID, fly.StateStarted)
	if got := launchMode(t, e, app, pm.ID); got != "process" {
		t.Errorf("launch event mode of an image outside the store = %q, want process", got)
	}
}

// A guest of 256 MB whose process allocates 1 GB is killed by the limit and
// reported as Fly reports an OOM: an exit event with oom_killed.
func TestImageModeOOM(t *testing.T) {
	requireImageMode(t)
	e := start(t, flyemu.Config{ImageStore: helperStore(t)})
	app := e.app(t, "oom")
	m := e.create(t, app, fly.CreateMachineRequest{Config: &fly.MachineConfig{
		Image:   testImage,
		Init:    &fly.Init{Cmd: []string{"alloc", "1024"}},
		Guest:   &fly.Guest{CPUKind: "shared", CPUs: 1, MemoryMB: 256},
		Restart: &fly.Restart{Policy: fly.RestartNo},
	}})
	e.wait(t, app, m.ID, fly.StateStopped)
	out := readFile(filepath.Join(e.srv.MachineDir(app, m.ID), "machine.log"))
	t.Logf("machine log:\n%s", out)
	if strings.Contains(out, "allocated all") {
		t.Errorf("the process allocated 1 GB in a 256 MB guest:\n%s", out)
	}
	evs, err := e.c.ListEvents(ctx(t), app, m.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	x := evs[0].Request
	if evs[0].Type != "exit" || x == nil || x.ExitEvent == nil || !x.ExitEvent.OOMKilled || x.ExitEvent.ExitCode != 137 || x.ExitEvent.RequestedStop {
		b, _ := json.Marshal(evs[0])
		t.Errorf("last event = %s, want an exit with oom_killed and code 137", b)
	}
}

// A migration or a lost snapshot of an image-mode machine boots it as Fly
// does: a new container (stop_config's signal first, for a migration) on a
// fresh rootfs, still in image mode.
func TestImageModeMigrateAndLostSnapshot(t *testing.T) {
	requireImageMode(t)
	e := start(t, flyemu.Config{ImageStore: helperStore(t)})
	c := ctx(t)
	app := e.app(t, "imgmove")
	m := e.create(t, app, fly.CreateMachineRequest{Config: &fly.MachineConfig{
		Image:      testImage,
		Guest:      &fly.Guest{CPUKind: "shared", CPUs: 1, MemoryMB: 256},
		Restart:    &fly.Restart{Policy: fly.RestartNo},
		StopConfig: &fly.StopConfig{Signal: "SIGTERM"},
	}})
	e.wait(t, app, m.ID, fly.StateStarted)
	logPath := filepath.Join(e.srv.MachineDir(app, m.ID), "machine.log")
	logHas(t, e, app, m.ID, "rootfs fresh")
	boots := func(n int) func() bool {
		return func() bool { return strings.Count(readFile(logPath), "rootfs ") == n }
	}

	if err := e.srv.Migrate(app, m.ID); err != nil {
		t.Fatal(err)
	}
	logHas(t, e, app, m.ID, "got terminated")
	eventually(t, "the migrated machine to boot again", boots(2))
	e.wait(t, app, m.ID, fly.StateStarted)
	if got := launchMode(t, e, app, m.ID); got != "image" {
		t.Errorf("mode after migration = %q, want image", got)
	}
	// The container runs on the machine's place on its new host.
	moved := e.get(t, app, m.ID)
	logHas(t, e, app, m.ID, "env FLY_PRIVATE_IP="+moved.PrivateIP+"\n")

	if err := e.c.SuspendMachine(c, app, m.ID, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m.ID, fly.StateSuspended)
	if err := e.srv.LoseSnapshot(app, m.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.StartMachine(c, app, m.ID, ""); err != nil {
		t.Fatal(err)
	}
	e.wait(t, app, m.ID, fly.StateStarted)
	eventually(t, "a cold boot after the lost snapshot", boots(3))
	if got := launchMode(t, e, app, m.ID); got != "image" {
		t.Errorf("mode after a lost snapshot = %q, want image", got)
	}
	if out := readFile(logPath); strings.Contains(out, "rootfs stale") {
		t.Errorf("a boot saw an earlier boot's rootfs change:\n%s", out)
	}
}
