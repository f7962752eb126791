// One click in Debian's headless Chromium: splitseg's WASM decoder against onnxruntime-web's WASM
// backend on the ONNX export of the same decoder weights, the same embedding and the same click.
//   node bench.mjs --data DIR [--wasm DIR] [--baseline-wasm DIR] [--threads 1[,2]] [--rounds 5]
//                  [--clicks 10] [--warmup 2]
// --baseline-wasm: another build of the module (e.g. before a change), timed in the same rounds.
// DIR holds decoder.safetensors (splitseg models extract-decoder --dtype f32), bundle.safetensors
// (splitseg encode --dtype f32) and decoder-multimask.onnx (tools/onnx/export.py --masks multimask
// --orig-size HxW of the bundle's image), as bench/web/run.sh makes them.
//
// What each side computes and what is timed (performance.now() around the call, in a Web Worker):
//   splitseg  SplitsegDecoder.decode() (1 thread: splitseg_decoder.js; more: splitseg_decoder_mt.js,
//             with the single-threaded module timed beside it as the baseline): prompt encoder + mask decoder from the image-side work that
//             loadBundle() did once per image (prepare(), reported apart), the 3 multimask masks
//             upscaled to the original size as 0/1 bytes, IoUs and low-res logits, copied to JS.
//   ORT       InferenceSession.run() of the multimask graph: prompt encoder + mask decoder, with
//             the image-side projections redone every click (SamOnnxModel has no per-image step),
//             the 3 masks upscaled to the original size as bools, IoUs and low-res logits.
//   splitseg first click  loadBundle() + decode(): the same click with the image-side work redone
//             as ORT's graph does (plus parsing and checking the f32 bundle, which ORT does not do).
// Each round: warm-up, then N clicks of each series in turn; medians of the per-round medians.
// A new worker (fresh modules) per thread count. Ratios: ORT / splitseg (> 1: splitseg faster).
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { option } from '../shared/util.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');

const data = path.resolve(option('data'));
const wasmDir = path.resolve(option('wasm', path.join(root, 'build-wasm')));
const baselineDir = option('baseline-wasm', null);
const threadCounts = option('threads', '1').split(',').map(Number);
const rounds = Number(option('rounds', 5)), clicks = Number(option('clicks', 10));
const warmup = Number(option('warmup', 2));

// URL prefix -> folder. Every response carries COOP/COEP (as `splitseg serve` sends them), so
// the page is cross-origin isolated and threaded WASM may run.
const mounts = [
    ['/bench/', here],
    ['/api/', path.join(root, 'src/wasm')],
    ['/shared/', path.join(root, 'bench/shared')],
    ['/ort/', path.join(here, 'node_modules/onnxruntime-web/dist')],
    ['/data/', data],
    ['/wasm/', wasmDir],
    ...(baselineDir ? [['/baseline/', path.resolve(baselineDir)]] : []),
];
const types = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript',
                '.wasm': 'application/wasm' };

function serve(req, res) {
    const url = new URL(req.url, 'http://x').pathname;
    const p = url === '/' ? '/bench/index.html' : url;
    const mount = mounts.find(([prefix]) => p.startsWith(prefix));
    const file = mount && path.join(mount[1], path.normalize(p.slice(mount[0].length)));
    const headers = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp',
                      'Cross-Origin-Resource-Policy': 'same-origin', 'Cache-Control': 'no-store' };
    if (!file || !file.startsWith(mount[1]) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
        if (p !== '/favicon.ico') console.log(`bench server: 404 ${p}`);
        res.writeHead(404, headers).end();
        return;
    }
    headers['Content-Type'] = types[path.extname(file)] ?? 'application/octet-stream';
    res.writeHead(200, headers);
    fs.createReadStream(file).pipe(res);
}

const server = http.createServer(serve);
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const base = `http://127.0.0.1:${server.address().port}`;
const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'] });
const fmt = (v) => v.toFixed(1);
const load = () => os.loadavg().map((v) => v.toFixed(2)).join(' ');
try {
    const page = await browser.newPage();
    page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
    // Warnings too: onnxruntime-web says so when it cannot use the threads it was given.
    page.on('console', (m) => ['warning', 'error'].includes(m.type()) && console.log(`[page ${m.type()}] ${m.text()}`));
    await page.goto(base + '/');
    console.log(`Chromium ${browser.version()}, onnxruntime-web ` +
                JSON.parse(fs.readFileSync(path.join(here, 'node_modules/onnxruntime-web/package.json'))).version +
                `, data ${data}`);
    const rows = ['| model | threads | splitseg click ms | splitseg first click ms | ORT ms | ratio | ratio first |',
                  '| --- | --- | --- | --- | --- | --- | --- |'];
    for (const threads of threadCounts) {
        const start = new Date().toISOString().slice(11, 19);
        const loadBefore = load();
        const r = await page.evaluate((c) => window.runBench(c),
                                      { threads, rounds, clicks, warmup, oursBase: '/wasm/',
                                        baselineBase: baselineDir ? '/baseline/' : null });
        console.log(`\n${r.model} ${r.width}x${r.height}, ${threads} thread(s), crossOriginIsolated ${r.crossOriginIsolated}, ` +
                    `${start} UTC, load average ${loadBefore} -> ${load()}`);
        console.log(`splitseg: ${r.ours}` + (r.baseline ? `; baseline ${r.baseline}, same masks: ${r.baselineSameMasks}` : ''));
        console.log(`masks IoU splitseg vs ORT: ${r.ious.join(', ')}; splitseg loadBundle (parse + prepare) ${fmt(r.prepareMs)} ms`);
        const names = Object.keys(r.rounds);
        console.log(`rounds (median of ${clicks} clicks each), ${names.join(' / ')} ms: ` +
                    r.rounds.ours.map((_, i) => names.map((k) => fmt(r.rounds[k][i])).join('/')).join(', '));
        if (r.median.baseline)
            console.log(`baseline ${r.baseline}: median ${fmt(r.median.baseline)} ms (min ${fmt(r.min.baseline)}), ` +
                        `${(r.median.baseline / r.median.ours).toFixed(2)}x the time of ${r.ours}`);
        const cell = (k) => `${fmt(r.median[k])} (min ${fmt(r.min[k])})`;
        rows.push(`| ${r.model} | ${threads} | ${cell('ours')} | ${cell('first')} | ${cell('ort')} | ` +
                    `${(r.median.ort / r.median.ours).toFixed(2)}x | ${(r.median.ort / r.median.first).toFixed(2)}x |`);
    }
    console.log(`\nmedians of ${rounds} rounds (each the median of ${clicks} clicks); ratio = ORT / splitseg`);
    console.log(rows.join('\n'));
} finally {
    await browser.close();
    server.close();
}
