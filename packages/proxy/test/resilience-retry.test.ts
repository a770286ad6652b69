import { describe, expect, it } from 'vitest';
import { MeshError } from '@mesh-agent/shared-config';
import { CircuitBreakers } from '../src/resilience/circuit-breakers';
import { parseRetryPolicy, retryBackoffMs, isRetriableOutcome } from '../src/resilience/retry-policy';
import { MemoryStatScope } from '../src/resilience/types';

describe('retry policy parsing and back-off', () => {
  it('rejects an unknown retry_on condition with a clear error', () => {
    expect(() => parseRetryPolicy({ retryOn: '5xx,bogus' }, 'routes.virtualHosts[0].routes[0].route.retryPolicy')).toThrowError(MeshError);
    try {
      parseRetryPolicy({ retryOn: '5xx,bogus' }, 'routes.virtualHosts[0].routes[0].route.retryPolicy');
    } catch (e) {
      expect((e as MeshError).code).toBe('MESH_PROXY_RETRY_POLICY_INVALID');
      expect((e as MeshError).message).toContain('routes.virtualHosts[0].routes[0].route.retryPolicy.retryOn');
      expect((e as MeshError).message).toContain('"bogus"');
      expect((e as MeshError).hint).toContain('gateway-error');
    }
    expect(() => parseRetryPolicy({ retryOn: '5xx', numRetries: -1 })).toThrow(/numRetries/);
  });

  it("uses Envoy's jittered exponential back-off: [0, (2^N-1) x 25 ms], capped at 250 ms", () => {
    const p = parseRetryPolicy({ retryOn: '5xx' });
    expect(p.baseIntervalMs).toBe(25);
    expect(p.maxIntervalMs).toBe(250);
    expect(retryBackoffMs(p, 1, () => 0.999999)).toBe(25);
    expect(retryBackoffMs(p, 2, () => 0.999999)).toBe(75);
    expect(retryBackoffMs(p, 3, () => 0.999999)).toBe(175);
    expect(retryBackoffMs(p, 4, () => 0.999999)).toBe(250);
    expect(retryBackoffMs(p, 9, () => 0.999999)).toBe(250);
    expect(retryBackoffMs(p, 3, () => 0)).toBe(0);
  });

  it('maps retry_on conditions as Envoy does', () => {
    const gw = parseRetryPolicy({ retryOn: 'gateway-error' });
    expect(isRetriableOutcome(gw, { kind: 'response', status: 500 })).toBe(false);
    expect(isRetriableOutcome(gw, { kind: 'response', status: 503 })).toBe(true);
    const cf = parseRetryPolicy({ retryOn: 'connect-failure' });
    expect(isRetriableOutcome(cf, { kind: 'connect-failure' })).toBe(true);
    expect(isRetriableOutcome(cf, { kind: 'reset' })).toBe(false);
    expect(isRetriableOutcome(cf, { kind: 'response', status: 503 })).toBe(false);
    const fivexx = parseRetryPolicy({ retryOn: '5xx' });
    expect(isRetriableOutcome(fivexx, { kind: 'reset' })).toBe(true);
    expect(isRetriableOutcome(fivexx, { kind: 'response', status: 404 })).toBe(false);
  });
});

describe('circuit breaker thresholds (the class the proxy attaches per cluster)', () => {
  it('publishes the thresholds for /clusters, Envoy defaults 1024/1024/1024/3', () => {
    const b = new CircuitBreakers({ maxConnections: 10 });
    expect(b.clustersLines('out#80#order')).toEqual([
      'out#80#order::default_priority::max_connections::10',
      'out#80#order::default_priority::max_pending_requests::1024',
      'out#80#order::default_priority::max_requests::1024',
      'out#80#order::default_priority::max_retries::3',
      'out#80#order::high_priority::max_connections::1024',
      'out#80#order::high_priority::max_pending_requests::1024',
      'out#80#order::high_priority::max_requests::1024',
      'out#80#order::high_priority::max_retries::3',
    ]);
    expect(b.toJson().thresholds[0]).toEqual({ max_connections: 10, max_pending_requests: 1024, max_requests: 1024, max_retries: 3 });
    expect(b.toJson().thresholds[1]!.priority).toBe('HIGH');
  });

  it('max_connections and max_pending_requests count their overflows', () => {
    const stats = new MemoryStatScope();
    const b = new CircuitBreakers({ maxConnections: 1, maxPendingRequests: 1 }, stats);
    const c1 = b.tryConnection();
    expect(c1).not.toBeNull();
    expect(b.tryConnection()).toBeNull();
    expect(stats.get('upstream_cx_overflow')).toBe(1);
    const p1 = b.tryPending();
    expect(b.tryPending()).toBeNull();
    expect(stats.get('upstream_rq_pending_overflow')).toBe(1);
    p1!();
    p1!();
    expect(b.active().pending).toBe(0);
    c1!();
    expect(b.canOpenConnection()).toBe(true);
  });
});

