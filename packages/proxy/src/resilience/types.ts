/**
 * The small interfaces the resilience modules need from the data plane. They are
 * structural so the proxy's own `Host` (cluster/host.ts) and `StatsStore`
 * satisfy them without adapters, and each module can be used and tested alone.
 */

export type HealthFlag = 'failed_active_hc' | 'failed_outlier_check' | 'failed_eds_health';

/** The part of an upstream host the resilience modules read and write. */
export interface ResilienceHost {
  readonly address: string;
  readonly port: number;
  /** Any flag present makes the host unhealthy (Envoy's semantics). */
  healthFlags: Set<HealthFlag>;
  stats: { rq_timeout: number };
}

export interface CounterLike {
  inc(n?: number): void;
  readonly value: number;
}

export interface GaugeLike {
  inc(n?: number): void;
  dec(n?: number): void;
  set(v: number): void;
  readonly value: number;
}

/**
 * Stats of one cluster: `leaf` is the part after `cluster.NAME.`, e.g.
 * `upstream_rq_retry` or `outlier_detection.ejections_active`.
 */
export interface ClusterStatScope {
  counter(leaf: string): CounterLike;
  gauge(leaf: string): GaugeLike;
}

/** A self-contained stat scope for standalone use and tests; the proxy passes one backed by its StatsStore. */
export class MemoryStatScope implements ClusterStatScope {
  readonly values = new Map<string, { kind: 'counter' | 'gauge'; value: number }>();

  private stat(kind: 'counter' | 'gauge', leaf: string) {
    let s = this.values.get(leaf);
    if (!s) {
      s = { kind, value: 0 };
      this.values.set(leaf, s);
    }
    const entry = s;
    return {
      inc: (n = 1) => { entry.value += n; },
      dec: (n = 1) => { entry.value -= n; },
      set: (v: number) => { entry.value = v; },
      get value() { return entry.value; },
    };
  }

  counter(leaf: string): CounterLike { return this.stat('counter', leaf); }
  gauge(leaf: string): GaugeLike { return this.stat('gauge', leaf); }
  get(leaf: string): number { return this.values.get(leaf)?.value ?? 0; }
}

/** `IP:PORT`, with brackets for IPv6, as /clusters prints hosts. */
export function hostAddress(host: { address: string; port: number }): string {
  return host.address.includes(':') ? `[${host.address}]:${host.port}` : `${host.address}:${host.port}`;
}

/** A timer that never keeps the process alive on its own. */
export function unrefTimer(fn: () => void, ms: number): NodeJS.Timeout {
  const t = setTimeout(fn, ms);
  t.unref();
  return t;
}
