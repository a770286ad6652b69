// Everything the generated configs are built from, resolved once per change.
import os from 'node:os';
import { normalizeIp } from '@mesh-agent/iptables-rules';
import type { AgentConfig, GlobalMeshConfig, RegistrySnapshot, ServicesSpec, ServiceTrafficRule } from '@mesh-agent/shared-config';

/** The ports actually in use (a configured 0 becomes the ephemeral port the agent bound). */
export interface BoundPorts {
  agentAdmin: number;
  dnsAdmin: number;
  proxyAdmin: number;
  proxyListener: number;
  dns: number;
}

export interface MeshModel {
  agent: AgentConfig;
  spec: ServicesSpec;
  global: GlobalMeshConfig;
  registry: RegistrySnapshot;
  ports: BoundPorts;
  nodeIp: string;
  /** The node's IPv6 address (node.ip6 or detected), when it has one. */
  nodeIp6?: string;
  nodeId: string;
  /** Where the proxy and the health check reach the local application. */
  appHost: string;
  /** Where the proxy's listener is bound (default 0.0.0.0). */
  listenerAddress?: string;
  /** The traffic rules in force, one per service (traffic-rules.ts resolves where each comes from). */
  trafficRules?: ServiceTrafficRule[];
}

/** The node's IP: configured, else the first non-internal IPv4 address, else loopback. */
export function detectNodeIp(configured: string | undefined): string {
  if (configured) return configured;
  for (const addresses of Object.values(os.networkInterfaces())) {
    for (const a of addresses ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

/**
 * The node's IPv6 address: configured, else the first global one (not loopback, not link-local
 * fe80::/10, which needs a zone and is not what peers connect to), else undefined. In the form
 * the kernel reports it (what SO_ORIGINAL_DST and ip6tables-save print).
 */
export function detectNodeIp6(configured: string | undefined): string | undefined {
  if (configured) return normalizeIp(configured)?.address ?? configured;
  for (const addresses of Object.values(os.networkInterfaces())) {
    for (const a of addresses ?? []) {
      if (a.family === 'IPv6' && !a.internal && a.scopeid === 0 && !/^fe[89ab]/i.test(a.address)) return normalizeIp(a.address)?.address ?? a.address;
    }
  }
  return undefined;
}

/** The local service name: configured, else the first service of spec.yaml. */
export function localServiceName(agent: AgentConfig, spec: ServicesSpec): string {
  return agent.node.serviceName ?? spec.spec.services[0].name;
}

export function nodeIdOf(agent: AgentConfig, spec: ServicesSpec, nodeIp: string): string {
  return agent.node.id ?? `${localServiceName(agent, spec)}~${nodeIp}`;
}
