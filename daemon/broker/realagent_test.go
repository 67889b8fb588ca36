package broker

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/testbin"
	"github.com/hangarhq/hangar/internal/wire"
)

// realAgent is a running hangar-agent binary with an initialised session.
type realAgent struct {
	url       string
	machineID string
	session   string
}

func startRealAgent(t *testing.T, signer *agentauth.Signer, req *agentapi.InitRequest) *realAgent {
	t.Helper()
	bin := testbin.Path(t, testbin.Agent)
	root := t.TempDir()
	home := filepath.Join(root, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	a := &realAgent{machineID: "m-broker-test", session: req.SessionID}
	cmd := exec.Command(bin)
	cmd.Dir = root
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"HANGAR_AGENT_ADDR=127.0.0.1:0",
		"HANGAR_BROKER_PUBLIC_KEY=" + agentauth.EncodePublicKeys(signer.PublicKey()),
		"FLY_MACHINE_ID=" + a.machineID,
		"HANGAR_WORKSPACE=" + filepath.Join(root, "workspace"),
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var logMu sync.Mutex
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrCh := make(chan string, 1)
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		re := regexp.MustCompile(`listening: addr=(\S+)`)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			logMu.Lock()
			logs.Write(append(sc.Bytes(), '\n'))
			logMu.Unlock()
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addrCh <- m[1]:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-scanDone
		_ = cmd.Wait()
		if t.Failed() {
			logMu.Lock()
			t.Logf("agent logs:\n%s", logs.String())
			logMu.Unlock()
		}
	})
	select {
	case addr := <-addrCh:
		a.url = "http://" + addr
	case <-scanDone:
		t.Fatal("agent exited at start")
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not start")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := agentapi.NewClient(a.url, signer, a.machineID).Init(ctx, req); err != nil {
		t.Fatalf("init: %v", err)
	}
	return a
}

// dropProxy forwards TCP connections to target and can break them all.
type dropProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func newDropProxy(t *testing.T, target string) *dropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.drop()
	})
	return p
}

func (p *dropProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *dropProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(u, c)
		go pipe(c, u)
	}
}

// drop breaks every proxied connection (both ends, no close frame) and says
// how many pairs there were.
func (p *dropProxy) drop() int {
	p.mu.Lock()
	cs := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		cs = append(cs, c)
	}
	p.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
	}
	return len(cs) / 2
}

// TestRealAgentThroughBroker runs bash under the real agent, attaches through
// the broker over a TCP proxy that the test breaks again and again, and
// checks that the client's byte stream equals the agent's output log and that
// typed input is applied exactly once.
func TestRealAgentThroughBroker(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatal("bash is required")
	}
	signer := newSigner(t)
	agent := startRealAgent(t, signer, &agentapi.InitRequest{
		SessionID: "sess-broker",
		Mode:      agentapi.ModePTY,
		Command:   []string{"bash", "--noprofile", "--norc", "-i"},
		Env:       map[string]string{"PS1": "$ ", "HISTFILE": "/dev/null"},
		Cols:      100, Rows: 30,
	})
	proxy := newDropProxy(t, strings.TrimPrefix(agent.url, "http://"))
	b := New(Config{Signer: signer, Logger: testLogger(t), ReconnectTimeout: 20 * time.Second})
	ep := Endpoint{AgentURL: proxy.url(), MachineID: agent.machineID, SessionID: agent.session}
	var serves sync.WaitGroup
	handler := b.Handler(ReadyTarget(ep, "rw"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serves.Add(1)
		defer serves.Done()
		handler.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		waitGroupTimeout(t, &serves, 20*time.Second, "broker streams to end")
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{Subprotocols: []string{wire.SubprotocolPTY}})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { _ = c.CloseNow() })
	tc := &testClient{t: t, c: c}
	tc.send(&wire.Attach{From: 0, InputFrom: 0, Role: wire.RoleWriter, Cols: 100, Rows: 30})
	att := expect[*wire.Attached](tc)
	if att.From != 0 || att.InputApplied != 0 {
		t.Fatalf("attached = %+v", att)
	}

	// Collect the client's stream in the background.
	var mu sync.Mutex
	var got []byte
	var ctrl []string
	var exit *wire.Exit
	readDone := make(chan error, 1)
	go func() {
		for {
			typ, data, err := tc.read()
			if err != nil {
				readDone <- err
				return
			}
			mu.Lock()
			if typ == websocket.MessageBinary {
				got = append(got, data...)
			} else {
				ctrl = append(ctrl, string(data))
				if m, err := wire.Decode(data); err == nil {
					if e, ok := m.(*wire.Exit); ok {
						exit = e
					}
				}
			}
			mu.Unlock()
		}
	}()
	output := func() string {
		mu.Lock()
		defer mu.Unlock()
		return string(got)
	}
	send := func(s string) {
		if err := tc.sendRaw(websocket.MessageBinary, []byte(s)); err != nil {
			t.Fatalf("send input: %v", err)
		}
	}
	waitFor(t, "the prompt", func() bool { return strings.Contains(output(), "$ ") })

	// Drop the agent hop at random moments while output streams and input is typed.
	var drops atomic.Int64
	stopDrops := make(chan struct{})
	dropsDone := make(chan struct{})
	go func() {
		defer close(dropsDone)
		r := rand.New(rand.NewPCG(5, 6))
		for {
			select {
			case <-stopDrops:
				return
			case <-time.After(time.Duration(2+r.IntN(15)) * time.Millisecond):
			}
			drops.Add(int64(proxy.drop()))
		}
	}()
	waitOutput := func(what string, cond func(string) bool) {
		deadline := time.Now().Add(30 * time.Second)
		for !cond(output()) {
			if time.Now().After(deadline) {
				o := output()
				t.Fatalf("%s missing; output tail %q", what, o[max(0, len(o)-600):])
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	send("for i in $(seq 1 4000); do echo line-$i; done; echo LOOP-DONE\n")
	waitOutput("the loop output", func(o string) bool { return strings.Contains(o, "\nLOOP-DONE") })
	// Type commands one key at a time until the hop broke often enough;
	// every key must arrive exactly once.
	word := "abcdefghijklmnopqrstuvwxyz0123456789"
	var typed []string
	for k := 0; k < 40 && (k < 3 || drops.Load() < 60); k++ {
		cmd := fmt.Sprintf("typed-%d-%s-end", k, word)
		for _, key := range "echo " + cmd + "\n" {
			send(string(key))
			time.Sleep(time.Millisecond)
		}
		// Once as typed (echoed by the terminal) and once as the command's output.
		waitOutput(cmd, func(o string) bool { return strings.Count(o, cmd) >= 2 })
		typed = append(typed, cmd)
	}
	close(stopDrops)
	<-dropsDone
	t.Logf("%d drops of the agent hop", drops.Load())
	if drops.Load() < 20 {
		t.Fatalf("the test broke the agent hop only %d times", drops.Load())
	}

	send("exit 7\n")
	err = <-readDone
	if code := websocket.CloseStatus(err); code != websocket.StatusNormalClosure {
		t.Fatalf("stream ended with %v, want close 1000", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if exit == nil || exit.Code != 7 {
		t.Fatalf("exit = %+v, want code 7; control frames %q", exit, ctrl)
	}
	for _, f := range ctrl {
		mt, _ := wire.PeekType([]byte(f))
		switch mt {
		case wire.TypeReplayed, wire.TypeExit, wire.TypePing, wire.TypeSize:
		default:
			t.Errorf("client saw %s", f)
		}
	}
	if int64(len(got)) != exit.At {
		t.Errorf("client got %d bytes, exit at %d", len(got), exit.At)
	}
	// Every loop line exactly once, in order.
	lines := regexp.MustCompile(`line-(\d+)\r\n`).FindAllStringSubmatch(string(got), -1)
	if len(lines) != 4000 {
		t.Fatalf("got %d loop lines, want 4000", len(lines))
	}
	for i, m := range lines {
		if m[1] != fmt.Sprint(i+1) {
			t.Fatalf("loop line %d is line-%s", i+1, m[1])
		}
	}
	for _, cmd := range typed {
		if n, e := strings.Count(string(got), cmd), strings.Count(string(got), "echo "+cmd); n != 2 || e != 1 {
			t.Fatalf("%s appears %d times (%d as typed), want 2 (1)", cmd, n, e)
		}
	}

	// The agent's own log, read directly, equals what the client got.
	direct := readAgentLog(t, agent, signer)
	if !bytes.Equal(direct, got) {
		t.Fatalf("client stream (%d bytes) differs from the agent's log (%d bytes) at %d", len(got), len(direct), firstDiff(got, direct))
	}
}

// readAgentLog attaches straight to the agent as a viewer from offset 0 and
// returns all output up to exit.
func readAgentLog(t *testing.T, a *realAgent, signer *agentauth.Signer) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := signer.Token(a.machineID, a.session)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(a.url, "http")+agentapi.PathAttach, &websocket.DialOptions{
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + tok}},
		Subprotocols: []string{wire.SubprotocolPTY},
	})
	if err != nil {
		t.Fatalf("direct attach: %v", err)
	}
	defer c.CloseNow()
	c.SetReadLimit(-1)
	if err := c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Attach{From: 0, Role: wire.RoleReader})); err != nil {
		t.Fatal(err)
	}
	var out []byte
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusNormalClosure {
				return out
			}
			t.Fatalf("direct read: %v", err)
		}
		if typ == websocket.MessageBinary {
			out = append(out, data...)
			continue
		}
		if mt, _ := wire.PeekType(data); mt == wire.TypeGap {
			t.Fatalf("agent log evicted: %s", data)
		}
	}
}

// TestRealAgentRefusals: the agent's HTTP refusals of the upgrade become
// the client's error frame and close, without retries.
func TestRealAgentRefusals(t *testing.T) {
	signer := newSigner(t)
	agent := startRealAgent(t, signer, &agentapi.InitRequest{
		SessionID: "sess-refusals",
		Mode:      agentapi.ModePTY,
		Command:   []string{"bash", "--noprofile", "--norc"},
	})
	b := New(Config{Signer: signer, Logger: testLogger(t), ReconnectTimeout: 20 * time.Second})
	for _, tc := range []struct {
		name    string
		proto   string
		session string
		code    websocket.StatusCode
		errCode string
	}{
		{"wrong subprotocol", wire.SubprotocolJSONL, agent.session, websocket.StatusPolicyViolation, wire.ErrCodeBadRequest},
		{"another session", wire.SubprotocolPTY, "sess-other", wire.CloseSessionGone, wire.ErrCodeSessionGone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := Endpoint{AgentURL: agent.url, MachineID: agent.machineID, SessionID: tc.session}
			done := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(done)
				b.Accept(w, r, ReadyTarget(ep, "rw"), nil)
			}))
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{Subprotocols: []string{tc.proto}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			tc2 := &testClient{t: t, c: c}
			tc2.send(&wire.Attach{From: 0})
			if e := expect[*wire.Error](tc2); e.Code != tc.errCode || e.Message == "" {
				t.Fatalf("error = %+v, want %s", e, tc.errCode)
			}
			if code := tc2.expectClose(); code != tc.code {
				t.Fatalf("close = %d, want %d", code, tc.code)
			}
			<-done
		})
	}
}
