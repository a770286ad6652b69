import { z } from 'zod';
import { ADMIN_HOST, DEFAULT_DNS_TTL, DEFAULT_MESH_VIP, DEFAULT_PORTS, DEFAULT_PROXY_GID, DEFAULT_PROXY_UID, DEFAULT_VIP_CIDR } from '../defaults';
import { cidr, filePath, ipAddress, listenPort, logLevel, millis, nonNegativeInt, positiveInt, posixId, serviceName, servicePort, upstreamAddress } from './common';

export const nodeIdentitySchema = z.strictObject({
  /** Instance id shown in the registry; the agent derives `SERVICE~IP` when absent. */
  id: z.string().min(1).optional(),
  /** Service (TSF "application"/cluster) name; the agent takes the first spec.yaml service when absent. */
  serviceName: serviceName.optional(),
  namespace: serviceName.default('default'),
  /** The node's own IP; the agent detects it (first non-loopback IPv4) when absent. */
  ip: ipAddress.optional(),
});

export const appSchema = z.strictObject({
  /** TSF's application config directory: `spec.yaml` is read from here. */
  configDir: filePath.default('/opt/tsf/app_config'),
  /** Explicit spec.yaml path; default `<configDir>/spec.yaml`. */
  specFile: filePath.optional(),
});

export const portsSchema = z.strictObject({
  agentAdmin: listenPort.default(DEFAULT_PORTS.agentAdmin),
  dnsAdmin: listenPort.default(DEFAULT_PORTS.dnsAdmin),
  proxyAdmin: listenPort.default(DEFAULT_PORTS.proxyAdmin),
  proxyListener: listenPort.default(DEFAULT_PORTS.proxyListener),
  dns: listenPort.default(DEFAULT_PORTS.dns),
});

/** The user/group a child runs as; its own packets are exempt from capture by this owner. */
const identityShape = { uid: posixId.default(DEFAULT_PROXY_UID), gid: posixId.default(DEFAULT_PROXY_GID) };

export const proxySettingsSchema = z.strictObject({
  ...identityShape,
  drainTimeMs: millis.default(5000),
  accessLog: z.strictObject({ format: z.enum(['text', 'json']).default('text'), path: filePath.default('/dev/stdout') }).optional(),
});

export const meshDnsSettingsSchema = z.strictObject({ ...identityShape });

export const meshSchema = z.strictObject({
  /** The one "special IP" mesh-dns answers mesh names with. */
  vip: ipAddress.default(DEFAULT_MESH_VIP),
  /** Per-service VIPs are allocated from here. */
  vipCidr: cidr.default(DEFAULT_VIP_CIDR),
  /** Optional GlobalMeshConfig file (timeouts, retries, load balancing, ...). */
  globalConfigFile: filePath.optional(),
});

export const agentDnsSchema = z.strictObject({
  /** Answer mesh names (and capture port 53 when iptables.captureDns is on). */
  enabled: z.boolean().default(true),
  /** 'IP' or 'IP:PORT'; empty means the servers of `resolvConf`. */
  upstreams: z.array(upstreamAddress).default([]),
  resolvConf: filePath.default('/etc/resolv.conf'),
  suffixes: z.array(z.string().min(1)).default(['svc.cluster.local']),
  ttl: nonNegativeInt.default(DEFAULT_DNS_TTL),
});

export const REGISTRY_BACKENDS = ['file', 'etcd'] as const;

export const registrySettingsSchema = z.strictObject({
  backend: z.enum(REGISTRY_BACKENDS, { error: `expected one of ${REGISTRY_BACKENDS.join(', ')}` }).default('file'),
  /** backend `file`: a RegistrySnapshot file, watched. */
  file: z.strictObject({ path: filePath.default('/etc/mesh-agent/registry.yaml') }).prefault({}),
  /** backend `etcd`. */
  etcd: z
    .strictObject({
      endpoints: z.array(z.url({ error: 'expected a URL such as http://127.0.0.1:2379' })).min(1, { error: 'give at least one etcd endpoint' }).default(['http://127.0.0.1:2379']),
      prefix: z.string().startsWith('/', { error: 'an etcd key prefix starts with "/"' }).default('/mesh-agent/'),
      /** Instances are registered under a lease of this TTL, kept alive while the agent runs. */
      leaseTtlSeconds: positiveInt.default(15),
      dialTimeoutMs: positiveInt.default(3000),
    })
    .prefault({}),
});

export const iptablesSettingsSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /** DNAT UDP/TCP port 53 to mesh-dns. */
  captureDns: z.boolean().default(true),
  /** Also write ip6tables rules. */
  ipv6: z.boolean().default(false),
  excludeInboundPorts: z.array(servicePort).default([]),
  excludeOutboundPorts: z.array(servicePort).default([]),
  excludeOutboundCidrs: z.array(cidr).default([]),
  /** Extra destinations captured outbound besides the mesh VIP and the VIP CIDR. */
  includeOutboundCidrs: z.array(cidr).default([]),
  /** What was applied, so cleanup removes exactly that even after the config changes. */
  stateFile: filePath.default('/var/lib/mesh-agent/iptables-state.json'),
});

export const logSettingsSchema = z.strictObject({
  /** Level of every scope not listed in `scopes`. */
  level: logLevel.default('info'),
  /** Per-scope levels, e.g. { ads: debug }. */
  scopes: z.record(z.string(), logLevel).default({}),
});

export const pathsSchema = z.strictObject({
  /** Runtime directory for generated files and sockets. */
  runDir: filePath.default('/var/run/mesh-agent'),
  /** The ProxyBootstrap file the agent writes for the proxy. */
  proxyBootstrap: filePath.default('/var/run/mesh-agent/proxy-bootstrap.yaml'),
  /** The DnsConfig file the agent writes for mesh-dns. */
  dnsConfig: filePath.default('/var/run/mesh-agent/mesh-dns.yaml'),
});

/** mesh-agent's own configuration. Every section is optional; an empty file means all defaults. */
export const agentConfigSchema = z.strictObject({
  node: nodeIdentitySchema.prefault({}),
  app: appSchema.prefault({}),
  /** Admin endpoints bind here; a non-loopback address exposes them. */
  adminAddress: ipAddress.default(ADMIN_HOST),
  ports: portsSchema.prefault({}),
  proxy: proxySettingsSchema.prefault({}),
  meshDns: meshDnsSettingsSchema.prefault({}),
  mesh: meshSchema.prefault({}),
  dns: agentDnsSchema.prefault({}),
  registry: registrySettingsSchema.prefault({}),
  iptables: iptablesSettingsSchema.prefault({}),
  log: logSettingsSchema.prefault({}),
  paths: pathsSchema.prefault({}),
});

export type NodeIdentity = z.infer<typeof nodeIdentitySchema>;
export type AgentPorts = z.infer<typeof portsSchema>;
export type RegistrySettings = z.infer<typeof registrySettingsSchema>;
export type IptablesSettings = z.infer<typeof iptablesSettingsSchema>;
export type LogSettings = z.infer<typeof logSettingsSchema>;
export type AgentConfig = z.infer<typeof agentConfigSchema>;
export type AgentConfigInput = z.input<typeof agentConfigSchema>;
