package bench_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hangarhq/hangar/bench"
	"github.com/hangarhq/hangar/internal/testbin"
)

// TestSmallRun runs the whole benchmark, small, against the real hangard
// dev: every phase must complete and report what it measured. It asserts
// counts, never timings.
func TestSmallRun(t *testing.T) {
	testbin.Path(t, testbin.Agent) // hangard dev runs the agent from beside itself
	hangard := testbin.Path(t, testbin.Daemon)
	self := testbin.Path(t, "github.com/hangarhq/hangar/bench/cmd/hangar-bench")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	const (
		samples   = 30
		bursts    = 1
		burstSize = 256 << 10
		streams   = 12
	)
	res, err := bench.Run(ctx, bench.Options{
		Hangard: hangard, Self: self, Samples: samples, Bursts: bursts, BurstSize: burstSize,
		ReadySamples: 1, Streams: streams, StreamSessions: 2, Out: &out,
	})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, name := range []string{"daemon", "direct", "relay"} {
		p := res.Paths[name]
		if p == nil {
			t.Fatalf("no results for path %s", name)
		}
		if len(p.Echo) != samples {
			t.Errorf("%s: %d echo samples, want %d", name, len(p.Echo), samples)
		}
		// Each path takes bursts live bursts; every burst is replayed over every path.
		if got := p.Live.Bytes(); got != bursts*burstSize {
			t.Errorf("%s live: %d bytes, want %d", name, got, bursts*burstSize)
		}
		if got := p.Replay.Bytes(); got != 3*bursts*burstSize {
			t.Errorf("%s replay: %d bytes, want %d", name, got, 3*bursts*burstSize)
		}
	}
	if len(res.ReadyStopped) != 1 || len(res.ReadySuspended) != 1 {
		t.Errorf("ready samples: stopped %d, suspended %d", len(res.ReadyStopped), len(res.ReadySuspended))
	}
	if res.Before.RSSKiB == 0 || res.After.RSSKiB == 0 || res.Before.Threads == 0 {
		t.Errorf("daemon status not read: %+v %+v", res.Before, res.After)
	}
	report := out.String()
	for _, row := range []string{"keystroke echo p50", "keystroke echo p99", "live PTY", "ring replay", "from a stopped standby", "from a suspended standby", "emulator boot delay", "daemon VmRSS", "daemon threads"} {
		if !strings.Contains(report, row) {
			t.Errorf("report lacks %q:\n%s", row, report)
		}
	}
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
