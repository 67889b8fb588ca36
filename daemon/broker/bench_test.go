package broker

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hangarhq/hangar/internal/wire"
)

// BenchmarkIdleStreams reports the daemon-side cost of an attached idle
// read-only stream: heap bytes and goroutines per stream beyond what the
// same number of direct client-agent connections cost in this process.
func BenchmarkIdleStreams(b *testing.B) {
	const n = 500
	measure := func(direct bool) (heap, stack int64, goroutines int) {
		h := newHarness(b, false, nil)
		url := "ws" + strings.TrimPrefix(h.srv.URL, "http")
		if direct {
			url = "ws" + strings.TrimPrefix(h.agent.srv.URL, "http") + "/v1/attach"
		}
		// Empty sync.Pools (and their victim caches) so that neither run
		// reuses the other's buffers.
		for range 3 {
			runtime.GC()
		}
		var m0 runtime.MemStats
		runtime.ReadMemStats(&m0)
		g0 := runtime.NumGoroutine()
		conns := make([]*websocket.Conn, 0, n)
		for range n {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			opts := &websocket.DialOptions{Subprotocols: []string{wire.SubprotocolPTY}}
			if direct {
				tok, _ := h.signer.Token("m-1", "s-1")
				opts.HTTPHeader = map[string][]string{"Authorization": {"Bearer " + tok}}
			}
			c, _, err := websocket.Dial(ctx, url, opts)
			if err != nil {
				b.Fatal(err)
			}
			_ = c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Attach{From: wire.LiveTail, Role: wire.RoleReader}))
			for { // attached, replayed
				_, d, err := c.Read(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if mt, _ := wire.PeekType(d); mt == wire.TypeReplayed {
					break
				}
			}
			cancel()
			conns = append(conns, c)
		}
		// Let every stream settle into its idle state.
		time.Sleep(200 * time.Millisecond)
		// Several cycles: each may halve the stacks of idle goroutines.
		for range 4 {
			runtime.GC()
		}
		var m1 runtime.MemStats
		runtime.ReadMemStats(&m1)
		g1 := runtime.NumGoroutine()
		for _, c := range conns {
			_ = c.CloseNow()
		}
		return int64(m1.HeapInuse) - int64(m0.HeapInuse), int64(m1.StackInuse) - int64(m0.StackInuse), g1 - g0
	}
	for range b.N {
		dh, ds, dg := measure(true)
		bh, bs, bg := measure(false)
		b.ReportMetric(float64(bh-dh+bs-ds)/n, "B/stream")
		b.ReportMetric(float64(bh-dh)/n, "heapB/stream")
		b.ReportMetric(float64(bs-ds)/n, "stackB/stream")
		b.ReportMetric(float64(bg-dg)/n, "goroutines/stream")
	}
}

// BenchmarkOutput measures the agent→client splice: a read-only client
// replays 8 MiB of pty output (32 KiB agent frames) through the broker per
// iteration. Allocations count the whole process (client, fake agent and
// broker), so compare them between versions of the broker.
func BenchmarkOutput(b *testing.B) {
	const total = 8 << 20
	h := newHarness(b, false, nil)
	h.agent.mu.Lock()
	h.agent.chunk = 32 << 10
	h.agent.mu.Unlock()
	h.agent.emit(bytes.Repeat([]byte("0123456789abcdef"), total/16))
	url := "ws" + strings.TrimPrefix(h.srv.URL, "http")
	buf := make([]byte, 64<<10)
	b.SetBytes(total)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{wire.SubprotocolPTY}})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Write(ctx, websocket.MessageText, wire.MustEncode(&wire.Attach{From: 0, Role: wire.RoleReader})); err != nil {
			b.Fatal(err)
		}
		got := 0
		for got < total {
			typ, r, err := c.Reader(ctx)
			if err != nil {
				b.Fatal(err)
			}
			for {
				n, err := r.Read(buf)
				if typ == websocket.MessageBinary {
					got += n
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		_ = c.CloseNow()
		cancel()
	}
}
