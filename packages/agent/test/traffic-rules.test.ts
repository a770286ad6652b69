// Traffic rules from etcd through the real agent, proxy and etcd (Debian etcd-server on loopback):
// `mesh-agent rules apply` writes them in one transaction, the agent pushes them live (same proxy
// pid), requests follow them; a bad rule in etcd is refused by key, rule and field, the previous
// rule stays; `rules validate` names every problem and `apply` of a bad file writes nothing.
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApp, startTestAgent, tempDir, type TestAgent, type TestApp } from './agent-fixture';
import { startEtcd, type EtcdServer } from './etcd-server';
import { eventually, httpGet } from './helpers';

const agentBin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../bin/mesh-agent.js');
const PREFIX = '/rules-test/';

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [agentBin, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

function haveEtcd(): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v etcd'], { stdio: 'ignore' });
    return true;
  } catch {
    if (process.env.CI) throw new Error('etcd is missing (Debian etcd-server; scripts/install-test-deps.sh installs it)');
    console.warn('skipping the traffic rules tests: no etcd binary (apt-get install etcd-server)');
    return false;
  }
}

const subsets = [
  { name: 'v1', labels: { version: 'v1' } },
  { name: 'v2', labels: { version: 'v2' } },
];

describe.skipIf(!haveEtcd())('traffic rules through etcd, the agent and the proxy (real etcd)', { timeout: 180_000 }, () => {
  let etcd: EtcdServer;
  let client: Etcd3;
  let user: TestApp;
  let v1: TestApp;
  let v2: TestApp;
  let t: TestAgent;
  let dir: string;
  const file = (name: string, value: unknown) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, stringify(value));
    return p;
  };
  const order = (headers: Record<string, string> = {}) => httpGet('http://order/', { proxy: t.proxy, headers });

  beforeAll(async () => {
    dir = tempDir('mesh-agent-rules-');
    etcd = await startEtcd();
    client = new Etcd3({ hosts: etcd.endpoint });
    [user, v1, v2] = await Promise.all([startApp('user'), startApp('order-v1'), startApp('order-v2')]);
    // the peers' registrations, as their agents would write them (node.labels -> metadata)
    for (const [id, app, version] of [['o1', v1, 'v1'], ['o2', v2, 'v2']] as const) {
      await client.put(`${PREFIX}services/default/order/${id}`).value(JSON.stringify({ id, address: '127.0.0.1', port: app.port, healthy: true, weight: 1, metadata: { version } }));
    }
    t = await startTestAgent({ appPort: user.port, config: { registry: { backend: 'etcd', etcd: { endpoints: [etcd.endpoint], prefix: PREFIX, leaseTtlSeconds: 5 } } } });
    await eventually(async () => (await order()).status === 200, 'order reachable through the proxy');
  });

  afterAll(async () => {
    await t?.stop();
    client?.close();
    await etcd?.stop();
    await Promise.all([user, v1, v2].map((a) => a?.close()));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('rules validate: a good file passes, a bad one exits 2 naming file, line, service, rule and field', async () => {
    const good = file('good.yaml', { trafficRules: [{ service: 'order', subsets, http: [{ name: 'beta', match: [{ headers: { 'x-user': { exact: 'beta' } } }], route: [{ subset: 'v2' }] }] }] });
    const ok = await run(['rules', 'validate', good]);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('default/order: 1 rule, subsets v1, v2');
    const bad = file('bad.yaml', { trafficRules: [{ service: 'order', subsets, http: [{ name: 'beta', route: [{ subset: 'v2', weight: 90 }, { subset: 'v3', weight: 20 }] }] }] });
    const refused = await run(['rules', 'validate', bad]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('trafficRules[order].http[beta].route[1].subset: unknown subset "v3" (defined: v1, v2)');
    expect(refused.stderr).toContain('trafficRules[order].http[beta].route: the weights sum to 110');
    expect(refused.stderr).toMatch(/bad\.yaml:\d+: trafficRules\[order\]/);
  });

  it('rules apply of a bad file writes nothing', async () => {
    const bad = file('bad2.yaml', { trafficRules: [{ service: 'pay', http: [] }, { service: 'order', http: [{ fault: { abort: { httpStatus: 503, percent: 101 } } }] }] });
    const refused = await run(['rules', 'apply', bad, '--etcd', etcd.endpoint, '--prefix', PREFIX]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('trafficRules[order].http[0].fault.abort.percent: a percentage is 0..100');
    expect((await client.getAll().prefix(`${PREFIX}rules/`).keys()).length).toBe(0);
  });

  it('rules apply: one transaction, applied live without a proxy restart, requests follow it', async () => {
    const pid = t.agent.supervisors.get('envoy')!.pid;
    expect(new Set(await Promise.all([1, 2, 3, 4].map(async () => (await order()).body))).size).toBe(2); // both versions before
    const rules = file('rules.yaml', {
      trafficRules: [
        { service: 'order', subsets, http: [{ name: 'beta', match: [{ headers: { 'x-user': { exact: 'beta' } } }], route: [{ subset: 'v2' }] }, { name: 'stable', route: [{ subset: 'v1' }] }] },
        { service: 'pay', namespace: 'shop', http: [{ name: 'closed', directResponse: { status: 503, body: 'closed' } }] },
      ],
    });
    const applied = await run(['rules', 'apply', rules, '--etcd', etcd.endpoint, '--prefix', PREFIX]);
    expect(applied.stderr).toBe('');
    expect(applied.code).toBe(0);
    expect(applied.stdout).toContain('applied 2 service rules in one transaction');
    expect((await client.getAll().prefix(`${PREFIX}rules/`).keys()).sort()).toEqual([`${PREFIX}rules/default/order`, `${PREFIX}rules/shop/pay`]);
    // the two keys came in one revision
    const revisions = await Promise.all([`${PREFIX}rules/default/order`, `${PREFIX}rules/shop/pay`].map(async (k) => (await client.get(k).exec()).kvs[0].mod_revision));
    expect(revisions[0]).toBe(revisions[1]);

    await eventually(async () => (await order({ 'x-user': 'beta' })).body === 'order-v2\n', 'x-user: beta routed to v2');
    for (let i = 0; i < 10; i++) expect((await order()).body).toBe('order-v1\n');
    for (let i = 0; i < 5; i++) expect((await order({ 'x-user': 'beta' })).body).toBe('order-v2\n');
    expect(t.agent.supervisors.get('envoy')!.pid).toBe(pid);

    const dump = JSON.parse((await httpGet(`${t.proxyAdmin}/config_dump`)).body);
    expect(JSON.stringify(dump)).toContain('out#');
    expect(JSON.stringify(dump)).toContain('"beta"');

    const inForce = JSON.parse((await httpGet(`${t.admin}/rules`)).body);
    expect(inForce.rules.find((r: { service: string }) => r.service === 'order')).toMatchObject({
      source: `etcd ${PREFIX}rules/default/order`,
      subsets: [{ name: 'v1', instances: 1, healthy: 1 }, { name: 'v2', instances: 1, healthy: 1 }],
    });
    const get = await run(['rules', 'get', '--admin', t.admin]);
    expect(get.code).toBe(0);
    expect(get.stdout).toContain(`default/order (from etcd ${PREFIX}rules/default/order)`);
    expect(get.stdout).toContain('beta: match header x-user exact beta -> v2');
  });

  it('a bad rule written to etcd by hand is refused by key, rule and field; the previous rule stays', async () => {
    const key = `${PREFIX}rules/default/order`;
    await client.put(key).value(JSON.stringify({ service: 'order', subsets, http: [{ name: 'beta', route: [{ subset: 'v9' }] }] }));
    await eventually(async () => (await httpGet(`${t.admin}/latest_error`)).body.includes(key), 'the refusal in /latest_error');
    const latest = JSON.parse((await httpGet(`${t.admin}/latest_error`)).body);
    expect(latest.code).toBe('MESH_AGENT_TRAFFIC_RULE_INVALID');
    expect(latest.message).toBe(`refusing the traffic rule in etcd key ${key} (the service keeps its previous rule): trafficRules[order].http[beta].route[0].subset: unknown subset "v9" (defined: v1, v2)`);
    for (let i = 0; i < 5; i++) expect((await order({ 'x-user': 'beta' })).body).toBe('order-v2\n');
    for (let i = 0; i < 5; i++) expect((await order()).body).toBe('order-v1\n');
  });

  it('deleting the rule key puts the service back to every instance', async () => {
    await client.delete().key(`${PREFIX}rules/default/order`);
    await eventually(async () => new Set(await Promise.all([1, 2, 3, 4, 5, 6].map(async () => (await order()).body))).size === 2, 'both versions again');
  });
});

describe('traffic rules from the agent config, a rules file and the file registry', { timeout: 120_000 }, () => {
  let user: TestApp;
  let v1: TestApp;
  let v2: TestApp;
  let t: TestAgent;
  let dir: string;
  let registryFile: string;
  let rulesFile: string;
  const order = (headers: Record<string, string> = {}) => httpGet('http://order/', { proxy: t.proxy, headers });
  const registry = (rules: unknown[]) => ({
    services: [{ name: 'order', instances: [{ id: 'o1', address: '127.0.0.1', port: v1.port, metadata: { version: 'v1' } }, { id: 'o2', address: '127.0.0.1', port: v2.port, metadata: { version: 'v2' } }] }],
    trafficRules: rules,
  });
  const only = (subset: string) => ({ service: 'order', subsets, http: [{ name: `all-${subset}`, route: [{ subset }] }] });
  const sources = async () => JSON.parse((await httpGet(`${t.admin}/rules`)).body).rules.map((r: { service: string; source: string }) => `${r.service} ${r.source}`);

  beforeAll(async () => {
    dir = tempDir('mesh-agent-rules-file-');
    [user, v1, v2] = await Promise.all([startApp('user'), startApp('order-v1'), startApp('order-v2')]);
    registryFile = path.join(dir, 'registry.yaml');
    fs.writeFileSync(registryFile, stringify(registry([])));
    rulesFile = path.join(dir, 'rules.yaml');
    fs.writeFileSync(rulesFile, stringify({ trafficRules: [only('v2'), { service: 'pay', http: [{ name: 'closed', directResponse: { status: 503, body: 'closed' } }] }] }));
    t = await startTestAgent({
      appPort: user.port,
      config: {
        registry: { backend: 'file', file: { path: registryFile } },
        // the inline rule loses to the rules file's for order; pay's comes from the file only
        mesh: { trafficRules: [only('v1')], trafficRulesFile: rulesFile },
      },
    });
  });

  afterAll(async () => {
    await t?.stop();
    await Promise.all([user, v1, v2].map((a) => a?.close()));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the rules file wins over mesh.trafficRules, and is re-read on change', async () => {
    await eventually(async () => (await order()).body === 'order-v2\n', 'the rules file\'s rule for order');
    expect(await sources()).toEqual([`order file ${rulesFile}`, `pay file ${rulesFile}`]);
    fs.writeFileSync(rulesFile, stringify({ trafficRules: [] }));
    await eventually(async () => (await order()).body === 'order-v1\n', 'the inline rule once the file dropped it');
    expect(await sources()).toEqual(['order agent config mesh.trafficRules']);
  });

  it('the file registry\'s rule wins; a bad edit is refused by name and the last good rules stay', async () => {
    fs.writeFileSync(registryFile, stringify(registry([only('v2')])));
    await eventually(async () => (await order()).body === 'order-v2\n', 'the registry\'s rule');
    expect(await sources()).toEqual([`order file registry ${registryFile}`]);
    fs.writeFileSync(registryFile, stringify(registry([{ service: 'order', subsets, http: [{ name: 'broken', route: [{ subset: 'v1', weight: 50 }, { subset: 'v7', weight: 50 }] }] }])));
    await eventually(async () => (await httpGet(`${t.admin}/latest_error`)).body.includes('v7'), 'the refusal in /latest_error');
    expect(JSON.parse((await httpGet(`${t.admin}/latest_error`)).body).message).toContain('trafficRules[order].http[broken].route[1].subset: unknown subset "v7" (defined: v1, v2)');
    for (let i = 0; i < 5; i++) expect((await order()).body).toBe('order-v2\n');
  });
});
