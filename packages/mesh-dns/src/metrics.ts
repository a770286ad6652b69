import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** How a query ended, the `result` label of mesh_dns_queries_total. */
export type QueryResult = 'local' | 'local_nodata' | 'forwarded' | 'cache_hit' | 'servfail' | 'formerr' | 'notimp' | 'refused';
/** Where the answer came from, the `source` label of the latency histogram. */
export type AnswerSource = 'local' | 'cache' | 'upstream' | 'error';

const TYPE_NAMES: Record<number, string> = { 1: 'A', 2: 'NS', 5: 'CNAME', 6: 'SOA', 12: 'PTR', 15: 'MX', 16: 'TXT', 28: 'AAAA', 33: 'SRV', 35: 'NAPTR', 64: 'SVCB', 65: 'HTTPS', 255: 'ANY' };
const SOURCES: AnswerSource[] = ['local', 'cache', 'upstream', 'error'];
/** seconds: from 10 µs (a local answer) to 5 s (an upstream timing out) */
const BUCKETS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export function typeName(qtype: number): string {
  return TYPE_NAMES[qtype] ?? 'OTHER';
}

class FastHistogram {
  readonly counts = new Array<number>(BUCKETS.length).fill(0);
  sum = 0;
  count = 0;
  observe(seconds: number): void {
    this.sum += seconds;
    this.count++;
    for (let i = 0; i < BUCKETS.length; i++) {
      if (seconds <= BUCKETS[i]) {
        this.counts[i]++;
        return;
      }
    }
  }
}

/**
 * The counters. The hot path only bumps plain numbers; prom-client reads them when scraped (its
 * `collect` hooks), so a local answer pays no label hashing or closure allocation.
 */
export class DnsMetrics {
  readonly registry = new Registry();
  /** per result, counts by query type: integer-keyed maps, no string built per query */
  private readonly queries: Record<QueryResult, Map<number, number>> = {
    local: new Map(),
    local_nodata: new Map(),
    forwarded: new Map(),
    cache_hit: new Map(),
    servfail: new Map(),
    formerr: new Map(),
    notimp: new Map(),
    refused: new Map(),
  };
  private readonly latency = new Map<AnswerSource, FastHistogram>(SOURCES.map((s) => [s, new FastHistogram()]));
  private readonly upstreamFailureCounts = new Map<string, number>();
  answeredLocally = 0;
  forwarded = 0;
  cacheHits = 0;
  droppedPackets = 0;

  constructor(cacheSize: () => number, upstreamHealth: () => Record<string, boolean> = () => ({})) {
    // prom-client calls `collect` with `this` bound to the metric; reach our counters through these.
    const queries = this.queries;
    const latency = this.latency;
    const upstreamFailureCounts = this.upstreamFailureCounts;
    new Counter({
      name: 'mesh_dns_queries_total',
      help: 'DNS queries by query type and result',
      labelNames: ['type', 'result'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [result, byType] of Object.entries(queries)) {
          for (const [qtype, value] of byType) this.inc({ type: typeName(qtype), result }, value);
        }
      },
    });
    const simple = (name: string, help: string, read: () => number): void => {
      new Counter({ name, help, registers: [this.registry], collect() { this.reset(); this.inc(read()); } });
    };
    simple('mesh_dns_answered_locally_total', 'queries for mesh names answered from the name table', () => this.answeredLocally);
    simple('mesh_dns_forwarded_total', 'queries forwarded to an upstream resolver', () => this.forwarded);
    simple('mesh_dns_cache_hits_total', 'queries answered from the upstream answer cache', () => this.cacheHits);
    simple('mesh_dns_dropped_packets_total', 'packets dropped without an answer (responses, runts, over limits)', () => this.droppedPackets);
    new Counter({
      name: 'mesh_dns_upstream_failures_total',
      help: 'failed upstream attempts (forwarded queries and /health probes: timed out, refused, unreachable, blocked, reset), by upstream',
      labelNames: ['upstream'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [upstream, value] of upstreamFailureCounts) this.inc({ upstream }, value);
      },
    });
    new Gauge({
      name: 'mesh_dns_upstream_healthy',
      help: 'whether the upstream answered its last query or probe (1) or failed it (0), by upstream',
      labelNames: ['upstream'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [upstream, healthy] of Object.entries(upstreamHealth())) this.set({ upstream }, healthy ? 1 : 0);
      },
    });
    new Gauge({ name: 'mesh_dns_cache_entries', help: 'answers held in the upstream answer cache', registers: [this.registry], collect() { this.set(cacheSize()); } });
    new Histogram({
      name: 'mesh_dns_query_duration_seconds',
      help: 'time from receiving a query to sending its answer, by answer source',
      labelNames: ['source'],
      buckets: BUCKETS,
      registers: [this.registry],
      collect() {
        // prom-client offers no way to load precomputed buckets; fill its per-label entries (pinned 15.1.3 layout).
        this.reset();
        const map = (this as unknown as { hashMap: Record<string, { labels: { source: string }; bucketValues: Record<number, number>; sum: number; count: number }> }).hashMap;
        for (const source of SOURCES) {
          const h = latency.get(source)!;
          this.zero({ source });
          const entry = Object.values(map).find((e) => e.labels.source === source)!;
          BUCKETS.forEach((bound, i) => (entry.bucketValues[bound] = h.counts[i]));
          entry.sum = h.sum;
          entry.count = h.count;
        }
      },
    });
  }

  query(qtype: number, result: QueryResult): void {
    const byType = this.queries[result];
    byType.set(qtype, (byType.get(qtype) ?? 0) + 1);
  }

  observe(source: AnswerSource, seconds: number): void {
    this.latency.get(source)!.observe(seconds);
  }

  upstreamFailure(upstream: string): void {
    this.upstreamFailureCounts.set(upstream, (this.upstreamFailureCounts.get(upstream) ?? 0) + 1);
  }

  /** Plain totals for /config_dump and /status. */
  snapshot(): { queries: Record<string, number>; answeredLocally: number; forwarded: number; cacheHits: number; droppedPackets: number; upstreamFailures: Record<string, number> } {
    return {
      queries: this.queryTotals(),
      answeredLocally: this.answeredLocally,
      forwarded: this.forwarded,
      cacheHits: this.cacheHits,
      droppedPackets: this.droppedPackets,
      upstreamFailures: Object.fromEntries(this.upstreamFailureCounts),
    };
  }

  /** `TYPE|result` -> count, types by name (several unnamed types add up under OTHER). */
  private queryTotals(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [result, byType] of Object.entries(this.queries)) {
      for (const [qtype, value] of byType) {
        const key = `${typeName(qtype)}|${result}`;
        out[key] = (out[key] ?? 0) + value;
      }
    }
    return out;
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
