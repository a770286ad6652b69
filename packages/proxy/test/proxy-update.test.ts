import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cluster, curl, request, startProxy, startUpstream, vhost, type StartedProxy, type TestUpstream } from './support/proxy-harness';

// Run-time updates while real traffic flows: no request may fail, and the new config is in force after.
describe('run-time updates', () => {
  let ups: TestUpstream[];
  let p: StartedProxy;
  const base = (endpoints: TestUpstream[], version: string) => ({
    version,
    clusters: [cluster('out#80#order', endpoints)],
    routes: { virtualHosts: [vhost('order', ['order'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#order' } }])] },
  });

  beforeAll(async () => {
    ups = await Promise.all(['A', 'B', 'C'].map((n) => startUpstream(n)));
    p = await startProxy(base([ups[0]!], 'v1'));
  });
  afterAll(async () => {
    await p?.proxy.close();
    await Promise.all((ups ?? []).map((u) => u.close()));
  });

  it('replaces endpoints under a bounded load with zero failed requests', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    const failures: string[] = [];
    const served = new Map<string, number>();
    let sent = 0;
    let stop = false;
    const deadline = Date.now() + 20_000; // bound in time as well as in count
    const worker = async () => {
      while (!stop && sent < 4000 && Date.now() < deadline) {
        sent++;
        try {
          const r = await request(p.port, { host: 'order', path: '/load', agent });
          if (r.status !== 200) failures.push(`${r.status} ${r.body}`);
          else served.set(r.body[0]!, (served.get(r.body[0]!) ?? 0) + 1);
        } catch (err) {
          failures.push(String(err));
        }
      }
    };
    const load = Promise.all(Array.from({ length: 16 }, worker));
    const plan: [TestUpstream[], string][] = [[[ups[0]!, ups[1]!], 'v2'], [[ups[1]!], 'v3'], [[ups[1]!, ups[2]!], 'v4'], [[ups[2]!], 'v5']];
    for (const [eps, version] of plan) {
      const target = sent + 300;
      while (sent < target && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      p.proxy.update(base(eps, version));
    }
    const target = sent + 300;
    while (sent < target && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    stop = true;
    await load;
    agent.destroy();
    expect(failures).toEqual([]);
    expect(sent).toBeGreaterThan(1000);
    // Every stage took traffic, and the last config is the one in force.
    for (const n of ['A', 'B', 'C']) expect(served.get(n) ?? 0).toBeGreaterThan(0);
    const after = await Promise.all(Array.from({ length: 10 }, () => request(p.port, { host: 'order' })));
    expect(after.every((r) => r.body.startsWith('C '))).toBe(true);
    const dump = JSON.parse((await curl(['-s', `http://127.0.0.1:${p.admin}/config_dump?resource=static_clusters`])).stdout);
    expect(dump.configs[0].version_info).toBe('v5');
  });

  it('replaces routes: a new virtual host works and a removed one gives 404', async () => {
    p.proxy.update({
      version: 'v6',
      clusters: [cluster('out#80#order', [ups[0]!]), cluster('out#80#pay', [ups[1]!])],
      routes: { virtualHosts: [vhost('pay', ['pay'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#pay' } }])] },
    });
    expect((await request(p.port, { host: 'pay' })).body.startsWith('B ')).toBe(true);
    expect((await request(p.port, { host: 'order' })).status).toBe(404);
  });

  it('rejects an invalid update and keeps the running config (nothing half-applied)', async () => {
    expect(() => p.proxy.update({ clusters: [{ name: 'x', lbPolicy: 'fastest' }], routes: { virtualHosts: [] } })).toThrow(/lbPolicy/);
    expect((await request(p.port, { host: 'pay' })).body.startsWith('B ')).toBe(true);
  });

  it('takes endpoints from a registry snapshot for a cluster without static endpoints', async () => {
    p.proxy.update({
      version: 'v7',
      clusters: [{ name: `out#${ups[2]!.port}#shop` }],
      routes: { virtualHosts: [vhost('shop', ['shop'], [{ match: { prefix: '/' }, route: { cluster: `out#${ups[2]!.port}#shop` } }])] },
    });
    expect((await request(p.port, { host: 'shop' })).status).toBe(503);
    p.proxy.updateRegistry({ services: [{ name: 'shop', namespace: 'default', instances: [{ id: 'shop-1', address: '127.0.0.1', port: ups[2]!.port, healthy: true, weight: 1, metadata: {} }] }] });
    expect((await request(p.port, { host: 'shop' })).body.startsWith('C ')).toBe(true);
    const clusters = (await curl(['-s', `http://127.0.0.1:${p.admin}/clusters`])).stdout;
    expect(clusters).toContain(`out#${ups[2]!.port}#shop::added_via_api::true`);
  });
});
