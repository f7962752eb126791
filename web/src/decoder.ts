// Where masks come from: the WASM decoder in a Web Worker (the bundle in the tab, no round trip)
// or the server, over the session's WebSocket. Both answer the same prompts with the same masks.
import type { Api } from './api';
import { rleDecode, rleFromString } from './coco_rle.js';
import { parseMaskFrame, type MaskFrame } from './mask_frame.js';

export type Point = [x: number, y: number, label: number]; // image pixels; label 1 fg, 0 bg
export type Box = [x0: number, y0: number, x1: number, y1: number];

export interface Prompts {
  points: Point[];
  box: Box | null;
}

export interface Mask {
  width: number;
  height: number;
  data: Uint8Array; // row-major, non-zero inside
  score: number;
  area: number;
}

export interface DecodeResult {
  masks: Mask[];
  best: number;
  roundTripMs: number; // from asking to having the masks, as the user waits for them
  decoderMs: number; // the decoder's own time (in the worker or on the server)
}

export interface Decoder {
  readonly where: 'WASM' | 'server';
  readonly detail: string;
  // The masks for `next`, which extends `prev` (null: the first step) by points or a new box.
  // commit=false is a preview (a box being dragged): no step is kept, and a decoder for which
  // previews cost a round trip answers null.
  decode(prev: Prompts | null, next: Prompts, commit: boolean): Promise<DecodeResult | null>;
  undo(): Promise<void>;
  reset(): Promise<void>;
  close(): void;
}

function area(data: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < data.length; i++) if (data[i]) n++;
  return n;
}

// --- WASM, in a worker ---------------------------------------------------------------------

type WorkerReply = { id: number; ok: boolean; error?: string; [key: string]: unknown };

// The worker holding the WASM decoder and its weights; one per page, one bundle at a time.
export class WasmRuntime {
  private next = 1;
  private waiting = new Map<number, { resolve: (r: WorkerReply) => void; reject: (e: Error) => void }>();

  private constructor(
    private worker: Worker,
    public detail: string,
  ) {}

  // Throws with the reason when WASM cannot run here (no module served, no weights, no WASM).
  static async create(weights: ArrayBuffer, wasmBase = '/wasm/'): Promise<WasmRuntime> {
    if (typeof WebAssembly !== 'object') throw new Error('this browser has no WebAssembly');
    const worker = new Worker(new URL('./decoder_worker.ts', import.meta.url), { type: 'module' });
    const runtime = new WasmRuntime(worker, '');
    worker.onmessage = (ev: MessageEvent<WorkerReply>) => runtime.settle(ev.data);
    worker.onerror = (ev) => runtime.failAll(new Error(ev.message || 'the decoder worker failed'));
    const base = new URL(wasmBase, location.href).href;
    const info = await runtime.call({ op: 'init', base, weights }, [weights]);
    runtime.detail = String(info.detail);
    return runtime;
  }

  call(message: Record<string, unknown>, transfer: Transferable[] = []): Promise<WorkerReply> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ ...message, id }, transfer);
    });
  }

  private settle(reply: WorkerReply): void {
    const w = this.waiting.get(reply.id);
    if (!w) return;
    this.waiting.delete(reply.id);
    if (reply.ok) w.resolve(reply);
    else w.reject(new Error(reply.error ?? 'decoder error'));
  }

  private failAll(e: Error): void {
    for (const w of this.waiting.values()) w.reject(e);
    this.waiting.clear();
  }

  // A decoder over one image's bundle (a copy goes to the worker; the caller keeps its own).
  async forImage(bundle: ArrayBuffer): Promise<WasmDecoder> {
    const copy = bundle.slice(0);
    const info = await this.call({ op: 'bundle', bundle: copy }, [copy]);
    return new WasmDecoder(this, `${this.detail}, ${info.model}`);
  }
}

const LOW_RES = 256 * 256;

export class WasmDecoder implements Decoder {
  readonly where = 'WASM';
  private lowRes: Float32Array[] = []; // the chosen mask's low-res logits of every kept step

  constructor(
    private runtime: WasmRuntime,
    public detail: string,
  ) {}

  async decode(prev: Prompts | null, next: Prompts, commit: boolean): Promise<DecodeResult> {
    const start = performance.now();
    const maskInput = prev ? this.lowRes[this.lowRes.length - 1] : undefined;
    const r = await this.runtime.call({
      op: 'decode',
      points: next.points,
      box: next.box,
      multimask: prev === null,
      maskInput: maskInput ?? null,
    });
    const masks = (r.masks as { width: number; height: number; data: Uint8Array }[]).map((m, i) => ({
      ...m,
      score: (r.scores as number[])[i],
      area: area(m.data),
    }));
    const best = masks.reduce((b, m, i) => (m.score > masks[b].score ? i : b), 0);
    if (commit) {
      const logits = r.lowResLogits as Float32Array;
      this.lowRes.push(logits.slice(best * LOW_RES, (best + 1) * LOW_RES));
    }
    return { masks, best, roundTripMs: performance.now() - start, decoderMs: r.latencyMs as number };
  }

  async undo(): Promise<void> {
    this.lowRes.pop();
  }

  async reset(): Promise<void> {
    this.lowRes = [];
  }

  close(): void {
    this.lowRes = [];
  }
}

// --- the server, over the session's WebSocket ----------------------------------------------

interface SocketReply {
  id: number;
  type: string;
  status: number;
  body: any;
  seq?: number;
  frames?: number; // binary frames that follow this text frame, one per mask
  maskFrames?: MaskFrame[]; // those frames, read
}

// A mask of a reply's body: from its binary frame ("output": "binary", on the WebSocket) or from
// its COCO RLE (over HTTP, which refuses binary).
function replyMask(m: any, frames: MaskFrame[]): Mask {
  if (m.frame !== undefined) {
    const f = frames[m.frame];
    if (!f) throw new Error(`the reply names binary frame ${m.frame}, which did not come`);
    return { width: f.width, height: f.height, data: f.data, score: m.score, area: m.area };
  }
  const [height, width] = m.rle.size as [number, number];
  const data = rleDecode(rleFromString(m.rle.counts), width, height);
  return { width, height, data, score: m.score, area: m.area };
}

// Over the session's WebSocket when it opens; over the session's HTTP routes when it does not (a
// browser cannot send an API key header on a WebSocket). On the socket, masks come as binary
// frames (src/service/mask_frame.h): no RLE string to build on the server or to parse here.
export class ServerDecoder implements Decoder {
  readonly where = 'server';
  private next = 1;
  private waiting = new Map<number, (r: SocketReply) => void>();
  private collecting: SocketReply | null = null; // a text reply whose binary frames are arriving

  private constructor(
    private api: Api,
    private sid: string,
    private ws: WebSocket | null,
    public detail: string,
  ) {
    if (!ws) return;
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (ev) => {
      try {
        this.receive(ev.data);
      } catch (e) {
        const reply = this.collecting;
        this.collecting = null;
        if (reply) this.settle({ ...reply, status: 0, body: { error: { message: `bad reply from the server: ${(e as Error).message}` } } });
      }
    };
    ws.onclose = () => {
      for (const w of this.waiting.values()) w({ id: 0, type: 'error', status: 0, body: { error: { message: 'socket closed' } } });
      this.waiting.clear();
    };
  }

  // A text frame is a reply; when it says "frames": n, the next n binary frames are its masks
  // and it is answered once they are all in.
  private receive(data: string | ArrayBuffer): void {
    if (typeof data === 'string') {
      const reply = JSON.parse(data) as SocketReply;
      reply.maskFrames = [];
      if (reply.frames) this.collecting = reply;
      else this.settle(reply);
      return;
    }
    const reply = this.collecting;
    if (!reply) throw new Error('a binary frame came without a reply announcing it');
    const frame = parseMaskFrame(data);
    if (frame.sequence !== reply.seq) throw new Error(`frame of reply ${frame.sequence} during reply ${reply.seq}`);
    reply.maskFrames!.push(frame);
    if (reply.maskFrames!.length === reply.frames) {
      this.collecting = null;
      this.settle(reply);
    }
  }

  private settle(reply: SocketReply): void {
    this.waiting.get(reply.id)?.(reply);
    this.waiting.delete(reply.id);
  }

  static async open(api: Api, imageId: string): Promise<ServerDecoder> {
    const sid = await api.createSession(imageId);
    const ws = new WebSocket(api.socketUrl(sid));
    const opened = await new Promise<boolean>((resolve) => {
      ws.onopen = () => resolve(true);
      ws.onerror = () => resolve(false);
    });
    return opened
      ? new ServerDecoder(api, sid, ws, 'WebSocket session')
      : new ServerDecoder(api, sid, null, 'HTTP session: the WebSocket did not open');
  }

  private async send(message: Record<string, unknown>): Promise<SocketReply> {
    if (!this.ws) {
      const { type, ...body } = message;
      const r = await this.api.sessionMessage(this.sid, String(type), body);
      if (r.status >= 200 && r.status < 300) return { id: 0, type: String(type), ...r };
      throw new Error(r.body?.error?.message ?? `server answered ${r.status}`);
    }
    const ws = this.ws;
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, (r) => {
        if (r.status >= 200 && r.status < 300) resolve(r);
        else reject(new Error(r.body?.error?.message ?? `server answered ${r.status}`));
      });
      ws.send(JSON.stringify({ ...message, id }));
    });
  }

  async decode(prev: Prompts | null, next: Prompts, commit: boolean): Promise<DecodeResult | null> {
    if (!commit) return null; // a box preview would cost a round trip per frame
    const start = performance.now();
    const message: Record<string, unknown> = {
      type: 'prompts',
      points: next.points.slice(prev?.points.length ?? 0),
      output: this.ws ? 'binary' : 'rle',
    };
    if (next.box && next.box !== prev?.box) message.box = next.box;
    const { body, maskFrames } = await this.send(message);
    const masks: Mask[] = body.masks.map((m: any) => replyMask(m, maskFrames ?? []));
    return { masks, best: body.best, roundTripMs: performance.now() - start, decoderMs: body.latency_ms };
  }

  async undo(): Promise<void> {
    await this.send({ type: 'undo' });
  }

  async reset(): Promise<void> {
    await this.send({ type: 'reset' });
  }

  close(): void {
    this.ws?.close();
    void this.api.deleteSession(this.sid);
  }
}
