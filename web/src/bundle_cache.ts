// The browser's copy of embedding bundles (and the images they belong to), in IndexedDB, so an
// image opened again decodes without downloading its bundle. Entries are evicted least recently
// used first once their bytes pass the quota.

export interface CacheEntry {
  id: string; // the server's image id (content hash)
  etag: string; // the bundle's ETag: changes with the model
  bundle: ArrayBuffer;
  image: Blob | null; // the picture itself, when this browser opened it (preloads have none)
  name: string;
  width: number;
  height: number;
  bytes: number;
  lastUsed: number;
}

export type EntrySummary = Omit<CacheEntry, 'bundle' | 'image'> & { hasImage: boolean };

const DB_NAME = 'splitseg';
const STORE = 'bundles';

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
      const store = open.result.createObjectStore(STORE, { keyPath: 'id' });
      store.createIndex('lastUsed', 'lastUsed');
    };
    return new BundleCache(await request(open), quotaBytes);
  }

  // The entry for an image, marked as just used; null when absent or for another model's ETag.
  async get(id: string, etag?: string): Promise<CacheEntry | null> {
    const tx = this.db.transaction(STORE, 'readwrite');
    const store = tx.objectStore(STORE);
    const entry = (await request(store.get(id))) as CacheEntry | undefined;
    if (!entry || (etag !== undefined && entry.etag !== etag)) return null;
    entry.lastUsed = Date.now();
    store.put(entry);
    await done(tx);
    return entry;
  }

  // Stores an entry (keeping a stored image when the new one has none), then evicts.
  async put(entry: Omit<CacheEntry, 'bytes' | 'lastUsed'>): Promise<void> {
    const tx = this.db.transaction(STORE, 'readwrite');
    const store = tx.objectStore(STORE);
    const old = (await request(store.get(entry.id))) as CacheEntry | undefined;
    const image = entry.image ?? old?.image ?? null;
    const bytes = entry.bundle.byteLength + (image?.size ?? 0);
    store.put({ ...entry, image, bytes, lastUsed: Date.now() });
    await done(tx);
    await this.evict();
  }

  async list(): Promise<EntrySummary[]> {
    const tx = this.db.transaction(STORE, 'readonly');
    const out: EntrySummary[] = [];
    const cursor = tx.objectStore(STORE).index('lastUsed').openCursor(null, 'prev');
    await new Promise<void>((resolve, reject) => {
      cursor.onsuccess = () => {
        const c = cursor.result;
        if (!c) return resolve();
        const { bundle: _bundle, image, ...rest } = c.value as CacheEntry;
        out.push({ ...rest, hasImage: image !== null });
        c.continue();
      };
      cursor.onerror = () => reject(cursor.error);
    });
    return out;
  }

  // Drops least recently used entries until the total fits the quota; returns the ids dropped.
  async evict(): Promise<string[]> {
    const entries = await this.list(); // most recent first
    let total = entries.reduce((sum, e) => sum + e.bytes, 0);
    const dropped: string[] = [];
    const tx = this.db.transaction(STORE, 'readwrite');
    for (let i = entries.length - 1; i >= 0 && total > this.quotaBytes; i--) {
      tx.objectStore(STORE).delete(entries[i].id);
      total -= entries[i].bytes;
      dropped.push(entries[i].id);
    }
    await done(tx);
    return dropped;
  }
}
