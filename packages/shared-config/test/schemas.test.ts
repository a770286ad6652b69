import { describe, expect, it } from 'vitest';
import {
  agentConfigSchema,
  dnsConfigSchema,
  globalMeshConfigSchema,
  parseConfig,
  parseConfigText,
  proxyBootstrapSchema,
  registrySnapshotSchema,
  servicesSpecSchema,
  specFilePath,
} from '../src/index';
import { expectConfigError } from './helpers';

const paths = (fn: () => unknown) => expectConfigError(fn).issues.map((i) => `${i.path}: ${i.message}`);

describe('agentConfigSchema', () => {
  it('an empty config gets the source document defaults', () => {
    expect(parseConfig(agentConfigSchema, {})).toEqual({
      node: { namespace: 'default' },
      app: { configDir: '/opt/tsf/app_config' },
      adminAddress: '127.0.0.1',
      ports: { agentAdmin: 15020, dnsAdmin: 15021, proxyAdmin: 15000, proxyListener: 15001, dns: 55354 },
      proxy: { uid: 1000, gid: 1000, drainTimeMs: 5000, accessLogs: [] },
      meshDns: { uid: 1000, gid: 1000 },
      mesh: { vip: '240.240.0.1', vipCidr: '240.240.0.0/16', perServiceVips: true },
      dns: { enabled: true, upstreams: [], resolvConf: '/etc/resolv.conf', suffixes: ['svc.cluster.local'], ttl: 30 },
      registry: {
        backend: 'file',
        file: { path: '/etc/mesh-agent/registry.yaml' },
        etcd: { endpoints: ['http://127.0.0.1:2379'], prefix: '/mesh-agent/', leaseTtlSeconds: 15, dialTimeoutMs: 3000 },
      },
      iptables: {
        enabled: true,
        captureDns: true,
        ipv6: false,
        excludeInboundPorts: [],
        excludeOutboundPorts: [],
        excludeOutboundCidrs: [],
        includeOutboundCidrs: [],
        stateFile: '/var/run/mesh-agent/iptables-state.json',
        verifyIntervalMs: 10000,
        onDrift: 'reapply',
      },
      log: { level: 'info', scopes: {} },
      paths: { runDir: '/var/run/mesh-agent', proxyBootstrap: '/var/run/mesh-agent/proxy-bootstrap.yaml', dnsConfig: '/var/run/mesh-agent/mesh-dns.yaml' },
    });
  });

  it('a partly written section keeps the defaults of the rest', () => {
    const config = parseConfig(agentConfigSchema, { ports: { dns: 0 }, registry: { backend: 'etcd', etcd: { prefix: '/m/' } } });
    expect(config.ports).toMatchObject({ dns: 0, agentAdmin: 15020 });
    expect(config.registry.etcd).toEqual({ endpoints: ['http://127.0.0.1:2379'], prefix: '/m/', leaseTtlSeconds: 15, dialTimeoutMs: 3000 });
  });

  it('accepts IPv6 addresses and CIDRs, rejects malformed ones', () => {
    const config = parseConfig(agentConfigSchema, { node: { ip: 'fd00::2' }, iptables: { excludeOutboundCidrs: ['10.0.0.0/8', 'fd00::/8'] } });
    expect(config.node.ip).toBe('fd00::2');
    expect(paths(() => parseConfig(agentConfigSchema, { iptables: { excludeOutboundCidrs: ['10.0.0.0/33'], excludeInboundPorts: [0] }, log: { scopes: { ads: 'verbose' } } }))).toEqual([
      'iptables.excludeInboundPorts[0]: a port is 1..65535',
      'iptables.excludeOutboundCidrs[0]: expected a CIDR such as 10.0.0.0/8 or fd00::/8',
      'log.scopes.ads: expected one of debug, info, warn, error, none',
    ]);
  });

  it('node.ip6 takes an IPv6 address only', () => {
    expect(parseConfig(agentConfigSchema, { node: { ip6: 'fd00:198:18::1' } }).node.ip6).toBe('fd00:198:18::1');
    expect(paths(() => parseConfig(agentConfigSchema, { node: { ip6: '198.18.0.1' } }))).toEqual(['node.ip6: expected an IPv6 address such as fd00::2']);
  });

  it('the drift check: an interval in ms (0 = off) and reapply or report', () => {
    expect(parseConfig(agentConfigSchema, { iptables: { verifyIntervalMs: 0, onDrift: 'report' } }).iptables).toMatchObject({ verifyIntervalMs: 0, onDrift: 'report' });
    expect(paths(() => parseConfig(agentConfigSchema, { iptables: { verifyIntervalMs: -1, onDrift: 'fix' } }))).toEqual([
      'iptables.verifyIntervalMs: a duration cannot be negative',
      'iptables.onDrift: expected one of reapply, report',
    ]);
  });

  it('takes the children\'s Node flags one per entry (proxy.nodeOptions, meshDns.nodeOptions)', () => {
    const config = parseConfig(agentConfigSchema, { proxy: { nodeOptions: ['--max-semi-space-size=4', '--max-old-space-size=256'] }, meshDns: { nodeOptions: [] } });
    expect(config.proxy.nodeOptions).toEqual(['--max-semi-space-size=4', '--max-old-space-size=256']);
    expect(config.meshDns.nodeOptions).toEqual([]);
    expect(parseConfig(agentConfigSchema, {}).proxy.nodeOptions).toBeUndefined();
    expect(paths(() => parseConfig(agentConfigSchema, { proxy: { nodeOptions: ['--max-semi-space-size=4 --lite-mode'] }, meshDns: { nodeOptions: ['max-semi-space-size=4'] } }))).toEqual([
      'proxy.nodeOptions[0]: expected one Node flag per entry, such as --max-semi-space-size=4',
      'meshDns.nodeOptions[0]: expected one Node flag per entry, such as --max-semi-space-size=4',
    ]);
  });

  it('checks DNS upstreams and etcd endpoints', () => {
    expect(parseConfig(agentConfigSchema, { dns: { upstreams: ['127.0.0.1', '127.0.0.1:5353', '::1', '[::1]:53'] } }).dns.upstreams).toHaveLength(4);
    expect(paths(() => parseConfig(agentConfigSchema, { registry: { etcd: { endpoints: ['localhost:2379', 'http://127.0.0.1:2379'] } } }))).toEqual([
      'registry.etcd.endpoints[0]: expected an http(s) URL such as http://127.0.0.1:2379',
    ]);
    expect(paths(() => parseConfig(agentConfigSchema, { dns: { upstreams: ['dns.google', '1.1.1.1:0'] }, registry: { etcd: { endpoints: [] } } }))).toEqual([
      'dns.upstreams[0]: expected "IP", "IP:PORT" or "[IPv6]:PORT", e.g. 127.0.0.1:5353',
      'dns.upstreams[1]: expected "IP", "IP:PORT" or "[IPv6]:PORT", e.g. 127.0.0.1:5353',
      'registry.etcd.endpoints: give at least one etcd endpoint',
    ]);
  });

  it('mtls: absent = off; a source takes the documented defaults', () => {
    expect(parseConfig(agentConfigSchema, {}).mtls).toBeUndefined();
    expect(parseConfig(agentConfigSchema, { mtls: { ca: { dir: '/etc/mesh-agent/ca' } } }).mtls).toEqual({ trustDomain: 'cluster.local', certTtlSeconds: 86400, ca: { dir: '/etc/mesh-agent/ca' }, services: {} });
    const allow = [{ principals: ['spiffe://cluster.local/ns/default/sa/order', 'spiffe://cluster.local/ns/shop/*', '*/sa/pay', '*'], methods: ['GET', 'POST'], paths: ['/api/*', '/health', '*.json', '*'] }];
    const parsed = parseConfig(agentConfigSchema, { mtls: { files: { certChain: 'c.pem', privateKey: 'k.pem', trustBundle: 'r.pem' }, mode: 'strict', services: { user: { mode: 'permissive', allow }, web: { allow: [] } } } });
    expect(parsed.mtls?.services).toEqual({ user: { mode: 'permissive', allow }, web: { allow: [] } });
  });

  it('mtls: one certificate source, and strict/permissive/allow only with one', () => {
    const source = 'needs a certificate source: set mtls.ca (the built-in issuer, a dir from `mesh-agent ca init`) or mtls.files (cert chain, key, trust bundle)';
    expect(paths(() => parseConfig(agentConfigSchema, { mtls: { ca: { dir: '/ca' }, files: { certChain: 'c', privateKey: 'k', trustBundle: 'r' } } }))).toEqual([
      'mtls.files: give one certificate source: mtls.ca (the built-in issuer) or mtls.files (an external issuer), not both',
    ]);
    expect(paths(() => parseConfig(agentConfigSchema, { mtls: { mode: 'strict', services: { user: { mode: 'permissive', allow: [] } } } }))).toEqual([
      `mtls.mode: mode strict ${source}`,
      `mtls.services.user.mode: mode permissive ${source}`,
      `mtls.services.user.allow: allow (authorization needs the callers' certificates) ${source}`,
    ]);
    // disable without a source is what "off" means anyway
    expect(parseConfig(agentConfigSchema, { mtls: { mode: 'disable' } }).mtls?.mode).toBe('disable');
  });

  it('mtls: trust domain, TTL, principals, methods and paths are checked', () => {
    expect(
      paths(() =>
        parseConfig(agentConfigSchema, {
          mtls: {
            trustDomain: 'Cluster_Local',
            certTtlSeconds: 5,
            ca: { dir: '/ca' },
            services: { user: { mode: 'on', allow: [{ principals: ['cluster.local/ns/default/sa/order'], methods: ['get'], paths: ['api/*'] }, { principals: [] }] } },
          },
        }),
      ),
    ).toEqual([
      'mtls.trustDomain: a trust domain is a DNS name such as cluster.local: lower-case letters, digits and "-", labels joined by "."',
      'mtls.certTtlSeconds: certTtlSeconds is at least 10',
      'mtls.services.user.mode: expected one of strict, permissive, disable',
      'mtls.services.user.allow[0].principals[0]: a principal is a SPIFFE ID (spiffe://cluster.local/ns/default/sa/order), a prefix of one ending in "*" (spiffe://cluster.local/ns/default/*), "*" followed by a suffix (*/sa/order), or "*" (any authenticated caller)',
      'mtls.services.user.allow[0].methods[0]: a method is an upper-case HTTP method such as GET or POST (methods are case-sensitive), or "*"',
      'mtls.services.user.allow[0].paths[0]: a path is an exact path (/api/users), a prefix ending in "*" (/api/*), "*" followed by a suffix (*.json), or "*"',
      'mtls.services.user.allow[1].principals: give at least one principal, or leave principals out (any caller)',
    ]);
  });

  it('spec.yaml is found in the app config dir unless given', () => {
    expect(specFilePath(parseConfig(agentConfigSchema, {}))).toBe('/opt/tsf/app_config/spec.yaml');
    expect(specFilePath(parseConfig(agentConfigSchema, { app: { specFile: '/srv/spec.yaml' } }))).toBe('/srv/spec.yaml');
  });
});

describe('servicesSpecSchema (TSF spec.yaml)', () => {
  const reference = [
    'apiVersion: v1',
    'kind: Application',
    'spec:',
    '  services:',
    '    - name: user            # service name other services call',
    '      ports:',
    '        - targetPort: 8089  # port the local app listens on',
    '          protocol: http    # http (also dubbo in TSF)',
    '      healthCheck:',
    '        path: /health       # probed periodically by the sidecar',
  ].join('\n');

  it("accepts the reference document's example as is", () => {
    expect(parseConfigText(servicesSpecSchema, reference)).toEqual({
      apiVersion: 'v1',
      kind: 'Application',
      spec: { services: [{ name: 'user', ports: [{ targetPort: 8089, protocol: 'http' }], healthCheck: { path: '/health' } }] },
    });
  });

  it("leaves an undeclared protocol absent (the agent sniffs such a port: auto), accepts dubbo and Istio's protocol names, rejects others", () => {
    const spec = parseConfig(servicesSpecSchema, {
      spec: { services: [{ name: 'a', ports: [{ targetPort: 1 }, { targetPort: 65535, protocol: 'dubbo' }, { targetPort: 2, protocol: 'tcp' }, { targetPort: 3, protocol: 'grpc' }] }] },
    });
    expect(spec.spec.services[0].ports).toEqual([
      { targetPort: 1 },
      { targetPort: 65535, protocol: 'dubbo' },
      { targetPort: 2, protocol: 'tcp' },
      { targetPort: 3, protocol: 'grpc' },
    ]);
    expect(paths(() => parseConfig(servicesSpecSchema, { spec: { services: [{ name: 'a', ports: [{ targetPort: 65536, protocol: 'smtp' }] }] } }))).toEqual([
      'spec.services[0].ports[0].targetPort: a port is 1..65535',
      'spec.services[0].ports[0].protocol: expected one of http, http2, https, grpc, tcp, tls, dubbo, redis, mysql, mongo, auto',
    ]);
  });

  it('rejects unknown keys at every level, a wrong kind, no services, duplicates', () => {
    expect(paths(() => parseConfig(servicesSpecSchema, { kind: 'Deployment', extra: 1, spec: { services: [] } }))).toEqual([
      'kind: expected kind: Application',
      'spec.services: spec.yaml declares at least one service',
      'extra: unknown field; known fields: apiVersion, kind, spec',
    ]);
    expect(
      paths(() =>
        parseConfig(servicesSpecSchema, {
          spec: {
            services: [
              { name: 'a', ports: [{ targetPort: 80 }] },
              { name: 'a', ports: [{ targetPort: 81 }] },
              { name: 'b', ports: [{ targetPort: 80 }], healthCheck: { path: '/h', interval: 5 } },
            ],
          },
        }),
      ),
    ).toEqual([
      'spec.services[2].healthCheck.interval: unknown field; known fields: path',
      'spec.services[1].name: service "a" is declared twice (first at services[0])',
      'spec.services[2].ports[0].targetPort: port 80 is already declared by service "a"',
    ]);
  });

  it('rejects a health-check path the proxy could not send (a space), naming the field and the fix', () => {
    expect(paths(() => parseConfig(servicesSpecSchema, { spec: { services: [{ name: 'user', ports: [{ targetPort: 80 }], healthCheck: { path: '/my health' } }] } }))).toEqual([
      'spec.services[0].healthCheck.path: a health-check path is "/" followed by visible ASCII characters (no spaces; percent-encode anything else, e.g. %20)',
    ]);
  });

  it('rejects service names that are not DNS names', () => {
    expect(paths(() => parseConfig(servicesSpecSchema, { spec: { services: [{ name: 'User_Svc', ports: [{ targetPort: 80 }] }] } }))[0]).toMatch(/^spec.services\[0\].name: a service name is lower-case/);
  });
});

describe('globalMeshConfigSchema', () => {
  it('defaults', () => {
    expect(parseConfig(globalMeshConfigSchema, {})).toEqual({
      timeouts: { connectMs: 1000, requestMs: 15000, idleMs: 300000 },
      retries: { numRetries: 2, retryOn: '5xx,connect-failure,reset', perTryTimeoutMs: 0 },
      loadBalancing: { policy: 'round_robin' },
      healthCheck: { intervalMs: 5000, timeoutMs: 1000, healthyThreshold: 1, unhealthyThreshold: 3, jitterMs: 0 },
      outlierDetection: { enabled: true, consecutive5xx: 5, consecutiveGatewayFailure: 5, intervalMs: 10000, baseEjectionTimeMs: 30000, maxEjectionPercent: 10 },
      circuitBreakers: { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3 },
      panicThresholdPercent: 50,
      services: {},
    });
  });

  it('per-service overrides keep only what is set', () => {
    const config = parseConfig(globalMeshConfigSchema, { services: { order: { timeouts: { requestMs: 500 }, loadBalancing: { policy: 'least_request' } } } });
    expect(config.services.order).toEqual({ timeouts: { requestMs: 500 }, loadBalancing: { policy: 'least_request' } });
    expect(paths(() => parseConfig(globalMeshConfigSchema, { services: { order: { retries: { numRetries: -1 } } }, loadBalancing: { policy: 'maglev' } }))).toEqual([
      'loadBalancing.policy: expected one of round_robin, least_request, random, ring_hash',
      'services.order.retries.numRetries: cannot be negative',
    ]);
  });
});

describe('proxyBootstrapSchema', () => {
  const minimal = {
    clusters: [{ name: 'out#8089#order', endpoints: [{ address: '198.18.0.3', port: 8089 }] }],
    routes: { virtualHosts: [{ name: 'order', domains: ['order'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#8089#order' } }] }] },
  };

  it('defaults', () => {
    const bootstrap = parseConfig(proxyBootstrapSchema, minimal);
    expect(bootstrap).toMatchObject({
      version: '1',
      admin: { address: '127.0.0.1', port: 15000 },
      listener: { name: 'virtual', address: '0.0.0.0', port: 15001 },
      localAddresses: [],
      inbound: [],
      drainTimeMs: 5000,
    });
    // toMatchObject: the proxy's own fields may grow (the proxy engineer owns this schema's details)
    expect(bootstrap.clusters[0]).toMatchObject({
      name: 'out#8089#order',
      lbPolicy: 'round_robin',
      connectTimeoutMs: 1000,
      endpoints: [{ address: '198.18.0.3', port: 8089, weight: 1, healthy: true }],
      circuitBreakers: { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3 },
      panicThresholdPercent: 50,
    });
    expect(bootstrap.routes.virtualHosts[0].routes[0]).toMatchObject({ match: { prefix: '/', headers: [] }, route: { cluster: 'out#8089#order', timeoutMs: 15000 } });
    expect(parseConfig(proxyBootstrapSchema, {})).toMatchObject({ clusters: [], routes: { virtualHosts: [] } });
  });

  it('checks references, match kinds and ring_hash', () => {
    expect(
      paths(() =>
        parseConfig(proxyBootstrapSchema, {
          inbound: [{ port: 8089, cluster: 'in#8089#user' }],
          clusters: [{ name: 'c', lbPolicy: 'ring_hash' }],
          routes: {
            virtualHosts: [
              {
                name: 'v',
                domains: ['v'],
                routes: [
                  { match: { prefix: '/', path: '/x' }, route: { cluster: 'c' } },
                  { match: { regex: '([' }, directResponse: { status: 200 } },
                  { match: { prefix: '/' }, route: { cluster: 'missing' } },
                ],
              },
            ],
          },
        }),
      ),
    ).toEqual([
      'clusters[0].hashHeader: lbPolicy ring_hash needs hashHeader (the header to hash on)',
      'routes.virtualHosts[0].routes[0].match: a route match has exactly one of prefix, path, regex',
      expect.stringMatching(/^routes.virtualHosts\[0\].routes\[1\].match.regex: invalid regular expression/),
      'inbound[0].cluster: unknown cluster "in#8089#user"',
      'routes.virtualHosts[0].routes[2].route.cluster: unknown cluster "missing"',
    ]);
    expect(paths(() => parseConfig(proxyBootstrapSchema, { ...minimal, inbound: [{ port: 8089, cluster: 'in#8089#user' }] }))).toEqual([
      'inbound[0].cluster: unknown cluster "in#8089#user"',
    ]);
  });
});

describe('proxyBootstrapSchema: upstream protocol and gRPC (issue 14)', () => {
  const withCluster = (cluster: Record<string, unknown>) => ({ clusters: [{ name: 'out#9000#greeter', ...cluster }] });

  it('a cluster speaks http1 unless it says http2; other protocols are refused with the list', () => {
    expect(parseConfig(proxyBootstrapSchema, withCluster({})).clusters[0]!.protocol).toBe('http1');
    expect(parseConfig(proxyBootstrapSchema, withCluster({ protocol: 'http2' })).clusters[0]!.protocol).toBe('http2');
    expect(paths(() => parseConfig(proxyBootstrapSchema, withCluster({ protocol: 'grpc' })))).toEqual(['clusters[0].protocol: expected one of http1, http2']);
  });

  it('a gRPC health check takes an optional service name and needs protocol http2', () => {
    expect(parseConfig(proxyBootstrapSchema, withCluster({ protocol: 'http2', healthCheck: { grpc: { serviceName: 'greeter.Greeter' } } })).clusters[0]!.healthCheck)
      .toMatchObject({ grpc: { serviceName: 'greeter.Greeter' }, intervalMs: 5000 });
    expect(paths(() => parseConfig(proxyBootstrapSchema, withCluster({ healthCheck: { grpc: {} } })))).toEqual([
      'clusters[0].healthCheck.grpc: a gRPC health check needs protocol http2 (gRPC runs over HTTP/2): set protocol: http2 or use path',
    ]);
    expect(paths(() => parseConfig(proxyBootstrapSchema, withCluster({ protocol: 'http2', healthCheck: { grpc: { service: 'x' } } })))).toEqual([
      'clusters[0].healthCheck.grpc.service: unknown field; known fields: serviceName',
    ]);
  });

  it("retryOn takes Envoy's gRPC words", () => {
    const route = (retryOn: string) => ({ ...withCluster({}), routes: { virtualHosts: [{ name: 'g', domains: ['g'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#9000#greeter', retryPolicy: { retryOn } } }] }] } });
    expect(parseConfig(proxyBootstrapSchema, route('unavailable,cancelled,deadline-exceeded,internal,resource-exhausted')).routes.virtualHosts[0]!.routes[0]!.route!.retryPolicy!.retryOn)
      .toBe('unavailable,cancelled,deadline-exceeded,internal,resource-exhausted');
    expect(paths(() => parseConfig(proxyBootstrapSchema, route('unavailable,aborted')))[0]).toMatch(/^routes.virtualHosts\[0\].routes\[0\].route.retryPolicy.retryOn: unknown retryOn word "aborted"; valid words: .*unavailable$/);
  });
});

describe('proxyBootstrapSchema: TCP routes and inbound protocol (issue 15)', () => {
  const clusters = [{ name: 'out#6379#redis' }, { name: 'in#3306#db' }];

  it('inbound ports default to http; outboundTcp and the TCP limits default', () => {
    const bootstrap = parseConfig(proxyBootstrapSchema, { clusters, inbound: [{ port: 3306, cluster: 'in#3306#db' }] });
    expect(bootstrap.inbound[0]!.protocol).toBe('http');
    expect(bootstrap.outboundTcp).toEqual([]);
    expect(bootstrap.limits).toMatchObject({ protocolDetectionTimeoutMs: 100, tcpIdleTimeoutMs: 3600000 });
    expect(parseConfig(proxyBootstrapSchema, { clusters, inbound: [{ port: 3306, cluster: 'in#3306#db', protocol: 'auto' }] }).inbound[0]!.protocol).toBe('auto');
  });

  it('refuses an unknown protocol, an unknown cluster, a VIP:port routed twice, and rbac or TLS on a tcp port', () => {
    expect(paths(() => parseConfig(proxyBootstrapSchema, { clusters, inbound: [{ port: 3306, cluster: 'in#3306#db', protocol: 'mysql' }] }))).toEqual([
      'inbound[0].protocol: expected one of http, tcp, auto',
    ]);
    expect(paths(() => parseConfig(proxyBootstrapSchema, {
      clusters,
      outboundTcp: [
        { address: '240.240.0.7', port: 6379, cluster: 'out#6379#redis' },
        { address: '240.240.0.7', port: 6379, cluster: 'out#6379#redis' },
        { address: '240.240.0.8', port: 6379, cluster: 'out#6379#cache' },
      ],
    }))).toEqual([
      'outboundTcp[1]: 240.240.0.7:6379 is routed twice (one cluster per VIP and port)',
      'outboundTcp[2].cluster: unknown cluster "out#6379#cache"',
    ]);
    expect(paths(() => parseConfig(proxyBootstrapSchema, {
      clusters,
      secrets: [{ name: 's', certChain: '/c.pem', privateKey: '/k.pem', trustBundle: '/t.pem' }],
      inbound: [{ port: 3306, cluster: 'in#3306#db', protocol: 'tcp', tls: { mode: 'strict', secret: 's' }, rbac: { policies: [] } }],
    }))).toEqual([
      'inbound[0].rbac: rbac needs an HTTP port (it matches methods and paths): remove rbac or set protocol: http',
      'inbound[0].tls: inbound TLS termination is not implemented for protocol tcp: set tls.mode: disable or protocol: http',
    ]);
  });
});

describe('dnsConfigSchema', () => {
  it('defaults', () => {
    expect(parseConfig(dnsConfigSchema, {})).toEqual({
      listen: { address: '127.0.0.1', port: 55354 },
      admin: { address: '127.0.0.1', port: 15021 },
      meshVip: '240.240.0.1',
      suffixes: ['svc.cluster.local'],
      ttl: 30,
      services: [],
      upstreams: [],
      resolvConf: '/etc/resolv.conf',
      upstreamTimeoutMs: 2000,
      cacheMaxEntries: 10000,
    });
  });

  it('name table entries get the default namespace', () => {
    expect(parseConfig(dnsConfigSchema, { listen: { address: '::1', port: 0 }, services: [{ name: 'order', vip: '240.240.0.2' }] })).toMatchObject({
      listen: { address: '::1', port: 0 },
      services: [{ name: 'order', namespace: 'default', vip: '240.240.0.2' }],
    });
  });
});

describe('registrySnapshotSchema', () => {
  it('defaults and duplicate services', () => {
    expect(parseConfig(registrySnapshotSchema, { services: [{ name: 'order', instances: [{ id: 'order-1', address: '198.18.0.2', port: 8089 }] }] })).toEqual({
      services: [{ name: 'order', namespace: 'default', instances: [{ id: 'order-1', address: '198.18.0.2', port: 8089, healthy: true, weight: 1, metadata: {} }] }],
    });
    expect(paths(() => parseConfig(registrySnapshotSchema, { services: [{ name: 'a' }, { name: 'a', namespace: 'default' }] }))).toEqual([
      'services[1].name: service "a.default" is listed twice (first at services[0])',
    ]);
  });
});
