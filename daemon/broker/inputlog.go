package broker

// inputLog keeps the tail of the client input the broker has forwarded to the
// agent, so that after an agent-hop reconnect it can re-send what the agent
// had not applied (from attached.input_applied on). It is bounded: it holds at
// most max bytes, except that the newest chunk is always kept. Dropping old
// input is never lossy, only less transparent: if a reconnect needs input that
// was dropped, the broker closes the client with 4503 and the client, which
// keeps its own unacknowledged input, re-attaches and re-sends it itself.
//
// Offsets are in the client's numbering: bytes in pty mode, lines (one per
// binary frame) in jsonl mode.
type inputLog struct {
	lines  bool     // jsonl: one chunk per line, a chunk counts 1
	max    int      // byte budget
	chunks [][]byte // consecutive input from start
	start  int64    // offset of the first unit in chunks
	end    int64    // offset after the last unit in chunks
	size   int      // bytes held in chunks
}

// coalesceLimit is the largest chunk that small pty writes (keystrokes) are
// packed into, so that the log is a few allocations rather than one per key.
const coalesceLimit = 4096

func newInputLog(lines bool, max int) *inputLog {
	return &inputLog{lines: lines, max: max}
}

// reset empties the log and makes off the offset of the next unit.
func (l *inputLog) reset(off int64) {
	clear(l.chunks)
	l.chunks = l.chunks[:0]
	l.start, l.end, l.size = off, off, 0
}

// units is how many offsets p counts for.
func (l *inputLog) units(p []byte) int64 {
	if l.lines {
		return 1
	}
	return int64(len(p))
}

// append records p (copied) as the input following l.end.
func (l *inputLog) append(p []byte) {
	n := l.units(p)
	if n == 0 {
		return
	}
	if !l.lines && len(l.chunks) > 0 {
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
	if l.lines {
		c = make([]byte, len(p))
		copy(c, p)
	} else {
		// Room to coalesce the keystrokes that follow without regrowing per key.
		c = make([]byte, len(p), max(len(p), 64))
		copy(c, p)
	}
	l.chunks = append(l.chunks, c)
	l.end += n
	l.size += len(p)
	l.evict()
}

// evict drops the oldest chunks beyond the byte budget, keeping the newest.
func (l *inputLog) evict() {
	i := 0
	for l.size > l.max && len(l.chunks)-i > 1 {
		c := l.chunks[i]
		l.chunks[i] = nil
		l.size -= len(c)
		l.start += l.units(c)
		i++
	}
	if i > 0 {
		l.chunks = append(l.chunks[:0], l.chunks[i:]...)
	}
}

// trim forgets input before off (applied by the agent).
func (l *inputLog) trim(off int64) {
	if off <= l.start {
		return
	}
	if off >= l.end {
		l.reset(l.end)
		return
	}
	i := 0
	for i < len(l.chunks) {
		c := l.chunks[i]
		u := l.units(c)
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
	if l.start < off && !l.lines {
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

// since returns the input from off to the end, as slices of the log (valid
// until the next append or trim), or ok=false if off is not held (before start
// or after end, or inside a line in jsonl mode).
func (l *inputLog) since(off int64) (out [][]byte, ok bool) {
	if off < l.start || off > l.end {
		return nil, false
	}
	pos := l.start
	for _, c := range l.chunks {
		u := l.units(c)
		switch {
		case pos+u <= off:
		case pos >= off:
			out = append(out, c)
		default: // off falls inside c (pty only: a line counts 1)
			out = append(out, c[off-pos:])
		}
		pos += u
	}
	return out, true
}
