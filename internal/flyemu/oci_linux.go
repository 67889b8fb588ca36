package flyemu

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Image mode: a machine whose config.image is in Config.ImageStore runs as an
// OCI container under runc (see the package doc). runc run stays in the
// foreground as the machine's "process": it forwards every catchable signal
// to the container's init and exits with its status, so the process-mode
// bookkeeping (pid, reaping, stop timers) applies unchanged; this file adds
// what a container needs around it.

const (
	// runcRoot holds runc's container state (shared by emulators: container
	// ids are unique per launch).
	runcRoot = "/run/hangar-flyemu/runc"
	// flyAPIPath is where Fly puts the machine's local API socket.
	flyAPIPath = "/.fly/api"
	// cgroupBase is the emulator's cgroup below the caller's own (see
	// ownCgroup): each launch gets <base>/<container id>, which holds the
	// memory limit, with runc's cgroup inside it.
	cgroupBase = "hangar-flyemu"
)

var ociLaunches atomic.Uint64

// ociContainer is one start of a machine as a container.
type ociContainer struct {
	id     string // runc's container id, new at every start
	bundle string // holds config.json
	merged string // the overlay mount: the container's rootfs
	cgroup string // the launch's cgroup path below each hierarchy's root
}

// ociAvailable reports why image mode cannot run here ("" when it can).
func ociAvailable() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	if _, err := exec.LookPath("runc"); err != nil {
		return "runc is not installed"
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		if _, err := os.Stat("/sys/fs/cgroup/memory"); err != nil {
			return "no cgroup v1 memory controller"
		}
	}
	return ""
}

// ociSpecLocked turns a machine's resolved command and environment into a
// runc launch: a fresh overlay over the image's rootfs, a bundle, a cgroup
// with the guest's memory as its limit.
func (e *Emulator) ociSpecLocked(m *machine, img *StoredImage, argv, env []string, memMB int, dir string) (processSpec, *ociContainer, error) {
	if why := ociAvailable(); why != "" {
		return processSpec{}, nil, fmt.Errorf("image %s: cannot run containers: %s", img.Ref, why)
	}
	lower, err := e.images.Rootfs(img)
	if err != nil {
		return processSpec{}, nil, err
	}
	c := &ociContainer{
		id:     fmt.Sprintf("%s-%d", m.id, ociLaunches.Add(1)),
		bundle: filepath.Join(dir, "bundle"),
	}
	c.cgroup = filepath.Join(ownCgroup(), cgroupBase, c.id)
	// A fresh writable layer at every start, as Fly boots a fresh rootfs:
	// the previous one is moved aside and removed in the background.
	rootDir := filepath.Join(dir, "rootfs")
	upper, work := filepath.Join(rootDir, "upper"), filepath.Join(rootDir, "work")
	c.merged = filepath.Join(rootDir, "merged")
	if _, err := os.Stat(upper); err == nil {
		old := filepath.Join(rootDir, fmt.Sprintf("old-%d", time.Now().UnixNano()))
		if err := os.Rename(upper, old); err != nil {
			return processSpec{}, nil, err
		}
		_ = os.RemoveAll(work)
		e.procWG.Add(1)
		go func() { defer e.procWG.Done(); _ = os.RemoveAll(old) }()
	}
	for _, d := range []string{upper, work, c.merged, c.bundle} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return processSpec{}, nil, err
		}
	}
	_ = unix.Unmount(c.merged, unix.MNT_DETACH)
	if err := unix.Mount("overlay", c.merged, "overlay", 0,
		fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)); err != nil {
		return processSpec{}, nil, fmt.Errorf("mount the rootfs overlay: %w", err)
	}
	fail := func(err error) (processSpec, *ociContainer, error) {
		c.cleanup()
		return processSpec{}, nil, err
	}
	// The guest's memory is the limit of the launch's cgroup, around runc's
	// own: what the container starts inside can never raise it.
	memDir := filepath.Join("/sys/fs/cgroup/memory", c.cgroup)
	if err := os.MkdirAll(memDir, 0o755); err != nil {
		return fail(fmt.Errorf("create memory cgroup: %w", err))
	}
	limit := strconv.FormatInt(int64(memMB)<<20, 10)
	if err := os.WriteFile(filepath.Join(memDir, "memory.limit_in_bytes"), []byte(limit), 0o644); err != nil {
		return fail(fmt.Errorf("set the memory limit: %w", err))
	}
	// Swap must not stretch the guest (absent without swap accounting).
	_ = os.WriteFile(filepath.Join(memDir, "memory.memsw.limit_in_bytes"), []byte(limit), 0o644)

	uid, gid, groups, err := resolveUser(lower, img.Config.User)
	if err != nil {
		return fail(err)
	}
	// The container's user must reach the machine's API socket.
	if sock := m.api.socketPath(); sock != "" {
		_ = os.Chmod(sock, 0o666)
	}
	cwd := img.Config.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	spec := ociRuntimeSpec(c, m, argv, env, cwd, uid, gid, groups)
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(c.bundle, "config.json"), b, 0o600); err != nil {
		return fail(err)
	}
	ps := processSpec{
		// --keep: the container (and its cgroup, which counts OOM kills)
		// outlives its exit until finish has read it and deletes it.
		argv:    []string{"runc", "--root", runcRoot, "run", "--keep", "--bundle", c.bundle, c.id},
		dir:     dir,
		env:     []string{"PATH=" + os.Getenv("PATH")},
		logPath: filepath.Join(dir, "machine.log"),
	}
	return ps, c, nil
}

// ociRuntimeSpec is the runc config of c: runc's defaults for mounts, masked
// paths and devices, plus the machine's namespace, user, command and socket.
func ociRuntimeSpec(c *ociContainer, m *machine, argv, env []string, cwd string, uid, gid int, groups []int) map[string]any {
	// Docker's default capability set; a non-root user keeps none in effect.
	caps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
		"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
		"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}
	effective := caps
	if uid != 0 {
		effective = []string{}
	}
	namespaces := []map[string]any{{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}}
	if m.net.netns != "" {
		// The namespace the emulator made for the machine: its 6PN address
		// and isolation carry over to the container.
		namespaces = append(namespaces, map[string]any{"type": "network", "path": "/run/netns/" + m.net.netns})
	}
	mounts := []map[string]any{
		{"destination": "/proc", "type": "proc", "source": "proc"},
		{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": []string{"nosuid", "noexec", "nodev"}},
		{"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": []string{"nosuid", "noexec", "nodev", "ro"}},
	}
	if sock := m.api.socketPath(); sock != "" {
		mounts = append(mounts, map[string]any{"destination": flyAPIPath, "type": "bind", "source": sock, "options": []string{"bind"}})
	}
	return map[string]any{
		"ociVersion": "1.0.2",
		"process": map[string]any{
			"terminal": false,
			"user":     map[string]any{"uid": uid, "gid": gid, "additionalGids": groups},
			"args":     argv,
			"env":      env,
			"cwd":      cwd,
			"capabilities": map[string]any{
				"bounding": caps, "effective": effective, "permitted": effective, "inheritable": []string{}, "ambient": []string{},
			},
			// No rlimits: the container inherits the emulator's (the host
			// may not let even root raise them).
		},
		"root":     map[string]any{"path": c.merged},
		"hostname": m.id,
		"mounts":   mounts,
		"linux": map[string]any{
			"cgroupsPath": filepath.Join(c.cgroup, "c"),
			"resources":   map[string]any{"devices": []map[string]any{{"allow": false, "access": "rwm"}}},
			"namespaces":  namespaces,
			"maskedPaths": []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"},
			"readonlyPaths": []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}

// execSpec runs argv inside the container, with its user, env and workdir
// (runc exec starts from the container's own process spec).
func (c *ociContainer) execSpec(argv []string) processSpec {
	return processSpec{
		argv: append([]string{"runc", "--root", runcRoot, "exec", c.id}, argv...),
		dir:  c.bundle,
		env:  []string{"PATH=" + os.Getenv("PATH")},
	}
}

// signal delivers sig to the container: runc forwards catchable signals to
// its init; SIGSTOP and SIGCONT freeze and thaw the container's cgroup (as
// runc pause and resume do: a frozen task cannot tell). It reports whether
// it handled sig; SIGKILL is left to the process group logic, which reaches
// every process of the container (they all descend from runc).
func (c *ociContainer) signal(runcPid int, sig syscall.Signal) bool {
	switch sig {
	case syscall.SIGKILL:
		return false
	case syscall.SIGSTOP:
		c.setFreezer("FROZEN")
	case syscall.SIGCONT:
		c.setFreezer("THAWED")
	default:
		_ = syscall.Kill(runcPid, sig)
	}
	return true
}

// setFreezer writes state to the container's freezer and waits (briefly)
// until the kernel reports it reached.
func (c *ociContainer) setFreezer(state string) {
	p := filepath.Join("/sys/fs/cgroup/freezer", c.cgroup, "c", "freezer.state")
	if err := os.WriteFile(p, []byte(state), 0o644); err != nil {
		return // not started yet or already gone: nothing to freeze
	}
	for i := 0; i < 200; i++ {
		b, err := os.ReadFile(p)
		if err != nil || strings.TrimSpace(string(b)) == state {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// finish runs once runc has exited: it tells whether the memory limit killed
// something, and releases the rootfs mount and cgroups.
func (c *ociContainer) finish(x *exitInfo) {
	// runc exits 128+n when the container's init died of signal n.
	if x.signal == 0 && x.code > 128 && x.code < 128+65 {
		x.signal = syscall.Signal(x.code - 128)
	}
	// On cgroup v1 the kill is counted in the victim's own cgroup: runc's.
	x.oom = oomKills(filepath.Join("/sys/fs/cgroup/memory", c.cgroup, "c")) > 0
	c.cleanup()
}

// cleanup unmounts the rootfs and removes the launch's cgroups (runc removes
// its own; a runc killed outright leaves it, and its state, behind).
func (c *ociContainer) cleanup() {
	// Thaw first: a frozen task never dies.
	c.setFreezer("THAWED")
	if _, err := os.Stat(filepath.Join(runcRoot, c.id)); err == nil {
		_ = exec.Command("runc", "--root", runcRoot, "delete", "--force", c.id).Run()
	}
	_ = unix.Unmount(c.merged, unix.MNT_DETACH)
	hier, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hier {
		_ = os.Remove(filepath.Join(h, c.cgroup, "c"))
		_ = os.Remove(filepath.Join(h, c.cgroup))
	}
}

// oomKills reads the oom_kill count of a cgroup v1 memory controller.
func oomKills(dir string) int {
	f, err := os.Open(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "oom_kill "); ok {
			v, _ := strconv.Atoi(strings.TrimSpace(n))
			return v
		}
	}
	return 0
}

// ownCgroup is the caller's memory cgroup, under which containers are put:
// a test or service confined to a cgroup keeps its machines inside it.
func ownCgroup() string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "/"
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && (f[1] == "memory" || strings.Contains(","+f[1]+",", ",memory,")) {
			return f[2]
		}
	}
	return "/"
}

// resolveUser maps an image's User ("name", "uid", "name:group", "uid:gid")
// to ids through the image's /etc/passwd and /etc/group.
func resolveUser(rootfs, user string) (uid, gid int, groups []int, err error) {
	groups = []int{}
	if user == "" {
		return 0, 0, groups, nil
	}
	name, group, _ := strings.Cut(user, ":")
	passwd := readColonFile(filepath.Join(rootfs, "etc/passwd"))
	grp := readColonFile(filepath.Join(rootfs, "etc/group"))
	uid, gid = -1, -1
	if n, err := strconv.Atoi(name); err == nil {
		uid = n
	}
	for _, f := range passwd {
		if len(f) >= 4 && (f[0] == name || f[2] == name) {
			uid, _ = strconv.Atoi(f[2])
			gid, _ = strconv.Atoi(f[3])
			name = f[0]
			break
		}
	}
	if uid < 0 {
		return 0, 0, nil, fmt.Errorf("image user %q: not in the image's /etc/passwd", user)
	}
	if group != "" {
		gid = -1
		if n, err := strconv.Atoi(group); err == nil {
			gid = n
		}
		for _, f := range grp {
			if len(f) >= 3 && f[0] == group {
				gid, _ = strconv.Atoi(f[2])
			}
		}
		if gid < 0 {
			return 0, 0, nil, fmt.Errorf("image user %q: group not in the image's /etc/group", user)
		}
	}
	if gid < 0 {
		gid = uid
	}
	for _, f := range grp {
		if len(f) < 4 {
			continue
		}
		for _, member := range strings.Split(f[3], ",") {
			if member == name {
				if g, err := strconv.Atoi(f[2]); err == nil && g != gid {
					groups = append(groups, g)
				}
			}
		}
	}
	return uid, gid, groups, nil
}

func readColonFile(p string) [][]string {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	var out [][]string
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out
}
