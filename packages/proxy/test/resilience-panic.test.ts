import { afterAll, describe, expect, it } from 'vitest';
import { HealthyHostSelector, healthyPercent } from '../src/resilience/host-selection';
import { routeUpstreamRequest } from '../src/resilience/route-request';
import { MemoryStatScope } from '../src/resilience/types';
import { hostOf, httpSender, roundRobinChooser, startUpstream, type TestHost, type Upstream } from './resilience-upstreams';

const ups: Upstream[] = [];
afterAll(async () => { await Promise.all(ups.map((u) => u.close())); });

describe('panic threshold', () => {
  it('with enough healthy hosts, only healthy hosts get traffic', async () => {
    for (const n of ['p1', 'p2', 'p3']) ups.push(await startUpstream(n));
    const hosts = ups.slice(0, 3).map(hostOf);
    hosts[0]!.healthFlags.add('failed_active_hc');
    const stats = new MemoryStatScope();
    const selector = new HealthyHostSelector(50, stats);
    const choose = roundRobinChooser(() => selector.select(hosts).hosts);
    for (let i = 0; i < 20; i++) {
      const r = await routeUpstreamRequest<TestHost>({ method: 'GET', replayable: true, routeTimeoutMs: 10_000, chooseHost: choose, send: httpSender('GET', '/') });
      expect(r.status).toBe(200);
      r.finish();
    }
    expect(ups[0]!.hits).toBe(0);
    expect(ups[1]!.hits + ups[2]!.hits).toBe(20);
    expect(stats.get('lb_healthy_panic')).toBe(0);
  });

  it('below the threshold (1 of 3 healthy = 33% < 50%) traffic is balanced across all hosts; lb_healthy_panic counts it', async () => {
    for (const u of ups) u.hits = 0;
    const hosts = ups.slice(0, 3).map(hostOf);
    hosts[0]!.healthFlags.add('failed_active_hc');
    hosts[1]!.healthFlags.add('failed_outlier_check');
    expect(Math.round(healthyPercent(hosts))).toBe(33);
    const stats = new MemoryStatScope();
    const selector = new HealthyHostSelector(50, stats);
    const choose = roundRobinChooser(() => selector.select(hosts).hosts);
    for (let i = 0; i < 30; i++) {
      const r = await routeUpstreamRequest<TestHost>({ method: 'GET', replayable: true, routeTimeoutMs: 10_000, chooseHost: choose, send: httpSender('GET', '/') });
      r.finish();
    }
    expect(ups.slice(0, 3).map((u) => u.hits)).toEqual([10, 10, 10]);
    expect(stats.get('lb_healthy_panic')).toBe(30);
  });

  it('a threshold of 0 disables panic: with no healthy host the answer is 503 UH', async () => {
    const hosts = ups.slice(0, 2).map(hostOf);
    for (const h of hosts) h.healthFlags.add('failed_active_hc');
    const selector = new HealthyHostSelector(0);
    const r = await routeUpstreamRequest<TestHost>({
      method: 'GET', replayable: true, routeTimeoutMs: 10_000,
      chooseHost: roundRobinChooser(() => selector.select(hosts).hosts), send: httpSender('GET', '/'),
    });
    expect(r.status).toBe(503);
    expect(r.responseFlags).toEqual(['UH']);
    // default 50: all unhealthy is panic, traffic still flows
    const panicking = new HealthyHostSelector();
    expect(panicking.select(hosts)).toEqual({ hosts, panic: true });
  });

  it('rejects a threshold outside 0..100', () => {
    expect(() => new HealthyHostSelector(150)).toThrow(/0\.\.100/);
  });
});
