// Issue 8: two meshed hosts (A calls `order`, served by B and later B2) in network namespaces, with
// the real kernel's rules, real traffic, an etcd registry and applications that know nothing of the mesh.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { preflight } from './support/preflight.js';
import { nsArgv, nsRun, run, waitFor, withLog } from './support/exec.js';
import { createWorld, hostRules, APP_PORT, type World } from './support/world.js';
import { APP_USER, OUTSIDE_RECORDS, startApp } from './support/infra.js';
import { admin, adminJson, appGet, captureShell, startSidecar, type Role, type Sidecar } from './support/mesh.js';
import { nsRules, ruleCounter } from './support/rules.js';
import { parseProgress, parseSummary, writeLoadScript } from './support/load.js';
import { parseClustersText } from '../../packages/agent/src/diagnostics/envoy-formats.js';

const pre = preflight();

const AGENT_ADMIN = 15020;
const PROXY_ADMIN = 15000;
const ORDER_OUT = `out#${APP_PORT}#order`;
const ORDER_IN = `in#${APP_PORT}#order`;

async function clusters(ns: string) {
  return parseClustersText((await admin(ns, PROXY_ADMIN, '/clusters')).stdout);
}

async function stat(ns: string, name: string): Promise<number> {
  const { stdout } = await admin(ns, PROXY_ADMIN, '/stats');
  const line = stdout.split('\n').find((l) => l.startsWith(`${name}: `));
  return line ? Number(line.slice(name.length + 2)) : 0;
}

describe.skipIf(!pre.ok)('e2e: two meshed hosts in network namespaces', () => {
  let world: World;
  const sidecars: Partial<Record<Role, Sidecar>> = {};
  let rulesBeforeA: string[] = [];

  beforeAll(async () => {
    world = await createWorld();
    rulesBeforeA = await nsRules(world.host('a').ns);
    // B first, so A finds `order` in the registry when it starts.
    sidecars.b = await startSidecar(world, 'b');
    sidecars.a = await startSidecar(world, 'a');
  }, 240_000);

  afterAll(async () => {
    await world?.teardown();
    if (world) expect(await hostRules()).toBe(world.hostRulesBefore);
  }, 120_000);

  it('1. A\'s application reaches B\'s by name through both proxies', async () => {
    const a = world.host('a').ns;
    const b = world.host('b').ns;
    // mesh-dns on A answers the name's VIP (its own, from the VIP range), to the application's own resolver.
    const dig = await nsRun(a, 'dig', ['+short', '+time=2', '+tries=1', 'order'], { as: APP_USER });
    expect(dig.stdout.trim()).toMatch(/^240\.240\.\d+\.\d+$/);
    const vip = dig.stdout.trim();
    // the DNAT rule that covers this VIP: the shared VIP's own rule, or the VIP range's (per-service VIPs)
    const dnatRule = vip === '240.240.0.1' ? '-d 240.240.0.1/32' : '-d 240.240.0.0/16';
    const dnatBefore = await ruleCounter(a, 'ISTIO_OUTPUT', dnatRule, '-j DNAT', ':15001');
    const inboundBefore = await ruleCounter(b, 'ISTIO_INBOUND', `--dport ${APP_PORT}`);

    const res = await appGet(a, 'http://order/hello');
    expect(res).toEqual({ code: 200, body: 'hello from host-b path /hello' });

    // A's ISTIO_OUTPUT DNATed the VIP to 15001; B's ISTIO_INBOUND sent it to B's proxy.
    expect(await ruleCounter(a, 'ISTIO_OUTPUT', dnatRule, '-j DNAT', ':15001')).toBeGreaterThan(dnatBefore);
    expect(await ruleCounter(b, 'ISTIO_INBOUND', `--dport ${APP_PORT}`)).toBeGreaterThan(inboundBefore);
    // A's proxy routed to B's address; B's proxy delivered to B's application (its inbound cluster).
    const aClusters = await clusters(a);
    const toB = aClusters.get(ORDER_OUT)?.hosts.find((h) => h.address === `${world.host('b').address}:${APP_PORT}`);
    expect(Number(toB?.stats.rq_success ?? toB?.stats.rq_total ?? 0)).toBeGreaterThan(0);
    const bClusters = await clusters(b);
    expect(Number(bClusters.get(ORDER_IN)?.hosts[0]?.stats.rq_total ?? 0)).toBeGreaterThan(0);
    expect(await stat(a, `cluster.${ORDER_OUT}.upstream_rq_2xx`)).toBeGreaterThan(0);
    expect(await stat(b, `cluster.${ORDER_IN}.upstream_rq_2xx`)).toBeGreaterThan(0);
    for (const ns of [a, b]) expect((await admin(ns, AGENT_ADMIN, '/status')).stdout.trim()).toBe('<SERVICE_REGISTERED>');
    expect(vip).toBeTruthy();
    // The path an operator follows, kept for docs/troubleshooting.md.
    await captureShell('a-status', a, 'curl -s 127.0.0.1:15020/status');
    await captureShell('a-dns-config-dump', a, 'curl -s 127.0.0.1:15021/config_dump');
    await captureShell('a-dig-order', a, 'dig +short order');
    await captureShell('a-iptables', a, 'iptables -t nat -L -n -v');
    await captureShell('a-clusters-order', a, 'curl -s 127.0.0.1:15000/clusters | grep "order::198"');
    await captureShell('a-stats-order', a, 'curl -s 127.0.0.1:15000/stats | grep "cluster.out#8089#order.upstream_rq"');
    await captureShell('b-clusters-in', b, 'curl -s 127.0.0.1:15000/clusters | grep "in#"');
    await captureShell('a-curl-order', a, 'curl -s http://order/hello');
  });

  it('2. B2 starts: A load-balances across B and B2', async () => {
    sidecars.b2 = await startSidecar(world, 'b2');
    const a = world.host('a').ns;
    const want = [`${world.host('b').address}:${APP_PORT}`, `${world.host('b2').address}:${APP_PORT}`].sort();
    await waitFor('A\'s /clusters to list B and B2 healthy', async () => {
      const hosts = (await clusters(a)).get(ORDER_OUT)?.hosts.filter((h) => h.healthy).map((h) => h.address).sort();
      return JSON.stringify(hosts) === JSON.stringify(want);
    }, { timeoutMs: 15_000 });
    const seen = new Map<string, number>();
    for (let i = 0; i < 20; i++) {
      const res = await appGet(a, 'http://order/lb');
      expect(res.code).toBe(200);
      const host = /hello from (\S+)/.exec(res.body)?.[1] ?? '?';
      seen.set(host, (seen.get(host) ?? 0) + 1);
    }
    expect([...seen.keys()].sort()).toEqual(['host-b', 'host-b2']);
  });

  it('3. B\'s application stops: B is marked unhealthy and A sends everything to B2', async () => {
    const a = world.host('a').ns;
    const b = world.host('b').ns;
    await world.procs.stop(world.apps.b);
    await waitFor('B\'s /health to report the application down', async () => {
      const health = await adminJson(b, AGENT_ADMIN, '/health').catch(() => undefined);
      return health && health.healthy === false && JSON.stringify(health.app ?? health).includes('order');
    }, { timeoutMs: 30_000 });
    const bAddress = `${world.host('b').address}:${APP_PORT}`;
    await waitFor('A\'s /clusters to drop B or mark it unhealthy', async () => {
      const host = (await clusters(a)).get(ORDER_OUT)?.hosts.find((h) => h.address === bAddress);
      return !host || !host.healthy;
    }, { timeoutMs: 30_000 });
    for (let i = 0; i < 20; i++) expect(await appGet(a, 'http://order/after-b-down')).toEqual({ code: 200, body: 'hello from host-b2 path /after-b-down' });
    // B comes back for the scenarios that follow.
    world.apps.b = await startApp(world.procs, b, world.appScript, 'host-b', APP_PORT);
    await waitFor('A\'s /clusters to list B healthy again', async () => Boolean((await clusters(a)).get(ORDER_OUT)?.hosts.find((h) => h.address === bAddress && h.healthy)), { timeoutMs: 30_000 });
  });

  it('4. kill -9 of A\'s proxy: the agent restarts it with a new epoch and requests work again', async () => {
    const a = world.host('a').ns;
    const epoch = Number((await admin(a, AGENT_ADMIN, '/epoch/envoy')).stdout.trim());
    const health = await adminJson(a, AGENT_ADMIN, '/health');
    const pid = Number(health.components?.envoy?.pid);
    expect(pid).toBeGreaterThan(0);
    await run('kill', ['-9', String(pid)]);
    await waitFor('a new proxy epoch', async () => Number((await admin(a, AGENT_ADMIN, '/epoch/envoy')).stdout.trim()) === epoch + 1, { timeoutMs: 30_000 });
    const restarted = Date.now();
    const res = await waitFor('a request to succeed after the restart', async () => {
      const r = await appGet(a, 'http://order/after-kill');
      return r.code === 200 ? r : undefined;
    }, { timeoutMs: 15_000, intervalMs: 50 });
    console.log(`scenario 4: first successful request ${Date.now() - restarted} ms after the new epoch was reported`);
    expect(res.body).toMatch(/^hello from host-b2? path \/after-kill$/);
    expect((await admin(a, AGENT_ADMIN, '/latest_error')).stdout).toMatch(/envoy|proxy/i);
  });

  it('5. hot restart of A\'s proxy under a steady stream of requests: zero failures', async () => {
    const a = world.host('a').ns;
    const script = writeLoadScript(world.dir);
    const stopFile = join(world.dir, 'load-stop');
    const load = world.procs.start('load', nsArgv(a, process.execPath, [script, 'http://order/steady', stopFile, '5000', '90000'], APP_USER));
    await waitFor('the load to be running', async () => parseProgress(load.lines) >= 30, { timeoutMs: 30_000 }).catch((err) => { throw withLog(err, load); });
    const epoch = Number((await admin(a, AGENT_ADMIN, '/epoch/envoy')).stdout.trim());
    const hot = await admin(a, AGENT_ADMIN, '/hot_restart/envoy', 'POST');
    expect(hot.code).toBe(0);
    await waitFor('the new epoch', async () => Number((await admin(a, AGENT_ADMIN, '/epoch/envoy')).stdout.trim()) === epoch + 1, { timeoutMs: 30_000 });
    const mark = parseProgress(load.lines);
    await waitFor('requests on the new epoch', async () => parseProgress(load.lines) >= mark + 50, { timeoutMs: 30_000 });
    writeFileSync(stopFile, '');
    await load.exited;
    const summary = parseSummary(load.lines);
    expect(summary, load.lines.slice(-5).join('\n')).toBeDefined();
    expect(summary!.failures).toEqual([]);
    expect(summary!.failed).toBe(0);
    expect(summary!.ok).toBeGreaterThan(80);
  });

  it('6. a name outside the mesh resolves through mesh-dns to the real resolver\'s answer, without a capture loop', async () => {
    const a = world.host('a').ns;
    const captured = await ruleCounter(a, 'DNS_OUTPUT', '-p udp', '--dport 53', '-j DNAT');
    const exempt = await ruleCounter(a, 'DNS_OUTPUT', '--uid-owner', '-j RETURN');
    const dig = await nsRun(a, 'dig', ['+short', '+time=3', '+tries=1', 'api.outside.test'], { as: APP_USER });
    expect(dig.stdout.trim()).toBe(OUTSIDE_RECORDS['api.outside.test']);
    // The application's query was captured (to mesh-dns); mesh-dns' own query upstream went out as
    // its uid and was let through by the RETURN rule, not captured again.
    expect(await ruleCounter(a, 'DNS_OUTPUT', '-p udp', '--dport 53', '-j DNAT')).toBe(captured + 1);
    expect(await ruleCounter(a, 'DNS_OUTPUT', '--uid-owner', '-j RETURN')).toBeGreaterThan(exempt);
  });

  it('7. A\'s agent stops: its rules are gone, DNS goes to the real resolver, B no longer routes to A', async () => {
    const a = world.host('a').ns;
    const b = world.host('b').ns;
    // B (and B2) know `user` on A while A is registered.
    const aAddress = `${world.host('a').address}:${APP_PORT}`;
    const userOut = `out#${APP_PORT}#user`;
    await waitFor('B to know user on A', async () => Boolean((await clusters(b)).get(userOut)?.hosts.find((h) => h.address === aAddress)), { timeoutMs: 15_000 });
    await world.procs.stop(sidecars.a!.process, 30_000);
    expect(sidecars.a!.process.child.exitCode).toBe(0);
    expect(await nsRules(a)).toEqual(rulesBeforeA);
    const pids = (await run('ip', ['netns', 'pids', a])).stdout.split(/\s+/).filter(Boolean).map(Number);
    expect(pids).toEqual([world.apps.a.pid]);
    const dig = await nsRun(a, 'dig', ['+short', '+time=2', '+tries=1', 'web.outside.test'], { as: APP_USER });
    expect(dig.stdout.trim()).toBe(OUTSIDE_RECORDS['web.outside.test']);
    // The real resolver does not know mesh names: no VIP any more.
    const meshName = await nsRun(a, 'dig', ['+short', '+time=2', '+tries=1', 'order'], { as: APP_USER });
    expect(meshName.stdout.trim()).toBe('');
    for (const role of ['b', 'b2'] as const) {
      await waitFor(`${role} to drop A from ${userOut}`, async () => !(await clusters(world.host(role).ns)).get(userOut)?.hosts.some((h) => h.address === aAddress), { timeoutMs: 20_000 });
    }
    const fromB = await appGet(b, 'http://user/');
    expect(fromB.code).not.toBe(200);
  });
});
