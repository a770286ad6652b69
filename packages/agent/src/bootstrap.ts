// Renders the children's configs from the agent config, spec.yaml, the global mesh config and the
// registry: the proxy's ProxyBootstrap (clusters, routes, inbound ports) and mesh-dns' DnsConfig.
import type { Cluster, DnsConfig, ProxyBootstrapInput, GlobalMeshConfig, ProxyBootstrap, RegistryService, VirtualHost } from '@mesh-agent/shared-config';
import type { MeshModel } from './mesh-model';
import { localServiceName } from './mesh-model';

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

/** Host header values a service answers to: its DNS aliases, with and without a port. */
export function serviceDomains(service: { name: string; namespace: string; vip?: string }, suffixes: string[], ports: number[]): string[] {
  const { name, namespace } = service;
  const names = [name, `${name}.${namespace}`, `${name}.${namespace}.svc`, ...suffixes.map((suffix) => `${name}.${namespace}.${suffix}`)];
  if (service.vip) names.push(service.vip);
  const unique = [...new Set(names)];
  const withPorts = unique.flatMap((n) => [n, `${n}:80`, ...ports.filter((p) => p !== 80).map((p) => `${n}:${p}`)]);
  return [...new Set(withPorts)];
}

/**
 * The port a service's cluster is named after: the one most of its instances use (lowest on a tie).
 * All instances are endpoints of that one cluster, each with its own port.
 */
export function servicePort(service: RegistryService): number {
  const counts = new Map<number, number>();
  for (const i of service.instances) counts.set(i.port, (counts.get(i.port) ?? 0) + 1);
  let best = 80;
  let bestCount = 0;
  for (const [port, count] of [...counts].sort((a, b) => a[0] - b[0])) {
    if (count > bestCount) [best, bestCount] = [port, count];
  }
  return best;
}

function outboundCluster(model: MeshModel, service: RegistryService): Cluster {
  const policy = policyFor(model.global, service.name);
  const endpoints = service.instances.map((i) => ({ address: i.address, port: i.port, weight: i.weight, healthy: i.healthy, metadata: { id: i.id } }));
  const { enabled: outlierEnabled, ...outlier } = policy.outlierDetection;
  return {
    name: outboundClusterName(servicePort(service), service),
    lbPolicy: policy.loadBalancing.policy,
    ...(policy.loadBalancing.hashHeader ? { hashHeader: policy.loadBalancing.hashHeader } : {}),
    connectTimeoutMs: policy.timeouts.connectMs,
    endpoints,
    circuitBreakers: policy.circuitBreakers,
    ...(outlierEnabled ? { outlierDetection: outlier } : {}),
    panicThresholdPercent: policy.panicThresholdPercent,
  };
}

export function buildProxyBootstrap(model: MeshModel, version: string): ProxyBootstrapInput {
  const { agent, spec, global, registry, ports } = model;
  const clusters: Cluster[] = [];
  const inbound: ProxyBootstrap['inbound'] = [];
  const virtualHosts: VirtualHost[] = [];

  for (const service of spec.spec.services) {
    const policy = policyFor(global, service.name);
    for (const { targetPort } of service.ports) {
      const name = inboundClusterName(targetPort, service.name);
      inbound.push({ port: targetPort, cluster: name });
      clusters.push({
        name,
        lbPolicy: 'round_robin',
        connectTimeoutMs: policy.timeouts.connectMs,
        endpoints: [{ address: model.appHost, port: targetPort, weight: 1, healthy: true, metadata: { id: model.nodeId } }],
        circuitBreakers: policy.circuitBreakers,
        ...(service.healthCheck ? { healthCheck: { ...policy.healthCheck, path: service.healthCheck.path } } : {}),
        panicThresholdPercent: policy.panicThresholdPercent,
      });
    }
  }

  for (const service of registry.services) {
    const policy = policyFor(global, service.name);
    // a service with no instance still gets a route and an empty cluster: calls fail with
    // "no healthy upstream" (503) instead of "no route", which names the real problem
    const cluster = outboundCluster(model, service);
    clusters.push(cluster);
    const ports = [...new Set([servicePort(service), ...service.instances.map((i) => i.port)])];
    virtualHosts.push({
      name: qualifiedName(service),
      domains: serviceDomains(service, agent.dns.suffixes, ports),
      routes: [
        {
          match: { prefix: '/', headers: [] },
          route: {
            cluster: cluster.name,
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
      ] as VirtualHost['routes'],
    });
  }

  return {
    version,
    node: { id: model.nodeId, cluster: localServiceName(agent, spec), metadata: { namespace: agent.node.namespace } },
    admin: { address: agent.adminAddress, port: ports.proxyAdmin },
    listener: { name: 'virtual', address: model.listenerAddress ?? '0.0.0.0', port: ports.proxyListener },
    localAddresses: [...new Set([model.nodeIp])],
    inbound,
    ...(agent.proxy.accessLog ? { accessLog: agent.proxy.accessLog } : {}),
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
