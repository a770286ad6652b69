import type { ClusterStatScope, GaugeLike, CounterLike } from './types';

/**
 * Envoy's circuit breakers for one cluster: limits on concurrent connections,
 * pending (queued for a connection) requests, active requests and active retries,
 * per routing priority. A full breaker fails the request at once (503, flag UO);
 * nothing waits beyond the limit.
 */

export type RoutingPriority = 'default' | 'high';

export interface BreakerThresholds {
  maxConnections: number;
  maxPendingRequests: number;
  maxRequests: number;
  maxRetries: number;
}

/** Envoy's defaults. */
export const DEFAULT_BREAKER_THRESHOLDS: Readonly<BreakerThresholds> = Object.freeze({
  maxConnections: 1024,
  maxPendingRequests: 1024,
  maxRequests: 1024,
  maxRetries: 3,
});

export interface CircuitBreakersConfig extends Partial<BreakerThresholds> {
  /** Thresholds for `high` priority routes; Envoy's defaults when absent. */
  high?: Partial<BreakerThresholds>;
}

/** Call once when the connection, request or retry ends. Calling twice is harmless. */
export type Release = () => void;

type Resource = 'cx' | 'pending' | 'rq' | 'retries';

const OVERFLOW_COUNTER: Record<Resource, string> = {
  cx: 'upstream_cx_overflow',
  pending: 'upstream_rq_pending_overflow',
  rq: 'upstream_rq_pending_overflow', // Envoy counts max_requests overflow here too
  retries: 'upstream_rq_retry_overflow',
};

const OPEN_GAUGE: Record<Resource, string> = { cx: 'cx_open', pending: 'rq_pending_open', rq: 'rq_open', retries: 'rq_retry_open' };
const REMAINING_GAUGE: Record<Resource, string> = { cx: 'remaining_cx', pending: 'remaining_pending', rq: 'remaining_rq', retries: 'remaining_retries' };
const LIMIT_FIELD: Record<Resource, keyof BreakerThresholds> = { cx: 'maxConnections', pending: 'maxPendingRequests', rq: 'maxRequests', retries: 'maxRetries' };

class PriorityBreakers {
  readonly active: Record<Resource, number> = { cx: 0, pending: 0, rq: 0, retries: 0 };
  private readonly open: Record<Resource, GaugeLike> | undefined;
  private readonly remaining: Record<Resource, GaugeLike> | undefined;
  private readonly overflow: Record<Resource, CounterLike> | undefined;

  constructor(readonly priority: RoutingPriority, readonly thresholds: BreakerThresholds, stats?: ClusterStatScope) {
    if (stats) {
      const g = (name: string) => stats.gauge(`circuit_breakers.${priority}.${name}`);
      this.open = { cx: g(OPEN_GAUGE.cx), pending: g(OPEN_GAUGE.pending), rq: g(OPEN_GAUGE.rq), retries: g(OPEN_GAUGE.retries) };
      this.remaining = { cx: g(REMAINING_GAUGE.cx), pending: g(REMAINING_GAUGE.pending), rq: g(REMAINING_GAUGE.rq), retries: g(REMAINING_GAUGE.retries) };
      this.overflow = {
        cx: stats.counter(OVERFLOW_COUNTER.cx),
        pending: stats.counter(OVERFLOW_COUNTER.pending),
        rq: stats.counter(OVERFLOW_COUNTER.rq),
        retries: stats.counter(OVERFLOW_COUNTER.retries),
      };
      for (const r of ['cx', 'pending', 'rq', 'retries'] as Resource[]) this.publish(r);
    }
  }

  private publish(r: Resource): void {
    const limit = this.thresholds[LIMIT_FIELD[r]];
    this.open?.[r].set(this.active[r] >= limit ? 1 : 0);
    this.remaining?.[r].set(Math.max(0, limit - this.active[r]));
  }

  tryAcquire(r: Resource, countOverflow = true): Release | null {
    if (this.active[r] >= this.thresholds[LIMIT_FIELD[r]]) {
      if (countOverflow) this.overflow?.[r].inc();
      return null;
    }
    this.active[r]++;
    this.publish(r);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.active[r]--;
      this.publish(r);
    };
  }

  canAcquire(r: Resource): boolean {
    return this.active[r] < this.thresholds[LIMIT_FIELD[r]];
  }
}

export class CircuitBreakers {
  private readonly byPriority: Record<RoutingPriority, PriorityBreakers>;

  constructor(config: CircuitBreakersConfig = {}, stats?: ClusterStatScope) {
    const { high, ...defaults } = config;
    this.byPriority = {
      default: new PriorityBreakers('default', resolveThresholds(defaults), stats),
      high: new PriorityBreakers('high', resolveThresholds(high ?? {}), stats),
    };
  }

  /** One active request (max_requests). Null = overflow: answer 503 with flag UO. */
  tryRequest(priority: RoutingPriority = 'default', countOverflow = true): Release | null { return this.byPriority[priority].tryAcquire('rq', countOverflow); }
  /** One request waiting for a pooled connection (max_pending_requests). */
  tryPending(priority: RoutingPriority = 'default'): Release | null { return this.byPriority[priority].tryAcquire('pending'); }
  /** One upstream connection (max_connections); counts upstream_cx_overflow when full. */
  tryConnection(priority: RoutingPriority = 'default'): Release | null { return this.byPriority[priority].tryAcquire('cx'); }
  /** One retry in flight (max_retries); counts upstream_rq_retry_overflow when full. */
  tryRetry(priority: RoutingPriority = 'default'): Release | null { return this.byPriority[priority].tryAcquire('retries'); }
  /** Whether a new connection may be opened, without counting an overflow. */
  canOpenConnection(priority: RoutingPriority = 'default'): boolean { return this.byPriority[priority].canAcquire('cx'); }

  thresholds(priority: RoutingPriority = 'default'): Readonly<BreakerThresholds> { return this.byPriority[priority].thresholds; }
  active(priority: RoutingPriority = 'default'): Readonly<Record<'cx' | 'pending' | 'rq' | 'retries', number>> { return this.byPriority[priority].active; }

  /** Envoy's /clusters text lines: `NAME::default_priority::max_connections::1024`, ... then high_priority. */
  clustersLines(clusterName: string): string[] {
    const lines: string[] = [];
    for (const p of ['default', 'high'] as RoutingPriority[]) {
      const t = this.byPriority[p].thresholds;
      const prefix = `${clusterName}::${p}_priority::`;
      lines.push(`${prefix}max_connections::${t.maxConnections}`, `${prefix}max_pending_requests::${t.maxPendingRequests}`,
        `${prefix}max_requests::${t.maxRequests}`, `${prefix}max_retries::${t.maxRetries}`);
    }
    return lines;
  }

  /** Envoy's /clusters?format=json `circuit_breakers` object. */
  toJson(): { thresholds: { priority?: 'HIGH'; max_connections: number; max_pending_requests: number; max_requests: number; max_retries: number }[] } {
    return {
      thresholds: (['default', 'high'] as RoutingPriority[]).map((p) => {
        const t = this.byPriority[p].thresholds;
        const body = { max_connections: t.maxConnections, max_pending_requests: t.maxPendingRequests, max_requests: t.maxRequests, max_retries: t.maxRetries };
        // Envoy omits the DEFAULT priority enum value (proto3 zero value) in JSON.
        return p === 'high' ? { priority: 'HIGH' as const, ...body } : body;
      }),
    };
  }
}

function resolveThresholds(partial: Partial<BreakerThresholds>): BreakerThresholds {
  return {
    maxConnections: partial.maxConnections ?? DEFAULT_BREAKER_THRESHOLDS.maxConnections,
    maxPendingRequests: partial.maxPendingRequests ?? DEFAULT_BREAKER_THRESHOLDS.maxPendingRequests,
    maxRequests: partial.maxRequests ?? DEFAULT_BREAKER_THRESHOLDS.maxRequests,
    maxRetries: partial.maxRetries ?? DEFAULT_BREAKER_THRESHOLDS.maxRetries,
  };
}
