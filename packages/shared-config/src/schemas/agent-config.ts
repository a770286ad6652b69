import { z } from 'zod';
import { ADMIN_HOST, DEFAULT_DNS_TTL, DEFAULT_MESH_VIP, DEFAULT_PORTS, DEFAULT_PROXY_GID, DEFAULT_PROXY_UID, DEFAULT_VIP_CIDR, DEFAULT_IPTABLES_STATE_FILE } from '../defaults';
import { trafficRulesSchema } from './traffic-rules';
import { accessLogFormatString } from './proxy-bootstrap';
import { tracingSchema } from './proxy-bootstrap';
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
  labels: z
    .record(z.string().min(1), z.string())
    .optional()
    .describe('Labels registered as metadata of every local instance (TSF tags, e.g. { version: v2 }); traffic rules pick subsets by them. node, protocol and identity are set by the agent'),
  locality: z
    .strictObject({
      region: z.string().min(1).optional().describe('Region this node runs in (e.g. ap-guangzhou)'),
      zone: z.string().min(1).optional().describe('Zone (availability zone) this node runs in (e.g. ap-guangzhou-3); with it set, calls prefer endpoints in the same zone'),
      subZone: z.string().min(1).optional().describe('Finer placement inside the zone (rack); shown in /clusters, not used for priority'),
    })
    .optional()
    .describe("Where this node runs (Envoy's node.locality): registered as metadata region/zone/subZone of every local instance; the proxy prefers the same zone, then the same region (docs/locality.md)"),
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

/** The proxy's access log settings (bootstrap accessLog; its format strings are checked there, operators by name). */
const accessLogSettings = {
  format: z.enum(['text', 'json']).default('text').describe("Access log line format: Envoy's default text line or Istio's JSON keys (unless textFormat / jsonFormat)"),
  path: filePath.default('/dev/stdout').describe('Access log destination: a file (appended) or /dev/stdout'),
  textFormat: accessLogFormatString.optional().describe("Envoy format string, e.g. '[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %ROUTE_NAME% %UPSTREAM_CLUSTER%'"),
  jsonFormat: z.record(z.string(), accessLogFormatString).optional().describe("Envoy json_format: key -> format string, e.g. { code: '%RESPONSE_CODE%', path: '%REQ(:PATH)%' }"),
};

/** Node.js / V8 flags a child process is started with (execArgv), one flag per entry. */
const nodeOptions = (child: string) =>
  z
    .array(z.string().regex(/^--[a-z0-9][\w-]*(=\S+)?$/, { error: 'expected one Node flag per entry, such as --max-semi-space-size=4' }))
    .optional()
    .describe(`Node.js/V8 flags ${child} is started with, e.g. [--max-semi-space-size=4]; absent = the agent's measured defaults (packages/agent/README.md, "Memory"), [] = none`);

export const proxySettingsSchema = z.strictObject({
  uid: posixId.default(DEFAULT_PROXY_UID).describe('UID the proxy runs as; its own traffic is exempt from capture'),
  gid: posixId.default(DEFAULT_PROXY_GID).describe('GID the proxy runs as'),
  drainTimeMs: millis.default(5000).describe('How long an old proxy drains on hot restart or shutdown'),
  nodeOptions: nodeOptions('the proxy'),
  tracing: tracingSchema
    .optional()
    .describe("Tracing (docs/tracing.md), copied into the proxy's bootstrap: W3C and B3 headers are always propagated with a span per hop; spans are exported only with otlp"),
  accessLog: z
    .strictObject(accessLogSettings)
    .optional()
    .describe('Proxy access log of every request (both directions); absent = no access log'),
  accessLogs: z
    .array(z.strictObject({
      ...accessLogSettings,
      direction: z.enum(['inbound', 'outbound', 'both']).default('both').describe('Which requests: inbound (to the local service), outbound (from it), or both'),
    }))
    .default([])
    .describe('More proxy access logs, each for one direction (Envoy\'s access_log list), besides accessLog'),
});

export const meshDnsSettingsSchema = z.strictObject({
  uid: posixId.default(DEFAULT_PROXY_UID).describe('UID mesh-dns runs as; its upstream queries are exempt from capture'),
  gid: posixId.default(DEFAULT_PROXY_GID).describe('GID mesh-dns runs as'),
  nodeOptions: nodeOptions('mesh-dns'),
});

export const meshSchema = z.strictObject({
  vip: ipAddress.default(DEFAULT_MESH_VIP).describe('The one "special IP" mesh-dns answers mesh names with'),
  vipCidr: cidr.default(DEFAULT_VIP_CIDR).describe('Range per-service VIPs are allocated from'),
  perServiceVips: z.boolean().default(true).describe('Give every service its own VIP from vipCidr (false: every name answers the shared vip, as before)'),
  globalConfigFile: filePath.optional().describe('GlobalMeshConfig file (timeouts, retries, load balancing, ...); absent = defaults'),
  trafficRules: trafficRulesSchema.optional().describe("Traffic rules per service (docs/traffic-rules.md); the registry's rule for a service wins"),
  trafficRulesFile: filePath.optional().describe('A traffic rules file (`trafficRules: [...]`), re-read on change; its rule for a service wins over mesh.trafficRules'),
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

export const MTLS_MODES = ['strict', 'permissive', 'disable'] as const;
export const mtlsModeSchema = z.enum(MTLS_MODES, { error: `expected one of ${MTLS_MODES.join(', ')}` });

/** A trust domain is a DNS name (SPIFFE): lower-case labels of letters, digits and '-', joined by '.'. */
const trustDomain = z
  .string({ error: 'expected a trust domain such as cluster.local' })
  .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/, {
    error: 'a trust domain is a DNS name such as cluster.local: lower-case letters, digits and "-", labels joined by "."',
  });

/** An Istio-style principal pattern: a SPIFFE ID, `spiffe://...prefix*`, `*suffix`, or `*`. */
const principalPattern = z
  .string({ error: 'expected a SPIFFE ID such as spiffe://cluster.local/ns/default/sa/order' })
  .refine((v) => v === '*' || (v.startsWith('spiffe://') && v.length > 'spiffe://'.length && !v.slice(0, -1).includes('*')) || (v.startsWith('*') && v.length > 1 && !v.slice(1).includes('*')), {
    error: 'a principal is a SPIFFE ID (spiffe://cluster.local/ns/default/sa/order), a prefix of one ending in "*" (spiffe://cluster.local/ns/default/*), "*" followed by a suffix (*/sa/order), or "*" (any authenticated caller)',
  });

/** An HTTP method token, upper case as on the wire. */
const methodPattern = z
  .string({ error: 'expected an HTTP method such as GET' })
  .regex(/^([A-Z][A-Z0-9_-]*|\*)$/, { error: 'a method is an upper-case HTTP method such as GET or POST (methods are case-sensitive), or "*"' });

/** A path pattern: an exact path, `/prefix*`, `*suffix`, or `*`. */
const pathPattern = z
  .string({ error: 'expected a path such as /api/*' })
  .refine((v) => v === '*' || (v.startsWith('/') && !v.slice(0, -1).includes('*')) || (v.startsWith('*') && v.length > 1 && !v.slice(1).includes('*')), {
    error: 'a path is an exact path (/api/users), a prefix ending in "*" (/api/*), "*" followed by a suffix (*.json), or "*"',
  });

export const mtlsAllowRuleSchema = z.strictObject({
  principals: z.array(principalPattern).min(1, { error: 'give at least one principal, or leave principals out (any caller)' }).optional().describe('Caller identities (SPIFFE IDs from the client certificate) this rule allows; absent = any caller, even plaintext'),
  methods: z.array(methodPattern).min(1, { error: 'give at least one method, or leave methods out (any method)' }).optional().describe('HTTP methods this rule allows; absent = any'),
  paths: z.array(pathPattern).min(1, { error: 'give at least one path, or leave paths out (any path)' }).optional().describe('Request paths (without the query) this rule allows; absent = any'),
});

export const mtlsServiceSchema = z.strictObject({
  mode: mtlsModeSchema.optional().describe("This local service's mode; default mtls.mode"),
  allow: z
    .array(mtlsAllowRuleSchema)
    .optional()
    .describe('Authorization (RBAC): a request is allowed when one rule matches all its fields; absent = everyone allowed, [] = everyone denied (403)'),
});

export const mtlsSchema = z
  .strictObject({
    trustDomain: trustDomain.default('cluster.local').describe('SPIFFE trust domain of the identities spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE'),
    mode: mtlsModeSchema
      .optional()
      .describe('Default mode of every local service when a certificate source is set: `strict` (mTLS only), `permissive` (mTLS or plaintext), `disable` (plaintext); default permissive'),
    certTtlSeconds: z
      .number({ error: 'expected a number of seconds' })
      .int({ error: 'expected whole seconds' })
      .min(10, { error: 'certTtlSeconds is at least 10' })
      .default(86400)
      .describe('Built-in issuer: life of a workload certificate; it is renewed at half its life (+-5 % jitter)'),
    certDir: filePath.optional().describe("Built-in issuer: where each local service's cert-chain.pem, key.pem and root-cert.pem are written; default `<paths.runDir>/certs`"),
    ca: z
      .strictObject({ dir: filePath.describe('CA directory written by `mesh-agent ca init` or `ca intermediate` (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem)') })
      .optional()
      .describe('Built-in issuer: the agent signs its local services\' certificates with this CA'),
    files: z
      .strictObject({
        certChain: filePath.describe('PEM certificate chain, leaf first; the leaf\'s spiffe:// URI SAN is the identity of every local service'),
        privateKey: filePath.describe('PEM private key of the leaf'),
        trustBundle: filePath.describe('PEM CA certificates peers are verified against'),
      })
      .optional()
      .describe('External issuer (Vault agent, cert-manager, step, SPIRE helper): files the proxy watches and reloads on change'),
    services: z.record(serviceName, mtlsServiceSchema).default({}).describe('Per local service (a service of spec.yaml): mode and allow rules'),
  })
  .superRefine((mtls, ctx) => {
    if (mtls.ca && mtls.files) {
      ctx.addIssue({ code: 'custom', path: ['files'], message: 'give one certificate source: mtls.ca (the built-in issuer) or mtls.files (an external issuer), not both' });
    }
    if (mtls.ca || mtls.files) return;
    const needsSource = (what: string) => `${what} needs a certificate source: set mtls.ca (the built-in issuer, a dir from \`mesh-agent ca init\`) or mtls.files (cert chain, key, trust bundle)`;
    if (mtls.mode !== undefined && mtls.mode !== 'disable') ctx.addIssue({ code: 'custom', path: ['mode'], message: needsSource(`mode ${mtls.mode}`) });
    for (const [name, service] of Object.entries(mtls.services)) {
      if (service.mode !== undefined && service.mode !== 'disable') ctx.addIssue({ code: 'custom', path: ['services', name, 'mode'], message: needsSource(`mode ${service.mode}`) });
      if (service.allow !== undefined) ctx.addIssue({ code: 'custom', path: ['services', name, 'allow'], message: needsSource('allow (authorization needs the callers\' certificates)') });
    }
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
  mtls: mtlsSchema.optional().describe('Mutual TLS between sidecars (docs/security.md); absent = off, plaintext everywhere'),
});

export type NodeIdentity = z.infer<typeof nodeIdentitySchema>;
export type AgentPorts = z.infer<typeof portsSchema>;
export type RegistrySettings = z.infer<typeof registrySettingsSchema>;
export type IptablesSettings = z.infer<typeof iptablesSettingsSchema>;
export type LogSettings = z.infer<typeof logSettingsSchema>;
export type MtlsSettings = z.infer<typeof mtlsSchema>;
export type MtlsMode = z.infer<typeof mtlsModeSchema>;
export type MtlsAllowRule = z.infer<typeof mtlsAllowRuleSchema>;
export type AgentConfig = z.infer<typeof agentConfigSchema>;
export type AgentConfigInput = z.input<typeof agentConfigSchema>;
