package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Bars the daemon hop is held to (issue 9).
const (
	// BarEchoRatio: the daemon hop adds at most 20% to echo latency.
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

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// EchoRatio is the echo latency percentile p of path name over the direct one.
func (r *Results) EchoRatio(name string, p float64) float64 {
	return ratio(float64(percentile(r.path(name).Echo, p)), float64(percentile(r.path(PathDirect).Echo, p)))
}

// ThroughputRatio is path name's live or replay Throughput over the direct one.
func (r *Results) ThroughputRatio(name string, replay bool) float64 {
	a, b := r.path(name).Live, r.path(PathDirect).Live
	if replay {
		a, b = r.path(name).Replay, r.path(PathDirect).Replay
	}
	return ratio(a.mbps(), b.mbps())
}

// StreamAt returns the idle stream figures of design at count streams.
func (r *Results) StreamAt(design string, count int) (StreamResults, bool) {
	for _, s := range r.Streams {
		if s.Design == design && s.Count == count {
			return s, true
		}
	}
	return StreamResults{}, false
}

func ratio(a, b float64) float64 {
	if a == 0 || b == 0 {
		return 0
	}
	return a / b
}

// The table's columns: figures, then ratios to the in-run reference.
var (
	valueCols = []string{PathTunnel, PathLegacy, PathDirect, PathRelay}
	ratioCols = [][2]string{{PathTunnel, PathDirect}, {PathLegacy, PathDirect}, {PathRelay, PathDirect}, {PathTunnel, PathLegacy}}
)

// row is one line of the table: a figure per column (0: not measured or
// not applicable) and the target check, if any.
type row struct {
	label  string
	vals   map[string]float64
	format func(float64) string
	target string
}

func msf(v float64) string  { return fmt.Sprintf("%.3f ms", v) }
func num(v float64) string  { return fmt.Sprintf("%.1f", v) }
func num3(v float64) string { return fmt.Sprintf("%.3f", v) }
func dms(d time.Duration) float64 {
	return float64(d) / 1e6
}

func report(w io.Writer, r *Results) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("hangar bench: hangard dev, %d CPUs, %s/%s, load average %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, loadAvg())
	p("  tunnel = client -> daemon -> agent's dial-home tunnel (yamux over a WebSocket) -> agent")
	p("  legacy = client -> daemon -> dialled agent [private_ip]:port (pool without daemon_url)")
	p("  direct = client -> agent (the tunnel session's agent, also listening on TCP): the reference")
	p("  relay  = client -> bare WebSocket relay -> the same agent (the floor of any extra hop)")
	if r.LegacyErr != "" {
		p("  legacy not measured: %s", r.LegacyErr)
	}
	p("")

	var rows []row
	for _, q := range []struct {
		name string
		p    float64
	}{{"keystroke echo p50", 0.50}, {"keystroke echo p99", 0.99}} {
		vals := map[string]float64{}
		for _, c := range valueCols {
			vals[c] = dms(percentile(r.path(c).Echo, q.p))
		}
		t := ""
		if q.p == 0.50 {
			ratio := r.EchoRatio(PathTunnel, q.p)
			t = fmt.Sprintf("tunnel/direct <= %.2f: %s", BarEchoRatio, verdict(ratio > 0 && ratio <= BarEchoRatio))
		}
		rows = append(rows, row{fmt.Sprintf("%s (n=%d)", q.name, len(r.path(PathDirect).Echo)), vals, msf, t})
	}
	{
		vals := map[string]float64{}
		for _, c := range valueCols {
			vals[c] = dms(percentile(r.path(c).Attach, 0.5))
		}
		rows = append(rows, row{fmt.Sprintf("attach, dial -> attached p50 (n=%d)", len(r.path(PathDirect).Attach)), vals, msf, ""})
	}
	for _, t := range []struct {
		name   string
		replay bool
	}{{"bulk output, live PTY (MB/s)", false}, {"bulk output, ring replay (MB/s)", true}} {
		vals := map[string]float64{}
		for _, c := range valueCols {
			tp := r.path(c).Live
			if t.replay {
				tp = r.path(c).Replay
			}
			vals[c] = tp.mbps()
		}
		ratio := r.ThroughputRatio(PathTunnel, t.replay)
		rows = append(rows, row{t.name, vals, num, fmt.Sprintf("tunnel/direct >= %.2f: %s", BarThroughputRatio, verdict(ratio >= BarThroughputRatio))})
	}
	for _, mode := range []string{Stopped, Suspended} {
		vals, beyond := map[string]float64{}, map[string]float64{}
		n := 0
		for _, design := range []string{DesignTunnel, DesignLegacy} {
			rr := r.Ready[ReadyKey(design, mode)]
			if rr == nil || len(rr.Server) == 0 {
				continue
			}
			n = len(rr.Server)
			p50 := percentile(rr.Server, 0.5)
			vals[design], beyond[design] = dms(p50), dms(p50-r.BootDelay)
		}
		rows = append(rows,
			row{fmt.Sprintf("ready from a %s standby p50 (n=%d)", mode, n), vals, msf, ""},
			row{fmt.Sprintf("  beyond the %v boot delay", r.BootDelay), beyond, msf, ""})
	}
	counts := []int{}
	for _, s := range r.Streams {
		if !slices.Contains(counts, s.Count) {
			counts = append(counts, s.Count)
		}
	}
	slices.Sort(counts)
	for _, n := range counts {
		rss, thr, gor, heap, stack := map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]float64{}
		for _, design := range []string{DesignTunnel, DesignLegacy} {
			s, ok := r.StreamAt(design, n)
			if !ok {
				continue
			}
			// A stream may cost nothing measurable: keep it apart from
			// "not measured" (0) in the table.
			rss[design] = nonzero(s.PerStreamBytes() / 1024)
			thr[design] = nonzero(s.PerStreamThreads())
			gor[design] = nonzero(s.PerStreamGoroutines())
			heap[design] = nonzero(s.PerStreamHeap() / 1024)
			stack[design] = nonzero(s.PerStreamStack() / 1024)
		}
		ts, _ := r.StreamAt(DesignTunnel, n)
		rows = append(rows,
			row{fmt.Sprintf("daemon RSS per idle stream @%d (KiB)", n), rss, num,
				fmt.Sprintf("tunnel <= %d KiB: %s", BarStreamBytes>>10, verdict(ts.Count > 0 && ts.PerStreamBytes() <= BarStreamBytes))},
			row{fmt.Sprintf("  OS threads per stream @%d", n), thr, num3,
				fmt.Sprintf("tunnel: no thread per stream: %s", verdict(ts.Count > 0 && ts.After.Threads-ts.Before.Threads < ts.Count/10))},
			row{fmt.Sprintf("  goroutines per stream @%d", n), gor, num, ""},
			row{fmt.Sprintf("  Go heap per stream @%d (KiB)", n), heap, num, ""},
			row{fmt.Sprintf("  goroutine stacks per stream @%d (KiB)", n), stack, num, ""})
	}

	const labelW, valW, ratioW = 40, 11, 8
	var b strings.Builder
	fmt.Fprintf(&b, "%-*s", labelW, "")
	for _, c := range valueCols {
		fmt.Fprintf(&b, " %*s", valW, c)
	}
	for _, rc := range ratioCols {
		fmt.Fprintf(&b, " %*s", ratioW, rc[0]+"/")
	}
	fmt.Fprintf(&b, "  target\n%-*s", labelW, "")
	for range valueCols {
		fmt.Fprintf(&b, " %*s", valW, "")
	}
	for _, rc := range ratioCols {
		fmt.Fprintf(&b, " %*s", ratioW, rc[1])
	}
	p("%s", b.String())
	for _, rw := range rows {
		b.Reset()
		fmt.Fprintf(&b, "%-*s", labelW, rw.label)
		for _, c := range valueCols {
			s := "-"
			if v := rw.vals[c]; v != 0 {
				s = rw.format(v)
			}
			fmt.Fprintf(&b, " %*s", valW, s)
		}
		for _, rc := range ratioCols {
			s := "-"
			if v := ratio(rw.vals[rc[0]], rw.vals[rc[1]]); v != 0 {
				s = fmt.Sprintf("%.2f", v)
			}
			fmt.Fprintf(&b, " %*s", ratioW, s)
		}
		if rw.target != "" {
			fmt.Fprintf(&b, "  %s", rw.target)
		}
		p("%s", strings.TrimRight(b.String(), " "))
	}
	for _, c := range valueCols {
		pr := r.path(c)
		if pr.Live.lost+pr.Replay.lost > 0 {
			p("  %s: %d live and %d replayed bytes skipped by gaps", c, pr.Live.lost, pr.Replay.lost)
		}
	}
	for _, w := range r.Warnings {
		p("  WARNING %s", w)
	}
	p("")
	p("ready = the daemon's created_at -> ready_at, including the %v emulator boot delay per start or resume;", r.BootDelay)
	p("  client-observed p50:%s", observed(r))
	if len(r.Streams) > 0 {
		p("idle streams: read-only viewers over %d sessions, attached through a fresh daemon per design", r.StreamSessions)
		p("  (open-file limit %d); per stream = growth over the same daemon with nothing attached:", r.NoFile)
		for _, s := range r.Streams {
			p("  %-6s @%-5d VmRSS %7d -> %7d KiB, threads %3d -> %3d, goroutines %5.0f -> %5.0f, heap %7.0f -> %7.0f KiB, stacks %7.0f -> %7.0f KiB",
				s.Design, s.Count, s.Before.RSSKiB, s.After.RSSKiB, s.Before.Threads, s.After.Threads,
				s.GoroutinesBefore, s.GoroutinesAt, s.HeapBefore/1024, s.HeapAt/1024, s.StackBefore/1024, s.StackAt/1024)
		}
	}
}

// nonzero keeps a measured zero apart from "not measured" (0) in the table.
func nonzero(v float64) float64 {
	if v == 0 {
		return 1e-9
	}
	return v
}

func observed(r *Results) string {
	var b strings.Builder
	for _, design := range []string{DesignTunnel, DesignLegacy} {
		for _, mode := range []string{Stopped, Suspended} {
			if rr := r.Ready[ReadyKey(design, mode)]; rr != nil && len(rr.Observed) > 0 {
				fmt.Fprintf(&b, " %s/%s %.1f ms", design, mode, dms(percentile(rr.Observed, 0.5)))
			}
		}
	}
	return b.String()
}

// loadAvg is the machine's 1, 5 and 15 minute load average, to judge how
// stable the figures are.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
