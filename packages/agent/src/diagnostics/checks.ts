// The doctor's checks, one per hop, in the order a request meets them. Each gathers real evidence
// (an HTTP answer, a DNS query on the wire, the kernel's rules) and says how to fix what fails.
// A check whose hop depends on a failed one reports WARN "not checked", so exactly the broken hop FAILs.
import fs from 'node:fs';
import net from 'node:net';
import { execFile } from 'node:child_process';
import { describeAnswer, httpRequest } from './http-get.js';
import { queryA, systemNameserver } from './dns-wire.js';
import { parseIptablesSave, serviceOfCluster, matchVirtualHost, type NatRule } from './envoy-formats.js';
import type { LocalPort, SidecarSnapshot } from './sidecar.js';
import { describeRoute, firstHostOf, routeFix, routeGet } from './vip-route.js';
import { isHttp1Protocol, isProxiedProtocol, notCapturedReason } from '../port-protocols.js';
import { formatDifference, SpawnExecutor, verifyRules, type RuleDifference } from '@mesh-agent/iptables-rules';
import { agentConfigSchema, ConfigError, formatConfigIssue, loadConfigFile, servicesSpecSchema } from '@mesh-agent/shared-config';

export type CheckStatus = 'OK' | 'WARN' | 'FAIL';
export interface CheckResult { hop: string; status: CheckStatus; evidence: string; fix?: string }

export interface CheckContext {
  snap: SidecarSnapshot;
  /** `iptables-save -t nat` output, or why it could not be read */
  nat: { rules: NatRule[]; error?: string };
  /** @mesh-agent/iptables-rules verify against the state file of what the agent applied */
  verify?: { differences: RuleDifference[]; stateFile: string; error?: string };
  resolvConf?: string;
}

/** Compares the nat table with what the agent recorded as applied (its iptables state file). */
export async function verifyApplied(stateFile: string | undefined): Promise<CheckContext['verify']> {
  if (!stateFile) return undefined;
  try {
    const result = await verifyRules(undefined, { executor: new SpawnExecutor(), stateFile });
    return { differences: result.differences, stateFile };
  } catch (err) {
    return { differences: [], stateFile, error: (err as Error).message };
  }
}

type CaptureHop = 'dns-capture' | 'outbound-capture' | 'inbound-capture';
/** Which hop a rule difference breaks, by its chain (and, for the jumps from OUTPUT, its target). */
export function hopOfDifference(diff: RuleDifference): CaptureHop {
  const text = `${diff.chain} ${diff.expected ?? ''} ${diff.actual ?? ''} ${diff.note ?? ''}`;
  if (/DNS_OUTPUT/.test(text)) return 'dns-capture';
  if (/ISTIO_INBOUND|ISTIO_REDIRECT|PREROUTING/.test(text)) return 'inbound-capture';
  return 'outbound-capture';
}

function differencesFor(ctx: CheckContext, hop: CaptureHop): string[] {
  return (ctx.verify?.differences ?? []).filter((d) => hopOfDifference(d) === hop).map((d) => formatDifference(d).replace(/\s+/g, ' '));
}

export function readNatRules(): Promise<{ rules: NatRule[]; text: string; error?: string }> {
  return new Promise((resolve) => {
    execFile('iptables-save', ['-t', 'nat', '-c'], { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) resolve({ rules: [], text: '', error: `iptables-save: ${String(stderr).trim() || err.message}` });
      else resolve({ rules: parseIptablesSave(String(stdout)), text: String(stdout) });
    });
  });
}

export function tcpConnect(host: string, port: number, timeoutMs = 2_000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (error?: string) => { socket.destroy(); resolve(error); };
    socket.setTimeout(timeoutMs, () => done(`connect to ${host}:${port} timed out`));
    socket.once('connect', () => done());
    socket.once('error', (err) => done(err.message));
  });
}

/**
 * Why the capture hops are not in use, when the agent's config turns iptables capture off
 * (`iptables.enabled: false`, or the agent's /health says `capture: disabled`, as in the demo).
 */
export function captureDisabled(snap: SidecarSnapshot): string | undefined {
  const enabled = snap.agent.configJson?.iptables?.enabled;
  const mode = snap.agent.healthJson?.capture?.mode;
  if (enabled !== false && mode !== 'disabled') return undefined;
  return `not used: iptables capture is disabled in the config (iptables.enabled: false); the application calls the proxy explicitly (curl -x 127.0.0.1:${snap.ports.proxyListener} ...)`;
}

/** The demo's config is built in: /config/agent names it "(demo: built in)", no file behind it. */
export function isBuiltInConfig(file: string): boolean {
  return /\((demo: )?built[ -]in\)$/.test(file) && !fs.existsSync(file);
}

const ADMIN = (snap: SidecarSnapshot) => `curl -s ${snap.adminHost}:${snap.ports.agentAdmin}`;

/** The mesh services this sidecar calls (outbound clusters), without the local ones. */
export function meshServices(snap: SidecarSnapshot): string[] {
  const local = new Set(snap.localServices.map((s) => s.name));
  const names = new Set<string>();
  for (const name of snap.clusterStatus.keys()) {
    const parsed = serviceOfCluster(name);
    if (parsed?.direction === 'out' && !local.has(parsed.service)) names.add(parsed.service);
  }
  for (const vh of snap.virtualHosts) {
    for (const cluster of vh.clusters) {
      const parsed = serviceOfCluster(cluster);
      if (parsed?.direction === 'out' && !local.has(parsed.service)) names.add(parsed.service);
    }
  }
  for (const svc of dnsNames(snap)) if (!local.has(svc)) names.add(svc);
  return [...names].sort();
}

/** Service names mesh-dns hosts, from its /config_dump. */
export function dnsNames(snap: SidecarSnapshot): string[] {
  const dump = snap.dns.dumpJson;
  const list: any[] = dump?.services ?? dump?.names ?? dump?.config?.services ?? [];
  return list.map((s) => (typeof s === 'string' ? s : s?.name)).filter((s): s is string => typeof s === 'string' && !s.includes('.'));
}

function chainRules(nat: CheckContext['nat'], chain: string): NatRule[] {
  return nat.rules.filter((r) => r.chain === chain);
}

/** Rules a hop needs, each with a human label; returns the labels of the missing ones. */
function missingRules(nat: CheckContext['nat'], wanted: Array<{ label: string; chain: string; test: (spec: string) => boolean }>): string[] {
  return wanted.filter((w) => !chainRules(nat, w.chain).some((r) => w.test(r.spec))).map((w) => w.label);
}

export function checkAgent({ snap }: CheckContext): CheckResult {
  const { status, latestError } = snap.agent;
  if (status.status !== 200) {
    return { hop: 'agent', status: 'FAIL', evidence: `no status from the agent: ${describeAnswer(status)}`, fix: 'start the sidecar: mesh-agent start --config FILE (as root), then mesh-agent wait' };
  }
  const value = status.body.trim();
  const lastError = describeLatestError(latestError.status === 200 ? latestError.body : '');
  const why = snap.agent.healthJson ? `; health: ${summariseHealth(snap.agent.healthJson)}` : '';
  if (value === '<SERVICE_REGISTERED>') return { hop: 'agent', status: 'OK', evidence: `status ${value}${lastError}` };
  if (value === '<FLOW_TAKEOVER>') return { hop: 'agent', status: 'WARN', evidence: `status ${value}: traffic taken over, service not registered yet${why}${lastError}`, fix: `see the registry and local-app lines below; ${ADMIN(snap)}/latest_error` };
  return { hop: 'agent', status: 'FAIL', evidence: `status ${value}: traffic is not taken over${why}${lastError}`, fix: `${ADMIN(snap)}/health and /latest_error say why; iptables needs root (run mesh-agent start as root)` };
}

export function checkConfig({ snap }: CheckContext): CheckResult {
  const { config, services } = snap.agent;
  if (config.status !== 200 || services.status !== 200) {
    const bad = config.status !== 200 ? config : services;
    return { hop: 'config', status: 'FAIL', evidence: describeAnswer(bad), fix: `${ADMIN(snap)}/latest_error; validate the files with mesh-agent start --config FILE (it names the file, line and field)` };
  }
  // The files on disk must still be valid: the running agent keeps what it loaded, but its next start would fail.
  const files: Array<[string, string | undefined, Parameters<typeof loadConfigFile>[0]]> = [
    ['agent config', snap.agent.configJson?.configFile, agentConfigSchema],
    ['spec.yaml', snap.agent.configJson?.specFile, servicesSpecSchema],
  ];
  let builtIn = false;
  for (const [what, file, schema] of files) {
    if (!file) continue;
    if (isBuiltInConfig(file)) { builtIn = true; continue; }
    try {
      loadConfigFile(schema, file);
    } catch (err) {
      const issues = err instanceof ConfigError ? err.issues.map(formatConfigIssue).join('; ') : (err as Error).message;
      return { hop: 'config', status: 'FAIL', evidence: `${what} ${file} is no longer valid: ${oneLine(issues, 240)}`, fix: `fix the file (it names the line and field); the running agent still uses what it loaded at start, a restart would fail` };
    }
  }
  const dir = snap.agent.configJson?.appConfigDir ?? snap.agent.configJson?.configDir ?? snap.agent.configJson?.app?.configDir;
  const local = snap.localServices.map((s) => `${s.name}:${s.port}`).join(', ') || 'none';
  if (builtIn) return { hop: 'config', status: 'OK', evidence: `built-in demo configuration${dir ? ` (app config in ${dir})` : ''}; local services ${local}` };
  return { hop: 'config', status: 'OK', evidence: `agent config loaded${dir ? ` (app config from ${dir})` : ''}; local services ${local}` };
}

export function checkMeshDns({ snap }: CheckContext): CheckResult {
  const { health, healthJson } = snap.dns;
  if (health.status === 0) {
    return { hop: 'mesh-dns', status: 'FAIL', evidence: `mesh-dns admin does not answer: ${describeAnswer(health)}`, fix: `mesh-dns is down: ${ADMIN(snap)}/epoch/mesh-dns and /latest_error show why; restart it with curl -X POST ${snap.adminHost}:${snap.ports.agentAdmin}/hot_restart/mesh-dns` };
  }
  if (health.status !== 200) {
    return { hop: 'mesh-dns', status: 'FAIL', evidence: `mesh-dns unhealthy: ${describeAnswer(health)} ${oneLine(health.body)}`, fix: `curl -s ${snap.adminHost}:${snap.ports.dnsAdmin}/latest_error; check the upstreams in /etc/resolv.conf` };
  }
  const upstreams: any[] = healthJson?.upstreams ?? healthJson?.checks?.upstreams ?? [];
  const down = Array.isArray(upstreams) ? upstreams.filter((u) => u && (u.reachable === false || u.healthy === false || u.ok === false)) : [];
  if (down.length) {
    return { hop: 'mesh-dns', status: 'WARN', evidence: `upstream(s) not answering: ${down.map((u) => `${u.upstream ?? u.address ?? u.server ?? '?'}${u.error ? ` (${u.error})` : ''}`).join(', ')}`, fix: 'mesh names still resolve, names outside the mesh fail: check the nameservers in /etc/resolv.conf are reachable from this host' };
  }
  const names = dnsNames(snap);
  const reachable = Array.isArray(upstreams) ? upstreams.map((u) => u?.upstream ?? u?.address).filter(Boolean) : [];
  return { hop: 'mesh-dns', status: 'OK', evidence: `healthy on ${snap.adminHost}:${snap.ports.dnsAdmin}${names.length ? `; hosts ${names.join(', ')}` : ''}${reachable.length ? `; upstream ${reachable.join(', ')} reachable` : ''}` };
}

export async function checkDnsCapture(ctx: CheckContext, dependsOnFailed?: string): Promise<CheckResult> {
  const { snap, nat } = ctx;
  const hop = 'dns-capture';
  const notUsed = captureDisabled(snap);
  if (notUsed) return { hop, status: 'OK', evidence: notUsed };
  if (nat.error) return { hop, status: 'WARN', evidence: `cannot read the rules: ${nat.error}`, fix: 'run mesh-agent doctor as root' };
  const port = snap.ports.dns;
  const missing = missingRules(nat, [
    { label: 'OUTPUT -j DNS_OUTPUT', chain: 'OUTPUT', test: (s) => /-j DNS_OUTPUT\b/.test(s) },
    { label: 'DNS_OUTPUT RETURN for the proxy uid', chain: 'DNS_OUTPUT', test: (s) => /--uid-owner/.test(s) && /-j RETURN/.test(s) },
    { label: `DNS_OUTPUT udp dpt:53 DNAT to 127.0.0.1:${port}`, chain: 'DNS_OUTPUT', test: (s) => /-p udp/.test(s) && /--dport 53\b/.test(s) && s.includes(`127.0.0.1:${port}`) },
    { label: `DNS_OUTPUT tcp dpt:53 DNAT to 127.0.0.1:${port}`, chain: 'DNS_OUTPUT', test: (s) => /-p tcp/.test(s) && /--dport 53\b/.test(s) && s.includes(`127.0.0.1:${port}`) },
  ]);
  if (missing.length) {
    return { hop, status: 'FAIL', evidence: `rule(s) missing from the nat table: ${missing.join('; ')}`, fix: `the DNS capture rules were changed outside the agent: re-apply them with a restart of the agent (mesh-agent start re-applies and verifies), and find who edits iptables; compare: iptables -t nat -S DNS_OUTPUT` };
  }
  const differs = differencesFor(ctx, hop);
  if (differs.length) return { hop, status: 'FAIL', evidence: `nat table differs from what the agent applied: ${differs.join('; ')}`, fix: `restart the agent to re-apply its rules; mesh-iptables verify --state-file ${ctx.verify?.stateFile} lists the differences` };
  if (dependsOnFailed) return { hop, status: 'WARN', evidence: `rules present; query not tried: ${dependsOnFailed} failed` };
  const name = meshServices(snap)[0] ?? snap.localServices[0]?.name;
  if (!name) return { hop, status: 'WARN', evidence: 'rules present; no mesh name known to query', fix: 'register a service (the registry) so there is a name to check' };
  const server = systemNameserver(ctx.resolvConf);
  const answer = await queryA(server, 53, name);
  if (answer.error) return { hop, status: 'FAIL', evidence: `query ${name} A to ${answer.server} (captured to 127.0.0.1:${port}): ${answer.error}`, fix: `mesh-dns is not answering on ${port}: dig @127.0.0.1 -p ${port} ${name}; ${ADMIN(snap)}/epoch/mesh-dns` };
  const vip = answer.addresses.find((a) => a === snap.meshVip || a.startsWith('240.240.'));
  if (!vip) {
    return { hop, status: 'FAIL', evidence: `query ${name} A to ${answer.server}: ${answer.rcodeName} ${answer.addresses.join(',') || 'no address'} (expected the mesh VIP ${snap.meshVip})`, fix: `the query did not reach mesh-dns or mesh-dns does not know ${name}: check iptables -t nat -S DNS_OUTPUT and curl -s ${snap.adminHost}:${snap.ports.dnsAdmin}/config_dump` };
  }
  return { hop, status: 'OK', evidence: `${name} -> ${vip} via ${answer.server} (captured to 127.0.0.1:${port}) in ${answer.ms} ms` };
}

/** The VIPs an application connects to: the mesh VIP, the registry's per-service VIPs, the VIP range. */
export function vipTargets(snap: SidecarSnapshot): Array<{ address: string; label: string }> {
  const targets = [{ address: snap.meshVip, label: `the mesh VIP ${snap.meshVip}` }];
  const services: any[] = snap.agent.servicesJson?.registry?.services ?? [];
  for (const svc of services) {
    if (typeof svc?.vip === 'string') targets.push({ address: svc.vip, label: `the VIP ${svc.vip} of ${svc.name}${svc.namespace && svc.namespace !== 'default' ? `.${svc.namespace}` : ''}` });
  }
  const cidr = snap.agent.configJson?.mesh?.vipCidr;
  const first = firstHostOf(cidr);
  if (first) targets.push({ address: first, label: `the VIP range ${cidr} (${first})` });
  const seen = new Set<string>();
  // bounded: a registry with many per-service VIPs costs one `ip route get` each
  return targets.filter((t) => !seen.has(t.address) && seen.add(t.address)).slice(0, 32);
}

export async function checkVipRoute({ snap }: CheckContext): Promise<CheckResult> {
  const hop = 'vip-route';
  const notUsed = captureDisabled(snap);
  if (notUsed) return { hop, status: 'OK', evidence: notUsed };
  const cidr = snap.agent.configJson?.mesh?.vipCidr ?? `${snap.meshVip}/32`;
  const ok: string[] = [];
  const seenRoutes = new Set<string>();
  for (const target of vipTargets(snap)) {
    const route = await routeGet(target.address);
    if (route.ok) {
      // with per-service VIPs most targets share the mesh VIP's route: show each distinct route once
      const by = describeRoute({ ...route, address: '' });
      if (!seenRoutes.has(by)) { seenRoutes.add(by); ok.push(describeRoute(route)); }
      continue;
    }
    if (route.noTool) return { hop, status: 'WARN', evidence: `cannot check the route to ${target.label}: ${route.error}`, fix: `install iproute2, or check by hand that there is a default route or one for ${cidr} (ip route)` };
    return {
      hop, status: 'FAIL',
      evidence: `no route to ${target.label} (ip route get: ${route.error}): connect() fails with ENETUNREACH before the capture rules see it`,
      fix: routeFix(cidr, snap.localAddress),
    };
  }
  return { hop, status: 'OK', evidence: ok.join('; ') };
}

export function checkOutboundCapture(ctx: CheckContext): CheckResult {
  const { snap, nat } = ctx;
  const hop = 'outbound-capture';
  const notUsed = captureDisabled(snap);
  if (notUsed) return { hop, status: 'OK', evidence: notUsed };
  if (nat.error) return { hop, status: 'WARN', evidence: `cannot read the rules: ${nat.error}`, fix: 'run mesh-agent doctor as root' };
  const port = snap.ports.proxyListener;
  const missing = missingRules(nat, [
    { label: 'OUTPUT -j ISTIO_OUTPUT', chain: 'OUTPUT', test: (s) => /-j ISTIO_OUTPUT\b/.test(s) },
    { label: 'ISTIO_OUTPUT RETURN for the proxy uid', chain: 'ISTIO_OUTPUT', test: (s) => /--uid-owner/.test(s) && /-j RETURN/.test(s) },
    { label: `ISTIO_OUTPUT DNAT of the mesh VIP to :${port}`, chain: 'ISTIO_OUTPUT', test: (s) => /-j DNAT/.test(s) && s.includes(`:${port}`) },
  ]);
  if (missing.length) return { hop, status: 'FAIL', evidence: `rule(s) missing: ${missing.join('; ')}`, fix: 'restart the agent to re-apply and verify its rules; iptables -t nat -S ISTIO_OUTPUT shows what is there' };
  const differs = differencesFor(ctx, hop);
  if (differs.length) return { hop, status: 'FAIL', evidence: `nat table differs from what the agent applied: ${differs.join('; ')}`, fix: `restart the agent to re-apply its rules; mesh-iptables verify --state-file ${ctx.verify?.stateFile} lists the differences` };
  const dnat = chainRules(nat, 'ISTIO_OUTPUT').find((r) => /-j DNAT/.test(r.spec));
  return { hop, status: 'OK', evidence: `ISTIO_OUTPUT: ${dnat?.spec}${dnat?.packets !== undefined ? ` (${dnat.packets} packets)` : ''}` };
}

export async function checkProxy({ snap }: CheckContext): Promise<CheckResult> {
  const hop = 'proxy';
  const { listeners } = snap.proxy;
  const fix = `the proxy is down: ${ADMIN(snap)}/epoch/envoy and /latest_error show why; restart it with curl -X POST ${snap.adminHost}:${snap.ports.agentAdmin}/hot_restart/envoy`;
  if (listeners.status !== 200) return { hop, status: 'FAIL', evidence: `proxy admin: ${describeAnswer(listeners)}`, fix };
  const listener = snap.listeners.find((l) => l.address.endsWith(`:${snap.ports.proxyListener}`));
  if (!listener) return { hop, status: 'FAIL', evidence: `no listener on port ${snap.ports.proxyListener} in /listeners (${snap.listeners.map((l) => `${l.name}::${l.address}`).join(', ') || 'none'})`, fix };
  const refused = await tcpConnect('127.0.0.1', snap.ports.proxyListener);
  if (refused) return { hop, status: 'FAIL', evidence: `listener ${listener.name}::${listener.address} listed but ${refused}`, fix };
  const state = snap.proxy.serverInfoJson?.state;
  const epoch = snap.proxy.serverInfoJson?.command_line_options?.restart_epoch;
  return { hop, status: 'OK', evidence: `listener ${listener.name}::${listener.address} accepts connections${state ? `; ${state}` : ''}${epoch !== undefined ? `, epoch ${epoch}` : ''}` };
}

export function checkRoute({ snap }: CheckContext, service: string, dependsOnFailed?: string): CheckResult {
  const hop = `route:${service}`;
  if (dependsOnFailed) return { hop, status: 'WARN', evidence: `not checked: ${dependsOnFailed} failed` };
  const vh = matchVirtualHost(snap.virtualHosts.filter((v) => !v.domains.includes('*')), service);
  // a TCP service (issue 15) has no virtual host: its route is VIP:PORT -> cluster (/clusters NAME::tcp_route::VIP:PORT)
  const tcp = [...snap.clusterStatus.values()].filter((c) => c.settings.tcp_route && serviceOfCluster(c.name)?.direction === 'out' && serviceOfCluster(c.name)?.service === service);
  if (!vh && tcp.length) return { hop, status: 'OK', evidence: `TCP route ${tcp.map((c) => `${c.settings.tcp_route} -> ${c.name}`).join(', ')} (bytes, by original destination)` };
  if (!vh || (!vh.clusters.length && !vh.directResponse)) {
    return { hop, status: 'FAIL', evidence: `no virtual host for "${service}" in the proxy's routes (${snap.virtualHosts.map((v) => v.name).join(', ') || 'none'})`, fix: `curl -s ${snap.adminHost}:${snap.ports.proxyAdmin}/config_dump shows the routes; check the service is in the registry (${ADMIN(snap)}/config/services) or add it with PUT /update` };
  }
  return { hop, status: 'OK', evidence: `virtual host ${vh.name} (${vh.domains.slice(0, 3).join(', ')}${vh.domains.length > 3 ? ', ...' : ''}) -> ${vh.clusters.join(', ') || 'direct response'}` };
}

export function checkCluster({ snap }: CheckContext, service: string, dependsOnFailed?: string): CheckResult {
  const hop = `cluster:${service}`;
  if (dependsOnFailed) return { hop, status: 'WARN', evidence: `not checked: ${dependsOnFailed} failed` };
  const vh = matchVirtualHost(snap.virtualHosts.filter((v) => !v.domains.includes('*')), service);
  const names = new Set<string>(vh?.clusters ?? []);
  for (const name of snap.clusterStatus.keys()) if (serviceOfCluster(name)?.direction === 'out' && serviceOfCluster(name)?.service === service) names.add(name);
  const results: string[] = [];
  let failed = false;
  let warn = false;
  // the service's own clusters first, then its traffic rules' subset clusters (out#PORT#SERVICE#SUBSET)
  for (const name of [...names].sort((a, b) => Number(serviceOfCluster(a)?.subset !== undefined) - Number(serviceOfCluster(b)?.subset !== undefined))) {
    const cluster = snap.clusterStatus.get(name);
    if (!cluster) { failed = true; results.push(`${name}: not in /clusters`); continue; }
    // the upstream protocol (/clusters NAME::protocol::http1|http2): a gRPC service needs http2
    const protocol = cluster.settings.tcp_route ? 'tcp' : cluster.settings.protocol;
    const label = protocol ? `${name} (${protocol})` : name;
    const healthy = cluster.hosts.filter((h) => h.healthy);
    const open = ['cx_open', 'rq_open', 'rq_pending_open', 'rq_retry_open'].filter((g) => (snap.stats.get(`cluster.${name}.circuit_breakers.default.${g}`) ?? 0) > 0);
    if (!cluster.hosts.length) { failed = true; results.push(`${label}: no endpoints`); continue; }
    if (!healthy.length) { failed = true; results.push(`${label}: 0/${cluster.hosts.length} healthy (${cluster.hosts.map((h) => `${h.address} ${h.healthFlags}`).join(', ')})`); continue; }
    if (open.length) { failed = true; results.push(`${label}: circuit breaker open (${open.join(', ')})`); continue; }
    if (healthy.length < cluster.hosts.length) warn = true;
    results.push(`${label}: ${healthy.length}/${cluster.hosts.length} healthy (${cluster.hosts.map((h) => `${h.address}${h.healthy ? '' : ` ${h.healthFlags}`}`).join(', ')})`);
  }
  if (!names.size) return { hop, status: 'FAIL', evidence: `no cluster for ${service} in /clusters`, fix: 'the registry has no instances of this service: check the registry and the instances\' agents' };
  if (failed) return { hop, status: 'FAIL', evidence: results.join('; '), fix: `no healthy endpoint: check the instances' applications (curl IP:PORT/health on them) and their sidecars' /status; curl -s ${snap.adminHost}:${snap.ports.proxyAdmin}/clusters | grep ${service}` };
  return { hop, status: warn ? 'WARN' : 'OK', evidence: results.join('; '), ...(warn ? { fix: 'some endpoints are unhealthy: traffic goes to the others' } : {}) };
}

export function checkInboundCapture(ctx: CheckContext): CheckResult {
  const { snap, nat } = ctx;
  const hop = 'inbound-capture';
  const notUsed = captureDisabled(snap);
  if (notUsed) return { hop, status: 'OK', evidence: notUsed };
  if (nat.error) return { hop, status: 'WARN', evidence: `cannot read the rules: ${nat.error}`, fix: 'run mesh-agent doctor as root' };
  const excluded = new Set<number>((snap.agent.configJson?.iptables?.excludeInboundPorts ?? []).map(Number));
  const captured = snap.localServices.flatMap((svc) => svc.ports.filter((p) => isHttpPort(p) && !excluded.has(p.port)).map((p) => ({ ...p, service: svc.name })));
  // spec.yaml's non-HTTP ports (not http, http2 or grpc) are left to the application on purpose: named, not a fault
  const uncaptured = snap.localServices.flatMap((svc) => svc.ports.filter((p) => !isHttpPort(p)).map((p) => notCapturedReason(svc.name, p.port, p.protocol)));
  const notCaptured = uncaptured.length ? `; ${uncaptured.join('; ')}` : '';
  if (!captured.length) return { hop, status: 'OK', evidence: `no port captured inbound${notCaptured}` };
  const wanted = [
    { label: 'PREROUTING -j ISTIO_INBOUND', chain: 'PREROUTING', test: (s: string) => /-j ISTIO_INBOUND\b/.test(s) },
    { label: `ISTIO_REDIRECT REDIRECT to ${snap.ports.proxyListener}`, chain: 'ISTIO_REDIRECT', test: (s: string) => /-j REDIRECT/.test(s) && s.includes(String(snap.ports.proxyListener)) },
    ...captured.map((p) => ({ label: `ISTIO_INBOUND tcp dpt:${p.port} -> ISTIO_REDIRECT (${p.service})`, chain: 'ISTIO_INBOUND', test: (s: string) => new RegExp(`--dport ${p.port}\\b`).test(s) && /-j ISTIO_REDIRECT/.test(s) })),
  ];
  const missing = missingRules(nat, wanted);
  if (missing.length) return { hop, status: 'FAIL', evidence: `rule(s) missing: ${missing.join('; ')}${notCaptured}`, fix: 'restart the agent to re-apply and verify its rules; iptables -t nat -S ISTIO_INBOUND shows what is there' };
  const differs = differencesFor(ctx, hop);
  if (differs.length) return { hop, status: 'FAIL', evidence: `nat table differs from what the agent applied: ${differs.join('; ')}`, fix: `restart the agent to re-apply its rules; mesh-iptables verify --state-file ${ctx.verify?.stateFile} lists the differences` };
  return { hop, status: 'OK', evidence: `${chainRules(nat, 'ISTIO_INBOUND').length} inbound rule(s)${ctx.verify && !ctx.verify.error ? ' (equal to what was applied)' : ''} for ${captured.map((p) => p.port).join(', ')}${notCaptured}` };
}

function isHttpPort(port: LocalPort): boolean {
  return isProxiedProtocol(port.protocol);
}

export async function checkLocalApp({ snap }: CheckContext): Promise<CheckResult> {
  const hop = 'local-app';
  if (!snap.localServices.length) return { hop, status: 'WARN', evidence: 'no local service configured', fix: 'declare the application in spec.yaml (spec.services[].ports[].targetPort, healthCheck.path)' };
  const results: string[] = [];
  let failed = false;
  for (const svc of snap.localServices) {
    const http = svc.ports.find((p) => isHttp1Protocol(p.protocol));
    if (!http) {
      // a service without an HTTP/1 port (grpc, http2, dubbo, tcp): the agent's own check is a TCP connect too
      const port = svc.ports[0].port;
      const refused = await tcpConnect('127.0.0.1', port);
      if (refused) failed = true;
      results.push(`${svc.name}: ${refused ? refused : `accepts on ${port} (protocol ${svc.ports[0].protocol})`}`);
      continue;
    }
    const answer = await httpRequest(`http://127.0.0.1:${http.port}${svc.healthPath ?? '/'}`, { timeoutMs: 2_000 });
    const ok = answer.status >= 200 && answer.status < 400;
    if (!ok) failed = true;
    results.push(`${svc.name}: ${ok ? `HTTP ${answer.status}` : describeAnswer(answer)}`);
  }
  if (failed) return { hop, status: 'FAIL', evidence: results.join('; '), fix: 'the application does not answer its health check: start it (or fix it), then the agent registers it healthy again' };
  return { hop, status: 'OK', evidence: results.join('; ') };
}

export async function checkRegistry({ snap }: CheckContext, localAppFailed: boolean): Promise<CheckResult> {
  const hop = 'registry';
  const reg = snap.registry;
  const health = snap.agent.healthJson;
  const reported = health?.registry ?? health?.components?.registry;
  const evidence: string[] = [];
  if (reg?.backend === 'etcd' || reg?.endpoints.length) {
    for (const endpoint of reg.endpoints) {
      const url = `${/^https?:\/\//.test(endpoint) ? endpoint : `http://${endpoint}`}`.replace(/\/$/, '');
      const answer = await httpRequest(`${url}/health`, { timeoutMs: 2_000 });
      if (answer.status !== 200) {
        return { hop, status: 'FAIL', evidence: `etcd ${endpoint} unreachable: ${describeAnswer(answer)}`, fix: `start etcd or fix the route to ${endpoint}; the agent keeps its last endpoints and re-registers when the registry is back` };
      }
      evidence.push(`etcd ${endpoint} healthy`);
    }
  } else evidence.push(`backend ${reg?.backend ?? 'file'}`);
  if (reported && (reported.healthy === false || reported.reachable === false || reported.ok === false)) {
    return { hop, status: 'FAIL', evidence: `agent reports the registry down: ${oneLine(JSON.stringify(reported))}`, fix: 'check the registry backend is running and reachable' };
  }
  const status = snap.agent.status.status === 200 ? snap.agent.status.body.trim() : 'unknown';
  if (localAppFailed) return { hop, status: 'WARN', evidence: `${evidence.join(', ')}; the local instance is registered unhealthy (see local-app)` };
  if (status !== '<SERVICE_REGISTERED>') return { hop, status: 'FAIL', evidence: `${evidence.join(', ')}; local instance not registered (status ${status})`, fix: `${ADMIN(snap)}/latest_error says why registration failed` };
  return { hop, status: 'OK', evidence: `${evidence.join(', ')}; local instance registered` };
}

/** `; latest error at TIME (ROUTE): message`, from /latest_error's JSON or text; '' when there is none. */
export function describeLatestError(body: string): string {
  const text = body.trim();
  if (!text || /^(\{\s*\}|null|none|no error.*)$/i.test(text)) return '';
  try {
    const json = JSON.parse(text);
    if (json && typeof json === 'object' && json.message) return `; latest error at ${json.time ?? '?'}${json.route ? ` (${json.route})` : ''}: ${oneLine(String(json.message), 160)}`;
  } catch { /* plain text */ }
  return `; latest error: ${oneLine(text, 160)}`;
}

function summariseHealth(health: any): string {
  const parts: string[] = [];
  const components = health?.components ?? health;
  if (components && typeof components === 'object') {
    for (const [name, value] of Object.entries(components)) {
      if (value && typeof value === 'object' && 'healthy' in (value as object)) parts.push(`${name} ${(value as any).healthy ? 'healthy' : `unhealthy${(value as any).reason ? ` (${(value as any).reason})` : ''}`}`);
    }
  }
  return parts.join(', ') || oneLine(JSON.stringify(health));
}

export function oneLine(text: string, max = 200): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 3)}...` : flat;
}
