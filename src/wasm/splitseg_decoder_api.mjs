// The WASM prompt decoder's JavaScript API: a thin wrapper over the C functions of
// src/wasm/splitseg_decoder.cpp. Usage (browser, worker or node):
//   import createSplitsegDecoder from './splitseg_decoder.js';
//   import { SplitsegDecoder } from './splitseg_decoder_api.mjs';
//   const api = await SplitsegDecoder.create(createSplitsegDecoder);
//   api.loadDecoder(decoderBytes);             // splitseg models extract-decoder output
//   const { width, height, model } = api.loadBundle(bundleBytes);
//   const r = api.decode({ points: [[x, y, 1]], box: null, multimask: true });
// Every call is synchronous and runs on the calling thread (use a Web Worker in a page).
// Failures throw an Error carrying the engine's message.

const MASK_SIDE = 256;  // low-res logits and mask_input are MASK_SIDE x MASK_SIDE

export class SplitsegDecoder {
    // moduleFactory: the default export of splitseg_decoder.js (createSplitsegDecoder);
    // moduleArgs go to it (e.g. { locateFile } when the .wasm is served from elsewhere).
    static async create(moduleFactory, moduleArgs = {}) {
        return new SplitsegDecoder(await moduleFactory(moduleArgs));
    }

    constructor(module) {
        this.module = module;
        this.width = 0;
        this.height = 0;
        this.threads = 1;
    }

    // Threads for the decoder's matrix products: the threaded module (splitseg_decoder_mt.js,
    // in a cross-origin isolated page) takes up to 4, the single-threaded one stays at 1.
    // Returns the count now in use.
    setThreads(n) {
        this.threads = this.module._ssd_set_threads(n);
        return this.threads;
    }

    // The compact decoder weights file (safetensors, f16 or f32).
    loadDecoder(u8) {
        this.#withCopies([u8], ([p]) => this.#check(this.module._ssd_load_decoder(p, u8.length)));
    }

    // An embedding bundle (GET /api/v1/images/{id}/bundle) -> { width, height, model }.
    loadBundle(u8) {
        const m = this.module;
        this.#withCopies([u8], ([p]) => this.#check(m._ssd_load_bundle(p, u8.length)));
        this.width = m._ssd_image_width();
        this.height = m._ssd_image_height();
        return { width: this.width, height: this.height, model: m.UTF8ToString(m._ssd_image_family()) };
    }

    // points: [[x, y, label], ...] in original-image pixels (label 1 fg, 0 bg); box:
    // [x0, y0, x1, y1] or null; maskInput: 256x256 low-res logits of an earlier decode.
    // -> { masks: [{ width, height, data }], scores, lowResLogits (count x 256 x 256), latencyMs }
    decode({ points = [], box = null, multimask = false, maskInput = null } = {}) {
        const m = this.module;
        if (maskInput && maskInput.length !== MASK_SIDE * MASK_SIDE)
            throw new Error(`splitseg decoder: maskInput must hold ${MASK_SIDE}x${MASK_SIDE} logits`);
        const inputs = [new Uint8Array(new Float32Array(points.flat()).buffer)];
        if (box) inputs.push(new Uint8Array(new Float32Array(box).buffer));
        if (maskInput) inputs.push(new Uint8Array(maskInput.buffer, maskInput.byteOffset, maskInput.byteLength));
        let count = 0, latencyMs = 0;
        this.#withCopies(inputs, (ptrs) => {
            const start = performance.now();
            count = this.#check(m._ssd_decode(ptrs[0], points.length, box ? ptrs[1] : 0, multimask ? 1 : 0,
                                              maskInput ? ptrs[box ? 2 : 1] : 0));
            latencyMs = performance.now() - start;
        });
        const { width, height } = this, plane = width * height;
        const maskPtr = m._ssd_masks();
        const masks = [];
        for (let i = 0; i < count; ++i)
            masks.push({ width, height, data: m.HEAPU8.slice(maskPtr + i * plane, maskPtr + (i + 1) * plane) });
        const scores = m.HEAPF32.slice(m._ssd_scores() >> 2, (m._ssd_scores() >> 2) + count);
        const low = m._ssd_low_res_logits() >> 2;
        const lowResLogits = m.HEAPF32.slice(low, low + count * MASK_SIDE * MASK_SIDE);
        return { masks, scores, lowResLogits, latencyMs };
    }

    // Frees the decoder, the image and the last outputs (the module itself stays loaded).
    dispose() {
        this.module._ssd_dispose();
        this.width = this.height = 0;
    }

    #check(rc) {
        if (rc < 0) throw new Error('splitseg decoder: ' + this.module.UTF8ToString(this.module._ssd_last_error()));
        return rc;
    }

    // Copies each byte array into the module's heap, calls fn with the pointers, frees them.
    #withCopies(arrays, fn) {
        const m = this.module;
        const ptrs = arrays.map((a) => m._malloc(Math.max(1, a.length)));
        try {
            // HEAPU8 is read after every malloc: growing the memory replaces it.
            arrays.forEach((a, i) => m.HEAPU8.set(a, ptrs[i]));
            return fn(ptrs);
        } finally {
            ptrs.forEach((p) => m._free(p));
        }
    }
}

export default SplitsegDecoder;
