package flyemu

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/oklog/ulid/v2"
	"golang.org/x/time/rate"

	"github.com/hangarhq/hangar/internal/fly"
)

// Config configures an Emulator. The zero value is usable.
type Config struct {
	// DataDir holds one directory per machine (DataDir/<app>/<machine id>):
	// the process's working directory, its HOME (a "home" directory inside)
	// and its output log ("machine.log"). Empty: a temporary directory that
	// Close removes.
	DataDir string
	// AgentBinary runs images that have no entry in Images and machines
	// without init.exec / init.entrypoint, with HANGAR_WORKSPACE=workspace
	// (inside the machine's directory) unless the machine env sets it. Empty:
	// hangar-agent next to the running executable, else hangar-agent on PATH.
	AgentBinary string
	// Images maps image refs to the command they run (see Image).
	Images map[string]Image
	// Org is the organization slug apps default to. Empty: "personal".
	Org string
	// Region is the region of machines created without one. Empty: "iad".
	Region string
	// Token, when set, must be presented as "Authorization: Bearer <token>"
	// or "Authorization: FlyV1 <token>"; anything else gets 401.
	Token string
	// BootDelay is how long a machine stays "starting" after its process
	// was launched (or resumed) before it is reported "started".
	BootDelay time.Duration
	// Latency is added to every API call.
	Latency time.Duration
	// FaultRate is the share (0..1) of API calls that fail before being
	// handled, split evenly between 429, 500 and a dropped connection.
	FaultRate float64
	// FaultSeed seeds the fault injector, for reproducible runs.
	FaultSeed uint64
	// FaultAfterRate is the share (0..1) of mutating calls (not GET) that
	// are carried out and whose answer is then lost (the connection is
	// dropped): Fly acted, the caller cannot tell. See faultafter.go.
	FaultAfterRate float64
	// NoRateLimits turns off Fly's published per-action limits, which are on
	// by default (fly.LimitKey: 1 req/s with bursts of 3 per action and
	// machine, else app; getting a machine 5/s burst 10; listing machines per
	// app; app deletions 100/min). Excess calls get 429.
	NoRateLimits bool
	// RetryAfter adds a Retry-After header to rate-limit 429s. Fly does not
	// promise one, so by default there is none.
	RetryAfter bool
	// TimeoutRate is the share (0..1) of API calls answered 408 before being
	// handled, as Fly's edge may answer any endpoint (flyctl retries them).
	TimeoutRate float64
	// NotFoundAfterCreate: for this long after an app (or a machine) was
	// created, listing its machines (or getting or waiting for the machine)
	// answers 404, as Fly's eventual consistency may.
	NotFoundAfterCreate time.Duration
	// SnapshotLossRate is the share (0..1) of resumes of a suspended machine
	// whose snapshot is lost, as Fly does not promise it survives: the
	// machine boots cold (a new process). LoseSnapshot loses one for sure.
	SnapshotLossRate float64
	// NoBatchMetadata makes the batch metadata endpoint (PUT/PATCH
	// .../metadata), which only Fly's OpenAPI document lists, answer 404.
	NoBatchMetadata bool
	// UnstartableAfterCreate: for this long after a machine was created
	// without being launched (skip_launch), starting it fails with 412, as
	// Fly's machines stuck in "created" do. SetStartable overrides it per
	// machine.
	UnstartableAfterCreate time.Duration
	// Logger receives the emulator's logs. Nil: no logs.
	Logger hclog.Logger
	// LogProcessOutput also sends every line a machine prints to Logger.
	LogProcessOutput bool
	// KeepMachineDirs keeps a destroyed machine's directory (and its log)
	// instead of removing it.
	KeepMachineDirs bool
	// Network is how machines are networked: NetworkAuto (or ""),
	// NetworkNamespaces or NetworkLoopback (see the package doc).
	Network string
	// ImageStore is a local OCI image layout (see ImageStore): machines whose
	// config.image it holds run as containers of that image under runc
	// (image mode, Linux as root); others run as processes. Empty: none.
	ImageStore string
}

// Image is what an image ref runs: Entrypoint plus Cmd, as a container image
// would; init.entrypoint / init.cmd in a machine config override them and
// init.exec replaces both. Env is added to the machine's environment
// (machine env wins).
type Image struct {
	Entrypoint []string          `json:"entrypoint,omitempty"`
	Cmd        []string          `json:"cmd,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
}

// Emulator serves Fly's Machines API (under /v1) and runs each machine as a
// local process group. It is an http.Handler; Close stops every process.
type Emulator struct {
	cfg     Config
	log     hclog.Logger
	mux     *http.ServeMux
	net     netBackend
	sockDir string      // machines' local API sockets
	images  *ImageStore // nil without Config.ImageStore
	tempDir bool        // DataDir was created by New and is removed by Close

	oidcOnce sync.Once
	oidc     *oidcKey
	oidcErr  error

	faultMu  sync.Mutex
	faults   *mrand.Rand
	injected int
	// faultAfter is the FaultAfterRate in force (SetFaultAfterRate), under faultMu.
	faultAfter    float64
	faultAfterSet bool

	limitMu  sync.Mutex
	limiters map[string]*rate.Limiter
	limited  int // 429s answered by the rate limits

	procWG sync.WaitGroup     // process waiters, dir and network removals
	apiWG  sync.WaitGroup     // local API socket servers
	apis   map[*localAPI]bool // every socket not closed yet (guarded by mu)
	copyWG sync.WaitGroup     // output copiers (LogProcessOutput)

	mu       sync.Mutex
	closed   bool
	closing  chan struct{}
	apps     map[string]*app
	full     map[string]bool // regions that answer insufficient_capacity
	entropy  *ulid.MonotonicEntropy
	launched []int // every pid ever launched, for leak checks
	nextApp  int64
	baseURL  string
}

// New returns an emulator with no apps. It sets up the machines' network
// (see Config.Network), released by Close.
func New(cfg Config) (*Emulator, error) {
	return NewContext(context.Background(), cfg)
}

// NewContext is New with a context bounding the network setup.
func NewContext(ctx context.Context, cfg Config) (*Emulator, error) {
	if cfg.Org == "" {
		cfg.Org = "personal"
	}
	if cfg.Region == "" {
		cfg.Region = "iad"
	}
	if cfg.FaultRate < 0 || cfg.FaultRate > 1 {
		return nil, fmt.Errorf("fault rate %v: want a share between 0 and 1", cfg.FaultRate)
	}
	if cfg.TimeoutRate < 0 || cfg.TimeoutRate > 1 {
		return nil, fmt.Errorf("timeout rate %v: want a share between 0 and 1", cfg.TimeoutRate)
	}
	if cfg.SnapshotLossRate < 0 || cfg.SnapshotLossRate > 1 {
		return nil, fmt.Errorf("snapshot loss rate %v: want a share between 0 and 1", cfg.SnapshotLossRate)
	}
	if cfg.UnstartableAfterCreate < 0 || cfg.NotFoundAfterCreate < 0 {
		return nil, fmt.Errorf("unstartable after create %v, not found after create %v: want durations of 0 or more", cfg.UnstartableAfterCreate, cfg.NotFoundAfterCreate)
	}
	if cfg.AgentBinary == "" {
		cfg.AgentBinary = findAgent()
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	e := &Emulator{
		apis:     map[*localAPI]bool{},
		cfg:      cfg,
		log:      log,
		faults:   mrand.New(mrand.NewPCG(cfg.FaultSeed, cfg.FaultSeed^0x9e3779b97f4a7c15)),
		limiters: map[string]*rate.Limiter{},
		closing:  make(chan struct{}),
		apps:     map[string]*app{},
		full:     map[string]bool{},
		entropy:  ulid.Monotonic(rand.Reader, 0),
	}
	if e.cfg.DataDir == "" {
		d, err := os.MkdirTemp("", "flyemu-")
		if err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
		e.cfg.DataDir, e.tempDir = d, true
	} else if err := os.MkdirAll(e.cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	abs, err := filepath.Abs(e.cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	e.cfg.DataDir = abs
	if e.sockDir, err = os.MkdirTemp("", "hgemu-"); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if cfg.ImageStore != "" {
		if e.images, err = OpenImageStore(cfg.ImageStore); err != nil {
			os.RemoveAll(e.sockDir)
			return nil, err
		}
	}
	if e.net, err = e.newNetBackend(ctx); err != nil {
		os.RemoveAll(e.sockDir)
		return nil, err
	}
	e.routes()
	return e, nil
}

// findAgent looks for hangar-agent beside the running executable, then on PATH.
func findAgent() string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "hangar-agent")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return "hangar-agent"
}

// Close kills every machine process (whole process groups), waits for them to
// be reaped and removes what the machines' network and local API sockets
// used (namespaces, links, addresses, firewall table). Machines are left
// destroyed.
func (e *Emulator) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	close(e.closing)
	for _, a := range e.apps {
		for _, m := range a.machines {
			if m.proc != nil {
				m.intent = intentDestroy
				m.proc.kill()
			}
			m.api.close()
			m.api = nil
		}
	}
	for api := range e.apis {
		api.close()
	}
	e.mu.Unlock()
	e.procWG.Wait()
	e.apiWG.Wait()
	// Output copiers end when the last writer is gone; a process that left
	// the machine (and its ancestry) may hold the pipe, so don't wait forever.
	copied := make(chan struct{})
	go func() { e.copyWG.Wait(); close(copied) }()
	select {
	case <-copied:
	case <-time.After(2 * time.Second):
		e.log.Warn("machine output still open after close; not waiting for it")
	}
	var errs []error
	if err := e.net.close(context.Background()); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(e.sockDir); err != nil {
		errs = append(errs, fmt.Errorf("remove socket dir: %w", err))
	}
	if e.tempDir {
		if err := os.RemoveAll(e.cfg.DataDir); err != nil {
			errs = append(errs, fmt.Errorf("remove data dir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// DataDir returns the directory holding the machines' directories.
func (e *Emulator) DataDir() string { return e.cfg.DataDir }

// SetRegionFull makes machine creation in region, and starting a machine
// there that does not hold its resources (created, stopped or failed; a
// suspended one keeps its reservation), fail with Fly's
// insufficient_capacity error (full=true), or succeed again (full=false).
func (e *Emulator) SetRegionFull(region string, full bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if full {
		e.full[region] = true
	} else {
		delete(e.full, region)
	}
}

// SetHostReachable makes the host of machine id of app unreachable
// (ok=false: the API shows host_status "unreachable" and only
// incomplete_config, and every operation on the machine fails with 503; the
// process itself keeps running, as a VM does when only its host's link to
// Fly is down) or reachable again.
func (e *Emulator) SetHostReachable(app, id string, ok bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.apps[app]
	if a == nil || a.machines[id] == nil {
		return fmt.Errorf("set host reachability: no machine %s in app %s", id, app)
	}
	m := a.machines[id]
	m.hostDown = !ok
	m.touchLocked(time.Now())
	return nil
}

// Migrate moves running machine id of app to another host, as Fly does: the
// process is stopped exactly as a stop would (stop_config's signal, else
// SIGINT; SIGKILL after stop_config's timeout, else 5 s) and a new one is
// started on a new host, which gives it a new private IP.
func (e *Emulator) Migrate(app, id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.apps[app]
	if a == nil || a.machines[id] == nil {
		return fmt.Errorf("migrate: no machine %s in app %s", id, app)
	}
	m := a.machines[id]
	if m.proc == nil || m.frozen {
		return fmt.Errorf("migrate: machine %s is %s, not running", id, m.state)
	}
	sig, timeout, err := stopParams(&m.config, "", 0)
	if err != nil {
		return fmt.Errorf("migrate machine %s: %w", id, err)
	}
	e.log.Info("migrating machine", "app", app, "machine", id, "signal", sig, "kill_timeout", timeout)
	e.setStateLocked(m, fly.StateStopping, "migrate", "flyd", nil)
	e.stopLocked(m, sig, timeout, intentMigrate)
	return nil
}

// SetStartable makes machine id of app refuse every start with 412 while it
// is in state created (ok=false), as a machine stuck in "created" on Fly, or
// startable again (ok=true, also lifting UnstartableAfterCreate).
func (e *Emulator) SetStartable(app, id string, ok bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.apps[app]
	if a == nil || a.machines[id] == nil {
		return fmt.Errorf("set startable: no machine %s in app %s", id, app)
	}
	m := a.machines[id]
	if ok {
		m.startable = startableYes
	} else {
		m.startable = startableNo
	}
	return nil
}

// LoseSnapshot makes the next resume of suspended machine id of app a cold
// boot, as when Fly loses a suspend snapshot.
func (e *Emulator) LoseSnapshot(app, id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.apps[app]
	if a == nil || a.machines[id] == nil {
		return fmt.Errorf("lose snapshot: no machine %s in app %s", id, app)
	}
	a.machines[id].snapshotLost = true
	return nil
}

// snapshotLostLocked reports whether resuming m finds its snapshot lost.
func (e *Emulator) snapshotLostLocked(m *machine) bool {
	if m.snapshotLost {
		return true
	}
	if e.cfg.SnapshotLossRate <= 0 {
		return false
	}
	e.faultMu.Lock()
	defer e.faultMu.Unlock()
	return e.faults.Float64() < e.cfg.SnapshotLossRate
}

// ProcessCount returns how many machine processes are running (including
// suspended ones).
func (e *Emulator) ProcessCount() int {
	return len(e.PIDs())
}

// PIDs maps machine ids to the pid of their running process.
func (e *Emulator) PIDs() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for _, a := range e.apps {
		for id, m := range a.machines {
			if m.proc != nil {
				out[id] = m.proc.pid
			}
		}
	}
	return out
}

// LaunchedPIDs returns the pid of every process the emulator ever launched;
// each led its own process group, so a test can check that none is left.
func (e *Emulator) LaunchedPIDs() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]int(nil), e.launched...)
}

// FaultsInjected returns how many calls fault injection has failed so far.
func (e *Emulator) FaultsInjected() int {
	e.faultMu.Lock()
	defer e.faultMu.Unlock()
	return e.injected
}

// Machine returns the machine as the API would show it.
func (e *Emulator) Machine(app, id string) (fly.Machine, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.apps[app]
	if a == nil {
		return fly.Machine{}, false
	}
	m := a.machines[id]
	if m == nil {
		return fly.Machine{}, false
	}
	return m.view(false), true
}

// MachineDir returns the working directory of a machine's process.
func (e *Emulator) MachineDir(app, id string) string {
	return filepath.Join(e.cfg.DataDir, app, id)
}

// ---- HTTP plumbing ----

// response is what a handler produces; it is built under the emulator's lock
// and written after it is released.
type response struct {
	status int
	body   []byte
	header http.Header
}

func jsonResp(status int, v any) response {
	b, err := json.Marshal(v)
	if err != nil {
		return errResp(http.StatusInternalServerError, "encode response: "+err.Error())
	}
	return response{status: status, body: append(b, '\n')}
}

func noContent() response { return response{status: http.StatusNoContent} }

// errResp is Fly's error body with the generic "unknown" status code.
func errResp(status int, msg string) response {
	return errCode(status, msg, fly.StatusUnknown)
}

func errCode(status int, msg, code string) response {
	return jsonResp(status, fly.ErrorResponse{Error: msg, Status: code})
}

func (r response) write(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	if r.body != nil {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
	}
	w.WriteHeader(r.status)
	if r.body != nil {
		_, _ = w.Write(r.body)
	}
}

// ServeHTTP implements http.Handler.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mux.ServeHTTP(w, r)
}

// handle registers h for pattern behind the common middleware: request id,
// latency, auth, fault injection and rate limits. action names the limit
// bucket ("" = not limited).
func (e *Emulator) handle(pattern, action string, h func(*http.Request) response) {
	e.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(fly.RequestIDHeader, randomHex(10))
		if e.cfg.Latency > 0 {
			t := time.NewTimer(e.cfg.Latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if resp, ok := e.checkAuth(r); !ok {
			resp.write(w)
			return
		}
		if e.injectFault(w, r) {
			return
		}
		if action != "" {
			if resp, ok := e.checkRate(r, action); !ok {
				resp.write(w)
				return
			}
			if resp, ok := e.checkFresh(r, action); !ok {
				resp.write(w)
				return
			}
		}
		select {
		case <-e.closing:
			errResp(http.StatusServiceUnavailable, "emulator is shutting down").write(w)
			return
		default:
		}
		resp := h(r)
		if e.dropAfterActing(w, r) {
			return
		}
		resp.write(w)
	})
}

func (e *Emulator) checkAuth(r *http.Request) (response, bool) {
	if e.cfg.Token == "" {
		return response{}, true
	}
	h := r.Header.Get("Authorization")
	scheme, creds, _ := strings.Cut(h, " ")
	if strings.EqualFold(scheme, "Bearer") || strings.EqualFold(scheme, "FlyV1") {
		// FlyV1 may carry several comma-separated macaroons.
		for _, tok := range strings.Split(creds, ",") {
			tok = strings.TrimSpace(tok)
			if subtle.ConstantTimeCompare([]byte(tok), []byte(e.cfg.Token)) == 1 {
				return response{}, true
			}
		}
	}
	resp := errResp(http.StatusUnauthorized, "You must be authenticated to view this.")
	return resp, false
}

// injectFault fails the call before it is handled, so a retry is always safe.
func (e *Emulator) injectFault(w http.ResponseWriter, r *http.Request) bool {
	if e.cfg.TimeoutRate > 0 {
		e.faultMu.Lock()
		hit := e.faults.Float64() < e.cfg.TimeoutRate
		if hit {
			e.injected++
		}
		e.faultMu.Unlock()
		if hit {
			e.log.Debug("injected fault", "kind", "408", "method", r.Method, "path", r.URL.Path)
			errResp(http.StatusRequestTimeout, "request timed out (injected)").write(w)
			return true
		}
	}
	if e.cfg.FaultRate <= 0 {
		return false
	}
	e.faultMu.Lock()
	hit := e.faults.Float64() < e.cfg.FaultRate
	kind := e.faults.IntN(3)
	if hit {
		e.injected++
	}
	e.faultMu.Unlock()
	if !hit {
		return false
	}
	switch kind {
	case 0:
		e.log.Debug("injected fault", "kind", "429", "method", r.Method, "path", r.URL.Path)
		errResp(http.StatusTooManyRequests, "rate limit exceeded (injected)").write(w)
	case 1:
		e.log.Debug("injected fault", "kind", "500", "method", r.Method, "path", r.URL.Path)
		errResp(http.StatusInternalServerError, "internal error (injected)").write(w)
	default:
		e.log.Debug("injected fault", "kind", "drop", "method", r.Method, "path", r.URL.Path)
		hj, ok := w.(http.Hijacker)
		if !ok {
			errResp(http.StatusBadGateway, "connection dropped (injected)").write(w)
			return true
		}
		conn, _, err := hj.Hijack()
		if err == nil {
			conn.Close()
		}
	}
	return true
}

// checkRate applies Fly's published limits per action and machine (or app).
func (e *Emulator) checkRate(r *http.Request, action string) (response, bool) {
	if e.cfg.NoRateLimits {
		return response{}, true
	}
	key, lim := fly.LimitKey(action, r.PathValue("app"), r.PathValue("id"))
	e.limitMu.Lock()
	l := e.limiters[key]
	if l == nil {
		l = rate.NewLimiter(lim.Rate, lim.Burst)
		e.limiters[key] = l
	}
	res := l.Reserve()
	delay := res.Delay()
	if delay > 0 {
		res.Cancel()
		e.limited++
	}
	e.limitMu.Unlock()
	if delay <= 0 {
		return response{}, true
	}
	e.log.Debug("rate limited", "action", action, "key", key)
	resp := errResp(http.StatusTooManyRequests, "rate limit exceeded")
	if e.cfg.RetryAfter {
		secs := int((delay + time.Second - 1) / time.Second)
		resp.header = http.Header{"Retry-After": {strconv.Itoa(secs)}}
	}
	return resp, false
}

// RateLimited returns how many calls the rate limits have answered 429.
func (e *Emulator) RateLimited() int {
	e.limitMu.Lock()
	defer e.limitMu.Unlock()
	return e.limited
}

// checkFresh answers 404 to reads of an app's machines (or of one machine)
// created less than NotFoundAfterCreate ago.
func (e *Emulator) checkFresh(r *http.Request, action string) (response, bool) {
	d := e.cfg.NotFoundAfterCreate
	if d <= 0 {
		return response{}, true
	}
	var created time.Time
	e.mu.Lock()
	if a := e.apps[r.PathValue("app")]; a != nil {
		switch action {
		case "machine_list":
			created = a.createdAt
		case "machine_get", "machine_wait":
			if m := a.machines[r.PathValue("id")]; m != nil {
				created = m.createdAt
			}
		}
	}
	e.mu.Unlock()
	if created.IsZero() || time.Since(created) >= d {
		return response{}, true
	}
	e.log.Debug("not found yet (just created)", "action", action, "path", r.URL.Path)
	return errResp(http.StatusNotFound, "not found (just created; eventually consistent)"), false
}

// decodeBody reads a JSON body into v. An empty body is allowed when
// optional is set.
func decodeBody(r *http.Request, v any, optional bool) (response, bool) {
	body, err := readAll(r)
	if err != nil {
		return errResp(http.StatusBadRequest, "read request body: "+err.Error()), false
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		if optional {
			return response{}, true
		}
		return errResp(http.StatusBadRequest, "request body is required"), false
	}
	if err := json.Unmarshal(body, v); err != nil {
		return errResp(http.StatusBadRequest, "invalid JSON body: "+err.Error()), false
	}
	return response{}, true
}

func readAll(r *http.Request) ([]byte, error) {
	const max = 4 << 20
	b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, err
	}
	if len(b) > max {
		return nil, fmt.Errorf("body larger than %d bytes", max)
	}
	return b, nil
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}
