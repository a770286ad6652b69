// Per-service VIPs claimed in a real etcd (started by the test on loopback): hosts that allocate
// independently and concurrently agree, collisions probe on, a claim never moves, a full range is a
// clear error, and mesh-dns on two agents answers `dig` with the claimed VIPs.
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdRegistry } from '../src/registry/index';
import { VipRange } from '../src/vip-allocation';
import { startApp, startTestAgent, type TestAgent, type TestApp } from './agent-fixture';
import { startEtcd, type EtcdServer } from './etcd-server';
import { eventually } from './helpers';

const exec = promisify(execFile);

function haveEtcd(): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v etcd'], { stdio: 'ignore' });
    return true;
  } catch {
    if (process.env.CI) throw new Error('etcd is missing (Debian etcd-server; scripts/install-test-deps.sh installs it)');
    return false;
  }
}

const MESH_VIP = '240.240.0.1';

describe.skipIf(!haveEtcd())('per-service VIPs in etcd (real etcd)', { timeout: 120_000 }, () => {
  let etcd: EtcdServer;
  let client: Etcd3;
  const registries: EtcdRegistry[] = [];

  beforeAll(async () => {
    etcd = await startEtcd();
    client = new Etcd3({ hosts: etcd.endpoint });
  });

  afterAll(async () => {
    await Promise.all(registries.map((r) => r.close()));
    client?.close();
    await etcd?.stop();
  });

  function host(prefix: string, vipCidr: string, errors: Error[] = []): EtcdRegistry {
    const r = new EtcdRegistry({ endpoints: [etcd.endpoint], prefix, leaseTtlSeconds: 5, dialTimeoutMs: 2000, onError: (e) => errors.push(e), vips: { vipCidr, meshVip: MESH_VIP } });
    registries.push(r);
    return r;
  }

  const instance = (id: string) => ({ id, address: '198.18.0.10', port: 6379, healthy: true, weight: 1, metadata: {} });
  const vipsOf = (r: EtcdRegistry) => Object.fromEntries(r.snapshot().services.map((s) => [`${s.namespace}/${s.name}`, s.vip]));

  it('two hosts registering services at the same time agree on one distinct VIP per service', async () => {
    const [a, b] = [host('/vip-agree/', '240.240.0.0/16'), host('/vip-agree/', '240.240.0.0/16')];
    await Promise.all([a.start(), b.start()]);
    const names = ['redis', 'mysql', 'order', 'user', 'pay'];
    // every service registered on both hosts at once: both race to claim each name
    await Promise.all(names.flatMap((n) => [a.register({ service: n, namespace: 'default', instance: instance(`${n}-a`) }), b.register({ service: n, namespace: 'default', instance: instance(`${n}-b`) })]));
    const agreed = await eventually(() => {
      const [va, vb] = [vipsOf(a), vipsOf(b)];
      return names.every((n) => va[`default/${n}`]) && JSON.stringify(va) === JSON.stringify(vb) ? va : undefined;
    }, 'both hosts to see the same claims', 10_000);
    const vips = Object.values(agreed) as string[];
    expect(new Set(vips).size).toBe(names.length);
    const range = new VipRange({ vipCidr: '240.240.0.0/16', meshVip: MESH_VIP });
    for (const v of vips) expect(range.contains(v)).toBe(true);
    // what etcd holds is what both hosts use
    for (const n of names) expect(await client.get(`/vip-agree/vip-of/default/${n}`).string()).toBe(agreed[`default/${n}`]);
  });

  it('probes past taken addresses in a small range, and a full range is a clear error while the others keep their VIPs', async () => {
    // 240.240.0.0/29: .1 to .6 usable, .1 is the mesh VIP: 5 addresses for 6 services
    const errors: Error[] = [];
    const [a, b] = [host('/vip-small/', '240.240.0.0/29', errors), host('/vip-small/', '240.240.0.0/29', errors)];
    await Promise.all([a.start(), b.start()]);
    const five = ['s1', 's2', 's3', 's4', 's5'];
    await Promise.all(five.map((n, i) => (i % 2 ? a : b).register({ service: n, namespace: 'default', instance: instance(n) })));
    const claimed = await eventually(() => {
      const [va, vb] = [vipsOf(a), vipsOf(b)];
      return five.every((n) => va[`default/${n}`]) && JSON.stringify(va) === JSON.stringify(vb) ? va : undefined;
    }, 'five claims', 10_000);
    expect(Object.values(claimed).sort()).toEqual(['240.240.0.2', '240.240.0.3', '240.240.0.4', '240.240.0.5', '240.240.0.6']);

    await a.register({ service: 's6', namespace: 'default', instance: instance('s6') });
    const err = await eventually(() => errors.find((e) => (e as { code?: string }).code === 'MESH_AGENT_VIP_RANGE_EXHAUSTED'), 'the range-exhausted error');
    expect(err.message).toContain('default/s6');
    expect(err.message).toContain('240.240.0.0/29');
    expect((err as { hint?: string }).hint).toMatch(/larger range/);
    // s6 answers the shared VIP (no vip); nobody else moved
    await eventually(() => a.snapshot().services.some((s) => s.name === 's6'), 's6 in the snapshot');
    expect(vipsOf(a)['default/s6']).toBeUndefined();
    expect(Object.fromEntries(Object.entries(vipsOf(b)).filter(([k]) => k !== 'default/s6'))).toEqual(claimed);
  });

  it('keeps an existing claim even where the hash would put the service elsewhere', async () => {
    await client.put('/vip-keep/vips/240.240.7.7').value('default/legacy');
    await client.put('/vip-keep/vip-of/default/legacy').value('240.240.7.7');
    const r = host('/vip-keep/', '240.240.0.0/16');
    await r.start();
    await r.register({ service: 'legacy', namespace: 'default', instance: instance('legacy-1') });
    await eventually(() => vipsOf(r)['default/legacy'] === '240.240.7.7', 'legacy on its old VIP');
    expect(await client.get('/vip-keep/vip-of/default/legacy').string()).toBe('240.240.7.7');
  });

  describe('two agents, mesh-dns answering dig', () => {
    let apps: TestApp[] = [];
    let agents: TestAgent[] = [];

    beforeAll(async () => {
      apps = await Promise.all([startApp('user'), startApp('order')]);
      const registry = { backend: 'etcd' as const, etcd: { endpoints: [etcd.endpoint], prefix: '/vip-dns/', leaseTtlSeconds: 5 } };
      agents = await Promise.all([
        startTestAgent({ appPort: apps[0].port, config: { registry } }),
        startTestAgent({
          appPort: apps[1].port,
          services: [{ name: 'order', ports: [{ targetPort: apps[1].port }], healthCheck: { path: '/health' } }],
          config: { node: { ip: '127.0.0.1', serviceName: 'order' }, registry },
        }),
      ]);
    });

    afterAll(async () => {
      await Promise.all(agents.map((t) => t.stop()));
      await Promise.all(apps.map((a) => a.close()));
    });

    const dig = async (port: number, name: string) => (await exec('dig', ['+short', '+tries=1', '+time=3', '@127.0.0.1', '-p', String(port), name])).stdout.trim();

    it('answers each service with its own claimed VIP, the same on both hosts', async () => {
      const claimOf = async (n: string) => client.get(`/vip-dns/vip-of/default/${n}`).string();
      const [userVip, orderVip] = await eventually(async () => {
        const v = [await claimOf('user'), await claimOf('order')];
        return v.every(Boolean) ? (v as string[]) : undefined;
      }, 'both services claimed in etcd');
      expect(userVip).not.toBe(orderVip);
      for (const t of agents) {
        await eventually(async () => (await dig(t.dnsPort, 'user')) === userVip && (await dig(t.dnsPort, 'order.default.svc.cluster.local')) === orderVip, `dig on port ${t.dnsPort}`);
      }
      expect([userVip, orderVip]).not.toContain(MESH_VIP);
    });
  });
});
