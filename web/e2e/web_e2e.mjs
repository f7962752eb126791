// End-to-end test of the web client in Debian's Chromium (playwright-core, never a downloaded
// browser) against a `splitseg serve` started here with random MobileSAM weights:
// upload, encode, click, mask drawn (canvas readback), background point, box, views, exports,
// undo, reload with the bundle from IndexedDB (no second download), and the server-side decoder
// over the WebSocket when the page asks for it, its masks as binary frames (each frame the server
// sent read here by the client's own parser). Prints one click's latency.
//
//   node web/e2e/web_e2e.mjs --splitseg build/splitseg [--model CKPT] [--image PNG]
//                            [--clicks N] [--keep-going] [--headed] [--url URL]
// Exit 77 (ctest: skipped) with the reason when Chromium, playwright-core or web/dist is missing.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rleDecode, rleFromString } from '../src/coco_rle.js';
import { parseMaskFrame } from '../src/mask_frame.js';

const web = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repo = resolve(web, '..');
const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : true]);
    return acc;
  }, []),
);
const CHROMIUM = process.env.SPLITSEG_CHROMIUM ?? '/usr/bin/chromium';
const splitseg = resolve(args.splitseg ?? join(repo, 'build', 'splitseg'));
const imagePath = resolve(args.image ?? join(repo, 'assets', 'sample.png'));
const clicks = Number(args.clicks ?? 10);

function skip(why) {
  console.log(`web_e2e: SKIPPED: ${why}`);
  process.exit(77);
}
if (!existsSync(CHROMIUM)) skip(`no Chromium at ${CHROMIUM} (apt-get install chromium)`);
if (!existsSync(join(web, 'node_modules', 'playwright-core'))) skip('no web/node_modules (cd web && npm ci)');
if (!existsSync(join(web, 'dist', 'index.html'))) skip('no web/dist (cd web && npm run build)');
if (!existsSync(splitseg)) skip(`no splitseg binary at ${splitseg}`);
const { chromium } = await import('playwright-core');

let failures = 0;
function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${detail ? ` (${detail})` : ''}`);
  if (!ok) {
    failures++;
    if (!args['keep-going']) throw new Error(`check failed: ${what}`);
  }
}

const scratch = mkdtempSync(join(tmpdir(), 'splitseg-web-e2e-'));
let server = null;
let browser = null;

// `splitseg serve` on an ephemeral port; resolves with its base URL.
function startServer(model, decoder) {
  server = spawn(splitseg, ['serve', '--port', '0', '--threads', '2', '--data-dir', join(scratch, 'data'),
    '--model', model, '--web', join(web, 'dist'), ...(decoder ? ['--decoder', decoder] : [])],
  { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  server.stderr.on('data', (d) => { log += d; });
  return new Promise((resolveUrl, reject) => {
    let out = '';
    server.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/[\d.]+:\d+)/.exec(out);
      if (m) resolveUrl(m[1]);
    });
    server.on('exit', (code) => reject(new Error(`splitseg serve exited ${code}:\n${log}`)));
  });
}

// Pixels of the page's canvas: how many are transparent, and how many differ from the image.
async function canvasStats(page) {
  return page.evaluate(async () => {
    const c = document.getElementById('canvas');
    const shown = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const input = document.getElementById('file').files[0];
    let bitmap;
    if (input) bitmap = await createImageBitmap(input);
    const plain = document.createElement('canvas');
    plain.width = c.width;
    plain.height = c.height;
    const pctx = plain.getContext('2d');
    if (bitmap) pctx.drawImage(bitmap, 0, 0);
    const base = pctx.getImageData(0, 0, c.width, c.height).data;
    let transparent = 0;
    let changed = 0;
    for (let i = 0; i < shown.length; i += 4) {
      if (shown[i + 3] === 0) transparent++;
      if (Math.abs(shown[i] - base[i]) + Math.abs(shown[i + 1] - base[i + 1]) + Math.abs(shown[i + 2] - base[i + 2]) > 24) changed++;
    }
    return { transparent, changed, pixels: c.width * c.height };
  });
}

const state = (page) => page.evaluate(() => window.splitseg.state);
async function waitSteps(page, n) {
  await page.waitForFunction((k) => window.splitseg.state.steps === k || window.splitseg.state.error, n, { timeout: 60_000 });
  const s = await state(page);
  if (s.error) throw new Error(`the page reports: ${s.error}`);
  return s;
}

// A point of the image, in page coordinates.
async function at(page, fx, fy) {
  const box = await page.locator('#canvas').boundingBox();
  return [box.x + box.width * fx, box.y + box.height * fy];
}

async function download(page, button) {
  const [d] = await Promise.all([page.waitForEvent('download'), page.click(button)]);
  return readFileSync(await d.path());
}

function pngSize(bytes) {
  const signature = bytes.subarray(0, 8).equals(Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]));
  return signature ? [bytes.readUInt32BE(16), bytes.readUInt32BE(20)] : null;
}

// Latency of one click, the page's own measure: pointer up to masks in hand (the decode in the
// worker or on the server, and the messages there and back). Clicks 1..N on a fresh step list.
async function clickLatency(page) {
  await page.click('#reset');
  await waitSteps(page, 0);
  const ms = [];
  let s = null;
  for (let i = 0; i < clicks; i++) {
    await page.mouse.click(...(await at(page, 0.2 + (0.6 * i) / clicks, 0.4 + (0.2 * (i % 3)) / 3)));
    s = await waitSteps(page, i + 1);
    ms.push(s.lastRoundTripMs);
  }
  ms.sort((a, b) => a - b);
  console.log(`web_e2e: click latency (${s.where}, ${clicks} clicks, points 1..${clicks}): median ${ms[Math.floor(ms.length / 2)].toFixed(1)} ms, ` +
    `min ${ms[0].toFixed(1)} ms, max ${ms[ms.length - 1].toFixed(1)} ms; decoder ${s.lastDecoderMs.toFixed(1)} ms on the last`);
}

// The server click went over the WebSocket with "output": "binary": its reply's text frame
// announces n binary frames, which follow it; each parses (web/src/mask_frame.js) to a mask of the
// image's size whose pixels add up to the area the reply and the page's candidates give.
function checkBinaryMasks(frames, pageAreas) {
  const asked = frames.some((f) => f.sent && typeof f.payload === 'string' && JSON.parse(f.payload).output === 'binary');
  check(asked, 'the page asks the server for binary masks', `${frames.filter((f) => f.sent).length} message(s) sent`);
  const at = frames.findIndex((f) => !f.sent && typeof f.payload === 'string' && JSON.parse(f.payload).type === 'prompts');
  const reply = at >= 0 ? JSON.parse(frames[at].payload) : null;
  check(reply?.status === 200 && reply.frames === reply.body.masks.length, 'the prompts reply announces one binary frame per mask',
    reply ? `status ${reply.status}, frames ${reply.frames}, masks ${reply.body.masks.length}` : 'no reply');
  const n = reply?.frames ?? 0;
  const binary = frames.slice(at + 1, at + 1 + n).filter((f) => !f.sent && typeof f.payload !== 'string');
  check(n > 0 && binary.length === n, 'the binary frames follow the reply', `${binary.length} of ${n}`);
  const parsed = binary.map((f) => parseMaskFrame(f.payload));
  const masks = reply.body.masks.map((m) => parsed[m.frame]);
  const wellFormed = masks.every((m, i) => m.sequence === reply.seq && m.maskIndex === i && m.width === 640 && m.height === 480);
  check(wellFormed, 'each frame names its reply and mask and has the image size',
    masks.map((m) => `${m.encoding} ${m.width}x${m.height} seq ${m.sequence} #${m.maskIndex}`).join('; '));
  const areas = masks.map((m) => m.data.reduce((sum, v) => sum + v, 0));
  const same = areas.every((a, i) => a === reply.body.masks[i].area && a === pageAreas[i]);
  check(same, 'the frames hold the masks the reply and the page show', `${areas} vs ${reply.body.masks.map((m) => m.area)} vs ${pageAreas}`);
}

async function main() {
  const model = args.model ? resolve(args.model) : join(scratch, 'mobilesam.safetensors');
  if (!args.model && !args.url) {
    const r = spawnSync(splitseg, ['models', 'synth', '--arch', 'mobilesam', '--out', model], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`models synth failed: ${r.stderr}`);
  }
  // The browser's decoder weights; without them (or without dist/wasm) the page decodes on the server.
  let decoder = null;
  const wasmBuilt = existsSync(join(web, 'dist', 'wasm', 'splitseg_decoder.wasm'));
  if (wasmBuilt && !args.url) {
    decoder = join(scratch, 'decoder.safetensors');
    const r = spawnSync(splitseg, ['models', 'extract-decoder', '--model', model, '--out', decoder], { encoding: 'utf8' });
    if (r.status !== 0) {
      console.log(`web_e2e: no decoder weights for the browser (extract-decoder: ${r.stderr.trim()})`);
      decoder = null;
    }
  } else if (!wasmBuilt) {
    console.log('web_e2e: web/dist has no WASM decoder (no build-wasm/ when it was built): testing server decoding only');
  }
  const url = args.url ?? (await startServer(model, decoder)); // --url: a serve (or vite dev) already running
  console.log(`web_e2e: splitseg serve at ${url}`);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: !args.headed,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1100, height: 800 } });
  const bundleDownloads = [];
  context.on('request', (r) => {
    if (r.method() === 'GET' && /\/api\/v1\/images\/[0-9a-f]+\/embedding$/.test(r.url())) bundleDownloads.push(r.url());
  });
  const page = await context.newPage();
  page.on('console', (m) => m.type() === 'error' && console.log(`  [page] ${m.text()}`));
  page.on('pageerror', (e) => console.log(`  [page error] ${e.message}`));

  const index = await page.goto(url + '/');
  const headers = index.headers();
  check(headers['cross-origin-opener-policy'] === 'same-origin' && headers['cross-origin-embedder-policy'] === 'require-corp',
    'the page is served cross-origin isolated');
  check(await page.evaluate(() => crossOriginIsolated), 'crossOriginIsolated in the page');

  // Upload, wait for the encode, and see where decoding runs.
  const t0 = Date.now();
  await page.setInputFiles('#file', imagePath);
  await page.waitForFunction(() => window.splitseg.state.imageId || window.splitseg.state.error, null, { timeout: 180_000 });
  let s = await state(page);
  check(!s.error && s.imageId, 'image uploaded, encoded and opened', `${((Date.now() - t0) / 1000).toFixed(1)} s, ${s.error || s.imageId}`);
  const wasm = s.where === 'WASM';
  console.log(`web_e2e: decoding in ${s.where}${wasm ? '' : ` (WASM unavailable: ${s.wasmError})`}`);
  if (decoder) check(wasm, 'with the WASM decoder built and its weights served, the page decodes in WASM', s.wasmError);
  // The threaded module where it was built and the page can use it (isolated, more than one core).
  const cores = await page.evaluate(() => navigator.hardwareConcurrency);
  if (wasm && existsSync(join(web, 'dist', 'wasm', 'splitseg_decoder_mt.wasm')) && cores > 1)
    check(/\d+ threads/.test(s.decoderDetail), 'the WASM decoder runs on threads', s.decoderDetail);
  else if (wasm) console.log(`web_e2e: WASM decoder on one thread (${s.decoderDetail}; ${cores} core(s))`);
  check(s.bundleSource === 'network' && bundleDownloads.length === 1, 'the bundle was downloaded once', `${bundleDownloads.length}`);

  // Foreground click: candidates, a mask drawn.
  await page.mouse.click(...(await at(page, 0.5, 0.5)));
  s = await waitSteps(page, 1);
  check(s.candidates >= 1, 'a click gives candidate masks', `${s.candidates}`);
  const choices = await page.locator('#candidates button').count();
  if (choices > 1) {
    // Random weights: pick the candidate with the most pixels so the drawing has something to show.
    const areas = await page.locator('#candidates button').evaluateAll((bs) => bs.map((b) => Number(/(\d+) px/.exec(b.textContent)[1])));
    const pick = areas.indexOf(Math.max(...areas));
    await page.locator('#candidates button').nth(pick).click();
    s = await state(page);
    check(s.maskArea === areas[pick], 'choosing a candidate shows it', `${s.maskArea} px`);
  }
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  let px = await canvasStats(page);
  check(s.maskArea > 0, 'the mask is not empty', `${s.maskArea} of ${px.pixels} px`);
  check(px.changed >= 0.9 * s.maskArea, 'the overlay is drawn on the canvas', `${px.changed} pixels differ from the image`);

  // Background point refines the mask (one more step).
  await page.mouse.click(...(await at(page, 0.15, 0.15)), { button: 'right' });
  s = await waitSteps(page, 2);
  check(s.steps === 2, 'a right click adds a background point', `area ${s.maskArea}`);

  // Views: cut-out leaves the outside transparent, erase the inside.
  const markers = 2 * Math.PI * 8 * 8 * 2; // the point markers drawn over the view
  await page.check('input[name=view][value=cutout]');
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  px = await canvasStats(page);
  check(Math.abs(px.transparent - (px.pixels - s.maskArea)) <= markers, 'cut-out view: the outside is transparent', `${px.transparent} vs ${px.pixels - s.maskArea}`);
  await page.check('input[name=view][value=erase]');
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  px = await canvasStats(page);
  check(Math.abs(px.transparent - s.maskArea) <= markers, 'erase view: the inside is transparent', `${px.transparent} vs ${s.maskArea}`);
  await page.check('input[name=view][value=overlay]');

  // Exports.
  const maskPng = await download(page, '#export-mask');
  const size = pngSize(maskPng);
  check(size && size[0] === 640 && size[1] === 480, 'mask PNG export', size ? `${size[0]}x${size[1]}, ${maskPng.length} bytes` : 'not a PNG');
  const cutPng = await download(page, '#export-cutout');
  check(pngSize(cutPng) !== null, 'cut-out PNG export', `${cutPng.length} bytes`);
  const secondImage = join(scratch, 'cutout.png'); // another picture for the cache test below
  writeFileSync(secondImage, cutPng);
  const coco = JSON.parse((await download(page, '#export-coco')).toString());
  const ann = coco.annotations[0];
  const [h, w] = ann.segmentation.size;
  const decoded = rleDecode(rleFromString(ann.segmentation.counts), w, h);
  const ones = decoded.reduce((n, v) => n + v, 0);
  check(w === 640 && h === 480 && ones === s.maskArea && ann.area === s.maskArea, 'COCO JSON export: RLE decodes to the shown mask', `${ones} px`);

  // A box drag (previews while dragging, one step at release), then undo.
  const [x0, y0] = await at(page, 0.3, 0.3);
  const [x1, y1] = await at(page, 0.7, 0.75);
  await page.mouse.move(x0, y0);
  await page.mouse.down();
  for (let i = 1; i <= 10; i++) await page.mouse.move(x0 + ((x1 - x0) * i) / 10, y0 + ((y1 - y0) * i) / 10);
  await page.mouse.up();
  s = await waitSteps(page, 3);
  check(s.steps === 3, 'a drag adds a box');
  await page.click('#undo');
  s = await waitSteps(page, 2);
  check(s.steps === 2, 'undo drops the last step');

  await clickLatency(page);

  // Reload: the page reopens the image from IndexedDB, the bundle is not downloaded again.
  await page.reload();
  await page.waitForFunction(() => window.splitseg.state.imageId || window.splitseg.state.error, null, { timeout: 60_000 });
  s = await state(page);
  check(s.bundleSource === 'IndexedDB' && bundleDownloads.length === 1, 'after a reload the bundle comes from IndexedDB',
    `${s.bundleSource}, ${bundleDownloads.length} download(s)`);
  await page.mouse.click(...(await at(page, 0.5, 0.5)));
  s = await waitSteps(page, 1);
  check(s.maskArea >= 0 && s.candidates >= 1, 'decoding works after the reload');

  // The server-side decoder over the session WebSocket; with WASM, the same click's masks agree.
  const wasmAreas = wasm ? await page.locator('#candidates button').evaluateAll((bs) => bs.map((b) => Number(/(\d+) px/.exec(b.textContent)[1]))) : null;
  const serverPage = await context.newPage();
  const socketFrames = []; // what went over the session WebSocket: {sent, payload}
  serverPage.on('websocket', (ws) => {
    ws.on('framesent', (f) => socketFrames.push({ sent: true, payload: f.payload }));
    ws.on('framereceived', (f) => socketFrames.push({ sent: false, payload: f.payload }));
  });
  await serverPage.goto(`${url}/?decoder=server#image=${s.imageId}`);
  await serverPage.waitForFunction(() => window.splitseg.state.imageId || window.splitseg.state.error, null, { timeout: 60_000 });
  const ss = await state(serverPage);
  check(ss.where === 'server', 'the page decodes on the server when asked', ss.error);
  await serverPage.mouse.click(...(await at(serverPage, 0.5, 0.5)));
  const sr = await waitSteps(serverPage, 1);
  check(sr.candidates >= 1, 'server decoding over the WebSocket', `${sr.lastRoundTripMs.toFixed(1)} ms`);
  const serverAreas = await serverPage.locator('#candidates button').evaluateAll((bs) => bs.map((b) => Number(/(\d+) px/.exec(b.textContent)[1])));
  checkBinaryMasks(socketFrames, serverAreas);
  // An undo back to a binary step is answered with that step's frames again: the page must
  // take them as the undo's and go on clicking.
  await serverPage.mouse.click(...(await at(serverPage, 0.3, 0.6)));
  await waitSteps(serverPage, 2);
  await serverPage.click('#undo');
  await waitSteps(serverPage, 1);
  await serverPage.mouse.click(...(await at(serverPage, 0.6, 0.3)));
  const after = await waitSteps(serverPage, 2);
  const undoReply = socketFrames.map((f) => (!f.sent && typeof f.payload === 'string' ? JSON.parse(f.payload) : null))
    .find((r) => r?.type === 'undo');
  check(after.candidates >= 1 && undoReply?.frames >= 1, 'server decoding goes on after an undo that resends frames',
    `undo reply frames ${undoReply?.frames}`);
  if (wasm) await clickLatency(serverPage);
  if (wasmAreas) {
    const close = serverAreas.every((a, i) => Math.abs(a - wasmAreas[i]) <= Math.max(16, 0.001 * 640 * 480));
    check(close, 'WASM and server masks agree for the same click', `${wasmAreas} vs ${serverAreas}`);
  }
  await serverPage.close();

  // LRU eviction under a quota that holds one image (bundle ~2 MB each): opening a second image
  // evicts the first; preloading the first fetches its bundle (evicting the second), and opening
  // it then needs no download.
  const firstId = s.imageId;
  const lru = await context.newPage();
  await lru.goto(`${url}/?quota_mb=3`);
  await lru.setInputFiles('#file', secondImage);
  await lru.waitForFunction(() => window.splitseg.state.imageId || window.splitseg.state.error, null, { timeout: 180_000 });
  const second = await state(lru);
  const cached = () => lru.evaluate(() => window.splitseg.cached());
  let ids = await cached();
  check(ids.length === 1 && ids[0] === second.imageId, 'a second image evicts the least recently used bundle', ids.join(','));
  const before = bundleDownloads.length;
  await lru.goto(`${url}/?quota_mb=3&preload=${firstId}`);
  await lru.waitForFunction((id) => window.splitseg.preloaded.includes(id), firstId, { timeout: 60_000 });
  ids = await cached();
  check(ids.length === 1 && ids[0] === firstId && bundleDownloads.length === before + 1, 'preloading fetches a bundle into the cache', ids.join(','));
  await lru.setInputFiles('#file', imagePath);
  await lru.waitForFunction((id) => window.splitseg.state.imageId === id || window.splitseg.state.error, firstId, { timeout: 60_000 });
  s = await state(lru);
  check(s.bundleSource === 'IndexedDB' && bundleDownloads.length === before + 1, 'a preloaded image opens without a download', s.bundleSource);
}

try {
  await main();
} catch (e) {
  failures = Math.max(failures, 1);
  console.log(`web_e2e: ${e.stack ?? e}`);
} finally {
  await browser?.close().catch(() => undefined);
  if (server && server.exitCode === null) server.kill('SIGTERM');
  rmSync(scratch, { recursive: true, force: true });
}
console.log(failures ? `web_e2e: ${failures} check(s) failed` : 'web_e2e: all checks passed');
process.exit(failures ? 1 : 0);
