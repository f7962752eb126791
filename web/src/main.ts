// The page: open an image, wait for its embedding, then click to segment. Owns the prompt steps
// (for undo), the pointer handling (throttled to animation frames) and the status line.
import { Api, type ImageStatus } from './api';
import { BundleCache } from './bundle_cache';
import { ServerDecoder, WasmRuntime, type Box, type DecodeResult, type Decoder, type Prompts } from './decoder';
import { cocoJson, cutoutPng, drawPrompts, drawView, maskLayer, maskPng, type View } from './render';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const ui = {
  file: $<HTMLInputElement>('file'),
  recent: $<HTMLSelectElement>('recent'),
  undo: $<HTMLButtonElement>('undo'),
  reset: $<HTMLButtonElement>('reset'),
  exportMask: $<HTMLButtonElement>('export-mask'),
  exportCutout: $<HTMLButtonElement>('export-cutout'),
  exportCoco: $<HTMLButtonElement>('export-coco'),
  progress: $<HTMLDivElement>('progress'),
  progressBar: $<HTMLDivElement>('progress-bar'),
  progressText: $<HTMLSpanElement>('progress-text'),
  stage: $<HTMLElement>('stage'),
  hint: $<HTMLParagraphElement>('hint'),
  canvas: $<HTMLCanvasElement>('canvas'),
  candidates: $<HTMLElement>('candidates'),
  status: $<HTMLElement>('status'),
  apiKey: $<HTMLInputElement>('api-key'),
  quota: $<HTMLInputElement>('quota'),
  preload: $<HTMLInputElement>('preload'),
  preloadGo: $<HTMLButtonElement>('preload-go'),
  forceServer: $<HTMLInputElement>('force-server'),
  cacheInfo: $<HTMLSpanElement>('cache-info'),
};
const ctx = ui.canvas.getContext('2d')!;

interface Step {
  prompts: Prompts;
  result: DecodeResult;
  selected: number;
}

interface OpenImage {
  id: string;
  name: string;
  bitmap: ImageBitmap;
  decoder: Decoder;
  bundleSource: 'network' | 'IndexedDB';
  bundleBytes: number;
}

const state = {
  api: new Api(localStorage.getItem('splitseg.apiKey') ?? ''),
  cache: null as BundleCache | null,
  wasm: null as Promise<WasmRuntime> | null,
  wasmError: '',
  image: null as OpenImage | null,
  steps: [] as Step[],
  preview: null as { prompts: Prompts; result: DecodeResult | null } | null,
  view: 'overlay' as View,
  layer: null as HTMLCanvasElement | null, // the shown mask, drawn once per change
  last: null as DecodeResult | null,
  chain: Promise.resolve() as Promise<unknown>, // committed decodes, in order
  error: '',
};

// ---- status and progress -------------------------------------------------------------------

function setStatus(): void {
  const img = state.image;
  const parts = [`decoder: ${img ? `${img.decoder.where} (${img.decoder.detail})` : state.wasmError ? `server (WASM unavailable: ${state.wasmError})` : '—'}`];
  if (state.last) parts.push(`last ${state.last.roundTripMs.toFixed(1)} ms (decoder ${state.last.decoderMs.toFixed(1)} ms)`);
  if (img) parts.push(`bundle: ${img.bundleSource}, ${(img.bundleBytes / 1048576).toFixed(2)} MB`);
  if (state.error) parts.push(`error: ${state.error}`);
  ui.status.textContent = parts.join(' · ');
  ui.status.dataset.where = img?.decoder.where ?? '';
  ui.status.dataset.latencyMs = state.last ? String(state.last.roundTripMs) : '';
  ui.status.dataset.bundleSource = img?.bundleSource ?? '';
  ui.undo.disabled = state.steps.length === 0;
  ui.reset.disabled = state.steps.length === 0;
  for (const b of [ui.exportMask, ui.exportCutout, ui.exportCoco]) b.disabled = !currentMask();
}

function showProgress(text: string, fraction: number | null): void {
  ui.progress.hidden = false;
  ui.progressText.textContent = text;
  ui.progressBar.style.width = `${Math.round((fraction ?? 0) * 100)}%`;
}

function fail(e: unknown): void {
  state.error = String((e as Error)?.message ?? e);
  console.error(e);
  ui.progress.hidden = true;
  setStatus();
}

// ---- drawing -------------------------------------------------------------------------------

function currentMask() {
  const top = state.steps[state.steps.length - 1];
  return top ? top.result.masks[top.selected] : null;
}

let frameQueued = false;
function requestDraw(): void {
  if (frameQueued) return;
  frameQueued = true;
  requestAnimationFrame(() => {
    frameQueued = false;
    draw();
  });
}

function draw(): void {
  const img = state.image;
  if (!img) return;
  const preview = state.preview?.result;
  const layer = preview ? maskLayer(preview.masks[preview.best]) : state.layer;
  drawView(ctx, img.bitmap, layer, state.view);
  const prompts = state.preview?.prompts ?? state.steps[state.steps.length - 1]?.prompts;
  if (prompts) drawPrompts(ctx, prompts.points, prompts.box);
  ui.canvas.dataset.maskArea = String(preview ? preview.masks[preview.best].area : currentMask()?.area ?? 0);
}

function showStep(): void {
  const mask = currentMask();
  state.layer = mask ? maskLayer(mask) : null;
  ui.candidates.replaceChildren();
  const top = state.steps[state.steps.length - 1];
  if (top && top.result.masks.length > 1) {
    top.result.masks.forEach((m, i) => {
      const b = document.createElement('button');
      b.textContent = `mask ${i + 1} · score ${m.score.toFixed(3)} · ${m.area} px`;
      b.className = i === top.selected ? 'selected' : '';
      b.dataset.index = String(i);
      b.onclick = () => {
        top.selected = i;
        showStep();
      };
      ui.candidates.append(b);
    });
  }
  setStatus();
  requestDraw();
}

// ---- decoding ------------------------------------------------------------------------------

function topPrompts(): Prompts | null {
  return state.steps[state.steps.length - 1]?.prompts ?? null;
}

// A new step: queued behind earlier ones, so none is lost or reordered.
function commit(next: Prompts): void {
  const img = state.image;
  if (!img) return;
  state.chain = state.chain
    .then(async () => {
      const result = await img.decoder.decode(topPrompts(), next, true);
      if (!result || state.image !== img) return;
      state.last = result;
      state.preview = null;
      state.error = '';
      state.steps.push({ prompts: next, result, selected: result.best });
      showStep();
    })
    .catch(fail);
}

// Box previews while dragging: at most one decode in flight, the latest box wins.
let previewBusy = false;
let previewWanted: Prompts | null = null;
function preview(next: Prompts): void {
  state.preview = { prompts: next, result: state.preview?.result ?? null };
  requestDraw();
  previewWanted = next;
  if (previewBusy || !state.image) return;
  previewBusy = true;
  requestAnimationFrame(async () => {
    const img = state.image!;
    try {
      while (previewWanted && state.preview) {
        const want = previewWanted;
        previewWanted = null;
        const result = await img.decoder.decode(topPrompts(), want, false);
        if (state.preview && result) {
          state.preview.result = result;
          state.last = result;
          setStatus();
          requestDraw();
        }
      }
    } catch (e) {
      fail(e);
    } finally {
      previewBusy = false;
    }
  });
}

// ---- pointer -------------------------------------------------------------------------------

function imageXY(ev: PointerEvent): [number, number] {
  const r = ui.canvas.getBoundingClientRect();
  const x = ((ev.clientX - r.left) / r.width) * ui.canvas.width;
  const y = ((ev.clientY - r.top) / r.height) * ui.canvas.height;
  return [Math.min(Math.max(x, 0), ui.canvas.width), Math.min(Math.max(y, 0), ui.canvas.height)];
}

let press: { x: number; y: number; button: number; dragging: boolean; screen: [number, number] } | null = null;

ui.canvas.addEventListener('contextmenu', (ev) => ev.preventDefault());
ui.canvas.addEventListener('pointerdown', (ev) => {
  if (!state.image || (ev.button !== 0 && ev.button !== 2)) return;
  const [x, y] = imageXY(ev);
  press = { x, y, button: ev.button, dragging: false, screen: [ev.clientX, ev.clientY] };
  ui.canvas.setPointerCapture(ev.pointerId);
});
ui.canvas.addEventListener('pointermove', (ev) => {
  if (!press || press.button !== 0) return;
  if (!press.dragging && Math.hypot(ev.clientX - press.screen[0], ev.clientY - press.screen[1]) < 5) return;
  press.dragging = true;
  preview({ points: topPrompts()?.points ?? [], box: boxFrom(press, imageXY(ev)) });
});
ui.canvas.addEventListener('pointerup', (ev) => {
  if (!press) return;
  const p = press;
  press = null;
  const prev = topPrompts() ?? { points: [], box: null };
  if (p.dragging) {
    commit({ points: prev.points, box: boxFrom(p, imageXY(ev)) });
  } else {
    commit({ points: [...prev.points, [p.x, p.y, p.button === 0 ? 1 : 0]], box: prev.box });
  }
});

function boxFrom(p: { x: number; y: number }, [x, y]: [number, number]): Box {
  return [Math.min(p.x, x), Math.min(p.y, y), Math.max(p.x, x), Math.max(p.y, y)];
}

// ---- undo, reset, views, exports ------------------------------------------------------------

ui.undo.onclick = () => {
  const img = state.image;
  if (!img || !state.steps.length) return;
  state.chain = state.chain.then(async () => {
    await img.decoder.undo();
    state.steps.pop();
    showStep();
  }).catch(fail);
};
ui.reset.onclick = () => {
  const img = state.image;
  if (!img) return;
  state.chain = state.chain.then(async () => {
    await img.decoder.reset();
    state.steps = [];
    showStep();
  }).catch(fail);
};
for (const radio of document.querySelectorAll<HTMLInputElement>('input[name=view]')) {
  radio.onchange = () => {
    state.view = radio.value as View;
    requestDraw();
  };
}

function download(blob: Blob, name: string): void {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}
const stem = () => (state.image?.name ?? 'image').replace(/\.[^.]*$/, '');
ui.exportMask.onclick = async () => download(await maskPng(currentMask()!), `${stem()}-mask.png`);
ui.exportCutout.onclick = async () => download(await cutoutPng(state.image!.bitmap, currentMask()!), `${stem()}-cutout.png`);
ui.exportCoco.onclick = () => {
  const img = state.image!;
  download(new Blob([cocoJson(img.name, img.id, currentMask()!)], { type: 'application/json' }), `${stem()}-coco.json`);
};

// ---- opening images ------------------------------------------------------------------------

async function waitForEncode(id: string): Promise<void> {
  const estimate = Number(localStorage.getItem('splitseg.encodeMs') ?? 0);
  let started = 0;
  await state.api.waitEncoded(id, (s: ImageStatus) => {
    if (s.status === 'processing' && !started) started = performance.now();
    const elapsed = started ? performance.now() - started : 0;
    const fraction = s.status === 'completed' ? 1 : started && estimate ? Math.min(0.95, elapsed / estimate) : null;
    const eta = estimate ? ` of about ${(estimate / 1000).toFixed(1)} s` : '';
    showProgress(s.status === 'processing' ? `encoding… ${(elapsed / 1000).toFixed(1)} s${eta}` : `encode ${s.status}`, fraction);
  });
  if (started) localStorage.setItem('splitseg.encodeMs', String(performance.now() - started));
}

// The bundle from IndexedDB when this browser has it for the server's current model, else
// downloaded once and kept.
async function bundleFor(status: ImageStatus, name: string, image: Blob | null) {
  const cache = state.cache;
  const etag = await state.api.bundleEtag(status.id);
  const cached = cache ? await cache.get(status.id, etag) : null;
  if (cached) {
    if (image && !cached.image) await cache!.put({ ...cached, image });
    return { bytes: cached.bundle, source: 'IndexedDB' as const };
  }
  showProgress('downloading the embedding…', null);
  const { bytes, etag: got } = await state.api.bundle(status.id);
  if (cache) await cache.put({ id: status.id, etag: got, bundle: bytes, image, name, width: status.width, height: status.height });
  return { bytes, source: 'network' as const };
}

async function makeDecoder(id: string, bundle: ArrayBuffer): Promise<Decoder> {
  if (state.wasm && !ui.forceServer.checked) {
    try {
      return await (await state.wasm).forImage(bundle);
    } catch (e) {
      state.wasmError = String((e as Error)?.message ?? e);
    }
  }
  return ServerDecoder.open(state.api, id);
}

async function show(id: string, name: string, image: Blob, status: ImageStatus): Promise<void> {
  await waitForEncode(id);
  const bundle = await bundleFor(status, name, image);
  const bitmap = await createImageBitmap(image);
  const decoder = await makeDecoder(id, bundle.bytes);
  state.image?.decoder.close();
  state.image = { id, name, bitmap, decoder, bundleSource: bundle.source, bundleBytes: bundle.bytes.byteLength };
  state.steps = [];
  state.preview = null;
  state.last = null;
  state.error = '';
  ui.canvas.width = bitmap.width;
  ui.canvas.height = bitmap.height;
  ui.canvas.hidden = false;
  ui.hint.hidden = true;
  ui.progress.hidden = true;
  history.replaceState(null, '', `#image=${id}`);
  ui.canvas.dataset.imageId = id;
  showStep();
  void refreshRecent();
}

async function openFile(file: File): Promise<void> {
  try {
    showProgress('uploading…', null);
    const status = await state.api.upload(file);
    await show(status.id, file.name, file, status);
  } catch (e) {
    fail(e);
  }
}

async function openCached(id: string): Promise<void> {
  try {
    const entry = await state.cache?.get(id);
    if (!entry?.image) throw new Error(`this browser does not hold image ${id}; open the file`);
    const status = await state.api.status(id);
    await show(id, entry.name, entry.image, status);
  } catch (e) {
    fail(e);
  }
}

// Fetches the bundles of images opened elsewhere, so opening them here needs no download.
async function preloadIds(ids: string[]): Promise<void> {
  let done = 0;
  for (const id of ids) {
    showProgress(`preloading ${done + 1}/${ids.length}…`, done / ids.length);
    const status = await state.api.waitEncoded(id, () => undefined);
    await bundleFor(status, id, null);
    testHooks.preloaded.push(id);
    done++;
  }
  ui.progress.hidden = true;
  void refreshRecent();
}

async function refreshRecent(): Promise<void> {
  if (!state.cache) return;
  const entries = await state.cache.list();
  ui.recent.replaceChildren(new Option('Recent…', ''));
  for (const e of entries) if (e.hasImage) ui.recent.append(new Option(`${e.name} (${e.width}×${e.height})`, e.id));
  const total = entries.reduce((s, e) => s + e.bytes, 0);
  ui.cacheInfo.textContent = `cache: ${entries.length} bundles, ${(total / 1048576).toFixed(1)} of ${(state.cache.quotaBytes / 1048576).toFixed(0)} MB`;
}

ui.file.onchange = () => {
  const file = ui.file.files?.[0];
  if (file) void openFile(file);
};
ui.recent.onchange = () => ui.recent.value && openCached(ui.recent.value);
ui.stage.addEventListener('dragover', (ev) => {
  ev.preventDefault();
  ui.stage.classList.add('dragover');
});
ui.stage.addEventListener('dragleave', () => ui.stage.classList.remove('dragover'));
ui.stage.addEventListener('drop', (ev) => {
  ev.preventDefault();
  ui.stage.classList.remove('dragover');
  const f = ev.dataTransfer?.files[0];
  if (f) void openFile(f);
});
ui.apiKey.value = state.api.apiKey;
ui.apiKey.onchange = () => {
  state.api.apiKey = ui.apiKey.value;
  localStorage.setItem('splitseg.apiKey', ui.apiKey.value);
};
ui.preloadGo.onclick = () => preloadIds(ui.preload.value.split(',').map((s) => s.trim()).filter(Boolean)).catch(fail);

// ---- start ---------------------------------------------------------------------------------

async function start(): Promise<void> {
  const params = new URLSearchParams(location.search);
  const quotaMb = Number(params.get('quota_mb') ?? localStorage.getItem('splitseg.quotaMb') ?? 512);
  ui.quota.value = String(quotaMb);
  ui.quota.onchange = () => {
    localStorage.setItem('splitseg.quotaMb', ui.quota.value);
    if (state.cache) state.cache.quotaBytes = Number(ui.quota.value) << 20;
    void state.cache?.evict().then(refreshRecent);
  };
  ui.forceServer.checked = params.get('decoder') === 'server';
  try {
    state.cache = await BundleCache.open(quotaMb << 20);
  } catch (e) {
    console.warn('no IndexedDB: bundles are downloaded every time', e);
  }
  state.wasm = state.api.decoderWeights().then((weights) => {
    if (!weights) throw new Error('the server has no decoder weights for the browser');
    return WasmRuntime.create(weights);
  });
  state.wasm.catch((e) => {
    state.wasmError = String((e as Error)?.message ?? e);
    state.wasm = null;
    setStatus();
  });
  setStatus();
  await refreshRecent();
  const preload = params.get('preload');
  if (preload) await preloadIds(preload.split(',')).catch(fail);
  const hash = /image=([0-9a-f]+)/.exec(location.hash);
  if (hash) await openCached(hash[1]);
}

// For tests and the console: what the page is doing, without reading pixels.
const testHooks = {
  get state() {
    const m = currentMask();
    return {
      imageId: state.image?.id ?? null,
      where: state.image?.decoder.where ?? null,
      decoderDetail: state.image?.decoder.detail ?? null,
      wasmError: state.wasmError,
      bundleSource: state.image?.bundleSource ?? null,
      steps: state.steps.length,
      candidates: state.steps[state.steps.length - 1]?.result.masks.length ?? 0,
      maskArea: m?.area ?? 0,
      lastRoundTripMs: state.last?.roundTripMs ?? null,
      lastDecoderMs: state.last?.decoderMs ?? null,
      view: state.view,
      error: state.error,
    };
  },
  idle: () => state.chain,
  preloaded: [] as string[], // ids whose bundles preloadIds() has fetched
  cached: async () => (await state.cache?.list())?.map((e) => e.id) ?? [],
};
(window as unknown as { splitseg: typeof testHooks }).splitseg = testHooks;

void start();
