// Issue 12 item 8: spec.yaml's `protocol`. The proxy speaks HTTP only, so a port declared dubbo or tcp
// is not captured inbound (captured, its clients would hang waiting for an HTTP answer): real iptables
// in a network namespace this test creates, a raw TCP client from a second namespace, the HTTP port
// still captured, and /health and doctor saying which port is left out and why.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { tempDir } from './agent-fixture';
import { eventually } from './helpers';
import { createNsPair, inNs, natRules, nsAdminClient, skipNetnsTests, spawnInNs, writeNsAgentFiles, type NsPair, type NsProcess } from './netns';

const here = path.dirname(fileURLToPath(import.meta.url));
const agentBin = path.resolve(here, '../bin/mesh-agent.js');
const httpApp = path.join(here, 'fixtures', 'http-app.mjs');
const echoApp = path.join(here, 'fixtures', 'tcp-echo.mjs');
const tcpClient = path.join(here, 'fixtures', 'tcp-client.mjs');
const skip = skipNetnsTests();

const HTTP_PORT = 8089;
const DUBBO_PORT = 20880;
const TCP_PORT = 6379;

describe.skipIf(skip)('non-HTTP ports of spec.yaml with real iptables in a network namespace', { timeout: 240_000 }, () => {
  let ns: NsPair;
  let dir: string;
  let baseline: string;
  let agent: NsProcess;
  const processes: NsProcess[] = [];
  const { curlIn, admin } = nsAdminClient(() => ns.a);
  const start = (where: string, cmd: string, args: string[]) => {
    const p = spawnInNs(where, cmd, args);
    processes.push(p);
    return p;
  };

  beforeAll(async () => {
    ns = await createNsPair('proto', 79);
    dir = tempDir('mesh-agent-protocols-');
    const ports = [{ targetPort: HTTP_PORT, protocol: 'http' }, { targetPort: DUBBO_PORT, protocol: 'dubbo' }, { targetPort: TCP_PORT, protocol: 'tcp' }];
    const { config } = writeNsAgentFiles(dir, { nodeIp: ns.ipA, services: [{ name: 'user', ports, healthCheck: { path: '/health' } }], registry: [], dnsUpstream: `${ns.ipB}:53` });
    fs.writeFileSync(path.join(dir, 'agent.yaml'), stringify(config));
    baseline = await natRules(ns.a);
    const web = start(ns.a, process.execPath, [httpApp, 'user-a', String(HTTP_PORT)]);
    const echo = start(ns.a, process.execPath, [echoApp, String(DUBBO_PORT), String(TCP_PORT)]);
    await eventually(() => web.output().includes('listening') && echo.output().split('listening').length === 3, 'the applications');
    agent = start(ns.a, process.execPath, [agentBin, 'start', '--config', path.join(dir, 'agent.yaml')]);
    // registered = every port healthy: the dubbo and tcp ports by a TCP connect, not the HTTP path
    await eventually(async () => (await admin('/status').catch(() => '')).trim() === '<SERVICE_REGISTERED>', '<SERVICE_REGISTERED>', 60_000).catch((err) => {
      throw new Error(`${err.message}\nagent output:\n${agent.output()}`);
    });
  });

  afterAll(async () => {
    for (const p of processes.reverse()) await p.stop('SIGKILL').catch(() => undefined);
    await ns?.remove();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('captures only the http port: ISTIO_INBOUND has 8089 and neither 20880 nor 6379', async () => {
    const rules = await natRules(ns.a);
    expect(rules).toMatch(new RegExp(`-A ISTIO_INBOUND -d ${ns.ipA.replace(/\./g, '\\.')}/32 -p tcp -m tcp --dport ${HTTP_PORT} -j ISTIO_REDIRECT`));
    expect(rules).not.toMatch(new RegExp(`--dport ${DUBBO_PORT}\\b`));
    expect(rules).not.toMatch(new RegExp(`--dport ${TCP_PORT}\\b`));
  });

  it('a raw TCP client in another namespace reaches the app on the dubbo and tcp ports (bytes echoed, no timeout)', async () => {
    for (const port of [DUBBO_PORT, TCP_PORT]) {
      const message = `ping ${port}: a dubbo or redis frame, no HTTP\n`;
      expect(await inNs(ns.b, process.execPath, [tcpClient, ns.ipA, String(port), message, '5000'])).toBe(message);
    }
  });

  it('the http port still goes through the proxy (in# cluster), the others have no inbound cluster', async () => {
    expect(await curlIn(ns.b, [`http://${ns.ipA}:${HTTP_PORT}/from-b`])).toMatch(/^user-a GET \/from-b/);
    const clusters = await curlIn(ns.a, ['127.0.0.1:15000/clusters']);
    expect(clusters.split('\n').some((l) => l.startsWith(`in#${HTTP_PORT}#user::`) && /::rq_total::[1-9]/.test(l))).toBe(true);
    expect(clusters).not.toContain(`in#${DUBBO_PORT}#`);
    expect(clusters).not.toContain(`in#${TCP_PORT}#`);
  });

  it('/health stays 200 and warns which port is not captured and why; doctor says the same', async () => {
    const code = (await curlIn(ns.a, ['-o', '/dev/null', '-w', '%{http_code}', '127.0.0.1:15020/health'])).trim();
    expect(code).toBe('200');
    const health = JSON.parse(await admin('/health'));
    expect(health.healthy).toBe(true);
    expect(health.warnings).toEqual([
      `port ${DUBBO_PORT} of user is not captured: protocol dubbo: the proxy speaks HTTP only until the TCP proxy exists; traffic to port ${DUBBO_PORT} goes to the app directly, unmeshed`,
      `port ${TCP_PORT} of user is not captured: protocol tcp: the proxy speaks HTTP only until the TCP proxy exists; traffic to port ${TCP_PORT} goes to the app directly, unmeshed`,
    ]);
    expect(health.uncapturedPorts.map((u: { port: number; protocol: string }) => `${u.port}/${u.protocol}`)).toEqual([`${DUBBO_PORT}/dubbo`, `${TCP_PORT}/tcp`]);

    const doctor = await inNs(ns.a, process.execPath, [agentBin, 'doctor', '--json']).catch((err: { stdout?: string }) => err.stdout ?? '');
    const checks: Array<{ hop: string; status: string; evidence: string }> = JSON.parse(doctor).checks;
    const inbound = checks.find((c) => c.hop === 'inbound-capture')!;
    expect(inbound.status).toBe('OK');
    expect(inbound.evidence).toContain(`for ${HTTP_PORT};`);
    expect(inbound.evidence).toContain(`port ${DUBBO_PORT} of user is not captured: protocol dubbo`);
    expect(inbound.evidence).toContain(`port ${TCP_PORT} of user is not captured: protocol tcp`);
    expect(checks.find((c) => c.hop === 'local-app')!.status).toBe('OK');
  });

  it('SIGTERM leaves the nat table as it was', async () => {
    expect((await agent.stop('SIGTERM')).code).toBe(0);
    expect(await natRules(ns.a)).toBe(baseline);
  });
});
