// Traffic rules -> the proxy's routes and subset clusters (golden-ish: the translated route of each rule field).
import { describe, expect, it } from 'vitest';
import { agentConfigSchema, globalMeshConfigSchema, parseConfig, parseTrafficRules, proxyBootstrapSchema, servicesSpecSchema } from '@mesh-agent/shared-config';
import { buildProxyBootstrap } from '../src/bootstrap';
import type { MeshModel } from '../src/mesh-model';

const instance = (id: string, address: string, version: string) => ({ id, address, port: 8080, healthy: true, weight: 1, metadata: { version } });

function model(rules: unknown[]): MeshModel {
  return {
    agent: parseConfig(agentConfigSchema, { node: { ip: '198.18.0.2' } }),
    spec: parseConfig(servicesSpecSchema, { spec: { services: [{ name: 'user', ports: [{ targetPort: 8089 }] }] } }),
    global: parseConfig(globalMeshConfigSchema, {}),
    registry: {
      services: [
        { name: 'order', namespace: 'default', instances: [instance('o1', '198.18.0.3', 'v1'), instance('o2', '198.18.0.4', 'v2'), instance('o3', '198.18.0.5', 'v2')] },
        { name: 'pay', namespace: 'shop', instances: [instance('p1', '198.18.0.6', 'v1')] },
      ],
    },
    ports: { agentAdmin: 15020, dnsAdmin: 15021, proxyAdmin: 15000, proxyListener: 15001, dns: 55354 },
    nodeIp: '198.18.0.2',
    nodeId: 'user~198.18.0.2',
    appHost: '127.0.0.1',
    trafficRules: parseTrafficRules(rules),
  };
}

const subsets = [
  { name: 'v1', labels: { version: 'v1' } },
  { name: 'v2', labels: { version: 'v2' } },
];

describe('traffic rules in the proxy bootstrap', () => {
  const bootstrap = parseConfig(
    proxyBootstrapSchema,
    buildProxyBootstrap(
      model([
        {
          service: 'order',
          subsets,
          rateLimit: { requestsPerSecond: 100, burst: 200 },
          http: [
            {
              name: 'beta-users',
              match: [{ uri: { prefix: '/api' }, headers: { 'X-User': { exact: 'beta' } }, withoutHeaders: { 'x-test': { present: true } }, queryParams: { debug: { exact: '1' } }, method: { exact: 'GET' } }, { authority: { prefix: 'order' } }],
              route: [{ subset: 'v2', weight: 90 }, { subset: 'v1', weight: 10 }],
              rewrite: { uri: '/v2/', authority: 'order-v2' },
              headers: { request: { set: { 'x-a': '1' }, add: { 'x-b': '2' }, remove: ['x-c'] }, response: { add: { 'x-d': '1' }, remove: ['server'] } },
              timeoutMs: 2000,
              retries: { attempts: 3, perTryTimeoutMs: 500, retryOn: '5xx,reset' },
              mirror: { subset: 'v2', percent: 10 },
              fault: { delay: { fixedDelayMs: 100, percent: 10 }, abort: { httpStatus: 503, percent: 5 } },
              rateLimit: { requestsPerSecond: 10, burst: 10 },
            },
            { name: 'moved', match: [{ uri: { exact: '/old' } }], redirect: { uri: '/new', authority: 'x', redirectCode: 302 } },
            { name: 'maintenance', match: [{ uri: { regex: '/admin/.*' } }], directResponse: { status: 503, body: 'down for maintenance' } },
            { match: [{ uri: { prefix: '/v1' } }], route: [{ subset: 'v1' }] },
          ],
        },
      ]),
      '1',
    ),
  );
  const host = bootstrap.routes.virtualHosts.find((h) => h.name === 'order')!;
  const route = (name: string) => host.routes.filter((r) => r.name === name);

  it('a subset is a cluster out#PORT#SERVICE#SUBSET with the instances carrying its labels', () => {
    const endpoints = (name: string) => bootstrap.clusters.find((c) => c.name === name)?.endpoints.map((e) => e.address);
    expect(endpoints('out#8080#order')).toEqual(['198.18.0.3', '198.18.0.4', '198.18.0.5']);
    expect(endpoints('out#8080#order#v1')).toEqual(['198.18.0.3']);
    expect(endpoints('out#8080#order#v2')).toEqual(['198.18.0.4', '198.18.0.5']);
    // a service without rules has no subset clusters
    expect(bootstrap.clusters.filter((c) => c.name.startsWith('out#8080#pay')).map((c) => c.name)).toEqual(['out#8080#pay.shop']);
  });

  it('rules come first in order, one route per match, the default route last', () => {
    expect(host.routes.map((r) => r.name ?? '(default)')).toEqual(['beta-users', 'beta-users', 'moved', 'maintenance', 'order-3', '(default)']);
    expect(host.routes.at(-1)).toMatchObject({ match: { prefix: '/' }, route: { cluster: 'out#8080#order' } });
    expect(host.rateLimit).toEqual({ maxTokens: 200, tokensPerFill: 5, fillIntervalMs: 50 });
  });

  it('a forwarding rule: matches, weighted subsets, rewrite, headers, timeout, retries, mirror, fault, rate limit, metadata', () => {
    const [first, second] = route('beta-users');
    expect(first.match).toEqual({
      prefix: '/api',
      headers: [
        { name: 'x-user', exact: 'beta', invert: false },
        { name: 'x-test', present: true, invert: true },
        { name: ':method', exact: 'GET', invert: false },
      ],
      queryParameters: [{ name: 'debug', exact: '1' }],
    });
    expect(second.match).toEqual({ prefix: '/', headers: [{ name: ':authority', prefix: 'order', invert: false }], queryParameters: [] });
    expect(first.route).toMatchObject({
      weightedClusters: [{ name: 'out#8080#order#v2', weight: 90 }, { name: 'out#8080#order#v1', weight: 10 }],
      timeoutMs: 2000,
      retryPolicy: { retryOn: '5xx,reset', numRetries: 3, perTryTimeoutMs: 500 },
      prefixRewrite: '/v2/',
      hostRewrite: 'order-v2',
      requestMirrorPolicies: [{ cluster: 'out#8080#order#v2', percent: 10 }],
    });
    expect(first.requestHeadersToAdd).toEqual([{ name: 'x-a', value: '1', append: false }, { name: 'x-b', value: '2', append: true }]);
    expect(first.requestHeadersToRemove).toEqual(['x-c']);
    expect(first.responseHeadersToAdd).toEqual([{ name: 'x-d', value: '1', append: true }]);
    expect(first.responseHeadersToRemove).toEqual(['server']);
    expect(first.fault).toEqual({ delay: { fixedDelayMs: 100, percent: 10 }, abort: { httpStatus: 503, percent: 5 } });
    expect(first.rateLimit).toEqual({ maxTokens: 10, tokensPerFill: 1, fillIntervalMs: 100 });
    expect(first.metadata).toEqual({ rule: 'beta-users', service: 'order' });
  });

  it('redirects, direct responses and single-subset routes; defaults from the global mesh config', () => {
    expect(route('moved')[0]).toMatchObject({ match: { path: '/old' }, redirect: { pathRedirect: '/new', hostRedirect: 'x', responseCode: 302, stripQuery: false } });
    expect(route('maintenance')[0]).toMatchObject({ match: { regex: '/admin/.*' }, directResponse: { status: 503, body: 'down for maintenance' } });
    const v1 = route('order-3')[0];
    expect(v1.route).toMatchObject({ cluster: 'out#8080#order#v1', timeoutMs: 15000, retryPolicy: { retryOn: '5xx,connect-failure,reset', numRetries: 2 } });
    expect(v1.metadata).toEqual({ rule: 'order-3', service: 'order' });
  });

  it('a rule for a service in another namespace applies to that service only', () => {
    const other = parseConfig(proxyBootstrapSchema, buildProxyBootstrap(model([{ service: 'pay', namespace: 'shop', subsets: [{ name: 'v1', labels: { version: 'v1' } }], http: [{ route: [{ subset: 'v1' }] }] }]), '1'));
    expect(other.routes.virtualHosts.find((h) => h.name === 'pay.shop')!.routes.map((r) => r.route?.cluster)).toEqual(['out#8080#pay.shop#v1', 'out#8080#pay.shop']);
    expect(other.routes.virtualHosts.find((h) => h.name === 'order')!.routes).toHaveLength(1);
  });
});
