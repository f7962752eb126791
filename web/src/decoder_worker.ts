// The Web Worker that runs the engine's decoder built to WebAssembly (src/wasm), so clicks never
// wait on the page's main thread. The module and its JS API are fetched from the server's /wasm/
// folder (copied into the build by scripts/copy-wasm.mjs), not bundled: they come from the C++
// build, not from npm.
interface DecoderApi {
  loadDecoder(weights: Uint8Array): unknown;
  loadBundle(bundle: Uint8Array): { width: number; height: number; model: string };
  decode(request: {
    points: number[][];
    box: number[] | null;
    multimask: boolean;
    maskInput?: Float32Array;
  }): {
    masks: { width: number; height: number; data: Uint8Array }[];
    scores: ArrayLike<number>;
    lowResLogits: Float32Array;
    latencyMs: number;
  };
  dispose(): void;
  setThreads(n: number): number;
}

let api: DecoderApi | null = null;

// The threaded module (splitseg_decoder_mt: shared memory, so only in a cross-origin isolated
// page) when there are cores to use, else, or when it fails to start, the single-threaded one.
async function openModule(base: string): Promise<{ api: DecoderApi; threads: number }> {
  const cores = Math.min(4, navigator.hardwareConcurrency || 1);
  const { SplitsegDecoder } = await import(/* @vite-ignore */ `${base}splitseg_decoder_api.mjs`);
  if (self.crossOriginIsolated && cores > 1) {
    try {
      const factory = (await import(/* @vite-ignore */ `${base}splitseg_decoder_mt.js`)).default;
      const mt = (await SplitsegDecoder.create(factory)) as DecoderApi;
      return { api: mt, threads: mt.setThreads(cores) };
    } catch (e) {
      console.warn(`splitseg: threaded decoder unavailable (${(e as Error)?.message ?? e}); one thread`);
    }
  }
  const factory = (await import(/* @vite-ignore */ `${base}splitseg_decoder.js`)).default;
  return { api: (await SplitsegDecoder.create(factory)) as DecoderApi, threads: 1 };
}

async function init(base: string, weights: ArrayBuffer): Promise<Record<string, unknown>> {
  const opened = await openModule(base);
  api = opened.api;
  api.loadDecoder(new Uint8Array(weights));
  // Built with -msimd128: the module only instantiates where SIMD runs.
  const isolated = self.crossOriginIsolated ? 'cross-origin isolated' : 'not isolated';
  const threads = opened.threads === 1 ? '1 thread' : `${opened.threads} threads`;
  return { detail: `Web Worker, wasm SIMD, ${threads}, ${isolated}`, threads: opened.threads };
}

function handle(m: any): { reply: Record<string, unknown>; transfer: Transferable[] } | Promise<any> {
  if (m.op === 'init') return init(m.base, m.weights).then((reply) => ({ reply, transfer: [] }));
  if (!api) throw new Error('the decoder is not loaded');
  if (m.op === 'bundle') return { reply: api.loadBundle(new Uint8Array(m.bundle)), transfer: [] };
  if (m.op === 'decode') {
    const out = api.decode({
      points: m.points,
      box: m.box,
      multimask: m.multimask,
      ...(m.maskInput ? { maskInput: m.maskInput } : {}),
    });
    // Copies out of the WASM heap, then moved (not copied again) to the page.
    const masks = out.masks.map((k) => ({ width: k.width, height: k.height, data: k.data.slice() }));
    const lowResLogits = out.lowResLogits.slice();
    return {
      reply: { masks, scores: Array.from(out.scores), lowResLogits, latencyMs: out.latencyMs },
      transfer: [...masks.map((k) => k.data.buffer), lowResLogits.buffer],
    };
  }
  throw new Error(`unknown op ${m.op}`);
}

self.onmessage = async (ev: MessageEvent) => {
  const { id } = ev.data;
  try {
    const { reply, transfer } = await handle(ev.data);
    (self as unknown as Worker).postMessage({ ...reply, id, ok: true }, transfer);
  } catch (e) {
    (self as unknown as Worker).postMessage({ id, ok: false, error: String((e as Error)?.message ?? e) });
  }
};
