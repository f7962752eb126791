// Shared by parity.mjs and bench.mjs: safetensors reading, ONNX Runtime sessions, SAM's inputs.
import fs from 'node:fs';
import zlib from 'node:zlib';
import ort from 'onnxruntime-node';

// safetensors: 8-byte little-endian header length, JSON header, raw little-endian data.
export function readSafetensors(path) {
    const buf = fs.readFileSync(path);
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
    const base = 8 + n;
    const out = new Map();
    for (const [name, info] of Object.entries(header)) {
        if (name === '__metadata__') continue;
        const [a, b] = info.data_offsets;
        const bytes = buf.subarray(base + a, base + b);
        const copy = new Uint8Array(bytes);  // aligned for the typed-array views
        let data;
        if (info.dtype === 'F32') data = new Float32Array(copy.buffer);
        else if (info.dtype === 'U8') data = copy;
        else throw new Error(`${path}: ${name} has dtype ${info.dtype}, not read here`);
        out.set(name, { shape: info.shape, data });
    }
    return out;
}

// The peer's settings: the thread count of the splitseg run, one inter-op thread, every graph
// optimisation.
export async function openSession(path, threads) {
    return ort.InferenceSession.create(path, {
        executionProviders: ['cpu'],
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        graphOptimizationLevel: 'all',
        executionMode: 'sequential',
    });
}

export const tensor = (data, dims) => new ort.Tensor(data instanceof Uint8Array ? 'bool' : 'float32', data, dims);

// SAM preprocessing of an already resized HxWx3 uint8 image: normalise, pad to 1024 (zeros).
export function samInput(rgb, h, w, size = 1024) {
    const mean = [123.675, 116.28, 103.53], std = [58.395, 57.12, 57.375];
    const x = new Float32Array(3 * size * size);
    for (let c = 0; c < 3; ++c)
        for (let y = 0; y < h; ++y)
            for (let i = 0; i < w; ++i)
                x[(c * size + y) * size + i] = (rgb[(y * w + i) * 3 + c] - mean[c]) / std[c];
    return tensor(x, [1, 3, size, size]);
}

// An 8-bit RGB, non-interlaced PNG (the golden images) -> { w, h, rgb: HxWx3 uint8 }.
export function readPng(file) {
    const buf = fs.readFileSync(file);
    const w = buf.readUInt32BE(16), h = buf.readUInt32BE(20);
    if (buf[24] !== 8 || buf[25] !== 2 || buf[28] !== 0)
        throw new Error(`${file}: only 8-bit RGB non-interlaced PNGs are read here`);
    const idat = [];
    for (let at = 8; at < buf.length;) {
        const n = buf.readUInt32BE(at), type = buf.toString('latin1', at + 4, at + 8);
        if (type === 'IDAT') idat.push(buf.subarray(at + 8, at + 8 + n));
        at += 12 + n;
    }
    const raw = zlib.inflateSync(Buffer.concat(idat)), stride = w * 3;
    const rgb = new Uint8Array(h * stride);
    for (let y = 0; y < h; ++y) {  // undo each row's filter (bytes per pixel: 3)
        const filter = raw[y * (stride + 1)], src = raw.subarray(y * (stride + 1) + 1);
        const row = rgb.subarray(y * stride, (y + 1) * stride);
        const up = y ? rgb.subarray((y - 1) * stride) : null;
        for (let i = 0; i < stride; ++i) {
            const a = i >= 3 ? row[i - 3] : 0, b = up ? up[i] : 0, c = up && i >= 3 ? up[i - 3] : 0;
            const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
            const paeth = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
            row[i] = src[i] + [0, a, b, (a + b) >> 1, paeth][filter];
        }
    }
    return { w, h, rgb };
}

// Taps of PyTorch's antialiased bilinear resize (float), as src/runtime/preprocess.cpp's
// triangle_taps<float>: for output i, inputs [first, first + count) with their weights.
function triangleTaps(n, out) {
    const f = Math.fround, scale = f(n / out), support = scale >= 1 ? scale : 1;
    const inv = f(1 / support);
    const taps = [];
    for (let i = 0; i < out; ++i) {
        const center = f(scale * (i + 0.5));
        const lo = Math.max(Math.trunc(f(center - support) + 0.5), 0);
        const hi = Math.min(Math.trunc(f(center + support) + 0.5), n);
        const weights = [];
        let total = 0;
        for (let j = lo; j < hi; ++j) {
            const t = Math.abs(f((f(j - center) + 0.5) * inv));
            weights.push(t < 1 ? f(1 - t) : 0);
            total = f(total + weights.at(-1));
        }
        taps.push({ first: lo, weights: weights.map((v) => (total ? f(v / total) : v)) });
    }
    return taps;
}

// One pass of the resize along a dimension of n values, `step` apart, in `lines` lines whose
// first values are `lineStep` apart: [lines, n] -> [lines, out] (strided the same way).
function resizePass(src, lines, n, out, step, lineStep, outStep, outLineStep) {
    const dst = new Float32Array(lines * out), taps = triangleTaps(n, out);
    for (let l = 0; l < lines; ++l)
        for (let i = 0; i < out; ++i) {
            const { first, weights } = taps[i];
            let acc = 0;
            for (let j = 0; j < weights.length; ++j)
                acc = Math.fround(acc + Math.fround(src[l * lineStep + (first + j) * step] *
                                                    weights[j]));
            dst[l * outLineStep + i * outStep] = acc;
        }
    return dst;
}

// SAM 2.1 preprocessing of an HxWx3 uint8 image (src/runtime/preprocess.cpp preprocess_sam2):
// [0, 1], antialiased bilinear resize to size x size (aspect ratio not kept), ImageNet mean/std.
export function sam2Input(rgb, h, w, size = 1024) {
    const f = Math.fround, mean = [0.485, 0.456, 0.406].map(f), std = [0.229, 0.224, 0.225].map(f);
    const x = new Float32Array(3 * size * size);
    for (let c = 0; c < 3; ++c) {
        let plane = new Float32Array(h * w);
        for (let i = 0; i < h * w; ++i) plane[i] = f(rgb[i * 3 + c] / 255);
        if (w !== size) plane = resizePass(plane, h, w, size, 1, w, 1, size);  // rows
        if (h !== size) plane = resizePass(plane, size, h, size, size, 1, size, 1);  // columns
        for (let i = 0; i < size * size; ++i)
            x[c * size * size + i] = f(f(plane[i] - mean[c]) / std[c]);
    }
    return tensor(x, [1, 3, size, size]);
}

// The decoder's prompt in SamOnnxModel's form, from points and a box in model-frame pixels, in
// the order the reference's prompt encoder sees them. SAM: the points, then the box's corners
// (labels 2, 3), or a padding point (label -1) when there is no box. SAM 2.1's predictor: the
// box's corners first, then the points, then always a padding point.
export function samPrompt(points, labels, box, sam2 = false) {
    const coords = [], labs = [];
    const addBox = () => {
        if (!box) return;
        coords.push(box[0], box[1], box[2], box[3]);
        labs.push(2, 3);
    };
    if (sam2) addBox();
    coords.push(...points.flat());
    labs.push(...labels);
    if (sam2 || !box) {
        coords.push(0, 0);
        labs.push(-1);
    }
    if (!sam2) addBox();
    return {
        point_coords: tensor(Float32Array.from(coords), [1, labs.length, 2]),
        point_labels: tensor(Float32Array.from(labs), [1, labs.length]),
    };
}

export function median(v) {
    const s = [...v].sort((a, b) => a - b), n = s.length;
    return n % 2 ? s[(n - 1) / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}
