// Issue 9: faults made for real on host A's sidecar; `mesh-agent doctor` names exactly the broken hop
// as FAIL with a fix, and `mesh-agent trace` names the hop where the request failed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { preflight } from './support/preflight.js';
import { nsRun, run, waitFor } from './support/exec.js';
import { createWorld, hostRules, APP_PORT, type World } from './support/world.js';
import { startApp } from './support/infra.js';
import { adminJson, appCurl, mesh, startSidecar, type Role } from './support/mesh.js';
import { GATEWAY } from './support/netns.js';

const pre = preflight();
/** Set E2E_CAPTURE_DIR to keep the text output of doctor and trace (docs/troubleshooting.md quotes it). */
const CAPTURE_DIR = process.env.E2E_CAPTURE_DIR;

interface Check { hop: string; status: 'OK' | 'WARN' | 'FAIL'; evidence: string; fix?: string }
interface Doctor { ok: boolean; checks: Check[] }
interface Trace { ok: boolean; failedHop?: string; hops: Array<{ hop: string; ok: boolean; detail: string }>; status?: number }

describe.skipIf(!pre.ok)('e2e: doctor and trace find the broken hop', () => {
  let world: World;

  async function doctor(role: Role = 'a'): Promise<{ code: number; report: Doctor }> {
    const res = await mesh(world, role, ['doctor', '--json']);
    try {
      return { code: res.code, report: JSON.parse(res.stdout) };
    } catch {
      throw new Error(`doctor did not print JSON (exit ${res.code}): ${res.stdout}\n${res.stderr}`);
    }
  }
  async function trace(url: string, role: Role = 'a', via?: 'proxy'): Promise<{ code: number; report: Trace }> {
    const res = await mesh(world, role, ['trace', url, '--json', ...(via ? ['--via', via] : [])]);
    try {
      return { code: res.code, report: JSON.parse(res.stdout) };
    } catch {
      throw new Error(`trace did not print JSON (exit ${res.code}): ${res.stdout}\n${res.stderr}`);
    }
  }
  /** Keeps the human output for the troubleshooting guide. */
  async function capture(name: string, args: string[], role: Role = 'a'): Promise<void> {
    if (!CAPTURE_DIR) return;
    mkdirSync(CAPTURE_DIR, { recursive: true });
    const res = await mesh(world, role, args);
    writeFileSync(join(CAPTURE_DIR, `${name}.txt`), `$ mesh-agent ${args.join(' ')}\n${res.stdout}${res.stderr}(exit ${res.code})\n`);
  }
  const fails = (report: Doctor) => report.checks.filter((c) => c.status === 'FAIL').map((c) => c.hop);
  async function healthy(): Promise<Doctor> {
    return waitFor('doctor to report every hop OK', async () => {
      const { code, report } = await doctor();
      return code === 0 && report.ok ? report : undefined;
    }, { timeoutMs: 60_000, intervalMs: 1_000 });
  }
  async function pidOf(component: 'envoy' | 'mesh-dns'): Promise<number> {
    const health = await adminJson(world.host('a').ns, 15020, '/health');
    const pid = Number(health.components?.[component]?.pid);
    if (!(pid > 0)) throw new Error(`no pid for ${component} in /health: ${JSON.stringify(health.components)}`);
    return pid;
  }

  beforeAll(async () => {
    world = await createWorld({ apps: ['a', 'b'] });
    await startSidecar(world, 'b');
    await startSidecar(world, 'a');
  }, 240_000);

  afterAll(async () => {
    await world?.teardown();
    if (world) expect(await hostRules()).toBe(world.hostRulesBefore);
  }, 120_000);

  it('with no fault every hop is OK and trace shows each hop of a request to B', async () => {
    const report = await healthy();
    const hops = report.checks.map((c) => c.hop);
    expect(hops).toEqual(['agent', 'config', 'mesh-dns', 'dns-capture', 'vip-route', 'outbound-capture', 'proxy', 'certificates', 'route:order', 'cluster:order', 'rules', 'peer-identity', 'inbound-capture', 'local-app', 'registry']);
    expect(report.checks.find((c) => c.hop === 'vip-route')!.evidence).toBe(`240.240.0.1 via ${GATEWAY} dev eth0 src ${world.host('a').address}`);
    expect(report.checks.find((c) => c.hop === 'dns-capture')!.evidence).toMatch(/^order -> 240\.240\./);
    const { code, report: t } = await trace('http://order/hello');
    expect(code).toBe(0);
    expect(t.ok).toBe(true);
    expect(t.hops.map((h) => h.hop)).toEqual(['dns', 'vip-route', 'capture', 'listener', 'route', 'endpoint', 'tls', 'upstream']);
    expect(t.hops.find((h) => h.hop === 'endpoint')!.detail).toContain(`${world.host('b').address}:${APP_PORT}`);
    expect(t.hops.find((h) => h.hop === 'capture')!.detail).toMatch(/DNAT/);
    expect(t.status).toBe(200);
    await capture('doctor-healthy', ['doctor']);
    await capture('trace-healthy', ['trace', 'http://order/hello']);
  });

  it('mesh-dns stopped: doctor FAILs mesh-dns, trace fails at dns', async () => {
    const pid = await pidOf('mesh-dns');
    await run('kill', ['-STOP', String(pid)]);
    try {
      const { code, report } = await doctor();
      expect(code).toBe(1);
      expect(fails(report)).toEqual(['mesh-dns']);
      expect(report.checks.find((c) => c.hop === 'mesh-dns')!.fix).toMatch(/hot_restart\/mesh-dns/);
      const t = await trace('http://order/hello');
      expect(t.code).toBe(1);
      expect(t.report.failedHop).toBe('dns');
      await capture('doctor-mesh-dns-stopped', ['doctor']);
      await capture('trace-mesh-dns-stopped', ['trace', 'http://order/hello']);
    } finally {
      await run('kill', ['-CONT', String(pid)]);
    }
    await healthy();
  });

  it('the DNS rule removed by hand: doctor FAILs dns-capture, trace fails at dns', async () => {
    const a = world.host('a').ns;
    const save = (await nsRun(a, 'iptables-save', ['-t', 'nat'])).stdout;
    const rules = save.split('\n').filter((l) => l.startsWith('-A DNS_OUTPUT '));
    const udpIndex = rules.findIndex((l) => l.includes('-p udp') && l.includes('--dport 53'));
    expect(udpIndex).toBeGreaterThanOrEqual(0);
    const spec = rules[udpIndex].replace(/^-A DNS_OUTPUT /, '').split(' ');
    await nsRun(a, 'iptables', ['-t', 'nat', '-D', 'DNS_OUTPUT', ...spec]);
    try {
      const { code, report } = await doctor();
      expect(code).toBe(1);
      expect(fails(report)).toEqual(['dns-capture']);
      expect(report.checks.find((c) => c.hop === 'dns-capture')!.evidence).toMatch(/udp dpt:53|--dport 53/);
      const t = await trace('http://order/hello');
      expect(t.report.failedHop).toBe('dns');
      await capture('doctor-dns-rule-removed', ['doctor']);
    } finally {
      await nsRun(a, 'iptables', ['-t', 'nat', '-I', 'DNS_OUTPUT', String(udpIndex + 1), ...spec]);
    }
    await healthy();
  });

  it('the proxy stopped: doctor FAILs proxy, trace fails at the listener', async () => {
    const pid = await pidOf('envoy');
    await run('kill', ['-STOP', String(pid)]);
    try {
      const { code, report } = await doctor();
      expect(code).toBe(1);
      expect(fails(report)).toEqual(['proxy']);
      expect(report.checks.find((c) => c.hop === 'proxy')!.fix).toMatch(/hot_restart\/envoy/);
      const t = await trace('http://order/hello');
      expect(t.report.failedHop).toBe('listener');
      await capture('trace-proxy-stopped', ['trace', 'http://order/hello']);
    } finally {
      await run('kill', ['-CONT', String(pid)]);
    }
    await healthy();
  });

  it('no route to the mesh VIP (default route removed): doctor FAILs vip-route, trace blames it, not the capture rule', async () => {
    const a = world.host('a').ns;
    await nsRun(a, 'ip', ['route', 'del', 'default']);
    try {
      // what the application sees: connect() fails before any iptables rule is involved
      const app = await appCurl(a, 'http://order/hello', ['-S']);
      expect(app.stderr).toMatch(/Network is unreachable|Couldn't connect/);
      const { code, report } = await doctor();
      expect(code).toBe(1);
      expect(fails(report)).toEqual(['vip-route']);
      const route = report.checks.find((c) => c.hop === 'vip-route')!;
      expect(route.evidence).toBe('no route to the mesh VIP 240.240.0.1 (ip route get: Network is unreachable): connect() fails with ENETUNREACH before the capture rules see it');
      expect(route.fix).toBe('add a default route (ip route add default via <gateway>) or a route for the mesh VIPs: ip route add 240.240.0.0/16 dev eth0');
      expect(report.checks.find((c) => c.hop === 'outbound-capture')!.status).toBe('OK');
      const t = await trace('http://order/hello');
      expect(t.code).toBe(1);
      expect(t.report.failedHop).toBe('vip-route');
      expect(t.report.hops.map((h) => `${h.hop}:${h.ok}`)).toEqual(['dns:true', 'vip-route:false']);
      await capture('doctor-no-vip-route', ['doctor']);
      await capture('trace-no-vip-route', ['trace', 'http://order/hello']);
    } finally {
      await nsRun(a, 'ip', ['route', 'add', 'default', 'via', GATEWAY]);
    }
    await healthy();
  });

  it('a name the proxy has no route for: trace fails at route', async () => {
    const t = await trace('http://no-such-service/', 'a', 'proxy');
    expect(t.code).toBe(1);
    expect(t.report.failedHop).toBe('route');
    await capture('trace-no-route', ['trace', 'http://no-such-service/', '--via', 'proxy']);
  });

  it('every endpoint of a service unhealthy: doctor FAILs cluster:order, trace fails at endpoint', async () => {
    const b = world.host('b').ns;
    await world.procs.stop(world.apps.b);
    try {
      const report = await waitFor('doctor to see order without a healthy endpoint', async () => {
        const { report: r } = await doctor();
        return r.checks.find((c) => c.hop === 'cluster:order')?.status === 'FAIL' ? r : undefined;
      }, { timeoutMs: 60_000, intervalMs: 1_000 });
      expect(fails(report)).toEqual(['cluster:order']);
      const t = await trace('http://order/hello');
      expect(t.report.failedHop).toBe('endpoint');
      await capture('doctor-no-healthy-endpoint', ['doctor']);
      await capture('trace-no-healthy-endpoint', ['trace', 'http://order/hello']);
    } finally {
      world.apps.b = await startApp(world.procs, b, world.appScript, 'host-b', APP_PORT);
    }
    await healthy();
  });

  it('the registry unreachable: doctor FAILs registry; requests still flow on the last known endpoints', async () => {
    const etcdPid = world.infra.etcd.pid;
    await run('kill', ['-STOP', String(etcdPid)]);
    try {
      const { code, report } = await doctor();
      expect(code).toBe(1);
      expect(fails(report)).toEqual(['registry']);
      expect(report.checks.find((c) => c.hop === 'registry')!.evidence).toContain(world.infra.etcdEndpoint);
      const t = await trace('http://order/hello');
      expect(t.report.ok).toBe(true);
      await capture('doctor-registry-unreachable', ['doctor']);
    } finally {
      await run('kill', ['-CONT', String(etcdPid)]);
    }
    await healthy();
  });

  it('the local application down: doctor FAILs local-app; B\'s trace to it fails at endpoint', async () => {
    const a = world.host('a').ns;
    await world.procs.stop(world.apps.a);
    try {
      const { code, report } = await doctor();
      expect(code).toBe(1);
      expect(fails(report)).toEqual(['local-app']);
      // From B: first A's proxy answers 503 for its app (upstream), then, once A registered itself
      // unhealthy, B has no healthy endpoint for user (endpoint). Either names A's side.
      const t = await trace('http://user/', 'b');
      expect(t.code).toBe(1);
      expect(['upstream', 'endpoint']).toContain(t.report.failedHop);
      expect(t.report.hops.find((h) => h.hop === t.report.failedHop)!.detail).toMatch(/HTTP 503/);
      await capture('trace-from-b-local-app-down', ['trace', 'http://user/'], 'b');
      await capture('doctor-local-app-down', ['doctor']);
    } finally {
      world.apps.a = await startApp(world.procs, a, world.appScript, 'host-a', APP_PORT);
    }
    await healthy();
  });
  it('the application\'s spec.yaml broken on disk: doctor FAILs config, naming the file, line and field', async () => {
    const spec = join(world.dir, 'sidecar-a', 'app', 'spec.yaml');
    const good = readFileSync(spec, 'utf8');
    writeFileSync(spec, good.replace(`targetPort: ${APP_PORT}`, 'targetPort: eighty'));
    try {
      const { code, report } = await doctor();
      expect(code).toBe(1);
      expect(fails(report)).toEqual(['config']);
      const config = report.checks.find((c) => c.hop === 'config')!;
      expect(config.evidence).toContain(`${spec}:7: spec.services[0].ports[0].targetPort`);
      expect(config.fix).toMatch(/restart would fail/);
      await capture('doctor-spec-broken', ['doctor']);
    } finally {
      writeFileSync(spec, good);
    }
    await healthy();
  });
});
