// Renders the children's configs from the agent config, spec.yaml, the global mesh config and the
// registry: the proxy's ProxyBootstrap (clusters, routes, inbound ports) and mesh-dns' DnsConfig.
import type { Cluster, DnsConfig, ProxyBootstrapInput, GlobalMeshConfig, ProxyBootstrap, RegistryService, VirtualHost } from '@mesh-agent/shared-config';
import type { MeshModel } from './mesh-model';
import { localServiceName } from './mesh-model';
import { endpointLocality } from './locality';
import { mtlsModeOf, mtlsSource, outboundSni, rbacPoliciesOf, secretOf } from './mtls-settings';
import { ruleRoutes, serviceRateLimit, subsetClusters } from './traffic-rules-bootstrap';
import { clusterProtocolOf, inboundProtocolOf, isHttp1Protocol, isProxiedProtocol, isTcpProtocol } from './port-protocols';

/** Naming scheme of the source document: in#PORT#SERVICE and out#PORT#SERVICE. */
export function inboundClusterName(port: number, service: string): string {
  return `in#${port}#${service}`;
}

export function outboundClusterName(port: number, service: RegistryService | { name: string; namespace: string }): string {
  return `out#${port}#${qualifiedName(service)}`;
}

/** `name` in the default namespace, `name.namespace` elsewhere. */
export function qualifiedName(service: { name: string; namespace: string }): string {
  return service.namespace === 'default' ? service.name : `${service.name}.${service.namespace}`;
}

/** A service's traffic policy: the global defaults with its per-service overrides on top. */
export function policyFor(global: GlobalMeshConfig, service: string) {
  const o = global.services[service] ?? {};
  return {
    timeouts: { ...global.timeouts, ...o.timeouts },
    retries: { ...global.retries, ...o.retries },
    loadBalancing: o.loadBalancing ?? global.loadBalancing,
    healthCheck: { ...global.healthCheck, ...o.healthCheck },
    outlierDetection: { ...global.outlierDetection, ...o.outlierDetection },
    circuitBreakers: { ...global.circuitBreakers, ...o.circuitBreakers },
    panicThresholdPercent: o.panicThresholdPercent ?? global.panicThresholdPercent,
  };
}

/** The names a service is called by: its DNS aliases and its per-service VIP. */
export function serviceAliases(service: { name: string; namespace: string; vip?: string }, suffixes: string[]): string[] {
  const { name, namespace } = service;
  const names = [name, `${name}.${namespace}`, `${name}.${namespace}.svc`, ...suffixes.map((suffix) => `${name}.${namespace}.${suffix}`)];
  if (service.vip) names.push(service.vip);
  return [...new Set(names)];
}

/** Host header values a service answers to: its DNS aliases, bare, with `:80` and with each of `ports`. */
export function serviceDomains(service: { name: string; namespace: string; vip?: string }, suffixes: string[], ports: number[]): string[] {
  const withPorts = serviceAliases(service, suffixes).flatMap((n) => [n, `${n}:80`, ...ports.filter((p) => p !== 80).map((p) => `${n}:${p}`)]);
  return [...new Set(withPorts)];
}

/**
 * A service's default port: the one its main cluster is named after, and where a call by bare name
 * (`http://order/`, i.e. port 80) goes in a multi-port service. Port 80 when an instance listens on
 * it (`order` and `order:80` are the same Host to HTTP), else the port most instances use (lowest
 * on a tie); 80 for a service without instances.
 */
export function servicePort(service: RegistryService): number {
  const counts = new Map<number, number>();
  for (const i of service.instances) counts.set(i.port, (counts.get(i.port) ?? 0) + 1);
  if (counts.has(80)) return 80;
  let best = 80;
  let bestCount = 0;
  for (const [port, count] of [...counts].sort((a, b) => a[0] - b[0])) {
    if (count > bestCount) [best, bestCount] = [port, count];
  }
  return best;
}

/** The node an instance runs on: `metadata.node` (the agent sets it on what it registers), else the instance itself. */
function nodeOf(instance: RegistryService['instances'][number]): string {
  return instance.metadata.node || `instance ${instance.id}`;
}

/**
 * Whether the service has several ports: some node serves two of them (the registry holds one port
 * per instance, so that node is two instances, e.g. the agent's registrations of a spec.yaml
 * service with two ports). Instances that are each their own node are copies of one port even
 * when their port numbers differ (a registry may give every copy its own port).
 */
export function isMultiPort(service: RegistryService): boolean {
  const portsOf = new Map<string, Set<number>>();
  for (const instance of service.instances) {
    const ports = portsOf.get(nodeOf(instance)) ?? new Set<number>();
    ports.add(instance.port);
    if (ports.size > 1) return true;
    portsOf.set(nodeOf(instance), ports);
  }
  return false;
}

/**
 * The service's clusters, the default first, each with the ports it is called on. A multi-port
 * service has one per port (a call to `multi:8091` must never reach a node's 8090); any other
 * service one cluster with every instance, each on its own port (as before).
 */
function outboundPortGroups(service: RegistryService): Array<{ port: number; instancePorts: number[] }> {
  const first = servicePort(service);
  const others = [...new Set(service.instances.map((i) => i.port))].filter((p) => p !== first).sort((a, b) => a - b);
  if (!isMultiPort(service)) return [{ port: first, instancePorts: [first, ...others] }];
  return [first, ...others].map((port) => ({ port, instancePorts: [port] }));
}

/** Whether the cluster's instances registered a TCP protocol (`metadata.protocol` tcp, redis, dubbo, ...), every one of them. */
function isTcpCluster(service: RegistryService, instancePorts: number[]): boolean {
  const instances = service.instances.filter((i) => instancePorts.includes(i.port));
  return instances.length > 0 && instances.every((i) => isTcpProtocol(i.metadata.protocol));
}

/** Whether the cluster's instances registered `auto` (a port declared with no protocol, or auto), every one of them: callers sniff. */
function isSniffedCluster(service: RegistryService, instancePorts: number[]): boolean {
  const instances = service.instances.filter((i) => instancePorts.includes(i.port));
  return instances.length > 0 && instances.every((i) => i.metadata.protocol === 'auto');
}

/**
 * Outbound TCP routes: every service port whose instances registered a TCP protocol is proxied as
 * bytes when called on the service's own VIP; one whose instances registered `auto` (declared with no
 * protocol) is sniffed there first (`protocol: auto`). Without a per-service VIP (or with the shared
 * mesh VIP) a TCP port is skipped: on one shared address the proxy cannot tell two TCP services apart
 * (no Host header), so the warning names the service; a sniffed one then stays HTTP-only.
 */
export function outboundTcpRoutes(model: MeshModel): { routes: NonNullable<ProxyBootstrapInput['outboundTcp']>; skipped: string[] } {
  const routes: NonNullable<ProxyBootstrapInput['outboundTcp']> = [];
  const skipped: string[] = [];
  // domains: the NAME:PORTs an application without capture may CONNECT to through the listener (the demo does)
  const addRoute = (route: (typeof routes)[number], service: RegistryService): void => {
    if (routes.some((r) => r.address === route.address && r.port === route.port)) return;
    routes.push({ ...route, domains: serviceAliases(service, model.agent.dns.suffixes).map((alias) => `${alias}:${route.port}`) });
  };
  for (const service of model.registry.services) {
    for (const group of outboundPortGroups(service)) {
      const cluster = outboundClusterName(group.port, service);
      const perServiceVip = service.vip !== undefined && service.vip !== model.agent.mesh.vip;
      // a sniffed port: HTTP takes the service's HTTP route (by Host), anything else is piped to the cluster;
      // without its own VIP it is HTTP only (the shared VIP cannot tell two services' bytes apart)
      if (isSniffedCluster(service, group.instancePorts)) {
        if (perServiceVip) for (const port of group.instancePorts) addRoute({ address: service.vip!, port, cluster, protocol: 'auto' }, service);
        continue;
      }
      if (!isTcpCluster(service, group.instancePorts)) continue;
      if (!perServiceVip) {
        skipped.push(`service ${qualifiedName(service)} port ${group.port} speaks TCP but has no per-service VIP (registry vip): the shared mesh VIP ${model.agent.mesh.vip} cannot tell TCP services apart, so calls to it through the mesh are not proxied; give the service a vip from mesh.vipCidr`);
        continue;
      }
      for (const port of group.instancePorts) addRoute({ address: service.vip!, port, cluster, protocol: 'tcp' }, service);
    }
  }
  return { routes, skipped };
}

function outboundCluster(model: MeshModel, service: RegistryService, port: number, instancePorts: number[]): Cluster {
  const policy = policyFor(model.global, service.name);
  const endpoints = service.instances
    .filter((i) => instancePorts.includes(i.port))
    .map((i) => ({ address: i.address, port: i.port, weight: i.weight, healthy: i.healthy, metadata: endpointMetadata(model, i), ...withLocality(endpointLocality(i.metadata)) }));
  const { enabled: outlierEnabled, ...outlier } = policy.outlierDetection;
  // with a certificate source, every endpoint that registered an identity is reached over mTLS (Istio's auto mTLS);
  // a TCP cluster is plaintext: the proxy's TCP inbound does not terminate TLS
  const tls = mtlsSource(model.agent) && !isTcpCluster(service, instancePorts) ? { tls: { secret: localServiceName(model.agent, model.spec), sni: outboundSni(port, service) } } : {};
  return {
    name: outboundClusterName(port, service),
    protocol: upstreamProtocol(service.instances.filter((i) => instancePorts.includes(i.port))),
    lbPolicy: policy.loadBalancing.policy,
    ...(policy.loadBalancing.hashHeader ? { hashHeader: policy.loadBalancing.hashHeader } : {}),
    connectTimeoutMs: policy.timeouts.connectMs,
    endpoints,
    circuitBreakers: policy.circuitBreakers,
    ...(outlierEnabled ? { outlierDetection: outlier } : {}),
    panicThresholdPercent: policy.panicThresholdPercent,
    ...tls,
  };
}

/**
 * HTTP/2 to a cluster whose instances registered `metadata.protocol` http2 or grpc (the agent
 * registers it from spec.yaml), every one of them: an HTTP/1-only instance would refuse h2c.
 */
function upstreamProtocol(instances: RegistryService['instances']): Cluster['protocol'] {
  const http2 = instances.length > 0 && instances.every((i) => clusterProtocolOf(i.metadata.protocol) === 'http2');
  return http2 ? 'http2' : 'http1';
}

/** `{ locality }` when there is one (an endpoint or a node without a locality keeps today's bootstrap). */
function withLocality<L extends object>(locality: L | undefined): { locality?: L } {
  return locality && Object.keys(locality).length > 0 ? { locality } : {};
}

/** An endpoint's id, and with mTLS on the SPIFFE ID its agent registered (the proxy checks the peer presents exactly it). */
function endpointMetadata(model: MeshModel, instance: RegistryService['instances'][number]): Record<string, string> {
  const identity = instance.metadata.identity;
  return mtlsSource(model.agent) && identity ? { id: instance.id, identity } : { id: instance.id };
}

function routesTo(cluster: string, policy: ReturnType<typeof policyFor>): VirtualHost['routes'] {
  return [
    {
      match: { prefix: '/', headers: [], queryParameters: [] },
      route: {
        cluster,
        timeoutMs: policy.timeouts.requestMs,
        retryPolicy: {
          retryOn: policy.retries.retryOn,
          numRetries: policy.retries.numRetries,
          perTryTimeoutMs: policy.retries.perTryTimeoutMs,
          // Envoy's defaults: no extra status codes, and never retry a non-idempotent request
          retriableStatusCodes: [],
          retryNonIdempotent: false,
        },
      },
    },
  ] as VirtualHost['routes'];
}

/** An inbound port's TLS mode (with the local service's secret) and RBAC; nothing without a certificate source or on a TCP port (RBAC matches HTTP requests; the TCP path has no TLS termination). */
function inboundSecurity(model: MeshModel, service: string, protocol: string | undefined): Pick<ProxyBootstrap['inbound'][number], 'tls' | 'rbac'> {
  if (!mtlsSource(model.agent) || isTcpProtocol(protocol)) return {};
  const mode = mtlsModeOf(model.agent, service);
  const policies = rbacPoliciesOf(model.agent, service);
  return {
    tls: mode === 'disable' ? { mode } : { mode, secret: service },
    ...(policies ? { rbac: { policies } } : {}),
  };
}

export function buildProxyBootstrap(model: MeshModel, version: string): ProxyBootstrapInput {
  const { agent, spec, global, registry, ports } = model;
  const clusters: Cluster[] = [];
  const inbound: ProxyBootstrap['inbound'] = [];
  const virtualHosts: VirtualHost[] = [];

  for (const service of spec.spec.services) {
    const policy = policyFor(global, service.name);
    // a tcp/redis/dubbo/... port is bytes to the app (protocol tcp), an auto port sniffed (port-protocols.ts)
    for (const { targetPort, protocol } of service.ports.filter((p) => isProxiedProtocol(p.protocol))) {
      const name = inboundClusterName(targetPort, service.name);
      inbound.push({ port: targetPort, cluster: name, protocol: inboundProtocolOf(protocol), ...inboundSecurity(model, service.name, protocol) });
      clusters.push({
        name,
        // an http2/grpc port is reached over HTTP/2 (h2c to the local app)
        protocol: clusterProtocolOf(protocol),
        lbPolicy: 'round_robin',
        connectTimeoutMs: policy.timeouts.connectMs,
        endpoints: [{ address: model.appHost, port: targetPort, weight: 1, healthy: true, metadata: { id: model.nodeId } }],
        circuitBreakers: policy.circuitBreakers,
        // healthCheck.path is an HTTP/1.1 GET: probed on http ports only (the agent TCP-checks the others)
        ...(service.healthCheck && isHttp1Protocol(protocol) ? { healthCheck: { ...policy.healthCheck, path: service.healthCheck.path } } : {}),
        panicThresholdPercent: policy.panicThresholdPercent,
      });
    }
  }

  for (const service of registry.services) {
    const policy = policyFor(global, service.name);
    // a service with no instance still gets a route and an empty cluster: calls fail with
    // "no healthy upstream" (503) instead of "no route", which names the real problem
    const [main, ...perPort] = outboundPortGroups(service);
    const mainCluster = outboundCluster(model, service, main.port, main.instancePorts);
    clusters.push(mainCluster);
    // the bare names and :80 go to the default port's cluster; another port of a multi-port service only by NAME:PORT;
    // a TCP cluster gets no HTTP route (it is reached by VIP:port, outboundTcp)
    // traffic rules (traffic-rules-bootstrap.ts): subset clusters, rule routes before the default one, the service's rate limit
    const rule = model.trafficRules?.find((r) => r.service === service.name && r.namespace === service.namespace);
    const withRules = (group: { port: number; instancePorts: number[] }, cluster: Cluster): VirtualHost['routes'] => {
      if (!rule) return routesTo(cluster.name, policy);
      clusters.push(...subsetClusters(service, rule, cluster.name, (subset) => outboundCluster(model, subset, group.port, group.instancePorts)));
      const retries = { retryOn: policy.retries.retryOn, numRetries: policy.retries.numRetries, perTryTimeoutMs: policy.retries.perTryTimeoutMs };
      return [...ruleRoutes(qualifiedName(service), rule, cluster.name, { timeoutMs: policy.timeouts.requestMs, retries }), ...routesTo(cluster.name, policy)];
    };
    if (!isTcpCluster(service, main.instancePorts)) {
      virtualHosts.push({ name: qualifiedName(service), domains: serviceDomains(service, agent.dns.suffixes, main.instancePorts), routes: withRules(main, mainCluster), ...serviceRateLimit(rule) });
    }
    for (const group of perPort) {
      const cluster = outboundCluster(model, service, group.port, group.instancePorts);
      clusters.push(cluster);
      if (isTcpCluster(service, group.instancePorts)) continue;
      const domains = serviceAliases(service, agent.dns.suffixes).map((alias) => `${alias}:${group.port}`);
      virtualHosts.push({ name: `${qualifiedName(service)}:${group.port}`, domains, routes: withRules(group, cluster), ...serviceRateLimit(rule) });
    }
  }

  return {
    version,
    node: { id: model.nodeId, cluster: localServiceName(agent, spec), metadata: { namespace: agent.node.namespace }, ...withLocality(agent.node.locality) },
    admin: { address: agent.adminAddress, port: ports.proxyAdmin },
    listener: { name: 'virtual', address: model.listenerAddress ?? '0.0.0.0', port: ports.proxyListener },
    // an IPv6 inbound connection's original destination is node.ip6
    localAddresses: [...new Set([model.nodeIp, ...(model.nodeIp6 ? [model.nodeIp6] : [])])],
    outboundCidrs: [...new Set([agent.mesh.vip, agent.mesh.vipCidr, ...agent.iptables.includeOutboundCidrs])], // what capture.ts DNATs to the listener
    inbound,
    outboundTcp: outboundTcpRoutes(model).routes,
    ...(mtlsSource(agent) ? { secrets: spec.spec.services.map((s) => secretOf(agent, s.name)) } : {}),
    ...(agent.proxy.accessLog ? { accessLog: agent.proxy.accessLog } : {}),
    ...(agent.proxy.tracing ? { tracing: agent.proxy.tracing } : {}), // issue 16: spans exported only with tracing.otlp
    ...(agent.proxy.accessLogs.length > 0 ? { accessLogs: agent.proxy.accessLogs } : {}),
    clusters,
    routes: { virtualHosts },
    drainTimeMs: agent.proxy.drainTimeMs,
  };
}

export function buildDnsConfig(model: MeshModel): DnsConfig {
  const { agent, spec, registry, ports } = model;
  const names = new Map<string, { name: string; namespace: string; vip?: string }>();
  for (const s of spec.spec.services) names.set(`${agent.node.namespace}/${s.name}`, { name: s.name, namespace: agent.node.namespace });
  for (const s of registry.services) names.set(`${s.namespace}/${s.name}`, { name: s.name, namespace: s.namespace, ...(s.vip ? { vip: s.vip } : {}) });
  return {
    listen: { address: '127.0.0.1', port: ports.dns },
    admin: { address: agent.adminAddress, port: ports.dnsAdmin },
    meshVip: agent.mesh.vip,
    suffixes: agent.dns.suffixes,
    ttl: agent.dns.ttl,
    services: [...names.values()].sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`)),
    upstreams: agent.dns.upstreams,
    resolvConf: agent.dns.resolvConf,
    upstreamTimeoutMs: 2000,
    cacheMaxEntries: 10000,
  };
}
