import { afterAll, describe, expect, it } from 'vitest';
import { Cluster } from '../src/cluster/cluster';
import { StatsStore } from '../src/stats/store';
import { attachResilience, ClusterCircuitBreakers, ClusterHealthChecker, ClusterOutlierDetector } from '../src/resilience/cluster-resilience';
import { RequestRetryState, routeRetryPolicy, withAttemptCountHeader } from '../src/resilience/retry-state';
import { startUpstream, waitFor, type Upstream } from './resilience-upstreams';

// The proxy's own Cluster and StatsStore with the resilience parts attached; real upstreams on loopback.
const ups: Upstream[] = [];
const clusters: Cluster[] = [];
afterAll(async () => {
  for (const c of clusters) c.close();
  await Promise.all(ups.map((u) => u.close()));
});

function statValue(store: StatsStore, name: string): number | undefined {
  const s = store.all().find((x) => x.name === name);
  return s && s.kind !== 'histogram' ? s.value : undefined;
}

describe('attachResilience on a real Cluster', () => {
  it('active health checks mark the failing upstream failed_active_hc; the cluster stops picking it; stats land in the store', async () => {
    const good = await startUpstream('cl-good');
    const bad = await startUpstream('cl-bad');
    ups.push(good, bad);
    bad.healthStatus = 503;
    const store = new StatsStore();
    const cluster = new Cluster({
      name: 'out#80#order',
      endpoints: [{ address: good.address, port: good.port }, { address: bad.address, port: bad.port }],
      healthCheck: { path: '/health', intervalMs: 40, timeoutMs: 500, unhealthyThreshold: 1, healthyThreshold: 1 },
      outlierDetection: { consecutive5xx: 3 },
    }, store);
    clusters.push(cluster);
    attachResilience(cluster);
    expect(cluster.circuitBreakers).toBeInstanceOf(ClusterCircuitBreakers);
    expect(cluster.healthChecker).toBeInstanceOf(ClusterHealthChecker);
    expect(cluster.outlierDetector).toBeInstanceOf(ClusterOutlierDetector);
    const [gh, bh] = cluster.hosts;
    await waitFor('good host healthy', () => gh!.healthFlags.size === 0);
    await waitFor('bad host probed', () => bad.healthHits >= 1);
    expect(bh!.healthFlags.has('failed_active_hc')).toBe(true);
    for (let i = 0; i < 10; i++) expect(cluster.pickHost({}).host).toBe(gh);
    expect(statValue(store, 'cluster.out#80#order.health_check.healthy')).toBe(1);
    expect(statValue(store, 'cluster.out#80#order.health_check.attempt')).toBeGreaterThanOrEqual(2);
    expect(statValue(store, 'cluster.out#80#order.membership_healthy')).toBe(1);

    // outlier detection through the slot
    for (let i = 0; i < 3; i++) cluster.outlierDetector!.reportOutcome(gh!, { kind: 'response', status: 500 });
    expect(gh!.healthFlags.has('failed_outlier_check')).toBe(true);
    expect(statValue(store, 'cluster.out#80#order.outlier_detection.ejections_enforced_total')).toBe(1);
    expect(statValue(store, 'cluster.out#80#order.membership_healthy')).toBe(0);

    // reconfigure without health checking and outlier detection: flags cleared, parts stopped
    const probes = bad.healthHits;
    cluster.reconfigure({ name: 'out#80#order', endpoints: cluster.config.endpoints });
    attachResilience(cluster);
    expect(cluster.healthChecker).toBeUndefined();
    expect(cluster.outlierDetector).toBeUndefined();
    expect(cluster.hosts.every((h) => h.healthFlags.size === 0)).toBe(true);
    await new Promise((r) => setTimeout(r, 150));
    expect(bad.healthHits).toBeLessThanOrEqual(probes + 1);
  });

  it('keeps parts whose config did not change across a reconfigure', () => {
    const store = new StatsStore();
    const config = { name: 'out#81#x', endpoints: [{ address: '198.18.0.9', port: 81 }], outlierDetection: { consecutive5xx: 2 }, circuitBreakers: { maxRequests: 5 } };
    const cluster = new Cluster(config, store);
    clusters.push(cluster);
    attachResilience(cluster);
    const od = cluster.outlierDetector;
    const cb = cluster.circuitBreakers;
    cluster.reconfigure({ ...config });
    attachResilience(cluster);
    expect(cluster.outlierDetector).toBe(od);
    expect(cluster.circuitBreakers).toBe(cb);
    cluster.reconfigure({ ...config, circuitBreakers: { maxRequests: 6 } });
    attachResilience(cluster);
    expect(cluster.circuitBreakers).not.toBe(cb);
  });

  it('the breaker slot enforces max_requests, max_retries and max_connections', () => {
    const store = new StatsStore();
    const cluster = new Cluster({ name: 'out#82#y', endpoints: [], circuitBreakers: { maxRequests: 1, maxRetries: 1, maxConnections: 2 } }, store);
    clusters.push(cluster);
    attachResilience(cluster);
    const cb = cluster.circuitBreakers!;
    expect(cb.tryAcquireRequest(false)).toBe(true);
    expect(cb.tryAcquireRequest(false)).toBe(false);
    // the data plane counts request overflows itself: not counted twice
    expect(statValue(store, 'cluster.out#82#y.upstream_rq_pending_overflow')).toBe(0);
    expect(cb.tryAcquireRequest(true)).toBe(true);
    expect(cb.tryAcquireRequest(true)).toBe(false);
    expect(statValue(store, 'cluster.out#82#y.upstream_rq_retry_overflow')).toBe(1);
    cb.releaseRequest(true);
    cb.releaseRequest(false);
    expect(cb.tryAcquireRequest(false)).toBe(true);
    expect(cb.canOpenConnection!()).toBe(true);
    cluster.stats.upstream_cx_active.set(2);
    expect(cb.canOpenConnection!()).toBe(false);
  });
});

describe('RequestRetryState', () => {
  it('retries up to numRetries, then URX; counts retries; gives back the retry slot', () => {
    const store = new StatsStore();
    const cluster = new Cluster({ name: 'out#83#z', endpoints: [], circuitBreakers: { maxRetries: 5 } }, store);
    clusters.push(cluster);
    attachResilience(cluster);
    const scope = { counter: (l: string) => store.counter('cluster.', 'out#83#z', l), gauge: (l: string) => store.gauge('cluster.', 'out#83#z', l) };
    const policy = routeRetryPolicy({ retryOn: '5xx', numRetries: 2 })!;
    const rs = new RequestRetryState(policy, 'GET', true, cluster.circuitBreakers, scope, () => 0);
    expect(rs.decide({ kind: 'response', status: 503 })).toEqual({ retry: true, backoffMs: 0 });
    expect(rs.attempt).toBe(2);
    expect(rs.decide({ kind: 'reset' })).toEqual({ retry: true, backoffMs: 0 });
    expect(rs.decide({ kind: 'response', status: 502 })).toEqual({ retry: false, flag: 'URX' });
    rs.finish();
    expect(statValue(store, 'cluster.out#83#z.upstream_rq_retry')).toBe(2);
    expect(statValue(store, 'cluster.out#83#z.upstream_rq_retry_limit_exceeded')).toBe(1);
    expect((cluster.circuitBreakers as ClusterCircuitBreakers).breakers.active().retries).toBe(0);
    const ok = new RequestRetryState(policy, 'GET', true, cluster.circuitBreakers, scope);
    ok.decide({ kind: 'connect-failure' });
    expect(ok.decide({ kind: 'response', status: 200 })).toEqual({ retry: false });
    expect(statValue(store, 'cluster.out#83#z.upstream_rq_retry_success')).toBe(1);
    // a POST, or a body that cannot be replayed, is never retried
    expect(new RequestRetryState(policy, 'POST', true, undefined, scope).decide({ kind: 'reset' })).toEqual({ retry: false });
    expect(new RequestRetryState(policy, 'GET', false, undefined, scope).decide({ kind: 'reset' })).toEqual({ retry: false });
  });

  it('an invalid retryOn disables retries for the route and is reported once', () => {
    const errors: string[] = [];
    const cfg = { retryOn: '5xx,nonsense' };
    expect(routeRetryPolicy(cfg, (e) => errors.push(e.message))).toBeUndefined();
    expect(routeRetryPolicy(cfg, (e) => errors.push(e.message))).toBeUndefined();
    expect(errors).toHaveLength(1);
    expect(errors[0]).toContain('nonsense');
  });

  it('adds x-envoy-attempt-count to the upstream head, replacing one the client sent', () => {
    expect(withAttemptCountHeader('GET / HTTP/1.1\r\nhost: a\r\n\r\n', 2)).toBe('GET / HTTP/1.1\r\nhost: a\r\nx-envoy-attempt-count: 2\r\n\r\n');
    expect(withAttemptCountHeader('GET / HTTP/1.1\r\nX-Envoy-Attempt-Count: 9\r\nhost: a\r\n\r\n', 1)).toBe('GET / HTTP/1.1\r\nhost: a\r\nx-envoy-attempt-count: 1\r\n\r\n');
  });
});
