// COCO run-length encoding (pycocotools' compressed string form), shared by the client and its
// end-to-end test. Masks here are row-major bytes (non-zero = inside); COCO counts run down the
// columns (Fortran order), starting with a run of zeros. Plain JS so node can import it.

/**
 * Run lengths of a row-major mask, in COCO's column-major order.
 * @param {Uint8Array} mask @param {number} width @param {number} height
 * @returns {number[]}
 */
export function rleCounts(mask, width, height) {
  const counts = [];
  let value = 0;
  let run = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const v = mask[y * width + x] ? 1 : 0;
      if (v !== value) {
        counts.push(run);
        run = 0;
        value = v;
      }
      run++;
    }
  }
  counts.push(run);
  return counts;
}

/**
 * The compressed string of run lengths (LEB128-like, 5 bits a character, deltas from i-2).
 * @param {number[]} counts @returns {string}
 */
export function rleToString(counts) {
  let s = '';
  for (let i = 0; i < counts.length; i++) {
    let x = counts[i] - (i > 2 ? counts[i - 2] : 0);
    for (let more = true; more; ) {
      const c = x - Math.floor(x / 32) * 32; // low 5 bits, also for negative x
      x = Math.floor(x / 32); // arithmetic shift without 32-bit overflow
      more = (c & 0x10) !== 0 ? x !== -1 : x !== 0;
      s += String.fromCharCode((more ? c | 0x20 : c) + 48);
    }
  }
  return s;
}

/** @param {string} s @returns {number[]} */
export function rleFromString(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0;
    let k = 0;
    let c = 0;
    do {
      c = s.charCodeAt(p++) - 48;
      x += (c & 0x1f) * 2 ** (5 * k);
      k++;
    } while (c & 0x20 && p < s.length);
    if (c & 0x10) x -= 2 ** (5 * k); // sign-extend
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

/**
 * A row-major mask (0/1) from column-major run lengths.
 * @param {number[]} counts @param {number} width @param {number} height @returns {Uint8Array}
 */
export function rleDecode(counts, width, height) {
  const mask = new Uint8Array(width * height);
  let i = 0;
  for (let r = 0; r < counts.length; r++) {
    const v = r % 2;
    for (let n = 0; n < counts[r]; n++, i++) {
      if (v) mask[(i % height) * width + Math.floor(i / height)] = 1;
    }
  }
  if (i !== width * height) throw new Error(`RLE covers ${i} pixels, not ${width * height}`);
  return mask;
}
