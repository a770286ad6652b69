import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { OutlierDetector } from '../src/resilience/outlier-detector';
import { MemoryStatScope } from '../src/resilience/types';
import { deadPort, hostOf, startUpstream, type TestHost, type Upstream } from './resilience-upstreams';
import { admin, CLUSTER, closeProxies, endpointsOf, startProxy, stat, viaProxy } from './support/resilience-proxy';

const ups: Upstream[] = [];
async function upstream(name: string, behavior: Upstream['behavior'] = 'ok') {
  const u = await startUpstream(name, behavior);
  ups.push(u);
  return u;
}
afterAll(async () => { await Promise.all(ups.map((u) => u.close())); });
afterEach(closeProxies);

describe('outlier detection through the proxy, against real upstreams', () => {
  const flagged = (clusters: string, u: Upstream) => clusters.includes(`${u.address}:${u.port}::health_flags::/failed_outlier_check`);

  it('consecutive 5xx from an upstream returning 503s ejects it: failed_outlier_check, counters, no more traffic', async () => {
    const bad = await upstream('od-503', '503');
    const good1 = await upstream('od-good1');
    const good2 = await upstream('od-good2');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(bad, good1, good2), outlierDetection: { consecutive5xx: 3, maxEjectionPercent: 50 } }], { cluster: CLUSTER });
    for (let i = 0; i < 9; i++) await viaProxy(p.port);
    expect(bad.hits).toBe(3);
    expect(flagged(await admin(p.admin, '/clusters'), bad)).toBe(true);
    const stats = await admin(p.admin, '/stats');
    const od = `cluster.${CLUSTER}.outlier_detection.`;
    expect(stat(stats, `${od}ejections_detected_consecutive_5xx`)).toBe(1);
    expect(stat(stats, `${od}ejections_enforced_consecutive_5xx`)).toBe(1);
    expect(stat(stats, `${od}ejections_enforced_total`)).toBe(1);
    expect(stat(stats, `${od}ejections_active`)).toBe(1);
    const results = [];
    for (let i = 0; i < 10; i++) results.push((await viaProxy(p.port)).status);
    expect(results.every((s) => s === 200)).toBe(true);
    expect(bad.hits).toBe(3);
  });

  it('consecutive connect failures (a dead upstream) eject as gateway failures', async () => {
    const good = await upstream('od-good3');
    const good2 = await upstream('od-good4');
    const dead = { address: '127.0.0.1', port: await deadPort() } as Upstream;
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(dead, good, good2), outlierDetection: { consecutive5xx: 100, consecutiveGatewayFailure: 2, maxEjectionPercent: 50 } }],
      { cluster: CLUSTER, retryPolicy: { retryOn: 'connect-failure', numRetries: 1 } });
    const statuses = [];
    for (let i = 0; i < 6; i++) statuses.push((await viaProxy(p.port)).status);
    // retries hide the failures from clients; the detector still sees them
    expect(statuses.every((s) => s === 200)).toBe(true);
    expect(flagged(await admin(p.admin, '/clusters'), dead)).toBe(true);
    expect(stat(await admin(p.admin, '/stats'), `cluster.${CLUSTER}.outlier_detection.ejections_enforced_consecutive_gateway_failure`)).toBe(1);
  });

  it('never ejects more than max_ejection_percent, but always allows one: ejections_overflow', async () => {
    const a = await upstream('od-bad-a', '503');
    const b = await upstream('od-bad-b', '503');
    const c = await upstream('od-good-c');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpointsOf(a, b, c), outlierDetection: { consecutive5xx: 2, maxEjectionPercent: 10 } }], { cluster: CLUSTER });
    for (let i = 0; i < 12; i++) await viaProxy(p.port);
    const clusters = await admin(p.admin, '/clusters');
    expect([a, b, c].filter((u) => flagged(clusters, u))).toHaveLength(1);
    const stats = await admin(p.admin, '/stats');
    expect(stat(stats, `cluster.${CLUSTER}.outlier_detection.ejections_enforced_total`)).toBe(1);
    expect(stat(stats, `cluster.${CLUSTER}.outlier_detection.ejections_overflow`)).toBeGreaterThanOrEqual(1);
  });
});

describe('ejection timing (interval sweeps driven with a test clock)', () => {
  it('ejects for base time x number of ejections, and un-ejects on the sweep after that', () => {
    let now = 1_000_000;
    const hosts = [hostOf({ address: '198.18.0.2', port: 80 }), hostOf({ address: '198.18.0.3', port: 80 })];
    const stats = new MemoryStatScope();
    const d = new OutlierDetector<TestHost>({ hosts: () => hosts, stats, now: () => now, config: { consecutive5xx: 2, baseEjectionTimeMs: 30_000, intervalMs: 10_000 } });
    const [h] = hosts;
    d.recordStatus(h!, 500);
    expect(d.isEjected(h!)).toBe(false);
    d.recordStatus(h!, 503);
    expect(d.isEjected(h!)).toBe(true);
    now += 20_000; d.sweep();
    expect(h!.healthFlags.has('failed_outlier_check')).toBe(true);
    now += 10_000; d.sweep();
    expect(h!.healthFlags.has('failed_outlier_check')).toBe(false);
    expect(stats.get('outlier_detection.ejections_active')).toBe(0);
    // second ejection right away: 2 x 30 s
    d.recordStatus(h!, 500); d.recordStatus(h!, 500);
    expect(d.ejectionCount(h!)).toBe(2);
    now += 30_000; d.sweep();
    expect(d.isEjected(h!)).toBe(true);
    now += 30_000; d.sweep();
    expect(d.isEjected(h!)).toBe(false);
    // each interval in service lowers the multiplier by one
    now += 10_000; d.sweep();
    expect(d.ejectionCount(h!)).toBe(1);
  });

  it('a success resets the consecutive count', () => {
    const hosts = [hostOf({ address: '198.18.0.2', port: 80 })];
    const d = new OutlierDetector<TestHost>({ hosts: () => hosts, config: { consecutive5xx: 3 } });
    d.recordStatus(hosts[0]!, 500); d.recordStatus(hosts[0]!, 500); d.recordStatus(hosts[0]!, 200); d.recordStatus(hosts[0]!, 500); d.recordStatus(hosts[0]!, 500);
    expect(d.isEjected(hosts[0]!)).toBe(false);
  });
});

describe('success rate', () => {
  it('is -1 without enough data, and ejects a host far below the mean', () => {
    const hosts = Array.from({ length: 5 }, (_, i) => hostOf({ address: `198.18.0.${i + 2}`, port: 80 }));
    const stats = new MemoryStatScope();
    const d = new OutlierDetector<TestHost>({ hosts: () => hosts, stats, config: { consecutive5xx: 0, consecutiveGatewayFailure: 0, maxEjectionPercent: 100, successRateStdevFactor: 1000 } });
    expect(d.clustersLines('out#80#order')).toEqual(['out#80#order::outlier::success_rate_average::-1', 'out#80#order::outlier::success_rate_ejection_threshold::-1']);
    // too few requests per host: still -1
    for (const h of hosts) for (let i = 0; i < 10; i++) d.recordStatus(h, 200);
    d.sweep();
    expect(d.successRateAverage).toBe(-1);
    expect(d.hostSuccessRate(hosts[0]!)).toBe(-1);
    // 100 requests each; the last host succeeds only half the time
    hosts.forEach((h, idx) => { for (let i = 0; i < 100; i++) d.recordStatus(h, idx === 4 && i % 2 === 0 ? 500 : 200); });
    d.sweep();
    expect(d.successRateAverage).toBe(90);
    expect(d.successRateEjectionThreshold).toBe(70);
    expect(d.hostSuccessRate(hosts[4]!)).toBe(50);
    expect(hosts[4]!.healthFlags.has('failed_outlier_check')).toBe(true);
    expect(hosts.slice(0, 4).every((h) => h.healthFlags.size === 0)).toBe(true);
    expect(stats.get('outlier_detection.ejections_enforced_success_rate')).toBe(1);
    expect(d.clustersLines('c')).toEqual(['c::outlier::success_rate_average::90', 'c::outlier::success_rate_ejection_threshold::70']);
  });
});
