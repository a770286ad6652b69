// Doctor, trace and the home page against the real demo (iptables capture deliberately off, config
// built in): no false alarms. Everything from outside: the demo and the CLI run as processes, the page
// is rendered in headless Chromium. Ports are free ones (the usual ones may be taken on this machine).
// mesh-dns forwards to a dnsmasq the test starts (never to this machine's own resolver).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsmasq, type Dnsmasq } from './dnsmasq';
import { freePort } from './etcd-server';
import { eventually } from './helpers';
import { pidAlive } from './netns';

const exec = promisify(execFile);
const agentBin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../bin/mesh-agent.js');
const NOT_USED = 'not used: iptables capture is disabled in the config (iptables.enabled: false); the application calls the proxy explicitly (curl -x 127.0.0.1:';

/** Runs the CLI as a process; resolves with its exit code and output (a non-zero exit is not a throw). */
async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [agentBin, ...args], { timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err: any) {
    if (typeof err.code !== 'number') throw err;
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

async function getText(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.text() };
}

describe('diagnostics against the demo (capture disabled, built-in config)', { timeout: 180_000 }, () => {
  let demo: ChildProcess | undefined;
  let out = '';
  let admin = '';
  let proxyPort = 0;
  let dnsmasq: Dnsmasq | undefined;

  beforeAll(async () => {
    dnsmasq = await startDnsmasq({ 'outside.test': '198.18.5.5' });
    const ports = { admin: await freePort(), proxy: await freePort(), proxyAdmin: await freePort(), dns: await freePort(), dnsAdmin: await freePort(), app: await freePort() };
    proxyPort = ports.proxy;
    admin = `http://127.0.0.1:${ports.admin}`;
    demo = spawn(
      process.execPath,
      [agentBin, 'demo', '--admin-port', String(ports.admin), '--proxy-port', String(ports.proxy), '--proxy-admin-port', String(ports.proxyAdmin), '--dns-port', String(ports.dns), '--dns-admin-port', String(ports.dnsAdmin), '--app-port', String(ports.app), '--dns-upstream', dnsmasq.upstream],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    demo.stdout!.on('data', (d) => (out += d));
    demo.stderr!.on('data', (d) => (out += d));
    await eventually(() => {
      if (demo!.exitCode !== null) throw new Error(`the demo exited with ${demo!.exitCode}`);
      return out.includes('Press Ctrl-C');
    }, 'the demo to print what to try', 90_000).catch((err) => {
      throw new Error(`${err.message}\n${out}`);
    });
    // the demo is up once its own service is registered
    await eventually(async () => (await getText(`${admin}/status`)).body.trim() === '<SERVICE_REGISTERED>', 'the demo to register', 60_000);
  });

  afterAll(async () => {
    if (demo?.pid && pidAlive(demo.pid)) {
      const exited = new Promise((resolve) => demo!.once('exit', resolve));
      demo.kill('SIGINT');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 20_000))]);
      if (pidAlive(demo.pid)) demo.kill('SIGKILL');
    }
    dnsmasq?.stop();
  });

  it('the agent says capture is disabled (what the doctor reads)', async () => {
    const health = JSON.parse((await getText(`${admin}/health`)).body);
    expect(health.capture.mode).toBe('disabled');
    expect(JSON.parse((await getText(`${admin}/config/agent`)).body).config.iptables.enabled).toBe(false);
  });

  it('doctor --json: every hop OK, the capture hops "not used", the config built in, exit 0', async () => {
    const run = await cli('doctor', '--json', '--admin', admin);
    const report = JSON.parse(run.stdout);
    const notOk = report.checks.filter((c: any) => c.status !== 'OK');
    expect(notOk, run.stdout).toEqual([]);
    expect(report.ok).toBe(true);
    expect(run.code).toBe(0);
    const byHop = new Map<string, any>(report.checks.map((c: any) => [c.hop, c]));
    for (const hop of ['dns-capture', 'vip-route', 'outbound-capture', 'inbound-capture']) {
      expect(byHop.get(hop)?.evidence).toBe(`${NOT_USED}${proxyPort} ...)`);
    }
    expect(byHop.get('config')?.evidence).toMatch(/^built-in demo configuration/);
    // the hops that are in use are still checked for real
    for (const hop of ['agent', 'mesh-dns', 'proxy', 'route:order', 'cluster:order', 'local-app', 'registry']) expect(byHop.has(hop), hop).toBe(true);
    expect(byHop.get('cluster:order').evidence).toMatch(/2\/2 healthy/);
    // each cluster with the protocol the proxy speaks to its endpoints (issue 14)
    expect(byHop.get('cluster:order').evidence).toMatch(/^out#\d+#order \(http1\): 2\/2 healthy/);
    expect(byHop.get('cluster:inventory').evidence).toMatch(/^out#\d+#inventory \(http2\): 1\/1 healthy/);
    // the demo runs with mTLS on: user's certificate served by the proxy; the order demo apps have no identity
    expect(byHop.get('certificates')).toMatchObject({ status: 'OK' });
    expect(byHop.get('certificates').evidence).toMatch(/^user: spiffe:\/\/cluster\.local\/ns\/default\/sa\/user, serial [0-9a-f]+, 1 day\(s\) left .*served by the proxy$/);
    expect(byHop.get('peer-identity')).toMatchObject({ status: 'OK', evidence: expect.stringMatching(/^no peer service registered an identity/) });
    expect(byHop.get('mesh-dns').evidence).toContain(`upstream ${dnsmasq!.upstream} reachable`);
  });

  it('doctor (text) prints no FAIL and exits 0', async () => {
    const run = await cli('doctor', '--admin', admin);
    expect(run.stdout).not.toMatch(/^FAIL/m);
    // 12 hops, since issue 13 the demo's mTLS: certificates and peer-identity, since issue 14 the gRPC peer: route:inventory and cluster:inventory,
    // since issue 15 the TCP peer: route:clock (its VIP:port, no virtual host) and cluster:clock; since issue 16 the traffic rules (rules)
    expect(run.stdout).toMatch(/19 OK, 0 WARN, 0 FAIL/);
    expect(run.stdout).toMatch(/^OK +rules +1 service rule in force: order from file registry \S+: beta-users: match header x-user exact beta -> v2 \| canary: every request -> v1 80%, v2 20%$/m);
    expect(run.stdout).toMatch(/^OK +route:clock +TCP route 240\.240\.\d+\.\d+:(\d+) -> out#\1#clock \(bytes, by original destination\)$/m);
    expect(run.stdout).toMatch(/^OK +cluster:clock +out#\d+#clock \(tcp\): 1\/1 healthy/m);
    expect(run.code).toBe(0);
  });

  it('trace picks the proxy when capture is disabled; --via capture says why not and suggests --via proxy', async () => {
    const auto = await cli('trace', 'http://order/', '--json', '--admin', admin);
    const report = JSON.parse(auto.stdout);
    expect(report.via).toBe('proxy');
    expect(report.ok).toBe(true);
    expect(report.status).toBe(200);
    expect(report.hops[0].detail).toContain('iptables capture is disabled in the config');
    expect(auto.code).toBe(0);
    // the demo's traffic rule, from the proxy's x-mesh-route answer: rule canary, one of the two subsets
    expect(report.hops.find((h: { hop: string }) => h.hop === 'rule')?.detail).toMatch(/^rule canary: every request -> v1 80%, v2 20% \(from file registry \S+\); cluster out#\d+#order#v[12] \(subset v[12]\)$/);

    const forced = await cli('trace', 'http://order/', '--via', 'capture', '--admin', admin);
    expect(forced.code).toBe(1);
    expect(forced.stdout).toContain(`FAIL capture   ${NOT_USED}${proxyPort} ...)`);
    expect(forced.stdout).toContain('--via proxy');
  });

  it('the gRPC peer inventory: listed with protocol http2 in the summary (the home page\'s services table), http1 for order', async () => {
    const summary = JSON.parse((await getText(`${admin}/diagnostics/summary`)).body);
    const protocolOf = (name: string) => summary.services.find((v: any) => v.name === name)?.protocol;
    expect([protocolOf('inventory'), protocolOf('order')]).toEqual(['http2', 'http1']);
  });

  it('trace reaches inventory through the proxy over HTTP/2 upstream and names its cluster\'s protocol', async () => {
    const port = /gRPC peer "inventory" \(127\.0\.0\.1:(\d+)\)/.exec(out)?.[1];
    expect(port, out).toBeDefined();
    const run = await cli('trace', `http://inventory:${port}/`, '--json', '--admin', admin);
    const report = JSON.parse(run.stdout);
    expect(report.hops.find((h: any) => h.hop === 'route').detail).toBe(`virtual host inventory -> out#${port}#inventory (http2)`);
    expect(report.ok, run.stdout).toBe(true);
    expect(report.status).toBe(200);
  });

  it('the printed gRPC call to inventory answers through the proxy (h2c downstream, HTTP/2 upstream)', async () => {
    const line = out.split('\n').findIndex((l) => l.includes('curl -s --http2-prior-knowledge'));
    expect(line, out).toBeGreaterThan(0);
    // the command spans two printed lines joined by a backslash; the comment after # is not shell
    const command = `${out.split('\n')[line].trim().replace(/\\$/, '')} ${out.split('\n')[line + 1].replace(/#.*$/, '').trim()}`;
    const { stdout } = await exec('sh', ['-c', command], { timeout: 20_000 });
    expect(stdout).toBe('in stock: apples\n');
  });

  it('the summary has no FAIL, and its latest errors are the components\' own, not doctor findings', async () => {
    const summary = JSON.parse((await getText(`${admin}/diagnostics/summary`)).body);
    expect(summary.checks.filter((c: any) => c.status !== 'OK')).toEqual([]);
    expect(summary.errors.filter((e: any) => e.component === 'doctor')).toEqual([]);
    const hops = summary.checks.map((c: any) => `${c.hop}:`);
    expect(summary.errors.filter((e: any) => hops.some((h: string) => e.text.startsWith(h)))).toEqual([]);

    // a real component error: mesh-dns killed, the agent's supervisor records its exit and restarts it
    const health = JSON.parse((await getText(`${admin}/health`)).body);
    const dnsPid: number = health.components['mesh-dns'].pid;
    process.kill(dnsPid, 'SIGKILL');
    const withError = await eventually(async () => {
      const s = JSON.parse((await getText(`${admin}/diagnostics/summary`)).body);
      return s.errors.some((e: any) => e.component === 'mesh-dns' && /exited \(signal SIGKILL\)/.test(e.text)) ? s : undefined;
    }, 'the mesh-dns exit in the latest errors', 60_000);
    expect(withError.errors.filter((e: any) => e.component === 'doctor')).toEqual([]);
    // and the sidecar recovers: doctor all OK again
    await eventually(async () => (await cli('doctor', '--json', '--admin', admin)).code === 0, 'doctor OK after the restart', 90_000, 1_000);
  });

  it('the home page, rendered in headless Chromium, shows no FAIL and no doctor findings among the latest errors', async () => {
    const page200 = await getText(`${admin}/`);
    expect(page200.status).toBe(200);
    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
    try {
      const page = await browser.newPage();
      await page.goto(`${admin}/`);
      await page.waitForFunction("document.querySelectorAll('#checks-table tr').length > 5", undefined, { timeout: 60_000 });
      const checks = await page.locator('#checks-table').innerText();
      expect(checks).toContain('dns-capture');
      expect(checks).toContain('built-in demo configuration');
      expect(checks).not.toContain('FAIL');
      const errors = await page.locator('#errors-table').innerText();
      expect(errors).not.toMatch(/doctor|rule\(s\) missing|no longer valid/);
      expect(await page.locator('main').innerText()).not.toMatch(/\bFAIL\b/);
      // the gRPC peer in the services table, its cluster's protocol beside it (issue 14)
      const services = await page.locator('#services-table').innerText();
      expect(services).toMatch(/inventory\s+out#\d+#inventory\s+http2/);
      expect(services).toMatch(/order\s+out#\d+#order\s+http1/);
      // the demo's traffic rule (issue 16): the 80/20 split between order's versions
      const rules = await page.locator('#rules-table').innerText();
      expect(rules).toContain('canary: every request -> v1 80%, v2 20%');
      expect(rules).toMatch(/v2 \(version=v2\): 1\/1 healthy/);
    } finally {
      await browser.close();
    }
  });
});
