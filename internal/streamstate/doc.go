// Package streamstate is the offset arithmetic of hangar's wire protocol
// (docs/protocol.md, "Offsets"), in one place for every Go side of a stream:
// the agent that owns the output ring and applies input, the daemon's broker
// that splices a client to the agent and re-attaches behind its back, and
// the Go client. web/src/streamstate.js is the browser's port of the parts a
// client needs; testdata/vectors.json holds cases that the tests of both
// implementations run, so the two cannot drift apart.
//
// What it holds:
//
//   - Mode and Units: what one offset counts (a byte in hangar.pty.v1, a
//     binary frame, which is one line, in hangar.jsonl.v1).
//   - ResolveFrom: where an attach's replay starts.
//   - Output: a receiver's next output offset, moved by attached, data and
//     gap, and when its credit window wants an ack.
//   - Credit: how much a sender may send within a receiver's window.
//   - Reconcile: what a re-attachment's start means for output already seen
//     (continue, gap, or duplicate).
//   - InputLog: the bounded tail of input sent, for re-sending what the
//     session had not applied after a reconnect.
//
// Nothing here does I/O or locking: callers keep the state under their own
// locks, next to the connections it describes.
package streamstate
