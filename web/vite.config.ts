// The client is served by `splitseg serve` at "/"; `npm run dev` proxies the API to a local
// serve (SPLITSEG_URL, default http://127.0.0.1:8080) with the isolation headers WASM threads need.
import { defineConfig } from 'vite';

const api = process.env.SPLITSEG_URL ?? 'http://127.0.0.1:8080';
const isolation = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};

export default defineConfig({
  base: '/',
  build: { outDir: 'dist', target: 'es2022', sourcemap: true },
  worker: { format: 'es' },
  server: {
    headers: isolation,
    proxy: { '/api': { target: api, ws: true } },
  },
});
