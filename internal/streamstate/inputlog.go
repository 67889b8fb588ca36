package streamstate

import "errors"

// Errors of InputLog.Since: the input to re-send from an offset is not what
// the log holds.
var (
	// ErrAhead: the offset is beyond the input sent, i.e. the session
	// applied more input than this side sent (another writer's, or a
	// miscount).
	ErrAhead = errors.New("applied more input than was sent")
	// ErrEvicted: the input from the offset on is no longer in the log: it
	// fell out of the byte budget before it was known to be applied.
	ErrEvicted = errors.New("unapplied input is no longer in the log")
)

// coalesceLimit is the largest chunk that small pty writes (keystrokes) are
// packed into, so that the log is a few allocations rather than one per key.
const coalesceLimit = 4096

// InputLog keeps the tail of the input a writer has sent, numbered in the
// session's input offsets, so that after a reconnect it can re-send what the
// session had not applied (from attached.input_applied on). It is bounded:
// it holds at most max bytes, except that the newest chunk is always kept.
// Once input is known to be applied, Trim forgets it.
//
// In Bytes mode consecutive small writes are coalesced into chunks of up to
// 4 KiB (byte offsets do not care about frame boundaries); in Lines mode
// each chunk is one line. The zero value is not usable: see NewInputLog.
type InputLog struct {
	mode   Mode
	max    int      // byte budget
	chunks [][]byte // consecutive input from start
	start  int64    // offset of the first unit in chunks
	end    int64    // offset after the last unit in chunks
	size   int      // bytes held in chunks
	synced bool     // numbered in the session's offsets (see Resume)
}

// NewInputLog returns an empty log whose next unit has offset 0, holding
// about maxBytes.
func NewInputLog(mode Mode, maxBytes int) *InputLog {
	return &InputLog{mode: mode, max: maxBytes}
}

// Start returns the offset of the oldest unit held.
func (l *InputLog) Start() int64 { return l.start }

// End returns the offset after the newest unit: the input sent in total,
// which is what a re-attach sends as input_from.
func (l *InputLog) End() int64 { return l.end }

// Size returns the bytes held.
func (l *InputLog) Size() int { return l.size }

// Rebase renumbers the held input to start at off, for input that was
// never sent (the session will number it from off on, as attached said).
func (l *InputLog) Rebase(off int64) {
	l.end = off + (l.end - l.start)
	l.start = off
	l.synced = true
}

// Append records p (copied) as the input following End.
func (l *InputLog) Append(p []byte) {
	n := l.mode.Units(p)
	if n == 0 {
		return
	}
	if l.mode == Bytes && len(l.chunks) > 0 {
		last := l.chunks[len(l.chunks)-1]
		if len(last)+len(p) <= coalesceLimit {
			l.chunks[len(l.chunks)-1] = append(last, p...)
			l.end += n
			l.size += len(p)
			l.evict()
			return
		}
	}
	var c []byte
	if l.mode == Lines {
		c = make([]byte, len(p))
	} else {
		// Room to coalesce the keystrokes that follow without regrowing per key.
		c = make([]byte, len(p), max(len(p), 64))
	}
	copy(c, p)
	l.chunks = append(l.chunks, c)
	l.end += n
	l.size += len(p)
	l.evict()
}

// evict drops the oldest chunks beyond the byte budget, keeping the newest.
func (l *InputLog) evict() {
	i := 0
	for l.size > l.max && len(l.chunks)-i > 1 {
		c := l.chunks[i]
		l.chunks[i] = nil
		l.size -= len(c)
		l.start += l.mode.Units(c)
		i++
	}
	if i > 0 {
		l.chunks = append(l.chunks[:0], l.chunks[i:]...)
	}
}

// clear drops everything held and makes off the next unit's offset.
func (l *InputLog) clear(off int64) {
	clear(l.chunks)
	l.chunks = l.chunks[:0]
	l.start, l.end, l.size = off, off, 0
}

// Trim forgets input before off, which the session has applied. Offsets
// beyond End empty the log (End stays).
func (l *InputLog) Trim(off int64) {
	if off <= l.start {
		return
	}
	if off >= l.end {
		l.clear(l.end)
		return
	}
	i := 0
	for i < len(l.chunks) {
		c := l.chunks[i]
		u := l.mode.Units(c)
		if l.start+u > off {
			break
		}
		l.size -= len(c)
		l.start += u
		l.chunks[i] = nil
		i++
	}
	if i > 0 {
		l.chunks = append(l.chunks[:0], l.chunks[i:]...)
	}
	if l.start < off && l.mode == Bytes {
		// Cut into the first chunk; copy so its old head can be freed.
		skip := off - l.start
		c := l.chunks[0]
		rest := make([]byte, int64(len(c))-skip)
		copy(rest, c[skip:])
		l.chunks[0] = rest
		l.size -= int(skip)
		l.start = off
	}
}

// Since returns the input from off to End as slices of the log (valid until
// the next Append or Trim): what to re-send when the session has applied
// everything before off. It fails with ErrAhead past End and ErrEvicted
// before Start.
func (l *InputLog) Since(off int64) ([][]byte, error) {
	switch {
	case off > l.end:
		return nil, ErrAhead
	case off < l.start:
		return nil, ErrEvicted
	}
	var out [][]byte
	pos := l.start
	for _, c := range l.chunks {
		u := l.mode.Units(c)
		switch {
		case pos+u <= off:
		case pos >= off:
			out = append(out, c)
		default: // off falls inside c (Bytes only: a line counts 1)
			out = append(out, c[off-pos:])
		}
		pos += u
	}
	return out, nil
}

// Resume is a client's answer to attached: it returns the input to send
// before anything new (valid until the next Append or Trim), forgets what
// the session has applied, and leaves the log numbered as the session
// counts, so that End is the next input_from.
//
// On the first Resume nothing held was sent yet: the log is renumbered to
// start at applied (the session's count includes other clients' input) and
// all of it is returned. Later, the input from applied on is returned, and
// when the log cannot say what that is the error says what was lost, while
// the result is still the best to send:
//   - ErrEvicted: all that is held (the input between applied and Start is
//     lost); the log is renumbered from applied.
//   - ErrAhead: nothing (the session applied input this client did not
//     send, so none of this client's can be told apart); the log is emptied
//     and numbered from applied.
//
// The broker, which can hand the problem back to its client, uses Since
// instead and gives up on either error.
func (l *InputLog) Resume(applied int64) ([][]byte, error) {
	var lost error
	switch {
	case !l.synced:
		l.Rebase(applied)
	case applied > l.end:
		l.clear(applied)
		return nil, ErrAhead
	case applied < l.start:
		l.Rebase(applied)
		lost = ErrEvicted
	default:
		l.Trim(applied)
	}
	out, _ := l.Since(applied)
	return out, lost
}
