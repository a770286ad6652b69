// Where the sidecar's parts listen and what they say: everything doctor, trace and the home page
// read, gathered over HTTP from the agent's admin port and, directly, from mesh-dns' and the proxy's.
import { DEFAULT_MESH_VIP, DEFAULT_PORTS } from '@mesh-agent/shared-config';
import { getJson, httpRequest, type HttpAnswer } from './http-get.js';
import { parseClustersText, parseListenersText, parseStatsText, virtualHostsFromConfigDump, type ClusterStatus, type VirtualHostInfo } from './envoy-formats.js';
import type { RuleInForce } from '../traffic-rules.js';

export interface SidecarPorts { agentAdmin: number; dnsAdmin: number; proxyAdmin: number; proxyListener: number; dns: number }

export interface LocalPort { port: number; protocol: string }
/** A service of spec.yaml: `port` is its first port, `ports` all of them with their protocol (absent = http). */
export interface LocalService { name: string; port: number; healthPath?: string; ports: LocalPort[] }

export interface SidecarSnapshot {
  agentAdminUrl: string;
  adminHost: string;
  ports: SidecarPorts;
  meshVip: string;
  localAddress?: string;
  agent: { status: HttpAnswer; health: HttpAnswer; healthJson?: any; latestError: HttpAnswer; config: HttpAnswer; configJson?: any; services: HttpAnswer; servicesJson?: any; dump?: any };
  dns: { health: HttpAnswer; healthJson?: any; dump: HttpAnswer; dumpJson?: any };
  proxy: { listeners: HttpAnswer; clusters: HttpAnswer; stats: HttpAnswer; dump: HttpAnswer; dumpJson?: any; serverInfo: HttpAnswer; serverInfoJson?: any; certs?: HttpAnswer; certsJson?: any };
  localServices: LocalService[];
  clusterStatus: Map<string, ClusterStatus>;
  virtualHosts: VirtualHostInfo[];
  stats: Map<string, number>;
  listeners: Array<{ name: string; address: string }>;
  registry?: { backend?: string; endpoints: string[] };
  /** The traffic rules in force (the agent's GET /rules); undefined from an agent without it. */
  rules?: RuleInForce[];
}

function pick<T>(...values: unknown[]): T | undefined {
  for (const v of values) if (v !== undefined && v !== null && v !== '') return v as T;
  return undefined;
}

/** Ports and addresses from /config/agent, falling back to the source document's defaults. */
export function portsFromAgentConfig(config: any, agentAdminPort: number): SidecarPorts {
  const ports = config?.ports ?? {};
  return {
    agentAdmin: agentAdminPort,
    dnsAdmin: Number(pick(ports.dnsAdmin, config?.dns?.admin?.port) ?? DEFAULT_PORTS.dnsAdmin),
    proxyAdmin: Number(pick(ports.proxyAdmin, config?.proxy?.admin?.port) ?? DEFAULT_PORTS.proxyAdmin),
    proxyListener: Number(pick(ports.proxyListener, ports.listener, config?.proxy?.listener?.port) ?? DEFAULT_PORTS.proxyListener),
    dns: Number(pick(ports.dns, config?.dns?.listen?.port) ?? DEFAULT_PORTS.dns),
  };
}

/** The application's services (TSF spec.yaml shape), wherever /config/services nests them. */
export function localServicesFrom(services: any): LocalService[] {
  const list: any[] = pick(services?.local?.spec?.services, services?.spec?.spec?.services, services?.spec?.services, services?.services, Array.isArray(services) ? services : undefined) ?? [];
  const out: LocalService[] = [];
  for (const svc of list) {
    const declared: any[] = Array.isArray(svc?.ports) ? svc.ports : [{ targetPort: svc?.port }];
    const ports = declared.map((p) => ({ port: Number(p?.targetPort), protocol: String(p?.protocol ?? 'http') })).filter((p) => p.port > 0);
    if (svc?.name && ports.length) out.push({ name: String(svc.name), port: ports[0].port, healthPath: svc?.healthCheck?.path, ports });
  }
  return out;
}

export async function gatherSnapshot(agentAdminUrl: string): Promise<SidecarSnapshot> {
  const base = agentAdminUrl.replace(/\/$/, '');
  const agentUrl = new URL(base);
  const adminHost = agentUrl.hostname;
  const [status, health, latestError, config, services, agentDump, rules] = await Promise.all([
    httpRequest(`${base}/status`),
    getJson(`${base}/health`),
    httpRequest(`${base}/latest_error`),
    getJson(`${base}/config/agent`),
    getJson(`${base}/config/services`),
    getJson(`${base}/config_dump/pilot-agent`),
    getJson(`${base}/rules`),
  ]);
  // /config/agent is the AgentConfig, possibly wrapped with where it came from.
  const configJson = config.json?.config && typeof config.json.config === 'object' ? { ...config.json.config, ...config.json, config: undefined } : config.json;
  const ports = portsFromAgentConfig(configJson, Number(agentUrl.port || DEFAULT_PORTS.agentAdmin));
  const dnsBase = `http://${adminHost}:${ports.dnsAdmin}`;
  const proxyBase = `http://${adminHost}:${ports.proxyAdmin}`;
  const [dnsHealth, dnsDump, listeners, clusters, stats, proxyDump, serverInfo, certs] = await Promise.all([
    getJson(`${dnsBase}/health`),
    getJson(`${dnsBase}/config_dump`),
    httpRequest(`${proxyBase}/listeners`),
    httpRequest(`${proxyBase}/clusters`),
    httpRequest(`${proxyBase}/stats`),
    getJson(`${proxyBase}/config_dump`),
    getJson(`${proxyBase}/server_info`),
    getJson(`${proxyBase}/certs`),
  ]);
  const registryConfig = configJson?.registry;
  const backend = pick<string>(registryConfig?.backend, registryConfig?.type);
  const endpoints: string[] = backend === 'etcd' ? [].concat(registryConfig?.etcd?.endpoints ?? registryConfig?.endpoints ?? []) : [];
  return {
    agentAdminUrl: base,
    adminHost,
    ports,
    meshVip: String(pick(configJson?.mesh?.vip, configJson?.meshVip, dnsDump.json?.meshVip) ?? DEFAULT_MESH_VIP),
    localAddress: pick<string>(configJson?.node?.ip, configJson?.nodeIp, configJson?.node?.address),
    agent: { status, health: health.answer, healthJson: health.json, latestError, config: config.answer, configJson, services: services.answer, servicesJson: services.json, dump: agentDump.json },
    dns: { health: dnsHealth.answer, healthJson: dnsHealth.json, dump: dnsDump.answer, dumpJson: dnsDump.json },
    proxy: { listeners, clusters, stats, dump: proxyDump.answer, dumpJson: proxyDump.json, serverInfo: serverInfo.answer, serverInfoJson: serverInfo.json, certs: certs.answer, certsJson: certs.json },
    localServices: localServicesFrom(services.json),
    clusterStatus: clusters.status === 200 ? parseClustersText(clusters.body) : new Map(),
    virtualHosts: proxyDump.json ? virtualHostsFromConfigDump(proxyDump.json) : [],
    stats: stats.status === 200 ? parseStatsText(stats.body) : new Map(),
    listeners: listeners.status === 200 ? parseListenersText(listeners.body) : [],
    registry: registryConfig ? { backend, endpoints } : undefined,
    rules: Array.isArray(rules.json?.rules) ? (rules.json.rules as RuleInForce[]) : undefined,
  };
}
