package tunnel

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestTunnelEchoCost reports the cost of a WebSocket echo round trip and of
// 32 KiB frames through a tunnel (as `go test -bench` would; the helpers
// need a *testing.T). Set HANGAR_TUNNEL_BENCH=1 to run it.
func TestTunnelEchoCost(t *testing.T) {
	if os.Getenv("HANGAR_TUNNEL_BENCH") == "" {
		t.Skip("set HANGAR_TUNNEL_BENCH=1")
	}
	is := newIssuer(t)
	d := newDaemon(t, is, daemonOpts{})
	l, _ := startAgent(t, d, is, "m1")
	<-l.Up()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://m1.tunnel.hangar.invalid/ws", &websocket.DialOptions{HTTPClient: d.reg.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	for _, size := range []int{1, 32 << 10} {
		msg := make([]byte, size)
		r := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for range b.N {
				if err := ws.Write(context.Background(), websocket.MessageBinary, msg); err != nil {
					b.Fatal(err)
				}
				if _, _, err := ws.Read(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
		t.Logf("echo %6d B: %s %s", size, r.String(), r.MemString())
	}
}
