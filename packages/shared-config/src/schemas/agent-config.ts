import { z } from 'zod';
import { ADMIN_HOST, DEFAULT_DNS_TTL, DEFAULT_MESH_VIP, DEFAULT_PORTS, DEFAULT_PROXY_GID, DEFAULT_PROXY_UID, DEFAULT_VIP_CIDR, DEFAULT_IPTABLES_STATE_FILE } from '../defaults';
import { cidr, filePath, ipAddress, listenPort, logLevel, millis, nonNegativeInt, positiveInt, posixId, serviceName, servicePort, upstreamAddress } from './common';

// Every field carries its description: it goes into the published JSON Schema and the README's field tables.

export const nodeIdentitySchema = z.strictObject({
  id: z.string().min(1).optional().describe('Instance id in the registry; default `SERVICE~IP`'),
  serviceName: serviceName.optional().describe("This node's service (TSF application) name; default the first service of spec.yaml"),
  namespace: serviceName.default('default').describe('Namespace of the service'),
  ip: ipAddress.optional().describe("The node's own IP; detected (first non-loopback IPv4) when absent"),
  ip6: z
    .ipv6({ error: 'expected an IPv6 address such as fd00::2' })
    .optional()
    .describe("The node's own IPv6 address, captured inbound with iptables.ipv6; detected (first global, non-link-local IPv6) when absent"),
});

export const appSchema = z.strictObject({
  configDir: filePath.default('/opt/tsf/app_config').describe("TSF's application config directory; spec.yaml is read from here"),
  specFile: filePath.optional().describe('Explicit spec.yaml path; default `<configDir>/spec.yaml`'),
});

export const portsSchema = z.strictObject({
  agentAdmin: listenPort.default(DEFAULT_PORTS.agentAdmin).describe('pilot-agent admin HTTP port (0 = ephemeral)'),
  dnsAdmin: listenPort.default(DEFAULT_PORTS.dnsAdmin).describe('mesh-dns admin HTTP port'),
  proxyAdmin: listenPort.default(DEFAULT_PORTS.proxyAdmin).describe('Proxy admin HTTP port'),
  proxyListener: listenPort.default(DEFAULT_PORTS.proxyListener).describe('Proxy listener that captured traffic is DNATed to'),
  dns: listenPort.default(DEFAULT_PORTS.dns).describe('mesh-dns UDP/TCP port that port 53 is DNATed to'),
});

export const proxySettingsSchema = z.strictObject({
  uid: posixId.default(DEFAULT_PROXY_UID).describe('UID the proxy runs as; its own traffic is exempt from capture'),
  gid: posixId.default(DEFAULT_PROXY_GID).describe('GID the proxy runs as'),
  drainTimeMs: millis.default(5000).describe('How long an old proxy drains on hot restart or shutdown'),
  accessLog: z
    .strictObject({
      format: z.enum(['text', 'json']).default('text').describe('Access log line format'),
      path: filePath.default('/dev/stdout').describe('Access log destination'),
    })
    .optional()
    .describe('Proxy access log; absent = no access log'),
});

export const meshDnsSettingsSchema = z.strictObject({
  uid: posixId.default(DEFAULT_PROXY_UID).describe('UID mesh-dns runs as; its upstream queries are exempt from capture'),
  gid: posixId.default(DEFAULT_PROXY_GID).describe('GID mesh-dns runs as'),
});

export const meshSchema = z.strictObject({
  vip: ipAddress.default(DEFAULT_MESH_VIP).describe('The one "special IP" mesh-dns answers mesh names with'),
  vipCidr: cidr.default(DEFAULT_VIP_CIDR).describe('Range per-service VIPs are allocated from'),
  globalConfigFile: filePath.optional().describe('GlobalMeshConfig file (timeouts, retries, load balancing, ...); absent = defaults'),
});

export const agentDnsSchema = z.strictObject({
  enabled: z.boolean().default(true).describe('Run mesh-dns'),
  upstreams: z.array(upstreamAddress).default([]).describe('Upstream servers, `IP` or `IP:PORT`; empty = the servers of resolvConf'),
  resolvConf: filePath.default('/etc/resolv.conf').describe('Where upstreams come from when none are given (re-read on change)'),
  suffixes: z.array(z.string().min(1)).default(['svc.cluster.local']).describe('Extra mesh suffixes besides name, name.ns, name.ns.svc'),
  ttl: nonNegativeInt.default(DEFAULT_DNS_TTL).describe('TTL of mesh answers, seconds'),
});

export const REGISTRY_BACKENDS = ['file', 'etcd'] as const;

export const registrySettingsSchema = z.strictObject({
  backend: z.enum(REGISTRY_BACKENDS, { error: `expected one of ${REGISTRY_BACKENDS.join(', ')}` }).default('file').describe('`file` or `etcd`'),
  file: z
    .strictObject({ path: filePath.default('/etc/mesh-agent/registry.yaml').describe('A RegistrySnapshot file, watched') })
    .prefault({})
    .describe('Settings of backend `file`'),
  etcd: z
    .strictObject({
      endpoints: z
        .array(z.url({ protocol: /^https?$/, error: 'expected an http(s) URL such as http://127.0.0.1:2379' }))
        .min(1, { error: 'give at least one etcd endpoint' })
        .default(['http://127.0.0.1:2379'])
        .describe('etcd client URLs'),
      prefix: z.string().startsWith('/', { error: 'an etcd key prefix starts with "/"' }).default('/mesh-agent/').describe('Key prefix of the registry'),
      leaseTtlSeconds: positiveInt.default(15).describe('Instances are registered under a lease of this TTL, kept alive while the agent runs'),
      dialTimeoutMs: positiveInt.default(3000).describe('Connect timeout per etcd call'),
    })
    .prefault({})
    .describe('Settings of backend `etcd`'),
});

export const DRIFT_ACTIONS = ['reapply', 'report'] as const;

export const iptablesSettingsSchema = z.strictObject({
  enabled: z.boolean().default(true).describe('Install the traffic-capture rules'),
  captureDns: z.boolean().default(true).describe('DNAT UDP/TCP port 53 to mesh-dns'),
  ipv6: z.boolean().default(false).describe('Also write ip6tables rules (inbound to node.ip6 and includeOutboundCidrs IPv6 ranges; IPv6 DNS is not captured)'),
  excludeInboundPorts: z.array(servicePort).default([]).describe('Inbound ports never captured'),
  excludeOutboundPorts: z.array(servicePort).default([]).describe('Outbound destination ports never captured'),
  excludeOutboundCidrs: z.array(cidr).default([]).describe('Outbound destinations never captured'),
  includeOutboundCidrs: z.array(cidr).default([]).describe('Extra outbound destinations captured besides the mesh VIP and vipCidr'),
  stateFile: filePath.default(DEFAULT_IPTABLES_STATE_FILE).describe('What was applied, so cleanup removes exactly that'),
  verifyIntervalMs: millis
    .default(10_000)
    .describe('How often the applied rules are compared with the nat table (a flushed OUTPUT/PREROUTING, a deleted rule); 0 = never'),
  onDrift: z
    .enum(DRIFT_ACTIONS, { error: `expected one of ${DRIFT_ACTIONS.join(', ')}` })
    .default('reapply')
    .describe('When the rules drifted: `reapply` them (atomically) or only `report` it in /health and /latest_error'),
});

export const logSettingsSchema = z.strictObject({
  level: logLevel.default('info').describe('Level of every scope not listed in scopes'),
  scopes: z.record(z.string(), logLevel).default({}).describe('Per-scope levels, e.g. `{ ads: debug }`'),
});

export const pathsSchema = z.strictObject({
  runDir: filePath.default('/var/run/mesh-agent').describe('Runtime directory for generated files'),
  proxyBootstrap: filePath.default('/var/run/mesh-agent/proxy-bootstrap.yaml').describe('The ProxyBootstrap file the agent writes for the proxy'),
  dnsConfig: filePath.default('/var/run/mesh-agent/mesh-dns.yaml').describe('The DnsConfig file the agent writes for mesh-dns'),
});

/** mesh-agent's own configuration. Every section is optional; an empty file means all defaults. */
export const agentConfigSchema = z.strictObject({
  node: nodeIdentitySchema.prefault({}).describe('Node and service identity'),
  app: appSchema.prefault({}).describe('Where the application declares its services'),
  adminAddress: ipAddress.default(ADMIN_HOST).describe('Address every admin endpoint binds to; a non-loopback one exposes them'),
  ports: portsSchema.prefault({}).describe('Listening ports (the source document defaults)'),
  proxy: proxySettingsSchema.prefault({}).describe('The proxy child'),
  meshDns: meshDnsSettingsSchema.prefault({}).describe('The mesh-dns child'),
  mesh: meshSchema.prefault({}).describe('Mesh addresses and policy'),
  dns: agentDnsSchema.prefault({}).describe('Mesh DNS'),
  registry: registrySettingsSchema.prefault({}).describe('Service registry'),
  iptables: iptablesSettingsSchema.prefault({}).describe('Traffic capture'),
  log: logSettingsSchema.prefault({}).describe('Log levels'),
  paths: pathsSchema.prefault({}).describe('Generated files'),
});

export type NodeIdentity = z.infer<typeof nodeIdentitySchema>;
export type AgentPorts = z.infer<typeof portsSchema>;
export type RegistrySettings = z.infer<typeof registrySettingsSchema>;
export type IptablesSettings = z.infer<typeof iptablesSettingsSchema>;
export type LogSettings = z.infer<typeof logSettingsSchema>;
export type AgentConfig = z.infer<typeof agentConfigSchema>;
export type AgentConfigInput = z.input<typeof agentConfigSchema>;
