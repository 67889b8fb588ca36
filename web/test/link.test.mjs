// Unit tests of web/src/link.js against a fake WebSocket: how a link treats
// the PTY's size (a viewer follows it, a writer follows a size it did not
// ask for, a writer's own resizes are not echoed back into the terminal).
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';

class FakeWebSocket {
  static OPEN = 1;
  static last = null;
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = FakeWebSocket.OPEN;
    this.sent = [];
    FakeWebSocket.last = this;
  }
  send(data) { this.sent.push(data); }
  close(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose && this.onclose({ code: code || 1005, reason: reason || '' });
  }
  // server-side helpers
  text(m) { this.onmessage({ data: JSON.stringify(m) }); }
  controls(type) { return this.sent.filter((d) => typeof d === 'string').map((d) => JSON.parse(d)).filter((m) => m.type === type); }
}

globalThis.WebSocket = FakeWebSocket;
globalThis.location = { protocol: 'http:', host: '127.0.0.1:1' };
const { Link } = await import('../src/link.js');

// A terminal stand-in: writes complete in order, asynchronously, like
// xterm.js's write queue; events records writes and size changes in order.
function fakeTerminal() {
  const t = { cols: 80, rows: 24, events: [], queue: Promise.resolve() };
  t.write = (data, done) => {
    t.queue = t.queue.then(() => {
      if (data.length) t.events.push(`write:${typeof data === 'string' ? data : new TextDecoder().decode(data)}`);
      done();
    });
  };
  return t;
}

async function attachedLink(role) {
  const term = fakeTerminal();
  const sizes = [];
  const link = new Link({
    session: 's1', mode: 'pty', role,
    ticket: async () => 'tk',
    write: term.write,
    size: () => ({ cols: term.cols, rows: term.rows }),
    on: { size: (cols, rows) => { sizes.push([cols, rows]); term.events.push(`size:${cols}x${rows}`); } },
  });
  current = link;
  link.start();
  // connect() awaits the drain and the ticket before it opens the socket.
  for (let i = 0; i < 10 && !FakeWebSocket.last; i++) await Promise.resolve();
  const ws = FakeWebSocket.last;
  assert.ok(ws, 'the link did not open a WebSocket');
  ws.onopen();
  ws.text({ type: 'attached', session: 's1', role, from: 0, head: 0, input_applied: 0, cols: 80, rows: 24 });
  return { link, ws, term, sizes };
}

let current = null;
beforeEach(() => { FakeWebSocket.last = null; });
// Detach for good, so that no timer of the link outlives its test.
afterEach(() => { if (current) current.close(); current = null; });

test('a writer sends a resize once and does not apply its own echo', async () => {
  const { link, ws, term, sizes } = await attachedLink('rw');
  link.resize(80, 24); // the PTY's size already
  assert.equal(ws.controls('resize').length, 0);
  link.resize(100, 30);
  link.resize(100, 30); // in flight already
  assert.deepEqual(ws.controls('resize').map((m) => [m.cols, m.rows]), [[100, 30]]);
  ws.text({ type: 'size', cols: 100, rows: 30 }); // our own, echoed
  await term.queue;
  assert.deepEqual(sizes, []);
  assert.deepEqual(link.size(), { cols: 100, rows: 30 });
});

test('a writer follows a size it did not ask for, and does not send it back', async () => {
  const { link, ws, term, sizes } = await attachedLink('rw');
  link.resize(100, 30);
  ws.text({ type: 'size', cols: 100, rows: 30 });
  ws.text({ type: 'size', cols: 90, rows: 20 }); // someone else's
  await term.queue;
  assert.deepEqual(sizes, [[90, 20]]);
  // The terminal takes that size and reports it: nothing goes out.
  link.resize(90, 20);
  assert.deepEqual(ws.controls('resize').map((m) => [m.cols, m.rows]), [[100, 30]]);
});

test('a viewer takes sizes in order with the output and never resizes', async () => {
  const { link, ws, term, sizes } = await attachedLink('ro');
  ws.onmessage({ data: new TextEncoder().encode('laid out for 80').buffer });
  ws.text({ type: 'size', cols: 120, rows: 40 });
  ws.onmessage({ data: new TextEncoder().encode('laid out for 120').buffer });
  await term.queue;
  assert.deepEqual(term.events, ['write:laid out for 80', 'size:120x40', 'write:laid out for 120']);
  assert.deepEqual(sizes, [[120, 40]]);
  link.resize(50, 10);
  assert.equal(ws.controls('resize').length, 0);
  assert.deepEqual(link.size(), { cols: 120, rows: 40 });
});

test('a gap takes effect in order with the output rendered before it', async () => {
  const { link, ws, term } = await attachedLink('ro');
  ws.onmessage({ data: new TextEncoder().encode('abcd').buffer });
  ws.text({ type: 'gap', requested: 4, oldest: 100, restore: '' });
  ws.onmessage({ data: new TextEncoder().encode('ef').buffer });
  await term.queue;
  assert.equal(link.out.next, 102);
});

test('a writer numbers its input as the session does and resends only what was not applied', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const term = fakeTerminal();
  const link = new Link({
    session: 's1', mode: 'pty', role: 'rw', ticket: async () => 'tk',
    write: term.write, size: () => ({ cols: 80, rows: 24 }), on: {},
  });
  current = link;
  const open = async () => {
    FakeWebSocket.last = null;
    for (let i = 0; i < 10 && !FakeWebSocket.last; i++) await Promise.resolve();
    const ws = FakeWebSocket.last;
    assert.ok(ws, 'the link did not open a WebSocket');
    ws.onopen();
    return ws;
  };
  const binary = (ws) => ws.sent.filter((d) => typeof d !== 'string').map((d) => new TextDecoder().decode(d));
  link.input('ab'); // typed before the first attached: held
  link.start();
  let ws = await open();
  // The session applied 500 units of earlier clients' input.
  ws.text({ type: 'attached', session: 's1', role: 'rw', from: 0, head: 0, input_applied: 500, cols: 80, rows: 24 });
  link.input('cd');
  assert.deepEqual(binary(ws), ['ab', 'cd']);
  ws.close(1006, 'dropped'); // the session applied 'ab' and 'c' only
  t.mock.timers.tick(1000);
  ws = await open();
  assert.equal(ws.controls('attach')[0].input_from, 504);
  ws.text({ type: 'attached', session: 's1', role: 'rw', from: 0, head: 0, input_applied: 503, cols: 80, rows: 24 });
  assert.deepEqual(binary(ws), ['d']);
});
