// The harness itself: namespaces joined by a bridge, etcd and dnsmasq reachable from every host,
// plain applications running unprivileged, and a teardown that leaves nothing behind.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { preflight, IN_CI } from './support/preflight.js';
import { nsRun, run } from './support/exec.js';
import { APP_PORT, createWorld, hostRules, type World } from './support/world.js';
import { OUTSIDE_RECORDS, APP_USER } from './support/infra.js';

const pre = preflight();
if (!pre.ok && !IN_CI) console.warn(`e2e harness skipped: ${pre.reason}`);

describe('e2e preflight', () => {
  it.runIf(IN_CI)('CI has root, network namespaces and iptables', () => {
    expect(pre.reason ?? 'ok', `the e2e suite cannot run in CI: ${pre.reason}`).toBe('ok');
  });
});

describe.skipIf(!pre.ok)('e2e harness (network namespaces)', () => {
  let world: World;
  beforeAll(async () => { world = await createWorld(); }, 120_000);
  afterAll(async () => { await world?.teardown(); }, 60_000);

  it('joins the hosts by a bridge: A reaches the applications on B and B2 by address', async () => {
    for (const role of ['b', 'b2'] as const) {
      const { stdout } = await nsRun(world.host('a').ns, 'curl', ['-s', '--max-time', '5', `http://${world.host(role).address}:${APP_PORT}/hello`]);
      expect(stdout).toBe(`hello from host-${role} path /hello\n`);
    }
  });

  it('runs the applications as an unprivileged user', async () => {
    const { stdout } = await run('ps', ['-o', 'uid=', '-p', String(await appPid(world, 'b'))]);
    expect(Number(stdout.trim())).toBe(APP_USER.uid);
  });

  it('answers names outside the mesh from dnsmasq, through each namespace\'s own resolv.conf', async () => {
    const { stdout } = await nsRun(world.host('a').ns, 'getent', ['ahostsv4', 'web.outside.test']);
    expect(stdout).toContain(OUTSIDE_RECORDS['web.outside.test']);
    const resolv = await nsRun(world.host('b2').ns, 'cat', ['/etc/resolv.conf']);
    expect(resolv.stdout).toContain('nameserver 198.18.0.1');
  });

  it('reaches etcd from every host', async () => {
    for (const role of ['a', 'b', 'b2'] as const) {
      const { stdout } = await nsRun(world.host(role).ns, 'curl', ['-s', '--max-time', '5', `${world.infra.etcdEndpoint}/version`]);
      expect(JSON.parse(stdout).etcdserver).toMatch(/^3\./);
    }
  });

  it('gives every host namespace an empty nat table of its own', async () => {
    const { stdout } = await nsRun(world.host('a').ns, 'iptables-save', ['-t', 'nat']);
    expect(stdout).not.toMatch(/^-A /m);
  });

  it('tears down every namespace, process and /etc/netns file, and never touches the machine\'s rules', async () => {
    const names = Object.values(world.topo.hosts).map((h) => h.ns).concat(world.topo.switchNs);
    await world.teardown();
    const { stdout } = await run('ip', ['netns', 'list']);
    for (const ns of names) {
      expect(stdout).not.toContain(ns);
      expect(existsSync(`/etc/netns/${ns}`)).toBe(false);
    }
    expect(await hostRules()).toBe(world.hostRulesBefore);
  });
});

async function appPid(world: World, role: 'a' | 'b' | 'b2'): Promise<number> {
  // ip netns exec -> setpriv exec's node: the spawned pid is the application itself.
  return world.apps[role].pid;
}
