import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHost, type Host } from '../src/cluster/host';
import { choosePriority, localityPriority, priorityLevels } from '../src/cluster/locality';
import { request, startProxy, startUpstream, waitFor, type StartedProxy, type TestUpstream } from './support/proxy-harness';

// Locality failover (issue 16) through the real proxy with real upstreams on loopback: each upstream
// answers with its name, endpoints carry a zone, the proxy's node.locality says where it runs, and
// endpoint health comes from the config (EDS health), changed by live updates.

const NODE = { region: 'eu', zone: 'eu-a' };

async function spread(p: StartedProxy, n: number): Promise<Map<string, number>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 10 });
  const counts = new Map<string, number>();
  try {
    for (let batch = 0; batch < n; batch += 25) {
      const answers = await Promise.all(Array.from({ length: Math.min(25, n - batch) }, () => request(p.port, { host: 'order', path: '/', agent })));
      for (const r of answers) {
        expect(r.status).toBe(200);
        const name = r.body.split(' ')[0]!;
        counts.set(name, (counts.get(name) ?? 0) + 1);
      }
    }
  } finally {
    agent.destroy();
  }
  return counts;
}

const sum = (c: Map<string, number>, names: string[]) => names.reduce((acc, n) => acc + (c.get(n) ?? 0), 0);

/** Binomial bounds: n trials with probability p stay within 5 standard deviations (a false failure about once in 3.5 million runs). */
function expectBinomial(hits: number, n: number, p: number): void {
  const sd = Math.sqrt(n * p * (1 - p));
  expect(hits).toBeGreaterThanOrEqual(Math.floor(n * p - 5 * sd));
  expect(hits).toBeLessThanOrEqual(Math.ceil(n * p + 5 * sd));
}

describe('locality failover through the proxy', () => {
  // L1, L2: this node's zone; R1: same region, other zone; F1, F2: another region
  let ups: Record<string, TestUpstream>;
  let p: StartedProxy;
  const zones: Record<string, { region: string; zone: string; subZone?: string }> = {
    L1: { region: 'eu', zone: 'eu-a', subZone: 'rack1' }, L2: { region: 'eu', zone: 'eu-a' },
    R1: { region: 'eu', zone: 'eu-b' }, F1: { region: 'us', zone: 'us-a' }, F2: { region: 'us', zone: 'us-b' },
  };

  function config(unhealthy: string[], extra: Record<string, unknown> = {}, names = Object.keys(zones)): Record<string, unknown> {
    return {
      node: { id: 'n1', cluster: 'caller', locality: NODE },
      admin: { address: '127.0.0.1', port: 0 },
      listener: { name: 'virtual', address: '127.0.0.1', port: 0 },
      accessLog: { format: 'text', path: '/dev/null' },
      clusters: [{
        name: 'out#80#order',
        endpoints: names.map((n) => ({ address: '127.0.0.1', port: ups[n]!.port, healthy: !unhealthy.includes(n), locality: zones[n], metadata: { id: n } })),
        ...extra,
      }],
      routes: { virtualHosts: [{ name: 'order', domains: ['order'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#80#order' } }] }] },
    };
  }

  beforeAll(async () => {
    ups = {};
    for (const n of Object.keys(zones)) ups[n] = await startUpstream(n);
    p = await startProxy(config([]));
  });
  afterAll(async () => {
    await p?.proxy.close();
    await Promise.all(Object.values(ups ?? {}).map((u) => u.close()));
  });

  it('sends every request to the local zone while it is healthy', async () => {
    p.proxy.update(config([]));
    const c = await spread(p, 400);
    expect(sum(c, ['L1', 'L2'])).toBe(400);
    expect(c.get('L1')).toBe(200); // round robin within the level
  });

  it('1 of 2 local endpoints healthy: 70 % local (1.4 x 50 %), the rest to the same region first', async () => {
    p.proxy.update(config(['L2']));
    const n = 2000;
    const c = await spread(p, n);
    expect(c.get('L2') ?? 0).toBe(0);
    expectBinomial(c.get('L1') ?? 0, n, 0.7);
    // P1 (eu-b, healthy) takes all of the spill-over: P2 (another region) gets nothing
    expect(c.get('R1') ?? 0).toBe(n - (c.get('L1') ?? 0));
    expect(sum(c, ['F1', 'F2'])).toBe(0);
  });

  it('all local endpoints unhealthy: 100 % to the same region, then (that one down too) 100 % to the other region', async () => {
    p.proxy.update(config(['L1', 'L2']));
    let c = await spread(p, 300);
    expect(c.get('R1')).toBe(300);
    p.proxy.update(config(['L1', 'L2', 'R1']));
    c = await spread(p, 300);
    expect(sum(c, ['F1', 'F2'])).toBe(300);
    expect(c.get('F1')).toBe(150);
  });

  it('the panic threshold applies per level only when all levels together are short: 1 of 2 healthy in every level is no panic', async () => {
    // P0 1/2 -> 70, P1 R1 unhealthy (0/1), P2 1/2 -> 70: normalized total 100, no panic; loads 70 / 0 / 30
    p.proxy.update(config(['L2', 'R1', 'F2']));
    const n = 1000;
    const c = await spread(p, n);
    expect(sum(c, ['L2', 'R1', 'F2'])).toBe(0);
    expectBinomial(c.get('L1') ?? 0, n, 0.7);
    expect(c.get('F1')).toBe(n - (c.get('L1') ?? 0));
  });

  it('every host unhealthy: every level in panic, load by host count (2 : 1 : 2), each level across all its hosts', async () => {
    p.proxy.update(config(Object.keys(zones)));
    const n = 1000;
    const c = await spread(p, n);
    expectBinomial(sum(c, ['L1', 'L2']), n, 0.4);
    expectBinomial(c.get('R1') ?? 0, n, 0.2);
    expect(c.get('L2') ?? 0).toBeGreaterThan(0);
    const stats = await (await fetch(`http://127.0.0.1:${p.admin}/stats`)).text();
    expect(stats).toContain(`cluster.out#80#order.lb_healthy_panic: `);
  });

  it('localityLb.enabled false: every locality alike (round robin over all five)', async () => {
    p.proxy.update(config([], { localityLb: { enabled: false } }));
    const c = await spread(p, 500);
    for (const n of Object.keys(zones)) expect(c.get(n)).toBe(100);
  });

  it('a custom overprovisioning factor (100): 1 of 2 local healthy = 50 % local', async () => {
    p.proxy.update(config(['L2'], { localityLb: { overprovisioningFactor: 100 } }));
    const n = 1000;
    const c = await spread(p, n);
    expectBinomial(c.get('L1') ?? 0, n, 0.5);
  });

  it('/clusters shows each host\'s region, zone, sub_zone and priority, in text and in JSON', async () => {
    p.proxy.update(config([]));
    const text = await (await fetch(`http://127.0.0.1:${p.admin}/clusters`)).text();
    const line = (n: string, field: string) => `out#80#order::127.0.0.1:${ups[n]!.port}::${field}`;
    expect(text).toContain(`${line('L1', 'region')}::eu\n`);
    expect(text).toContain(`${line('L1', 'zone')}::eu-a\n`);
    expect(text).toContain(`${line('L1', 'sub_zone')}::rack1\n`);
    expect(text).toContain(`${line('L2', 'sub_zone')}::\n`);
    expect(text).toContain(`${line('L1', 'priority')}::0\n`);
    expect(text).toContain(`${line('R1', 'priority')}::1\n`);
    expect(text).toContain(`${line('F2', 'zone')}::us-b\n`);
    expect(text).toContain(`${line('F2', 'priority')}::2\n`);
    const json = await (await fetch(`http://127.0.0.1:${p.admin}/clusters?format=json`)).json() as { cluster_statuses: { name: string; host_statuses: { address: { socket_address: { port_value: number } }; priority: number; locality: Record<string, string> }[] }[] };
    const hosts = json.cluster_statuses.find((s) => s.name === 'out#80#order')!.host_statuses;
    const of = (n: string) => hosts.find((h) => h.address.socket_address.port_value === ups[n]!.port)!;
    expect(of('L1')).toMatchObject({ priority: 0, locality: { region: 'eu', zone: 'eu-a', sub_zone: 'rack1' } });
    expect(of('R1')).toMatchObject({ priority: 1, locality: { region: 'eu', zone: 'eu-b' } });
    expect(of('F1')).toMatchObject({ priority: 2, locality: { region: 'us', zone: 'us-a' } });
  });

  it('priorities stay contiguous (Istio\'s way): without local endpoints the same-region ones are priority 0', async () => {
    p.proxy.update(config([], {}, ['R1', 'F1']));
    const text = await (await fetch(`http://127.0.0.1:${p.admin}/clusters`)).text();
    expect(text).toContain(`out#80#order::127.0.0.1:${ups.R1!.port}::priority::0\n`);
    expect(text).toContain(`out#80#order::127.0.0.1:${ups.F1!.port}::priority::1\n`);
    const c = await spread(p, 100);
    expect(c.get('R1')).toBe(100);
  });
});

describe('locality failover driven by real active health checks', () => {
  // the local zone's servers fail their own /health (503) while `down`; the proxy's health checker finds out
  const down = new Set<string>();
  let ups: Record<string, TestUpstream>;
  let p: StartedProxy;
  const zones: Record<string, { region: string; zone: string }> = { L1: NODE, L2: NODE, R1: { region: 'eu', zone: 'eu-b' } };

  beforeAll(async () => {
    ups = {};
    for (const n of Object.keys(zones)) {
      ups[n] = await startUpstream(n, (req, res) => {
        if (req.url === '/health') { res.statusCode = down.has(n) ? 503 : 200; res.end(); return; }
        res.end(`${n} ${req.url}\n`);
      });
    }
    p = await startProxy({
      node: { id: 'n1', cluster: 'caller', locality: NODE },
      clusters: [{
        name: 'out#80#order',
        endpoints: Object.keys(zones).map((n) => ({ address: '127.0.0.1', port: ups[n]!.port, locality: zones[n] })),
        healthCheck: { path: '/health', intervalMs: 100, timeoutMs: 1000, unhealthyThreshold: 1, healthyThreshold: 1 },
      }],
      routes: { virtualHosts: [{ name: 'order', domains: ['order'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#80#order' } }] }] },
    });
  });
  afterAll(async () => {
    await p?.proxy.close();
    await Promise.all(Object.values(ups ?? {}).map((u) => u.close()));
  });

  const flagsOf = async (n: string) => {
    const text = await (await fetch(`http://127.0.0.1:${p.admin}/clusters`)).text();
    return text.split('\n').find((l) => l.startsWith(`out#80#order::127.0.0.1:${ups[n]!.port}::health_flags::`))?.split('::')[3];
  };

  it('the local zone failing its health checks moves every request to the other zone, and back when it recovers', async () => {
    await waitFor(async () => (await flagsOf('L1')) === 'healthy' && (await flagsOf('L2')) === 'healthy', 'local hosts healthy');
    let c = await spread(p, 200);
    expect(sum(c, ['L1', 'L2'])).toBe(200);
    down.add('L1'); down.add('L2');
    await waitFor(async () => (await flagsOf('L1')) === '/failed_active_hc' && (await flagsOf('L2')) === '/failed_active_hc', 'local hosts failed_active_hc');
    c = await spread(p, 200);
    expect(c.get('R1')).toBe(200);
    down.clear();
    await waitFor(async () => (await flagsOf('L1')) === 'healthy' && (await flagsOf('L2')) === 'healthy', 'local hosts healthy again');
    c = await spread(p, 200);
    expect(sum(c, ['L1', 'L2'])).toBe(200);
  });
});

describe('priority load (src/cluster/locality.ts)', () => {
  const hosts = (healthy: boolean[]): Host[] => healthy.map((h, i) => createHost({ address: '127.0.0.1', port: 1000 + i, healthy: h }));
  // the share of random numbers 0.000 .. 0.999 that land on each level
  function shares(levels: Host[][], factor = 140, panic = 50): number[] {
    const out = levels.map(() => 0);
    for (let i = 0; i < 1000; i++) out[choosePriority(levels, factor, panic, i / 1000).level]!++;
    return out.map((n) => n / 10);
  }

  const expectShares = (got: number[], want: number[]) => want.forEach((w, i) => expect(got[i]).toBeCloseTo(w, 0));

  it('follows Envoy\'s examples: P0 healthy % x 1.4, capped at 100, the rest to P1', () => {
    expectShares(shares([hosts([true, true]), hosts([true])]), [100, 0]);
    expectShares(shares([hosts([true, false]), hosts([true])]), [70, 30]);
    expectShares(shares([hosts([true, true, true, true, true, false, false, false, false, false]), hosts([true])]), [70, 30]);
    expectShares(shares([hosts([true, true, true, true, true, true, true, true, false, false]), hosts([true])]), [100, 0]); // 80 % x 1.4 >= 100
    expectShares(shares([hosts([false, false]), hosts([true])]), [0, 100]);
  });

  it('normalizes when the total health is below 100 %; panics only then, per level', () => {
    // P0 20 % healthy -> 28, P1 40 % -> 56: total 84, loads 28/84 and 56/84; both under the 50 % threshold: all levels in panic, load by host count
    const p0 = hosts([true, false, false, false, false]);
    const p1 = hosts([true, true, false, false, false]);
    expectShares(shares([p0, p1]), [50, 50]);
    expect(choosePriority([p0, p1], 140, 50, 0.1).panic).toBe(true);
    // threshold 0 disables panic: normalized loads 33.3 / 66.7
    const s = shares([p0, p1], 140, 0);
    expect(s[0]).toBeCloseTo(33.3, 0);
    expect(choosePriority([p0, p1], 140, 0, 0.1).panic).toBe(false);
  });

  it('assigns P0 same region and zone, P1 same region, P2 the rest; a node without a region matches zones alone', () => {
    expect(localityPriority(NODE, { region: 'eu', zone: 'eu-a' })).toBe(0);
    expect(localityPriority(NODE, { region: 'eu', zone: 'eu-b' })).toBe(1);
    expect(localityPriority(NODE, { region: 'us', zone: 'eu-a' })).toBe(2);
    expect(localityPriority(NODE, undefined)).toBe(2);
    expect(localityPriority({ zone: 'eu-a' }, { region: 'eu', zone: 'eu-a' })).toBe(0);
    expect(localityPriority({ zone: 'eu-a' }, { region: 'eu', zone: 'eu-b' })).toBe(2);
    // no zone on the node, or everything in one level: no levels (the single-level fast path)
    const all = hosts([true, true]);
    expect(priorityLevels(all, { region: 'eu' }, true)).toBeUndefined();
    expect(priorityLevels(all, NODE, true)).toBeUndefined();
  });
});
