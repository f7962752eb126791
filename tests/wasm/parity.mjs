// wasm_parity: the WASM decoder against the native one on every golden case.
// For each golden model (../shared/golden or SPLITSEG_GOLDEN_DIR): the native CLI encodes both
// images into bundles and extracts the decoder; every case's prompts then go through
// `splitseg segment --bundle` (native reference) and through the WASM module on the same bundle.
// f32 decoder + f32 bundle: masks IoU >= 0.999, scores within 1e-3, low-res logits within 5e-3.
// f16 decoder + f16 bundle (what the browser fetches): masks IoU >= 0.99 against native f32.
// Masks are also checked against the golden masks (IoU >= 0.99: the native encoder's embedding
// differs from the reference's within the golden tolerances). Prints one click's latency.
// Usage: node --no-experimental-fetch tests/wasm/parity.mjs SPLITSEG_BIN WASM_DIR
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const [splitseg, wasmDir] = process.argv.slice(2);
if (!splitseg || !wasmDir) {
    console.error('usage: parity.mjs SPLITSEG_BIN WASM_DIR');
    process.exit(2);
}
const moduleJs = path.resolve(wasmDir, 'splitseg_decoder.js');
if (!fs.existsSync(moduleJs)) {
    console.error(`FAIL: ${moduleJs} is missing; build it: emcmake cmake -S . -B build-wasm ` +
                  '-DSPLITSEG_WASM=ON && cmake --build build-wasm');
    process.exit(1);
}
const goldenDir = process.env.SPLITSEG_GOLDEN_DIR || path.resolve(here, '../../../shared/golden');
const models = ['sam-vit-tiny', 'mobilesam', 'sam2.1-hiera-mini'].filter((m) =>
    fs.existsSync(path.join(goldenDir, m, 'weights.pth')));
if (models.length === 0) {
    console.log(`SKIP: no golden models under ${goldenDir} (set SPLITSEG_GOLDEN_DIR)`);
    process.exit(0);
}

const { default: createSplitsegDecoder } = await import(pathToFileURL(moduleJs));
const { SplitsegDecoder } = await import(pathToFileURL(path.resolve(here, '../../src/wasm/splitseg_decoder_api.mjs')));

// Minimal safetensors reader: name -> { dtype, shape, data (typed array) }.
function readSafetensors(file) {
    const buf = fs.readFileSync(file);
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
    const base = 8 + n, out = {};
    const types = { F32: Float32Array, U8: Uint8Array, I64: BigInt64Array, F64: Float64Array };
    for (const [name, t] of Object.entries(header)) {
        if (name === '__metadata__') continue;
        const [b, e] = t.data_offsets, T = types[t.dtype];
        const bytes = buf.subarray(base + b, base + e);
        const copy = new Uint8Array(bytes);  // aligned copy
        out[name] = { dtype: t.dtype, shape: t.shape, data: new T(copy.buffer, 0, (e - b) / T.BYTES_PER_ELEMENT) };
    }
    return out;
}

function run(args) {
    return execFileSync(splitseg, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function iou(a, b) {
    let inter = 0, union = 0;
    for (let i = 0; i < a.length; ++i) {
        inter += a[i] & b[i];
        union += a[i] | b[i];
    }
    return union === 0 ? 1 : inter / union;
}

function maxAbsDiff(a, b) {
    let m = 0;
    for (let i = 0; i < a.length; ++i) m = Math.max(m, Math.abs(a[i] - b[i]));
    return m;
}

const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'splitseg-wasm-parity-'));
let failures = 0;
const fail = (msg) => {
    ++failures;
    console.log(`  FAIL ${msg}`);
};
const api = await SplitsegDecoder.create(createSplitsegDecoder);
const firstBundle = {}, firstDecoder = {};  // per model, for the error checks

for (const model of models) {
    const dir = path.join(goldenDir, model), ckpt = path.join(dir, 'weights.pth');
    const cases = JSON.parse(fs.readFileSync(path.join(dir, 'cases.json'), 'utf8')).cases;
    const golden = readSafetensors(path.join(dir, 'vectors.safetensors'));
    const decoders = {};
    for (const dtype of ['f32', 'f16']) {
        decoders[dtype] = path.join(work, `${model}.decoder.${dtype}.safetensors`);
        run(['models', 'extract-decoder', '--model', ckpt, '--out', decoders[dtype], '--dtype', dtype]);
    }
    firstDecoder[model] = decoders.f16;
    console.log(`${model}: decoder ${(fs.statSync(decoders.f16).size / 1e6).toFixed(1)} MB (f16)`);
    const wasmMs = [], nativeMs = [];
    for (const image of [...new Set(cases.map((c) => c.image))]) {
        const bundles = {};
        for (const dtype of ['f32', 'f16']) {
            bundles[dtype] = path.join(work, `${model}.${image}.${dtype}.safetensors`);
            run(['encode', '--model', ckpt, '--image', path.join(dir, `${image}.png`), '--out', bundles[dtype],
                 '--dtype', dtype]);
        }
        firstBundle[model] ??= bundles.f16;
        for (const c of cases.filter((x) => x.image === image)) {
            const key = (t) => golden[`${image}.${c.case}.${t}`];
            const pts = [];
            if (key('point_coords')) {
                const xy = key('point_coords').data, labels = key('point_labels').data;
                for (let i = 0; i < labels.length; ++i) pts.push([xy[2 * i], xy[2 * i + 1], Number(labels[i])]);
            }
            const box = key('box') ? Array.from(key('box').data) : null;
            const maskInput = c.mask_input ? golden[c.mask_input].data : null;
            const args = ['segment', '--model', ckpt, '--bundle', bundles.f32, '--json', '--out',
                          path.join(work, 'native.safetensors')];
            for (const p of pts) args.push('--point', p.join(','));
            if (box) args.push('--box', box.join(','));
            if (c.mask_input) args.push('--mask-input', `${path.join(dir, 'vectors.safetensors')}:${c.mask_input}`);
            if (c.multimask_output) args.push('--multimask');
            const nativeJson = JSON.parse(run(args));
            nativeMs.push(nativeJson.decode_ms);
            const native = readSafetensors(path.join(work, 'native.safetensors'));
            const { width, height } = { width: nativeJson.width, height: nativeJson.height };
            const plane = width * height;
            const prompt = { points: pts, box, multimask: c.multimask_output, maskInput };
            const label = `${model} ${image}.${c.case}`;

            for (const dtype of ['f32', 'f16']) {
                api.loadDecoder(fs.readFileSync(decoders[dtype]));
                const info = api.loadBundle(fs.readFileSync(bundles[dtype]));
                if (info.width !== width || info.height !== height)
                    fail(`${label}: bundle size ${info.width}x${info.height}, native ${width}x${height}`);
                const r = api.decode(prompt);
                if (dtype === 'f32') wasmMs.push(r.latencyMs);
                const minIou = dtype === 'f32' ? 0.999 : 0.99;
                if (r.masks.length !== nativeJson.masks) {
                    fail(`${label} ${dtype}: ${r.masks.length} masks, native ${nativeJson.masks}`);
                    continue;
                }
                let worstIou = 1, worstGolden = 1;
                const goldenMasks = key('masks');
                r.masks.forEach((m, i) => {
                    worstIou = Math.min(worstIou, iou(m.data, native.masks.data.subarray(i * plane, (i + 1) * plane)));
                    if (goldenMasks)
                        worstGolden = Math.min(worstGolden, iou(m.data, goldenMasks.data.subarray(i * plane, (i + 1) * plane)));
                });
                const scoreDiff = maxAbsDiff(r.scores, native.iou.data);
                const logitDiff = maxAbsDiff(r.lowResLogits, native.low_res_logits.data);
                console.log(`  ${label} ${dtype}: ${r.masks.length} mask(s), IoU vs native ${worstIou.toFixed(5)}` +
                            `${goldenMasks ? `, vs golden ${worstGolden.toFixed(5)}` : ''}, |score diff| ` +
                            `${scoreDiff.toExponential(2)}, |low-res diff| ${logitDiff.toExponential(2)}, ` +
                            `${r.latencyMs.toFixed(1)} ms`);
                if (worstIou < minIou) fail(`${label} ${dtype}: mask IoU ${worstIou} < ${minIou}`);
                if (goldenMasks && worstGolden < 0.99) fail(`${label} ${dtype}: IoU vs golden ${worstGolden} < 0.99`);
                if (dtype === 'f32' && scoreDiff > 1e-3) fail(`${label}: score diff ${scoreDiff} > 1e-3`);
                if (dtype === 'f32' && logitDiff > 5e-3) fail(`${label}: low-res logit diff ${logitDiff} > 5e-3`);
            }
        }
    }
    console.log(`${model}: one decode (median over ${wasmMs.length} cases, incl. upscale to the original ` +
                `size): WASM ${median(wasmMs).toFixed(1)} ms, native ${median(nativeMs).toFixed(1)} ms`);
}
// Errors come back as exceptions with the engine's message, and leave the module usable.
function expectThrow(what, fn, pattern) {
    try {
        fn();
    } catch (e) {
        if (pattern.test(e.message)) return console.log(`  error check: ${what}: ${e.message}`);
        return fail(`${what}: unexpected message ${e.message}`);
    }
    fail(`${what}: did not throw`);
}
const [a, b] = models;
api.loadDecoder(fs.readFileSync(firstDecoder[a]));
const size = api.loadBundle(fs.readFileSync(firstBundle[a]));
expectThrow('point outside the image', () => api.decode({ points: [[size.width + 5, 1, 1]] }), /outside/);
expectThrow('no prompt', () => api.decode({}), /at least one point or a box/);
expectThrow('truncated bundle', () => api.loadBundle(fs.readFileSync(firstBundle[a]).subarray(0, 1000)), /./);
if (b) expectThrow('bundle of another model', () => api.loadBundle(fs.readFileSync(firstBundle[b])), /model/);
api.loadBundle(fs.readFileSync(firstBundle[a]));
if (api.decode({ points: [[1, 1, 1]] }).masks.length !== 1) fail('decode after errors');
api.dispose();
fs.rmSync(work, { recursive: true, force: true });
console.log(failures ? `${failures} failure(s)` : 'wasm_parity: all cases pass');
process.exit(failures ? 1 : 0);
