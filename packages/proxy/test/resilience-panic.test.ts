import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { MeshError } from '@mesh-agent/shared-config';
import { createProxy } from '../src/proxy';
import { HealthyHostSelector, healthyPercent } from '../src/resilience/host-selection';
import type { HealthFlag } from '../src/resilience/types';
import { startUpstream, waitFor, type Upstream } from './resilience-upstreams';
import { admin, CLUSTER, closeProxies, flagsOf, startProxy, stat, viaProxy } from './support/resilience-proxy';

// Envoy's panic threshold through the real proxy (Cluster.pickHost uses HealthyHostSelector):
// hosts are marked unhealthy by the registry (EDS health, `healthy: false`), real upstreams on loopback.
const ups: Upstream[] = [];
afterEach(closeProxies);
afterAll(async () => { await Promise.all(ups.map((u) => u.close())); });

async function three(prefix: string): Promise<Upstream[]> {
  const list = [await startUpstream(`${prefix}1`), await startUpstream(`${prefix}2`), await startUpstream(`${prefix}3`)];
  ups.push(...list);
  return list;
}

function endpoints(list: Upstream[], healthy: boolean[]) {
  return list.map((u, i) => ({ address: u.address, port: u.port, healthy: healthy[i] }));
}

describe('panic threshold', () => {
  it('with enough healthy hosts (2 of 3 = 67% >= 50%), only healthy hosts get traffic', async () => {
    const list = await three('panic-a');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpoints(list, [false, true, true]) }], { cluster: CLUSTER });
    for (let i = 0; i < 20; i++) expect((await viaProxy(p.port)).status).toBe(200);
    expect(list[0]!.hits).toBe(0);
    expect(list[1]!.hits + list[2]!.hits).toBe(20);
    expect(stat(await admin(p.admin, '/stats'), `cluster.${CLUSTER}.lb_healthy_panic`)).toBe(0);
  });

  it('below the threshold (1 of 3 healthy = 33% < 50%) traffic is balanced across all hosts; lb_healthy_panic counts it', async () => {
    const list = await three('panic-b');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpoints(list, [false, false, true]) }], { cluster: CLUSTER });
    for (let i = 0; i < 30; i++) expect((await viaProxy(p.port)).status).toBe(200);
    expect(list.map((u) => u.hits)).toEqual([10, 10, 10]);
    expect(stat(await admin(p.admin, '/stats'), `cluster.${CLUSTER}.lb_healthy_panic`)).toBe(30);
  });

  it('with the default threshold, a cluster with no healthy host at all is in panic: traffic still flows', async () => {
    const list = await three('panic-c');
    const p = await startProxy([{ name: CLUSTER, endpoints: endpoints(list, [false, false, false]) }], { cluster: CLUSTER });
    for (let i = 0; i < 6; i++) expect((await viaProxy(p.port)).status).toBe(200);
    expect(list.map((u) => u.hits)).toEqual([2, 2, 2]);
  });

  it('a threshold of 0 disables panic: with no healthy host the answer is 503 UH; with one, only it gets traffic', async () => {
    const list = await three('panic-d');
    const p = await startProxy([
      { name: CLUSTER, panicThresholdPercent: 0, endpoints: endpoints(list, [false, false, false]) },
      { name: 'out#80#one', panicThresholdPercent: 0, endpoints: endpoints(list, [false, false, true]) },
    ], { cluster: CLUSTER }, {
      routes: { virtualHosts: [{ name: 'order', domains: ['order'], routes: [
        { match: { prefix: '/one' }, route: { cluster: 'out#80#one' } },
        { match: { prefix: '/' }, route: { cluster: CLUSTER } },
      ] }] },
    });
    const none = await viaProxy(p.port);
    expect(none.status).toBe(503);
    expect(none.body).toBe('no healthy upstream\n');
    for (let i = 0; i < 4; i++) expect((await viaProxy(p.port, { path: '/one' })).status).toBe(200);
    expect(list.map((u) => u.hits)).toEqual([0, 0, 4]);
    await waitFor('five log lines', () => p.log.length === 5);
    expect(flagsOf(p.log[0]!)).toBe('UH');
    const stats = await admin(p.admin, '/stats');
    expect(stat(stats, `cluster.${CLUSTER}.lb_healthy_panic`)).toBe(0);
    expect(stat(stats, `cluster.${CLUSTER}.upstream_cx_none_healthy`)).toBe(1);
  });

  it('a threshold changed by an update takes effect', async () => {
    const list = await three('panic-e');
    const cfg = (threshold: number) => ({
      admin: { address: '127.0.0.1', port: 0 }, listener: { address: '127.0.0.1', port: 0 },
      clusters: [{ name: CLUSTER, panicThresholdPercent: threshold, endpoints: endpoints(list, [false, false, false]) }],
      routes: { virtualHosts: [{ name: 'order', domains: ['order'], routes: [{ match: { prefix: '/' }, route: { cluster: CLUSTER } }] }] },
    });
    const proxy = createProxy(cfg(50), { admin: false });
    try {
      const { listener } = await proxy.start();
      expect((await viaProxy(listener.port)).status).toBe(200);
      proxy.update(cfg(0));
      expect((await viaProxy(listener.port)).status).toBe(503);
    } finally {
      await proxy.close();
    }
  });

  it('the selector alone: healthy share, and a threshold outside 0..100 is refused (schema and class)', () => {
    const flags = (n: number) => ({ healthFlags: new Set<HealthFlag>(n ? ['failed_active_hc'] : []) });
    expect(Math.round(healthyPercent([flags(1), flags(1), flags(0)]))).toBe(33);
    expect(() => new HealthyHostSelector(150)).toThrow(/0\.\.100/);
    expect(() => createProxy({ clusters: [{ name: CLUSTER, panicThresholdPercent: 150 }] }, { admin: false })).toThrow(MeshError);
  });
});
