// Issue 14: spec.yaml ports declared `grpc` or `http2` are captured inbound and proxied over HTTP/2,
// and registered with metadata.protocol so that peers' proxies speak HTTP/2 to them. Real iptables
// in namespaces this test creates, an HTTP/2-only application (h2c, no HTTP/1.1), real curl
// --http2-prior-knowledge from the peer namespace.
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
const h2App = path.join(here, 'fixtures', 'h2-app.mjs');
const skip = skipNetnsTests();

const HTTP_PORT = 8089;
const GRPC_PORT = 50051;
const INVENTORY_PORT = 50052;

describe.skipIf(skip)('http2 and grpc ports of spec.yaml with real iptables in a network namespace (issue 14)', { timeout: 240_000 }, () => {
  let ns: NsPair;
  let dir: string;
  let runDir: string;
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
    ns = await createNsPair('h2p', 80);
    dir = tempDir('mesh-agent-http2-ports-');
    const ports = [{ targetPort: HTTP_PORT, protocol: 'http' }, { targetPort: GRPC_PORT, protocol: 'grpc' }];
    // a peer gRPC service as another agent would register it (metadata.protocol from its spec.yaml)
    const registry = [{ name: 'inventory', instances: [{ id: 'inventory-1', address: ns.ipB, port: INVENTORY_PORT, metadata: { protocol: 'grpc' } }] }];
    const files = writeNsAgentFiles(dir, { nodeIp: ns.ipA, services: [{ name: 'user', ports, healthCheck: { path: '/health' } }], registry, dnsUpstream: `${ns.ipB}:53` });
    runDir = files.runDir;
    fs.writeFileSync(path.join(dir, 'agent.yaml'), stringify(files.config));
    baseline = await natRules(ns.a);
    const web = start(ns.a, process.execPath, [httpApp, 'user-a', String(HTTP_PORT)]);
    const grpc = start(ns.a, process.execPath, [h2App, 'user-grpc', String(GRPC_PORT)]);
    const inventory = start(ns.b, process.execPath, [h2App, 'inventory-b', String(INVENTORY_PORT)]);
    await eventually(() => [web, grpc, inventory].every((p) => p.output().includes('listening')), 'the applications');
    agent = start(ns.a, process.execPath, [agentBin, 'start', '--config', path.join(dir, 'agent.yaml')]);
    // registered = every port healthy: the grpc port by a TCP connect (an HTTP/1.1 GET of /health would fail on it)
    await eventually(async () => (await admin('/status').catch(() => '')).trim() === '<SERVICE_REGISTERED>', '<SERVICE_REGISTERED>', 60_000).catch((err) => {
      throw new Error(`${err.message}\nagent output:\n${agent.output()}`);
    });
  });

  afterAll(async () => {
    for (const p of processes.reverse()) await p.stop('SIGKILL').catch(() => undefined);
    await ns?.remove();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('captures the grpc port beside the http port: ISTIO_INBOUND redirects both', async () => {
    const rules = await natRules(ns.a);
    for (const port of [HTTP_PORT, GRPC_PORT]) {
      expect(rules).toMatch(new RegExp(`-A ISTIO_INBOUND -d ${ns.ipA.replace(/\./g, '\\.')}/32 -p tcp -m tcp --dport ${port} -j ISTIO_REDIRECT`));
    }
  });

  it('registers the grpc port with metadata.protocol grpc and /health has no "not captured" warning', async () => {
    const health = JSON.parse(await admin('/health'));
    expect(health.healthy).toBe(true);
    expect(health.warnings ?? []).toEqual([]);
    expect(health.uncapturedPorts ?? []).toEqual([]);
    const byPort = Object.fromEntries(health.registry.registered.map((r: { port: number; metadata: Record<string, string> }) => [r.port, r.metadata.protocol]));
    expect(byPort).toEqual({ [HTTP_PORT]: 'http', [GRPC_PORT]: 'grpc' });
  });

  it('tells the proxy to speak HTTP/2 to the grpc port and to the peer registered as grpc, HTTP/1.1 to the http port', async () => {
    const bootstrap = JSON.parse(fs.readFileSync(path.join(runDir, 'proxy-bootstrap.json'), 'utf8'));
    const protocolOf = (name: string) => bootstrap.clusters.find((c: { name: string }) => c.name === name)?.protocol;
    expect(protocolOf(`in#${HTTP_PORT}#user`)).toBe('http1');
    expect(protocolOf(`in#${GRPC_PORT}#user`)).toBe('http2');
    expect(protocolOf(`out#${INVENTORY_PORT}#inventory`)).toBe('http2');
  });

  // needs the proxy's downstream HTTP/2 (H2D) and upstream HTTP/2 (H2U)
  it('curl --http2-prior-knowledge from the peer namespace reaches the HTTP/2-only app through the proxy (in# cluster counts it)', async () => {
    const out = await curlIn(ns.b, ['--http2-prior-knowledge', '-sS', '-D', '-', `http://${ns.ipA}:${GRPC_PORT}/from-b`]);
    expect(out).toMatch(/^HTTP\/2 200/);
    expect(out).toContain(`user-grpc GET /from-b authority=${ns.ipA}:${GRPC_PORT} over HTTP/2`);
    const clusters = await curlIn(ns.a, ['127.0.0.1:15000/clusters']);
    expect(clusters.split('\n').some((l) => l.startsWith(`in#${GRPC_PORT}#user::`) && /::rq_total::[1-9]/.test(l))).toBe(true);
  });

  it('doctor: inbound-capture names both ports, local-app OK', async () => {
    const doctor = await inNs(ns.a, process.execPath, [agentBin, 'doctor', '--json']).catch((err: { stdout?: string }) => err.stdout ?? '');
    const checks: Array<{ hop: string; status: string; evidence: string }> = JSON.parse(doctor).checks;
    const inbound = checks.find((c) => c.hop === 'inbound-capture')!;
    expect(inbound.status).toBe('OK');
    expect(inbound.evidence).toContain(`for ${HTTP_PORT}, ${GRPC_PORT}`);
    expect(inbound.evidence).not.toContain('not captured');
    expect(checks.find((c) => c.hop === 'local-app')!.status).toBe('OK');
  });

  it('SIGTERM leaves the nat table as it was', async () => {
    expect((await agent.stop('SIGTERM')).code).toBe(0);
    expect(await natRules(ns.a)).toBe(baseline);
  });
});
