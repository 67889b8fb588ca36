// The stream's offset arithmetic for the browser: a port of the parts of
// internal/streamstate (Go) that a client needs, run against the same test
// vectors (internal/streamstate/testdata/vectors.json, by
// web/test/streamstate.test.mjs). Change both together.
//
// Offsets count bytes in mode 'pty' and binary frames (one line each) in
// mode 'jsonl' (docs/protocol.md, "Offsets").

/** Errors of InputLog.since and InputLog.resume. */
export const ErrAhead = 'ahead'; // the session applied more input than was sent
export const ErrEvicted = 'evicted'; // unapplied input is no longer in the log

// The largest chunk small pty writes (keystrokes) are packed into.
const COALESCE_LIMIT = 4096;

/** units returns how many offsets a binary frame (Uint8Array) counts for. */
export function units(mode, frame) {
  return mode === 'jsonl' ? 1 : frame.length;
}

/**
 * Output is a receiver's position in the output: the offset of the next
 * unit (the `from` to re-attach with once all before it is rendered) and
 * how far it has acknowledged.
 */
export class Output {
  constructor(window, next) {
    this.window = window;
    this.nextOffset = next;
    this.acked = next;
  }

  get next() { return this.nextOffset; }

  /** attached: replay starts at attached.from, and credit counts from there. */
  attached(from) { this.nextOffset = this.acked = from; }

  advance(n) { this.nextOffset += n; }

  /** gap: output resumes at oldest; what was skipped can never be acked. */
  gap(oldest) {
    this.nextOffset = oldest;
    this.acked = Math.max(this.acked, oldest);
  }

  /** ackDue: a quarter of the window is unacknowledged. */
  ackDue() {
    return this.window > 0 && this.nextOffset - this.acked >= Math.max(Math.floor(this.window / 4), 1);
  }

  /** ack records an ack of everything so far and returns its offset. */
  ack() {
    this.acked = this.nextOffset;
    return this.acked;
  }
}

/**
 * InputLog keeps the tail of the input sent (Uint8Array chunks), numbered in
 * the session's input offsets, to re-send what the session had not applied
 * after a reconnect. It holds about maxBytes, always keeping the newest chunk.
 */
export class InputLog {
  constructor(mode, maxBytes) {
    this.mode = mode;
    this.max = maxBytes;
    this.chunks = [];
    this.start = 0; // offset of the first unit held
    this.end = 0; // offset after the last unit: the next input_from
    this.size = 0; // bytes held
    this.synced = false; // numbered as the session counts (see resume)
  }

  /** rebase renumbers the held input, never sent, to start at off. */
  rebase(off) {
    this.end = off + (this.end - this.start);
    this.start = off;
    this.synced = true;
  }

  /** append records p (copied) as the input following end. */
  append(p) {
    const n = units(this.mode, p);
    if (n === 0) return;
    const last = this.chunks.length ? this.chunks[this.chunks.length - 1] : null;
    if (this.mode !== 'jsonl' && last && last.length + p.length <= COALESCE_LIMIT) {
      const c = new Uint8Array(last.length + p.length);
      c.set(last);
      c.set(p, last.length);
      this.chunks[this.chunks.length - 1] = c;
    } else {
      this.chunks.push(p.slice());
    }
    this.end += n;
    this.size += p.length;
    while (this.size > this.max && this.chunks.length > 1) {
      const c = this.chunks.shift();
      this.size -= c.length;
      this.start += units(this.mode, c);
    }
  }

  clear(off) {
    this.chunks = [];
    this.start = this.end = off;
    this.size = 0;
  }

  /** trim forgets input before off, which the session has applied. */
  trim(off) {
    if (off <= this.start) return;
    if (off >= this.end) { this.clear(this.end); return; }
    while (this.chunks.length) {
      const u = units(this.mode, this.chunks[0]);
      if (this.start + u > off) break;
      this.size -= this.chunks.shift().length;
      this.start += u;
    }
    if (this.start < off && this.mode !== 'jsonl') {
      const skip = off - this.start;
      this.chunks[0] = this.chunks[0].slice(skip);
      this.size -= skip;
      this.start = off;
    }
  }

  /** since returns {chunks} from off to end, or {error} (ErrAhead, ErrEvicted). */
  since(off) {
    if (off > this.end) return { chunks: [], error: ErrAhead };
    if (off < this.start) return { chunks: [], error: ErrEvicted };
    const chunks = [];
    let pos = this.start;
    for (const c of this.chunks) {
      const u = units(this.mode, c);
      if (pos >= off) chunks.push(c);
      else if (pos + u > off) chunks.push(c.subarray(off - pos));
      pos += u;
    }
    return { chunks };
  }

  /**
   * resume answers attached: it returns {chunks} to send before anything new,
   * forgets what the session applied and numbers the log as the session
   * counts. The first resume renumbers the held (never sent) input from
   * applied; later, {error} says what could not be recovered while chunks
   * are still the best to send: ErrEvicted (all held input), ErrAhead
   * (nothing: the session applied input this client did not send).
   */
  resume(applied) {
    let error;
    if (!this.synced) {
      this.rebase(applied);
    } else if (applied > this.end) {
      this.clear(applied);
      return { chunks: [], error: ErrAhead };
    } else if (applied < this.start) {
      this.rebase(applied);
      error = ErrEvicted;
    } else {
      this.trim(applied);
    }
    const { chunks } = this.since(applied);
    return error ? { chunks, error } : { chunks };
  }
}
