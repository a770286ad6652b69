// `mesh-agent doctor`: every hop in order, one line each, and an exit status of 0 only when all pass.
import { gatherSnapshot, type SidecarSnapshot } from './sidecar.js';
import {
  captureDisabled, checkAgent, checkCluster, checkConfig, checkDnsCapture, checkInboundCapture, checkLocalApp, checkMeshDns,
  checkOutboundCapture, checkProxy, checkRegistry, checkRoute, checkVipRoute, meshServices, readNatRules, verifyApplied, type CheckContext, type CheckResult,
} from './checks.js';
import { checkCertificates, checkPeerIdentity } from './mtls-checks.js';
import { checkTrafficRules } from './rules-checks.js';

export interface DoctorReport { ok: boolean; time: string; agentAdminUrl: string; checks: CheckResult[] }

export async function doctorChecks(agentAdminUrl: string, opts: { snapshot?: SidecarSnapshot; resolvConf?: string } = {}): Promise<DoctorReport> {
  const snap = opts.snapshot ?? await gatherSnapshot(agentAdminUrl);
  const nat = await readNatRules();
  const stateFile: string | undefined = snap.agent.configJson?.iptables?.stateFile ?? snap.agent.dump?.capture?.stateFile;
  const verify = nat.error || captureDisabled(snap) ? undefined : await verifyApplied(stateFile);
  const ctx: CheckContext = { snap, nat, verify, resolvConf: opts.resolvConf };
  const checks: CheckResult[] = [];
  checks.push(checkAgent(ctx));
  checks.push(checkConfig(ctx));
  const meshDns = checkMeshDns(ctx);
  checks.push(meshDns);
  checks.push(await checkDnsCapture(ctx, meshDns.status === 'FAIL' ? 'mesh-dns' : undefined));
  // the kernel looks the route up before the nat OUTPUT chain: without one nothing reaches the capture rules
  checks.push(await checkVipRoute(ctx));
  checks.push(checkOutboundCapture(ctx));
  const proxy = await checkProxy(ctx);
  checks.push(proxy);
  const proxyDown = proxy.status === 'FAIL' ? 'proxy' : undefined;
  checks.push(checkCertificates(ctx));
  for (const service of meshServices(snap)) {
    const route = checkRoute(ctx, service, proxyDown);
    checks.push(route);
    checks.push(checkCluster(ctx, service, proxyDown ?? (route.status === 'FAIL' ? `route:${service}` : undefined)));
  }
  checks.push(checkTrafficRules(ctx));
  checks.push(await checkPeerIdentity(ctx));
  checks.push(checkInboundCapture(ctx));
  const app = await checkLocalApp(ctx);
  checks.push(app);
  checks.push(await checkRegistry(ctx, app.status === 'FAIL'));
  return { ok: checks.every((c) => c.status !== 'FAIL' && c.status !== 'WARN'), time: new Date().toISOString(), agentAdminUrl, checks };
}

/** `OK    hop               evidence` and, under a line that is not OK, `      fix: ...`. */
export function renderDoctor(report: DoctorReport): string {
  const width = Math.max(...report.checks.map((c) => c.hop.length), 8) + 2;
  const lines = [`mesh-agent doctor: ${report.agentAdminUrl} at ${report.time}`];
  for (const check of report.checks) {
    lines.push(`${check.status.padEnd(5)} ${check.hop.padEnd(width)}${check.evidence}`);
    if (check.fix && check.status !== 'OK') lines.push(`${' '.repeat(6 + width)}fix: ${check.fix}`);
  }
  const counts = (['OK', 'WARN', 'FAIL'] as const).map((s) => `${report.checks.filter((c) => c.status === s).length} ${s}`).join(', ');
  const firstFail = report.checks.find((c) => c.status === 'FAIL');
  lines.push(`${counts}${firstFail ? `; first broken hop: ${firstFail.hop}` : ''}`);
  return `${lines.join('\n')}\n`;
}
