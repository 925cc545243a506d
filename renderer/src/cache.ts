/**
 * LRU of rendered images, bounded by bytes, with a per-entry lifetime: charts whose range reaches the
 * present expire quickly (their last bin is still filling), past ranges live longer.
 */
export interface CachedImage {
  png: Buffer;
  etag: string;
  noData: boolean;
  /** Seconds a client may reuse it (Cache-Control max-age). */
  maxAgeS: number;
  /** The resolution read (pkg/core HistLevel) and, when it fell back to the 10 s data, why. */
  level?: string;
  fallback?: string;
  /** The range was read from the fleet rollups (X-Tcplat-Fleet-Rollups: true). */
  fleet?: boolean;
  /** Server-Timing of the render that produced it (query, prepare, render = queue + draw, draw). */
  timing?: string;
  expiresAt: number;
}

export class ImageCache {
  private readonly map = new Map<string, CachedImage>();
  private bytes = 0;
  hits = 0;
  misses = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly now: () => number = Date.now,
  ) {}

  get(key: string): CachedImage | undefined {
    const e = this.map.get(key);
    if (!e || e.expiresAt <= this.now()) {
      if (e) this.delete(key);
      this.misses++;
      return undefined;
    }
    // Re-insert: Map keeps insertion order, so the first key is always the least recently used.
    this.map.delete(key);
    this.map.set(key, e);
    this.hits++;
    return e;
  }

  set(key: string, e: CachedImage): void {
    const size = e.png.length + key.length;
    if (size > this.maxBytes / 4) return; // one image may not evict most of the cache
    this.delete(key);
    this.map.set(key, e);
    this.bytes += size;
    while (this.bytes > this.maxBytes) {
      const oldest = this.map.keys().next().value as string;
      this.delete(oldest);
    }
  }

  private delete(key: string): void {
    const e = this.map.get(key);
    if (!e) return;
    this.map.delete(key);
    this.bytes -= e.png.length + key.length;
  }

  stats(): { entries: number; bytes: number; hits: number; misses: number } {
    return { entries: this.map.size, bytes: this.bytes, hits: this.hits, misses: this.misses };
  }
}
