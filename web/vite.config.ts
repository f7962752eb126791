// The client is served by `splitseg serve` at "/"; `npm run dev` proxies the API to a local
// serve (SPLITSEG_URL, default http://127.0.0.1:8080) with the isolation headers WASM needs, and
// serves the WASM decoder at /wasm/ straight from the C++ build (scripts/copy-wasm.mjs does that
// for `npm run build`).
import { readFileSync } from 'node:fs';
import { defineConfig, type Plugin } from 'vite';

const api = process.env.SPLITSEG_URL ?? 'http://127.0.0.1:8080';
const isolation = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};

const wasmFiles: Record<string, [string, string]> = {
  '/wasm/splitseg_decoder.js': ['../build-wasm/splitseg_decoder.js', 'text/javascript'],
  '/wasm/splitseg_decoder.wasm': ['../build-wasm/splitseg_decoder.wasm', 'application/wasm'],
  '/wasm/splitseg_decoder_api.mjs': ['../src/wasm/splitseg_decoder_api.mjs', 'text/javascript'],
};

const devWasm: Plugin = {
  name: 'splitseg-dev-wasm',
  configureServer(server) {
    server.middlewares.use((req, res, next) => {
      const file = wasmFiles[(req.url ?? '').split('?')[0]];
      if (!file) return next();
      try {
        const body = readFileSync(new URL(file[0], import.meta.url));
        res.setHeader('Content-Type', file[1]);
        res.end(body);
      } catch {
        res.statusCode = 404;
        res.end();
      }
    });
  },
};

export default defineConfig({
  base: '/',
  build: { outDir: 'dist', target: 'es2022', sourcemap: true },
  worker: { format: 'es' },
  plugins: [devWasm],
  server: {
    headers: isolation,
    proxy: { '/api': { target: api, ws: true } },
  },
});
