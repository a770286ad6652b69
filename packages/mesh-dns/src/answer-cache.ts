/** A cached upstream answer: the bytes as relayed, where its TTLs are, and when it was stored. */
interface CachedAnswer {
  bytes: Buffer;
  ttlOffsets: number[];
  storedAt: number;
  expiresAt: number;
}

export interface CacheStats {
  entries: number;
  maxEntries: number;
  hits: number;
  misses: number;
  inserts: number;
  evictions: number;
}

/**
 * Upstream answers by question, kept for their TTL, bounded in entries (least recently used goes
 * first: a Map keeps insertion order, and a hit re-inserts). A hit returns a copy with every TTL
 * lowered by the time spent in the cache, so clients never hold a record past its real expiry.
 */
export class AnswerCache {
  private readonly entries = new Map<string, CachedAnswer>();
  private hits = 0;
  private misses = 0;
  private inserts = 0;
  private evictions = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly now: () => number = Date.now,
  ) {}

  get(key: string): Buffer | undefined {
    const hit = this.entries.get(key);
    if (hit === undefined) {
      this.misses++;
      return undefined;
    }
    const now = this.now();
    if (now >= hit.expiresAt) {
      this.entries.delete(key);
      this.misses++;
      return undefined;
    }
    this.entries.delete(key);
    this.entries.set(key, hit);
    this.hits++;
    const out = Buffer.from(hit.bytes);
    const elapsed = Math.floor((now - hit.storedAt) / 1000);
    if (elapsed > 0) {
      for (const off of hit.ttlOffsets) out.writeUInt32BE(Math.max(0, out.readUInt32BE(off) - elapsed), off);
    }
    return out;
  }

  set(key: string, bytes: Buffer, ttlOffsets: number[], ttlSeconds: number): void {
    if (this.maxEntries <= 0 || ttlSeconds <= 0) return;
    const now = this.now();
    this.entries.delete(key);
    while (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
      this.evictions++;
    }
    this.entries.set(key, { bytes: Buffer.from(bytes), ttlOffsets, storedAt: now, expiresAt: now + ttlSeconds * 1000 });
    this.inserts++;
  }

  clear(): void {
    this.entries.clear();
  }

  stats(): CacheStats {
    return { entries: this.entries.size, maxEntries: this.maxEntries, hits: this.hits, misses: this.misses, inserts: this.inserts, evictions: this.evictions };
  }

  /** The cached questions and their remaining seconds, for /config_dump (at most `limit`). */
  list(limit: number): { key: string; ttlRemaining: number; bytes: Buffer }[] {
    const now = this.now();
    const out: { key: string; ttlRemaining: number; bytes: Buffer }[] = [];
    for (const [key, entry] of this.entries) {
      if (out.length >= limit) break;
      out.push({ key, ttlRemaining: Math.max(0, Math.ceil((entry.expiresAt - now) / 1000)), bytes: entry.bytes });
    }
    return out;
  }
}
