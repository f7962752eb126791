// The splitseg HTTP API (/api/v1, see GET /api/v1/openapi.json) as the client uses it.

export interface ImageStatus {
  id: string;
  width: number;
  height: number;
  status: 'pending' | 'processing' | 'completed' | 'failed' | 'missing' | string;
  error?: string;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

export class Api {
  constructor(
    public apiKey = '',
    private base = '/api/v1',
  ) {}

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return this.apiKey ? { ...extra, 'X-API-Key': this.apiKey } : extra;
  }

  private async call(method: string, path: string, body?: BodyInit, type?: string): Promise<Response> {
    const r = await fetch(this.base + path, {
      method,
      body,
      headers: this.headers(type ? { 'Content-Type': type } : {}),
    });
    if (!r.ok) {
      const e = await r.json().catch(() => null);
      throw new ApiError(r.status, e?.error?.code ?? 'http_' + r.status, e?.error?.message ?? r.statusText);
    }
    return r;
  }

  async upload(image: Blob): Promise<ImageStatus> {
    return (await this.call('POST', '/images', image, image.type || 'application/octet-stream')).json();
  }

  async status(id: string): Promise<ImageStatus> {
    return (await this.call('GET', `/images/${id}`)).json();
  }

  // Polls until the embedding exists; onStatus sees every answer. Throws when encoding failed.
  async waitEncoded(id: string, onStatus: (s: ImageStatus) => void): Promise<ImageStatus> {
    for (let delay = 100; ; delay = Math.min(delay * 1.5, 1000)) {
      const s = await this.status(id);
      onStatus(s);
      if (s.status === 'completed') return s;
      if (s.status === 'failed') throw new ApiError(500, 'encode_failed', s.error ?? 'encoding failed');
      if (s.status === 'missing') await this.call('POST', `/images/${id}/encode`);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  // The ETag of an image's bundle, without downloading it.
  async bundleEtag(id: string): Promise<string> {
    return (await this.call('HEAD', `/images/${id}/embedding`)).headers.get('ETag') ?? '';
  }

  async bundle(id: string): Promise<{ bytes: ArrayBuffer; etag: string }> {
    const r = await this.call('GET', `/images/${id}/embedding`);
    return { bytes: await r.arrayBuffer(), etag: r.headers.get('ETag') ?? '' };
  }

  // The decoder weights for the browser (from `splitseg models extract-decoder`); null when the
  // server has none.
  async decoderWeights(): Promise<ArrayBuffer | null> {
    try {
      return await (await this.call('GET', '/models/current/decoder')).arrayBuffer();
    } catch (e) {
      if (e instanceof ApiError && (e.status === 404 || e.status === 503)) return null;
      throw e;
    }
  }

  async createSession(imageId: string): Promise<string> {
    const r = await this.call('POST', '/sessions', JSON.stringify({ image_id: imageId }), 'application/json');
    return (await r.json()).session_id;
  }

  async deleteSession(sid: string): Promise<void> {
    await this.call('DELETE', `/sessions/${sid}`).catch(() => undefined);
  }

  // A session message over HTTP, as the WebSocket would carry it ({type: prompts|undo|reset}).
  async sessionMessage(sid: string, type: string, body: Record<string, unknown>): Promise<{ status: number; body: any }> {
    const r = await fetch(`${this.base}/sessions/${sid}/${type}`, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: this.headers({ 'Content-Type': 'application/json' }),
    });
    return { status: r.status, body: await r.json() };
  }

  socketUrl(sid: string): string {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}${this.base}/sessions/${sid}/ws`;
  }
}
