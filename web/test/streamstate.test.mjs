// Runs the Go package internal/streamstate's test vectors against the
// browser's port, web/src/streamstate.js, so the two count alike.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { units, Output, InputLog } from '../src/streamstate.js';

const vectors = JSON.parse(await readFile(new URL('../../internal/streamstate/testdata/vectors.json', import.meta.url), 'utf8'));

const enc = new TextEncoder();
const dec = new TextDecoder();
const frame = (s) => enc.encode(s.frame.repeat(Math.max(s.repeat || 0, 1)));

// Sections about senders and the broker (which the browser never is) are
// Go's alone; any other section must be run here.
const goOnly = new Set(['comment', 'resolve_from', 'credit', 'reconcile']);

test('every section of the vectors is run or known to be Go-only', () => {
  const run = new Set(['units', 'output', 'input_log']);
  for (const k of Object.keys(vectors)) assert.ok(run.has(k) || goOnly.has(k), `section ${k} is not run by the web tests`);
});

test('units', () => {
  for (const c of vectors.units) {
    assert.equal(units(c.mode, enc.encode(c.frame)), c.want, `${c.mode} units(${JSON.stringify(c.frame)})`);
  }
});

for (const c of vectors.output) {
  test(`output: ${c.name}`, () => {
    const o = new Output(c.window, c.from);
    c.ops.forEach((s, i) => {
      const at = `op ${i} (${s.op})`;
      let ack;
      switch (s.op) {
        case 'attached': o.attached(s.from); break;
        case 'data': o.advance(units(c.mode, frame(s))); break;
        case 'gap': o.gap(s.oldest); break;
        case 'ack': ack = o.ack(); break;
        default: assert.fail(`${at}: unknown op`);
      }
      if ('next' in s) assert.equal(o.next, s.next, `${at}: next`);
      if ('ack_due' in s) assert.equal(o.ackDue(), s.ack_due, `${at}: ack due`);
      if ('ack' in s) assert.equal(ack, s.ack, `${at}: ack`);
    });
  });
}

for (const c of vectors.input_log) {
  test(`input log: ${c.name}`, () => {
    const l = new InputLog(c.mode, c.max);
    c.ops.forEach((s, i) => {
      const at = `op ${i} (${s.op})`;
      let r = { chunks: [] };
      switch (s.op) {
        case 'append': l.append(frame(s)); break;
        case 'rebase': l.rebase(s.at); break;
        case 'trim': l.trim(s.at); break;
        case 'since': r = l.since(s.at); break;
        case 'resume': r = l.resume(s.applied); break;
        default: assert.fail(`${at}: unknown op`);
      }
      assert.equal(r.error || '', s.error || '', `${at}: error`);
      if ('want' in s) assert.deepEqual(r.chunks.map((b) => dec.decode(b)), s.want, `${at}: chunks`);
      if ('start' in s) assert.equal(l.start, s.start, `${at}: start`);
      if ('end' in s) assert.equal(l.end, s.end, `${at}: end`);
      if ('size' in s) assert.equal(l.size, s.size, `${at}: size`);
    });
  });
}
