// Shared by parity.mjs and bench.mjs: safetensors reading, ONNX Runtime sessions, SAM's inputs.
import fs from 'node:fs';
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
