// The service's binary mask frames: a session WebSocket message sent with "output": "binary" is
// answered by its JSON text frame, then one binary frame per mask. Layout (README.md, and
// src/service/mask_frame.h, which writes them), integers little-endian:
//   0 "SSMK" | 4 u16 version (1) | 6 u16 encoding | 8 u32 seq | 12 u32 mask index
//   16 u32 width | 20 u32 height | 24 u32 payload bytes | 28 u32 reserved | 32 payload
// Encoding 1: u32 run lengths over the row-major pixels, outside/inside in turn from outside.
// Encoding 2: a bitmap, pixel i is bit i % 8 of byte i / 8. Plain JS so node can import it.

export const MASK_FRAME_HEADER_BYTES = 32;
const VERSION = 1;
const ROW_RUNS_U32 = 1;
const BITMAP_1BIT = 2;
const MAX_SIDE = 1 << 16; // the server's cap; also bounds what a frame can make us allocate

/**
 * @typedef {object} MaskFrame
 * @property {number} sequence the reply's "seq" (the frame belongs to that text frame)
 * @property {number} maskIndex the mask's index in the reply's body.masks
 * @property {number} width
 * @property {number} height
 * @property {'runs' | 'bitmap'} encoding
 * @property {Uint8Array} data row-major, 0 or 1
 */

/**
 * Reads one binary frame; throws an Error naming what is wrong with a malformed one.
 * @param {ArrayBuffer | ArrayBufferView} frame
 * @returns {MaskFrame}
 */
export function parseMaskFrame(frame) {
  const bytes = ArrayBuffer.isView(frame)
    ? new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength)
    : new Uint8Array(frame);
  const magic = String.fromCharCode(...bytes.subarray(0, 4));
  if (bytes.length < MASK_FRAME_HEADER_BYTES || magic !== 'SSMK') throw new Error('not a mask frame (no SSMK header)');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint16(4, true) !== VERSION) throw new Error(`unknown mask frame version ${view.getUint16(4, true)}`);
  const encoding = view.getUint16(6, true);
  const width = view.getUint32(16, true);
  const height = view.getUint32(20, true);
  const payload = view.getUint32(24, true);
  if (width > MAX_SIDE || height > MAX_SIDE) throw new Error(`mask frame too large (${width}x${height})`);
  if (payload !== bytes.length - MASK_FRAME_HEADER_BYTES) throw new Error('mask frame payload length does not match the frame');
  const pixels = width * height;
  const data = new Uint8Array(pixels);
  const body = bytes.subarray(MASK_FRAME_HEADER_BYTES);
  if (encoding === BITMAP_1BIT) {
    if (body.length !== Math.ceil(pixels / 8)) throw new Error('bitmap size does not match width * height');
    for (let i = 0; i < pixels; i++) data[i] = (body[i >> 3] >> (i & 7)) & 1;
  } else if (encoding === ROW_RUNS_U32) {
    if (body.length % 4 !== 0) throw new Error('runs are not whole uint32s');
    let at = 0;
    for (let i = 0; i < body.length / 4; i++) {
      const run = view.getUint32(MASK_FRAME_HEADER_BYTES + 4 * i, true);
      if (run > pixels - at) throw new Error('runs cover more than the mask');
      if (i % 2 === 1) data.fill(1, at, at + run);
      at += run;
    }
    if (at !== pixels) throw new Error('runs do not cover the mask');
  } else {
    throw new Error(`unknown mask frame encoding ${encoding}`);
  }
  return {
    sequence: view.getUint32(8, true),
    maskIndex: view.getUint32(12, true),
    width,
    height,
    encoding: encoding === BITMAP_1BIT ? 'bitmap' : 'runs',
    data,
  };
}
