import { afterAll, describe, expect, it } from 'vitest';
import { ActiveHealthChecker, type ProbeResult } from '../src/resilience/health-checker';
import { MemoryStatScope } from '../src/resilience/types';
import { deadPort, hostOf, startUpstream, waitFor, type TestHost, type Upstream } from './resilience-upstreams';

// Real HTTP probes to real upstreams on loopback; intervals are short so the test is quick, verdicts are polled.
const ups: Upstream[] = [];
const checkers: ActiveHealthChecker<TestHost>[] = [];
async function upstream(name: string) {
  const u = await startUpstream(name);
  ups.push(u);
  return u;
}
function checker(hosts: TestHost[], config: Partial<ConstructorParameters<typeof ActiveHealthChecker<TestHost>>[0]['config']> = {}, stats = new MemoryStatScope()) {
  const probes: { host: string; result: ProbeResult }[] = [];
  /** each flag change with the probes seen by then */
  const changes: { host: string; healthy: boolean; probes: ProbeResult[] }[] = [];
  const c = new ActiveHealthChecker<TestHost>({
    clusterName: 'out#80#order',
    config: { path: '/health', intervalMs: 40, timeoutMs: 300, unhealthyThreshold: 2, healthyThreshold: 2, ...config },
    hosts: () => hosts,
    stats,
    onProbe: (h, result) => probes.push({ host: h.name, result }),
    onChange: (h, healthy) => changes.push({ host: h.name, healthy, probes: probes.filter((p) => p.host === h.name).map((p) => p.result) }),
  });
  checkers.push(c);
  return { c, stats, probes, changes };
}
afterAll(async () => {
  for (const c of checkers) c.stop();
  await Promise.all(ups.map((u) => u.close()));
});

describe('active HTTP health checking against real upstreams', () => {
  it('a new host is failed_active_hc until its first probe passes; one pass is enough the first time', async () => {
    const ok = await upstream('hc-ok');
    const h = hostOf(ok);
    const { c, stats } = checker([h], { intervalMs: 60_000 });
    c.start();
    expect(h.healthFlags.has('failed_active_hc')).toBe(true);
    await waitFor('first probe passes', () => h.healthFlags.size === 0);
    expect(ok.healthHits).toBe(1);
    expect(stats.get('health_check.attempt')).toBe(1);
    expect(stats.get('health_check.success')).toBe(1);
    expect(stats.get('health_check.healthy')).toBe(1);
  });

  it('a host that fails its health check gets failed_active_hc after unhealthyThreshold failures, and recovers after healthyThreshold passes', async () => {
    const up = await upstream('hc-flap');
    const h = hostOf(up);
    const { c, stats, changes } = checker([h]);
    c.start();
    await waitFor('healthy', () => h.healthFlags.size === 0);
    up.healthStatus = 500;
    await waitFor('marked unhealthy', () => h.healthFlags.has('failed_active_hc'));
    up.healthStatus = 200;
    await waitFor('healthy again', () => h.healthFlags.size === 0);
    // the probe history at each flag change: pass (first) -> 2 failures -> 2 passes
    expect(changes.map((x) => x.healthy)).toEqual([true, false, true]);
    const [, down, upAgain] = changes;
    expect(down!.probes.slice(-2)).toEqual(['failure', 'failure']);
    expect(down!.probes.at(-3)).toBe('success');
    expect(upAgain!.probes.slice(-2)).toEqual(['success', 'success']);
    expect(upAgain!.probes.at(-3)).toBe('failure');
    expect(stats.get('health_check.failure')).toBeGreaterThanOrEqual(2);
  });

  it('a dead host is a network failure; a hanging health check times out', async () => {
    const dead = hostOf({ address: '127.0.0.1', port: await deadPort(), name: 'dead' });
    const hangUp = await upstream('hc-hang');
    hangUp.hangHealth = true;
    const hang = hostOf(hangUp);
    const { c, stats, probes } = checker([dead, hang], { timeoutMs: 100, unhealthyThreshold: 1 });
    c.start();
    await waitFor('both probed twice', () => probes.filter((p) => p.host === 'hc-hang').length >= 2 && probes.filter((p) => p.host === 'dead').length >= 2);
    expect(dead.healthFlags.has('failed_active_hc')).toBe(true);
    expect(hang.healthFlags.has('failed_active_hc')).toBe(true);
    expect(probes.every((p) => p.result === 'network_failure')).toBe(true);
    expect(stats.get('health_check.network_failure')).toBeGreaterThanOrEqual(4);
    expect(hangUp.healthHits).toBeGreaterThanOrEqual(2);
  });

  it('x-envoy-immediate-health-check-fail fails a healthy host at once, whatever the threshold', async () => {
    const up = await upstream('hc-immediate');
    const h = hostOf(up);
    const { c, probes } = checker([h], { unhealthyThreshold: 100 });
    c.start();
    await waitFor('healthy', () => h.healthFlags.size === 0);
    up.healthStatus = 503;
    up.healthHeaders = { 'x-envoy-immediate-health-check-fail': 'true' };
    await waitFor('failed at once', () => h.healthFlags.has('failed_active_hc'));
    expect(probes.filter((p) => p.result === 'immediate_failure')).toHaveLength(1);
  });

  it('sends Host = the cluster name and user-agent Envoy/HC, and follows endpoint changes', async () => {
    const up = await upstream('hc-headers');
    const up2 = await upstream('hc-added');
    const hosts = [hostOf(up)];
    const { c } = checker(hosts, { intervalMs: 30 });
    c.start();
    await waitFor('probed', () => up.healthHits > 0);
    expect(up.lastHealthHeaders.host).toBe('out#80#order');
    expect(up.lastHealthHeaders['user-agent']).toBe('Envoy/HC');
    // a host added by an endpoint update is probed after sync(); a removed one no longer is
    hosts.push(hostOf(up2));
    hosts.shift();
    c.sync();
    await waitFor('new host healthy', () => hosts[0]!.healthFlags.size === 0);
    const hitsAfterRemoval = up.healthHits;
    await waitFor('a few more probes of the new host', () => up2.healthHits >= 4);
    expect(up.healthHits).toBe(hitsAfterRemoval);
  });

  it('rejects a health-check path without a leading slash', () => {
    expect(() => new ActiveHealthChecker({ clusterName: 'x', config: { path: 'health' }, hosts: () => [] })).toThrow(/must start with "\/"/);
  });
});
