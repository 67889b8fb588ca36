package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/wire"
)

func TestAttachReplayLive(t *testing.T) {
	h := newHarness(t, false, nil)
	h.agent.emit([]byte("hello "))
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0, InputFrom: 0, Cols: 100, Rows: 30, Role: wire.RoleWriter, Window: 1 << 20})

	att := expect[*wire.Attached](c)
	if att.From != 0 || att.Head != 6 || att.InputApplied != 0 || att.Role != wire.RoleWriter || att.Session != "s-1" {
		t.Fatalf("attached = %+v", att)
	}
	if got := c.readOutput(6); string(got) != "hello " {
		t.Fatalf("replay = %q", got)
	}
	if r := expect[*wire.Replayed](c); r.At != 6 {
		t.Fatalf("replayed = %+v", r)
	}
	h.agent.emit([]byte("world"))
	if got := c.readOutput(5); string(got) != "world" {
		t.Fatalf("live = %q", got)
	}

	// The broker answers pings itself.
	c.send(&wire.Ping{TS: 42})
	if p := expect[*wire.Pong](c); p.TS != 42 {
		t.Fatalf("pong = %+v", p)
	}

	// Input and control frames reach the agent.
	if err := c.sendRaw(websocket.MessageBinary, []byte("ls\n")); err != nil {
		t.Fatal(err)
	}
	c.send(&wire.Resize{Cols: 120, Rows: 40})
	c.send(&wire.Signal{Name: wire.SignalINT})
	c.send(&wire.Ack{Offset: 11})
	waitFor(t, "input and control frames at the agent", func() bool {
		_, in, _ := h.agent.snapshot()
		return string(in) == "ls\n" && len(h.agent.controlFrames()) == 3
	})
	cf := h.agent.controlFrames()
	if r, ok := cf[0].(*wire.Resize); !ok || r.Cols != 120 || r.Rows != 40 {
		t.Errorf("control[0] = %+v", cf[0])
	}
	if s, ok := cf[1].(*wire.Signal); !ok || s.Name != wire.SignalINT {
		t.Errorf("control[1] = %+v", cf[1])
	}
	if a, ok := cf[2].(*wire.Ack); !ok || a.Offset != 11 {
		t.Errorf("control[2] = %+v", cf[2])
	}
	atts, _, _ := h.agent.snapshot()
	if len(atts) != 1 || atts[0] != (wire.Attach{Type: wire.TypeAttach, From: 0, Cols: 100, Rows: 30, Role: wire.RoleWriter, Window: 1 << 20}) {
		t.Fatalf("agent got attaches %+v", atts)
	}

	h.agent.exit(0)
	if e := expect[*wire.Exit](c); e.Code != 0 || e.At != 11 {
		t.Fatalf("exit = %+v", e)
	}
	if code := c.expectClose(); code != websocket.StatusNormalClosure {
		t.Fatalf("close = %d, want 1000", code)
	}
	waitFor(t, "stream end hooks", func() bool { return h.ended.Load() == 1 })
	if h.started.Load() != 1 || h.bytesToClient.Load() < 11 || h.bytesToAgent.Load() < 3 {
		t.Errorf("hooks: started=%d toClient=%d toAgent=%d", h.started.Load(), h.bytesToClient.Load(), h.bytesToAgent.Load())
	}
}

func TestLiveTailAndInputApplied(t *testing.T) {
	h := newHarness(t, false, nil)
	h.agent.emit([]byte("old output"))
	h.agent.mu.Lock()
	h.agent.input = []byte("abc")
	h.agent.mu.Unlock()

	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: wire.LiveTail, InputFrom: 5})
	att := expect[*wire.Attached](c)
	if att.From != 10 || att.Head != 10 || att.InputApplied != 3 {
		t.Fatalf("attached = %+v", att)
	}
	expect[*wire.Replayed](c)
	// The client re-sends input from 3 ("de") and goes on.
	if err := c.sendRaw(websocket.MessageBinary, []byte("def")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "input", func() bool { _, in, _ := h.agent.snapshot(); return string(in) == "abcdef" })

	// A drop now re-attaches with input_from = 6 and from = 10.
	h.agent.dropAll()
	waitFor(t, "re-attach", func() bool { a, _, _ := h.agent.snapshot(); return len(a) == 2 })
	atts, _, _ := h.agent.snapshot()
	if atts[1].From != 10 || atts[1].InputFrom != 6 || atts[1].Role != wire.RoleWriter {
		t.Fatalf("re-attach = %+v", atts[1])
	}
	h.agent.emit([]byte("new"))
	if got := c.readOutput(3); string(got) != "new" {
		t.Fatalf("after reconnect got %q", got)
	}
}

// TestRandomDrops breaks the agent hop many times while output streams and
// the client types; the client must see every output unit exactly once and
// the agent must apply every input unit exactly once, with no trace of the
// reconnects at the client.
func TestRandomDrops(t *testing.T) {
	for _, jsonl := range []bool{false, true} {
		name := "pty"
		if jsonl {
			name = "jsonl"
		}
		t.Run(name, func(t *testing.T) { testRandomDrops(t, jsonl) })
	}
}

func testRandomDrops(t *testing.T, jsonl bool) {
	const (
		drops      = 100
		outputUnit = 3000 // lines emitted (pty: bytes of those lines)
		inputUnits = 1500 // input frames sent
	)
	h := newHarness(t, jsonl, func(c *Config) { c.ReconnectTimeout = 20 * time.Second })
	h.agent.chunk = 700
	proto := wire.SubprotocolPTY
	if jsonl {
		proto = wire.SubprotocolJSONL
	}
	c := h.dial(proto)
	c.send(&wire.Attach{From: 0, InputFrom: 0, Role: wire.RoleWriter})
	if att := expect[*wire.Attached](c); att.From != 0 || att.InputApplied != 0 {
		t.Fatalf("attached = %+v", att)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	// Output producer.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < outputUnit; i++ {
			h.agent.emit([]byte(fmt.Sprintf(`{"line":%d,"pad":"%s"}`, i, bytes.Repeat([]byte("x"), i%97))))
			if i%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	// Dropper: mostly plain drops, some token-expiry closes.
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(3, 4))
		deadline := time.Now().Add(time.Minute)
		for i := 0; i < drops && time.Now().Before(deadline); {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(1+r.IntN(8)) * time.Millisecond):
			}
			if i%10 == 9 {
				i += h.agent.closeAll(wire.CloseCredentialsExpired, wire.ErrCodeCredentialsExpired)
			} else {
				i += h.agent.dropAll()
			}
		}
	}()
	// Input: random frames; pty input is a byte sequence, jsonl one line per frame.
	var sent []byte
	var sentLines [][]byte
	inputDone := make(chan struct{})
	go func() {
		defer close(inputDone)
		for i := 0; i < inputUnits; i++ {
			var b []byte
			if jsonl {
				b = []byte(fmt.Sprintf(`{"type":"user","n":%d}`, i))
				sentLines = append(sentLines, b)
			} else {
				b = make([]byte, 1+rng.IntN(6))
				for j := range b {
					b[j] = byte('a' + (len(sent)+j)%26)
				}
				sent = append(sent, b...)
			}
			if err := c.sendRaw(websocket.MessageBinary, b); err != nil {
				t.Errorf("send input: %v", err)
				return
			}
			if i%20 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()

	// Reader: collect until exit.
	var got []byte
	var gotLines [][]byte
	replayed := 0
	readDone := make(chan error, 1)
	go func() {
		for {
			typ, b, err := c.read()
			if err != nil {
				readDone <- err
				return
			}
			if typ == websocket.MessageBinary {
				if jsonl {
					gotLines = append(gotLines, b)
				} else {
					got = append(got, b...)
				}
				continue
			}
			m, err := wire.Decode(b)
			if err != nil {
				readDone <- fmt.Errorf("decode %s: %w", b, err)
				return
			}
			switch m := m.(type) {
			case *wire.Replayed:
				replayed++
			case *wire.Exit:
			case *wire.Ping:
				// On a loaded machine the drops can outlast the keepalive
				// period: answer like a real client.
				if err := c.sendRaw(websocket.MessageText, wire.MustEncode(&wire.Pong{TS: m.TS})); err != nil {
					readDone <- fmt.Errorf("answer ping: %w", err)
					return
				}
			default:
				readDone <- fmt.Errorf("client saw %s", b)
				return
			}
		}
	}()

	<-inputDone
	wg.Wait()
	close(stop)
	var readErr error
	readEnded := false
	waitFor(t, "all input applied", func() bool {
		if !readEnded {
			select {
			case readErr = <-readDone:
				readEnded = true
			default:
			}
		}
		if readEnded {
			atts, in, inLines := h.agent.snapshot()
			t.Fatalf("the client's stream ended before the exit (%v); agent saw %d attaches, applied %d bytes / %d lines of %d / %d",
				readErr, len(atts), len(in), len(inLines), len(sent), len(sentLines))
		}
		_, in, inLines := h.agent.snapshot()
		if jsonl {
			return len(inLines) >= len(sentLines)
		}
		return len(in) >= len(sent)
	})
	h.agent.exit(0)
	err := <-readDone
	if code := websocket.CloseStatus(err); code != websocket.StatusNormalClosure {
		t.Fatalf("stream ended with %v, want close 1000", err)
	}
	if replayed != 1 {
		t.Errorf("client saw %d replayed frames, want 1", replayed)
	}
	atts, in, inLines := h.agent.snapshot()
	if len(atts) < drops/2 {
		t.Errorf("only %d attaches for %d drops", len(atts), drops)
	}
	t.Logf("%d attaches, %d reconnects", len(atts), h.reconnects.Load())
	h.agent.mu.Lock()
	wantOut, wantLines := h.agent.out, h.agent.lines
	h.agent.mu.Unlock()
	if jsonl {
		if len(gotLines) != len(wantLines) {
			t.Fatalf("client got %d lines, agent emitted %d", len(gotLines), len(wantLines))
		}
		for i := range wantLines {
			if !bytes.Equal(gotLines[i], wantLines[i]) {
				t.Fatalf("line %d: got %s want %s", i, gotLines[i], wantLines[i])
			}
		}
		if len(inLines) != len(sentLines) {
			t.Fatalf("agent applied %d input lines, client sent %d", len(inLines), len(sentLines))
		}
		for i := range sentLines {
			if !bytes.Equal(inLines[i], sentLines[i]) {
				t.Fatalf("input line %d: applied %s sent %s", i, inLines[i], sentLines[i])
			}
		}
		return
	}
	if !bytes.Equal(got, wantOut) {
		t.Fatalf("client output differs from the agent's: got %d bytes, want %d (first difference at %d)", len(got), len(wantOut), firstDiff(got, wantOut))
	}
	if !bytes.Equal(in, sent) {
		t.Fatalf("agent applied input differs: applied %d bytes, sent %d (first difference at %d)", len(in), len(sent), firstDiff(in, sent))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestExitAfterDropCloses1000(t *testing.T) {
	h := newHarness(t, false, nil)
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0})
	expect[*wire.Attached](c)
	expect[*wire.Replayed](c)
	h.agent.emit([]byte("bye"))
	c.readOutput(3)
	// The hop drops and the process exits meanwhile: the re-attach replays
	// nothing new (its replayed is swallowed), then exit and 1000.
	h.agent.mu.Lock()
	h.agent.refuse = &refusal{code: int(websocket.StatusTryAgainLater)}
	h.agent.mu.Unlock()
	h.agent.dropAll()
	waitFor(t, "a refused re-attach", func() bool { a, _, _ := h.agent.snapshot(); return len(a) >= 2 })
	h.agent.exit(3)
	h.agent.mu.Lock()
	h.agent.refuse = nil
	h.agent.mu.Unlock()
	if e := expect[*wire.Exit](c); e.Code != 3 || e.At != 3 {
		t.Fatalf("exit = %+v", e)
	}
	if code := c.expectClose(); code != websocket.StatusNormalClosure {
		t.Fatalf("close = %d", code)
	}
}

func TestSuperseded(t *testing.T) {
	h := newHarness(t, false, nil)
	a := h.dial(wire.SubprotocolPTY)
	a.send(&wire.Attach{From: 0, Role: wire.RoleWriter})
	expect[*wire.Attached](a)
	expect[*wire.Replayed](a)

	b := h.dial(wire.SubprotocolPTY)
	b.send(&wire.Attach{From: 0, Role: wire.RoleWriter})
	expect[*wire.Attached](b)

	if e := expect[*wire.Error](a); e.Code != wire.ErrCodeSuperseded {
		t.Fatalf("error = %+v", e)
	}
	if code := a.expectClose(); code != wire.CloseSuperseded {
		t.Fatalf("close = %d, want 4008", code)
	}
	// The superseded stream did not re-attach.
	atts, _, _ := h.agent.snapshot()
	if len(atts) != 2 {
		t.Fatalf("agent saw %d attaches, want 2", len(atts))
	}
}

func TestAgentDeliberateCloses(t *testing.T) {
	for _, tc := range []struct {
		code    int
		errCode string
	}{
		{wire.CloseForbidden, wire.ErrCodeForbidden},
		{wire.CloseSessionGone, wire.ErrCodeSessionGone},
		{wire.CloseRateLimited, wire.ErrCodeRateLimited},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			h := newHarness(t, false, nil)
			c := h.dial(wire.SubprotocolPTY)
			c.send(&wire.Attach{From: 0})
			expect[*wire.Attached](c)
			expect[*wire.Replayed](c)
			h.agent.closeAll(tc.code, tc.errCode)
			if e := expect[*wire.Error](c); e.Code != tc.errCode {
				t.Fatalf("error = %+v", e)
			}
			if code := c.expectClose(); int(code) != tc.code {
				t.Fatalf("close = %d, want %d", code, tc.code)
			}
		})
	}
}

func TestRefusedAttach(t *testing.T) {
	h := newHarness(t, false, nil)
	h.agent.refuse = &refusal{code: wire.CloseSessionGone, errCode: wire.ErrCodeNotInitialized}
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0})
	if e := expect[*wire.Error](c); e.Code != wire.ErrCodeNotInitialized {
		t.Fatalf("error = %+v", e)
	}
	if code := c.expectClose(); code != wire.CloseSessionGone {
		t.Fatalf("close = %d", code)
	}
}

func TestCredentialsExpiredIsInvisible(t *testing.T) {
	h := newHarness(t, false, nil)
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0})
	expect[*wire.Attached](c)
	expect[*wire.Replayed](c)
	h.agent.emit([]byte("one"))
	c.readOutput(3)
	h.agent.closeAll(wire.CloseCredentialsExpired, wire.ErrCodeCredentialsExpired)
	waitFor(t, "re-attach", func() bool { a, _, _ := h.agent.snapshot(); return len(a) == 2 })
	h.agent.emit([]byte("two"))
	// No error, no attached, no replayed: just the output.
	if got := c.readOutput(3); string(got) != "two" {
		t.Fatalf("got %q", got)
	}
	atts, _, _ := h.agent.snapshot()
	if atts[1].From != 3 {
		t.Fatalf("re-attach from %d, want 3", atts[1].From)
	}
	if n := h.agent.badToken; n != 0 {
		t.Fatalf("%d dials had a bad token", n)
	}
}

func TestGapAfterEviction(t *testing.T) {
	h := newHarness(t, false, nil)
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0})
	expect[*wire.Attached](c)
	expect[*wire.Replayed](c)
	h.agent.emit([]byte("0123456789"))
	c.readOutput(10)
	// While the hop is down, more output arrives and the old part is evicted.
	h.agent.mu.Lock()
	h.agent.refuse = &refusal{code: int(websocket.StatusTryAgainLater)}
	h.agent.mu.Unlock()
	h.agent.dropAll()
	waitFor(t, "a refused re-attach", func() bool { a, _, _ := h.agent.snapshot(); return len(a) >= 2 })
	h.agent.emit([]byte("abcdefghij"))
	h.agent.evict(15)
	h.agent.mu.Lock()
	h.agent.refuse = nil
	h.agent.mu.Unlock()

	g := expect[*wire.Gap](c)
	if g.Requested != 10 || g.Oldest != 15 {
		t.Fatalf("gap = %+v", g)
	}
	if got := c.readOutput(5); string(got) != "fghij" {
		t.Fatalf("after gap got %q", got)
	}
}

func TestWaitReadyProgress(t *testing.T) {
	h := newHarness(t, false, nil)
	release := make(chan struct{})
	h.setTarget(func(*http.Request) Target {
		return Target{SessionID: "s-1", Role: "rw", WaitReady: func(ctx context.Context, progress func(string, string, int)) (Endpoint, error) {
			progress("pending", "waiting for capacity", 2)
			progress("starting", "starting machine", 0)
			select {
			case <-release:
			case <-ctx.Done():
				return Endpoint{}, ctx.Err()
			}
			return h.agent.endpoint(), nil
		}}
	})
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0})
	if s := expect[*wire.State](c); s.State != "pending" || s.Detail != "waiting for capacity" || s.QueuePosition != 2 {
		t.Fatalf("state = %+v", s)
	}
	if s := expect[*wire.State](c); s.State != "starting" {
		t.Fatalf("state = %+v", s)
	}
	// Input typed before attached waits for the hop, then arrives.
	if err := c.sendRaw(websocket.MessageBinary, []byte("early")); err != nil {
		t.Fatal(err)
	}
	close(release)
	expect[*wire.Attached](c)
	expect[*wire.Replayed](c)
	waitFor(t, "early input", func() bool { _, in, _ := h.agent.snapshot(); return string(in) == "early" })
}

func TestWaitReadyFailure(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		code    websocket.StatusCode
		errCode string
	}{
		{"gone", fmt.Errorf("session s-1 ended: %w", ErrGone), wire.CloseSessionGone, wire.ErrCodeSessionGone},
		{"unavailable", fmt.Errorf("claim failed: %w", ErrUnavailable), wire.CloseUnavailable, wire.ErrCodeUnavailable},
		{"other", errors.New("boom"), wire.CloseUnavailable, wire.ErrCodeUnavailable},
		{"close error", fmt.Errorf("quota: %w", &CloseError{Code: wire.CloseRateLimited, ErrCode: wire.ErrCodeRateLimited, Message: "too many", RetryAfter: 2 * time.Second}), wire.CloseRateLimited, wire.ErrCodeRateLimited},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, false, nil)
			h.setTarget(func(*http.Request) Target {
				return Target{SessionID: "s-1", Role: "rw", WaitReady: func(ctx context.Context, progress func(string, string, int)) (Endpoint, error) {
					progress("claiming", "", 0)
					return Endpoint{}, tc.err
				}}
			})
			c := h.dial(wire.SubprotocolPTY)
			c.send(&wire.Attach{From: 0})
			expect[*wire.State](c)
			e := expect[*wire.Error](c)
			if e.Code != tc.errCode {
				t.Fatalf("error = %+v, want code %s", e, tc.errCode)
			}
			if code := c.expectClose(); code != tc.code {
				t.Fatalf("close = %d, want %d", code, tc.code)
			}
			if tc.name == "close error" && (e.RetryAfterMS != 2000 || e.Message != "too many") {
				t.Fatalf("error = %+v", e)
			}
			atts, _, _ := h.agent.snapshot()
			if len(atts) != 0 {
				t.Fatalf("agent was dialled")
			}
		})
	}
}

func TestReconnectGivesUp(t *testing.T) {
	h := newHarness(t, false, func(c *Config) { c.ReconnectTimeout = 300 * time.Millisecond })
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0})
	expect[*wire.Attached](c)
	expect[*wire.Replayed](c)
	h.agent.mu.Lock()
	h.agent.refuse = &refusal{code: int(websocket.StatusTryAgainLater)}
	h.agent.mu.Unlock()
	h.agent.dropAll()
	if e := expect[*wire.Error](c); e.Code != wire.ErrCodeUnavailable || e.RetryAfterMS <= 0 {
		t.Fatalf("error = %+v", e)
	}
	if code := c.expectClose(); code != wire.CloseUnavailable {
		t.Fatalf("close = %d, want 4503", code)
	}
}

// TestInputLogOverflowFallsBack: when input the agent never applied is no
// longer in the bounded log, the client is told to re-attach (4503) rather
// than losing keystrokes silently.
func TestInputLogOverflowFallsBack(t *testing.T) {
	h := newHarness(t, false, func(c *Config) { c.InputLogBytes = 8 })
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0})
	expect[*wire.Attached](c)
	expect[*wire.Replayed](c)
	h.agent.mu.Lock()
	h.agent.stallIn = true
	h.agent.mu.Unlock()
	for i := 0; i < 10; i++ {
		if err := c.sendRaw(websocket.MessageBinary, bytes.Repeat([]byte{'a' + byte(i)}, 5000)); err != nil {
			t.Fatal(err)
		}
	}
	c.send(&wire.Ack{Offset: 0}) // a marker: everything before it reached the agent
	waitFor(t, "input at the agent", func() bool { return len(h.agent.controlFrames()) == 1 })
	h.agent.dropAll()
	e := expect[*wire.Error](c)
	if e.Code != wire.ErrCodeUnavailable {
		t.Fatalf("error = %+v", e)
	}
	if code := c.expectClose(); code != wire.CloseUnavailable {
		t.Fatalf("close = %d, want 4503", code)
	}
}

func TestReconnectSessionGone(t *testing.T) {
	h := newHarness(t, false, nil)
	var mu sync.Mutex
	gone := false
	h.setTarget(func(*http.Request) Target {
		return Target{SessionID: "s-1", Role: "rw", WaitReady: func(ctx context.Context, progress func(string, string, int)) (Endpoint, error) {
			mu.Lock()
			defer mu.Unlock()
			if gone {
				return Endpoint{}, fmt.Errorf("session ended: %w", ErrGone)
			}
			return h.agent.endpoint(), nil
		}}
	})
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0})
	expect[*wire.Attached](c)
	expect[*wire.Replayed](c)
	mu.Lock()
	gone = true
	mu.Unlock()
	h.agent.mu.Lock()
	h.agent.refuse = &refusal{code: int(websocket.StatusTryAgainLater)}
	h.agent.mu.Unlock()
	h.agent.dropAll()
	if e := expect[*wire.Error](c); e.Code != wire.ErrCodeSessionGone {
		t.Fatalf("error = %+v", e)
	}
	if code := c.expectClose(); code != wire.CloseSessionGone {
		t.Fatalf("close = %d, want 4004", code)
	}
}

func TestMalformedFirstFrame(t *testing.T) {
	for _, tc := range []struct {
		name    string
		typ     websocket.MessageType
		frame   string
		errCode string
	}{
		{"binary", websocket.MessageBinary, "hello", wire.ErrCodeAttachRequired},
		{"not json", websocket.MessageText, "{nope", wire.ErrCodeBadRequest},
		{"no type", websocket.MessageText, `{"from":0}`, wire.ErrCodeBadRequest},
		{"other type", websocket.MessageText, `{"type":"resize","cols":80,"rows":24}`, wire.ErrCodeAttachRequired},
		{"unknown type", websocket.MessageText, `{"type":"hello"}`, wire.ErrCodeAttachRequired},
		{"bad role", websocket.MessageText, `{"type":"attach","from":0,"role":"admin"}`, wire.ErrCodeBadRequest},
		{"bad from", websocket.MessageText, `{"type":"attach","from":-2}`, wire.ErrCodeBadRequest},
		{"bad input_from", websocket.MessageText, `{"type":"attach","from":0,"input_from":-1}`, wire.ErrCodeBadRequest},
		{"bad window", websocket.MessageText, `{"type":"attach","from":0,"window":-5}`, wire.ErrCodeBadRequest},
		{"bad size", websocket.MessageText, `{"type":"attach","from":0,"cols":100000,"rows":24}`, wire.ErrCodeInvalidSize},
		{"wrong field type", websocket.MessageText, `{"type":"attach","from":"zero"}`, wire.ErrCodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, false, nil)
			c := h.dial(wire.SubprotocolPTY)
			if err := c.sendRaw(tc.typ, []byte(tc.frame)); err != nil {
				t.Fatal(err)
			}
			if e := expect[*wire.Error](c); e.Code != tc.errCode || e.Message == "" {
				t.Fatalf("error = %+v, want code %s", e, tc.errCode)
			}
			if code := c.expectClose(); code != websocket.StatusPolicyViolation {
				t.Fatalf("close = %d, want 1008", code)
			}
			atts, _, _ := h.agent.snapshot()
			if len(atts) != 0 {
				t.Fatal("agent was dialled")
			}
		})
	}
}

func TestReadOnlyTargetForcesRole(t *testing.T) {
	h := newHarness(t, false, nil)
	h.setTarget(func(*http.Request) Target { return ReadyTarget(h.agent.endpoint(), "ro") })
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0, Role: wire.RoleWriter})
	if att := expect[*wire.Attached](c); att.Role != wire.RoleReader {
		t.Fatalf("attached = %+v", att)
	}
	atts, _, _ := h.agent.snapshot()
	if atts[0].Role != wire.RoleReader {
		t.Fatalf("agent got role %q", atts[0].Role)
	}
	expect[*wire.Replayed](c)
	// A viewer's input is not applied (the fake agent ignores it, as the real
	// one refuses it) and a drop re-attaches as ro.
	_ = c.sendRaw(websocket.MessageBinary, []byte("x"))
	h.agent.dropAll()
	waitFor(t, "re-attach", func() bool { a, _, _ := h.agent.snapshot(); return len(a) == 2 })
	atts, _, _ = h.agent.snapshot()
	if atts[1].Role != wire.RoleReader || atts[1].InputFrom != 0 {
		t.Fatalf("re-attach = %+v", atts[1])
	}
}

// TestViewerReattachesAfterWriterInput: input is a writer's business. A
// viewer's re-attachment reports the input a writer elsewhere had applied
// meanwhile; the viewer sent none, yet it must go on without noticing.
func TestViewerReattachesAfterWriterInput(t *testing.T) {
	h := newHarness(t, false, nil)
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0, Role: wire.RoleReader})
	expect[*wire.Attached](c)
	expect[*wire.Replayed](c)
	h.agent.mu.Lock()
	h.agent.input = []byte("typed by the writer")
	h.agent.mu.Unlock()
	h.agent.dropAll()
	waitFor(t, "re-attach", func() bool { a, _, _ := h.agent.snapshot(); return len(a) == 2 })
	h.agent.emit([]byte("more"))
	if got := c.readOutput(4); string(got) != "more" {
		t.Fatalf("after reconnect got %q", got)
	}
}

func TestKeepalive(t *testing.T) {
	h := newHarness(t, false, func(c *Config) { c.PingInterval = 50 * time.Millisecond })
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0})
	expect[*wire.Attached](c)
	expect[*wire.Replayed](c)
	// The agent's pings are answered by the broker and never reach the client.
	h.agent.pingAll(777)
	// The broker pings the client (which answers) and the agent.
	for pings := 0; pings < 3; {
		m := c.next()
		p, ok := m.(*wire.Ping)
		if !ok {
			t.Fatalf("got %T, want ping", m)
		}
		c.send(&wire.Pong{TS: p.TS})
		pings++
	}
	waitFor(t, "the broker's pong and pings at the agent", func() bool {
		h.agent.mu.Lock()
		defer h.agent.mu.Unlock()
		return len(h.agent.pongs) > 0 && h.agent.pongs[0] == 777 && h.agent.pings >= 2
	})
	// Client pongs are not forwarded, and the hop stayed up.
	atts, _, _ := h.agent.snapshot()
	if len(atts) != 1 || len(h.agent.controlFrames()) != 0 {
		t.Fatalf("agent saw %d attaches and control frames %v", len(atts), h.agent.controlFrames())
	}
}

// TestSilentAgentIsDropped: an agent hop that stops answering is replaced.
func TestSilentAgentIsDropped(t *testing.T) {
	h := newHarness(t, false, func(c *Config) { c.PingInterval = 30 * time.Millisecond })
	fa := h.agent
	dials := 0
	// The first dial gets a "black hole": it completes the handshake, then
	// never reads or writes again.
	fa.intercept = func(w http.ResponseWriter, r *http.Request) bool {
		fa.mu.Lock()
		dials++
		n := dials
		fa.mu.Unlock()
		if n > 1 {
			return false
		}
		if _, err := fa.verifier.VerifyRequest(r); err != nil {
			http.Error(w, "unauthorized", 401)
			return true
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wire.SubprotocolPTY}})
		if err != nil {
			return true
		}
		defer ws.CloseNow()
		_, _, _ = ws.Read(r.Context())
		_ = ws.Write(r.Context(), websocket.MessageText, wire.MustEncode(&wire.Attached{Session: "s-1", Role: wire.RoleWriter, Cols: 80, Rows: 24}))
		<-r.Context().Done()
		return true
	}
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0})
	expect[*wire.Attached](c)
	fa.emit([]byte("alive"))
	for {
		typ, b, err := c.read()
		if err != nil {
			t.Fatal(err)
		}
		if typ == websocket.MessageBinary {
			if string(b) != "alive" {
				t.Fatalf("got %q", b)
			}
			break
		}
		if mt, _ := wire.PeekType(b); mt != wire.TypePing && mt != wire.TypeReplayed {
			t.Fatalf("unexpected %s", b)
		}
	}
}

// TestSlowClientBounded: a client that stops reading stalls the agent (TCP
// backpressure through the broker) instead of growing the daemon's memory.
func TestSlowClientBounded(t *testing.T) {
	const total = 512 << 20
	h := newHarness(t, false, nil)
	h.agent.chunk = 32 << 10
	pattern := func(off int64) byte { return byte(off*7 + off>>11) }
	h.agent.mu.Lock()
	h.agent.gen = pattern
	h.agent.genHead = total
	h.agent.mu.Unlock()

	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0})
	expect[*wire.Attached](c)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	// Do not read: wait until the agent is stuck (its sent count stops moving).
	var last int64 = -1
	stable := 0
	waitFor(t, "the agent to stall", func() bool {
		n := h.agent.sentUnits()
		if n == last {
			stable++
		} else {
			stable = 0
		}
		last = n
		return stable >= 40
	})
	if last >= total {
		t.Fatalf("the agent sent everything (%d bytes) to a client that reads nothing", last)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("agent stalled after %d MiB in flight; heap grew %d KiB", last>>20, grown>>10)
	if grown > 16<<20 {
		t.Fatalf("heap grew by %d MiB while the client was stalled", grown>>20)
	}

	// Now read some and check the bytes are the right ones.
	var off int64
	for off < 8<<20 {
		typ, b, err := c.read()
		if err != nil {
			t.Fatal(err)
		}
		if typ != websocket.MessageBinary {
			continue
		}
		for i, x := range b {
			if x != pattern(off+int64(i)) {
				t.Fatalf("byte %d wrong", off+int64(i))
			}
		}
		off += int64(len(b))
	}
}

func TestJSONLOffsetsCountLines(t *testing.T) {
	h := newHarness(t, true, nil)
	h.agent.emit([]byte(`{"a":1}`))
	h.agent.emit([]byte(`{"a":2}`))
	c := h.dial(wire.SubprotocolJSONL)
	c.send(&wire.Attach{From: 1})
	if att := expect[*wire.Attached](c); att.From != 1 || att.Head != 2 {
		t.Fatalf("attached = %+v", att)
	}
	if _, b, _ := c.read(); string(b) != `{"a":2}` {
		t.Fatalf("got %s", b)
	}
	expect[*wire.Replayed](c)
	_ = c.sendRaw(websocket.MessageBinary, []byte(`{"type":"user"}`))
	waitFor(t, "input line", func() bool { _, _, l := h.agent.snapshot(); return len(l) == 1 })
	h.agent.dropAll()
	waitFor(t, "re-attach", func() bool { a, _, _ := h.agent.snapshot(); return len(a) == 2 })
	atts, _, _ := h.agent.snapshot()
	if atts[1].From != 2 || atts[1].InputFrom != 1 {
		t.Fatalf("re-attach = %+v (want from 2, input_from 1: lines)", atts[1])
	}
}

func TestClientLeaveEndsAgentHop(t *testing.T) {
	h := newHarness(t, false, nil)
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0})
	expect[*wire.Attached](c)
	expect[*wire.Replayed](c)
	_ = c.c.Close(websocket.StatusNormalClosure, "bye")
	waitFor(t, "the agent hop to close", func() bool {
		h.agent.mu.Lock()
		defer h.agent.mu.Unlock()
		return len(h.agent.conns) == 0
	})
	waitFor(t, "the stream to end", func() bool { return h.ended.Load() == 1 })
}

func TestShutdownClosesGoingAway(t *testing.T) {
	h := newHarness(t, false, nil)
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0})
	expect[*wire.Attached](c)
	expect[*wire.Replayed](c)
	h.cancel()
	if code := c.expectClose(); code != websocket.StatusGoingAway {
		t.Fatalf("close = %d, want 1001", code)
	}
	waitFor(t, "the stream to end", func() bool { return h.ended.Load() == 1 })
}
