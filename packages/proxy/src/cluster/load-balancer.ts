import { createHash } from 'node:crypto';
import type { Host } from './host';

export type LbPolicy = 'round_robin' | 'least_request' | 'random' | 'ring_hash';

/** What a load balancer may look at for one request. */
export interface LbContext {
  /** Value of the cluster's hash header (ring_hash); undefined when absent. */
  hashKey?: string;
  /** Hosts to avoid (a retry prefers a different host where one exists). */
  exclude?: Host;
}

export interface LoadBalancer {
  readonly policy: LbPolicy;
  /** Picks from `hosts` (already filtered to the healthy set, or all hosts in panic). */
  pick(hosts: readonly Host[], ctx: LbContext): Host | undefined;
}

function withoutExcluded(hosts: readonly Host[], exclude: Host | undefined): readonly Host[] {
  if (!exclude || hosts.length < 2) return hosts;
  const rest = hosts.filter((h) => h !== exclude);
  return rest.length > 0 ? rest : hosts;
}

/** Weighted round robin: smooth (nginx-style) so weights interleave instead of bursting. */
export class RoundRobinLb implements LoadBalancer {
  readonly policy = 'round_robin' as const;
  private current = new Map<Host, number>();
  private index = 0;

  pick(all: readonly Host[], ctx: LbContext): Host | undefined {
    const hosts = withoutExcluded(all, ctx.exclude);
    if (hosts.length === 0) return undefined;
    if (hosts.length === 1) return hosts[0];
    let uniform = true;
    for (const h of hosts) if (h.weight !== hosts[0]!.weight) { uniform = false; break; }
    if (uniform) {
      this.index = (this.index + 1) % hosts.length;
      return hosts[this.index];
    }
    let total = 0;
    let best: Host | undefined;
    let bestValue = -Infinity;
    for (const h of hosts) {
      const w = Math.max(1, h.weight);
      total += w;
      const v = (this.current.get(h) ?? 0) + w;
      this.current.set(h, v);
      if (v > bestValue) { bestValue = v; best = h; }
    }
    this.current.set(best!, bestValue - total);
    return best;
  }
}

/** Envoy's least request: power of two random choices, fewest active requests wins. */
export class LeastRequestLb implements LoadBalancer {
  readonly policy = 'least_request' as const;
  pick(all: readonly Host[], ctx: LbContext): Host | undefined {
    const hosts = withoutExcluded(all, ctx.exclude);
    if (hosts.length === 0) return undefined;
    if (hosts.length === 1) return hosts[0];
    const a = hosts[Math.floor(Math.random() * hosts.length)]!;
    let b = hosts[Math.floor(Math.random() * hosts.length)]!;
    if (b === a) b = hosts[(hosts.indexOf(a) + 1) % hosts.length]!;
    // Weight scales the comparison so heavier hosts take proportionally more.
    return a.stats.rq_active / Math.max(1, a.weight) <= b.stats.rq_active / Math.max(1, b.weight) ? a : b;
  }
}

export class RandomLb implements LoadBalancer {
  readonly policy = 'random' as const;
  pick(all: readonly Host[], ctx: LbContext): Host | undefined {
    const hosts = withoutExcluded(all, ctx.exclude);
    if (hosts.length === 0) return undefined;
    let total = 0;
    for (const h of hosts) total += Math.max(1, h.weight);
    let r = Math.random() * total;
    for (const h of hosts) {
      r -= Math.max(1, h.weight);
      if (r < 0) return h;
    }
    return hosts[hosts.length - 1];
  }
}

function hash64(text: string): bigint {
  return createHash('md5').update(text).digest().readBigUInt64BE(0);
}

/**
 * Ketama-style consistent hashing on a request header. The ring is rebuilt only
 * when the host set changes; requests without the header fall back to random.
 */
export class RingHashLb implements LoadBalancer {
  readonly policy = 'ring_hash' as const;
  private ring: { point: bigint; host: Host }[] = [];
  private ringHosts: readonly Host[] | undefined;
  private readonly fallback = new RandomLb();

  constructor(private readonly replicasPerWeight = 64) {}

  private build(hosts: readonly Host[]): void {
    const ring: { point: bigint; host: Host }[] = [];
    for (const h of hosts) {
      const n = this.replicasPerWeight * Math.max(1, h.weight);
      for (let i = 0; i < n; i++) ring.push({ point: hash64(`${h.address}:${h.port}_${i}`), host: h });
    }
    ring.sort((x, y) => (x.point < y.point ? -1 : x.point > y.point ? 1 : 0));
    this.ring = ring;
    this.ringHosts = hosts;
  }

  private sameHosts(hosts: readonly Host[]): boolean {
    const prev = this.ringHosts;
    if (!prev || prev.length !== hosts.length) return false;
    for (let i = 0; i < hosts.length; i++) if (prev[i] !== hosts[i]) return false;
    return true;
  }

  pick(hosts: readonly Host[], ctx: LbContext): Host | undefined {
    if (hosts.length === 0) return undefined;
    if (ctx.hashKey === undefined) return this.fallback.pick(hosts, ctx);
    if (!this.sameHosts(hosts)) this.build(hosts);
    const key = hash64(ctx.hashKey);
    let lo = 0;
    let hi = this.ring.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ring[mid]!.point < key) lo = mid + 1;
      else hi = mid;
    }
    return this.ring[lo === this.ring.length ? 0 : lo]!.host;
  }
}

export function createLoadBalancer(policy: LbPolicy): LoadBalancer {
  switch (policy) {
    case 'least_request': return new LeastRequestLb();
    case 'random': return new RandomLb();
    case 'ring_hash': return new RingHashLb();
    default: return new RoundRobinLb();
  }
}
