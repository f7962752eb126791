// One click's latency in the WASM decoder under Node, as `splitseg bench` measures it natively:
// a foreground click in the middle of the image, multimask, masks upscaled to the original size;
// 3 warm-up clicks, then the median of N.
// Usage: node bench/wasm_decoder.mjs DECODER.safetensors BUNDLE.safetensors [CLICKS] [WASM_DIR]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const [decoderFile, bundleFile, clicksArg, wasmDirArg] = process.argv.slice(2);
if (!decoderFile || !bundleFile) {
    console.error('usage: wasm_decoder.mjs DECODER BUNDLE [CLICKS] [WASM_DIR]');
    process.exit(2);
}
const wasmDir = path.resolve(wasmDirArg || path.join(here, '../build-wasm'));
const { default: createSplitsegDecoder } = await import(pathToFileURL(path.join(wasmDir, 'splitseg_decoder.js')));
const { SplitsegDecoder } = await import(pathToFileURL(path.join(here, '../src/wasm/splitseg_decoder_api.mjs')));

const api = await SplitsegDecoder.create(createSplitsegDecoder);
api.loadDecoder(fs.readFileSync(decoderFile));
let start = performance.now();
const { width, height, model } = api.loadBundle(fs.readFileSync(bundleFile));
const loadMs = performance.now() - start;  // parse + prepare()
const click = { points: [[width * 0.5, height * 0.5, 1]], multimask: true };
for (let i = 0; i < 3; ++i) api.decode(click);
const clicks = Number(clicksArg || 20), ms = [];
for (let i = 0; i < clicks; ++i) ms.push(api.decode(click).latencyMs);
ms.sort((a, b) => a - b);
const median = clicks % 2 ? ms[(clicks - 1) / 2] : 0.5 * (ms[clicks / 2 - 1] + ms[clicks / 2]);
console.log(JSON.stringify({ model, image: `${width}x${height}`, bundle_load_prepare_ms: loadMs, clicks,
                             decode_ms: median, min_ms: ms[0], max_ms: ms[clicks - 1] }));
api.dispose();
