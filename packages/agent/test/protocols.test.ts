// Issue 12 item 8, changed by issue 15: spec.yaml's `protocol`. Until issue 15 a port declared dubbo
// or tcp was left out of the capture (the proxy spoke HTTP only); now every port is captured and a
// non-HTTP one is carried as bytes by the proxy's TCP proxy, a server-first one included. Outbound, a
// registry service whose instances registered a TCP protocol is reached through its own VIP and
// port. Real iptables in a network namespace this test creates, raw TCP clients from a second one.
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
const greeterApp = path.join(here, 'fixtures', 'greeter.mjs');
const skip = skipNetnsTests();

const HTTP_PORT = 8089;
const DUBBO_PORT = 20880;
const TCP_PORT = 6379;
const MYSQL_PORT = 3306;
// outbound: a TCP service in the other namespace, called on its own VIP
const CACHE_VIP = '240.240.7.7';
const CACHE_PORT = 7379;

describe.skipIf(skip)('non-HTTP ports of spec.yaml through the TCP proxy with real iptables in a network namespace', { timeout: 240_000 }, () => {
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
    const ports = [{ targetPort: HTTP_PORT, protocol: 'http' }, { targetPort: DUBBO_PORT, protocol: 'dubbo' }, { targetPort: TCP_PORT, protocol: 'tcp' }, { targetPort: MYSQL_PORT, protocol: 'mysql' }];
    const instance = (id: string, port: number) => ({ id, address: ns.ipB, port, healthy: true, weight: 1, metadata: { node: id, protocol: 'tcp' } });
    const registry = [{ name: 'cache', namespace: 'default', vip: CACHE_VIP, instances: [instance('cache-b', CACHE_PORT)] }];
    const { config } = writeNsAgentFiles(dir, { nodeIp: ns.ipA, services: [{ name: 'user', ports, healthCheck: { path: '/health' } }], registry, dnsUpstream: `${ns.ipB}:53` });
    fs.writeFileSync(path.join(dir, 'agent.yaml'), stringify(config));
    baseline = await natRules(ns.a);
    const web = start(ns.a, process.execPath, [httpApp, 'user-a', String(HTTP_PORT)]);
    const echo = start(ns.a, process.execPath, [echoApp, String(DUBBO_PORT), String(TCP_PORT)]);
    const greeter = start(ns.a, process.execPath, [greeterApp, 'user-a-mysql', String(MYSQL_PORT)]);
    const cache = start(ns.b, process.execPath, [echoApp, String(CACHE_PORT)]);
    await eventually(() => web.output().includes('listening') && echo.output().split('listening').length === 3 && greeter.output().includes('listening') && cache.output().includes('listening'), 'the applications');
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

  it('captures every port: ISTIO_INBOUND has 8089, 20880, 6379 and 3306', async () => {
    const rules = await natRules(ns.a);
    for (const port of [HTTP_PORT, DUBBO_PORT, TCP_PORT, MYSQL_PORT]) {
      expect(rules).toMatch(new RegExp(`-A ISTIO_INBOUND -d ${ns.ipA.replace(/\./g, '\\.')}/32 -p tcp -m tcp --dport ${port} -j ISTIO_REDIRECT`));
    }
  });

  it('a raw TCP client in another namespace reaches the app on the dubbo and tcp ports through the proxy (bytes echoed, counted by its in# cluster)', async () => {
    for (const port of [DUBBO_PORT, TCP_PORT]) {
      const message = `ping ${port}: a dubbo or redis frame, no HTTP\n`;
      expect(await inNs(ns.b, process.execPath, [tcpClient, ns.ipA, String(port), message, '5000'])).toBe(message);
    }
    const stats = await curlIn(ns.a, ['127.0.0.1:15000/stats']);
    for (const port of [DUBBO_PORT, TCP_PORT]) expect(stats).toMatch(new RegExp(`^cluster\\.in#${port}#user\\.upstream_cx_total: [1-9]`, 'm'));
  });

  it('a server-first port (mysql) greets a client that sends nothing: no wait for client bytes', async () => {
    expect(await inNs(ns.b, process.execPath, [tcpClient, ns.ipA, String(MYSQL_PORT), '', '5000'])).toBe('220 user-a-mysql ready\n');
    expect(await curlIn(ns.a, ['127.0.0.1:15000/stats'])).toMatch(new RegExp(`^cluster\\.in#${MYSQL_PORT}#user\\.upstream_cx_total: [1-9]`, 'm'));
  });

  it('the http port still goes through the proxy as HTTP (in# cluster rq_total)', async () => {
    expect(await curlIn(ns.b, [`http://${ns.ipA}:${HTTP_PORT}/from-b`])).toMatch(/^user-a GET \/from-b/);
    const clusters = await curlIn(ns.a, ['127.0.0.1:15000/clusters']);
    expect(clusters.split('\n').some((l) => l.startsWith(`in#${HTTP_PORT}#user::`) && /::rq_total::[1-9]/.test(l))).toBe(true);
  });

  it('outbound: a raw TCP client in the agent namespace reaches a registry TCP service by its VIP and port (outboundTcp, counted by out#PORT#cache)', async () => {
    const message = 'ping cache: a redis frame to its own VIP\n';
    expect(await inNs(ns.a, process.execPath, [tcpClient, CACHE_VIP, String(CACHE_PORT), message, '5000'])).toBe(message);
    const stats = await curlIn(ns.a, ['127.0.0.1:15000/stats']);
    expect(stats).toMatch(new RegExp(`^cluster\\.out#${CACHE_PORT}#cache\\.upstream_cx_total: [1-9]`, 'm'));
    // /config_dump shows the route: a tcp_proxy filter chain matching the VIP, to the cluster
    const dump = await curlIn(ns.a, ['127.0.0.1:15000/config_dump']);
    expect(dump).toContain(`${CACHE_VIP}_${CACHE_PORT}`);
    expect(dump).toContain(`out#${CACHE_PORT}#cache`);
  });

  // the warning for a TCP service without a VIP: bootstrap.test.ts (per-service VIPs give every service one here)
  it('/health stays 200 with no warning (every port captured); doctor sees every port captured', async () => {
    const code = (await curlIn(ns.a, ['-o', '/dev/null', '-w', '%{http_code}', '127.0.0.1:15020/health'])).trim();
    expect(code).toBe('200');
    const health = JSON.parse(await admin('/health'));
    expect(health.healthy).toBe(true);
    expect(health.warnings).toEqual([]);
    expect(health.uncapturedPorts).toEqual([]);

    const doctor = await inNs(ns.a, process.execPath, [agentBin, 'doctor', '--json']).catch((err: { stdout?: string }) => err.stdout ?? '');
    const checks: Array<{ hop: string; status: string; evidence: string }> = JSON.parse(doctor).checks;
    const inbound = checks.find((c) => c.hop === 'inbound-capture')!;
    expect(inbound.status).toBe('OK');
    expect(inbound.evidence).toContain(`for ${HTTP_PORT}, ${DUBBO_PORT}, ${TCP_PORT}, ${MYSQL_PORT}`);
    expect(inbound.evidence).not.toContain('not captured');
    expect(checks.find((c) => c.hop === 'local-app')!.status).toBe('OK');
  });

  it('SIGTERM leaves the nat table as it was', async () => {
    expect((await agent.stop('SIGTERM')).code).toBe(0);
    expect(await natRules(ns.a)).toBe(baseline);
  });
});
