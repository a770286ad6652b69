import { execFile } from 'node:child_process';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { deadPort, waitFor } from './resilience-upstreams';
import { admin, CLUSTER, closeProxies, closeUpstreams, endpointsOf, flagsOf, pollUntil, startProxy, stat, upstream, viaProxy } from './support/resilience-proxy';

// End to end through the real proxy: real upstreams on loopback, requests in absolute form
// (as `curl -x`), the access log captured from the proxy, /clusters and /stats read from its admin port.
afterEach(closeProxies);
afterAll(closeUpstreams);

describe('resilience through the proxy', () => {
  it('a burst beyond max_requests gets 503 UO at once; counted in /stats and the access log', async () => {
    const hang = await upstream('e2e-hang', 'hang');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(hang), circuitBreakers: { maxRequests: 2 } }], { cluster: CLUSTER, timeoutMs: 0 });
    const burst = Array.from({ length: 6 }, () => viaProxy(p.port).catch(() => ({ status: 0, body: '', headers: {} })));
    await waitFor('two requests upstream, four refused', () => hang.hits === 2 && p.log.length >= 4);
    const stats = await admin(p.admin, '/stats');
    expect(stat(stats, `cluster.${CLUSTER}.upstream_rq_pending_overflow`)).toBe(4);
    expect(p.log.slice(0, 4).map(flagsOf)).toEqual(['UO', 'UO', 'UO', 'UO']);
    const clusters = await admin(p.admin, '/clusters');
    expect(clusters).toContain(`${CLUSTER}::default_priority::max_requests::2`);
    await hang.close();
    const answers = await Promise.all(burst);
    expect(answers.filter((a) => a.status === 503 && a.body.includes('overflow'))).toHaveLength(4);
  });

  it('max_connections: a request that needs one connection too many gets 503 UO at once, upstream_cx_overflow', async () => {
    const hang = await upstream('e2e-hang-cx', 'hang');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(hang), circuitBreakers: { maxConnections: 1, maxPendingRequests: 0 } }], { cluster: CLUSTER, timeoutMs: 0 });
    const first = viaProxy(p.port).catch(() => ({ status: 0, body: '', headers: {} }));
    await waitFor('first request upstream', () => hang.hits === 1);
    const second = await viaProxy(p.port);
    expect(second.status).toBe(503);
    expect(second.body).toContain('overflow');
    expect(hang.hits).toBe(1);
    await waitFor('access log line', () => p.log.length === 1);
    expect(flagsOf(p.log[0]!)).toBe('UO');
    expect(stat(await admin(p.admin, '/stats'), `cluster.${CLUSTER}.upstream_cx_overflow`)).toBe(1);
    hang.release();
    expect((await first).status).toBe(200);
  });

  it('panic threshold: with 1 of 3 hosts healthy (33% < 50%) traffic goes to all three; lb_healthy_panic counts it', async () => {
    const ups3 = [await upstream('e2e-panic-1'), await upstream('e2e-panic-2'), await upstream('e2e-panic-3')];
    ups3[0]!.healthStatus = 500;
    ups3[1]!.healthStatus = 500;
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(...ups3), healthCheck: { path: '/health', intervalMs: 100, unhealthyThreshold: 1 } }], { cluster: CLUSTER });
    await pollUntil('one healthy host in /clusters', () => admin(p.admin, '/clusters'),
      (t) => t.includes(`127.0.0.1:${ups3[2]!.port}::health_flags::healthy`) && ups3[0]!.healthHits > 0 && ups3[1]!.healthHits > 0);
    const clusters = await admin(p.admin, '/clusters');
    expect(clusters).toContain(`127.0.0.1:${ups3[0]!.port}::health_flags::/failed_active_hc`);
    expect(clusters).toContain(`127.0.0.1:${ups3[1]!.port}::health_flags::/failed_active_hc`);
    for (let i = 0; i < 9; i++) expect((await viaProxy(p.port)).status).toBe(200);
    expect(ups3.map((u) => u.hits)).toEqual([3, 3, 3]);
    expect(stat(await admin(p.admin, '/stats'), `cluster.${CLUSTER}.lb_healthy_panic`)).toBe(9);
  });

  it('a 503 is retried on the healthy host: every client sees 200; x-envoy-attempt-count reaches the upstream', async () => {
    const bad = await upstream('e2e-503', '503');
    const good = await upstream('e2e-good');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(bad, good) }], { cluster: CLUSTER, retryPolicy: { retryOn: '5xx', numRetries: 2 } });
    const statuses = [];
    for (let i = 0; i < 10; i++) statuses.push((await viaProxy(p.port)).status);
    expect(statuses).toEqual(Array(10).fill(200));
    expect(bad.hits).toBeGreaterThan(0);
    expect(bad.attemptHeaders.every((h) => h === '1')).toBe(true);
    expect(good.attemptHeaders).toContain('2');
    const stats = await admin(p.admin, '/stats');
    expect(stat(stats, `cluster.${CLUSTER}.upstream_rq_retry`)).toBe(bad.hits);
    expect(stat(stats, `cluster.${CLUSTER}.upstream_rq_retry_success`)).toBe(bad.hits);
  });

  it('retries exhausted: the last 503 is forwarded with URX in the access log', async () => {
    const a = await upstream('e2e-503a', '503');
    const b = await upstream('e2e-503b', '503');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(a, b) }], { cluster: CLUSTER, retryPolicy: { retryOn: '5xx', numRetries: 1 } });
    const r = await viaProxy(p.port);
    expect(r.status).toBe(503);
    expect(a.hits + b.hits).toBe(2);
    await waitFor('access log line', () => p.log.length === 1);
    expect(flagsOf(p.log[0]!)).toBe('URX');
    expect(stat(await admin(p.admin, '/stats'), `cluster.${CLUSTER}.upstream_rq_retry_limit_exceeded`)).toBe(1);
  });

  it('a PUT with a body (fixed length or chunked) is retried with the same body on the healthy host', async () => {
    const bad = await upstream('e2e-put-503', '503');
    const good = await upstream('e2e-put-good');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(bad, good) }], { cluster: CLUSTER, retryPolicy: { retryOn: '5xx', numRetries: 2 } });
    const body = JSON.stringify({ order: 42, items: Array.from({ length: 50 }, (_, i) => `item-${i}`) });
    for (let i = 0; i < 4; i++) expect((await viaProxy(p.port, { method: 'PUT', body, chunked: i % 2 === 1 })).status).toBe(200);
    // the upstream answers before it has read the whole body: wait until it has
    await waitFor('bodies read', () => good.bodies.length === 4);
    expect(good.bodies).toEqual([body, body, body, body]);
    expect(bad.hits).toBeGreaterThan(0);
  });

  it('a body larger than 64 KiB is not kept, so it is not retried', async () => {
    const bad = await upstream('e2e-bigput-503', '503');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(bad) }], { cluster: CLUSTER, retryPolicy: { retryOn: '5xx', numRetries: 2 } });
    const r = await viaProxy(p.port, { method: 'PUT', body: 'x'.repeat(70 * 1024) });
    expect(r.status).toBe(503);
    expect(bad.hits).toBe(1);
    const small = await viaProxy(p.port, { method: 'PUT', body: 'small' });
    expect(small.status).toBe(503);
    expect(bad.hits).toBe(1 + 3);
  });

  it('a POST is not retried', async () => {
    const bad = await upstream('e2e-post-503', '503');
    const good = await upstream('e2e-post-good');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(bad, good), lbPolicy: 'round_robin' }], { cluster: CLUSTER, retryPolicy: { retryOn: '5xx', numRetries: 2 } });
    const results = [];
    for (let i = 0; i < 4; i++) results.push((await viaProxy(p.port, { method: 'POST' })).status);
    expect(results.filter((s) => s === 503)).toHaveLength(bad.hits);
    expect(bad.hits + good.hits).toBe(4);
  });

  it('an upstream that dies mid-test: connect failures are retried on the survivor (UF never reaches a client)', async () => {
    const dies = await upstream('e2e-dies');
    const lives = await upstream('e2e-lives');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(dies, lives) }], { cluster: CLUSTER, retryPolicy: { retryOn: 'connect-failure,reset', numRetries: 1 } });
    for (let i = 0; i < 4; i++) expect((await viaProxy(p.port)).status).toBe(200);
    await dies.kill();
    const statuses = [];
    for (let i = 0; i < 8; i++) statuses.push((await viaProxy(p.port)).status);
    expect(statuses).toEqual(Array(8).fill(200));
    expect(stat(await admin(p.admin, '/stats'), `cluster.${CLUSTER}.upstream_cx_connect_fail`)).toBeGreaterThan(0);
  });

  it('without retries: a dead upstream is 503 UF, a resetting one 503 UC, an empty cluster 503 UH', async () => {
    const resetter = await upstream('e2e-reset', 'reset');
    const dead = await deadPort();
    const p = await startProxy([
      { name: CLUSTER, endpoints: [{ address: '127.0.0.1', port: dead }] },
      { name: 'out#80#reset', endpoints: endpointsOf(resetter) },
      { name: 'out#80#empty', endpoints: [] },
    ], { cluster: CLUSTER }, {
      routes: { virtualHosts: [{ name: 'order', domains: ['order'], routes: [
        { match: { prefix: '/reset' }, route: { cluster: 'out#80#reset' } },
        { match: { prefix: '/empty' }, route: { cluster: 'out#80#empty' } },
        { match: { prefix: '/' }, route: { cluster: CLUSTER } },
      ] }] },
    });
    expect((await viaProxy(p.port)).status).toBe(503);
    expect((await viaProxy(p.port, { path: '/reset' })).status).toBe(503);
    expect((await viaProxy(p.port, { path: '/empty' })).status).toBe(503);
    await waitFor('three log lines', () => p.log.length === 3);
    expect(p.log.map(flagsOf)).toEqual(['UF', 'UC', 'UH']);
  });

  it('a hanging upstream: per-try timeout retries on the healthy host; the route timeout gives 504 UT', async () => {
    const hang = await upstream('e2e-hang2', 'hang');
    const good = await upstream('e2e-good2');
    const p = await startProxy([
      { name: CLUSTER, endpoints: endpointsOf(hang, good) },
      { name: 'out#80#hang', endpoints: endpointsOf(hang) },
    ], { cluster: CLUSTER }, {
      routes: { virtualHosts: [{ name: 'order', domains: ['order'], routes: [
        { match: { prefix: '/only-hang' }, route: { cluster: 'out#80#hang', timeoutMs: 300 } },
        { match: { prefix: '/' }, route: { cluster: CLUSTER, retryPolicy: { retryOn: '5xx', numRetries: 1, perTryTimeoutMs: 300 } } },
      ] }] },
    });
    for (let i = 0; i < 2; i++) expect((await viaProxy(p.port)).status).toBe(200);
    // every try that reached the hanging host timed out and was retried on the healthy one
    expect(hang.hits).toBeGreaterThanOrEqual(1);
    const stats = await admin(p.admin, '/stats');
    expect(stat(stats, `cluster.${CLUSTER}.upstream_rq_per_try_timeout`)).toBe(hang.hits);
    expect(good.hits).toBe(2);
    const r = await viaProxy(p.port, { path: '/only-hang' });
    expect(r.status).toBe(504);
    expect(r.body).toContain('upstream request timeout');
    await waitFor('three log lines', () => p.log.length === 3);
    expect(flagsOf(p.log[2]!)).toBe('UT');
    expect(await admin(p.admin, '/clusters')).toMatch(new RegExp(`out#80#hang::127\\.0\\.0\\.1:${hang.port}::rq_timeout::1`));
  });

  it('outlier detection ejects the upstream returning 503s: failed_outlier_check in /clusters, counters in /stats', async () => {
    const bad = await upstream('e2e-od-bad', '503');
    const g1 = await upstream('e2e-od-g1');
    const g2 = await upstream('e2e-od-g2');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(bad, g1, g2), outlierDetection: { consecutive5xx: 3, maxEjectionPercent: 50, baseEjectionTimeMs: 60_000 } }], { cluster: CLUSTER });
    for (let i = 0; i < 12; i++) await viaProxy(p.port);
    expect(bad.hits).toBe(3);
    const clusters = await admin(p.admin, '/clusters');
    expect(clusters).toContain(`${CLUSTER}::127.0.0.1:${bad.port}::health_flags::/failed_outlier_check`);
    expect(clusters).toContain(`${CLUSTER}::127.0.0.1:${g1.port}::health_flags::healthy`);
    expect(clusters).toContain(`${CLUSTER}::outlier::success_rate_average::-1`);
    expect(clusters).toContain(`${CLUSTER}::outlier::success_rate_ejection_threshold::-1`);
    const stats = await admin(p.admin, '/stats');
    expect(stat(stats, `cluster.${CLUSTER}.outlier_detection.ejections_enforced_total`)).toBe(1);
    expect(stat(stats, `cluster.${CLUSTER}.outlier_detection.ejections_enforced_consecutive_5xx`)).toBe(1);
    expect(stat(stats, `cluster.${CLUSTER}.outlier_detection.ejections_active`)).toBe(1);
    const prom = await admin(p.admin, '/stats/prometheus');
    expect(prom).toMatch(/envoy_cluster_outlier_detection_ejections_enforced_total\{envoy_cluster_name="out#80#order"\} 1/);
  });

  it('active health checking: the upstream failing its health check is failed_active_hc in /clusters and gets no traffic', async () => {
    const sick = await upstream('e2e-hc-sick');
    sick.healthStatus = 500;
    const well = await upstream('e2e-hc-well');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(sick, well), healthCheck: { path: '/health', intervalMs: 100, timeoutMs: 500, unhealthyThreshold: 1, healthyThreshold: 1 } }], { cluster: CLUSTER });
    const clusters = await pollUntil('health flags in /clusters', () => admin(p.admin, '/clusters'),
      (t) => t.includes(`127.0.0.1:${well.port}::health_flags::healthy`) && sick.healthHits >= 1);
    expect(clusters).toContain(`${CLUSTER}::127.0.0.1:${sick.port}::health_flags::/failed_active_hc`);
    expect(clusters).toContain(`${CLUSTER}::127.0.0.1:${well.port}::health_flags::healthy`);
    for (let i = 0; i < 6; i++) expect((await viaProxy(p.port)).status).toBe(200);
    expect(sick.hits).toBe(0);
    const stats = await admin(p.admin, '/stats');
    expect(stat(stats, `cluster.${CLUSTER}.health_check.failure`)).toBeGreaterThanOrEqual(1);
    expect(stat(stats, `cluster.${CLUSTER}.health_check.healthy`)).toBe(1);
  });

  it('/healthcheck/fail: the inbound health-check path answers 503 with x-envoy-immediate-health-check-fail until /healthcheck/ok', async () => {
    const app = await upstream('e2e-local-app');
    const inbound = 'in#8089#order';
    const p = await startProxy([{ name: inbound, endpoints: endpointsOf(app), healthCheck: { path: '/health', intervalMs: 60_000 } }], { cluster: inbound });
    expect((await viaProxy(p.port, { path: '/health' })).status).toBe(200);
    expect(await admin(p.admin, '/healthcheck/fail', 'POST')).toBeDefined();
    const failed = await viaProxy(p.port, { path: '/health' });
    expect(failed.status).toBe(503);
    expect(failed.headers['x-envoy-immediate-health-check-fail']).toBe('true');
    // other paths still reach the service
    expect((await viaProxy(p.port, { path: '/orders' })).status).toBe(200);
    await admin(p.admin, '/healthcheck/ok', 'POST');
    expect((await viaProxy(p.port, { path: '/health' })).status).toBe(200);
  });

  it('curl through the proxy sees the UH answer body', async () => {
    const p = await startProxy([{ name: CLUSTER, endpoints: [] }], { cluster: CLUSTER });
    const out = await new Promise<string>((resolve, reject) => {
      execFile('curl', ['-s', '-o', '-', '-w', ' %{http_code}', '-x', `127.0.0.1:${p.port}`, 'http://order/'], (err, stdout) => (err ? reject(err) : resolve(stdout)));
    });
    expect(out).toBe('no healthy upstream\n 503');
  });
});
