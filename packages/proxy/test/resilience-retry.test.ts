import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MeshError } from '@mesh-agent/shared-config';
import { CircuitBreakers } from '../src/resilience/circuit-breakers';
import { parseRetryPolicy, retryBackoffMs, isRetriableOutcome } from '../src/resilience/retry-policy';
import { routeUpstreamRequest, type RouteRequestOptions } from '../src/resilience/route-request';
import { MemoryStatScope } from '../src/resilience/types';
import { deadPort, hostOf, httpSender, roundRobinChooser, startUpstream, waitFor, type TestHost, type Upstream } from './resilience-upstreams';

// Real upstreams on loopback; the router's tries are sent with a real HTTP client.
const ups: Upstream[] = [];
async function upstream(name: string, behavior: Upstream['behavior']) {
  const u = await startUpstream(name, behavior);
  ups.push(u);
  return u;
}
afterAll(async () => { await Promise.all(ups.map((u) => u.close())); });

function run(hosts: TestHost[], extra: Partial<RouteRequestOptions<TestHost>> & { method?: string } = {}) {
  const stats = (extra.stats as MemoryStatScope | undefined) ?? new MemoryStatScope();
  const method = extra.method ?? 'GET';
  return routeUpstreamRequest<TestHost>({
    method,
    replayable: true,
    routeTimeoutMs: 15_000,
    chooseHost: roundRobinChooser(() => hosts),
    send: httpSender(method, '/'),
    ...extra,
    stats,
  }).then((r) => ({ ...r, stats }));
}

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

describe('retries against real upstreams', () => {
  it('a 503 is retried on the other, healthy host, with x-envoy-attempt-count 2', async () => {
    const bad = await upstream('bad', '503');
    const good = await upstream('good', 'ok');
    const hosts = [hostOf(bad), hostOf(good)];
    const r = await run(hosts, { retryPolicy: parseRetryPolicy({ retryOn: '5xx', numRetries: 2 }) });
    expect(r.kind).toBe('response');
    expect(r.status).toBe(200);
    expect(r.host?.name).toBe('good');
    expect(r.attempts).toBe(2);
    expect(bad.attemptHeaders).toEqual(['1']);
    expect(good.attemptHeaders).toEqual(['2']);
    expect(r.responseFlags).toEqual([]);
    expect(r.stats.get('upstream_rq_retry')).toBe(1);
    expect(r.stats.get('upstream_rq_retry_success')).toBe(1);
    r.finish();
  });

  it('a refused connection (a dead upstream) is retried on connect-failure', async () => {
    const good = await upstream('good2', 'ok');
    const dead = hostOf({ address: '127.0.0.1', port: await deadPort(), name: 'dead' });
    const r = await run([dead, hostOf(good)], { retryPolicy: parseRetryPolicy({ retryOn: 'connect-failure', numRetries: 1 }) });
    expect(r.status).toBe(200);
    expect(r.host?.name).toBe('good2');
    expect(good.hits).toBe(1);
    r.finish();
  });

  it('an upstream that dies mid-test: its tries fail over to the survivor', async () => {
    const a = await upstream('dies', 'ok');
    const b = await upstream('survives', 'ok');
    const hosts = [hostOf(a), hostOf(b)];
    const policy = parseRetryPolicy({ retryOn: 'connect-failure,reset', numRetries: 1 });
    const chooseHost = roundRobinChooser(() => hosts);
    for (let i = 0; i < 4; i++) (await run(hosts, { retryPolicy: policy, chooseHost })).finish();
    expect(a.hits).toBe(2);
    await a.kill();
    const results = [];
    for (let i = 0; i < 6; i++) {
      const r = await run(hosts, { retryPolicy: policy, chooseHost });
      results.push(r.status);
      r.finish();
    }
    expect(results).toEqual([200, 200, 200, 200, 200, 200]);
    expect(b.hits).toBe(2 + 6);
  });

  it('a connection reset before the response is retried on reset', async () => {
    const resetter = await upstream('resetter', 'reset');
    const good = await upstream('good3', 'ok');
    const r = await run([hostOf(resetter), hostOf(good)], { retryPolicy: parseRetryPolicy({ retryOn: 'reset', numRetries: 1 }) });
    expect(resetter.hits).toBe(1);
    expect(r.status).toBe(200);
    r.finish();
  });

  it('without a retry policy a reset gives 503 with flag UC', async () => {
    const resetter = await upstream('resetter2', 'reset');
    const r = await run([hostOf(resetter)]);
    expect(r.kind).toBe('local-reply');
    expect(r.status).toBe(503);
    expect(r.responseFlags).toEqual(['UC']);
    expect(r.body).toContain('connection termination');
  });

  it('retries run out: the last 503 is forwarded with flag URX and upstream_rq_retry_limit_exceeded', async () => {
    const a = await upstream('bad-a', '503');
    const b = await upstream('bad-b', '503');
    const r = await run([hostOf(a), hostOf(b)], { retryPolicy: parseRetryPolicy({ retryOn: '5xx', numRetries: 2 }) });
    expect(r.kind).toBe('response');
    expect(r.status).toBe(503);
    expect(r.attempts).toBe(3);
    expect(a.hits + b.hits).toBe(3);
    expect(r.responseFlags).toEqual(['URX']);
    expect(r.stats.get('upstream_rq_retry')).toBe(2);
    expect(r.stats.get('upstream_rq_retry_limit_exceeded')).toBe(1);
    r.finish();
  });

  it('connect failures everywhere: 503 with UF and URX', async () => {
    const dead1 = hostOf({ address: '127.0.0.1', port: await deadPort() });
    const dead2 = hostOf({ address: '127.0.0.1', port: await deadPort() });
    const r = await run([dead1, dead2], { retryPolicy: parseRetryPolicy({ retryOn: 'connect-failure', numRetries: 1 }) });
    expect(r.status).toBe(503);
    expect(r.responseFlags).toEqual(['URX', 'UF']);
    expect(r.body).toContain('connection failure');
  });

  it('a POST is not retried unless the route allows non-idempotent retries', async () => {
    const bad = await upstream('bad-post', '503');
    const good = await upstream('good-post', 'ok');
    const hosts = [hostOf(bad), hostOf(good)];
    const r = await run(hosts, { method: 'POST', retryPolicy: parseRetryPolicy({ retryOn: '5xx', numRetries: 2 }) });
    expect(r.status).toBe(503);
    expect(r.attempts).toBe(1);
    expect(good.hits).toBe(0);
    r.finish();
    const r2 = await run(hosts, { method: 'POST', retryPolicy: parseRetryPolicy({ retryOn: '5xx', numRetries: 2, retryNonIdempotent: true }) });
    expect(r2.status).toBe(200);
    expect(good.hits).toBe(1);
    r2.finish();
  });

  it('a body that cannot be replayed is not retried', async () => {
    const bad = await upstream('bad-stream', '503');
    const good = await upstream('good-stream', 'ok');
    const r = await run([hostOf(bad), hostOf(good)], { replayable: false, retryPolicy: parseRetryPolicy({ retryOn: '5xx', numRetries: 2 }) });
    expect(r.status).toBe(503);
    expect(good.hits).toBe(0);
    r.finish();
  });
});

describe('timeouts against real upstreams', () => {
  it('a per-try timeout on a hanging host retries on the healthy one', async () => {
    const hang = await upstream('hang', 'hang');
    const good = await upstream('good-pt', 'ok');
    const hosts = [hostOf(hang), hostOf(good)];
    const r = await run(hosts, { retryPolicy: parseRetryPolicy({ retryOn: '5xx', numRetries: 1, perTryTimeoutMs: 200 }) });
    expect(r.status).toBe(200);
    expect(r.host?.name).toBe('good-pt');
    expect(hosts[0]!.stats.rq_timeout).toBe(1);
    expect(r.stats.get('upstream_rq_per_try_timeout')).toBe(1);
    r.finish();
  });

  it('the route timeout answers 504 with flag UT and "upstream request timeout"', async () => {
    const hang = await upstream('hang2', 'hang');
    const h = hostOf(hang);
    const r = await run([h], { routeTimeoutMs: 300, retryPolicy: parseRetryPolicy({ retryOn: '5xx', numRetries: 3 }) });
    expect(r.kind).toBe('local-reply');
    expect(r.status).toBe(504);
    expect(r.body).toBe('upstream request timeout');
    expect(r.responseFlags).toEqual(['UT']);
    expect(r.stats.get('upstream_rq_timeout')).toBe(1);
    expect(h.stats.rq_timeout).toBe(1);
  });

  it('a per-try timeout with no retry left gives 504 UT', async () => {
    const hang = await upstream('hang3', 'hang');
    const r = await run([hostOf(hang)], { retryPolicy: parseRetryPolicy({ retryOn: 'connect-failure', numRetries: 1, perTryTimeoutMs: 150 }) });
    expect(r.status).toBe(504);
    expect(r.responseFlags).toEqual(['UT']);
  });
});

describe('circuit breakers against real upstreams', () => {
  let hang: Upstream;
  beforeAll(async () => { hang = await upstream('hang-cb', 'hang'); });
  afterEach(() => {});

  it('max_requests: a burst beyond the limit gets 503 UO at once, without reaching the upstream', async () => {
    const stats = new MemoryStatScope();
    const breakers = new CircuitBreakers({ maxRequests: 2 }, stats);
    const h = hostOf(hang);
    const burst = Array.from({ length: 5 }, () => run([h], { breakers, stats, routeTimeoutMs: 60_000 }));
    // three of the five are refused at once while two hang upstream
    await waitFor('two requests upstream', () => hang.hits === 2);
    expect(stats.get('upstream_rq_pending_overflow')).toBe(3);
    expect(stats.get('circuit_breakers.default.rq_open')).toBe(1);
    expect(stats.get('circuit_breakers.default.remaining_rq')).toBe(0);
    await hang.close();
    const results = await Promise.all(burst);
    const uo = results.filter((r) => r.responseFlags.includes('UO'));
    expect(uo).toHaveLength(3);
    for (const r of uo) {
      expect(r.status).toBe(503);
      expect(r.attempts).toBe(0);
      expect(r.body).toContain('overflow');
    }
    for (const r of results) r.finish();
    expect(breakers.active().rq).toBe(0);
    expect(stats.get('circuit_breakers.default.rq_open')).toBe(0);
  });

  it('max_retries: a full retry budget stops the retry, flag UO and upstream_rq_retry_overflow', async () => {
    const bad = await upstream('bad-cb', '503');
    const good = await upstream('good-cb', 'ok');
    const stats = new MemoryStatScope();
    const breakers = new CircuitBreakers({ maxRetries: 0 }, stats);
    const r = await run([hostOf(bad), hostOf(good)], { breakers, stats, retryPolicy: parseRetryPolicy({ retryOn: '5xx', numRetries: 3 }) });
    expect(r.status).toBe(503);
    expect(good.hits).toBe(0);
    expect(r.responseFlags).toEqual(['UO']);
    expect(stats.get('upstream_rq_retry_overflow')).toBe(1);
    r.finish();
  });

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

describe('no host', () => {
  it('an empty cluster gives 503 UH "no healthy upstream"', async () => {
    const r = await run([]);
    expect(r.status).toBe(503);
    expect(r.responseFlags).toEqual(['UH']);
    expect(r.body).toBe('no healthy upstream');
  });
});
