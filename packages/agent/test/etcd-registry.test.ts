// Registration and discovery through a real etcd started by the test on loopback.
import { execFileSync } from 'node:child_process';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApp, startTestAgent, type TestAgent, type TestApp } from './agent-fixture';
import { queryA } from './dns-client';
import { freePort, startEtcd, type EtcdServer } from './etcd-server';
import { eventually, httpGet } from './helpers';
import { preferredVip } from '../src/vip-allocation';

const DEFAULT_VIPS = { vipCidr: '240.240.0.0/16', meshVip: '240.240.0.1' };

function haveEtcd(): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v etcd'], { stdio: 'ignore' });
    return true;
  } catch {
    if (process.env.CI) throw new Error('etcd is missing (Debian etcd-server; scripts/install-test-deps.sh installs it)');
    console.warn('skipping etcd tests: no etcd binary (apt-get install etcd-server)');
    return false;
  }
}

const PREFIX = '/mesh-test/';

describe.skipIf(!haveEtcd())('registry backend etcd (real etcd)', { timeout: 120_000 }, () => {
  let etcd: EtcdServer;
  let client: Etcd3;
  let user: TestApp;
  let peer: TestApp;
  let t: TestAgent;

  beforeAll(async () => {
    etcd = await startEtcd();
    client = new Etcd3({ hosts: etcd.endpoint });
    user = await startApp('user');
    peer = await startApp('inventory-1');
    t = await startTestAgent({
      appPort: user.port,
      config: { registry: { backend: 'etcd', etcd: { endpoints: [etcd.endpoint], prefix: PREFIX, leaseTtlSeconds: 5 } } },
    });
  });

  afterAll(async () => {
    await t?.stop();
    client?.close();
    await etcd?.stop();
    await Promise.all([user, peer].map((a) => a?.close()));
  });

  it('registers the local instance under the prefix with a lease once healthy', async () => {
    await eventually(async () => (await httpGet(`${t.admin}/status`)).body === '<SERVICE_REGISTERED>\n', '<SERVICE_REGISTERED>');
    const key = `${PREFIX}services/default/user/user~127.0.0.1`;
    const value = await client.get(key).string();
    expect(JSON.parse(value!)).toMatchObject({ id: 'user~127.0.0.1', address: '127.0.0.1', port: user.port, healthy: true });
    const kv = (await client.get(key).exec()).kvs[0];
    expect(kv.lease).not.toBe('0');
  });

  it('pushes an instance put into etcd to the proxy and mesh-dns within about a second', async () => {
    const key = `${PREFIX}services/default/inventory/inventory-1`;
    await client.put(key).value(JSON.stringify({ id: 'inventory-1', address: '127.0.0.1', port: peer.port }));
    const started = Date.now();
    const res = await eventually(async () => {
      const r = await httpGet('http://inventory/', { proxy: t.proxy });
      return r.status === 200 ? r : undefined;
    }, 'inventory to route', 10_000, 20);
    const routedAfterMs = Date.now() - started;
    expect(res.body.trim()).toBe('inventory-1');
    // its own VIP, as claimed in etcd
    const claimed = await eventually(() => client.get(`${PREFIX}vip-of/default/inventory`).string(), 'inventory\'s VIP claim');
    await eventually(async () => (await queryA(t.dnsPort, 'inventory')).addresses[0] === claimed, 'mesh-dns to answer the claimed VIP');
    expect((await queryA(t.dnsPort, 'inventory')).addresses).toEqual([preferredVip({ name: 'inventory', namespace: 'default' }, DEFAULT_VIPS)]);
    // informational, not asserted: the push is event-driven (watch), not polled
    console.log(`etcd put -> routed through the proxy after ${routedAfterMs} ms`);

    await client.delete().key(key);
    await eventually(async () => (await httpGet('http://inventory/', { proxy: t.proxy })).status !== 200, 'inventory gone from the proxy');
  });

  it('marks the instance unhealthy in etcd when the health check fails', async () => {
    const key = `${PREFIX}services/default/user/user~127.0.0.1`;
    user.healthy = false;
    await eventually(async () => JSON.parse((await client.get(key).string())!).healthy === false, 'healthy: false in etcd');
    user.healthy = true;
    await eventually(async () => JSON.parse((await client.get(key).string())!).healthy === true, 'healthy: true in etcd');
  });

  it('deletes the entry on shutdown', async () => {
    await t.stop();
    t = undefined as unknown as TestAgent;
    expect(await client.get(`${PREFIX}services/default/user/user~127.0.0.1`).string()).toBeNull();
    expect(await client.getAll().prefix(`${PREFIX}services/`).keys()).toEqual([]);
  });
});

describe.skipIf(!haveEtcd())('registry backend etcd when etcd goes away', { timeout: 120_000 }, () => {
  it('reports the registry unreachable in /health and still shuts down promptly', async () => {
    const etcd = await startEtcd();
    const user = await startApp('user');
    let t: TestAgent | undefined;
    try {
      t = await startTestAgent({
        appPort: user.port,
        config: { registry: { backend: 'etcd', etcd: { endpoints: [etcd.endpoint], prefix: PREFIX, leaseTtlSeconds: 5, dialTimeoutMs: 1000 } } },
      });
      await eventually(async () => (await httpGet(`${t!.admin}/status`)).body === '<SERVICE_REGISTERED>\n', '<SERVICE_REGISTERED>');
      await etcd.stop();
      const report = await eventually(async () => {
        const health = JSON.parse((await httpGet(`${t!.admin}/health`)).body);
        return health.registry.ok === false ? health : undefined;
      }, 'the registry reported unreachable', 60_000, 200);
      expect(report.problems.join('\n')).toMatch(/registry: etcd http:\/\/127\.0\.0\.1:\d+ unreachable/);
      const stopping = t.stop();
      t = undefined;
      await stopping;
    } finally {
      await t?.stop();
      await etcd.stop().catch(() => undefined);
      await user.close();
    }
  });
});

describe.skipIf(!haveEtcd())('registry backend etcd not there at start', { timeout: 120_000 }, () => {
  it('runs without it, says so, and registers once etcd answers', async () => {
    const clientPort = await freePort();
    const endpoint = `http://127.0.0.1:${clientPort}`;
    const user = await startApp('user');
    let t: TestAgent | undefined;
    let etcd: EtcdServer | undefined;
    try {
      t = await startTestAgent({
        appPort: user.port,
        config: { registry: { backend: 'etcd', etcd: { endpoints: [endpoint], prefix: PREFIX, leaseTtlSeconds: 5, dialTimeoutMs: 1000 } } },
      });
      const health = await eventually(async () => {
        const h = JSON.parse((await httpGet(`${t!.admin}/health`)).body);
        return h.app[0]?.healthy === true ? h : undefined;
      }, 'the app check to pass');
      expect(health.registry.ok).toBe(false);
      expect(health.status).toBe('<FLOW_TAKEOVER>');
      expect(JSON.parse((await httpGet(`${t.admin}/latest_error`)).body).message).toMatch(/etcd|UNAVAILABLE|ECONNREFUSED/);

      etcd = await startEtcd({ clientPort });
      await eventually(async () => (await httpGet(`${t!.admin}/status`)).body === '<SERVICE_REGISTERED>\n', '<SERVICE_REGISTERED> once etcd is up', 60_000);
      const client = new Etcd3({ hosts: endpoint });
      try {
        expect(JSON.parse((await client.get(`${PREFIX}services/default/user/user~127.0.0.1`).string())!)).toMatchObject({ healthy: true, port: user.port });
      } finally {
        client.close();
      }
    } finally {
      await t?.stop();
      await etcd?.stop();
      await user.close();
    }
  });
});
