// The browser's copy of embedding bundles (and the images they belong to), in IndexedDB, so an
// image opened again decodes without downloading its bundle. Entries are evicted least recently
// used first once their bytes pass the quota. Two stores: small records (listed and sorted for
// eviction without reading any bundle) and the bytes themselves.

export interface EntryInfo {
  id: string; // the server's image id (content hash)
  etag: string; // the bundle's ETag: changes with the model
  name: string;
  width: number;
  height: number;
  bytes: number; // bundle + image
  hasImage: boolean;
  lastUsed: number;
}

export interface CacheEntry extends EntryInfo {
  bundle: ArrayBuffer;
  image: Blob | null; // the picture itself, when this browser opened it (preloads have none)
}

const DB_NAME = 'splitseg';
const INFO = 'entries';
const DATA = 'data'; // {id, bundle, image}

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

export class BundleCache {
  private constructor(
    private db: IDBDatabase,
    public quotaBytes: number,
  ) {}

  static async open(quotaBytes: number): Promise<BundleCache> {
    const open = indexedDB.open(DB_NAME, 1);
    open.onupgradeneeded = () => {
      open.result.createObjectStore(INFO, { keyPath: 'id' }).createIndex('lastUsed', 'lastUsed');
      open.result.createObjectStore(DATA, { keyPath: 'id' });
    };
    return new BundleCache(await request(open), quotaBytes);
  }

  // The entry for an image, marked as just used; null when absent or for another model's ETag.
  async get(id: string, etag?: string): Promise<CacheEntry | null> {
    const tx = this.db.transaction([INFO, DATA], 'readwrite');
    const info = (await request(tx.objectStore(INFO).get(id))) as EntryInfo | undefined;
    if (!info || (etag !== undefined && info.etag !== etag)) return null;
    const data = await request(tx.objectStore(DATA).get(id));
    if (!data) return null;
    info.lastUsed = Date.now();
    tx.objectStore(INFO).put(info);
    await done(tx);
    return { ...info, bundle: data.bundle, image: data.image };
  }

  // Stores an entry (keeping a stored image when the new one has none), then evicts.
  async put(entry: Omit<CacheEntry, 'bytes' | 'lastUsed' | 'hasImage'>): Promise<void> {
    const tx = this.db.transaction([INFO, DATA], 'readwrite');
    const old = (await request(tx.objectStore(DATA).get(entry.id))) as { image: Blob | null } | undefined;
    const image = entry.image ?? old?.image ?? null;
    const { bundle, image: _image, ...rest } = entry;
    const info: EntryInfo = { ...rest, bytes: bundle.byteLength + (image?.size ?? 0), hasImage: image !== null, lastUsed: Date.now() };
    tx.objectStore(INFO).put(info);
    tx.objectStore(DATA).put({ id: entry.id, bundle, image });
    await done(tx);
    await this.evict();
  }

  // Every entry's record, most recently used first.
  async list(): Promise<EntryInfo[]> {
    const tx = this.db.transaction(INFO, 'readonly');
    const all = (await request(tx.objectStore(INFO).index('lastUsed').getAll())) as EntryInfo[];
    return all.reverse();
  }

  // Drops least recently used entries until the total fits the quota; returns the ids dropped.
  async evict(): Promise<string[]> {
    const entries = await this.list();
    let total = entries.reduce((sum, e) => sum + e.bytes, 0);
    const dropped: string[] = [];
    const tx = this.db.transaction([INFO, DATA], 'readwrite');
    for (let i = entries.length - 1; i >= 0 && total > this.quotaBytes; i--) {
      tx.objectStore(INFO).delete(entries[i].id);
      tx.objectStore(DATA).delete(entries[i].id);
      total -= entries[i].bytes;
      dropped.push(entries[i].id);
    }
    await done(tx);
    return dropped;
  }
}
