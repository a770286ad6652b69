// Issue 16: the operator's traffic rules across hosts. A, B and B2 in network namespaces share a real
// etcd; B's `order` is labelled version v1, B2's version v2 (node.labels). A rule written with
// `mesh-agent rules apply` is applied on every host without a restart (same proxy pid, /config_dump
// and GET /rules show it), and A's calls by name follow it: a 90/10 split over 2,000 requests within
// binomial bounds, and a header match to a subset.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { preflight } from './support/preflight.js';
import { nsRun, waitFor } from './support/exec.js';
import { createWorld, hostRules, APP_PORT, type World } from './support/world.js';
import { APP_USER } from './support/infra.js';
import { admin, adminJson, appCurl, mesh, startSidecar, type Role, type Sidecar } from './support/mesh.js';
import { parseSummary, writeLoadScript } from './support/load.js';

const pre = preflight();

const AGENT_ADMIN = 15020;
const PROXY_ADMIN = 15000;
const ORDER = `out#${APP_PORT}#order`;
const ROLES: Role[] = ['a', 'b', 'b2'];

const RULES = `trafficRules:
  - service: order
    subsets:
      - { name: v1, labels: { version: v1 } }
      - { name: v2, labels: { version: v2 } }
    http:
      - name: beta-users
        match: [{ headers: { x-user: { exact: beta } } }]
        route: [{ subset: v2 }]
      - name: canary
        route: [{ subset: v1, weight: 90 }, { subset: v2, weight: 10 }]
`;

/** The proxy's pid on a host (from the agent's /health). */
async function proxyPid(ns: string): Promise<number> {
  const health = await adminJson(ns, AGENT_ADMIN, '/health');
  return health.components.envoy.pid as number;
}

describe.skipIf(!pre.ok)('e2e: traffic rules from etcd on every host', () => {
  let world: World;
  const sidecars: Partial<Record<Role, Sidecar>> = {};

  beforeAll(async () => {
    world = await createWorld();
    sidecars.b = await startSidecar(world, 'b', { nodeConfig: ['  labels: { version: v1 }'] });
    sidecars.b2 = await startSidecar(world, 'b2', { nodeConfig: ['  labels: { version: v2 }'] });
    sidecars.a = await startSidecar(world, 'a');
    const a = world.host('a').ns;
    await waitFor('A to know both order instances', async () => {
      const hosts = new Set<string>();
      for (let i = 0; i < 6; i++) hosts.add((await appCurl(a, 'http://order/')).stdout);
      if (hosts.size !== 2) throw new Error(`answers: ${JSON.stringify([...hosts])}`);
      return true;
    }, { timeoutMs: 60_000, intervalMs: 500 });
  }, 300_000);

  afterAll(async () => {
    await world?.teardown();
    if (world) expect(await hostRules()).toBe(world.hostRulesBefore);
  }, 120_000);

  it('1. mesh-agent rules apply writes the rule once; every host applies it live (same proxy pid)', async () => {
    const pids = Object.fromEntries(await Promise.all(ROLES.map(async (r) => [r, await proxyPid(world.host(r).ns)] as const)));
    const file = join(world.dir, 'rules.yaml');
    writeFileSync(file, RULES);
    const validate = await mesh(world, 'a', ['rules', 'validate', file]);
    expect(validate.code, validate.stderr).toBe(0);
    const apply = await mesh(world, 'a', ['rules', 'apply', file, '--etcd', world.infra.etcdEndpoint, '--prefix', '/mesh-e2e/']);
    expect(apply.code, apply.stderr).toBe(0);
    expect(apply.stdout).toContain('/mesh-e2e/rules/default/order');

    for (const role of ROLES) {
      const ns = world.host(role).ns;
      await waitFor(`${role} to apply the rule`, async () => JSON.stringify(await adminJson(ns, PROXY_ADMIN, '/config_dump')).includes(`${ORDER}#v2`), { timeoutMs: 30_000, intervalMs: 300 });
      const dump = JSON.stringify(await adminJson(ns, PROXY_ADMIN, '/config_dump'));
      expect(dump).toContain('"canary"');
      expect(dump).toContain('"beta-users"');
      const inForce = await adminJson(ns, AGENT_ADMIN, '/rules');
      expect(inForce.rules).toEqual([
        expect.objectContaining({
          service: 'order',
          source: 'etcd /mesh-e2e/rules/default/order',
          subsets: [expect.objectContaining({ name: 'v1', instances: 1, healthy: 1 }), expect.objectContaining({ name: 'v2', instances: 1, healthy: 1 })],
        }),
      ]);
      expect(await proxyPid(ns)).toBe(pids[role]);
    }
    // the subset clusters hold the labelled instances only
    const clusters = (await admin(world.host('a').ns, PROXY_ADMIN, '/clusters')).stdout;
    expect(clusters).toContain(`${ORDER}#v1::198.18.0.3:${APP_PORT}::health_flags::healthy`);
    expect(clusters).toContain(`${ORDER}#v2::198.18.0.4:${APP_PORT}::health_flags::healthy`);
    expect(clusters).not.toContain(`${ORDER}#v1::198.18.0.4`);
  }, 120_000);

  it('2. a header match sends to its subset; the debug header names rule and cluster', async () => {
    const a = world.host('a').ns;
    for (let i = 0; i < 20; i++) {
      expect((await appCurl(a, 'http://order/beta', ['-H', 'x-user: beta'])).stdout).toBe('hello from host-b2 path /beta\n');
    }
    const debug = await appCurl(a, 'http://order/beta', ['-s', '-D', '-', '-o', '/dev/null', '-H', 'x-user: beta', '-H', 'x-mesh-debug-upstream: 1']);
    expect(debug.stdout.toLowerCase()).toContain(`x-mesh-route: vhost=order; route=beta-users; cluster=${ORDER}#v2`.toLowerCase());
  }, 60_000);

  it('3. a 90/10 split over 2,000 requests stays within binomial bounds', async () => {
    const a = world.host('a').ns;
    const script = writeLoadScript(world.dir);
    const load = await nsRun(a, process.execPath, [script, 'http://order/split', join(world.dir, 'no-stop'), '2000', '240000'], { as: APP_USER, timeoutMs: 300_000 });
    const summary = parseSummary(load.stdout.split('\n'));
    expect(summary, load.stdout.slice(-500)).toBeDefined();
    expect(summary!.failed, summary!.failures.join('\n')).toBe(0);
    expect(summary!.ok).toBe(2000);
    // n = 2000, p = 0.1: mean 200, sd 13.4; +-5 sd = 133..267 (a false failure about once in 1.7 million runs)
    const v2 = summary!.hosts['host-b2'] ?? 0;
    console.log(`traffic rules e2e: 90/10 split over 2000 requests: ${JSON.stringify(summary!.hosts)}`);
    expect(v2, JSON.stringify(summary!.hosts)).toBeGreaterThanOrEqual(133);
    expect(v2, JSON.stringify(summary!.hosts)).toBeLessThanOrEqual(267);
    expect((summary!.hosts['host-b'] ?? 0) + v2).toBe(2000);
  }, 320_000);

  it('4. deleting the rule key in etcd puts every host back to the whole service', async () => {
    const infra = world.host('infra').ns;
    // etcd's v3 JSON gateway (Debian's etcd-server ships no etcdctl): keys are base64
    const key = Buffer.from('/mesh-e2e/rules/default/order').toString('base64');
    const del = await nsRun(infra, 'curl', ['-s', '--max-time', '10', '-X', 'POST', `${world.infra.etcdEndpoint}/v3/kv/deleterange`, '-d', JSON.stringify({ key })]);
    expect(del.stdout).toContain('"deleted":"1"');
    for (const role of ROLES) {
      const ns = world.host(role).ns;
      await waitFor(`${role} to drop the rule`, async () => !JSON.stringify(await adminJson(ns, PROXY_ADMIN, '/config_dump')).includes(`${ORDER}#v2`), { timeoutMs: 30_000, intervalMs: 300 });
    }
    const a = world.host('a').ns;
    await waitFor('both instances again for x-user: beta', async () => {
      const hosts = new Set<string>();
      for (let i = 0; i < 8; i++) hosts.add((await appCurl(a, 'http://order/', ['-H', 'x-user: beta'])).stdout);
      return hosts.size === 2;
    }, { timeoutMs: 30_000, intervalMs: 300 });
  }, 120_000);
});
