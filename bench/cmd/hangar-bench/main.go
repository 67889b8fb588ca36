// Command hangar-bench is hangar's benchmark program (make bench): it starts
// `hangard dev` and prints, side by side, echo latency, attach latency and
// bulk throughput through the daemon over the agent's tunnel, through the
// daemon dialling the agent (the design before tunnels), straight to the
// agent and through a bare relay; session-ready latency from stopped and
// suspended standbys of both designs; and the daemon's cost per attached
// idle stream at several stream counts. `hangar-bench pty-echo` is the sessions' command;
// `hangar-bench relay` the bare reference relay the daemon hop is set against.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hangarhq/hangar/bench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == bench.EchoCommand {
		if err := bench.EchoMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "pty-echo:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == bench.RelayCommand {
		if err := bench.RelayMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "relay:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hangar-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("hangar-bench", flag.ContinueOnError)
	hangard := fs.String("hangard", filepath.Join(filepath.Dir(self), "hangard"), "hangard binary (hangar-agent beside it or on PATH)")
	data := fs.String("data", "", "hangard dev data directory (default: a temporary one, removed afterwards)")
	samples := fs.Int("samples", 2000, "keystroke echo samples per path")
	bursts := fs.Int("bursts", 8, "bulk output bursts per path")
	burstSize := fs.Int("burst-size", 4<<20, "bytes per bulk burst (at most 6 MiB: below the agent's ring)")
	ready := fs.Int("ready-samples", 5, "session-ready samples per design and standby mode")
	attachSamples := fs.Int("attach-samples", 200, "attach (dial -> attached) samples per path")
	streams := fs.String("streams", "1000,5000", "idle read-only viewer counts attached through the daemon, comma-separated (\"\" or 0 skips)")
	noLegacy := fs.Bool("no-legacy", false, "skip the legacy design (a pool without daemon_url, which the daemon dials)")
	streamSessions := fs.Int("stream-sessions", 4, "sessions the viewers are spread over")
	hostile := fs.Int("hostile-viewers", 250, "read-only viewers flooding the daemon with oversized input (0 skips)")
	hostileFrames := fs.Int("hostile-frames", 4, "binary frames each hostile viewer sends (below the 16 that close it)")
	hostileSize := fs.Int("hostile-frame-size", 4<<20, "bytes per hostile frame")
	onlyHostile := fs.Bool("only-hostile", false, "run only the hostile-viewers phase")
	bootDelay := fs.Duration("boot-delay", 100*time.Millisecond, "emulated machine boot delay")
	timeout := fs.Duration("timeout", 20*time.Minute, "stop the run after this long")
	logs := fs.String("daemon-log", "", "write hangard's log here (default: discarded)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	counts, err := parseCounts(*streams)
	if err != nil {
		return fmt.Errorf("--streams: %w", err)
	}
	if _, err := exec.LookPath(*hangard); err != nil {
		return fmt.Errorf("hangard binary: %w (build it with make build)", err)
	}
	opts := bench.Options{
		Hangard: *hangard, Self: self, DataDir: *data, Samples: *samples, AttachSamples: *attachSamples,
		Bursts: *bursts, BurstSize: *burstSize, ReadySamples: *ready, Streams: counts, StreamSessions: *streamSessions,
		NoLegacy: *noLegacy, BootDelay: *bootDelay, Out: os.Stdout, HostileViewers: *hostile, HostileFrames: *hostileFrames,
		HostileFrameSize: *hostileSize, OnlyHostile: *onlyHostile,
	}
	if *logs != "" {
		f, err := os.Create(*logs)
		if err != nil {
			return err
		}
		defer f.Close()
		opts.Logs = f
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	_, err = bench.Run(ctx, opts)
	return err
}

// parseCounts parses "1000,5000"; "" and "0" mean none.
func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" || f == "0" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a stream count", f)
		}
		out = append(out, n)
	}
	return out, nil
}
