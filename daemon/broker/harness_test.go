package broker

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/hangarhq/hangar/internal/agentauth"
	"github.com/hangarhq/hangar/internal/wire"
)

func newSigner(t testing.TB) *agentauth.Signer {
	t.Helper()
	k, err := agentauth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return agentauth.NewSigner(k)
}

func testLogger(t testing.TB) hclog.Logger {
	if os.Getenv("BROKER_TEST_LOG") == "" {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.Debug, Output: os.Stderr})
}

// harness runs a Broker behind an HTTP server in front of a fake agent.
type harness struct {
	t      testing.TB
	signer *agentauth.Signer
	agent  *fakeAgent
	broker *Broker
	srv    *httptest.Server
	serves sync.WaitGroup

	mu     sync.Mutex
	target func(r *http.Request) Target

	// shutdown is the context streams are served with; cancel = daemon shutdown.
	shutdown context.Context
	cancel   context.CancelFunc

	bytesToClient atomic.Int64
	bytesToAgent  atomic.Int64
	started       atomic.Int64
	ended         atomic.Int64
	reconnects    atomic.Int64
}

func newHarness(t testing.TB, jsonl bool, tune func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, signer: newSigner(t)}
	h.shutdown, h.cancel = context.WithCancel(context.Background())
	t.Cleanup(h.cancel)
	h.agent = newFakeAgent(t, h.signer, jsonl)
	cfg := Config{
		Signer:           h.signer,
		Logger:           testLogger(t),
		ReconnectTimeout: 5 * time.Second,
		Hooks: Hooks{
			Bytes: func(toClient bool, n int) {
				if toClient {
					h.bytesToClient.Add(int64(n))
				} else {
					h.bytesToAgent.Add(int64(n))
				}
			},
			StreamStarted: func() { h.started.Add(1) },
			StreamEnded:   func() { h.ended.Add(1) },
			Reconnected: func(err error) {
				if err == nil {
					h.reconnects.Add(1)
				}
			},
		},
	}
	if tune != nil {
		tune(&cfg)
	}
	h.broker = New(cfg)
	h.target = func(*http.Request) Target { return ReadyTarget(h.agent.endpoint(), "rw") }
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.serves.Add(1)
		defer h.serves.Done()
		h.mu.Lock()
		tf := h.target
		h.mu.Unlock()
		h.broker.Accept(w, r.WithContext(h.shutdown), tf(r), nil)
	}))
	t.Cleanup(func() {
		h.srv.CloseClientConnections()
		h.srv.Close()
		waitGroupTimeout(t, &h.serves, 20*time.Second, "broker streams to end")
	})
	return h
}

func (h *harness) setTarget(f func(r *http.Request) Target) {
	h.mu.Lock()
	h.target = f
	h.mu.Unlock()
}

func waitGroupTimeout(t testing.TB, wg *sync.WaitGroup, d time.Duration, what string) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Errorf("timed out waiting for %s", what)
	}
}

// waitFor polls cond until it holds (a test failure after a generous bound).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testClient is a WebSocket client of the broker.
type testClient struct {
	t testing.TB
	c *websocket.Conn
}

func (h *harness) dial(proto string) *testClient {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(h.srv.URL, "http")
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{proto}})
	if err != nil {
		h.t.Fatalf("dial broker: %v", err)
	}
	c.SetReadLimit(64 << 20)
	h.t.Cleanup(func() { _ = c.CloseNow() })
	return &testClient{t: h.t, c: c}
}

func (c *testClient) send(m wire.Message) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.c.Write(ctx, websocket.MessageText, wire.MustEncode(m)); err != nil {
		c.t.Fatalf("send %s: %v", m.MessageType(), err)
	}
}

func (c *testClient) sendRaw(typ websocket.MessageType, b []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.c.Write(ctx, typ, b)
}

func (c *testClient) read() (websocket.MessageType, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return c.c.Read(ctx)
}

// next returns the next control frame, failing on binary frames.
func (c *testClient) next() wire.Message {
	c.t.Helper()
	typ, b, err := c.read()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		c.t.Fatalf("got binary frame %q, want a control frame", b)
	}
	m, err := wire.Decode(b)
	if err != nil {
		c.t.Fatalf("decode %s: %v", b, err)
	}
	return m
}

func expect[T wire.Message](c *testClient) T {
	c.t.Helper()
	m := c.next()
	v, ok := m.(T)
	if !ok {
		var zero T
		c.t.Fatalf("got %T %+v, want %T", m, m, zero)
	}
	return v
}

// readOutput reads binary frames until n bytes arrived.
func (c *testClient) readOutput(n int) []byte {
	c.t.Helper()
	var got []byte
	for len(got) < n {
		typ, b, err := c.read()
		if err != nil {
			c.t.Fatalf("read output (have %q): %v", got, err)
		}
		if typ != websocket.MessageBinary {
			c.t.Fatalf("got control frame %s while reading output", b)
		}
		got = append(got, b...)
	}
	return got
}

// expectClose reads until the connection closes and returns the close code,
// failing on any data frame other than the allowed control frame types.
func (c *testClient) expectClose(allowed ...string) websocket.StatusCode {
	c.t.Helper()
	for {
		typ, b, err := c.read()
		if err != nil {
			return websocket.CloseStatus(err)
		}
		if typ == websocket.MessageBinary {
			c.t.Fatalf("unexpected output %q before close", b)
		}
		mt, _ := wire.PeekType(b)
		ok := false
		for _, a := range allowed {
			ok = ok || a == mt
		}
		if !ok {
			c.t.Fatalf("unexpected frame %s before close", b)
		}
	}
}
