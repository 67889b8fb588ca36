package broker

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/wire"
)

// TestViewerInputRefusedAtDaemon: a read-only viewer's input never reaches
// the agent, however large; each frame is refused with forbidden and the
// 16th closes the viewer with 4003 (the agent's rule, applied one hop early).
func TestViewerInputRefusedAtDaemon(t *testing.T) {
	h := newHarness(t, false, nil)
	h.setTarget(func(*http.Request) Target { return ReadyTarget(h.agent.endpoint(), "ro") })
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0})
	expect[*wire.Attached](c)
	expect[*wire.Replayed](c)
	big := bytes.Repeat([]byte("x"), 1<<20) // the writer limit; 4 MiB is refused as cheaply
	for i := 1; i < MaxViolations; i++ {
		if err := c.sendRaw(websocket.MessageBinary, big); err != nil {
			t.Fatal(err)
		}
		if e := expect[*wire.Error](c); e.Code != wire.ErrCodeForbidden {
			t.Fatalf("refusal %d: %+v", i, e)
		}
	}
	// A viewer's resize is refused the same way (and counts).
	c.send(&wire.Resize{Cols: 100, Rows: 30})
	if e := expect[*wire.Error](c); e.Code != wire.ErrCodeForbidden {
		t.Fatalf("resize: %+v", e)
	}
	if code := c.expectClose(wire.TypeError); code != wire.CloseForbidden {
		t.Fatalf("close = %d, want 4003", code)
	}
	if _, in, _ := h.agent.snapshot(); len(in) != 0 {
		t.Fatalf("the agent got %d bytes of a viewer's input", len(in))
	}
	if n := h.bytesToAgent.Load(); n > 64<<10 {
		t.Fatalf("%d bytes were forwarded to the agent", n)
	}
	if len(h.agent.controlFrames()) != 0 {
		t.Fatalf("the agent got a viewer's control frames: %v", h.agent.controlFrames())
	}
}

// TestOversizedFramesSkipped: a writer's frame over MaxClientMessage and a
// viewer's control frame over MaxViewerMessage are refused with
// frame_too_large and skipped; the connection stays usable.
func TestOversizedFramesSkipped(t *testing.T) {
	for _, role := range []string{"rw", "ro"} {
		t.Run(role, func(t *testing.T) {
			h := newHarness(t, false, func(c *Config) { c.MaxClientMessage = 64 << 10 })
			h.agent.echo = true
			h.setTarget(func(*http.Request) Target { return ReadyTarget(h.agent.endpoint(), role) })
			c := h.dial(wire.SubprotocolPTY)
			c.send(&wire.Attach{From: 0})
			expect[*wire.Attached](c)
			expect[*wire.Replayed](c)
			typ, size := websocket.MessageBinary, 64<<10+1
			if role == "ro" {
				typ, size = websocket.MessageText, DefaultMaxViewerMessage+1
			}
			if err := c.sendRaw(typ, bytes.Repeat([]byte("y"), size)); err != nil {
				t.Fatal(err)
			}
			if e := expect[*wire.Error](c); e.Code != wire.ErrCodeFrameTooLarge {
				t.Fatalf("error = %+v", e)
			}
			c.send(&wire.Ping{TS: 42})
			if p := expect[*wire.Pong](c); p.TS != 42 {
				t.Fatalf("pong = %+v", p)
			}
			if _, in, _ := h.agent.snapshot(); len(in) != 0 {
				t.Fatalf("the agent got %d bytes of a skipped frame", len(in))
			}
		})
	}
}

// TestOversizedFirstFrame: 1008 with frame_too_large, not the library's 1009.
func TestOversizedFirstFrame(t *testing.T) {
	h := newHarness(t, false, nil)
	c := h.dial(wire.SubprotocolPTY)
	pad := strings.Repeat(" ", 2*MaxAttachFrame)
	if err := c.sendRaw(websocket.MessageText, []byte(`{"type":"attach","from":0}`+pad)); err != nil {
		t.Fatal(err)
	}
	if e := expect[*wire.Error](c); e.Code != wire.ErrCodeFrameTooLarge {
		t.Fatalf("error = %+v", e)
	}
	if code := c.expectClose(); code != websocket.StatusPolicyViolation {
		t.Fatalf("close = %d, want 1008", code)
	}
}

// TestAttachTimeoutDefault: docs/protocol.md promises the first frame within 10 s.
func TestAttachTimeoutDefault(t *testing.T) {
	if b := New(Config{Signer: newSigner(t)}); b.cfg.AttachTimeout != 10*time.Second {
		t.Fatalf("AttachTimeout = %v, want 10s", b.cfg.AttachTimeout)
	}
}

// TestInvalidAttachSizeReported: the agent's invalid_size for the client's
// own attach reaches the client (before attached), as on a direct attach.
func TestInvalidAttachSizeReported(t *testing.T) {
	h := newHarness(t, false, nil)
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0, Cols: 3000, Rows: 24})
	if e := expect[*wire.Error](c); e.Code != wire.ErrCodeInvalidSize {
		t.Fatalf("error = %+v", e)
	}
	if a := expect[*wire.Attached](c); a.Cols != 80 || a.Rows != 24 {
		t.Fatalf("attached = %+v", a)
	}
}

// TestNonReadingClientClosed: a client that stops reading while output flows
// is closed (1008) once a write has been pending for WriteTimeout; before,
// keepalive skipped it for as long as the write was pending, forever.
func TestNonReadingClientClosed(t *testing.T) {
	h := newHarness(t, false, func(c *Config) {
		c.PingInterval = 50 * time.Millisecond
		c.WriteTimeout = 300 * time.Millisecond
	})
	h.agent.chunk = 32 << 10
	h.agent.mu.Lock()
	h.agent.gen = func(off int64) byte { return byte(off) }
	h.agent.genHead = 1 << 40
	h.agent.mu.Unlock()
	c := h.dial(wire.SubprotocolPTY)
	c.send(&wire.Attach{From: 0})
	expect[*wire.Attached](c)
	// Read nothing more.
	waitFor(t, "the stream of a client that does not read to end", func() bool { return h.ended.Load() == 1 })
}
