package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/syncbuf"
	"github.com/hangarhq/hangar/internal/testbin"
	"github.com/hangarhq/hangar/internal/wire"
)

const fakeClaudePkg = "github.com/hangarhq/hangar/internal/fakeclaude"

// agentProc is a running hangar-agent binary.
type agentProc struct {
	t         *testing.T
	url       string
	machineID string
	signer    *agentauth.Signer
	key       ed25519.PrivateKey
	client    *agentapi.Client
	cmd       *exec.Cmd
	logs      *syncbuf.Buffer
	workspace string
	home      string
	done      chan struct{}
	fake      string // fakeclaude binary

	mu        sync.Mutex
	responses []string // every HTTP body and WS frame seen, for secret scans
}

type agentOpts struct {
	env map[string]string
}

func startAgent(t *testing.T, o agentOpts) *agentProc {
	t.Helper()
	bin := testbin.Path(t, testbin.Agent)
	fake := testbin.Path(t, fakeClaudePkg)
	key, err := agentauth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := agentauth.GenerateKey()
	root := t.TempDir()
	a := &agentProc{t: t, machineID: "m-" + filepath.Base(root), signer: agentauth.NewSigner(key), key: key,
		logs: &syncbuf.Buffer{}, workspace: filepath.Join(root, "workspace"), home: filepath.Join(root, "home"),
		done: make(chan struct{}), fake: fake}
	if err := os.MkdirAll(a.home, 0o755); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PATH":                     filepath.Dir(fake) + ":" + os.Getenv("PATH"),
		"HOME":                     a.home,
		"HANGAR_AGENT_ADDR":        "127.0.0.1:0",
		"HANGAR_BROKER_PUBLIC_KEY": agentauth.EncodePublicKeys(other.Public().(ed25519.PublicKey), a.signer.PublicKey()),
		"FLY_MACHINE_ID":           a.machineID,
		"HANGAR_WORKSPACE":         a.workspace,
		"HANGAR_CLAUDE_BIN":        fake,
		"HANGAR_LOG_LEVEL":         "debug",
	}
	for k, v := range o.env {
		env[k] = v
	}
	cmd := exec.Command(bin)
	cmd.Dir = root
	for k, v := range env {
		if v != "" {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	cmd.Stdout = a.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.cmd = cmd
	go func() {
		_ = cmd.Wait()
		pw.Close()
		close(a.done)
	}()
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		re := regexp.MustCompile(`listening: addr=(\S+)`)
		for sc.Scan() {
			a.logs.Write(append(sc.Bytes(), '\n'))
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addrCh <- m[1]:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
		<-a.done
		if t.Failed() {
			t.Logf("agent logs:\n%s", a.logs.String())
		}
	})
	select {
	case addr := <-addrCh:
		a.url = "http://" + addr
	case <-a.done:
		t.Fatalf("agent exited at start:\n%s", a.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("agent did not start:\n%s", a.logs.String())
	}
	a.client = agentapi.NewClient(a.url, a.signer, a.machineID)
	return a
}

func (a *agentProc) record(s string) {
	a.mu.Lock()
	a.responses = append(a.responses, s)
	a.mu.Unlock()
}

func (a *agentProc) allResponses() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.responses, "\n")
}

// call makes a raw HTTP call with a fresh token for session (or none if
// session is "-"), returning status and body.
func (a *agentProc) call(method, path, session string, body any) (int, string) {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, a.url+path, rd)
	if session != "-" {
		tok, err := a.signer.Token(a.machineID, session)
		if err != nil {
			a.t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a.record(string(b))
	return resp.StatusCode, string(b)
}

func (a *agentProc) init(req *agentapi.InitRequest) *agentapi.StatusResponse {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := a.client.Init(ctx, req)
	if err != nil {
		a.t.Fatalf("init: %v", err)
	}
	b, _ := json.Marshal(st)
	a.record(string(b))
	return st
}

func (a *agentProc) status(session string) *agentapi.StatusResponse {
	a.t.Helper()
	st, err := a.client.Status(context.Background(), session)
	if err != nil {
		a.t.Fatalf("status: %v", err)
	}
	b, _ := json.Marshal(st)
	a.record(string(b))
	return st
}

func (a *agentProc) finish(session string, req *agentapi.FinishRequest) *agentapi.FinishResponse {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := a.client.Finish(ctx, session, req)
	if err != nil {
		a.t.Fatalf("finish: %v", err)
	}
	b, _ := json.Marshal(res)
	a.record(string(b))
	return res
}

// waitExit waits for the agent process to exit and returns its exit code.
func (a *agentProc) waitExit() int {
	a.t.Helper()
	select {
	case <-a.done:
		return a.cmd.ProcessState.ExitCode()
	case <-time.After(30 * time.Second):
		a.t.Fatal("agent did not exit")
		return -1
	}
}

// wsClient is one attachment.
type wsClient struct {
	t        *testing.T
	a        *agentProc
	conn     *websocket.Conn
	attached *wire.Attached
	out      bytes.Buffer   // binary payload received (pty)
	lines    [][]byte       // binary frames received (jsonl)
	ctrl     []wire.Message // control frames received after attached
	closed   error
	frames   chan frame // filled by a background reader
}

type frame struct {
	typ  websocket.MessageType
	data []byte
	err  error
}

func newWSClient(t *testing.T, a *agentProc, conn *websocket.Conn) *wsClient {
	c := &wsClient{t: t, a: a, conn: conn, frames: make(chan frame, 1024)}
	go func() {
		for {
			typ, data, err := conn.Read(context.Background())
			c.frames <- frame{typ, data, err}
			if err != nil {
				return
			}
		}
	}()
	return c
}

func (a *agentProc) dial(session, proto string) (*websocket.Conn, *http.Response, error) {
	tok, err := a.signer.Token(a.machineID, session)
	if err != nil {
		return nil, nil, err
	}
	return a.dialWithToken(tok, proto)
}

func (a *agentProc) dialWithToken(tok, proto string) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(a.url, "http")+"/v1/attach",
		&websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{proto}})
	if c != nil {
		c.SetReadLimit(-1)
	}
	return c, resp, err
}

// attach dials, sends the attach frame and reads up to attached.
func (a *agentProc) attach(session, proto string, req wire.Attach) *wsClient {
	a.t.Helper()
	conn, _, err := a.dial(session, proto)
	if err != nil {
		a.t.Fatalf("dial: %v", err)
	}
	c := newWSClient(a.t, a, conn)
	c.send(&req)
	for c.attached == nil {
		typ, data, err := c.read(10 * time.Second)
		if err != nil {
			a.t.Fatalf("waiting for attached: %v", err)
		}
		if typ != websocket.MessageText {
			a.t.Fatalf("binary frame before attached")
		}
		m, err := wire.Decode(data)
		if err != nil {
			a.t.Fatalf("decode %s: %v", data, err)
		}
		switch m := m.(type) {
		case *wire.Attached:
			c.attached = m
		case *wire.State:
		default:
			a.t.Fatalf("unexpected %s before attached: %s", m.MessageType(), data)
		}
	}
	a.t.Cleanup(func() { c.conn.CloseNow() })
	return c
}

func (c *wsClient) send(m wire.Message) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, wire.MustEncode(m)); err != nil {
		c.t.Fatalf("send %s: %v", m.MessageType(), err)
	}
}

func (c *wsClient) sendRaw(typ websocket.MessageType, b []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, typ, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *wsClient) input(s string) { c.sendRaw(websocket.MessageBinary, []byte(s)) }

// errTimeout is returned by read when no frame came in time (the
// connection stays open).
var errTimeout = errors.New("no frame in time")

func (c *wsClient) read(d time.Duration) (websocket.MessageType, []byte, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case f := <-c.frames:
		if f.err != nil {
			// Keep reporting the error to later reads.
			c.frames <- f
			return 0, nil, f.err
		}
		c.a.record(string(f.data))
		return f.typ, f.data, nil
	case <-t.C:
		return 0, nil, errTimeout
	}
}

// pump reads one frame into the client's state; false once closed.
func (c *wsClient) pump(d time.Duration) bool {
	if c.closed != nil {
		return false
	}
	typ, data, err := c.read(d)
	if err != nil {
		c.closed = err
		return false
	}
	if typ == websocket.MessageBinary {
		c.out.Write(data)
		c.lines = append(c.lines, data)
		return true
	}
	m, err := wire.Decode(data)
	if err != nil {
		c.t.Fatalf("bad control frame %s: %v", data, err)
	}
	if p, ok := m.(*wire.Ping); ok {
		c.send(&wire.Pong{TS: p.TS})
	}
	c.ctrl = append(c.ctrl, m)
	return true
}

// waitFor pumps until cond holds.
func (c *wsClient) waitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s; output %q; ctrl %s", what, tail(c.out.String(), 500), c.ctrlString())
		}
		if !c.pump(time.Until(deadline)) {
			if cond() {
				return
			}
			c.t.Fatalf("connection closed (%v) waiting for %s; output %q; ctrl %s", c.closed, what, tail(c.out.String(), 500), c.ctrlString())
		}
	}
}

func (c *wsClient) waitOutput(sub string) {
	c.t.Helper()
	c.waitFor(fmt.Sprintf("output %q", sub), func() bool { return strings.Contains(c.out.String(), sub) })
}

// waitCtrl waits for a control frame matching pred and returns it.
func (c *wsClient) waitCtrl(what string, pred func(wire.Message) bool) wire.Message {
	c.t.Helper()
	var found wire.Message
	c.waitFor(what, func() bool {
		for _, m := range c.ctrl {
			if pred(m) {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

func (c *wsClient) waitError(code string) *wire.Error {
	c.t.Helper()
	return c.waitCtrl("error "+code, func(m wire.Message) bool {
		e, ok := m.(*wire.Error)
		return ok && e.Code == code
	}).(*wire.Error)
}

// waitClosed reads until the connection closes and returns the close status.
func (c *wsClient) waitClosed() websocket.StatusCode {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for c.pump(time.Until(deadline)) {
	}
	if errors.Is(c.closed, errTimeout) {
		c.t.Fatal("connection did not close")
	}
	return websocket.CloseStatus(c.closed)
}

func (c *wsClient) ctrlString() string {
	var parts []string
	for _, m := range c.ctrl {
		parts = append(parts, string(wire.MustEncode(m)))
	}
	return strings.Join(parts, " ")
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// eventually polls cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
