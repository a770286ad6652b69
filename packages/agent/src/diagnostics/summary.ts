// The data behind the admin home page: status, components, doctor checks, services, per-cluster
// request and error rates over the last minutes (sampled on every poll), the latest errors.
import { httpRequest } from './http-get.js';
import { gatherSnapshot } from './sidecar.js';
import { doctorChecks } from './doctor.js';
import { serviceOfCluster } from './envoy-formats.js';
import type { CheckResult } from './checks.js';
import { rulesForHomePage } from './rules-checks.js';

export interface RatePoint { t: number; rps: number; errorsPerSec: number }
export interface Summary {
  time: string;
  status: string;
  components: Array<{ name: string; healthy: boolean; epoch?: string; version?: string; admin: string }>;
  checks: CheckResult[];
  /** protocol: the upstream protocol of the cluster (http1 or http2; `tcp VIP:PORT` for one piped as bytes; `-` from a proxy that does not say). */
  services: Array<{ name: string; direction: 'in' | 'out'; cluster: string; protocol: string; endpoints: Array<{ address: string; healthy: boolean; flags: string; rqTotal: number }> }>;
  rates: Record<string, RatePoint[]>;
  /** The traffic rules in force (docs/traffic-rules.md), one entry per service. */
  rules: ReturnType<typeof rulesForHomePage>;
  errors: Array<{ component: string; text: string; seen: string }>;
  links: Array<{ component: string; method: string; url: string }>;
}

const HISTORY_MS = 10 * 60_000;

/** Keeps counter samples between polls so rates can be drawn; one per agent admin server. */
export class RateHistory {
  private readonly samples = new Map<string, Array<{ t: number; total: number; errors: number }>>();

  record(stats: Map<string, number>, now = Date.now()): void {
    for (const [name, value] of stats) {
      const match = /^cluster\.(.+)\.upstream_rq_total$/.exec(name);
      if (!match) continue;
      const cluster = match[1];
      const errors = stats.get(`cluster.${cluster}.upstream_rq_5xx`) ?? 0;
      const list = this.samples.get(cluster) ?? [];
      const last = list[list.length - 1];
      if (!last || now - last.t >= 1_000) list.push({ t: now, total: value, errors });
      while (list.length && now - list[0].t > HISTORY_MS) list.shift();
      this.samples.set(cluster, list);
    }
  }

  rates(): Record<string, RatePoint[]> {
    const out: Record<string, RatePoint[]> = {};
    for (const [cluster, list] of this.samples) {
      const points: RatePoint[] = [];
      for (let i = 1; i < list.length; i++) {
        const dt = (list[i].t - list[i - 1].t) / 1000;
        // A counter that went down was reset (/reset_counters or a new proxy epoch): start again from it.
        const total = Math.max(0, list[i].total - list[i - 1].total);
        const errors = Math.max(0, list[i].errors - list[i - 1].errors);
        points.push({ t: list[i].t, rps: round(total / dt), errorsPerSec: round(errors / dt) });
      }
      out[cluster] = points;
    }
    return out;
  }
}

const AGENT_LINKS = ['/health', '/status', '/version', '/version/pilot-agent', '/version/envoy', '/version/mesh-dns', '/epoch/envoy', '/epoch/mesh-dns', '/latest_error',
  '/config/agent', '/config/services', '/config/global', '/config/envoy', '/config_dump/pilot-agent', '/config_dump/envoy', '/config_dump/mesh-dns', '/help'];
const DNS_LINKS = ['/health', '/config_dump', '/latest_error', '/help', '/version', '/status'];
const PROXY_LINKS = ['/', '/certs', '/clusters', '/config_dump', '/help', '/hot_restart_version', '/listeners', '/logging', '/runtime', '/server_info', '/stats', '/stats/prometheus'];
const POST_LINKS: Array<[string, string]> = [['pilot-agent', 'POST /hot_restart/envoy'], ['pilot-agent', 'POST /hot_restart/mesh-dns'], ['pilot-agent', 'PUT /update'], ['pilot-agent', 'PUT /logging/{scope}/{level}'],
  ['envoy', 'POST /healthcheck/fail'], ['envoy', 'POST /healthcheck/ok'], ['envoy', 'POST /reset_counters'], ['envoy', 'POST /quitquitquit'], ['envoy', 'POST /runtime_modify'], ['envoy', 'POST /cpuprofiler'], ['mesh-dns', 'PUT /logging/{scope}/{level}']];

export async function buildSummary(agentAdminUrl: string, history: RateHistory, errorLog: Summary['errors']): Promise<Summary> {
  const snap = await gatherSnapshot(agentAdminUrl);
  const report = await doctorChecks(agentAdminUrl, { snapshot: snap });
  history.record(snap.stats);
  const base = snap.agentAdminUrl;
  const dnsBase = `http://${snap.adminHost}:${snap.ports.dnsAdmin}`;
  const proxyBase = `http://${snap.adminHost}:${snap.ports.proxyAdmin}`;
  const [epochEnvoy, epochDns, vAgent, vEnvoy, vDns, dnsError] = await Promise.all([
    httpRequest(`${base}/epoch/envoy`), httpRequest(`${base}/epoch/mesh-dns`),
    httpRequest(`${base}/version/pilot-agent`), httpRequest(`${base}/version/envoy`), httpRequest(`${base}/version/mesh-dns`),
    httpRequest(`${dnsBase}/latest_error`),
  ]);
  // Our proxy answers /latest_error with 404 (Envoy has none); asked anyway so a proxy that has one is shown.
  const proxyError = snap.proxy.listeners.status === 200 ? await httpRequest(`${proxyBase}/latest_error`) : { status: 0, body: '' };
  const text = (a: { status: number; body: string }) => (a.status === 200 ? versionText(a.body) : undefined);
  const components: Summary['components'] = [
    { name: 'pilot-agent', healthy: snap.agent.health.status === 200, version: text(vAgent), admin: base },
    { name: 'mesh-dns', healthy: snap.dns.health.status === 200, epoch: text(epochDns), version: text(vDns), admin: dnsBase },
    { name: 'envoy', healthy: snap.proxy.serverInfo.status === 200 && snap.proxy.listeners.status === 200, epoch: text(epochEnvoy), version: text(vEnvoy), admin: proxyBase },
  ];
  const services: Summary['services'] = [];
  for (const cluster of snap.clusterStatus.values()) {
    const parsed = serviceOfCluster(cluster.name);
    services.push({
      name: parsed ? `${parsed.service}${parsed.subset ? ` subset ${parsed.subset}` : ''}` : cluster.name, direction: parsed?.direction ?? 'out', cluster: cluster.name,
      // a cluster piped as bytes (issue 15) shows `tcp` and what is routed to it (its VIP:port)
      protocol: cluster.settings.tcp_route ? `tcp ${cluster.settings.tcp_route}` : cluster.settings.protocol ?? '-',
      endpoints: cluster.hosts.map((h) => ({ address: h.address, healthy: h.healthy, flags: h.healthFlags, rqTotal: Number(h.stats.rq_total ?? 0) })),
    });
  }
  const now = new Date().toISOString();
  // The components' own latest errors; the doctor's findings have their own panel.
  const latestErrors: Array<[string, { status: number; body: string }]> = [['pilot-agent', snap.agent.latestError], ['mesh-dns', dnsError], ['envoy', proxyError]];
  for (const [component, answer] of latestErrors) recordError(errorLog, component, answer.status === 200 ? answer.body : '', now);
  // A child that exited: the agent's supervisor keeps its last exit (the proxy has no /latest_error of its own).
  for (const [component, state] of Object.entries<any>(snap.agent.healthJson?.components ?? {})) {
    const exit = state?.lastExit;
    if (exit) recordError(errorLog, component, JSON.stringify({ time: exit.time, message: `epoch ${exit.epoch} exited (${exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`})` }), now);
  }
  const links: Summary['links'] = [
    ...AGENT_LINKS.map((p) => ({ component: 'pilot-agent', method: 'GET', url: `${base}${p}` })),
    ...DNS_LINKS.map((p) => ({ component: 'mesh-dns', method: 'GET', url: `${dnsBase}${p}` })),
    ...PROXY_LINKS.map((p) => ({ component: 'envoy', method: 'GET', url: `${proxyBase}${p}` })),
    ...POST_LINKS.map(([component, route]) => {
      const [method, path] = route.split(' ');
      return { component, method, url: `${component === 'envoy' ? proxyBase : component === 'mesh-dns' ? dnsBase : base}${path}` };
    }),
  ];
  return {
    time: now,
    status: snap.agent.status.status === 200 ? snap.agent.status.body.trim() : `unreachable (${snap.agent.status.error ?? snap.agent.status.status})`,
    components, checks: report.checks, services, rates: history.rates(), rules: rulesForHomePage(snap.rules), errors: errorLog, links,
  };
}

/** Adds a component's latest error (JSON `{time, message, code}` or text) unless empty or already listed. */
export function recordError(errorLog: Summary['errors'], component: string, body: string, now: string): void {
  const raw = body.trim();
  if (!raw || /^(\{\s*\}|null|none|no error.*)$/i.test(raw)) return;
  let text = raw;
  let seen = now;
  try {
    const json = JSON.parse(raw);
    if (json && typeof json === 'object') {
      if (!json.message && !json.error) return;
      text = `${json.code ? `${json.code}: ` : ''}${json.message ?? json.error}`;
      if (typeof json.time === 'string') seen = json.time;
    }
  } catch { /* plain text: shown as it is */ }
  text = text.slice(0, 2_000);
  if (errorLog.some((e) => e.component === component && e.text === text)) return;
  errorLog.unshift({ component, text, seen });
  errorLog.splice(20);
}

function versionText(body: string): string {
  try {
    const json = JSON.parse(body);
    if (typeof json === 'object' && json) return String(json.version ?? json.epoch ?? JSON.stringify(json));
    return String(json);
  } catch {
    return body.trim().slice(0, 80);
  }
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
