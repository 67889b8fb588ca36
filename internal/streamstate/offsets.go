package streamstate

import (
	"math"

	"github.com/hangarhq/hangar/internal/wire"
)

// Mode says what one offset counts, in both directions of a stream.
type Mode uint8

const (
	// Bytes is hangar.pty.v1: one offset per byte of a binary frame.
	Bytes Mode = iota
	// Lines is hangar.jsonl.v1: one offset per binary frame, which carries
	// exactly one line.
	Lines
)

// ModeOf returns the counting of a subprotocol. Anything but
// hangar.jsonl.v1 counts bytes, as pty is the default subprotocol.
func ModeOf(subprotocol string) Mode {
	if subprotocol == wire.SubprotocolJSONL {
		return Lines
	}
	return Bytes
}

// Units returns how many offsets a binary frame counts for. In Lines mode
// every frame is a line, even an empty one: the agent counts an invalid line
// as applied (and refuses it) so that both ends keep the same count.
func (m Mode) Units(frame []byte) int64 {
	if m == Lines {
		return 1
	}
	return int64(len(frame))
}

// ResolveFrom returns where an attach's replay starts: from itself, or the
// head for wire.LiveTail (or any negative value) and for a from beyond the
// head, which the session has not produced yet. A from below the oldest
// retained offset is kept: the replay then opens with a gap.
func ResolveFrom(from, head int64) int64 {
	if from < 0 || from > head {
		return head
	}
	return from
}

// Output is a receiver's position in a stream's output: the offset of the
// next output unit and how far it has acknowledged. The broker uses it
// (without a window) to know where to re-attach, the clients to re-attach
// and to pace their acks.
type Output struct {
	window int64
	next   int64
	acked  int64
}

// NewOutput returns the position of a receiver that has not attached yet:
// next is the from of its first attach (wire.LiveTail is fine: attached
// sets the real offset), window its credit window (0: none).
func NewOutput(window, next int64) Output {
	return Output{window: window, next: next, acked: next}
}

// Next returns the offset of the next output unit: the from to re-attach
// with once everything before it has been rendered.
func (o *Output) Next() int64 { return o.next }

// Attached moves to attached.from: replay starts there, whatever was asked,
// and the sender counts its credit from there.
func (o *Output) Attached(from int64) {
	o.next, o.acked = from, from
}

// Advance counts n units of output (Mode.Units of a binary frame).
func (o *Output) Advance(n int64) { o.next += n }

// Gap moves to gap.oldest, where output resumes. Output before it can no
// longer be acknowledged: the sender counts credit from oldest too.
func (o *Output) Gap(oldest int64) {
	o.next = oldest
	o.acked = max(o.acked, oldest)
}

// AckDue reports whether the receiver should acknowledge now: with a window,
// once a quarter of it is unacknowledged, so that the sender never stalls
// waiting for an ack while output is flowing.
func (o *Output) AckDue() bool {
	return o.window > 0 && o.next-o.acked >= max(o.window/4, 1)
}

// Ack records an acknowledgment of everything so far and returns the offset
// to put in the ack frame.
func (o *Output) Ack() int64 {
	o.acked = o.next
	return o.acked
}

// Credit returns how many units a sender may send now to a receiver with the
// given window (0: no flow control, no limit), whose output position is next
// and whose credit counts from base: the later of its last ack and its last
// attached or gap offset (output skipped by a gap can never be acked).
func Credit(window, base, next int64) int64 {
	if window <= 0 {
		return math.MaxInt64
	}
	return base + window - next
}

// Decision says what a re-attachment's start means for a receiver that has
// seen output up to (not including) some offset.
type Decision uint8

const (
	// Continue: the replay starts exactly after what was seen.
	Continue Decision = iota
	// Gap: output between what was seen and the replay's start was evicted;
	// the receiver must be told with a gap frame before the replay.
	Gap
	// Duplicate: the replay would repeat output already seen.
	Duplicate
)

var decisionNames = [...]string{Continue: "continue", Gap: "gap", Duplicate: "duplicate"}

func (d Decision) String() string {
	if int(d) < len(decisionNames) {
		return decisionNames[d]
	}
	return "Decision(?)"
}

// Reconcile compares seen, the next output offset a receiver expects, with
// from, attached.from of a re-attachment made with from = seen.
func Reconcile(seen, from int64) Decision {
	switch {
	case from > seen:
		return Gap
	case from < seen:
		return Duplicate
	}
	return Continue
}
