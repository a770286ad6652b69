// The admin port: the source document's /help byte for byte, and what each route reports.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AdminServer } from '@mesh-agent/admin-kit';
import { createMeshDns, startMeshDnsAdmin, type MeshDns } from '../src/index';
import dnsPacket from 'dns-packet';
import { dig, freePort, quietLogger, rawUdp, startDnsmasq, tempDir, type Dnsmasq } from './helpers';

const execFileAsync = promisify(execFile);

/** Verbatim from the source document (tsf-mesh-local-proxy-ops.md, "curl 127.0.0.1:15021/help"). */
const SOURCE_HELP =
  'admin commands are:\n' +
  '\tGET /health: print out the health info for mesh-dns\n' +
  '\tGET /config_dump: print out all of the mesh-dns runtime configs\n' +
  '\tGET /latest_error: print out the latest error info\n' +
  '\tGET /help: print out list of admin commands\n' +
  '\tGET /version: print out version info\n' +
  '\tGET /status: print out status info\n' +
  '\tPUT /logging/{scope}/{level}: dynamic change logging level, scope can be admin/default/healthz/model, level can be error/none/debug/info/warn\n';

describe('mesh-dns admin', () => {
  let upstream: Dnsmasq;
  let deadPort: number;
  let dns: MeshDns;
  let admin: AdminServer;
  let base: string;
  let dnsPort: number;

  beforeAll(async () => {
    upstream = await startDnsmasq();
    deadPort = await freePort();
    dns = createMeshDns({
      listen: { port: 0 },
      services: [{ name: 'order' }, { name: 'user', namespace: 'prod', vip: '240.240.0.7' }],
      upstreams: [`127.0.0.1:${upstream.port}`, `127.0.0.1:${deadPort}`],
      upstreamTimeoutMs: 500,
      logger: quietLogger(),
    });
    dnsPort = (await dns.start()).udp.port;
    admin = await startMeshDnsAdmin(dns, { port: 0 });
    base = `http://127.0.0.1:${admin.address!.port}`;
  });
  afterAll(async () => {
    await admin?.close();
    await dns?.close();
    await upstream?.stop();
  });

  it('binds 127.0.0.1 and prints exactly the source document /help', async () => {
    expect(admin.address!.address).toBe('127.0.0.1');
    const res = await fetch(`${base}/help`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(SOURCE_HELP);
    const { stdout } = await execFileAsync('curl', ['-s', `${base}/help`]);
    expect(stdout).toBe(SOURCE_HELP);
  });

  it('dumps the hosted names with the answer each gets, the upstreams and the cache', async () => {
    await dig(dnsPort, 'www.ext.test');
    await dig(dnsPort, 'www.ext.test');
    const dump = (await (await fetch(`${base}/config_dump`)).json()) as Record<string, any>;
    const names = Object.fromEntries(dump.hostedNames.map((n: { name: string; answer: string }) => [n.name, n.answer]));
    expect(names).toMatchObject({
      'order.': 'A 240.240.0.1',
      'order.default.': 'A 240.240.0.1',
      'order.default.svc.': 'A 240.240.0.1',
      'order.default.svc.cluster.local.': 'A 240.240.0.1',
      'user.': 'A 240.240.0.7',
      'user.prod.svc.cluster.local.': 'A 240.240.0.7',
    });
    expect(dump.hostedNames).toHaveLength(10); // 5 forms each: name, name.ns, name.ns.svc, name.<suffix>, name.ns.<suffix>
    expect(dump.ttl).toBe(30);
    expect(dump.meshVip).toBe('240.240.0.1');
    expect(dump.upstreams.servers).toEqual([`127.0.0.1:${upstream.port}`, `127.0.0.1:${deadPort}`]);
    expect(dump.upstreams.source).toBe('config');
    expect(dump.cache.entries).toBeGreaterThanOrEqual(1);
    expect(dump.cache.hits).toBeGreaterThanOrEqual(1);
    const cached = dump.cache.entriesSample.find((e: { key: string }) => e.key.startsWith('www.ext.test|1|1|'));
    expect(cached.rcode).toBe('NOERROR');
    expect(cached.answers).toEqual([expect.stringMatching(/^www\.ext\.test\. \d+ A 198\.18\.5\.5$/)]);
    expect(dump.listeners.udp).toBe(`127.0.0.1:${dnsPort}`);
    expect(dump.stats.forwarded).toBeGreaterThanOrEqual(1);
  });

  it('reports health: listeners and the reachability of each upstream', async () => {
    const res = await fetch(`${base}/health`);
    expect(res.status).toBe(200);
    const health = (await res.json()) as Record<string, any>;
    expect(health.healthy).toBe(true);
    expect(health.listeners).toEqual({ udp: `127.0.0.1:${dnsPort}`, tcp: `127.0.0.1:${dnsPort}` });
    const byName = Object.fromEntries(health.upstreams.map((u: { upstream: string }) => [u.upstream, u]));
    expect(byName[`127.0.0.1:${upstream.port}`].reachable).toBe(true);
    expect(byName[`127.0.0.1:${deadPort}`].reachable).toBe(false);
    expect(byName[`127.0.0.1:${deadPort}`].error).toMatch(/refused|no answer/);
    // the probe counts for each upstream's health, as a forwarded query does
    expect(byName[`127.0.0.1:${upstream.port}`].healthy).toBe(true);
    expect(byName[`127.0.0.1:${deadPort}`]).toMatchObject({ healthy: false, lastReason: 'refused', lastErrno: 'ECONNREFUSED' });
  });

  it('prints status, version and the latest error', async () => {
    expect(await (await fetch(`${base}/status`)).text()).toBe('<SERVING>\n');
    const version = (await (await fetch(`${base}/version`)).json()) as Record<string, string>;
    expect(version.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(version.component).toBe('mesh-dns');
    dns.updateUpstreams([`127.0.0.1:${deadPort}`]);
    try {
      expect((await dig(dnsPort, 'nothing.example.test')).status).toBe('SERVFAIL');
      const latest = (await (await fetch(`${base}/latest_error`)).json()) as Record<string, string>;
      expect(latest.code).toBe('MESH_DNS_UPSTREAMS_FAILED');
      expect(latest.message).toMatch(/nothing\.example\.test/);
      expect(Date.parse(latest.time)).not.toBeNaN();
    } finally {
      dns.updateUpstreams([`127.0.0.1:${upstream.port}`, `127.0.0.1:${deadPort}`]);
    }
  });

  it('changes a logging scope with PUT, refuses GET and unknown scopes or levels', async () => {
    const ok = await fetch(`${base}/logging/model/debug`, { method: 'PUT' });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { levels: Record<string, string> }).levels.model).toBe('debug');
    expect(dns.logger.levels().model).toBe('debug');
    expect((await fetch(`${base}/logging/model/info`)).status).toBe(405);
    const badScope = await fetch(`${base}/logging/ads/info`, { method: 'PUT' });
    expect(badScope.status).toBe(400);
    expect(await badScope.text()).toMatch(/admin, default, healthz, model/);
    expect((await fetch(`${base}/logging/default/loud`, { method: 'PUT' })).status).toBe(400);
    dns.logger.setLevel('model', 'none');
  });

  it('exposes Prometheus metrics on the hidden /metrics, valid for promtool', async () => {
    await dig(dnsPort, 'order', 'AAAA');
    // local answers are timed 1 in 16: ask enough of them that some are
    for (let i = 0; i < 32; i++) {
      const answer = await rawUdp(dnsPort, dnsPacket.encode({ type: 'query', id: i, questions: [{ type: 'A', name: 'order' }] }));
      expect(answer).toBeDefined();
    }
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toMatch(/mesh_dns_queries_total\{type="AAAA",result="local_nodata"\} [1-9]/);
    expect(text).toMatch(/mesh_dns_answered_locally_total [1-9]/);
    expect(text).toMatch(/mesh_dns_forwarded_total [1-9]/);
    expect(text).toMatch(/mesh_dns_cache_hits_total [1-9]/);
    expect(text).toMatch(/mesh_dns_upstream_failures_total\{upstream="127\.0\.0\.1:\d+"\} [1-9]/);
    expect(text).toMatch(/mesh_dns_query_duration_seconds_bucket\{le="\+Inf",source="local"\} [1-9]/);
    expect(text).toMatch(/mesh_dns_query_duration_seconds_count\{source="upstream"\} [1-9]/);
    const dir = tempDir('promtool');
    const file = path.join(dir, 'metrics.txt');
    fs.writeFileSync(file, text);
    try {
      // promtool exits non-zero on a parse error or a lint problem; execFile then rejects
      const { stdout, stderr } = await execFileAsync('sh', ['-c', `promtool check metrics < ${file}`]);
      expect(`${stdout}${stderr}`.trim()).toBe('');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('answers 404 with the help text for an unknown path', async () => {
    const res = await fetch(`${base}/nope`);
    expect(res.status).toBe(404);
    expect(await res.text()).toContain(SOURCE_HELP);
  });
});
