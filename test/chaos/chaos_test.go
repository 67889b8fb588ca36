//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hangarhq/hangar/daemon/store/storetest"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/client"
	"github.com/hangarhq/hangar/internal/fly"
	"github.com/hangarhq/hangar/internal/flyemu"
	"github.com/hangarhq/hangar/internal/flyemu/flyemutest"
	"github.com/hangarhq/hangar/internal/pool"
	"github.com/hangarhq/hangar/internal/testbin"
	"github.com/hangarhq/hangar/internal/wire"
)

var (
	rounds = flag.Int("chaos.rounds", 5, "rounds per scenario (every loop is bounded by it)")
	only   = flag.String("chaos.only", "", "comma-separated scenarios to run (default all): sqlite,pg,fly,frozen,partition,store")
	seed   = flag.Uint64("chaos.seed", 1, "seed of the run's random choices")
)

const (
	poolName = "chaos"
	appName  = "hangar-chaos"
	region   = "iad"
	adminKey = "hga_chaos-admin-key-0123456789"
	// sample is how often orphan machines are counted.
	sample = 250 * time.Millisecond
)

// result is one row of the table.
type result struct {
	name                                             string
	rounds, crashes                                  int
	sessions, ready, failedReason, failedBare, stuck int
	doubleClaims                                     int
	orphanSeconds                                    float64
	bytesLost                                        int64
	before, after                                    procStats
	notes                                            []string
}

type procStats struct {
	ok              bool
	rssMB           float64
	fds, goroutines int
}

func (p procStats) String() string {
	if !p.ok {
		return "-"
	}
	return fmt.Sprintf("%.0fMB/%d/%d", p.rssMB, p.fds, p.goroutines)
}

var (
	resultsMu sync.Mutex
	results   []*result
)

// TestChaos runs every scenario and prints the table.
func TestChaos(t *testing.T) {
	rng := rand.New(rand.NewPCG(*seed, *seed^0x5eed))
	scenarios := []struct {
		name string
		fn   func(t *testing.T, rng *rand.Rand) *result
	}{
		{"sqlite", scenarioSQLiteKill},
		{"pg", scenarioPostgresKill},
		{"fly", scenarioFlyFaults},
		{"frozen", scenarioFrozenAgent},
		{"partition", scenarioPartition},
		{"store", scenarioStoreFaults},
	}
	want := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			want[s] = true
		}
	}
	t.Cleanup(printTable)
	for _, sc := range scenarios {
		if len(want) > 0 && !want[sc.name] {
			continue
		}
		t.Run(sc.name, func(t *testing.T) {
			r := sc.fn(t, rng)
			resultsMu.Lock()
			results = append(results, r)
			resultsMu.Unlock()
			if r.stuck > 0 || r.doubleClaims > 0 || r.bytesLost > 0 || r.failedBare > 0 {
				t.Errorf("%s: %d stuck, %d double claims, %d bytes lost, %d failed without a reason", r.name, r.stuck, r.doubleClaims, r.bytesLost, r.failedBare)
			}
			if r.crashes > 0 && r.orphanSeconds/float64(r.crashes) > 10 {
				t.Errorf("%s: %.1f orphan machine-seconds per crash (target ≤ 10)", r.name, r.orphanSeconds/float64(r.crashes))
			}
		})
	}
}

func printTable() {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\trounds\tcrashes\tsessions\tready\tfailed(reason)\tfailed(no reason)\tstuck\tdouble claims\torphan machine-s\tper crash\tbytes lost\tdaemon rss/fds/goroutines before\tafter")
	for _, r := range results {
		per := "-"
		if r.crashes > 0 {
			per = fmt.Sprintf("%.1f", r.orphanSeconds/float64(r.crashes))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f\t%s\t%d\t%s\t%s\n", r.name, r.rounds, r.crashes, r.sessions, r.ready,
			r.failedReason, r.failedBare, r.stuck, r.doubleClaims, r.orphanSeconds, per, r.bytesLost, r.before, r.after)
	}
	tw.Flush()
	for _, r := range results {
		for _, n := range r.notes {
			fmt.Fprintf(&b, "  %s: %s\n", r.name, n)
		}
	}
	fmt.Print("\n== chaos ==\n" + b.String())
	if dir := os.Getenv("HANGAR_ARTIFACTS"); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, "chaos.txt"), b.Bytes(), 0o644)
	}
}

// ---- the world: emulator, pool, balancer, daemons, sessions ----

type world struct {
	t         *testing.T
	emu       *flyemutest.Server
	fly       *fly.Client
	flyURL    string // what daemons use (the emulator, or a faulting proxy)
	lb        *balancer
	brokerKey string
	dir       string
	tenantKey string

	mu       sync.Mutex
	daemons  []*daemon
	sessions []*tracked
	byID     map[string]*tracked
	orphanS  float64
	machineS float64 // every session machine's running seconds, for scale
	stop     chan struct{}
	stopped  chan struct{}
}

type tracked struct {
	id       string
	on       *daemon
	state    string
	reason   string
	machines map[string]bool
	deleted  bool
	keep     bool // a stream session: not ended by settle
}

func terminal(state string) bool { return state == "ended" || state == "failed" }

func preReady(state string) bool {
	return state == "pending" || state == "claiming" || state == "starting"
}

func newWorld(t *testing.T, standbys int) *world {
	t.Helper()
	emu := flyemutest.Start(t, flyemu.Config{AgentBinary: testbin.Path(t, testbin.Agent), Org: "personal", Region: region, BootDelay: 100 * time.Millisecond})
	c, err := fly.New(fly.Options{BaseURL: emu.URL, MaxAttempts: 20})
	if err != nil {
		t.Fatal(err)
	}
	k, err := agentauth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, emu: emu, fly: c, flyURL: emu.URL, brokerKey: agentauth.EncodePrivateKey(k), dir: t.TempDir(),
		byID: map[string]*tracked{}, stop: make(chan struct{}), stopped: make(chan struct{})}
	w.lb = newBalancer(t, emu.InternetAddr().String())
	spec := pool.Spec{
		Pool: poolName, App: appName, Regions: []string{region}, Image: "hangar-worker:chaos",
		Guest:      pool.Guest{CPUKind: "shared", CPUs: 1, MemoryMB: 1024},
		Env:        map[string]string{"HANGAR_WORKSPACE": "workspace"},
		MinStandby: standbys, MaxMachines: 16, StandbyMode: pool.StandbyStop,
		IdleTimeout: time.Hour, SessionTTL: time.Hour, AgentPort: pool.DefaultAgentPort,
		BrokerPublicKeys: []string{agentauth.EncodePublicKey(agentauth.NewSigner(k).PublicKey())},
		DaemonURL:        w.lb.URL,
	}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.CreateApp(ctx, fly.CreateAppRequest{Name: appName, OrgSlug: "personal"}); err != nil {
		t.Fatal(err)
	}
	tmpl, err := c.CreateMachine(ctx, appName, spec.CreateTemplateRequest())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < standbys; i++ {
		if _, err := pool.CreateStandby(ctx, c, appName, tmpl, region, pool.StandbyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	go w.sampleOrphans()
	t.Cleanup(w.stopSampling)
	return w
}

func (w *world) stopSampling() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
		<-w.stopped
	}
}

// sampleOrphans adds up, every sample, the session machines running with
// no live session: their session failed or ended, or it was still being
// claimed by a replica that is down (nobody can finish that claim).
func (w *world) sampleOrphans() {
	defer close(w.stopped)
	t := time.NewTicker(sample)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		for id := range w.emu.PIDs() {
			m, ok := w.emu.Machine(appName, id)
			if !ok || m.Config == nil || m.Config.Metadata[pool.KeyRole] != pool.RoleSession {
				continue
			}
			sid := m.Config.Metadata[pool.KeySession]
			w.mu.Lock()
			w.machineS += sample.Seconds()
			s := w.byID[sid]
			orphan := s == nil || terminal(s.state) || (preReady(s.state) && !s.on.isAlive())
			if orphan {
				w.orphanS += sample.Seconds()
			}
			w.mu.Unlock()
		}
	}
}

// ---- daemons ----

type daemon struct {
	w         *world
	name      string
	replicaID string // "" = hangard's own default
	addr      string
	internal  string
	dsn       string
	env       []string
	logPath   string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	alive  bool
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (w *world) addDaemon(name, dsn, replicaID string, internal bool) *daemon {
	d := &daemon{w: w, name: name, replicaID: replicaID, addr: freeAddr(w.t), dsn: dsn, logPath: filepath.Join(w.dir, name+".log")}
	if internal {
		d.internal = freeAddr(w.t)
	}
	w.mu.Lock()
	w.daemons = append(w.daemons, d)
	w.mu.Unlock()
	w.lb.add(d.addr)
	w.t.Cleanup(d.kill9)
	return d
}

func (d *daemon) URL() string { return "http://" + d.addr }

func (d *daemon) isAlive() bool {
	if d == nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.alive
}

// launch starts the process and returns at once.
func (d *daemon) launch() error {
	env := append(os.Environ(),
		"HANGARD_LISTEN="+d.addr, "HANGARD_STORE_DSN="+d.dsn, "HANGARD_BROKER_KEY="+d.w.brokerKey,
		"HANGARD_ADMIN_KEY="+adminKey, "HANGARD_FLY_API_URL="+d.w.flyURL, "HANGARD_FLY_ORG=personal",
		"HANGARD_DAEMON_URL="+d.w.lb.URL, "HANGARD_FLY_OIDC_ISSUER="+d.w.emu.OIDCIssuer("personal"),
		"HANGARD_HEARTBEAT_INTERVAL=500ms", "HANGARD_DEAD_AFTER=5s", "HANGARD_SWEEP_INTERVAL=1s",
		"HANGARD_POOL_REFRESH=2s", "HANGARD_READY_TIMEOUT=45s", "HANGARD_RECONCILE_INTERVAL=1s",
		"HANGARD_LOG_FORMAT=json", "HANGARD_LOG_LEVEL=info", "FLY_MACHINE_ID=")
	if d.internal != "" {
		env = append(env, "HANGARD_INTERNAL_LISTEN="+d.internal)
	}
	if d.replicaID != "" {
		env = append(env, "HANGARD_REPLICA_ID="+d.replicaID)
	}
	env = append(env, d.env...)
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(testbin.Path(d.w.t, testbin.Daemon), "serve")
	cmd.Env, cmd.Stdout, cmd.Stderr = env, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan struct{})
	d.mu.Lock()
	d.cmd, d.exited, d.alive = cmd, exited, true
	d.mu.Unlock()
	go func() {
		cmd.Wait()
		logf.Close()
		d.mu.Lock()
		d.alive = false
		d.mu.Unlock()
		close(exited)
	}()
	return nil
}

// start launches the daemon and waits until /readyz says it can take work.
func (d *daemon) start() {
	t := d.w.t
	t.Helper()
	if err := d.launch(); err != nil {
		t.Fatalf("start %s: %v", d.name, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, _, err := d.w.call(d, "GET", "/readyz", "", nil)
		if err == nil && code == 200 {
			return
		}
		if !d.isAlive() {
			t.Fatalf("%s exited at start; log %s:\n%s", d.name, d.logPath, tail(d.logPath, 20))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 60s (%d %v)", d.name, code, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill9 kills the daemon the hard way (no-op when it is not running).
func (d *daemon) kill9() {
	d.mu.Lock()
	cmd, exited, alive := d.cmd, d.exited, d.alive
	d.mu.Unlock()
	if !alive {
		return
	}
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
	<-exited
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var metricLine = regexp.MustCompile(`(?m)^(process_resident_memory_bytes|process_open_fds|go_goroutines) ([0-9.e+]+)$`)

func (d *daemon) stats() procStats {
	code, body, err := d.w.call(d, "GET", "/metrics", "", nil)
	if err != nil || code != 200 {
		return procStats{}
	}
	var p procStats
	for _, m := range metricLine.FindAllStringSubmatch(string(body), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[1] {
		case "process_resident_memory_bytes":
			p.rssMB = v / (1 << 20)
		case "process_open_fds":
			p.fds = int(v)
		case "go_goroutines":
			p.goroutines = int(v)
		}
	}
	p.ok = true
	return p
}

var httpc = &http.Client{Timeout: 15 * time.Second}

func (w *world) call(d *daemon, method, path, key string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, d.URL()+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

func (w *world) alive() []*daemon {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*daemon
	for _, d := range w.daemons {
		if d.isAlive() {
			out = append(out, d)
		}
	}
	return out
}

func (w *world) tenant(d *daemon) {
	code, body, err := w.call(d, "POST", "/v1/tenants", adminKey, map[string]any{"name": "chaos", "pools": []string{poolName}})
	if err != nil || code != 201 {
		w.t.Fatalf("create tenant: %d %s %v", code, body, err)
	}
	var tn struct {
		APIKey string `json:"api_key"`
	}
	if err := json.Unmarshal(body, &tn); err != nil {
		w.t.Fatal(err)
	}
	w.tenantKey = tn.APIKey
}

type sessionJSON struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	Reason    string `json:"reason"`
	MachineID string `json:"machine_id"`
}

// create asks d for a session; a refusal (d down, store failing) is not a
// session and is not counted.
func (w *world) create(d *daemon, command []string) *tracked {
	code, body, err := w.call(d, "POST", "/v1/sessions", w.tenantKey, map[string]any{"pool": poolName, "command": command})
	if err != nil || code != 202 {
		return nil
	}
	var s sessionJSON
	if err := json.Unmarshal(body, &s); err != nil {
		return nil
	}
	tr := &tracked{id: s.ID, on: d, state: s.State, machines: map[string]bool{}}
	w.mu.Lock()
	w.sessions = append(w.sessions, tr)
	w.byID[s.ID] = tr
	w.mu.Unlock()
	return tr
}

// refresh reads every session not yet over from any live replica.
func (w *world) refresh() {
	ds := w.alive()
	if len(ds) == 0 {
		return
	}
	w.mu.Lock()
	ss := append([]*tracked(nil), w.sessions...)
	w.mu.Unlock()
	for i, s := range ss {
		w.mu.Lock()
		done := terminal(s.state)
		w.mu.Unlock()
		if done {
			continue
		}
		code, body, err := w.call(ds[i%len(ds)], "GET", "/v1/sessions/"+s.id, w.tenantKey, nil)
		if err != nil || code != 200 {
			continue
		}
		var sj sessionJSON
		if json.Unmarshal(body, &sj) != nil {
			continue
		}
		w.mu.Lock()
		s.state, s.reason = sj.State, sj.Reason
		if sj.MachineID != "" {
			s.machines[sj.MachineID] = true
		}
		w.mu.Unlock()
	}
}

// settle waits up to within for every session to be over (ending the ready
// ones, except stream sessions).
func (w *world) settle(within time.Duration) {
	deadline := time.Now().Add(within)
	for {
		w.refresh()
		open := 0
		w.mu.Lock()
		ss := append([]*tracked(nil), w.sessions...)
		w.mu.Unlock()
		for _, s := range ss {
			w.mu.Lock()
			state, deleted, keep := s.state, s.deleted, s.keep
			w.mu.Unlock()
			switch {
			case terminal(state):
			case state == "ready" && keep:
			case state == "ready" && !deleted:
				if ds := w.alive(); len(ds) > 0 {
					if code, _, err := w.call(ds[0], "DELETE", "/v1/sessions/"+s.id, w.tenantKey, nil); err == nil && (code == 202 || code == 409) {
						w.mu.Lock()
						s.deleted = true
						w.mu.Unlock()
					}
				}
				open++
			default:
				open++
			}
		}
		if open == 0 || time.Now().After(deadline) {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (w *world) waitState(s *tracked, within time.Duration, states ...string) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		w.refresh()
		w.mu.Lock()
		st := s.state
		w.mu.Unlock()
		for _, want := range states {
			if st == want {
				return true
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// finish ends the scenario: every session settled (ending the kept ones
// too), session machines gone, then the counts.
func (w *world) finish(r *result, d *daemon) {
	w.mu.Lock()
	for _, s := range w.sessions {
		s.keep = false
	}
	w.mu.Unlock()
	w.settle(90 * time.Second)
	// Let the destroys of the last settled sessions land (they count as
	// orphans until they do).
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && w.sessionMachines() > 0 {
		time.Sleep(sample)
	}
	if d != nil {
		r.after = d.stats()
	}
	w.stopSampling()
	w.mu.Lock()
	defer w.mu.Unlock()
	r.orphanSeconds = w.orphanS
	r.notes = append(r.notes, fmt.Sprintf("session machines ran %.1f machine-s in all, %.1f of them orphaned", w.machineS, w.orphanS))
	owners := map[string]map[string]bool{}
	for _, s := range w.sessions {
		r.sessions++
		switch {
		case s.state == "failed" && strings.TrimSpace(s.reason) != "":
			r.failedReason++
		case s.state == "failed":
			r.failedBare++
		case s.state == "ended":
			r.ready++ // it ended: it was ready (or ended while pending, by us: never)
		default:
			r.stuck++
			r.notes = append(r.notes, fmt.Sprintf("session %s stuck in %s", s.id, s.state))
		}
		for m := range s.machines {
			if owners[m] == nil {
				owners[m] = map[string]bool{}
			}
			owners[m][s.id] = true
		}
	}
	for m, ss := range owners {
		if len(ss) > 1 {
			r.doubleClaims++
			r.notes = append(r.notes, fmt.Sprintf("machine %s claimed by %d sessions", m, len(ss)))
		}
	}
	reasons := map[string]int{}
	for _, s := range w.sessions {
		if s.state == "failed" {
			reasons[shorten(s.reason)]++
		}
	}
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		r.notes = append(r.notes, fmt.Sprintf("failed ×%d: %s", reasons[k], k))
	}
}

var idish = regexp.MustCompile(`\b(d-)?[0-9a-z]{14,26}\b`)

func shorten(reason string) string {
	s := idish.ReplaceAllString(reason, "…")
	if len(s) > 140 {
		s = s[:140] + "…"
	}
	return s
}

func (w *world) sessionMachines() int {
	n := 0
	for id := range w.emu.PIDs() {
		if m, ok := w.emu.Machine(appName, id); ok && m.Config != nil && m.Config.Metadata[pool.KeyRole] == pool.RoleSession {
			n++
		}
	}
	return n
}

// ---- a stream session: numbered lines, checked for loss ----

const streamLines = 2000

type stream struct {
	s      *tracked
	a      *client.Attachment
	mu     sync.Mutex
	out    bytes.Buffer
	gapped int64
	done   chan struct{}
	runErr error // what Run returned, if it did
}

func (st *stream) Write(p []byte) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.out.Write(p)
}

// startStream creates a session on d printing streamLines numbered lines
// over about 20 s and attaches to it through d with the reconnecting client.
func (w *world) startStream(d *daemon) *stream {
	cmd := []string{"sh", "-c", fmt.Sprintf("i=0; while [ $i -lt %d ]; do i=$((i+1)); echo L$i; sleep 0.01; done; sleep 3600", streamLines)}
	s := w.create(d, cmd)
	if s == nil {
		w.t.Fatal("create the stream session")
	}
	s.keep = true
	if !w.waitState(s, 60*time.Second, "ready") {
		w.t.Fatalf("stream session not ready: %s %s", s.state, s.reason)
	}
	c, err := client.New(d.URL(), w.tenantKey, nil)
	if err != nil {
		w.t.Fatal(err)
	}
	st := &stream{s: s, done: make(chan struct{})}
	st.a = c.Attach(s.id, client.AttachOptions{Mode: "pty", Cols: 120, Rows: 40, Window: 1 << 20, ReconnectTimeout: 5 * time.Minute,
		OnGap: func(g wire.Gap) {
			st.mu.Lock()
			st.gapped += g.Oldest - g.Requested
			st.mu.Unlock()
		}})
	go func() {
		defer close(st.done)
		_, err := st.a.Run(context.Background(), st)
		st.mu.Lock()
		st.runErr = err
		st.mu.Unlock()
	}()
	w.t.Cleanup(st.a.Close)
	return st
}

var lineRE = regexp.MustCompile(`L(\d+)\r?\n`)

// check waits for the last line (bounded), then counts the bytes of lines
// missing or repeated, plus what gaps skipped.
func (st *stream) check(within time.Duration) (lost int64, note string) {
	last := fmt.Sprintf("L%d\r\n", streamLines)
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		st.mu.Lock()
		has := bytes.Contains(st.out.Bytes(), []byte(last))
		st.mu.Unlock()
		if has {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	st.a.Close()
	st.mu.Lock()
	defer st.mu.Unlock()
	seen := map[int]int{}
	for _, m := range lineRE.FindAllSubmatch(st.out.Bytes(), -1) {
		n, _ := strconv.Atoi(string(m[1]))
		seen[n]++
	}
	missing, repeated, firstMissing, lastMissing := 0, 0, 0, 0
	for i := 1; i <= streamLines; i++ {
		switch c := seen[i]; {
		case c == 0:
			missing++
			if firstMissing == 0 {
				firstMissing = i
			}
			lastMissing = i
			lost += int64(len(fmt.Sprintf("L%d\r\n", i)))
		case c > 1:
			repeated++
			lost += int64((c - 1) * len(fmt.Sprintf("L%d\r\n", i)))
		}
	}
	lost += st.gapped
	note = fmt.Sprintf("stream: %d of %d lines, %d missing, %d repeated, %d bytes skipped by gaps", len(seen), streamLines, missing, repeated, st.gapped)
	if missing > 0 {
		note += fmt.Sprintf(" (missing L%d..L%d; attach ended with %v)", firstMissing, lastMissing, st.runErr)
	}
	return lost, note
}

// ---- scenarios ----

// scenarioSQLiteKill: one replica on SQLite, kill -9 while claims run,
// restarted at once (same data dir, so the same replica id); a stream
// session keeps printing across the crashes.
func scenarioSQLiteKill(t *testing.T, rng *rand.Rand) *result {
	w := newWorld(t, 2)
	d := w.addDaemon("sqlite", "sqlite://"+filepath.Join(w.dir, "hangard.db"), "", false)
	d.start()
	w.tenant(d)
	st := w.startStream(d)
	r := &result{name: "kill -9 loop, SQLite", rounds: *rounds, before: d.stats()}
	for i := 0; i < *rounds; i++ {
		for j := 0; j < 3; j++ {
			w.create(d, []string{"sleep", "3600"})
		}
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		d.kill9()
		r.crashes++
		d.start()
		w.settle(60 * time.Second)
	}
	lost, note := st.check(60 * time.Second)
	r.bytesLost, r.notes = lost, append(r.notes, note)
	w.finish(r, d)
	return r
}

// scenarioPostgresKill: two replicas on one Postgres; each round kills one
// of them (either) while claims run on both, and restarts it.
func scenarioPostgresKill(t *testing.T, rng *rand.Rand) *result {
	dsn := storetest.StartPostgres(t)
	w := newWorld(t, 3)
	d1 := w.addDaemon("pg-r1", dsn, "r1", true)
	d2 := w.addDaemon("pg-r2", dsn, "r2", true)
	d1.start()
	d2.start()
	w.tenant(d1)
	st := w.startStream(d2)
	r := &result{name: "kill -9 loop, 2 replicas on Postgres", rounds: *rounds, before: d1.stats()}
	for i := 0; i < *rounds; i++ {
		for j := 0; j < 2; j++ {
			w.create(d1, []string{"sleep", "3600"})
			w.create(d2, []string{"sleep", "3600"})
		}
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		victim := d1
		if rng.IntN(2) == 1 {
			victim = d2
		}
		victim.kill9()
		r.crashes++
		victim.start()
		w.settle(60 * time.Second)
	}
	lost, note := st.check(60 * time.Second)
	r.bytesLost, r.notes = lost, append(r.notes, note)
	w.finish(r, d1)
	return r
}

// flakyFly fails a share of the daemon's Fly calls before they reach the
// emulator (503 or 429); the emulator itself loses the answers of a share
// of the mutating calls it carried out (FaultAfterRate).
type flakyFly struct {
	proxy *httputil.ReverseProxy
	mu    sync.Mutex
	rng   *rand.Rand
	rate  float64
	n     int
}

func (f *flakyFly) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	hit := f.rng.Float64() < f.rate
	code := http.StatusServiceUnavailable
	if f.rng.IntN(2) == 0 {
		code = http.StatusTooManyRequests
	}
	if hit {
		f.n++
	}
	f.mu.Unlock()
	if hit {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":"injected before acting (%d)"}`, code)
		return
	}
	f.proxy.ServeHTTP(w, r)
}

func scenarioFlyFaults(t *testing.T, rng *rand.Rand) *result {
	w := newWorld(t, 2)
	u, _ := url.Parse(w.emu.URL)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // the emulator's lost answers, by design
	ff := &flakyFly{proxy: rp, rng: rand.New(rand.NewPCG(*seed, 7)), rate: 0.15}
	proxy := httptest.NewServer(ff)
	t.Cleanup(proxy.Close)
	w.flyURL = proxy.URL
	d := w.addDaemon("fly", "sqlite://"+filepath.Join(w.dir, "hangard.db"), "", false)
	d.start()
	w.tenant(d)
	w.emu.SetFaultAfterRate(0.15)
	r := &result{name: "Fly faults before (15%) and after acting (15%)", rounds: *rounds, before: d.stats()}
	for i := 0; i < *rounds; i++ {
		for j := 0; j < 3; j++ {
			w.create(d, []string{"sleep", "3600"})
		}
		w.settle(90 * time.Second)
	}
	w.emu.SetFaultAfterRate(0)
	ff.mu.Lock()
	ff.rate = 0
	before := ff.n
	ff.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf("%d calls failed before acting, %d answers lost after acting", before, w.emu.FaultsInjected()))
	w.finish(r, d)
	return r
}

// scenarioFrozenAgent: a ready session's agent is frozen (SIGSTOP on its
// process group), then the session is ended: it must end, bounded.
func scenarioFrozenAgent(t *testing.T, rng *rand.Rand) *result {
	w := newWorld(t, 1)
	d := w.addDaemon("frozen", "sqlite://"+filepath.Join(w.dir, "hangard.db"), "", false)
	d.start()
	w.tenant(d)
	r := &result{name: "frozen agent (SIGSTOP), then end", rounds: *rounds, before: d.stats()}
	for i := 0; i < *rounds; i++ {
		s := w.create(d, []string{"sleep", "3600"})
		if s == nil || !w.waitState(s, 60*time.Second, "ready") {
			continue
		}
		w.mu.Lock()
		var mach string
		for m := range s.machines {
			mach = m
		}
		w.mu.Unlock()
		pid := w.emu.PIDs()[mach]
		if pid == 0 {
			r.notes = append(r.notes, "no process for machine "+mach)
			continue
		}
		_ = syscall.Kill(-pid, syscall.SIGSTOP)
		start := time.Now()
		w.call(d, "DELETE", "/v1/sessions/"+s.id, w.tenantKey, nil)
		s.deleted = true
		if w.waitState(s, 150*time.Second, "ended", "failed") {
			r.notes = append(r.notes, fmt.Sprintf("round %d: frozen session over in %.1fs (%s)", i+1, time.Since(start).Seconds(), s.state))
		}
		_ = syscall.Kill(-pid, syscall.SIGCONT)
	}
	w.finish(r, d)
	return r
}

// scenarioPartition: the stream session's worker is cut off the network
// for a few seconds each round (its veth down), then a session is ended
// while partitioned.
func scenarioPartition(t *testing.T, rng *rand.Rand) *result {
	w := newWorld(t, 2)
	if w.emu.NetworkMode() != flyemu.NetworkNamespaces {
		t.Skip("partitions need the emulator's network-namespace mode (root)")
	}
	d := w.addDaemon("partition", "sqlite://"+filepath.Join(w.dir, "hangard.db"), "", false)
	d.start()
	w.tenant(d)
	st := w.startStream(d)
	var mach string
	for m := range st.s.machines {
		mach = m
	}
	r := &result{name: "partitioned worker (veth down)", rounds: *rounds, before: d.stats()}
	for i := 0; i < *rounds; i++ {
		if err := w.emu.Partition(appName, mach, true); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(2000+rng.IntN(3000)) * time.Millisecond)
		if err := w.emu.Partition(appName, mach, false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
	}
	lost, note := st.check(90 * time.Second)
	r.bytesLost, r.notes = lost, append(r.notes, note)
	// End a session while its worker is partitioned.
	if s := w.create(d, []string{"sleep", "3600"}); s != nil && w.waitState(s, 60*time.Second, "ready") {
		for m := range s.machines {
			_ = w.emu.Partition(appName, m, true)
		}
		start := time.Now()
		w.call(d, "DELETE", "/v1/sessions/"+s.id, w.tenantKey, nil)
		s.deleted = true
		if w.waitState(s, 150*time.Second, "ended", "failed") {
			r.notes = append(r.notes, fmt.Sprintf("session ended while partitioned: over in %.1fs", time.Since(start).Seconds()))
		}
	}
	w.finish(r, d)
	return r
}

// scenarioStoreFaults: the SQLite store on a small tmpfs. (1) The file is
// unwritable at start: hangard must refuse to start, saying so. (2) The
// disk fills up while it runs: /readyz must turn 503 naming store_write,
// and recover when space is freed, without a restart.
func scenarioStoreFaults(t *testing.T, rng *rand.Rand) *result {
	w := newWorld(t, 1)
	r := &result{name: "store faults (unwritable file, full disk)", rounds: 1}
	dir := filepath.Join(w.dir, "store")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=8m"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	db := filepath.Join(dir, "hangard.db")
	d := w.addDaemon("store", "sqlite://"+db, "", false)
	d.start()
	w.tenant(d)
	r.before = d.stats()

	// (2) Full disk.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()
	start := time.Now()
	var body []byte
	for time.Since(start) < 20*time.Second {
		var code int
		code, body, _ = w.call(d, "GET", "/readyz", "", nil)
		if code == 503 && bytes.Contains(body, []byte("store_write")) {
			break
		}
		// Heartbeats must write something: sessions requested meanwhile
		// make the store grow.
		w.call(d, "POST", "/v1/sessions", w.tenantKey, map[string]any{"pool": poolName, "command": []string{"true"}})
		time.Sleep(200 * time.Millisecond)
	}
	r.notes = append(r.notes, fmt.Sprintf("disk full: /readyz after %.1fs: %s", time.Since(start).Seconds(), strings.TrimSpace(string(body))))
	os.Remove(filler)
	start = time.Now()
	ok := false
	for time.Since(start) < 20*time.Second {
		if code, _, _ := w.call(d, "GET", "/readyz", "", nil); code == 200 {
			ok = true
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.notes = append(r.notes, fmt.Sprintf("space freed: ready again %v after %.1fs (no restart)", ok, time.Since(start).Seconds()))
	if !ok {
		r.stuck++
	}
	if s := w.create(d, []string{"sleep", "3600"}); s != nil {
		w.settle(60 * time.Second)
	}

	r.after = d.stats()
	w.finish(r, d)
	d.kill9()

	// (1) Unwritable at start (tmpfs has no immutable attribute: a store
	// of its own on the data disk).
	d2 := w.addDaemon("store-ro", "sqlite://"+filepath.Join(w.dir, "ro.db"), "", false)
	d2.start()
	d2.kill9()
	db2 := filepath.Join(w.dir, "ro.db")
	setImmutable(t, db2, true)
	if err := d2.launch(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d2.exited:
		r.notes = append(r.notes, "unwritable at start: refused: "+lastMatch(d2.logPath, "not writable"))
	case <-time.After(30 * time.Second):
		r.notes = append(r.notes, "unwritable at start: STARTED ANYWAY")
		r.stuck++
		d2.kill9()
	}
	setImmutable(t, db2, false)
	d2.start()
	r.notes = append(r.notes, "writable again: started")
	d2.kill9()
	return r
}

func lastMatch(path, substr string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], substr) {
			return shorten(lines[i])
		}
	}
	return "(no log line says " + substr + ")"
}

const fsImmutableFL = 0x10 // FS_IMMUTABLE_FL of linux/fs.h

func setImmutable(t *testing.T, path string, on bool) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Fatalf("get file attributes: %v", err)
	}
	if on {
		flags |= fsImmutableFL
	} else {
		flags &^= fsImmutableFL
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags)); err != nil {
		t.Fatalf("set file attributes: %v", err)
	}
}
