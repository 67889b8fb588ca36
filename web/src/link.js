// Link is a reconnecting attachment to one session over hangar's wire
// protocol (docs/DESIGN.md, "Wire protocol"). Output offsets count what the
// terminal has rendered: a reconnect asks for `from` = that offset once all
// output in flight has been written, and resends only the input the server
// reports as not applied (`input_applied`), so nothing is lost or doubled.
// The arithmetic of both is streamstate.js's, shared with the Go sides.

import { units, Output, InputLog } from './streamstate.js';

const SUBPROTOCOLS = { pty: 'hangar.pty.v1', jsonl: 'hangar.jsonl.v1' };
const WINDOW = 2 << 20;
const MAX_INPUT_LOG = 1 << 20;
const PING_MS = 20000;

const enc = new TextEncoder();

export class Link {
  /**
   * @param {object} o
   * @param {string} o.session session id
   * @param {'pty'|'jsonl'} o.mode
   * @param {'rw'|'ro'} o.role
   * @param {() => Promise<string>} o.ticket returns a ticket for the next connection
   * @param {(data: Uint8Array|string, done: () => void) => void} o.write renders output; calls done once rendered
   * @param {() => {cols:number, rows:number}} o.size
   * @param {object} o.on callbacks: state, attached, gap, exit, error, status, size
   */
  constructor(o) {
    this.o = o;
    this.jsonl = o.mode === 'jsonl';
    this.out = new Output(WINDOW, 0); // next: the output the terminal has finished writing
    this.inLog = new InputLog(o.mode, MAX_INPUT_LOG); // input not known to be applied
    this.ws = null;
    this.live = false;
    this.closed = false;
    this.backoff = 250;
    this.pending = 0; // writes not yet rendered
    this.drainWaiters = [];
    this.reconnects = 0;
    // The PTY's size as the server last told it, and the resizes this link
    // sent that the server has not confirmed yet (oldest first): a `size`
    // frame that matches one of them is our own resize coming back.
    this.ptySize = null;
    this.sentSizes = [];
  }

  start() { this.connect(false); }

  /** close detaches for good. */
  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    if (this.ws) this.ws.close(1000, 'detached');
  }

  /** drop closes the socket as a network failure would (test hook). */
  drop() {
    if (this.ws) this.ws.close(4000, 'dropped by test hook');
  }

  status(s, detail) { this.o.on.status && this.o.on.status(s, detail); }

  async connect(reconnect) {
    if (this.closed) return;
    // Everything received must be rendered first, so that `from` = rendered.
    await this.drained();
    let ticket;
    try {
      ticket = await this.o.ticket();
    } catch (err) {
      if (err.status && err.status < 500 && err.status !== 429) {
        this.fail(err.status === 404 || err.status === 409 ? 'gone' : 'error', err.message);
        return;
      }
      this.retry(err.message);
      return;
    }
    if (this.closed) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${proto}//${location.host}/v1/sessions/${encodeURIComponent(this.o.session)}/attach?ticket=${encodeURIComponent(ticket)}`;
    const ws = new WebSocket(url, [SUBPROTOCOLS[this.o.mode] || SUBPROTOCOLS.pty]);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.live = false;
    this.attachedOnce = false;
    this.lastError = null;
    this.status(reconnect ? 'reconnecting' : 'connecting');
    ws.onopen = () => {
      const { cols, rows } = this.o.size();
      this.sendJSON({
        type: 'attach', from: this.out.next, input_from: this.o.role === 'rw' ? this.inLog.end : 0,
        cols, rows, role: this.o.role, window: WINDOW,
      }, true);
      this.pingTimer = setInterval(() => this.sendJSON({ type: 'ping', ts: Date.now() }), PING_MS);
    };
    ws.onmessage = (ev) => this.onMessage(ev, reconnect);
    ws.onclose = (ev) => this.onClose(ws, ev);
  }

  onMessage(ev, reconnect) {
    if (typeof ev.data !== 'string') {
      const data = new Uint8Array(ev.data);
      const n = units(this.o.mode, data);
      const out = this.jsonl ? new TextDecoder().decode(data) + '\r\n' : data;
      this.render(out, () => {
        this.out.advance(n);
        if (this.out.ackDue()) this.ack();
      });
      return;
    }
    let m;
    try { m = JSON.parse(ev.data); } catch { return; }
    switch (m.type) {
      case 'state':
        this.o.on.state && this.o.on.state(m);
        break;
      case 'attached':
        this.live = true;
        this.attachedOnce = true;
        this.backoff = 250;
        // After a gap or a live-tail attach the server picks the offset.
        this.out.attached(m.from);
        this.sentSizes = [];
        if (m.cols > 0 && m.rows > 0) this.ptySize = { cols: m.cols, rows: m.rows };
        if (this.o.role === 'rw') this.resend(m.input_applied);
        if (reconnect) this.reconnects++;
        this.status('attached');
        this.o.on.attached && this.o.on.attached(m, reconnect);
        break;
      case 'gap':
        // In order with the output before it: frames still being rendered
        // count from where they started, and a reconnect waits for it.
        this.render(m.restore || '', () => this.out.gap(m.oldest));
        this.o.on.gap && this.o.on.gap(m);
        break;
      case 'replayed':
        break;
      case 'size': {
        this.ptySize = { cols: m.cols, rows: m.rows };
        const i = this.sentSizes.findIndex((z) => z.cols === m.cols && z.rows === m.rows);
        if (i >= 0) {
          // Our own resize, applied: nothing to follow.
          this.sentSizes.splice(0, i + 1);
          break;
        }
        // Someone else's (or the server's) size: output that follows is laid
        // out for it. Apply it in order with the output written before it.
        this.o.write('', () => this.o.on.size && this.o.on.size(m.cols, m.rows));
        break;
      }
      case 'ping':
        this.sendJSON({ type: 'pong', ts: m.ts });
        break;
      case 'exit':
        this.exited = m;
        this.o.on.exit && this.o.on.exit(m);
        break;
      case 'error':
        this.lastError = m;
        this.o.on.error && this.o.on.error(m);
        break;
      default:
        break;
    }
  }

  onClose(ws, ev) {
    clearInterval(this.pingTimer);
    if (ws !== this.ws) return;
    this.ws = null;
    this.live = false;
    if (this.closed) { this.status('detached'); return; }
    const msg = (this.lastError && this.lastError.message) || ev.reason || '';
    if (this.exited) { this.status('exited'); return; }
    switch (ev.code) {
      case 4003: this.fail('forbidden', msg || 'not allowed for this role'); return;
      case 4004: this.fail('gone', msg || 'the session has ended'); return;
      case 4008: this.fail('superseded', msg || 'another writer took over this session'); return;
      case 4029:
      case 4503: {
        const after = (this.lastError && this.lastError.retry_after_ms) || 1000;
        this.retry(msg || `closed with ${ev.code}`, after);
        return;
      }
      default:
        this.retry(msg || `connection lost (${ev.code})`);
    }
  }

  fail(kind, message) {
    this.closed = true;
    this.status(kind, message);
  }

  retry(why, after) {
    if (this.closed) return;
    const wait = Math.max(after || 0, this.attachedOnce ? 50 : this.backoff);
    this.backoff = Math.min(this.backoff * 2, 5000);
    this.status('reconnecting', why);
    this.retryTimer = setTimeout(() => this.connect(true), wait + Math.random() * wait * 0.2);
  }

  /** render writes to the terminal and runs done once it is on screen. */
  render(data, done) {
    this.pending++;
    this.o.write(data, () => {
      done();
      this.pending--;
      if (this.pending === 0) this.drainWaiters.splice(0).forEach((f) => f());
    });
  }

  drained() {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** sendJSON sends a control frame and says whether it went out. */
  sendJSON(m, force) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    if (!force && !this.live && m.type !== 'pong') return false;
    this.ws.send(JSON.stringify(m));
    return true;
  }

  ack() {
    this.sendJSON({ type: 'ack', offset: this.out.ack() });
  }

  /** input sends keystrokes (a string) or, in jsonl mode, one JSON line. */
  input(data) {
    if (this.o.role !== 'rw' || this.closed) return;
    if (data.length === 0) return;
    const frame = enc.encode(data);
    this.inLog.append(frame);
    if (this.live && this.ws) this.ws.send(frame);
  }

  /**
   * resend sends the input the server has not applied (from applied on).
   * Input the log no longer holds, or cannot tell apart from another
   * writer's, is lost: resume still returns what is best to send.
   */
  resend(applied) {
    for (const c of this.inLog.resume(applied).chunks) this.ws.send(c);
  }

  /** size is the PTY's size as the server last reported it (or null). */
  size() { return this.ptySize; }

  /**
   * resize asks for a new PTY size (writers only). A size the PTY already
   * has, or will have once the resizes in flight apply, is not sent again.
   */
  resize(cols, rows) {
    if (this.o.role !== 'rw' || !(cols > 0 && rows > 0)) return;
    const expect = this.sentSizes.length ? this.sentSizes[this.sentSizes.length - 1] : this.ptySize;
    if (expect && expect.cols === cols && expect.rows === rows) return;
    if (this.sendJSON({ type: 'resize', cols, rows })) {
      this.sentSizes.push({ cols, rows });
      if (this.sentSizes.length > 32) this.sentSizes.shift();
    }
  }

  signal(name) {
    if (this.o.role === 'rw') this.sendJSON({ type: 'signal', name });
  }
}
