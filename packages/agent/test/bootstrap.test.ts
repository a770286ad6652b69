// The generated configs: what the proxy and mesh-dns are told, from spec.yaml + registry + global config.
import { describe, expect, it } from 'vitest';
import { agentConfigSchema, globalMeshConfigSchema, parseConfig, proxyBootstrapSchema, servicesSpecSchema } from '@mesh-agent/shared-config';
import { buildDnsConfig, buildProxyBootstrap, outboundTcpRoutes, serviceDomains } from '../src/bootstrap';
import { captureRulesConfig } from '../src/capture';
import type { MeshModel } from '../src/mesh-model';
import { parseUpdateBody } from '../src/update';

function model(overrides: { global?: unknown; registry?: MeshModel['registry'] } = {}): MeshModel {
  return {
    agent: parseConfig(agentConfigSchema, { node: { ip: '198.18.0.2' } }),
    spec: parseConfig(servicesSpecSchema, { spec: { services: [{ name: 'user', ports: [{ targetPort: 8089 }], healthCheck: { path: '/health' } }] } }),
    global: parseConfig(globalMeshConfigSchema, overrides.global ?? {}),
    registry: overrides.registry ?? {
      services: [
        {
          name: 'order',
          namespace: 'default',
          instances: [
            { id: 'o1', address: '198.18.0.3', port: 8080, healthy: true, weight: 1, metadata: {} },
            { id: 'o2', address: '198.18.0.4', port: 8080, healthy: false, weight: 2, metadata: {} },
          ],
        },
        { name: 'pay', namespace: 'shop', vip: '240.240.0.7', instances: [] },
      ],
    },
    ports: { agentAdmin: 15020, dnsAdmin: 15021, proxyAdmin: 15000, proxyListener: 15001, dns: 55354 },
    nodeIp: '198.18.0.2',
    nodeId: 'user~198.18.0.2',
    appHost: '127.0.0.1',
  };
}

describe('buildProxyBootstrap', () => {
  const bootstrap = parseConfig(proxyBootstrapSchema, buildProxyBootstrap(model(), '7'));

  it('maps the local service port to an inbound cluster with its health check (a port declared with no protocol is sniffed: auto)', () => {
    expect(bootstrap.inbound).toEqual([{ port: 8089, cluster: 'in#8089#user', protocol: 'auto' }]);
    const inbound = bootstrap.clusters.find((c) => c.name === 'in#8089#user')!;
    expect(inbound.endpoints).toEqual([expect.objectContaining({ address: '127.0.0.1', port: 8089 })]);
    expect(inbound.healthCheck?.path).toBe('/health');
    expect(bootstrap.localAddresses).toEqual(['198.18.0.2']);
    expect(bootstrap.node).toMatchObject({ id: 'user~198.18.0.2', cluster: 'user' });
    expect(bootstrap.version).toBe('7');
  });

  it('makes one outbound cluster per registry service and port with its instances, health and weight', () => {
    const order = bootstrap.clusters.find((c) => c.name === 'out#8080#order')!;
    expect(order.endpoints.map((e) => [e.address, e.port, e.healthy, e.weight])).toEqual([
      ['198.18.0.3', 8080, true, 1],
      ['198.18.0.4', 8080, false, 2],
    ]);
    expect(order.outlierDetection).toBeDefined();
    // a service without instances still has a route: calls get 503 "no healthy upstream"
    expect(bootstrap.clusters.find((c) => c.name === 'out#80#pay.shop')!.endpoints).toEqual([]);
  });

  it('routes every DNS alias of a service, with and without port, to its cluster', () => {
    const host = bootstrap.routes.virtualHosts.find((h) => h.name === 'order')!;
    expect(host.domains).toEqual(expect.arrayContaining(['order', 'order:80', 'order:8080', 'order.default', 'order.default.svc', 'order.default.svc.cluster.local']));
    expect(host.routes[0].route).toMatchObject({ cluster: 'out#8080#order', timeoutMs: 15000, retryPolicy: { numRetries: 2 } });
    const pay = bootstrap.routes.virtualHosts.find((h) => h.name === 'pay.shop')!;
    expect(pay.domains).toEqual(expect.arrayContaining(['pay', 'pay.shop', '240.240.0.7', '240.240.0.7:80']));
  });

  it('applies the global policy and per-service overrides', () => {
    const b = buildProxyBootstrap(
      model({ global: { timeouts: { connectMs: 250 }, loadBalancing: { policy: 'least_request' }, services: { order: { loadBalancing: { policy: 'ring_hash', hashHeader: 'x-user' }, retries: { numRetries: 5 } } } } }),
      '1',
    );
    const order = b.clusters!.find((c) => c.name === 'out#8080#order')!;
    expect(order).toMatchObject({ lbPolicy: 'ring_hash', hashHeader: 'x-user', connectTimeoutMs: 250 });
    expect(b.clusters!.find((c) => c.name === 'out#80#pay.shop')!.lbPolicy).toBe('least_request');
    expect(b.routes!.virtualHosts!.find((h) => h.name === 'order')!.routes![0].route!.retryPolicy!.numRetries).toBe(5);
  });

  it('names a mixed-port service after the port most instances use', () => {
    const b = buildProxyBootstrap(
      model({
        registry: {
          services: [
            {
              name: 'order',
              namespace: 'default',
              instances: [9001, 9000, 9001].map((port, i) => ({ id: `o${i}`, address: '198.18.0.3', port, healthy: true, weight: 1, metadata: {} })),
            },
          ],
        },
      }),
      '1',
    );
    expect(b.clusters!.map((c) => c.name)).toContain('out#9001#order');
    // three copies of one port, each its own node: one cluster, every copy on its own port
    expect(b.clusters!.find((c) => c.name === 'out#9001#order')!.endpoints!.map((e) => e.port)).toEqual([9001, 9000, 9001]);
    expect(b.clusters!.some((c) => c.name === 'out#9000#order')).toBe(false);
  });

  it('a multi-port service (a node serving two ports): one cluster and one virtual host per port, the bare name to the default port', () => {
    const instance = (id: string, node: string, port: number) => ({ id, address: node === 'h1' ? '198.18.0.3' : '198.18.0.4', port, healthy: true, weight: 1, metadata: { node } });
    const b = buildProxyBootstrap(
      model({
        registry: {
          services: [{ name: 'multi', namespace: 'default', instances: [instance('h1:9001', 'h1', 9001), instance('h1:9000', 'h1', 9000), instance('h2:9001', 'h2', 9001)] }],
        },
      }),
      '1',
    );
    const endpoints = (name: string) => b.clusters!.find((c) => c.name === name)?.endpoints!.map((e) => `${e.metadata!.id}@${e.port}`);
    expect(endpoints('out#9001#multi')).toEqual(['h1:9001@9001', 'h2:9001@9001']);
    expect(endpoints('out#9000#multi')).toEqual(['h1:9000@9000']);
    const hosts = b.routes!.virtualHosts!.filter((h) => h.name.startsWith('multi'));
    expect(hosts.map((h) => [h.name, h.routes![0].route!.cluster])).toEqual([
      ['multi', 'out#9001#multi'],
      ['multi:9000', 'out#9000#multi'],
    ]);
    expect(hosts[0].domains).toEqual(expect.arrayContaining(['multi', 'multi:80', 'multi:9001', 'multi.default.svc.cluster.local:9001']));
    expect(hosts[0].domains).not.toContain('multi:9000');
    expect(hosts[1].domains).toEqual(['multi:9000', 'multi.default:9000', 'multi.default.svc:9000', 'multi.default.svc.cluster.local:9000']);
  });

  it('a multi-port service with a port-80 instance takes 80 as its default port (a bare name is port 80 to HTTP)', () => {
    const b = buildProxyBootstrap(
      model({
        registry: {
          services: [{ name: 'web', namespace: 'default', instances: [8080, 80, 8080].map((port, i) => ({ id: `w${i}`, address: '198.18.0.3', port, healthy: true, weight: 1, metadata: { node: i === 2 ? 'h2' : 'h1' } })) }],
        },
      }),
      '1',
    );
    const web = b.routes!.virtualHosts!.find((h) => h.name === 'web')!;
    expect(web.routes![0].route!.cluster).toBe('out#80#web');
    expect(web.domains).toEqual(expect.arrayContaining(['web', 'web:80']));
    expect(b.routes!.virtualHosts!.find((h) => h.name === 'web:8080')!.routes![0].route!.cluster).toBe('out#8080#web');
  });

  it('issue 15: every port of spec.yaml is captured; tcp/dubbo/redis/mysql/mongo/tls/https ports are inbound protocol tcp, auto and undeclared ones sniffed, the rest http', () => {
    const m = model();
    const ports = [{ targetPort: 8089, protocol: 'http' }, { targetPort: 20880, protocol: 'dubbo' }, { targetPort: 6379, protocol: 'redis' }, { targetPort: 3306, protocol: 'mysql' }, { targetPort: 7000, protocol: 'tcp' }, { targetPort: 8443, protocol: 'https' }, { targetPort: 9000, protocol: 'auto' }];
    m.spec = parseConfig(servicesSpecSchema, { spec: { services: [{ name: 'user', ports, healthCheck: { path: '/health' } }] } });
    const b = parseConfig(proxyBootstrapSchema, buildProxyBootstrap(m, '1'));
    expect(b.inbound.map((i) => `${i.port}/${i.protocol}/${i.cluster}`)).toEqual([
      '8089/http/in#8089#user', '20880/tcp/in#20880#user', '6379/tcp/in#6379#user', '3306/tcp/in#3306#user', '7000/tcp/in#7000#user', '8443/tcp/in#8443#user', '9000/auto/in#9000#user',
    ]);
    // a port that declares no protocol is sniffed (Istio's unnamed port); its health path is still an HTTP GET
    const undeclared = model();
    const bu = parseConfig(proxyBootstrapSchema, buildProxyBootstrap(undeclared, '1'));
    expect(bu.inbound.map((i) => `${i.port}/${i.protocol}`)).toEqual(['8089/auto']);
    expect(bu.clusters.find((c) => c.name === 'in#8089#user')!.healthCheck).toMatchObject({ path: '/health' });
    // healthCheck.path is an HTTP/1.1 GET: only the http port's cluster is probed with it (the agent TCP-checks the rest)
    expect(b.clusters.filter((c) => c.healthCheck).map((c) => c.name)).toEqual(['in#8089#user']);
    expect(captureRulesConfig(m).inboundPorts).toEqual([8089, 20880, 6379, 3306, 7000, 8443, 9000]);
  });

  it('issue 15: a service whose instances registered a TCP protocol is routed by its VIP and port (outboundTcp), with no HTTP route; without a VIP it is skipped with a warning', () => {
    const inst = (id: string, address: string, port: number, protocol: string) => ({ id, address, port, healthy: true, weight: 1, metadata: { node: id, protocol } });
    const m = model({
      registry: {
        services: [
          { name: 'redis', namespace: 'default', vip: '240.240.3.4', instances: [inst('r1', '198.18.0.3', 6379, 'redis'), inst('r2', '198.18.0.4', 6379, 'redis')] },
          { name: 'db', namespace: 'shop', vip: '240.240.9.9', instances: [inst('d1', '198.18.0.5', 3306, 'mysql')] },
          { name: 'novip', namespace: 'default', instances: [inst('n1', '198.18.0.6', 7000, 'tcp')] },
          { name: 'shared', namespace: 'default', vip: '240.240.0.1', instances: [inst('s1', '198.18.0.7', 7001, 'tcp')] },
          { name: 'web', namespace: 'default', vip: '240.240.5.5', instances: [inst('w1', '198.18.0.8', 8080, 'http')] },
        ],
      },
    });
    const b = parseConfig(proxyBootstrapSchema, buildProxyBootstrap(m, '1'));
    expect(b.outboundTcp.map(({ domains: _, ...route }) => route)).toEqual([
      { address: '240.240.3.4', port: 6379, cluster: 'out#6379#redis', protocol: 'tcp' },
      { address: '240.240.9.9', port: 3306, cluster: 'out#3306#db.shop', protocol: 'tcp' },
    ]);
    // the NAME:PORTs an application without capture may CONNECT to (every DNS alias and the VIP)
    expect(b.outboundTcp[1].domains).toEqual(['db:3306', 'db.shop:3306', 'db.shop.svc:3306', 'db.shop.svc.cluster.local:3306', '240.240.9.9:3306']);
    expect(b.clusters.find((c) => c.name === 'out#6379#redis')!.endpoints.map((e) => `${e.address}:${e.port}`)).toEqual(['198.18.0.3:6379', '198.18.0.4:6379']);
    // such clusters get no HTTP route; an HTTP service keeps its virtual host
    expect(b.routes.virtualHosts.map((v) => v.name)).toEqual(['web']);
    expect(outboundTcpRoutes(m).skipped).toEqual([
      'service novip port 7000 speaks TCP but has no per-service VIP (registry vip): the shared mesh VIP 240.240.0.1 cannot tell TCP services apart, so calls to it through the mesh are not proxied; give the service a vip from mesh.vipCidr',
      'service shared port 7001 speaks TCP but has no per-service VIP (registry vip): the shared mesh VIP 240.240.0.1 cannot tell TCP services apart, so calls to it through the mesh are not proxied; give the service a vip from mesh.vipCidr',
    ]);
  });

  it('issue 15: a service whose instances registered auto (declared no protocol) is sniffed on its VIP:port (outboundTcp auto) and keeps its HTTP route; without its own VIP it is HTTP only', () => {
    const inst = (id: string, address: string, port: number) => ({ id, address, port, healthy: true, weight: 1, metadata: { node: id, protocol: 'auto' } });
    const m = model({
      registry: {
        services: [
          { name: 'kv', namespace: 'default', vip: '240.240.7.7', instances: [inst('k1', '198.18.0.3', 6380), inst('k2', '198.18.0.4', 6380)] },
          { name: 'plain', namespace: 'default', instances: [inst('p1', '198.18.0.5', 9000)] },
        ],
      },
    });
    const b = parseConfig(proxyBootstrapSchema, buildProxyBootstrap(m, '1'));
    expect(b.outboundTcp.map(({ domains: _, ...route }) => route)).toEqual([{ address: '240.240.7.7', port: 6380, cluster: 'out#6380#kv', protocol: 'auto' }]);
    expect(b.routes.virtualHosts.map((v) => v.name)).toEqual(['kv', 'plain']);
    expect(outboundTcpRoutes(m).skipped).toEqual([]);
  });

  it('issue 15: with mTLS on, TCP ports get no inbound TLS or RBAC and TCP clusters no origination (the TCP path is plaintext)', () => {
    const m = model({ registry: { services: [{ name: 'redis', namespace: 'default', vip: '240.240.3.4', instances: [{ id: 'r1', address: '198.18.0.3', port: 6379, healthy: true, weight: 1, metadata: { node: 'h3', protocol: 'redis', identity: 'spiffe://cluster.local/ns/default/sa/redis' } }] }] } });
    m.agent = parseConfig(agentConfigSchema, { node: { ip: '198.18.0.2' }, paths: { runDir: '/run/mesh' }, mtls: { ca: { dir: '/ca' }, services: { user: { allow: [] } } } });
    m.spec = parseConfig(servicesSpecSchema, { spec: { services: [{ name: 'user', ports: [{ targetPort: 8089 }, { targetPort: 6379, protocol: 'redis' }] }] } });
    const b = parseConfig(proxyBootstrapSchema, buildProxyBootstrap(m, '1'));
    const inbound = Object.fromEntries(b.inbound.map((i) => [i.port, i]));
    expect(inbound[8089].tls).toBeDefined();
    expect(inbound[6379]).toEqual({ port: 6379, cluster: 'in#6379#user', protocol: 'tcp' });
    expect(b.clusters.find((c) => c.name === 'out#6379#redis')!.tls).toBeUndefined();
  });

  it('issue 14: an http2 or grpc port of spec.yaml is captured inbound with an HTTP/2 cluster (no HTTP/1 path probe); http stays http1', () => {
    const m = model();
    m.spec = parseConfig(servicesSpecSchema, {
      spec: { services: [{ name: 'user', ports: [{ targetPort: 8089, protocol: 'http' }, { targetPort: 50051, protocol: 'grpc' }, { targetPort: 8443, protocol: 'http2' }, { targetPort: 20880, protocol: 'dubbo' }], healthCheck: { path: '/health' } }] },
    });
    const b = parseConfig(proxyBootstrapSchema, buildProxyBootstrap(m, '1'));
    // issue 15: the dubbo port is captured too, as TCP (the previous test)
    expect(b.inbound.map((i) => `${i.port}/${i.protocol}`)).toEqual(['8089/http', '50051/http', '8443/http', '20880/tcp']);
    expect(captureRulesConfig(m).inboundPorts).toEqual([8089, 50051, 8443, 20880]);
    const inbound = Object.fromEntries(b.clusters.filter((c) => c.name.startsWith('in#')).map((c) => [c.name, c]));
    expect(Object.keys(inbound)).toEqual(['in#8089#user', 'in#50051#user', 'in#8443#user', 'in#20880#user']);
    expect(inbound['in#8089#user']).toMatchObject({ protocol: 'http1', healthCheck: { path: '/health' } });
    expect(inbound['in#50051#user'].protocol).toBe('http2');
    expect(inbound['in#8443#user'].protocol).toBe('http2');
    // healthCheck.path is an HTTP/1.1 GET: a gRPC server would answer it with a protocol error
    expect(inbound['in#50051#user'].healthCheck).toBeUndefined();
  });

  it('issue 14: an outbound cluster is http2 when every instance registered metadata.protocol grpc/http2, http1 otherwise', () => {
    const inst = (id: string, port: number, protocol?: string) => ({ id, address: '198.18.0.3', port, healthy: true, weight: 1, metadata: (protocol ? { protocol } : {}) as Record<string, string> });
    const b = parseConfig(proxyBootstrapSchema, buildProxyBootstrap(model({
      registry: {
        services: [
          { name: 'inventory', namespace: 'default', instances: [inst('i1', 50051, 'grpc'), inst('i2', 50051, 'http2')] },
          { name: 'mixed', namespace: 'default', instances: [inst('m1', 8080, 'grpc'), inst('m2', 8080)] },
          { name: 'order', namespace: 'default', instances: [inst('o1', 8080, 'http')] },
          { name: 'empty', namespace: 'default', instances: [] },
        ],
      },
    }), '1'));
    const protocolOf = (name: string) => b.clusters.find((c) => c.name === name)!.protocol;
    expect(protocolOf('out#50051#inventory')).toBe('http2');
    // one instance of unknown protocol (registered by hand, or an older agent): HTTP/1.1, which every HTTP server speaks
    expect(protocolOf('out#8080#mixed')).toBe('http1');
    expect(protocolOf('out#8080#order')).toBe('http1');
    expect(protocolOf('out#80#empty')).toBe('http1');
  });

  it('tells the proxy exactly the outbound destinations the capture DNATs to it (outboundCidrs): the rest of its listener is refused', () => {
    const m = model();
    m.agent = parseConfig(agentConfigSchema, { node: { ip: '198.18.0.2' }, mesh: { vip: '240.240.0.9' }, iptables: { includeOutboundCidrs: ['198.19.0.0/16'] } });
    const b = parseConfig(proxyBootstrapSchema, buildProxyBootstrap(m, '1'));
    expect(b.outboundCidrs).toEqual(['240.240.0.9', '240.240.0.0/16', '198.19.0.0/16']);
    expect(b.outboundCidrs).toEqual(captureRulesConfig(m).outboundCidrs);
  });
});

describe('buildProxyBootstrap with mtls (issue 13)', () => {
  const withMtls = (mtls: unknown, registry?: MeshModel['registry']) => {
    const m = model(registry ? { registry } : {});
    m.agent = parseConfig(agentConfigSchema, { node: { ip: '198.18.0.2' }, paths: { runDir: '/run/mesh' }, mtls });
    return parseConfig(proxyBootstrapSchema, buildProxyBootstrap(m, '1'));
  };
  const order = (identity?: string): MeshModel['registry'] => ({
    services: [
      {
        name: 'order',
        namespace: 'default',
        instances: [
          { id: 'o1', address: '198.18.0.3', port: 8080, healthy: true, weight: 1, metadata: identity ? { node: 'h3', identity } : { node: 'h3' } as Record<string, string> },
          { id: 'o2', address: '198.18.0.4', port: 8080, healthy: true, weight: 1, metadata: { node: 'h4' } },
        ],
      },
    ],
  });

  it('without a certificate source the bootstrap has no secret, no inbound tls/rbac, no cluster tls and no endpoint identity', () => {
    const plain = parseConfig(proxyBootstrapSchema, buildProxyBootstrap(model({ registry: order('spiffe://cluster.local/ns/default/sa/order') }), '1'));
    expect(withMtls({ mode: 'disable' }, order('spiffe://cluster.local/ns/default/sa/order'))).toEqual(plain);
    expect(plain.secrets).toEqual([]);
    expect(plain.inbound).toEqual([{ port: 8089, cluster: 'in#8089#user', protocol: 'auto' }]);
    expect(plain.clusters.some((c) => c.tls !== undefined)).toBe(false);
    expect(plain.clusters.find((c) => c.name === 'out#8080#order')!.endpoints.map((e) => e.metadata)).toEqual([{ id: 'o1' }, { id: 'o2' }]);
  });

  it('built-in issuer: one secret per local service in <runDir>/certs/<service>, permissive by default', () => {
    const b = withMtls({ ca: { dir: '/etc/mesh-agent/ca' } });
    expect(b.secrets).toEqual([{ name: 'user', certChain: '/run/mesh/certs/user/cert-chain.pem', privateKey: '/run/mesh/certs/user/key.pem', trustBundle: '/run/mesh/certs/user/root-cert.pem' }]);
    expect(b.inbound).toEqual([{ port: 8089, cluster: 'in#8089#user', protocol: 'auto', tls: { mode: 'permissive', secret: 'user' } }]);
    expect(withMtls({ ca: { dir: '/ca' }, certDir: '/srv/certs' }).secrets[0].certChain).toBe('/srv/certs/user/cert-chain.pem');
  });

  it('files source: every local service shares the operator\'s files; modes per service override mtls.mode', () => {
    const b = withMtls({ files: { certChain: '/etc/tls/chain.pem', privateKey: '/etc/tls/key.pem', trustBundle: '/etc/tls/ca.pem' }, mode: 'strict' });
    expect(b.secrets).toEqual([{ name: 'user', certChain: '/etc/tls/chain.pem', privateKey: '/etc/tls/key.pem', trustBundle: '/etc/tls/ca.pem' }]);
    expect(b.inbound[0].tls).toEqual({ mode: 'strict', secret: 'user' });
    expect(withMtls({ ca: { dir: '/ca' }, mode: 'strict', services: { user: { mode: 'disable' } } }).inbound[0].tls).toEqual({ mode: 'disable' });
  });

  it('services.<name>.allow becomes the inbound port\'s RBAC policies ([] = deny everyone; absent = no RBAC)', () => {
    const allow = [{ principals: ['spiffe://cluster.local/ns/default/sa/order'], methods: ['GET'], paths: ['/api/*'] }, { paths: ['/health'] }];
    expect(withMtls({ ca: { dir: '/ca' }, services: { user: { allow } } }).inbound[0].rbac).toEqual({
      policies: [
        { name: 'user-allow-0', principals: ['spiffe://cluster.local/ns/default/sa/order'], methods: ['GET'], paths: ['/api/*'] },
        { name: 'user-allow-1', paths: ['/health'] },
      ],
    });
    expect(withMtls({ ca: { dir: '/ca' }, services: { user: { allow: [] } } }).inbound[0].rbac).toEqual({ policies: [] });
    expect(withMtls({ ca: { dir: '/ca' } }).inbound[0].rbac).toBeUndefined();
  });

  it('outbound clusters originate with the main service\'s secret and Istio\'s SNI; endpoints carry the identity their agent registered', () => {
    const b = withMtls({ ca: { dir: '/ca' } }, order('spiffe://cluster.local/ns/default/sa/order'));
    const cluster = b.clusters.find((c) => c.name === 'out#8080#order')!;
    expect(cluster.tls).toEqual({ secret: 'user', sni: 'outbound_.8080_._.order.default.svc.cluster.local' });
    // o2's agent has no mTLS: no identity, so the proxy reaches it in plaintext
    expect(cluster.endpoints.map((e) => e.metadata)).toEqual([{ id: 'o1', identity: 'spiffe://cluster.local/ns/default/sa/order' }, { id: 'o2' }]);
    expect(b.clusters.find((c) => c.name.startsWith('in#'))!.tls).toBeUndefined();
  });
});

describe('buildDnsConfig', () => {
  it('lists the local and the registry services, with per-service VIPs, on the bound ports', () => {
    const dns = buildDnsConfig(model());
    expect(dns.services).toEqual([
      { name: 'order', namespace: 'default' },
      { name: 'user', namespace: 'default' },
      { name: 'pay', namespace: 'shop', vip: '240.240.0.7' },
    ]);
    expect(dns.listen).toEqual({ address: '127.0.0.1', port: 55354 });
    expect(dns.meshVip).toBe('240.240.0.1');
  });
});

describe('serviceDomains', () => {
  it('gives every alias with :80 and the service ports', () => {
    expect(serviceDomains({ name: 'a', namespace: 'ns' }, [], [8080])).toEqual(['a', 'a:80', 'a:8080', 'a.ns', 'a.ns:80', 'a.ns:8080', 'a.ns.svc', 'a.ns.svc:80', 'a.ns.svc:8080']);
  });
});

describe('parseUpdateBody (PUT /update)', () => {
  it('accepts services and/or a global config', () => {
    const doc = parseUpdateBody('services:\n  - name: pay\n    instances: [{ id: p1, address: 198.18.0.9, port: 80 }]\nglobal:\n  retries: { numRetries: 1 }\n');
    expect(doc.services?.[0]).toMatchObject({ name: 'pay', namespace: 'default', instances: [{ id: 'p1', healthy: true }] });
    expect(doc.global?.retries.numRetries).toBe(1);
    expect(parseUpdateBody('{"services": []}').services).toEqual([]);
  });

  it('refuses bad input with every problem, its field and line', () => {
    const text = 'services:\n  - name: pay\n    instances:\n      - { id: p1, address: nope, port: 80 }\n  - name: pay\nglobal:\n  timeouts: { connectMs: 0 }\nextra: 1\n';
    let message = '';
    try {
      parseUpdateBody(text);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/PUT \/update:4: services\[0\]\.instances\[0\]\.address/);
    expect(message).toMatch(/global\.timeouts\.connectMs/);
    expect(message).toMatch(/extra: unknown key/);
    expect(() => parseUpdateBody('services:\n  - name: pay\n  - name: pay\n')).toThrow(/services\[1\]\.name: service "pay\.default" is listed twice/);
    expect(() => parseUpdateBody('')).toThrow(/the request body is empty/);
    expect(() => parseUpdateBody('[1, 2]')).toThrow(/expected a mapping/);
    expect(() => parseUpdateBody('services: [')).toThrow(/syntax error/);
  });
});
