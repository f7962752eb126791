// The client's mask frame parser (web/src/mask_frame.js) on frames built here byte by byte as
// src/service/mask_frame.cpp writes them: both encodings, and every malformed case it refuses.
// The frames a real server sends are checked in web/e2e/web_e2e.mjs.
//   node --test web/test/mask_frame.test.mjs
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseMaskFrame } from '../src/mask_frame.js';

function frame({ encoding, width, height, payload, sequence = 7, maskIndex = 2, version = 1, magic = 'SSMK', payloadBytes }) {
  const out = new Uint8Array(32 + payload.length);
  const view = new DataView(out.buffer);
  for (let i = 0; i < 4; i++) out[i] = magic.charCodeAt(i);
  view.setUint16(4, version, true);
  view.setUint16(6, encoding, true);
  view.setUint32(8, sequence, true);
  view.setUint32(12, maskIndex, true);
  view.setUint32(16, width, true);
  view.setUint32(20, height, true);
  view.setUint32(24, payloadBytes ?? payload.length, true);
  out.set(payload, 32);
  return out;
}

function runs(...r) {
  const out = new Uint8Array(4 * r.length);
  r.forEach((v, i) => new DataView(out.buffer).setUint32(4 * i, v, true));
  return out;
}

test('row runs: outside first, alternating', () => {
  // 4x3: row 0 outside, then 5 inside, then 3 outside.
  const m = parseMaskFrame(frame({ encoding: 1, width: 4, height: 3, payload: runs(4, 5, 3) }).buffer);
  assert.equal(m.encoding, 'runs');
  assert.deepEqual([m.sequence, m.maskIndex, m.width, m.height], [7, 2, 4, 3]);
  assert.deepEqual([...m.data], [0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0]);
  const first = parseMaskFrame(frame({ encoding: 1, width: 2, height: 1, payload: runs(0, 2) }));
  assert.deepEqual([...first.data], [1, 1]); // a first run of 0: the mask starts inside
});

test('1-bit bitmap: pixel i is bit i % 8 of byte i / 8', () => {
  const m = parseMaskFrame(frame({ encoding: 2, width: 3, height: 3, payload: new Uint8Array([0b10100101, 0b1]) }));
  assert.equal(m.encoding, 'bitmap');
  assert.deepEqual([...m.data], [1, 0, 1, 0, 0, 1, 0, 1, 1]);
});

test('a view into a larger buffer (a Node Buffer) reads the same', () => {
  const bytes = frame({ encoding: 1, width: 2, height: 2, payload: runs(1, 2, 1) });
  const padded = new Uint8Array(bytes.length + 8);
  padded.set(bytes, 3);
  assert.deepEqual([...parseMaskFrame(padded.subarray(3, 3 + bytes.length)).data], [0, 1, 1, 0]);
});

test('malformed frames are refused with a reason', () => {
  const good = { encoding: 1, width: 2, height: 2, payload: runs(1, 2, 1) };
  const cases = [
    [new Uint8Array(10), /no SSMK/],
    [frame({ ...good, magic: 'XXXX' }), /no SSMK/],
    [frame({ ...good, version: 2 }), /version/],
    [frame({ ...good, encoding: 3 }), /encoding/],
    [frame({ ...good, payloadBytes: 8 }), /payload length/],
    [frame({ ...good, width: 70000 }), /too large/],
    [frame({ ...good, payload: runs(1, 2) }), /do not cover/],
    [frame({ ...good, payload: runs(1, 2, 9) }), /more than the mask/],
    [frame({ ...good, payload: new Uint8Array([1, 0, 0]) }), /whole uint32s/],
    [frame({ encoding: 2, width: 3, height: 3, payload: new Uint8Array([0]) }), /bitmap size/],
  ];
  for (const [bytes, reason] of cases) assert.throws(() => parseMaskFrame(bytes), reason);
});
