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
	// BarThroughputRatio: the daemon keeps at least 90% of direct throughput.
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

// EchoRatio is daemon p50 / direct p50 (and p99).
func (r *Results) EchoRatio(p float64) float64 {
	d := percentile(r.EchoDirect, p)
	if d == 0 {
		return 0
	}
	return float64(percentile(r.EchoDaemon, p)) / float64(d)
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
	p("%-40s %14s %14s %8s  %s", "", "daemon", "direct", "ratio", "bar")
	for _, q := range []struct {
		name string
		p    float64
	}{{"keystroke echo p50", 0.50}, {"keystroke echo p99", 0.99}} {
		ratio := r.EchoRatio(q.p)
		bar := fmt.Sprintf("< %.2f %s", BarEchoRatio, verdict(ratio < BarEchoRatio))
		p("%-40s %14s %14s %8.2f  %s", fmt.Sprintf("%s (n=%d)", q.name, len(r.EchoDaemon)),
			ms(percentile(r.EchoDaemon, q.p)), ms(percentile(r.EchoDirect, q.p)), ratio, bar)
	}
	for _, t := range []struct {
		name           string
		daemon, direct throughput
	}{{"bulk output, live PTY (MB/s)", r.LiveDaemon, r.LiveDirect}, {"bulk output, ring replay (MB/s)", r.ReplayDaemon, r.ReplayDirect}} {
		ratio := 0.0
		if t.direct.mbps() > 0 {
			ratio = t.daemon.mbps() / t.direct.mbps()
		}
		p("%-40s %14.1f %14.1f %8.2f  >= %.2f %s", t.name, t.daemon.mbps(), t.direct.mbps(), ratio, BarThroughputRatio, verdict(ratio >= BarThroughputRatio))
		if t.daemon.lost+t.direct.lost > 0 {
			p("%-40s %14d %14d", "  bytes skipped by gaps", t.daemon.lost, t.direct.lost)
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
