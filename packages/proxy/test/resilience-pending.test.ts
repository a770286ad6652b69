import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { MeshError } from '@mesh-agent/shared-config';
import { createProxy } from '../src/proxy';
import { waitFor } from './resilience-upstreams';
import { admin, CLUSTER, closeProxies, closeUpstreams, endpointsOf, flagsOf, pollUntil, startProxy, stat, upstream, viaProxy } from './support/resilience-proxy';

// Envoy's pending queue and the route retry fields, through the real proxy with real upstreams on loopback.
afterEach(closeProxies);
afterAll(closeUpstreams);

const safe = (p: Promise<{ status: number; body: string }>) => p.catch((e: Error) => ({ status: 0, body: e.message }));

describe('circuit breaker pending queue (max_connections reached)', () => {
  it('a request waits for a connection up to max_pending_requests, is dispatched when one frees; beyond that 503 UO at once', async () => {
    const up = await upstream('pend-1', 'hang');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(up), circuitBreakers: { maxConnections: 1, maxPendingRequests: 1 } }], { cluster: CLUSTER, timeoutMs: 0 });
    const first = safe(viaProxy(p.port));
    await waitFor('first request upstream', () => up.hits === 1);
    const second = safe(viaProxy(p.port, { method: 'PUT', body: 'queued body' }));
    const s = `cluster.${CLUSTER}.`;
    let stats = await pollUntil('second request queued', () => admin(p.admin, '/stats'), (t) => stat(t, `${s}upstream_rq_pending_active`) === 1);
    expect(stat(stats, `${s}upstream_rq_pending_total`)).toBe(1);
    expect(up.hits).toBe(1);
    const third = await viaProxy(p.port);
    expect(third.status).toBe(503);
    expect(third.body).toContain('overflow');
    stats = await admin(p.admin, '/stats');
    expect(stat(stats, `${s}upstream_rq_pending_overflow`)).toBe(1);
    expect(stat(stats, `${s}upstream_cx_overflow`)).toBe(2);
    // the connection frees: the queued request goes out on it, body intact
    up.behavior = 'ok';
    up.release();
    expect((await first).status).toBe(200);
    const r2 = await second;
    expect(r2.status).toBe(200);
    expect(up.hits).toBe(2);
    expect(up.bodies).toContain('queued body');
    stats = await admin(p.admin, '/stats');
    expect(stat(stats, `${s}upstream_rq_pending_active`)).toBe(0);
    expect(stat(stats, `${s}upstream_cx_total`)).toBe(1);
    await waitFor('three log lines', () => p.log.length === 3);
    expect(p.log.map(flagsOf).sort()).toEqual(['-', '-', 'UO']);
  });

  it('the route timeout still applies while queued: 504 UT, and the request never reaches the upstream', async () => {
    const up = await upstream('pend-2', 'hang');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(up), circuitBreakers: { maxConnections: 1, maxPendingRequests: 4 } }], { cluster: CLUSTER }, {
      routes: { virtualHosts: [{ name: 'order', domains: ['order'], routes: [
        { match: { prefix: '/slow' }, route: { cluster: CLUSTER, timeoutMs: 0 } },
        { match: { prefix: '/' }, route: { cluster: CLUSTER, timeoutMs: 300 } },
      ] }] },
    });
    const first = safe(viaProxy(p.port, { path: '/slow' }));
    await waitFor('first request upstream', () => up.hits === 1);
    const queued = await viaProxy(p.port);
    expect(queued.status).toBe(504);
    expect(queued.body).toBe('upstream request timeout\n');
    expect(up.hits).toBe(1);
    const stats = await admin(p.admin, '/stats');
    expect(stat(stats, `cluster.${CLUSTER}.upstream_rq_pending_total`)).toBe(1);
    expect(stat(stats, `cluster.${CLUSTER}.upstream_rq_pending_active`)).toBe(0);
    await waitFor('log line', () => p.log.length === 1);
    expect(flagsOf(p.log[0]!)).toBe('UT');
    up.release();
    expect((await first).status).toBe(200);
  });
});

describe('retry policy fields', () => {
  it('retryNonIdempotent: true retries a POST on the healthy host; without it the POST is not retried', async () => {
    const bad = await upstream('rni-bad', '503');
    const good = await upstream('rni-good');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(bad, good) }], { cluster: CLUSTER }, {
      routes: { virtualHosts: [{ name: 'order', domains: ['order'], routes: [
        { match: { prefix: '/allowed' }, route: { cluster: CLUSTER, retryPolicy: { retryOn: '5xx', numRetries: 1, retryNonIdempotent: true } } },
        { match: { prefix: '/' }, route: { cluster: CLUSTER, retryPolicy: { retryOn: '5xx', numRetries: 1 } } },
      ] }] },
    });
    for (let i = 0; i < 4; i++) expect((await viaProxy(p.port, { method: 'POST', path: '/allowed', body: 'order-1' })).status).toBe(200);
    expect(good.bodies.filter((b) => b === 'order-1')).toHaveLength(4);
    const plain = [];
    for (let i = 0; i < 4; i++) plain.push((await viaProxy(p.port, { method: 'POST', body: 'order-2' })).status);
    expect(plain.filter((s) => s === 503)).toHaveLength(2);
  });

  it('retriable-status-codes retries the listed statuses', async () => {
    const bad = await upstream('rsc-bad', '503');
    const good = await upstream('rsc-good');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(bad, good) }], { cluster: CLUSTER, retryPolicy: { retryOn: 'retriable-status-codes', retriableStatusCodes: [503], numRetries: 1 } });
    for (let i = 0; i < 4; i++) expect((await viaProxy(p.port)).status).toBe(200);
    expect(bad.hits).toBeGreaterThanOrEqual(1);
  });

  it('an unknown retryOn word is refused with the word and the valid ones named', () => {
    const cfg = { clusters: [{ name: CLUSTER }], routes: { virtualHosts: [{ name: 'o', domains: ['o'], routes: [{ match: { prefix: '/' }, route: { cluster: CLUSTER, retryPolicy: { retryOn: '5xx,bogus-word' } } }] }] } };
    let err: unknown;
    try { createProxy(cfg, { admin: false }); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(MeshError);
    const text = `${(err as MeshError).message}\n${(err as MeshError).hint ?? ''}`;
    expect(text).toContain('"bogus-word"');
    expect(text).toContain('retryOn');
    expect(text).toContain('gateway-error, reset, connect-failure, retriable-4xx, refused-stream, retriable-status-codes');
  });
});
