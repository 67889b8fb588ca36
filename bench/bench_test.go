package bench_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hangarhq/hangar/bench"
	"github.com/hangarhq/hangar/internal/testbin"
)

// TestSmallRun runs the whole benchmark, small, against the real hangard
// dev, with both designs of the daemon-agent hop: every phase must complete
// and report what it measured. It asserts counts, never timings.
func TestSmallRun(t *testing.T) {
	testbin.Path(t, testbin.Agent) // hangard dev runs the agent from beside itself
	hangard := testbin.Path(t, testbin.Daemon)
	self := testbin.Path(t, "github.com/hangarhq/hangar/bench/cmd/hangar-bench")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var (
		out  bytes.Buffer
		logs lockedBuffer
	)
	const (
		samples   = 30
		attaches  = 5
		bursts    = 1
		burstSize = 256 << 10
	)
	streams := []int{6, 12}
	res, err := bench.Run(ctx, bench.Options{
		Hangard: hangard, Self: self, Samples: samples, AttachSamples: attaches, Bursts: bursts, BurstSize: burstSize,
		ReadySamples: 1, Streams: streams, StreamSessions: 2, Out: &out, Logs: &logs,
	})
	if err != nil {
		t.Fatalf("run: %v\n%s\ndaemon log (tail):\n%s", err, out.String(), logs.tail(8<<10))
	}
	if res.LegacyErr != "" {
		// Only where the host cannot reach the agents' private IPs.
		t.Logf("legacy design not measured: %s", res.LegacyErr)
	}
	for _, name := range []string{bench.PathTunnel, bench.PathLegacy, bench.PathDirect, bench.PathRelay} {
		if name == bench.PathLegacy && res.LegacyErr != "" {
			continue
		}
		p := res.Paths[name]
		if p == nil {
			t.Fatalf("no results for path %s", name)
		}
		if len(p.Echo) != samples {
			t.Errorf("%s: %d echo samples, want %d", name, len(p.Echo), samples)
		}
		if len(p.Attach) != attaches {
			t.Errorf("%s: %d attach samples, want %d", name, len(p.Attach), attaches)
		}
		// Each path takes bursts live bursts; every burst is replayed over
		// every path to the same session: tunnel, direct and relay share
		// one, legacy has its own.
		if got := p.Live.Bytes(); got != bursts*burstSize {
			t.Errorf("%s live: %d bytes, want %d", name, got, bursts*burstSize)
		}
		same := 3
		if name == bench.PathLegacy {
			same = 1
		}
		if got := p.Replay.Bytes(); got != int64(same*bursts*burstSize) {
			t.Errorf("%s replay: %d bytes, want %d", name, got, same*bursts*burstSize)
		}
	}
	designs := []string{bench.DesignTunnel}
	if res.LegacyErr == "" {
		designs = append(designs, bench.DesignLegacy)
	}
	for _, d := range designs {
		for _, mode := range []string{bench.Stopped, bench.Suspended} {
			if rr := res.Ready[bench.ReadyKey(d, mode)]; rr == nil || len(rr.Server) != 1 {
				t.Errorf("ready %s/%s: %+v, want 1 sample", d, mode, rr)
			}
		}
		for _, n := range streams {
			s, ok := res.StreamAt(d, n)
			if !ok {
				t.Errorf("no stream figures for %s @%d", d, n)
				continue
			}
			if s.Before.RSSKiB == 0 || s.After.RSSKiB == 0 || s.Before.Threads == 0 {
				t.Errorf("%s @%d: daemon status not read: %+v %+v", d, n, s.Before, s.After)
			}
		}
	}
	report := out.String()
	for _, row := range []string{"keystroke echo p50", "keystroke echo p99", "dial -> attached", "live PTY", "ring replay",
		"ready from a stopped standby", "ready from a suspended standby", "boot delay", "daemon RSS per idle stream @12", "OS threads per stream @12"} {
		if !strings.Contains(report, row) {
			t.Errorf("report lacks %q:\n%s", row, report)
		}
	}
}

// lockedBuffer keeps the daemons' stderr for a failure's message.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.b.Bytes()
	return string(b[max(0, len(b)-n):])
}

// TestHostileViewers is issue 11's acceptance check against the real
// hangard dev: 250 read-only viewers each sending 4 MiB binary frames grow
// the daemon's RSS by less than 64 MB (they used to take it to 927 MB).
func TestHostileViewers(t *testing.T) {
	testbin.Path(t, testbin.Agent)
	hangard := testbin.Path(t, testbin.Daemon)
	self := testbin.Path(t, "github.com/hangarhq/hangar/bench/cmd/hangar-bench")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	res, err := bench.Run(ctx, bench.Options{
		Hangard: hangard, Self: self, Out: &out, OnlyHostile: true,
		HostileViewers: 250, HostileFrames: 2, HostileFrameSize: 4 << 20, HostileDropWait: time.Second,
	})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	h := res.Hostile
	t.Log(out.String())
	if h == nil || h.Sent == 0 || h.Before == 0 {
		t.Fatalf("nothing measured: %+v", h)
	}
	if h.Grown() >= bench.BarHostileGrowth {
		t.Fatalf("the daemon's RSS grew by %d MiB under hostile viewers", h.Grown()>>20)
	}
}
