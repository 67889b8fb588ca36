package agent

import (
	"sync"

	"github.com/hangarhq/hangar/internal/wire"
)

// outStream is a session's output log with absolute offsets: bytes in pty
// mode, lines in jsonl mode. Appends never block on readers; readers that
// fall behind the oldest retained offset get a gap.
type outStream interface {
	// next returns up to max units starting at cursor (a frame to send; buf
	// may back it), or a gap if cursor was evicted. Both empty: nothing yet.
	next(cursor, max int64, buf []byte) (frame []byte, units int64, gap *wire.Gap)
	// bounds returns the oldest retained offset and the head (next offset).
	bounds() (oldest, head int64)
	// changed returns a channel closed on the next append or close.
	changed() <-chan struct{}
	// close marks the end of output and wakes every reader.
	close()
}

// notifier is a broadcast: each change closes the current channel.
type notifier struct{ ch chan struct{} }

func (n *notifier) get() <-chan struct{} {
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) fire() {
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// byteRing is the pty output ring: a circular byte buffer. Evicted bytes go
// through a modeTracker so that gaps can restore terminal modes.
type byteRing struct {
	mu     sync.Mutex
	buf    []byte
	head   int64
	modes  *modeTracker
	notify notifier
}

func newByteRing(capacity int) *byteRing {
	return &byteRing{buf: make([]byte, capacity), modes: newModeTracker()}
}

func (r *byteRing) oldestLocked() int64 {
	if c := int64(len(r.buf)); r.head > c {
		return r.head - c
	}
	return 0
}

// append adds output. It copies p.
func (r *byteRing) append(p []byte) {
	if len(p) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := int64(len(r.buf))
	n := int64(len(p))
	oldest := r.oldestLocked()
	if newOldest := r.head + n - c; newOldest > oldest {
		// Feed the tracker everything that leaves the ring, in order: first
		// the retained bytes being overwritten, then any part of p that
		// never makes it into the ring.
		end := min(newOldest, r.head)
		for off := oldest; off < end; {
			i := off % c
			j := min(c, i+(end-off))
			r.modes.feed(r.buf[i:j])
			off += j - i
		}
		if newOldest > r.head {
			r.modes.feed(p[:newOldest-r.head])
		}
	}
	// Only the last c bytes of p can be retained.
	start := r.head
	if n > c {
		start += n - c
		p = p[n-c:]
	}
	for len(p) > 0 {
		i := start % c
		k := copy(r.buf[i:], p)
		p = p[k:]
		start += int64(k)
	}
	r.head += n
	r.notify.fire()
}

func (r *byteRing) next(cursor, max int64, buf []byte) ([]byte, int64, *wire.Gap) {
	r.mu.Lock()
	defer r.mu.Unlock()
	oldest := r.oldestLocked()
	if cursor < oldest {
		return nil, 0, &wire.Gap{Requested: cursor, Oldest: oldest, Restore: r.modes.restore()}
	}
	n := min(r.head-cursor, max, int64(len(buf)))
	if n <= 0 {
		return nil, 0, nil
	}
	c := int64(len(r.buf))
	out := buf[:0]
	for off := cursor; off < cursor+n; {
		i := off % c
		j := min(c, i+(cursor+n-off))
		out = append(out, r.buf[i:j]...)
		off += j - i
	}
	return out, n, nil
}

func (r *byteRing) bounds() (int64, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.oldestLocked(), r.head
}

func (r *byteRing) changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.notify.get()
}

func (r *byteRing) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notify.fire()
}

// lineRing is the jsonl output ring: whole lines, bounded in bytes. It never
// evicts a line at or after the protected offset (the writer's position);
// appendLine reports false instead, and the caller waits.
type lineRing struct {
	mu       sync.Mutex
	lines    [][]byte
	first    int64 // offset of lines[0]
	bytes    int64 // bytes held
	capacity int64
	notify   notifier
}

func newLineRing(capacity int) *lineRing { return &lineRing{capacity: int64(capacity)} }

// fits reports whether a line of n bytes can be appended without evicting
// anything at or after protect.
func (r *lineRing) fits(n int, protect int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bytes+int64(n) <= r.capacity {
		return true
	}
	// Bytes that must stay: lines at or after protect.
	var keep int64
	for i := len(r.lines) - 1; i >= 0 && r.first+int64(i) >= protect; i-- {
		keep += int64(len(r.lines[i]))
	}
	// A line larger than the whole ring still goes in once nothing protected remains.
	return keep+int64(n) <= r.capacity || keep == 0
}

// appendLine adds a line (owned by the ring from now on), evicting old lines
// beyond the capacity (always keeping the newest line).
func (r *lineRing) appendLine(line []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	r.bytes += int64(len(line))
	drop := 0
	for r.bytes > r.capacity && len(r.lines)-drop > 1 {
		r.bytes -= int64(len(r.lines[drop]))
		r.lines[drop] = nil
		drop++
	}
	if drop > 0 {
		r.lines = r.lines[drop:]
		r.first += int64(drop)
		// Re-slice into a fresh array now and then so evicted entries are freed.
		if cap(r.lines) > 4*len(r.lines)+64 {
			r.lines = append([][]byte(nil), r.lines...)
		}
	}
	r.notify.fire()
}

func (r *lineRing) next(cursor, max int64, _ []byte) ([]byte, int64, *wire.Gap) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cursor < r.first {
		return nil, 0, &wire.Gap{Requested: cursor, Oldest: r.first}
	}
	i := cursor - r.first
	if max <= 0 || i >= int64(len(r.lines)) {
		return nil, 0, nil
	}
	return r.lines[i], 1, nil
}

func (r *lineRing) bounds() (int64, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.first, r.first + int64(len(r.lines))
}

func (r *lineRing) changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.notify.get()
}

func (r *lineRing) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notify.fire()
}
