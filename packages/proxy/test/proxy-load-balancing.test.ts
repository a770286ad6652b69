import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cluster, request, startProxy, startUpstream, vhost, type StartedProxy, type TestUpstream } from './support/proxy-harness';

// Many real requests through the proxy; the distribution over real upstreams is what each policy promises.
const N = 600;

async function spread(p: StartedProxy, host: string, n: number, headers: (i: number) => Record<string, string> = () => ({})): Promise<Map<string, number>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const counts = new Map<string, number>();
  try {
    for (let batch = 0; batch < n; batch += 20) {
      const answers = await Promise.all(Array.from({ length: Math.min(20, n - batch) }, (_, k) => request(p.port, { host, path: '/', agent, headers: headers(batch + k) })));
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

describe('load balancing', () => {
  let ups: TestUpstream[];
  let p: StartedProxy;

  beforeAll(async () => {
    ups = await Promise.all(['U1', 'U2', 'U3'].map((n) => startUpstream(n)));
    const weighted = [{ address: '127.0.0.1', port: ups[0]!.port, weight: 3 }, { address: '127.0.0.1', port: ups[1]!.port, weight: 1 }];
    p = await startProxy({
      clusters: [
        cluster('out#80#rr', ups, { lbPolicy: 'round_robin' }),
        cluster('out#80#lr', ups, { lbPolicy: 'least_request' }),
        cluster('out#80#rand', ups, { lbPolicy: 'random' }),
        cluster('out#80#ring', ups, { lbPolicy: 'ring_hash', hashHeader: 'x-user' }),
        { name: 'out#80#wrr', endpoints: weighted, lbPolicy: 'round_robin' },
        cluster('out#80#stable', [ups[0]!]),
        cluster('out#80#canary', [ups[2]!]),
      ],
      routes: {
        virtualHosts: [
          vhost('rr', ['rr'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#rr' } }]),
          vhost('lr', ['lr'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#lr' } }]),
          vhost('rand', ['rand'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#rand' } }]),
          vhost('ring', ['ring'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#ring' } }]),
          vhost('wrr', ['wrr'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#wrr' } }]),
          vhost('split', ['split'], [{ match: { prefix: '/' }, route: { weightedClusters: [{ name: 'out#80#stable', weight: 80 }, { name: 'out#80#canary', weight: 20 }] } }]),
        ],
      },
    });
  });
  afterAll(async () => {
    await p?.proxy.close();
    await Promise.all((ups ?? []).map((u) => u.close()));
  });

  it('round robin spreads requests evenly', async () => {
    const c = await spread(p, 'rr', N);
    for (const u of ['U1', 'U2', 'U3']) expect(c.get(u)).toBe(N / 3);
  });

  it('round robin honours endpoint weights (3:1)', async () => {
    const c = await spread(p, 'wrr', 400);
    expect(c.get('U1')).toBe(300);
    expect(c.get('U2')).toBe(100);
  });

  it('least request reaches every host and keeps them within a loose band', async () => {
    const c = await spread(p, 'lr', N);
    for (const u of ['U1', 'U2', 'U3']) expect(c.get(u) ?? 0).toBeGreaterThan(N / 3 * 0.5);
  });

  it('random reaches every host roughly evenly', async () => {
    const c = await spread(p, 'rand', N);
    for (const u of ['U1', 'U2', 'U3']) {
      expect(c.get(u) ?? 0).toBeGreaterThan(N / 3 * 0.6);
      expect(c.get(u) ?? 0).toBeLessThan(N / 3 * 1.4);
    }
  });

  it('ring hash sends one header value always to the same host and spreads many values', async () => {
    const perUser = new Map<string, Set<string>>();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    try {
      for (let i = 0; i < 300; i++) {
        const user = `user-${i % 30}`;
        const r = await request(p.port, { host: 'ring', agent, headers: { 'x-user': user } });
        const set = perUser.get(user) ?? new Set<string>();
        set.add(r.body.split(' ')[0]!);
        perUser.set(user, set);
      }
    } finally {
      agent.destroy();
    }
    for (const hosts of perUser.values()) expect(hosts.size).toBe(1);
    const used = new Set([...perUser.values()].flatMap((s) => [...s]));
    expect(used.size).toBeGreaterThanOrEqual(2);
  });

  it('weighted clusters split traffic by percentage (80/20 canary)', async () => {
    const c = await spread(p, 'split', 1000);
    const canary = c.get('U3') ?? 0;
    // 20% of 1000, with a band far wider than the binomial spread (sd ~ 12.6).
    expect(canary).toBeGreaterThan(140);
    expect(canary).toBeLessThan(260);
    expect((c.get('U1') ?? 0) + canary).toBe(1000);
  });
});
