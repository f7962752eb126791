// One benchmark configuration in a Web Worker (as the web client decodes): splitseg's WASM decoder
// and onnxruntime-web's WASM backend on the same decoder weights, embedding and click, in
// alternating rounds. Posts { ok, result } back; bench.mjs prints it.
import * as ort from '/ort/ort.wasm.min.mjs';
import { SplitsegDecoder } from '/api/splitseg_decoder_api.mjs';
import { maskIou } from '/shared/util.mjs';

async function bytes(url) {
    const r = await fetch(url);
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return new Uint8Array(await r.arrayBuffer());
}

// A safetensors file's header and one F32 tensor of it (a copy, aligned for the view).
function safetensorsF32(u8, name) {
    const n = Number(new DataView(u8.buffer, u8.byteOffset).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(u8.subarray(8, 8 + n)));
    const info = header[name];
    if (!info || info.dtype !== 'F32') throw new Error(`bundle: ${name} is not an F32 tensor`);
    const [a, b] = info.data_offsets;
    return { meta: header.__metadata__, shape: info.shape,
             data: new Float32Array(u8.slice(8 + n + a, 8 + n + b).buffer) };
}

const median = (v) => {
    const s = [...v].sort((a, b) => a - b), n = s.length;
    return n % 2 ? s[(n - 1) / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
};

async function timed(n, f) {
    const ms = [];
    for (let i = 0; i < n; ++i) {
        const t0 = performance.now();
        await f();
        ms.push(performance.now() - t0);
    }
    return ms;
}

async function run({ threads, rounds, clicks, warmup, oursBase, baselineBase, point }) {
    const [decoderBytes, bundleBytes, graph] = await Promise.all(
        ['/data/decoder.safetensors', '/data/bundle.safetensors', '/data/decoder-multimask.onnx'].map(bytes));

    // splitseg: the module built in build-wasm, its JS API; at more than one thread the threaded
    // build (splitseg_decoder_mt), with the single-threaded one timed beside it as the baseline.
    const open = async (file, n) => {
        const api = await SplitsegDecoder.create((await import(file)).default);
        if (n !== 1 && api.setThreads(n) !== n) throw new Error(`${file}: ${api.threads} threads, not ${n}`);
        api.loadDecoder(decoderBytes);
        return api;
    };
    const ours = await open(`${oursBase}${threads > 1 ? 'splitseg_decoder_mt.js' : 'splitseg_decoder.js'}`, threads);
    let t0 = performance.now();
    const { width, height, model } = ours.loadBundle(bundleBytes);
    const prepareMs = performance.now() - t0;  // parse + the once-per-image prepare()
    if (model === 'sam2.1') throw new Error('this benchmark feeds SAM / MobileSAM graphs only');
    // The baseline: another build's single-threaded module (--baseline-wasm), or at more than
    // one thread this build's.
    const baselineFile = baselineBase ? `${baselineBase}splitseg_decoder.js`
                                      : threads > 1 ? `${oursBase}splitseg_decoder.js` : null;
    const baseline = baselineFile && await open(baselineFile, 1);
    baseline?.loadBundle(bundleBytes);

    // onnxruntime-web: the WASM backend (SIMD; threads when numThreads > 1 and isolated).
    ort.env.wasm.numThreads = threads;
    ort.env.wasm.wasmPaths = '/ort/';
    const session = await ort.InferenceSession.create(graph, {
        executionProviders: ['wasm'], graphOptimizationLevel: 'all', executionMode: 'sequential' });

    // The same click: ours in original pixels, ORT's in the model frame (the resized image), as
    // SamOnnxModel takes them: the point, then a padding point (label -1) since there is no box.
    const emb = safetensorsF32(bundleBytes, 'image_embeddings');
    const sx = Number(emb.meta.resized_w) / width, sy = Number(emb.meta.resized_h) / height;
    const [px, py] = point ?? [width / 2, height / 2];
    const click = { points: [[px, py, 1]], multimask: true };
    const feeds = () => ({
        image_embeddings: new ort.Tensor('float32', emb.data, [1, 256, 64, 64]),
        point_coords: new ort.Tensor('float32', Float32Array.of(px * sx, py * sy, 0, 0), [1, 2, 2]),
        point_labels: new ort.Tensor('float32', Float32Array.of(1, -1), [1, 2]),
        mask_input: new ort.Tensor('float32', new Float32Array(256 * 256), [1, 1, 256, 256]),
        has_mask_input: new ort.Tensor('float32', Float32Array.of(0), [1]),
    });

    // Both compute the same masks: 3 candidates at the original size, same order.
    const a = ours.decode(click), b = await session.run(feeds());
    const dims = b.masks.dims.join('x');
    if (dims !== `1x3x${height}x${width}`)
        throw new Error(`ORT masks ${dims}, expected 1x3x${height}x${width} (export --orig-size ${height}x${width})`);
    const plane = width * height;
    const ious = a.masks.map((m, i) => maskIou(m.data, b.masks.data.subarray(i * plane, (i + 1) * plane)));
    // The threaded module computes each value as the single-threaded one does.
    const same = baseline && baseline.decode(click).masks.every((m, i) => m.data.every((v, j) => v === a.masks[i].data[j]));

    // Series: ours (a click on a prepared image), first (loadBundle + that click: the image-side
    // work redone as ORT's graph does, plus parsing the bundle), ort.
    const series = {
        ours: () => ours.decode(click),
        ...(baseline ? { baseline: () => baseline.decode(click) } : {}),
        first: () => {
            ours.loadBundle(bundleBytes);
            return ours.decode(click);
        },
        ort: () => session.run(feeds()),
    };
    const per = Object.fromEntries(Object.keys(series).map((k) => [k, []]));
    const all = Object.fromEntries(Object.keys(series).map((k) => [k, []]));
    for (let r = 0; r < rounds; ++r)
        for (const [name, f] of Object.entries(series)) {
            await timed(warmup, f);
            const ms = await timed(clicks, f);
            per[name].push(median(ms));
            all[name].push(...ms);
        }
    ours.dispose();
    baseline?.dispose();
    await session.release();
    return { model, width, height, threads, crossOriginIsolated: self.crossOriginIsolated,
             ours: `${ours.threads > 1 ? 'splitseg_decoder_mt' : 'splitseg_decoder'}, ${ours.threads} thread(s)`,
             baseline: baselineFile, baselineSameMasks: same,
             prepareMs, ious: ious.map((v) => Number(v.toFixed(6))),
             rounds: per, median: Object.fromEntries(Object.entries(per).map(([k, v]) => [k, median(v)])),
             min: Object.fromEntries(Object.entries(all).map(([k, v]) => [k, Math.min(...v)])) };
}

self.onmessage = async (e) => {
    try {
        self.postMessage({ ok: true, result: await run(e.data) });
    } catch (err) {
        self.postMessage({ ok: false, error: String(err?.stack ?? err) });
    }
};
