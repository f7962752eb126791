// Copies the WASM decoder (splitseg_decoder.{js,wasm} and its JS API, and the threaded
// splitseg_decoder_mt.{js,wasm,worker.js} where built) from the C++ WASM build into dist/wasm/,
// where the worker loads it. SPLITSEG_WASM_DIR overrides ../build-wasm. Without
// a WASM build the client still works and decodes on the server; this says so.
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const web = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const build = resolve(process.env.SPLITSEG_WASM_DIR ?? join(web, '..', 'build-wasm'));
const files = [
  [join(build, 'splitseg_decoder.js'), 'splitseg_decoder.js'],
  [join(build, 'splitseg_decoder.wasm'), 'splitseg_decoder.wasm'],
  [join(web, '..', 'src', 'wasm', 'splitseg_decoder_api.mjs'), 'splitseg_decoder_api.mjs'],
];
// The threaded module is optional: without it the worker stays on one thread.
const threaded = ['splitseg_decoder_mt.js', 'splitseg_decoder_mt.wasm', 'splitseg_decoder_mt.worker.js']
  .map((f) => [join(build, f), f]);
if (threaded.every(([from]) => existsSync(from))) files.push(...threaded);
const missing = files.filter(([from]) => !existsSync(from)).map(([from]) => from);
if (missing.length) {
  console.warn(`copy-wasm: no WASM decoder in the client (missing ${missing.join(', ')}); ` +
    'it will decode on the server. Build it with -DSPLITSEG_WASM=ON into build-wasm/.');
} else {
  mkdirSync(join(web, 'dist', 'wasm'), { recursive: true });
  for (const [from, to] of files) copyFileSync(from, join(web, 'dist', 'wasm', to));
  console.log(`copy-wasm: ${build} -> dist/wasm/`);
}
