import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { deadPort, waitFor } from './resilience-upstreams';
import { admin, CLUSTER, closeProxies, closeUpstreams, endpointsOf, flagsOf, startProxy, stat, upstream, viaProxy } from './support/resilience-proxy';

// Retries, per-try timeouts and the retry breaker through the real proxy (RequestRetryState in
// RouterFilter), real upstreams on loopback: a resetting one, dead ports, a hanging one.
afterEach(closeProxies);
afterAll(closeUpstreams);

describe('retries through the proxy', () => {
  it('a connection reset before the response is retried on reset, on the other host', async () => {
    const resetter = await upstream('rp-reset', 'reset');
    const good = await upstream('rp-good');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(resetter, good) }], { cluster: CLUSTER, retryPolicy: { retryOn: 'reset', numRetries: 1 } });
    for (let i = 0; i < 4; i++) expect((await viaProxy(p.port)).status).toBe(200);
    expect(resetter.hits).toBeGreaterThanOrEqual(1);
    expect(good.hits).toBe(4);
    expect(stat(await admin(p.admin, '/stats'), `cluster.${CLUSTER}.upstream_rq_retry`)).toBe(resetter.hits);
  });

  it('connect failures everywhere: 503 with UF and URX, upstream_rq_retry_limit_exceeded', async () => {
    const p = await startProxy([{ name: CLUSTER, endpoints: [{ address: '127.0.0.1', port: await deadPort() }, { address: '127.0.0.1', port: await deadPort() }] }],
      { cluster: CLUSTER, retryPolicy: { retryOn: 'connect-failure', numRetries: 1 } });
    const r = await viaProxy(p.port);
    expect(r.status).toBe(503);
    expect(r.body).toContain('connection failure');
    await waitFor('access log line', () => p.log.length === 1);
    expect(flagsOf(p.log[0]!).split(',').sort()).toEqual(['UF', 'URX']);
    const stats = await admin(p.admin, '/stats');
    expect(stat(stats, `cluster.${CLUSTER}.upstream_rq_retry_limit_exceeded`)).toBe(1);
    expect(stat(stats, `cluster.${CLUSTER}.upstream_rq_retry`)).toBe(1);
  });

  it('max_retries: a full retry budget stops the retry, flag UO and upstream_rq_retry_overflow', async () => {
    const bad = await upstream('rp-bad', '503');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(bad), circuitBreakers: { maxRetries: 0 } }], { cluster: CLUSTER, retryPolicy: { retryOn: '5xx', numRetries: 3 } });
    const r = await viaProxy(p.port);
    expect(r.status).toBe(503);
    expect(bad.hits).toBe(1);
    await waitFor('access log line', () => p.log.length === 1);
    expect(flagsOf(p.log[0]!)).toBe('UO');
    expect(stat(await admin(p.admin, '/stats'), `cluster.${CLUSTER}.upstream_rq_retry_overflow`)).toBe(1);
  });

  it('a per-try timeout with no retry left gives 504 UT, upstream_rq_per_try_timeout', async () => {
    const hang = await upstream('rp-hang', 'hang');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(hang) }], { cluster: CLUSTER, retryPolicy: { retryOn: '5xx', numRetries: 0, perTryTimeoutMs: 200 } });
    const r = await viaProxy(p.port);
    expect(r.status).toBe(504);
    expect(r.body).toBe('upstream request timeout\n');
    await waitFor('access log line', () => p.log.length === 1);
    expect(flagsOf(p.log[0]!)).toBe('UT');
    expect(stat(await admin(p.admin, '/stats'), `cluster.${CLUSTER}.upstream_rq_per_try_timeout`)).toBe(1);
    hang.release();
  });
});
