package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"

	"github.com/hangarhq/hangar/daemon/devenv"
	"github.com/hangarhq/hangar/internal/wire"
)

// HostileResults are the daemon's RSS around a flood of oversized input
// from read-only viewers (issue 11: a share link must not be able to grow
// the daemon's memory).
type HostileResults struct {
	Viewers, Frames, FrameSize int
	// Sent is how many frames the viewers got onto the wire.
	Sent int64
	// Before, Peak and After are VmRSS in KiB: settled before the
	// viewers attached, the highest sample while they sent, and once they
	// left and the daemon settled.
	Before, Peak, After int64
	// Drop is how long RSS took to come back within 16 MiB of Before.
	Drop time.Duration
}

// Grown is the peak RSS growth in bytes.
func (h *HostileResults) Grown() int64 { return (h.Peak - h.Before) << 10 }

// BarHostileGrowth is issue 11's acceptance bar: 250 viewers sending 4 MiB
// frames grow the daemon's RSS by less than 64 MB.
const BarHostileGrowth = 64 << 20

// hostile attaches HostileViewers read-only viewers to one session through
// the daemon; each sends HostileFrames binary frames of HostileFrameSize
// bytes (all refused at the daemon) while the daemon's RSS is sampled.
func (r *run) hostile(ctx context.Context) (*HostileResults, error) {
	o := r.opts
	res := &HostileResults{Viewers: o.HostileViewers, Frames: o.HostileFrames, FrameSize: o.HostileFrameSize}
	s, err := r.newSession(ctx, devenv.PoolName)
	if err != nil {
		return nil, err
	}
	d, _, err := r.paths(ctx, s, PathTunnel)
	if err != nil {
		return nil, err
	}
	if st, err := attach(ctx, d, wire.RoleReader, -1, 0); err != nil {
		return nil, err
	} else {
		st.close() // warm-up: the first use of a session's agent is not a per-viewer cost
	}
	time.Sleep(2 * time.Second) // let the daemon's GC settle before the reading
	before, err := readProcStatus(r.dev.pid())
	if err != nil {
		return nil, err
	}
	res.Before, res.Peak = before.RSSKiB, before.RSSKiB

	// Sample RSS until the viewers are gone.
	sampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sampling:
				return
			case <-t.C:
				if st, err := readProcStatus(r.dev.pid()); err == nil && st.RSSKiB > res.Peak {
					res.Peak = st.RSSKiB
				}
			}
		}
	}()

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conns := make([]*stream, o.HostileViewers)
	var g errgroup.Group
	g.SetLimit(32)
	for i := range conns {
		g.Go(func() error {
			st, err := attach(sctx, d, wire.RoleReader, -1, 0)
			if err != nil {
				return fmt.Errorf("viewer %d: %w", i, err)
			}
			conns[i] = st
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		close(sampling)
		<-sampled
		closeAll(conns)
		return nil, err
	}
	// Drain what the daemon answers (its refusals), as a client would.
	var readers sync.WaitGroup
	for _, st := range conns {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				_, rd, err := st.c.Reader(sctx)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, rd)
			}
		}()
	}
	frame := make([]byte, o.HostileFrameSize)
	var sent sync.Mutex
	var senders errgroup.Group
	for _, st := range conns {
		senders.Go(func() error {
			for range o.HostileFrames {
				if err := st.c.Write(sctx, websocket.MessageBinary, frame); err != nil {
					return nil // the daemon may close a viewer; that is allowed
				}
				sent.Lock()
				res.Sent++
				sent.Unlock()
			}
			return nil
		})
	}
	_ = senders.Wait()
	// Written is not yet read: the daemon may still be working through the
	// frames in its socket buffers, so sampling goes on until the viewers
	// are gone.
	closeAll(conns)
	cancel()
	readers.Wait()
	close(sampling)
	<-sampled

	// The freed memory goes back to the OS as the Go runtime scavenges it.
	start := time.Now()
	for {
		time.Sleep(500 * time.Millisecond)
		st, err := readProcStatus(r.dev.pid())
		if err != nil {
			return nil, err
		}
		res.After = st.RSSKiB
		res.Peak = max(res.Peak, res.After)
		if res.After <= res.Before+16<<10 || time.Since(start) > r.opts.HostileDropWait {
			break
		}
	}
	res.Drop = time.Since(start)
	return res, nil
}

func closeAll(conns []*stream) {
	for _, st := range conns {
		if st != nil {
			st.c.CloseNow()
		}
	}
}

func reportHostile(w io.Writer, h *HostileResults) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("")
	p("hostile viewers: %d read-only viewers x %d binary frames of %d KiB (%d sent), refused at the daemon",
		h.Viewers, h.Frames, h.FrameSize>>10, h.Sent)
	p("  daemon VmRSS   before %d KiB  peak %d KiB (%+.1f MiB)  after %d KiB (%v later)   (bar: peak growth < %d MiB: %s)",
		h.Before, h.Peak, float64(h.Grown())/(1<<20), h.After, h.Drop.Round(100*time.Millisecond),
		BarHostileGrowth>>20, verdict(h.Grown() < BarHostileGrowth))
}
