// splitseg against ONNX Runtime (onnxruntime-node, CPU) on the same weights, inputs and thread
// count, in alternating rounds: each round runs `splitseg bench` once, then ONNX Runtime.
//   node bench.mjs --splitseg BIN --model M.safetensors --onnx-dir DIR [--threads 2] [--rounds 3]
//                  [--precision f32|bf16]
//                  [--clicks 30]
// DIR holds encoder.onnx, decoder-multimask.onnx and decoder-best.onnx exported for a 1024x1024
// original (tools/onnx/export.py --orig-size 1024x1024), as bench/onnx/run.sh makes them. SAM,
// MobileSAM or SAM 2.1 (its encoder graph's high-res features go to the decoder graphs).
//
// What each side times (wall clock, after warm-up):
//   encoder   splitseg: encode() of the synthetic 1024x1024 picture (preprocessing, which is
//             normalisation only at that size, + image encoder), the median of 3 after a warm-up
//             in each round's process (the first encodes of a process run 10-30 % slower while
//             its heap grows; ORT's session lives through the rounds); ORT: session.run of the
//             encoder graph on the same picture, already normalised.
//   click     one foreground click in the middle, the 3 multimask masks as logits > 0 at 1024x1024
//             (+ low-res logits and IoUs). splitseg: decode() with MaskOutput::Masks after its
//             per-image prepare(); ORT: session.run of the multimask decoder graph (it has no
//             per-image precompute: the graph redoes the image-side work each click).
//   best      the best-IoU multimask output alone upscaled to 1024x1024. splitseg: decode() with
//             Prompts::best_only (only that mask token is upscaled); ORT: the best-mask graph.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { openSession, tensor, samPrompt, median } from './lib.mjs';
import { option } from '../shared/util.mjs';

const bin = option('splitseg'), model = option('model'), dir = option('onnx-dir');
const threads = Number(option('threads', 2)), rounds = Number(option('rounds', 3));
const clicks = Number(option('clicks', 30));
// splitseg's --precision: f32 compares like with like; bf16 is splitseg's fast path (ORT stays f32).
const precision = option('precision', 'f32');

// splitseg bench's synthetic picture (src/cli/cmd_bench.cpp), normalised as SAM preprocesses
// (SAM 2.1: on [0, 1] with ImageNet's mean and std; at 1024x1024 neither resizes).
function syntheticInput(sam2, size = 1024) {
    const [mean, std] = sam2 ? [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]
                             : [[123.675, 116.28, 103.53], [58.395, 57.12, 57.375]];
    const unit = sam2 ? 255 : 1;
    const x = new Float32Array(3 * size * size), plane = size * size;
    for (let y = 0; y < size; ++y)
        for (let i = 0; i < size; ++i) {
            const p = [Math.trunc((i * 255) / size), Math.trunc((y * 255) / size),
                       Math.trunc(127 + 120 * Math.sin(i * 0.02) * Math.cos(y * 0.03))];
            for (let c = 0; c < 3; ++c)
                x[c * plane + y * size + i] = (p[c] / unit - mean[c]) / std[c];
        }
    return tensor(x, [1, 3, size, size]);
}

async function timeRuns(n, f) {
    const ms = [];
    for (let i = 0; i < n; ++i) {
        const t0 = process.hrtime.bigint();
        await f();
        ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    return ms;
}

const encoder = await openSession(path.join(dir, 'encoder.onnx'), threads);
const multimask = await openSession(path.join(dir, 'decoder-multimask.onnx'), threads);
const best = await openSession(path.join(dir, 'decoder-best.onnx'), threads);
// SAM 2.1: the encoder graph also gives the decoder graphs' high-resolution features.
const sam2 = encoder.outputNames.includes('high_res_feats_0');
const image = syntheticInput(sam2);
const encoded = await encoder.run({ image });  // also the encoder's warm-up
const feeds = {
    ...encoded,
    ...samPrompt([[512, 512]], [1], null, sam2),
    mask_input: tensor(new Float32Array(256 * 256), [1, 1, 256, 256]),
    has_mask_input: tensor(Float32Array.of(0), [1]),
};
const check = await multimask.run(feeds);
if (check.masks.dims.join('x') !== '1x3x1024x1024') throw new Error('unexpected masks shape');

const ours = { encode: [], click: [], low_res: [], best: [], rss: [] }, ort = { encode: [], click: [], best: [] };
for (let r = 0; r < rounds; ++r) {
    const out = execFileSync(bin, ['bench', '--model', model, '--threads', String(threads), '--runs', '3',
                                   '--clicks', String(clicks), '--precision', precision, '--json'],
                             { encoding: 'utf8' });
    const j = JSON.parse(out.trim().split('\n').pop());
    ours.encode.push(j.encode_ms);
    ours.click.push(j.decode_ms);
    ours.low_res.push(j.decode_low_res_ms);
    ours.best.push(j.decode_best_ms);
    ours.rss.push(j.peak_rss_mib);
    if (r === 0) console.log(`splitseg: ${j.model}, ${j.threads} threads, ${j.precision}`);

    ort.encode.push(...(await timeRuns(1, () => encoder.run({ image }))));
    await timeRuns(3, () => multimask.run(feeds));
    ort.click.push(median(await timeRuns(clicks, () => multimask.run(feeds))));
    await timeRuns(3, () => best.run(feeds));
    ort.best.push(median(await timeRuns(clicks, () => best.run(feeds))));
    console.log(`round ${r + 1}/${rounds}: encode ${ours.encode.at(-1).toFixed(0)} vs ` +
                `${ort.encode.at(-1).toFixed(0)} ms, click ${ours.click.at(-1).toFixed(2)} vs ` +
                `${ort.click.at(-1).toFixed(2)} ms`);
}

const fmt = (v) => (v === null ? '—' : v.toFixed(v < 100 ? 2 : 0));
const row = (what, a, b) => {
    const ma = a && median(a), mb = b && median(b);
    const ratio = a && b ? `${(mb / ma).toFixed(2)}x` : '—';
    console.log(`| ${what} | ${fmt(ma)} | ${fmt(mb)} | ${ratio} |`);
};
console.log(`\nmedians of ${rounds} alternating rounds, ${threads} threads (clicks: median of ` +
            `${clicks} per round, then across rounds); ratio = ONNX Runtime / splitseg`);
console.log('| work | splitseg ms | ONNX Runtime ms | ratio |\n| --- | --- | --- | --- |');
row('image encoder, 1024x1024', ours.encode, ort.encode);
row('one click, 3 masks at 1024x1024', ours.click, ort.click);
row('one click, 3 masks, low-res logits only', ours.low_res, null);
row('one click, best mask only at 1024x1024', ours.best, ort.best);
console.log(`splitseg peak RSS ${Math.max(...ours.rss).toFixed(0)} MiB; ` +
            `ONNX Runtime process RSS ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`);
