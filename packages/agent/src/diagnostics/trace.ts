// `mesh-agent trace URL`: one real request through the sidecar, as the application would send it,
// and what each hop did: evidence from the wire (DNS answer), the kernel (rule counters) and the
// proxy's admin (route, per-endpoint request counters, response flags).
import net from 'node:net';
import { httpRequest, type HttpAnswer } from './http-get.js';
import { queryA, systemNameserver } from './dns-wire.js';
import { parseClustersText, matchVirtualHost, type NatRule } from './envoy-formats.js';
import { captureDisabled, readNatRules } from './checks.js';
import { gatherSnapshot, type SidecarSnapshot } from './sidecar.js';
import { describeRoute, routeFix, routeGet } from './vip-route.js';
import { ROUTE_HEADER, ruleHop } from './rules-checks.js';

export type TraceHopName = 'dns' | 'vip-route' | 'capture' | 'listener' | 'route' | 'rule' | 'endpoint' | 'tls' | 'upstream';

/** Asks the proxy how it reached the upstream (stripped before the upstream); the answer comes in TRANSPORT_HEADER. */
export const DEBUG_UPSTREAM_HEADER = 'x-mesh-debug-upstream';
export const TRANSPORT_HEADER = 'x-mesh-upstream-transport';

/** The `tls` hop from the proxy's `x-mesh-upstream-transport`: `tls TLSv1.3 peer=spiffe://...` or `plaintext`. */
export function tlsHop(value: string | string[] | undefined): TraceHop {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text) return { hop: 'tls', ok: true, detail: `not reported: the proxy sent no ${TRANSPORT_HEADER} header (a proxy without mTLS support)` };
  const m = /^tls (\S+) peer=(\S+)$/.exec(text.trim());
  if (m) return { hop: 'tls', ok: true, detail: `mTLS ${m[1]}, peer identity ${m[2]} (verified by the proxy against the registered one)` };
  if (text.trim() === 'plaintext') return { hop: 'tls', ok: true, detail: 'plaintext: the endpoint registered no identity (its sidecar runs without mTLS or in mode disable)' };
  return { hop: 'tls', ok: true, detail: text.trim() };
}
export interface TraceHop { hop: TraceHopName; ok: boolean; detail: string; ms?: number }
export interface TraceReport { url: string; via: 'capture' | 'proxy'; ok: boolean; failedHop?: TraceHopName; hops: TraceHop[]; status?: number; totalMs: number; fix?: string }

export async function traceRequest(url: string, agentAdminUrl: string, opts: { via?: 'capture' | 'proxy'; resolvConf?: string; snapshot?: SidecarSnapshot } = {}): Promise<TraceReport> {
  const target = new URL(url);
  const port = Number(target.port || 80);
  const snap = opts.snapshot ?? await gatherSnapshot(agentAdminUrl);
  // With capture off in the config (the demo) the application calls the proxy explicitly, so without
  // --via the trace does the same; an explicit --via capture is told why that path is not there.
  const captureOff = captureDisabled(snap);
  const via = opts.via ?? (captureOff ? 'proxy' : 'capture');
  const hops: TraceHop[] = [];
  const adminHost = snap.adminHost;
  // Total time is the request's own path (DNS answer + HTTP exchange), not the admin calls around it.
  const report = (failedHop?: TraceHopName, fix?: string, answer?: HttpAnswer): TraceReport => ({
    url, via, ok: !failedHop, failedHop, hops, status: answer?.status || undefined, totalMs: round(hops.reduce((sum, h) => sum + (h.ms ?? 0), 0)), fix,
  });
  if (via === 'capture' && captureOff) {
    hops.push({ hop: 'capture', ok: false, detail: captureOff });
    return report('capture', `trace it as the application sends it: mesh-agent trace ${url} --via proxy (without --via, trace picks the proxy when capture is disabled)`);
  }
  const clustersUrl = `http://${adminHost}:${snap.ports.proxyAdmin}/clusters`;
  const natBefore = await readNatRules();
  // A proxy admin that already did not answer is not asked again (each try costs a timeout).
  const proxyAdminUp = snap.proxy.clusters.status !== 0;
  const noAnswer: HttpAnswer = { url: clustersUrl, status: 0, headers: {}, body: '', error: 'not asked: the proxy admin did not answer', ms: 0 };
  const clustersBefore = proxyAdminUp ? await httpRequest(clustersUrl) : noAnswer;

  // 1. DNS: the name as the application's resolver asks for it, to resolv.conf's server on port 53.
  let address = target.hostname;
  if (via === 'capture' && net.isIP(target.hostname) === 0) {
    const server = systemNameserver(opts.resolvConf);
    const answer = await queryA(server, 53, target.hostname);
    const addr = answer.addresses[0];
    if (!addr) {
      hops.push({ hop: 'dns', ok: false, detail: `${target.hostname}: ${answer.error ?? `${answer.rcodeName}, no address`} (asked ${answer.server})`, ms: answer.ms });
      const fix = answer.error
        ? `nothing answered on port 53: is mesh-dns up (curl -s ${adminHost}:${snap.ports.agentAdmin}/epoch/mesh-dns)? mesh-agent doctor names the hop`
        : `the answer did not come from mesh-dns, or mesh-dns does not know ${target.hostname}: iptables -t nat -S DNS_OUTPUT; curl -s ${adminHost}:${snap.ports.dnsAdmin}/config_dump; dig @127.0.0.1 -p ${snap.ports.dns} ${target.hostname}`;
      return report('dns', fix);
    }
    address = addr;
    hops.push({ hop: 'dns', ok: true, detail: `${target.hostname} -> ${answer.addresses.join(', ')} (${answer.rcodeName} via ${answer.server})`, ms: answer.ms });
  } else if (via === 'proxy') {
    const why = captureOff && !opts.via ? ` (iptables capture is disabled in the config, so trace sends it as the application does: curl -x 127.0.0.1:${snap.ports.proxyListener} ...)` : '';
    hops.push({ hop: 'dns', ok: true, detail: `not used: sent straight to the proxy listener 127.0.0.1:${snap.ports.proxyListener}${why}` });
  }

  // 2. The route: connect() looks it up before the nat OUTPUT chain sees the packet, so without one
  // the capture rules are never reached and must not be blamed.
  const vipCidr: string = snap.agent.configJson?.mesh?.vipCidr ?? `${snap.meshVip}/32`;
  const noRoute = (why: string) => `no route to ${address} (${why}): connect() fails with ENETUNREACH before the capture rules see it`;
  if (via === 'capture') {
    const route = await routeGet(address);
    if (route.ok) hops.push({ hop: 'vip-route', ok: true, detail: describeRoute(route) });
    else if (route.noTool) hops.push({ hop: 'vip-route', ok: true, detail: `not checked: ${route.error}` });
    else {
      hops.push({ hop: 'vip-route', ok: false, detail: noRoute(`ip route get: ${route.error}`) });
      return report('vip-route', routeFix(vipCidr, snap.localAddress));
    }
  }

  // 3..7: the request itself.
  const connectTo = via === 'proxy' ? { host: '127.0.0.1', port: snap.ports.proxyListener } : { host: address, port };
  const answer = await httpRequest(url, { connectTo, timeoutMs: 10_000, headers: { 'user-agent': 'mesh-agent-trace', 'x-request-id': `trace-${Date.now()}`, [DEBUG_UPSTREAM_HEADER]: '1' } });
  if (via === 'capture' && answer.status === 0 && /ENETUNREACH|EHOSTUNREACH/.test(answer.error ?? '')) {
    // the route went away between the lookup and the request, or `ip` could not tell
    const last = hops[hops.length - 1];
    if (last?.hop === 'vip-route') hops.pop();
    hops.push({ hop: 'vip-route', ok: false, detail: noRoute(answer.error ?? ''), ms: answer.ms });
    return report('vip-route', routeFix(vipCidr, snap.localAddress), answer);
  }
  const natAfter = await readNatRules();
  const clustersAfter = proxyAdminUp ? await httpRequest(clustersUrl) : noAnswer;

  const matched = via === 'capture' ? risenRules(natBefore.rules, natAfter.rules, 'ISTIO_OUTPUT') : [];
  if (via === 'capture') {
    if (natAfter.error) hops.push({ hop: 'capture', ok: answer.status !== 0, detail: `rule counters unreadable (${natAfter.error})` });
    else if (matched.length) hops.push({ hop: 'capture', ok: true, detail: `${matched[0].spec} (+${matched[0].delta} packets)` });
    else {
      hops.push({ hop: 'capture', ok: false, detail: `no ISTIO_OUTPUT rule matched ${address}:${port}` });
      if (answer.status === 0) return report('capture', `the connection to ${address}:${port} was not DNATed to the proxy: iptables -t nat -S ISTIO_OUTPUT; mesh-agent doctor`, answer);
    }
  }
  const listener = snap.listeners.find((l) => l.address.endsWith(`:${snap.ports.proxyListener}`));
  if (answer.status === 0) {
    const why = !proxyAdminUp ? `; the proxy's admin does not answer either (${snap.proxy.clusters.error})` : listener ? '' : `; no listener on ${snap.ports.proxyListener} in the proxy's /listeners`;
    hops.push({ hop: 'listener', ok: false, detail: `${answer.error}${why}`, ms: answer.ms });
    return report('listener', `the proxy does not accept on port ${snap.ports.proxyListener}: curl -s ${adminHost}:${snap.ports.agentAdmin}/epoch/envoy; curl -X POST ${adminHost}:${snap.ports.agentAdmin}/hot_restart/envoy`, answer);
  }
  hops.push({ hop: 'listener', ok: true, detail: listener ? `${listener.name}::${listener.address}` : `port ${snap.ports.proxyListener}` });

  const vh = matchVirtualHost(snap.virtualHosts, target.host);
  const flags = String(answer.headers['x-envoy-response-flags'] ?? answer.headers['x-mesh-response-flags'] ?? '') || undefined;
  if (!vh || flags === 'NR') {
    hops.push({ hop: 'route', ok: false, detail: `no virtual host for Host "${target.host}" (HTTP ${answer.status}${flags ? `, flags ${flags}` : ''})`, ms: answer.ms });
    return report('route', `the proxy has no route for ${target.hostname}: curl -s ${adminHost}:${snap.ports.proxyAdmin}/config_dump; is the service in the registry?`, answer);
  }
  const before = clustersBefore.status === 200 ? parseClustersText(clustersBefore.body) : new Map();
  const after = clustersAfter.status === 200 ? parseClustersText(clustersAfter.body) : new Map();
  // each cluster with its upstream protocol (/clusters NAME::protocol::http1|http2), as the proxy speaks it to the endpoints
  const withProtocol = (name: string) => {
    const protocol = after.get(name)?.settings.protocol ?? before.get(name)?.settings.protocol;
    return protocol ? `${name} (${protocol})` : name;
  };
  hops.push({ hop: 'route', ok: true, detail: `virtual host ${vh.name} -> ${vh.clusters.map(withProtocol).join(', ') || 'direct response'}` });
  const picked: string[] = [];
  let healthyLeft = 0;
  for (const name of vh.clusters) {
    const cluster = after.get(name);
    healthyLeft += cluster?.hosts.filter((h: { healthy: boolean }) => h.healthy).length ?? 0;
    for (const host of cluster?.hosts ?? []) {
      const old = before.get(name)?.hosts.find((h: { address: string }) => h.address === host.address);
      const delta = Number(host.stats.rq_total ?? 0) - Number(old?.stats.rq_total ?? 0);
      if (delta > 0) picked.push(`${name} ${host.address} (${host.healthFlags})`);
    }
  }
  const upstreamFlags = flags ?? (answer.status === 503 && healthyLeft === 0 ? 'UH' : '-');
  // No healthy endpoint is the endpoint hop's failure even when panic routing still tried an unhealthy one.
  if (answer.status >= 500 && (!picked.length || healthyLeft === 0)) {
    const tried = picked.length ? `; panic routing tried ${picked.join(', ')}` : '';
    hops.push({ hop: 'endpoint', ok: false, detail: `no healthy endpoint in ${vh.clusters.join(', ')}: ${healthyLeft} healthy (HTTP ${answer.status}, flags ${upstreamFlags})${tried}`, ms: answer.ms });
    return report('endpoint', `no healthy endpoint for ${vh.name}: curl -s ${adminHost}:${snap.ports.proxyAdmin}/clusters | grep ${vh.name}; check the instances' applications and sidecars`, answer);
  }
  // the traffic rule, subset and policies the proxy applied (its x-mesh-route debug answer)
  const rule = ruleHop(answer.headers[ROUTE_HEADER], snap.rules);
  if (rule) hops.push(rule);
  hops.push({ hop: 'endpoint', ok: true, detail: picked.join(', ') || 'not identified (counters unchanged)' });
  hops.push(tlsHop(answer.headers[TRANSPORT_HEADER]));
  const upstreamOk = answer.status > 0 && answer.status < 500;
  const serviceTime = answer.headers['x-envoy-upstream-service-time'];
  hops.push({ hop: 'upstream', ok: upstreamOk, detail: `HTTP ${answer.status}, flags ${upstreamFlags}${serviceTime ? `, x-envoy-upstream-service-time ${serviceTime}` : ''}`, ms: answer.ms });
  if (!upstreamOk) return report('upstream', `the upstream answered ${answer.status}: check the application on ${picked.join(', ') || 'the endpoint'} and its sidecar`, answer);
  return report(undefined, undefined, answer);
}

function risenRules(before: NatRule[], after: NatRule[], chain: string): Array<NatRule & { delta: number }> {
  return after.filter((r) => r.chain === chain).map((r) => {
    const old = before.find((b) => b.chain === chain && b.spec === r.spec);
    return { ...r, delta: (r.packets ?? 0) - (old?.packets ?? 0) };
  }).filter((r) => r.delta > 0 && /-j (DNAT|REDIRECT|ISTIO_REDIRECT)/.test(r.spec));
}

export function renderTrace(report: TraceReport): string {
  const lines = [`mesh-agent trace ${report.url} (via ${report.via === 'capture' ? 'the capture path' : 'the proxy listener'})`];
  report.hops.forEach((hop, i) => lines.push(`  ${i + 1} ${hop.ok ? 'ok  ' : 'FAIL'} ${hop.hop.padEnd(9)} ${hop.detail}${hop.ms !== undefined ? ` [${hop.ms} ms]` : ''}`));
  if (report.ok) lines.push(`total ${report.totalMs} ms: HTTP ${report.status}`);
  else {
    lines.push(`total ${report.totalMs} ms: FAILED at hop ${report.failedHop}`);
    if (report.fix) lines.push(`fix: ${report.fix}`);
  }
  return `${lines.join('\n')}\n`;
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
