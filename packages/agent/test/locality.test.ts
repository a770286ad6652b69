// Issue 16, locality: the node's zone in the agent config is registered with its instances
// (metadata region/zone/subZone), copied into the proxy's node.locality and every endpoint's
// locality, and calls prefer endpoints in the caller's zone. Real agent, real proxy child, real
// upstream servers on ephemeral ports, the file registry; plus the generated bootstrap for the
// access log settings.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentConfigSchema, globalMeshConfigSchema, parseConfig, proxyBootstrapSchema, servicesSpecSchema } from '@mesh-agent/shared-config';
import { buildProxyBootstrap } from '../src/bootstrap';
import type { MeshModel } from '../src/mesh-model';
import { startApp, startTestAgent, type TestAgent, type TestApp } from './agent-fixture';
import { eventually, httpGet } from './helpers';

let user: TestApp;
let near: TestApp;
let far: TestApp;
let t: TestAgent;

beforeAll(async () => {
  [user, near, far] = await Promise.all([startApp('user'), startApp('order-near'), startApp('order-far')]);
  t = await startTestAgent({
    appPort: user.port,
    config: {
      node: { ip: '127.0.0.1', serviceName: 'user', locality: { region: 'ap-guangzhou', zone: 'ap-guangzhou-3', subZone: 'rack-7' } },
      proxy: { accessLog: { path: '/dev/null', textFormat: '%REQ(:METHOD)% %RESPONSE_CODE% %ROUTE_NAME% %UPSTREAM_CLUSTER%' } },
    },
    registry: {
      services: [{
        name: 'order',
        instances: [
          { id: 'order-near', address: '127.0.0.1', port: near.port, metadata: { node: 'near', region: 'ap-guangzhou', zone: 'ap-guangzhou-3' } },
          { id: 'order-far', address: '127.0.0.1', port: far.port, metadata: { node: 'far', region: 'ap-shanghai', zone: 'ap-shanghai-2' } },
        ],
      }],
    },
  });
});

afterAll(async () => {
  await t?.stop();
  await Promise.all([user, near, far].map((a) => a?.close()));
});

describe('locality through the agent', () => {
  it('every call goes to the instance in the caller\'s zone while it is healthy', async () => {
    await eventually(async () => (await httpGet('http://order/', { proxy: t.proxy })).body.trim() === 'order-near', 'order reachable');
    const seen: Record<string, number> = {};
    for (let i = 0; i < 40; i++) {
      const res = await httpGet('http://order/', { proxy: t.proxy });
      seen[`${res.status} ${res.body.trim()}`] = (seen[`${res.status} ${res.body.trim()}`] ?? 0) + 1;
    }
    expect(seen).toEqual({ '200 order-near': 40 });
  });

  it('/clusters shows the registered zones and the priority each endpoint got', async () => {
    const text = (await httpGet(`${t.proxyAdmin}/clusters`)).body;
    const cluster = text.split('\n').find((l) => l.includes(`::127.0.0.1:${near.port}::zone::`))!.split('::')[0];
    const field = (port: number, name: string) => text.split('\n').find((l) => l.startsWith(`${cluster}::127.0.0.1:${port}::${name}::`))?.split('::')[3];
    expect(field(near.port, 'zone')).toBe('ap-guangzhou-3');
    expect(field(near.port, 'region')).toBe('ap-guangzhou');
    expect(field(near.port, 'priority')).toBe('0');
    expect(field(far.port, 'zone')).toBe('ap-shanghai-2');
    expect(field(far.port, 'priority')).toBe('1'); // another region: P2, renumbered 1 as no same-region endpoint exists
  });

  it('registers the node\'s locality as metadata of its own instances; the bootstrap carries node.locality and the access log format', async () => {
    await eventually(async () => (await httpGet(`${t.admin}/status`)).body === '<SERVICE_REGISTERED>\n', '<SERVICE_REGISTERED>');
    const registered = JSON.parse((await httpGet(`${t.admin}/config/services`)).body).registered as { metadata?: Record<string, string>; instance?: { metadata: Record<string, string> } }[];
    const metadata = registered.map((r) => r.instance?.metadata ?? r.metadata);
    expect(metadata[0]).toMatchObject({ region: 'ap-guangzhou', zone: 'ap-guangzhou-3', subZone: 'rack-7' });
    const bootstrap = JSON.parse(fs.readFileSync(path.join(t.dir, 'proxy-bootstrap.json'), 'utf8'));
    expect(bootstrap.node.locality).toEqual({ region: 'ap-guangzhou', zone: 'ap-guangzhou-3', subZone: 'rack-7' });
    expect(bootstrap.accessLog).toMatchObject({ textFormat: '%REQ(:METHOD)% %RESPONSE_CODE% %ROUTE_NAME% %UPSTREAM_CLUSTER%' });
    // the local service's own outbound cluster: its endpoint carries the zone it registered
    const own = bootstrap.clusters.find((c: { name: string }) => c.name.endsWith('#user') && c.name.startsWith('out#'));
    expect(own.endpoints[0].locality).toEqual({ region: 'ap-guangzhou', zone: 'ap-guangzhou-3', subZone: 'rack-7' });
  });
});

describe('locality and access logs in the generated bootstrap', () => {
  function model(agent: unknown, metadata: Record<string, string>): MeshModel {
    return {
      agent: parseConfig(agentConfigSchema, agent),
      spec: parseConfig(servicesSpecSchema, { spec: { services: [{ name: 'user', ports: [{ targetPort: 8089 }] }] } }),
      global: parseConfig(globalMeshConfigSchema, {}),
      registry: { services: [{ name: 'order', namespace: 'default', instances: [{ id: 'o1', address: '198.18.0.3', port: 8080, healthy: true, weight: 1, metadata }] }] },
      ports: { agentAdmin: 15020, dnsAdmin: 15021, proxyAdmin: 15000, proxyListener: 15001, dns: 55354 },
      nodeIp: '198.18.0.2', nodeId: 'user~198.18.0.2', appHost: '127.0.0.1',
    } as MeshModel;
  }

  it('without a locality anywhere the bootstrap has none (today\'s bootstrap, unchanged)', () => {
    const b = parseConfig(proxyBootstrapSchema, buildProxyBootstrap(model({ node: { ip: '198.18.0.2' } }, {}), '1'));
    expect(b.node.locality).toBeUndefined();
    expect(b.clusters.find((c) => c.name === 'out#8080#order')!.endpoints[0]!.locality).toBeUndefined();
    expect(b.accessLogs).toEqual([]);
  });

  it('proxy.accessLogs go to the bootstrap per direction; an unknown operator in the agent config is refused naming the field', () => {
    const b = parseConfig(proxyBootstrapSchema, buildProxyBootstrap(model({ node: { ip: '198.18.0.2' }, proxy: { accessLogs: [{ direction: 'inbound', path: '/var/log/in.json', jsonFormat: { code: '%RESPONSE_CODE%' } }] } }, { zone: 'z1' }), '1'));
    expect(b.accessLogs).toEqual([{ direction: 'inbound', path: '/var/log/in.json', format: 'text', jsonFormat: { code: '%RESPONSE_CODE%' } }]);
    expect(b.clusters.find((c) => c.name === 'out#8080#order')!.endpoints[0]!.locality).toEqual({ zone: 'z1' });
    expect(() => parseConfig(agentConfigSchema, { proxy: { accessLog: { textFormat: '%START_TIME% %UPSTREAM_ZONE%' } } }))
      .toThrow(/proxy\.accessLog\.textFormat[\s\S]*unknown command operator %UPSTREAM_ZONE%/);
  });
});
