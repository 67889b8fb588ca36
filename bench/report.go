package bench

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"time"
)

// Bars the daemon hop is held to.
const (
	// BarEchoRatio: the daemon hop adds under 20% to echo latency.
	BarEchoRatio = 1.20
	// BarThroughputRatio: the daemon keeps at least 90% of direct Throughput.
	BarThroughputRatio = 0.90
	// BarStreamBytes: an attached idle stream costs at most 16 KiB.
	BarStreamBytes = 16 << 10
)

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s)-1) + 0.5)
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// EchoRatio is the daemon's echo latency percentile p over the direct one.
func (r *Results) EchoRatio(p float64) float64 {
	return r.echoRatio("daemon", p)
}

func (r *Results) echoRatio(name string, p float64) float64 {
	d := percentile(r.path("direct").Echo, p)
	if d == 0 {
		return 0
	}
	return float64(percentile(r.path(name).Echo, p)) / float64(d)
}

// ThroughputRatio is the daemon's live or replay Throughput over the direct one.
func (r *Results) ThroughputRatio(replay bool) float64 {
	return r.throughputRatio("daemon", replay)
}

func (r *Results) throughputRatio(name string, replay bool) float64 {
	a, b := r.path(name).Live, r.path("direct").Live
	if replay {
		a, b = r.path(name).Replay, r.path("direct").Replay
	}
	if b.mbps() == 0 {
		return 0
	}
	return a.mbps() / b.mbps()
}

// PerStreamBytes is the daemon's RSS growth per attached idle stream.
func (r *Results) PerStreamBytes() float64 {
	if r.Streams == 0 {
		return 0
	}
	return float64(r.After.RSSKiB-r.Before.RSSKiB) * 1024 / float64(r.Streams)
}

// PerStreamThreads is the daemon's OS thread growth per attached idle stream.
func (r *Results) PerStreamThreads() float64 {
	if r.Streams == 0 {
		return 0
	}
	return float64(r.After.Threads-r.Before.Threads) / float64(r.Streams)
}

func report(w io.Writer, r *Results) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("hangar bench: hangard dev on loopback, %d CPUs, %s/%s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
	p("")
	p("%-34s %12s %12s %12s %9s %9s  %s", "", "daemon", "direct", "bare relay", "daemon/", "relay/", "bar (daemon/direct)")
	p("%-34s %12s %12s %12s %9s %9s", "", "", "", "", "direct", "direct")
	dm, di, re := r.path("daemon"), r.path("direct"), r.path("relay")
	for _, q := range []struct {
		name string
		p    float64
	}{{"keystroke echo p50", 0.50}, {"keystroke echo p99", 0.99}} {
		ratio := r.EchoRatio(q.p)
		p("%-34s %12s %12s %12s %9.2f %9.2f  < %.2f %s", fmt.Sprintf("%s (n=%d)", q.name, len(dm.Echo)),
			ms(percentile(dm.Echo, q.p)), ms(percentile(di.Echo, q.p)), ms(percentile(re.Echo, q.p)),
			ratio, r.echoRatio("relay", q.p), BarEchoRatio, verdict(ratio < BarEchoRatio))
	}
	for _, t := range []struct {
		name   string
		replay bool
	}{{"bulk output, live PTY (MB/s)", false}, {"bulk output, ring replay (MB/s)", true}} {
		get := func(pr *PathResults) Throughput {
			if t.replay {
				return pr.Replay
			}
			return pr.Live
		}
		ratio := r.ThroughputRatio(t.replay)
		p("%-34s %12.1f %12.1f %12.1f %9.2f %9.2f  >= %.2f %s", t.name, get(dm).mbps(), get(di).mbps(), get(re).mbps(),
			ratio, r.throughputRatio("relay", t.replay), BarThroughputRatio, verdict(ratio >= BarThroughputRatio))
		if get(dm).lost+get(di).lost+get(re).lost > 0 {
			p("%-34s %12d %12d %12d", "  bytes skipped by gaps", get(dm).lost, get(di).lost, get(re).lost)
		}
	}
	p("")
	p("session ready (daemon's created_at -> ready_at; client-observed in brackets)")
	p("  emulator boot delay (configured):      %v per start or resume, included below", r.BootDelay)
	for _, x := range []struct {
		name   string
		server []time.Duration
		obs    []time.Duration
	}{{"from a stopped standby", r.ReadyStopped, r.ObservedStopped}, {"from a suspended standby", r.ReadySuspended, r.ObservedSusp}} {
		p("  %-36s p50 %s  max %s  (n=%d)  [p50 %s]  minus boot delay: p50 %s",
			x.name, ms(percentile(x.server, 0.5)), ms(percentile(x.server, 1)), len(x.server),
			ms(percentile(x.obs, 0.5)), ms(percentile(x.server, 0.5)-r.BootDelay))
	}
	if r.Streams > 0 {
		p("")
		p("idle attached streams: %d read-only viewers over %d sessions, through the daemon", r.Streams, r.StreamSessions)
		p("  daemon VmRSS   %8d KiB -> %8d KiB   %+.1f KiB per stream   (bar <= %d KiB: %s)",
			r.Before.RSSKiB, r.After.RSSKiB, r.PerStreamBytes()/1024, BarStreamBytes>>10, verdict(r.PerStreamBytes() <= BarStreamBytes))
		p("  daemon threads %8d     -> %8d       %+.3f per stream        (bar: no OS thread per stream: %s)",
			r.Before.Threads, r.After.Threads, r.PerStreamThreads(), verdict(r.After.Threads-r.Before.Threads < r.Streams/10))
		if r.GoroutinesAt > 0 {
			p("  goroutines     %8.0f     -> %8.0f       %+.2f per stream", r.GoroutinesBefore, r.GoroutinesAt, (r.GoroutinesAt-r.GoroutinesBefore)/float64(r.Streams))
			p("  Go heap+stacks %8.0f KiB -> %8.0f KiB   %+.1f KiB per stream", r.HeapBefore/1024, r.HeapAt/1024, (r.HeapAt-r.HeapBefore)/1024/float64(r.Streams))
		}
	}
}
