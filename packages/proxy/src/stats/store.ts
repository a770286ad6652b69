/**
 * Envoy-named stats kept as plain objects so the hot path only bumps numbers.
 * Each stat has its full Envoy name (`cluster.out#80#order.upstream_rq_total`)
 * plus a tag-extracted form for Prometheus (`cluster.upstream_rq_total` with
 * `envoy_cluster_name="out#80#order"`).
 */

export type StatKind = 'counter' | 'gauge' | 'histogram';

export interface StatMeta {
  readonly name: string;
  readonly kind: StatKind;
  readonly tagExtractedName: string;
  readonly tags: Readonly<Record<string, string>>;
}

export class Counter implements StatMeta {
  readonly kind = 'counter' as const;
  value = 0;
  used = false;
  constructor(readonly name: string, readonly tagExtractedName: string, readonly tags: Readonly<Record<string, string>>) {}
  inc(n = 1): void { this.value += n; this.used = true; }
}

export class Gauge implements StatMeta {
  readonly kind = 'gauge' as const;
  value = 0;
  used = false;
  constructor(readonly name: string, readonly tagExtractedName: string, readonly tags: Readonly<Record<string, string>>) {}
  inc(n = 1): void { this.value += n; this.used = true; }
  dec(n = 1): void { this.value -= n; this.used = true; }
  set(v: number): void { this.value = v; this.used = true; }
}

/** Envoy's default histogram buckets, in milliseconds. */
export const DEFAULT_BUCKETS_MS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];

export class Histogram implements StatMeta {
  readonly kind = 'histogram' as const;
  readonly counts: number[];
  sum = 0;
  count = 0;
  used = false;
  constructor(readonly name: string, readonly tagExtractedName: string, readonly tags: Readonly<Record<string, string>>, readonly buckets = DEFAULT_BUCKETS_MS) {
    this.counts = new Array<number>(buckets.length).fill(0);
  }
  record(ms: number): void {
    this.sum += ms;
    this.count++;
    this.used = true;
    const b = this.buckets;
    for (let i = 0; i < b.length; i++) {
      if (ms <= b[i]!) { this.counts[i]!++; return; }
    }
  }
  /** Approximate quantile from the buckets (upper bound of the bucket holding it). */
  quantile(q: number): number | undefined {
    if (this.count === 0) return undefined;
    const target = q * this.count;
    let acc = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      acc += this.counts[i]!;
      if (acc >= target) return this.buckets[i];
    }
    return this.buckets[this.buckets.length - 1];
  }
}

export type Stat = Counter | Gauge | Histogram;

/** Tag extraction for the scopes this proxy creates (a subset of Envoy's default tag rules). */
const TAG_SCOPES: { prefix: string; tag: string }[] = [
  { prefix: 'cluster.', tag: 'envoy_cluster_name' },
  { prefix: 'http.', tag: 'envoy_http_conn_manager_prefix' },
  { prefix: 'listener.', tag: 'envoy_listener_address' },
];

export class StatsStore {
  private readonly stats = new Map<string, Stat>();

  /** `scope` is the tagged part (a cluster name, a listener address) or undefined for untagged stats. */
  counter(prefix: string, scope: string | undefined, leaf: string): Counter {
    return this.get(prefix, scope, leaf, 'counter') as Counter;
  }
  gauge(prefix: string, scope: string | undefined, leaf: string): Gauge {
    return this.get(prefix, scope, leaf, 'gauge') as Gauge;
  }
  histogram(prefix: string, scope: string | undefined, leaf: string): Histogram {
    return this.get(prefix, scope, leaf, 'histogram') as Histogram;
  }

  private get(prefix: string, scope: string | undefined, leaf: string, kind: StatKind): Stat {
    const name = scope === undefined ? `${prefix}${leaf}` : `${prefix}${scope}.${leaf}`;
    const existing = this.stats.get(name);
    if (existing) return existing;
    const rule = scope === undefined ? undefined : TAG_SCOPES.find((r) => r.prefix === prefix);
    const tags: Record<string, string> = rule && scope !== undefined ? { [rule.tag]: scope } : {};
    // a scope without a tag rule (sds.<secret>.) stays in the name, as Envoy prints it without a tag extractor
    let tagExtracted = rule || scope === undefined ? `${prefix}${leaf}` : name;
    // Envoy's response-code-class tag: upstream_rq_2xx -> upstream_rq_xx{envoy_response_code_class="2"}.
    const cls = /^(upstream|downstream)_rq_([1-5])xx$/.exec(leaf);
    if (cls) {
      tagExtracted = `${prefix}${cls[1]}_rq_xx`;
      tags.envoy_response_code_class = cls[2]!;
    }
    const stat = kind === 'counter' ? new Counter(name, tagExtracted, tags)
      : kind === 'gauge' ? new Gauge(name, tagExtracted, tags)
      : new Histogram(name, tagExtracted, tags);
    this.stats.set(name, stat);
    return stat;
  }

  all(): Stat[] {
    return [...this.stats.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Drops the stats of a scope that went away (a removed cluster). */
  removeScope(prefix: string, scope: string): void {
    const p = `${prefix}${scope}.`;
    for (const name of this.stats.keys()) if (name.startsWith(p)) this.stats.delete(name);
  }

  /** /reset_counters: counters to zero, gauges untouched (Envoy also clears histograms). */
  resetCounters(): void {
    for (const s of this.stats.values()) {
      if (s.kind === 'counter') s.value = 0;
      else if (s.kind === 'histogram') { s.counts.fill(0); s.sum = 0; s.count = 0; }
    }
  }
}
