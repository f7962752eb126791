// ONNX Runtime on the exported graphs against the golden vectors (what the reference computes).
//   node parity.mjs GOLDEN_MODEL_DIR ONNX_DIR [--threads N]
// ONNX_DIR holds encoder.onnx and decoder-{multimask,single,best}.onnx (tools/onnx/export.py).
// SAM 2.1: the encoder's three outputs where the vectors hold them (img1: image_embed only); the
// decoder on img1 takes the encoder graph's high-resolution features (the vectors have none).
// Tolerances are the golden README's float32 ones. Exits 1 when any check fails.
import fs from 'node:fs';
import path from 'node:path';
import { readSafetensors, readPng, openSession, tensor, samInput, sam2Input, samPrompt }
    from './lib.mjs';
import { maskIou } from '../shared/util.mjs';

const [goldenDir, onnxDir] = process.argv.slice(2);
const threads = Number(process.argv[process.argv.indexOf('--threads') + 1]) || 1;
if (!goldenDir || !onnxDir) {
    console.error('usage: node parity.mjs GOLDEN_MODEL_DIR ONNX_DIR [--threads N]');
    process.exit(2);
}
const vec = readSafetensors(path.join(goldenDir, 'vectors.safetensors'));
const cases = JSON.parse(fs.readFileSync(path.join(goldenDir, 'cases.json'), 'utf8')).cases;
let failures = 0;

function check(what, ok, detail) {
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}: ${detail}`);
    if (!ok) ++failures;
}

function maxAbs(a) {
    let m = 0;
    for (const v of a) m = Math.max(m, Math.abs(v));
    return m;
}

function diffs(a, b) {
    let max = 0, sum = 0;
    for (let i = 0; i < a.length; ++i) {
        const d = Math.abs(a[i] - b[i]);
        max = Math.max(max, d);
        sum += d;
    }
    return { max, mean: sum / a.length };
}

// Width and height from a PNG's IHDR chunk.
function pngSize(file) {
    const b = fs.readFileSync(file).subarray(0, 24);
    return { w: b.readUInt32BE(16), h: b.readUInt32BE(20) };
}

const sam2 = vec.has('img0.image_embed');
const images = [...new Set(cases.map((c) => c.image))];
// Model-frame geometry: SAM resizes the long side to 1024 (.resized holds the result), SAM 2.1
// resizes to 1024x1024.
const geometry = {};
for (const img of images) {
    const orig = pngSize(path.join(goldenDir, `${img}.png`));
    const resized = vec.get(`${img}.resized`);
    geometry[img] = sam2 ? { orig, rh: 1024, rw: 1024 }
                         : { orig, rh: resized.shape[0], rw: resized.shape[1], resized };
}

// Encoder: the image as splitseg preprocesses it (SAM / MobileSAM: the golden resized image,
// normalised and padded; SAM 2.1: the PNG resized to 1024x1024) against the golden features.
const encoderOutputs = sam2  // graph output: vectors key
    ? { image_embeddings: 'image_embed', high_res_feats_0: 'high_res_feats_0',
        high_res_feats_1: 'high_res_feats_1' }
    : { image_embeddings: 'image_embedding' };
const encoder = await openSession(path.join(onnxDir, 'encoder.onnx'), threads);
const encoded = {};  // per image: the encoder graph's outputs
for (const img of images) {
    const { rh, rw, resized } = geometry[img];
    const png = sam2 && readPng(path.join(goldenDir, `${img}.png`));
    const input = sam2 ? sam2Input(png.rgb, png.h, png.w) : samInput(resized.data, rh, rw);
    const out = encoded[img] = await encoder.run({ image: input });
    for (const [name, key] of Object.entries(encoderOutputs)) {
        const ref = vec.get(`${img}.${key}`);
        if (!ref) {
            console.log(`skip encoder ${img} ${name}: no ${img}.${key} in the vectors`);
            continue;
        }
        const scale = Math.max(1, maxAbs(ref.data)), d = diffs(out[name].data, ref.data);
        check(`encoder ${img} ${name}`, d.max <= 1e-3 * scale && d.mean <= 1e-4 * scale,
              `max |diff| ${d.max.toExponential(2)}, mean ${d.mean.toExponential(2)} (scale ${scale.toFixed(2)})`);
    }
}

// Decoder: the golden embedding and prompts; low-res logits, IoU and full-size masks.
const decoders = {};
for (const mode of ['multimask', 'single', 'best'])
    decoders[mode] = await openSession(path.join(onnxDir, `decoder-${mode}.onnx`), threads);

const fixedSessions = {};
for (const c of cases) {
    const key = (t) => `${c.image}.${c.case}.${t}`;
    const { orig, rh, rw } = geometry[c.image];
    const sx = rw / orig.w, sy = rh / orig.h;  // original pixels -> model frame
    const points = [], labels = [];
    if (vec.has(key('point_coords'))) {
        const pc = vec.get(key('point_coords')).data, pl = vec.get(key('point_labels')).data;
        for (let i = 0; i < pl.length; ++i) {
            points.push([Math.fround(pc[2 * i] * sx), Math.fround(pc[2 * i + 1] * sy)]);
            labels.push(pl[i]);
        }
    }
    const b = vec.get(key('box'))?.data;
    const box = b && [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy];
    const mask = vec.get(key('mask_input'));
    const feeds = {
        image_embeddings: tensor(vec.get(`${c.image}.${sam2 ? 'image_embed' : 'image_embedding'}`).data,
                                 [1, 256, 64, 64]),
        ...samPrompt(points, labels, box, sam2),
        mask_input: tensor(mask ? mask.data : new Float32Array(256 * 256), [1, 1, 256, 256]),
        has_mask_input: tensor(Float32Array.of(mask ? 1 : 0), [1]),
        orig_im_size: tensor(Float32Array.of(orig.h, orig.w), [2]),
    };
    // SAM 2.1: the golden high-resolution features, or the encoder graph's where the vectors
    // have none (img1): encoder and decoder graphs chained.
    const chained = sam2 && !vec.has(`${c.image}.high_res_feats_0`);
    if (sam2) {
        const feats = (k) => (chained ? encoded[c.image][k].data : vec.get(`${c.image}.${k}`).data);
        feeds.high_res_feats_0 = tensor(feats('high_res_feats_0'), [1, 32, 256, 256]);
        feeds.high_res_feats_1 = tensor(feats('high_res_feats_1'), [1, 64, 128, 128]);
    }
    const mode = c.multimask_output ? 'multimask' : 'single';
    const out = await decoders[mode].run(feeds);
    const via = chained ? ', high-res feats from the encoder graph' : '';
    const name = `decoder ${c.image}.${c.case} (${mode}${via})`;
    const low = diffs(out.low_res_masks.data, vec.get(key('low_res_logits')).data);
    check(`${name} low_res_logits`, low.max <= 5e-3, `max |diff| ${low.max.toExponential(2)}`);
    const iou = diffs(out.iou_predictions.data, vec.get(key('iou')).data);
    check(`${name} iou`, iou.max <= 1e-3, `max |diff| ${iou.max.toExponential(2)}`);
    const refMasks = vec.get(key('masks'));
    if (refMasks) {
        const [C, H, W] = refMasks.shape;
        const dims = out.masks.dims;
        const sameShape = dims[1] === C && dims[2] === H && dims[3] === W;
        let worst = 0;
        if (sameShape) {
            worst = 1;
            for (let m = 0; m < C; ++m) {
                const n = H * W;
                worst = Math.min(worst, maskIou(out.masks.data.subarray(m * n, (m + 1) * n),
                                                refMasks.data.subarray(m * n, (m + 1) * n)));
            }
        }
        check(`${name} masks ${C}x${H}x${W}`, sameShape && worst >= 0.999,
              sameShape ? `lowest IoU ${worst.toFixed(5)}` : `got ${dims.join('x')}`);
    }
    // A decoder exported for this original size (--orig-size HxW) gives the same masks.
    const fixedFile = path.join(onnxDir, `decoder-${mode}-${orig.h}x${orig.w}.onnx`);
    if (fs.existsSync(fixedFile)) {
        fixedSessions[fixedFile] ??= await openSession(fixedFile, threads);
        const { orig_im_size, ...fixedFeeds } = feeds;
        const fixed = await fixedSessions[fixedFile].run(fixedFeeds);
        const same = fixed.masks.dims.join('x') === out.masks.dims.join('x') &&
                     fixed.masks.data.every((v, i) => v === out.masks.data[i]);
        check(`${name} fixed-size graph ${orig.h}x${orig.w}`, same, same ? 'same masks' : 'masks differ');
    }
    if (c.multimask_output) {  // the best-mask graph keeps the multimask output of highest IoU
        const best = await decoders.best.run(feeds);
        const ious = Array.from(out.iou_predictions.data);
        const k = ious.indexOf(Math.max(...ious)), n = 256 * 256;
        const d = diffs(best.low_res_masks.data, out.low_res_masks.data.subarray(k * n, (k + 1) * n));
        check(`decoder ${c.image}.${c.case} (best) is multimask output ${k}`,
              d.max === 0 && best.iou_predictions.data[0] === ious[k] &&
                  best.masks.dims.join('x') === `1x1x${orig.h}x${orig.w}`,
              `max |diff| ${d.max}, masks ${best.masks.dims.join('x')}`);
    }
}
console.log(failures ? `${failures} check(s) failed` : 'all checks passed');
process.exit(failures ? 1 : 0);
