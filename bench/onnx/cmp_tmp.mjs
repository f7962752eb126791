import ort from 'onnxruntime-node';
import { openSession, median } from './lib.mjs';
const T = (d, dims) => new ort.Tensor('float32', d, dims);
const feeds = {image_embeddings: T(new Float32Array(256*4096).map(()=>Math.random()), [1,256,64,64]), point_coords: T(Float32Array.of(512,512,0,0),[1,2,2]), point_labels: T(Float32Array.of(1,-1),[1,2]), mask_input: T(new Float32Array(65536),[1,1,256,256]), has_mask_input: T(Float32Array.of(0),[1]), orig_im_size: T(Float32Array.of(1024,1024),[2])};
const s = [];
for (const f of process.argv.slice(2)) s.push(await openSession(f, 2));
const t = s.map(() => []);
for (let i = 0; i < 30; ++i) for (let k = 0; k < s.length; ++k) { const t0 = performance.now(); await s[k].run(feeds); t[k].push(performance.now() - t0); }
console.log(t.map(v => median(v).toFixed(1) + ' (min ' + Math.min(...v).toFixed(1) + ')').join('  '));
