package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/wire"
)

// session is the one session this agent serves.
type session struct {
	a             *Agent
	oomAtStart    int64 // the machine's OOM kill count when the command started
	oomKilled     bool  // the command died of the machine's OOM killer
	id            string
	mode          agentapi.Mode
	repo          string
	branch        string
	sessionBranch string
	author        agentapi.GitAuthor
	git           *git
	proc          *process
	startedAt     time.Time

	out   outStream
	bring *byteRing // pty mode
	lring *lineRing // jsonl mode

	mu          sync.Mutex
	writer      *attachment
	attachments map[*attachment]struct{}
	cols, rows  int
	exit        *wire.Exit    // set once the process ended and its output is in
	exited      chan struct{} // closed when exit is set
	protect     int64         // jsonl: lines at or after this are never evicted
	authFailRun bool
	checkpoint  *agentapi.CheckpointStatus
	lastTree    string

	flow     chan struct{} // jsonl: wakes the stdout pump (acks, writer changes)
	stop     chan struct{} // closed by halt: stops the pump's waits and checkpoints
	stopOnce sync.Once

	// inMu serialises input; the counters are atomics so that status never
	// waits behind an input write blocked on a program that does not read.
	inMu         sync.Mutex
	inputApplied atomic.Int64
	bytesIn      atomic.Int64
	linesIn      atomic.Int64
	lastInput    atomic.Int64 // unix nanos

	bytesOut   atomic.Int64
	linesOut   atomic.Int64
	lastOutput atomic.Int64 // unix nanos

	gitMu sync.Mutex // serialises checkpoint and finish
}

// childEnv builds the command's environment: the agent's (without hangar's
// variables and secrets), Claude Code's settings, the user's extra env, and
// last the user's credentials, which exist nowhere else on the VM.
func (a *Agent) childEnv(req *agentapi.InitRequest, author agentapi.GitAuthor) []string {
	env := childBaseEnv()
	set := func(k, v string) {
		for i, kv := range env {
			if strings.HasPrefix(kv, k+"=") {
				env[i] = k + "=" + v
				return
			}
		}
		env = append(env, k+"="+v)
	}
	if req.Mode == agentapi.ModePTY {
		set("TERM", "xterm-256color")
		set("COLORTERM", "truecolor")
	}
	set("DISABLE_AUTOUPDATER", "1")
	set("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
	set("CLAUDE_CONFIG_DIR", a.cfg.ClaudeConfigDir)
	set("GIT_AUTHOR_NAME", author.Name)
	set("GIT_AUTHOR_EMAIL", author.Email)
	set("GIT_COMMITTER_NAME", author.Name)
	set("GIT_COMMITTER_EMAIL", author.Email)
	if os.Getuid() == 0 && os.Getenv("IS_SANDBOX") == "" {
		// Claude Code refuses bypass permissions as root outside a declared
		// sandbox; a hangar VM is one (NOTES.md §2.4).
		set("IS_SANDBOX", "1")
	}
	for k, v := range req.Env {
		set(k, v)
	}
	if c := req.Credentials; c != nil {
		if c.AnthropicAPIKey != "" {
			set("ANTHROPIC_API_KEY", c.AnthropicAPIKey)
		}
		if c.ClaudeOAuthToken != "" {
			set("CLAUDE_CODE_OAUTH_TOKEN", c.ClaudeOAuthToken)
		}
	}
	return env
}

// defaultCommand is the argv when init names none (NOTES.md §1.2).
func (a *Agent) defaultCommand(mode agentapi.Mode) []string {
	if mode == agentapi.ModeJSONL {
		return []string{a.cfg.ClaudeBin, "-p", "--input-format", "stream-json", "--output-format", "stream-json",
			"--verbose", "--include-partial-messages", "--replay-user-messages"}
	}
	return []string{a.cfg.ClaudeBin}
}

// startSession prepares the workspace and starts the command.
func (a *Agent) startSession(ctx context.Context, req *agentapi.InitRequest) (*session, error) {
	author := agentapi.GitAuthor{Name: defaultAuthorName, Email: defaultAuthorEmail}
	if req.GitAuthor != nil {
		if req.GitAuthor.Name != "" {
			author.Name = req.GitAuthor.Name
		}
		if req.GitAuthor.Email != "" {
			author.Email = req.GitAuthor.Email
		}
	}
	token := ""
	apiKey := ""
	if req.Credentials != nil {
		token = req.Credentials.GitToken
		apiKey = req.Credentials.AnthropicAPIKey
	}
	g := &git{dir: a.cfg.Workspace, token: token, author: author, scrub: a.scrub.scrub}
	a.log.Info("preparing workspace", "session", req.SessionID, "repo", req.Repo, "branch", req.Branch,
		"session_branch", req.SessionBranch, "credentials", req.Credentials)
	if err := g.prepareWorkspace(ctx, req.Repo, req.Branch, req.SessionBranch); err != nil {
		return nil, fmt.Errorf("prepare workspace: %w", err)
	}
	if err := seedClaudeConfig(a.cfg.ClaudeConfigDir, a.cfg.Workspace, apiKey); err != nil {
		return nil, fmt.Errorf("prepare claude config: %w", err)
	}
	argv := req.Command
	if len(argv) == 0 {
		argv = a.defaultCommand(req.Mode)
	}
	s := &session{
		a: a, id: req.SessionID, mode: req.Mode, repo: req.Repo, branch: req.Branch,
		sessionBranch: req.SessionBranch, author: author, git: g,
		attachments: map[*attachment]struct{}{}, cols: req.Cols, rows: req.Rows,
		exited: make(chan struct{}), flow: make(chan struct{}, 1), stop: make(chan struct{}),
	}
	if req.Mode == agentapi.ModeJSONL {
		s.lring = newLineRing(a.cfg.BufferSize)
		s.out = s.lring
	} else {
		s.bring = newByteRing(a.cfg.BufferSize)
		s.out = s.bring
	}
	proc, err := startProcess(procSpec{
		argv: argv, env: a.childEnv(req, author), dir: a.cfg.Workspace,
		pty: req.Mode == agentapi.ModePTY, cols: req.Cols, rows: req.Rows,
	})
	if err != nil {
		return nil, err
	}
	s.proc = proc
	s.startedAt = time.Now()
	s.oomAtStart = oomKillCount()
	a.log.Info("command started", "session", s.id, "mode", s.mode, "pid", proc.pid, "argv0", argv[0])
	pumpDone := make(chan struct{})
	if s.mode == agentapi.ModeJSONL {
		go s.pumpLines(pumpDone)
		go s.pumpStderr()
	} else {
		go s.pumpPTY(pumpDone)
	}
	go s.waitExit(pumpDone)
	if iv := time.Duration(req.CheckpointInterval); iv > 0 && s.repo != "" {
		go s.checkpointLoop(iv)
	}
	return s, nil
}

func (s *session) noteOutput(n int) {
	s.bytesOut.Add(int64(n))
	s.lastOutput.Store(time.Now().UnixNano())
}

// pumpPTY copies the pty's output into the ring. Reads go through the
// netpoller; the ring never blocks, so a slow client cannot stall the
// command. Each read takes whatever is available, so a single echoed
// keystroke goes out at once. The tty hands bulk output over a few KiB per
// read: after a read of at least bulkRead bytes the pump reads again
// without waiting (a non-blocking read that ends at the first "nothing
// there") until maxFramePayload bytes are in hand, and appends them at
// once, so that bulk output wakes the attachments and goes out in frames
// of up to 32 KiB instead of one per tty chunk. No timer is involved: a
// small read, or a bulk read with nothing behind it, goes out at once.
func (s *session) pumpPTY(done chan<- struct{}) {
	defer close(done)
	buf := make([]byte, maxFramePayload)
	rc, rcErr := s.proc.pty.SyscallConn()
	for {
		n, err := s.proc.pty.Read(buf)
		for err == nil && rcErr == nil && n >= bulkRead && n < len(buf) {
			m := readNow(rc, buf[n:])
			if m <= 0 {
				break
			}
			n += m
		}
		if n > 0 {
			s.bring.append(buf[:n])
			s.noteOutput(n)
		}
		if err != nil {
			// EIO once every holder of the tty is gone; a deadline after exit.
			if !errors.Is(err, unix.EIO) && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, io.EOF) {
				s.a.log.Warn("pty read", "session", s.id, "error", err)
			}
			return
		}
	}
}

// bulkRead is the size of a pty read that suggests bulk output behind it
// (a keystroke's echo or a prompt is far smaller).
const bulkRead = 1024

// readNow reads what the non-blocking fd behind rc holds right now, without
// waiting for more: 0 when nothing is there (or on any error, which the
// next blocking read reports).
func readNow(rc syscall.RawConn, p []byte) int {
	n := 0
	_ = rc.Read(func(fd uintptr) bool {
		k, err := unix.Read(int(fd), p)
		if err == nil && k > 0 {
			n = k
		}
		return true // never wait: the caller sends what it has
	})
	return n
}

// pumpLines copies the CLI's stdout, line by line, into the line ring. It
// pauses (leaving the CLI blocked on its pipe) while appending would evict
// a line the writer has not received, or the writer's window is full.
func (s *session) pumpLines(done chan<- struct{}) {
	defer close(done)
	r := bufio.NewReaderSize(s.proc.out, 64<<10)
	for {
		line, err := readLine(r)
		line = bytes.TrimRight(line, "\r")
		if len(bytes.TrimSpace(line)) > 0 {
			if !s.waitFlow(len(line)) {
				return
			}
			s.lring.appendLine(line)
			s.noteOutput(len(line))
			s.linesOut.Add(1)
			s.watchAuthFailure(line)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				s.a.log.Warn("stdout read", "session", s.id, "error", err)
			}
			return
		}
	}
}

// readLine returns the next line without its newline, as a fresh slice.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if n := len(line); n > 0 && line[n-1] == '\n' {
			line = line[:n-1]
		}
		return line, err
	}
}

// waitFlow blocks until a line of n bytes may be appended (jsonl). It
// returns false when the session is stopping.
func (s *session) waitFlow(n int) bool {
	for {
		s.mu.Lock()
		protect := s.protect
		ok := true
		if w := s.writer; w != nil && w.window > 0 {
			_, head := s.out.bounds()
			ok = head-w.creditBase() < w.window
		}
		s.mu.Unlock()
		if ok && s.lring.fits(n, protect) {
			return true
		}
		select {
		case <-s.flow:
		case <-s.stop:
			return false
		}
	}
}

func (s *session) pokeFlow() {
	select {
	case s.flow <- struct{}{}:
	default:
	}
}

// pumpStderr logs the CLI's stderr (scrubbed by the log writer).
func (s *session) pumpStderr() {
	sc := bufio.NewScanner(s.proc.err)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		s.a.log.Info("command stderr", "session", s.id, "line", truncate(sc.Text(), 2000))
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// watchAuthFailure surfaces a run of system/api_retry lines with
// error authentication_failed at once as an error frame (NOTES.md §7: the
// CLI retries a bad key for over a minute before giving up).
func (s *session) watchAuthFailure(line []byte) {
	if !bytes.Contains(line, []byte("api_retry")) {
		s.mu.Lock()
		s.authFailRun = false
		s.mu.Unlock()
		return
	}
	var m struct {
		Type    string `json:"type"`
		Subtype string `json:"subtype"`
		Error   string `json:"error"`
	}
	if json.Unmarshal(line, &m) != nil || m.Type != "system" || m.Subtype != "api_retry" || m.Error != "authentication_failed" {
		return
	}
	s.mu.Lock()
	first := !s.authFailRun
	s.authFailRun = true
	s.mu.Unlock()
	if first {
		s.a.log.Warn("Claude Code credentials rejected", "session", s.id)
		s.broadcast(&wire.Error{Code: wire.ErrCodeCredentialsRejected,
			Message: "credentials rejected: the Claude API answers authentication_failed; check the API key or token"})
	}
}

// broadcast queues a control frame to every attachment.
func (s *session) broadcast(m wire.Message) {
	b := wire.MustEncode(m)
	s.mu.Lock()
	defer s.mu.Unlock()
	for at := range s.attachments {
		at.sendCtrl(b)
	}
}

// waitExit records the exit once the process is reaped and its output read.
func (s *session) waitExit(pumpDone <-chan struct{}) {
	<-s.proc.exited
	// Orphans of the command (background jobs) would keep the pty or pipes
	// open and the output unfinished: end the whole group.
	_ = unix.Kill(-s.proc.pid, unix.SIGKILL)
	if s.proc.pty != nil {
		_ = s.proc.pty.SetReadDeadline(time.Now().Add(drainAfterExit))
	}
	<-pumpDone
	code, sig := s.proc.exitCode()
	_, head := s.out.bounds()
	s.a.log.Info("command exited", "session", s.id, "code", code, "signal", sig, "output", head)
	// The agent's state changes before any client can see the exit frame.
	s.a.commandExited(s)
	// The kernel's OOM killer sends SIGKILL; its count tells it from any
	// other SIGKILL (in a VM of its own the count is the machine's).
	oom := sig == "KILL" && oomKillCount() > s.oomAtStart
	if oom {
		s.a.log.Warn("command killed by the out-of-memory killer", "session", s.id)
	}
	s.mu.Lock()
	s.oomKilled = oom
	s.exit = &wire.Exit{Code: code, Signal: sig, At: head}
	close(s.exited)
	s.mu.Unlock()
	s.proc.closeFiles()
	s.out.close()
}

// writeInput applies input from a writer. Returns the error to report.
func (s *session) writeInput(at *attachment, data []byte) *wire.Error {
	s.inMu.Lock()
	defer s.inMu.Unlock()
	if at.revoked.Load() {
		return &wire.Error{Code: wire.ErrCodeSuperseded, Message: "a newer writer took over; input ignored"}
	}
	select {
	case <-s.proc.exited:
		return &wire.Error{Code: wire.ErrCodeProcessExited, Message: "the process has exited; input ignored"}
	default:
	}
	now := time.Now()
	if s.mode == agentapi.ModePTY {
		s.lastInput.Store(now.UnixNano())
		for len(data) > 0 {
			// A program that does not read its terminal blocks the write;
			// every second the lock is let go so that a new writer can take
			// over (input_applied counts exactly what went in).
			_ = s.proc.pty.SetWriteDeadline(time.Now().Add(time.Second))
			n, err := s.proc.pty.Write(data)
			s.inputApplied.Add(int64(n))
			s.bytesIn.Add(int64(n))
			data = data[n:]
			if errors.Is(err, os.ErrDeadlineExceeded) {
				s.inMu.Unlock()
				s.inMu.Lock()
				if at.revoked.Load() {
					return &wire.Error{Code: wire.ErrCodeSuperseded, Message: "a newer writer took over; the rest of the input was ignored"}
				}
				continue
			}
			if err != nil {
				return &wire.Error{Code: wire.ErrCodeInternal, Message: "write to terminal failed"}
			}
		}
		return nil
	}
	// jsonl: one frame is one line; it counts as consumed even when refused,
	// so that the client's line count stays aligned with input_applied.
	s.inputApplied.Add(1)
	s.lastInput.Store(now.UnixNano())
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil || buf.Len() == 0 || !json.Valid(data) {
		return &wire.Error{Code: wire.ErrCodeBadRequest, Message: "input line is not valid JSON; not forwarded"}
	}
	buf.WriteByte('\n')
	if _, err := s.proc.in.Write(buf.Bytes()); err != nil {
		return &wire.Error{Code: wire.ErrCodeProcessExited, Message: "the process no longer reads input"}
	}
	s.linesIn.Add(1)
	s.bytesIn.Add(int64(buf.Len() - 1))
	return nil
}

// resize applies a new terminal size; ok=false with an error to report.
func (s *session) resize(cols, rows int) *wire.Error {
	if cols < 1 || rows < 1 || cols > maxCols || rows > maxRows {
		return &wire.Error{Code: wire.ErrCodeInvalidSize,
			Message: fmt.Sprintf("invalid size %dx%d: columns 1..%d, rows 1..%d", cols, rows, maxCols, maxRows)}
	}
	s.mu.Lock()
	if s.cols == cols && s.rows == rows {
		s.mu.Unlock()
		return nil
	}
	s.cols, s.rows = cols, rows
	s.mu.Unlock()
	if err := s.proc.setSize(cols, rows); err != nil {
		return &wire.Error{Code: wire.ErrCodeInternal, Message: "resize failed: " + err.Error()}
	}
	s.broadcast(&wire.Size{Cols: cols, Rows: rows})
	return nil
}

var signals = map[string]unix.Signal{
	wire.SignalINT: unix.SIGINT, wire.SignalTERM: unix.SIGTERM, wire.SignalKILL: unix.SIGKILL, wire.SignalHUP: unix.SIGHUP,
}

func (s *session) signal(name string) *wire.Error {
	sig, ok := signals[name]
	if !ok {
		return &wire.Error{Code: wire.ErrCodeInvalidSignal, Message: fmt.Sprintf("unknown signal %q (INT, TERM, KILL, HUP)", name)}
	}
	if err := s.proc.signalGroup(sig); err != nil {
		return &wire.Error{Code: wire.ErrCodeProcessExited, Message: "signal not delivered: " + err.Error()}
	}
	return nil
}

// status reports the session.
func (s *session) status(st *agentapi.StatusResponse) {
	st.Session, st.Mode, st.Repo, st.Branch, st.SessionBranch = s.id, s.mode, s.repo, s.branch, s.sessionBranch
	st.Workspace = s.a.cfg.Workspace
	st.PID = s.proc.pid
	st.Oldest, st.Head = s.out.bounds()
	st.BytesOut = s.bytesOut.Load()
	st.LinesOut = s.linesOut.Load()
	if t := s.lastOutput.Load(); t != 0 {
		tt := time.Unix(0, t).UTC()
		st.LastOutputAt = &tt
	}
	started := s.startedAt.UTC()
	st.StartedAt = &started
	st.InputApplied, st.BytesIn, st.LinesIn = s.inputApplied.Load(), s.bytesIn.Load(), s.linesIn.Load()
	if t := s.lastInput.Load(); t != 0 {
		tt := time.Unix(0, t).UTC()
		st.LastInputAt = &tt
	}
	s.mu.Lock()
	st.Cols, st.Rows = s.cols, s.rows
	st.Attachments = len(s.attachments)
	st.Writer = s.writer != nil
	if s.exit != nil {
		code := s.exit.Code
		st.ExitCode, st.ExitSignal = &code, s.exit.Signal
		st.OOMKilled = s.oomKilled
	}
	if s.checkpoint != nil {
		c := *s.checkpoint
		st.Checkpoint = &c
	}
	s.mu.Unlock()
}

// checkpointLoop pushes work in progress every interval to
// refs/hangar/checkpoints/<session>, leaving the session branch clean.
func (s *session) checkpointLoop(iv time.Duration) {
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			s.doCheckpoint(ctx)
			cancel()
		case <-s.stop:
			return
		case <-s.exited:
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			s.doCheckpoint(ctx)
			cancel()
			return
		}
	}
}

func (s *session) doCheckpoint(ctx context.Context) {
	s.gitMu.Lock()
	defer s.gitMu.Unlock()
	select {
	case <-s.stop:
		return
	default:
	}
	ref := checkpointRefBase + s.id
	commit, tree, err := s.git.snapshot(ctx, "hangar checkpoint of session "+s.id)
	st := &agentapi.CheckpointStatus{Ref: ref, At: time.Now().UTC()}
	if err == nil {
		s.mu.Lock()
		same := tree == s.lastTree
		s.mu.Unlock()
		if same {
			return
		}
		st.Commit = commit
		err = s.git.push(ctx, commit, ref, true)
	}
	if err != nil {
		st.Message = err.Error()
		s.a.log.Warn("checkpoint failed", "session", s.id, "error", st.Message)
	} else {
		st.OK, st.Message = true, "pushed"
		s.mu.Lock()
		s.lastTree = tree
		s.mu.Unlock()
		s.a.log.Info("checkpoint pushed", "session", s.id, "ref", ref, "commit", commit)
	}
	s.mu.Lock()
	s.checkpoint = st
	s.mu.Unlock()
}

// halt marks the session as stopping (finish or agent shutdown).
func (s *session) halt() { s.stopOnce.Do(func() { close(s.stop) }) }

// finish stops the command, commits and pushes. It never fails: problems
// are in the response.
func (s *session) finish(ctx context.Context, req *agentapi.FinishRequest) *agentapi.FinishResponse {
	s.halt()
	s.proc.stop(stopGrace)
	s.gitMu.Lock()
	defer s.gitMu.Unlock()
	g := *s.git
	if req.Author != nil {
		if req.Author.Name != "" {
			g.author.Name = req.Author.Name
		}
		if req.Author.Email != "" {
			g.author.Email = req.Author.Email
		}
	}
	msg := strings.TrimSpace(req.Message)
	if msg == "" {
		msg = "hangar session " + s.id
	}
	if s.repo == "" {
		// Nothing failed: there is nowhere to push, and the VM (with any
		// local commit) is destroyed next.
		return &agentapi.FinishResponse{OK: true, Message: agentapi.NoRepositoryMessage}
	}
	ref := "refs/heads/" + s.sessionBranch
	res := &agentapi.FinishResponse{Ref: ref}
	commit, changed, err := g.commitAll(ctx, msg)
	res.Commit = commit
	if err != nil {
		res.Message = "commit failed: " + err.Error()
		return res
	}
	what := "no changes"
	if changed {
		what = "committed"
	}
	switch {
	case commit == "":
		res.OK = true
		res.Message = "no changes and no commits: nothing to push"
	default:
		if err := g.push(ctx, "HEAD", ref, false); err != nil {
			res.Message = what + "; push failed: " + err.Error()
		} else {
			res.OK = true
			res.Message = what + "; pushed " + s.sessionBranch
		}
	}
	return res
}

// oomKillCount is the kernel's count of OOM kills (/proc/vmstat oom_kill):
// in a Fly Machine, the machine's own. 0 when unknown.
func oomKillCount() int64 {
	b, err := os.ReadFile("/proc/vmstat")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
