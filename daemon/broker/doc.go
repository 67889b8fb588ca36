// Package broker splices a client's attach WebSocket to the session's agent
// (docs/DESIGN.md, "Wire protocol"): client <-> hangard <-> hangar-agent.
//
// # One stream
//
// Serve reads the client's mandatory first frame, an attach (anything else is
// answered with an error frame and close 1008; an "ro" target forces the role
// to ro). While Target.WaitReady runs, its progress goes to the client as
// state frames; if the session never gets ready the client gets an error
// frame and close 4004 (ErrGone), 4503 (ErrUnavailable) or the code of a
// *CloseError. Then the broker dials the agent's /v1/attach with the same
// subprotocol and a freshly signed token (one per dial: agents refuse a
// replayed jti), forwards the attach, and passes the agent's attached on.
//
// From there two goroutines splice frames, one per direction, each holding
// at most one message (in a pooled buffer) at a time: the agent-side read
// only happens after the previous client write finished, so a slow client
// stalls the agent hop through TCP and never grows the daemon's memory. The
// window/ack credit flow passes through untouched. Terminal bytes are never
// parsed; the broker decodes only the control frames it needs:
//
//   - output offset: out = attached.from, then + len(frame) per binary frame
//     (+1 per frame in hangar.jsonl.v1, where a frame is one line), and
//     out = gap.oldest on a gap. It is the offset of the next output unit the
//     client will see, and it only advances once the client write returned.
//   - input offset: in = attached.input_applied, then + the units of every
//     binary frame the client sends (writers only). Forwarded input is also
//     kept in a bounded input log (Config.InputLogBytes).
//
// The arithmetic of both offsets, the input log and the reconcile decisions
// below are internal/streamstate's, shared with the agent and the clients.
//   - ping/pong: each hop is kept alive by the broker itself (a ping every
//     PingInterval; pings are answered, never forwarded). A pong from the
//     agent proves it has read all input written before the ping, which
//     trims the input log. An agent hop silent for 3 intervals counts as
//     dropped.
//
// # Reconnect
//
// When the agent hop ends, the close code decides. A deliberate end is passed
// on: 1000 after exit (also when the hop drops after an exit frame), 4008
// superseded, 4003, 4004, 4029 and any other code, preceded by the agent's
// error frame. A drop — no close frame (EOF, reset, keepalive timeout), 1001,
// 1011-1014, 4001 (token expired: the re-dial signs a fresh one) or 4503 —
// is hidden from the client:
//
//  1. The input pump is stopped: the broker closes the old hop (so a write
//     blocked on it fails) and takes the input lock, so no client input is
//     read or forwarded until the new hop is up. Error frames that announce
//     a retryable close (credentials_expired, unavailable) were held back and
//     are dropped.
//  2. With jittered exponential backoff (50 ms to 2 s) and for at most
//     Config.ReconnectTimeout, it calls Target.WaitReady (a session that is
//     gone ends the stream with 4004 at once) and dials the agent again,
//     sending attach{from: out, input_from: in, role, window, and for a
//     writer the size the client last asked for}.
//  3. It answers pings and waits for attached (a gap sent before it is kept
//     for after). A deliberate close here is passed on as above.
//  4. It reconciles the new attachment with what the client has seen:
//     input from attached.input_applied up to in is re-sent from the input
//     log (the agent applied the rest; what it applied from the old hop
//     before the new attach is not resent, so no keystroke applies twice);
//     attached.from > out becomes a gap frame for the client (bytes were
//     evicted), attached.from < out would duplicate output and ends the
//     stream; a changed PTY size becomes a size frame. The new replay runs
//     from out, so the client receives the bytes right after the last ones it
//     got: nothing lost, nothing twice. Its closing replayed frame is
//     swallowed if the client already had one (else it is the client's first
//     and passes through); the second attached is never forwarded.
//  5. The new hop replaces the old one and the input lock is released.
//
// If the budget runs out the client gets error{unavailable} and close 4503.
// The same happens if a writer's input to re-send is no longer in the
// bounded log or the agent reports more input applied than it sent: the
// client, which keeps its own unacknowledged input, then re-attaches itself
// with its offsets, so even the fallback loses nothing.
//
// Known limits: a writer re-attaching after a drop takes the writer role
// again, superseding any writer that attached elsewhere during the outage.
// The agent counts a re-attachment's credit window from its from offset,
// while the client may not have acked all output before it yet: right after
// a reconnect up to one extra window can be in flight to the client.
//
// # Footprint
//
// An idle stream is two goroutines (the caller's, reading the agent, and one
// reading the client), both parked in the netpoller (no OS thread of their
// own), two WebSocket connections (coder/websocket and net/http keep a 4 KiB
// read and a 4 KiB write buffer on each), and a timer. Message buffers come
// from a sync.Pool only while a frame is in flight, and the input log only
// holds what a writer typed recently. One-off deep work (decoding the attach,
// WaitReady, dialling) runs on short-lived goroutines so that the two
// long-lived ones keep small stacks. BenchmarkIdleStreams measures the cost
// per stream beyond the same number of direct client-agent connections.
//
// Broker.Handler (or Broker.Accept) with ReadyTarget runs the broker
// in-process in front of any agent URL, e.g. for benchmarks.
package broker
