package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/tunnel"
	"github.com/hangarhq/hangar/internal/validate"
	"github.com/hangarhq/hangar/internal/wire"
)

// Version is reported by /v1/health (set with -ldflags at release).
var Version = "dev"

// Agent serves one session on one VM.
type Agent struct {
	cfg      *Config
	log      hclog.Logger
	scrub    *scrubber
	verifier *agentauth.Verifier
	// usr1 delivers SIGUSR1 when Main caught it from the start (nil: Run
	// catches it itself).
	usr1 <-chan os.Signal
	// unauthLog rate-limits the warning about refused requests.
	unauthLog unauthLogger

	mu        sync.Mutex
	state     string
	sessID    string        // the session being or having been initialised
	initDone  chan struct{} // closed when the current init attempt ends
	initErr   string        // why init failed
	sess      *session      // set once running
	finishRes *agentapi.FinishResponse
	finishCh  chan struct{} // closed when finish has a result
	grace     *time.Timer

	exitCh   chan int // the agent should exit with this code
	exitOnce sync.Once
}

// New builds an agent; logs go to logOut (scrubbed of session secrets).
func New(cfg *Config, logOut io.Writer) (*Agent, error) {
	v, err := agentauth.NewVerifier(cfg.PublicKeys, cfg.MachineID)
	if err != nil {
		return nil, err
	}
	sc := &scrubber{}
	level := hclog.LevelFromString(cfg.LogLevel)
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "hangar-agent", Output: sc.writer(logOut), Level: level})
	return &Agent{cfg: cfg, log: log, scrub: sc, verifier: v, state: agentapi.StateIdle, exitCh: make(chan int, 1)}, nil
}

// Main runs the agent from the environment until it exits; it returns the
// process exit code.
func Main() int {
	// SIGUSR1 (redial, sent by the daemon after a resume) would kill the
	// process by default: catch it before anything else, since Fly may
	// suspend a fresh standby at any moment of its start.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	cfg, err := ConfigFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hangar-agent: %v\n", err)
		return 2
	}
	a, err := New(cfg, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hangar-agent: %v\n", err)
		return 2
	}
	a.usr1 = usr1
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}

// Run serves until finish, a fatal error or ctx ends: through the tunnel to
// the daemon when a daemon URL is configured, and on TCP when an address is
// (see the package doc).
func (a *Agent) Run(ctx context.Context) int {
	srv := NewHTTPServer(a.Handler())
	serveErr := make(chan error, 2)
	var where []any
	if a.cfg.Addr != "" {
		ln, err := net.Listen("tcp", a.cfg.Addr)
		if err != nil {
			a.log.Error("listen", "addr", a.cfg.Addr, "error", err)
			return 1
		}
		go func() { serveErr <- srv.Serve(ln) }()
		where = append(where, "addr", ln.Addr().String())
	}
	if a.cfg.DaemonURL != "" {
		tl, err := tunnel.Listen(context.Background(), tunnel.ListenerConfig{
			DaemonURL:  a.cfg.DaemonURL,
			MachineID:  a.cfg.MachineID,
			PublicKeys: a.cfg.PublicKeys,
			Token:      tunnel.FlyTokenSource(a.cfg.FlyAPISocket),
			Logger:     a.log.Named("tunnel"),
		})
		if err != nil {
			a.log.Error("tunnel", "daemon", a.cfg.DaemonURL, "error", err)
			_ = srv.Close()
			return 1
		}
		defer tl.Close()
		go func() { serveErr <- srv.Serve(tl) }()
		usr1 := a.usr1
		if usr1 == nil {
			c := make(chan os.Signal, 1)
			signal.Notify(c, syscall.SIGUSR1)
			defer signal.Stop(c)
			usr1 = c
		}
		stopUSR1 := make(chan struct{})
		defer close(stopUSR1)
		go func() {
			for {
				select {
				case <-usr1:
					a.log.Info("SIGUSR1: redialling the tunnel")
					tl.Redial()
				case <-stopUSR1:
					return
				}
			}
		}()
		where = append(where, "daemon", a.cfg.DaemonURL)
	}
	if len(where) == 0 {
		a.log.Error("nothing to serve on: set " + EnvDaemonURL + " or " + EnvAddr)
		return 1
	}
	a.log.Info("listening", append(where, "machine", a.cfg.MachineID, "workspace", a.cfg.Workspace,
		"version", Version, "keys", len(a.cfg.PublicKeys))...)
	code := 0
	select {
	case err := <-serveErr:
		a.log.Error("serve", "error", err)
		code = 1
	case code = <-a.exitCh:
	case <-ctx.Done():
		a.log.Info("stop signal: ending the session")
		a.shutdownSession()
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	a.log.Info("exiting", "code", code)
	return code
}

// shutdownSession ends the command on a stop signal, with a last
// checkpoint of work in progress when a repository is configured.
func (a *Agent) shutdownSession() {
	a.mu.Lock()
	s := a.sess
	a.mu.Unlock()
	if s == nil {
		return
	}
	a.mu.Lock()
	st := a.state
	a.mu.Unlock()
	if st == agentapi.StateFinishing || st == agentapi.StateFinished {
		return
	}
	if s.repo != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s.doCheckpoint(ctx)
		cancel()
	}
	s.halt()
	s.proc.stop(time.Second)
}

func (a *Agent) exit(code int) {
	a.exitOnce.Do(func() { a.exitCh <- code })
}

// Handler is the agent's HTTP API.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+agentapi.PathHealth, a.handleHealth)
	mux.HandleFunc("POST "+agentapi.PathInit, a.handleInit)
	mux.HandleFunc("GET "+agentapi.PathStatus, a.handleStatus)
	mux.HandleFunc("POST "+agentapi.PathFinish, a.handleFinish)
	mux.HandleFunc("GET "+agentapi.PathAttach, a.handleAttach)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, agentapi.CodeNotFound, "no such endpoint")
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, agentapi.ErrorBody{Error: agentapi.ErrorDetail{Code: code, Message: msg}})
}

// authenticate verifies the bearer token; on failure it answers 401.
func (a *Agent) authenticate(w http.ResponseWriter, r *http.Request) (*agentauth.Claims, bool) {
	c, err := a.verifier.VerifyRequest(r)
	if err != nil {
		a.unauthLog.log(a.log, r, err)
		writeError(w, http.StatusUnauthorized, agentapi.CodeUnauthorized, "invalid or missing agent token")
		return nil, false
	}
	return c, true
}

// handleHealth answers anyone whether the agent is usable (ok); its state
// and version only with a valid token: they tell an unauthenticated caller
// what runs here and whether a session is live.
func (a *Agent) handleHealth(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	st := a.state
	a.mu.Unlock()
	h := agentapi.HealthResponse{OK: st != agentapi.StateFailed}
	if r.Header.Get("Authorization") != "" {
		if _, err := a.verifier.VerifyRequest(r); err == nil {
			h.State, h.Version = st, Version
		} else {
			a.unauthLog.log(a.log, r, err)
		}
	}
	writeJSON(w, http.StatusOK, h)
}

// currentSession checks that the token's session is the agent's session;
// on failure it answers and returns nil.
func (a *Agent) currentSession(w http.ResponseWriter, c *agentauth.Claims) (*session, string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sessID == "" {
		writeError(w, http.StatusConflict, agentapi.CodeNotInitialized, "the agent has no session yet: call init first")
		return nil, "", false
	}
	if c.SessionID != a.sessID {
		// DESIGN: a token for anything but this agent's session is 401.
		writeError(w, http.StatusUnauthorized, agentapi.CodeWrongSession, "this agent serves another session")
		return nil, "", false
	}
	return a.sess, a.state, true
}

func (a *Agent) statusLocked() *agentapi.StatusResponse {
	st := &agentapi.StatusResponse{State: a.state, Session: a.sessID, Error: a.initErr}
	return st
}

func (a *Agent) status() *agentapi.StatusResponse {
	a.mu.Lock()
	st := a.statusLocked()
	s := a.sess
	a.mu.Unlock()
	if s != nil {
		s.status(st)
	}
	return st
}

func (a *Agent) handleStatus(w http.ResponseWriter, r *http.Request) {
	c, ok := a.authenticate(w, r)
	if !ok {
		return
	}
	a.mu.Lock()
	sessID := a.sessID
	a.mu.Unlock()
	if sessID != "" && c.SessionID != sessID {
		writeError(w, http.StatusUnauthorized, agentapi.CodeWrongSession, "this agent serves another session")
		return
	}
	writeJSON(w, http.StatusOK, a.status())
}

// validateInit checks and normalises an init request (422 on error).
func validateInit(ctx context.Context, req *agentapi.InitRequest) error {
	if err := validateSessionID(req.SessionID); err != nil {
		return err
	}
	switch req.Mode {
	case "":
		req.Mode = agentapi.ModePTY
	case agentapi.ModePTY, agentapi.ModeJSONL:
	default:
		return fmt.Errorf("mode %q: want pty or jsonl", req.Mode)
	}
	// The same rules as the daemon's API (package validate). A file URL
	// names this VM's own disk, so the agent allows it; the daemon decides
	// whether a tenant may ask for one.
	if req.Repo != "" {
		if err := validate.RepoURL(req.Repo, validate.RepoPolicy{AllowFile: true}); err != nil {
			return fmt.Errorf("repo URL: %w", err)
		}
	}
	if req.Branch != "" {
		if err := validate.Branch(req.Branch); err != nil {
			return fmt.Errorf("branch: %w", err)
		}
		if req.Repo == "" {
			return errors.New("branch needs a repo")
		}
	}
	if req.SessionBranch == "" {
		req.SessionBranch = defaultSessionBase + req.SessionID
	}
	if err := validate.Branch(req.SessionBranch); err != nil {
		return fmt.Errorf("session_branch: %w", err)
	}
	if req.Cols == 0 && req.Rows == 0 {
		req.Cols, req.Rows = defaultCols, defaultRows
	}
	if req.Cols < 1 || req.Rows < 1 || req.Cols > maxCols || req.Rows > maxRows {
		return fmt.Errorf("invalid size %dx%d: columns 1..%d, rows 1..%d", req.Cols, req.Rows, maxCols, maxRows)
	}
	if err := validate.Command(req.Command); err != nil {
		return fmt.Errorf("command: %w", err)
	}
	if err := validate.Env(req.Env); err != nil {
		return fmt.Errorf("env: %w", err)
	}
	if c := req.Credentials; c != nil {
		for name, v := range map[string]string{"anthropic_api_key": c.AnthropicAPIKey, "claude_oauth_token": c.ClaudeOAuthToken, "git_token": c.GitToken} {
			if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) || len(v) > 8192 {
				return fmt.Errorf("credentials.%s: control characters or too long", name)
			}
		}
	}
	if d := time.Duration(req.CheckpointInterval); d < 0 || (d > 0 && d < time.Second) {
		return errors.New("checkpoint_interval: want 0 (off) or at least 1s")
	}
	if req.GitAuthor != nil && (strings.ContainsAny(req.GitAuthor.Name, "<>\n\x00") || strings.ContainsAny(req.GitAuthor.Email, "<>\n\x00 ")) {
		return errors.New("git_author: invalid name or email")
	}
	return nil
}

func (a *Agent) handleInit(w http.ResponseWriter, r *http.Request) {
	longCall(w)
	c, ok := a.authenticate(w, r)
	if !ok {
		return
	}
	var req agentapi.InitRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxInitBody))
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, agentapi.CodeBadRequest, "malformed JSON body: "+a.scrub.scrub(err.Error()))
		return
	}
	// Register the secrets before anything could log them.
	a.scrub.add(req.Credentials.Secrets()...)
	if req.SessionID == "" {
		writeError(w, http.StatusUnprocessableEntity, agentapi.CodeInvalid, "session_id is required")
		return
	}
	if c.SessionID != req.SessionID {
		writeError(w, http.StatusUnauthorized, agentapi.CodeUnauthorized, "the token is for another session")
		return
	}
	if err := validateInit(r.Context(), &req); err != nil {
		writeError(w, http.StatusUnprocessableEntity, agentapi.CodeInvalid, a.scrub.scrub(err.Error()))
		return
	}
	a.mu.Lock()
	switch {
	case a.sessID != "" && a.sessID != req.SessionID:
		a.mu.Unlock()
		writeError(w, http.StatusConflict, agentapi.CodeConflict, "this agent already serves another session")
		return
	case a.state == agentapi.StateInitializing:
		done := a.initDone
		a.mu.Unlock()
		select {
		case <-done:
		case <-r.Context().Done():
			return
		}
		a.respondInit(w)
		return
	case a.state == agentapi.StateIdle || a.state == agentapi.StateFailed:
		// A failed init may be retried for the same session.
		if a.state == agentapi.StateFailed {
			if err := clearDir(a.cfg.Workspace); err != nil {
				a.mu.Unlock()
				writeError(w, http.StatusInternalServerError, agentapi.CodeInternal, "clean workspace: "+err.Error())
				return
			}
		}
		a.state, a.sessID, a.initErr = agentapi.StateInitializing, req.SessionID, ""
		a.initDone = make(chan struct{})
		if a.grace != nil {
			a.grace.Stop()
		}
		a.mu.Unlock()
	default: // running, exited, finishing, finished: same session
		a.mu.Unlock()
		a.respondInit(w)
		return
	}
	// The clone must not die with the caller's connection.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	s, err := a.startSession(ctx, &req)
	cancel()
	a.mu.Lock()
	if err != nil {
		a.state, a.initErr = agentapi.StateFailed, a.scrub.scrub(err.Error())
		a.log.Error("init failed", "session", req.SessionID, "error", a.initErr)
		_ = clearDir(a.cfg.Workspace)
		a.startGraceLocked("init failed")
	} else {
		a.state, a.sess = agentapi.StateRunning, s
	}
	close(a.initDone)
	a.mu.Unlock()
	a.respondInit(w)
}

func (a *Agent) respondInit(w http.ResponseWriter) {
	st := a.status()
	if st.State == agentapi.StateFailed {
		writeError(w, http.StatusBadGateway, agentapi.CodeInitFailed, st.Error)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// clearDir removes a directory's contents (a failed clone's leftovers).
func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(dir + "/" + e.Name()); err != nil {
			return err
		}
	}
	return nil
}

// commandExited is called when the command ended by itself or by finish.
func (a *Agent) commandExited(s *session) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state == agentapi.StateRunning {
		a.state = agentapi.StateExited
		a.startGraceLocked("command exited")
	}
}

// startGraceLocked arms the timer that ends an agent nobody finishes: a VM
// must not stay up with a dead session. After an exited command the work
// is committed and pushed first.
func (a *Agent) startGraceLocked(why string) {
	if a.grace != nil {
		a.grace.Stop()
	}
	a.log.Info("exit grace started", "reason", why, "grace", a.cfg.ExitGrace)
	a.grace = time.AfterFunc(a.cfg.ExitGrace, func() {
		a.mu.Lock()
		st := a.state
		a.mu.Unlock()
		switch st {
		case agentapi.StateExited:
			a.log.Warn("no finish within the grace period: finishing on my own")
			res, _ := a.finish(&agentapi.FinishRequest{})
			if res != nil {
				a.log.Info("finished", "ok", res.OK, "message", res.Message)
			}
			a.exit(0)
		case agentapi.StateFailed:
			a.log.Error("init failed and no retry within the grace period: exiting")
			a.exit(1)
		}
	})
}

// finish runs (once) the session's finish; later calls get the same result.
func (a *Agent) finish(req *agentapi.FinishRequest) (*agentapi.FinishResponse, error) {
	a.mu.Lock()
	switch a.state {
	case agentapi.StateFinishing, agentapi.StateFinished:
		ch := a.finishCh
		a.mu.Unlock()
		<-ch
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.finishRes, nil
	case agentapi.StateFailed:
		res := &agentapi.FinishResponse{Message: "session failed to initialise: " + a.initErr}
		a.state, a.finishRes = agentapi.StateFinished, res
		a.finishCh = make(chan struct{})
		close(a.finishCh)
		a.mu.Unlock()
		return res, nil
	case agentapi.StateRunning, agentapi.StateExited:
	default:
		a.mu.Unlock()
		return nil, fmt.Errorf("cannot finish in state %s", a.state)
	}
	s := a.sess
	a.state = agentapi.StateFinishing
	a.finishCh = make(chan struct{})
	if a.grace != nil {
		a.grace.Stop()
	}
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a.log.Info("finishing", "session", s.id)
	res := s.finish(ctx, req)
	res.Message = a.scrub.scrub(res.Message)
	a.log.Info("finish result", "session", s.id, "ref", res.Ref, "commit", res.Commit, "ok", res.OK, "message", res.Message)
	a.mu.Lock()
	a.state, a.finishRes = agentapi.StateFinished, res
	close(a.finishCh)
	a.mu.Unlock()
	return res, nil
}

func (a *Agent) handleFinish(w http.ResponseWriter, r *http.Request) {
	longCall(w)
	c, ok := a.authenticate(w, r)
	if !ok {
		return
	}
	var req agentapi.FinishRequest
	if r.ContentLength != 0 {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			writeError(w, http.StatusBadRequest, agentapi.CodeBadRequest, "malformed JSON body: "+err.Error())
			return
		}
	}
	if req.Author != nil && (strings.ContainsAny(req.Author.Name, "<>\n\x00") || strings.ContainsAny(req.Author.Email, "<>\n\x00 ")) {
		writeError(w, http.StatusUnprocessableEntity, agentapi.CodeInvalid, "author: invalid name or email")
		return
	}
	if _, _, ok := a.currentSession(w, c); !ok {
		return
	}
	res, err := a.finish(&req)
	if err != nil {
		writeError(w, http.StatusConflict, agentapi.CodeConflict, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	// The agent's exit ends the VM (auto_destroy); answer first.
	go func() {
		time.Sleep(100 * time.Millisecond)
		a.exit(0)
	}()
}

func (a *Agent) handleAttach(w http.ResponseWriter, r *http.Request) {
	c, ok := a.authenticate(w, r)
	if !ok {
		return
	}
	s, state, ok := a.currentSession(w, c)
	if !ok {
		return
	}
	switch state {
	case agentapi.StateFinishing, agentapi.StateFinished:
		writeError(w, http.StatusConflict, agentapi.CodeConflict, "the session has ended")
		return
	case agentapi.StateFailed:
		writeError(w, http.StatusConflict, agentapi.CodeConflict, "the session failed to initialise")
		return
	}
	// The subprotocol must match the session's mode.
	want := wire.SubprotocolPTY
	if s != nil && s.mode == agentapi.ModeJSONL {
		want = wire.SubprotocolJSONL
	}
	offered := false
	for _, p := range websocketProtocols(r) {
		if p == wire.SubprotocolPTY || p == wire.SubprotocolJSONL {
			if s == nil {
				want = p // still initialising: the mode is not known here yet
			}
			offered = offered || p == want
		}
	}
	if !offered {
		writeError(w, http.StatusBadRequest, agentapi.CodeBadRequest, "subprotocol "+want+" required for this session")
		return
	}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{want}, InsecureSkipVerify: true})
	if err != nil {
		return
	}
	conn.SetReadLimit(-1) // frames are limited (and over-long ones skipped) by the agent itself
	ctx := context.Background()
	req, ok := a.readAttach(ctx, conn)
	if !ok {
		return
	}
	if s == nil { // initialising: report progress until ready
		s = a.waitReady(ctx, conn)
		if s == nil {
			return
		}
		if (s.mode == agentapi.ModeJSONL) != (want == wire.SubprotocolJSONL) {
			_ = conn.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Error{Code: wire.ErrCodeBadRequest, Message: "subprotocol does not match the session's mode"}))
			conn.Close(websocket.StatusPolicyViolation, "subprotocol")
			return
		}
	}
	s.attach(ctx, conn, req)
}

func websocketProtocols(r *http.Request) []string {
	var out []string
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// readAttach reads the mandatory first frame.
func (a *Agent) readAttach(ctx context.Context, conn *websocket.Conn) (*wire.Attach, bool) {
	fail := func(code, msg string) (*wire.Attach, bool) {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = conn.Write(wctx, websocket.MessageText, wire.MustEncode(&wire.Error{Code: code, Message: msg}))
		conn.Close(websocket.StatusPolicyViolation, code)
		return nil, false
	}
	rctx, cancel := context.WithTimeout(ctx, attachTimeout)
	defer cancel()
	typ, r, err := conn.Reader(rctx)
	if err != nil {
		conn.CloseNow()
		return nil, false
	}
	data, err := readFrame(r, a.cfg.MaxFrame)
	if err != nil {
		return fail(wire.ErrCodeFrameTooLarge, "first frame too large")
	}
	if typ != websocket.MessageText {
		return fail(wire.ErrCodeAttachRequired, "the first frame must be an attach message")
	}
	m, err := wire.Decode(data)
	if err != nil {
		return fail(wire.ErrCodeAttachRequired, "the first frame must be an attach message: "+err.Error())
	}
	req, ok := m.(*wire.Attach)
	if !ok {
		return fail(wire.ErrCodeAttachRequired, "the first frame must be an attach message, not "+m.MessageType())
	}
	if req.Role != "" && !req.Role.Valid() {
		return fail(wire.ErrCodeBadRequest, fmt.Sprintf("role %q: want rw or ro", req.Role))
	}
	if req.From < wire.LiveTail || req.InputFrom < 0 || req.Window < 0 {
		return fail(wire.ErrCodeBadRequest, "from must be >= -1, input_from and window >= 0")
	}
	return req, true
}

// waitReady sends state frames while init runs; nil if it failed.
func (a *Agent) waitReady(ctx context.Context, conn *websocket.Conn) *session {
	a.mu.Lock()
	done := a.initDone
	a.mu.Unlock()
	_ = conn.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.State{State: agentapi.StateInitializing, Detail: "preparing the workspace"}))
	<-done
	a.mu.Lock()
	s, errMsg := a.sess, a.initErr
	a.mu.Unlock()
	if s == nil {
		_ = conn.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Error{Code: wire.ErrCodeSessionGone, Message: "init failed: " + errMsg}))
		conn.Close(wire.CloseSessionGone, "init failed")
	}
	return s
}
