// The whole life cycle with real iptables, inside network namespaces this test creates: the status
// sequence over /status, DNS and outbound capture, inbound capture from a peer, SIGTERM leaving the
// nat table as it was, a crashed agent's stale rules removed by the next start, and no root.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { tempDir } from './agent-fixture';
import { eventually } from './helpers';
import { createNsPair, inNs, natRules, nsAdminClient, pidAlive, skipNetnsTests, spawnInNs, writeNsAgentFiles, type NsPair, type NsProcess } from './netns';
import { preferredVip } from '../src/vip-allocation';

// mesh-dns answers a service with its own VIP (its hash slot in the default range)
const ORDER_VIP = preferredVip({ name: 'order', namespace: 'default' }, { vipCidr: '240.240.0.0/16', meshVip: '240.240.0.1' });

const here = path.dirname(fileURLToPath(import.meta.url));
const agentBin = path.resolve(here, '../bin/mesh-agent.js');
const appScript = path.join(here, 'fixtures', 'http-app.mjs');
const skip = skipNetnsTests();

describe.skipIf(skip)('traffic takeover with real iptables in a network namespace', { timeout: 240_000 }, () => {
  let ns: NsPair;
  let dir: string;
  let configFile: string;
  const processes: NsProcess[] = [];
  let peerApp: NsProcess;
  let baseline: string;
  let baseConfig: Record<string, any>;

  const { curlIn, admin, status } = nsAdminClient(() => ns.a);
  /** An admin request's status code and body, over real HTTP from inside the namespace. */
  const adminCall = async (p: string, method = 'GET') => {
    const out = await curlIn(ns.a, ['-X', method, '-w', '\n%{http_code}', `127.0.0.1:15020${p}`]);
    const cut = out.lastIndexOf('\n');
    return { code: Number(out.slice(cut + 1)), body: out.slice(0, cut) };
  };

  /** The test's agent config with other iptables settings, written next to it. */
  function configWith(name: string, iptables: Record<string, unknown>): string {
    const file = path.join(dir, `agent-${name}.yaml`);
    fs.writeFileSync(file, stringify({ ...baseConfig, iptables: { ...baseConfig.iptables, ...iptables } }));
    return file;
  }

  function startAgent(opts: { prefix?: string[]; config?: string } = {}): NsProcess {
    const p = spawnInNs(ns.a, process.execPath, [agentBin, 'start', '--config', opts.config ?? configFile], { prefix: opts.prefix });
    processes.push(p);
    return p;
  }

  beforeAll(async () => {
    ns = await createNsPair('cap', 77);
    dir = tempDir('mesh-agent-capture-');
    const config = (baseConfig = writeNsAgentFiles(dir, {
      nodeIp: ns.ipA,
      services: [{ name: 'user', ports: [{ targetPort: 8089 }], healthCheck: { path: '/health' } }],
      registry: [{ name: 'order', instances: [{ id: 'order-b', address: ns.ipB, port: 8080 }] }],
      dnsUpstream: `${ns.ipB}:53`,
    }).config);
    configFile = path.join(dir, 'agent.yaml');
    fs.writeFileSync(configFile, stringify(config));
    peerApp = spawnInNs(ns.b, process.execPath, [appScript, 'order-b', '8080']);
    processes.push(peerApp);
    await eventually(() => peerApp.output().includes('listening'), 'the peer app');
    baseline = await natRules(ns.a);
  });

  afterAll(async () => {
    for (const p of processes.reverse()) await p.stop('SIGKILL').catch(() => undefined);
    await ns?.remove();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('walks <INIT> → <CONFIG_READY> → <FLOW_TAKEOVER> → <SERVICE_REGISTERED>, captures traffic, and SIGTERM leaves nothing behind', async () => {
    const agent = startAgent();
    const seen: string[] = [];
    const record = (s: string) => {
      if (s && seen.at(-1) !== s) seen.push(s);
    };
    // the local app is not up yet: the agent must stop at <FLOW_TAKEOVER>
    await eventually(async () => {
      const s = await status();
      record(s);
      return s === '<FLOW_TAKEOVER>';
    }, '<FLOW_TAKEOVER>', 60_000, 50);

    const rules = await natRules(ns.a);
    expect(rules).toMatch(/-A OUTPUT .*-j ISTIO_OUTPUT/);
    expect(rules).toMatch(/-A DNS_OUTPUT -p udp -m udp --dport 53 -j DNAT --to-destination 127\.0\.0\.1:55354/);
    expect(rules).toMatch(new RegExp(`-A ISTIO_INBOUND -d ${ns.ipA.replace(/\./g, '\\.')}/32 -p tcp -m tcp --dport 8089 -j ISTIO_REDIRECT`));

    // DNS through the real capture path: port 53 of any server is DNATed to mesh-dns
    expect((await inNs(ns.a, 'dig', ['+short', '+tries=1', '+time=5', `@${ns.ipB}`, 'order'])).trim()).toBe(ORDER_VIP);
    // outbound: the VIP is DNATed to the proxy, which routes by Host to the peer
    const out = await curlIn(ns.a, ['--resolve', 'order:80:240.240.0.1', 'http://order/hello']);
    expect(out).toMatch(/^order-b GET \/hello host=order/);

    // the local app comes up: health check passes, instance registered
    const app = spawnInNs(ns.a, process.execPath, [appScript, 'user-a', '8089']);
    processes.push(app);
    await eventually(async () => {
      const s = await status();
      record(s);
      return s === '<SERVICE_REGISTERED>';
    }, '<SERVICE_REGISTERED>', 60_000, 50);
    expect(seen.indexOf('<FLOW_TAKEOVER>')).toBeLessThan(seen.indexOf('<SERVICE_REGISTERED>'));
    const order = ['<INIT>', '<CONFIG_READY>', '<FLOW_TAKEOVER>', '<SERVICE_REGISTERED>'];
    expect(seen.map((s) => order.indexOf(s))).toEqual([...seen.map((s) => order.indexOf(s))].sort());
    const health = JSON.parse(await admin('/health'));
    expect(health.statusHistory.map((h: { status: string }) => h.status)).toEqual(order);
    expect(health.capture.mode).toBe('applied');

    // inbound: a peer's call to A's service port is redirected through A's proxy (in# cluster)
    const inbound = await curlIn(ns.b, [`http://${ns.ipA}:8089/from-b`]);
    expect(inbound).toMatch(/^user-a GET \/from-b/);
    const clusters = await curlIn(ns.a, ['127.0.0.1:15000/clusters']);
    const rqTotal = clusters.split('\n').find((l) => l.startsWith('in#8089#user::') && l.endsWith('::rq_total::1'));
    expect(rqTotal).toBeDefined();

    const pids = [health.components.envoy.pid, health.components['mesh-dns'].pid];
    const result = await agent.stop('SIGTERM');
    expect(result.code).toBe(0);
    expect(await natRules(ns.a)).toBe(baseline);
    expect(pids.filter(pidAlive)).toEqual([]);
    expect(fs.existsSync(path.join(dir, 'run', 'iptables-state.json'))).toBe(false);
    await app.stop();
  });

  it("answers Istio's GET /healthz/ready and stops on POST /quitquitquit: 200 first, then rules removed, children gone, exit 0", async () => {
    const agent = startAgent();
    await eventually(async () => (await status()) === '<FLOW_TAKEOVER>', '<FLOW_TAKEOVER>', 60_000);
    // ready once traffic is taken over and both children serve (the application is not up: /health's business)
    expect(await adminCall('/healthz/ready')).toEqual({ code: 200, body: 'ready\n' });
    // state-changing: a GET is refused and changes nothing
    const get = await adminCall('/quitquitquit');
    expect(get.code).toBe(405);
    expect(get.body).toContain('this endpoint changes state: use POST');
    // hidden: /help is still exactly the source document's list
    const help = await admin('/help');
    expect(help).not.toMatch(/healthz\/ready|quitquitquit/);
    expect(await natRules(ns.a)).toMatch(/ISTIO_OUTPUT/);
    const health = JSON.parse(await admin('/health'));
    const pids = [health.components.envoy.pid, health.components['mesh-dns'].pid];

    expect(await adminCall('/quitquitquit', 'POST')).toEqual({ code: 200, body: 'OK\n' });
    const exited = await Promise.race([agent.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 60_000))]);
    expect(exited, agent.output()).toEqual({ code: 0, signal: null });
    expect(agent.output()).toContain('mesh-agent: stopped (POST /quitquitquit on the agent)');
    expect(await natRules(ns.a)).toBe(baseline);
    expect(fs.existsSync(path.join(dir, 'run', 'iptables-state.json'))).toBe(false);
    expect(pids.filter(pidAlive)).toEqual([]);
  });

  it('re-applies rules flushed from OUTPUT and from PREROUTING (onDrift: reapply), says so in /latest_error and /health, and traffic is captured again', async () => {
    const agent = startAgent({ config: configWith('reapply', { verifyIntervalMs: 300 }) });
    const app = spawnInNs(ns.a, process.execPath, [appScript, 'user-a', '8089']);
    processes.push(app);
    await eventually(async () => (await status()) === '<SERVICE_REGISTERED>', '<SERVICE_REGISTERED>', 60_000);
    const vipCall = () => curlIn(ns.a, ['--resolve', 'order:80:240.240.0.1', 'http://order/drift']);
    expect(await vipCall()).toMatch(/^order-b GET \/drift/);
    const applied = await natRules(ns.a);

    // the jumps go, the chains stay: verify must see the missing jumps
    await inNs(ns.a, 'iptables', ['-t', 'nat', '-F', 'OUTPUT']);
    const latest = await eventually(async () => {
      const e = JSON.parse(await admin('/latest_error'));
      return e.code === 'MESH_AGENT_CAPTURE_DRIFT' && e;
    }, 'the drift in /latest_error', 30_000);
    expect(latest.message).toContain('missing ipv4 -A OUTPUT -j ISTIO_OUTPUT; missing ipv4 -A OUTPUT -j DNS_OUTPUT');
    expect(latest.message).toContain('the agent re-applied them');
    expect(agent.output()).toContain('the iptables rules drifted from what the agent applied (2 difference(s)): missing ipv4 -A OUTPUT -j ISTIO_OUTPUT');
    await eventually(async () => (await natRules(ns.a)) === applied, 'the rules back, exactly as applied', 30_000);
    const health = await eventually(async () => {
      const h = JSON.parse(await admin('/health'));
      return h.capture.drift?.count === 1 && h.capture.drift.lastHealedAt && h;
    }, 'the drift recorded as healed', 30_000);
    expect(health.healthy).toBe(true);
    expect(health.capture.mode).toBe('applied');
    expect(health.capture.drift.lastDifferences).toEqual(['missing ipv4 -A OUTPUT -j ISTIO_OUTPUT', 'missing ipv4 -A OUTPUT -j DNS_OUTPUT']);
    expect(JSON.parse(await admin('/config_dump/pilot-agent')).capture.drift.count).toBe(1);
    // captured again: outbound through the proxy, DNS through mesh-dns
    expect(await vipCall()).toMatch(/^order-b GET \/drift/);
    expect((await inNs(ns.a, 'dig', ['+short', '+tries=1', '+time=5', `@${ns.ipB}`, 'order'])).trim()).toBe(ORDER_VIP);

    await inNs(ns.a, 'iptables', ['-t', 'nat', '-F', 'PREROUTING']);
    await eventually(async () => JSON.parse(await admin('/health')).capture.drift?.count === 2, 'the second drift', 30_000);
    expect(JSON.parse(await admin('/health')).capture.drift.lastDifferences).toEqual(['missing ipv4 -A PREROUTING -p tcp -j ISTIO_INBOUND']);
    await eventually(async () => (await natRules(ns.a)) === applied, 'PREROUTING back', 30_000);
    // inbound from the peer is captured again: through A's proxy (its in# cluster counts it)
    expect(await curlIn(ns.b, [`http://${ns.ipA}:8089/after-drift`])).toMatch(/^user-a GET \/after-drift/);
    const clusters = await curlIn(ns.a, ['127.0.0.1:15000/clusters']);
    expect(clusters.split('\n').some((l) => l.startsWith('in#8089#user::') && /::rq_total::[1-9]/.test(l))).toBe(true);

    expect((await agent.stop('SIGTERM')).code).toBe(0);
    expect(await natRules(ns.a)).toBe(baseline);
    await app.stop();
  });

  it('with onDrift: report leaves flushed rules missing and /health keeps saying which (503), until someone puts them back', async () => {
    const agent = startAgent({ config: configWith('report', { verifyIntervalMs: 300, onDrift: 'report' }) });
    await eventually(async () => (await status()) === '<FLOW_TAKEOVER>', '<FLOW_TAKEOVER>', 60_000);
    expect((await adminCall('/healthz/ready')).code).toBe(200);
    await inNs(ns.a, 'iptables', ['-t', 'nat', '-F', 'OUTPUT']);
    const drifted = await eventually(async () => {
      const r = await adminCall('/health');
      return JSON.parse(r.body).capture.mode === 'drifted' && r;
    }, '/health to report the drift', 30_000);
    expect(drifted.code).toBe(503);
    const problems: string = JSON.parse(drifted.body).problems.join('\n');
    expect(problems).toContain('the iptables rules drifted from what the agent applied: missing ipv4 -A OUTPUT -j ISTIO_OUTPUT; missing ipv4 -A OUTPUT -j DNS_OUTPUT');
    expect(problems).toContain('fix: find who changes the nat table');
    const latest = JSON.parse(await admin('/latest_error'));
    expect(latest).toMatchObject({ code: 'MESH_AGENT_CAPTURE_DRIFT' });
    expect(latest.message).toContain('missing ipv4 -A OUTPUT -j ISTIO_OUTPUT');
    const ready = await adminCall('/healthz/ready');
    expect(ready.code).toBe(503);
    expect(ready.body).toContain('missing ipv4 -A OUTPUT -j ISTIO_OUTPUT');

    // several checks later: still missing, still reported, reported once
    await new Promise((r) => setTimeout(r, 1500));
    const rules = await natRules(ns.a);
    expect(rules).not.toMatch(/-A OUTPUT .*-j (ISTIO_OUTPUT|DNS_OUTPUT)/);
    expect(rules).toMatch(/-A ISTIO_OUTPUT /);
    const health = JSON.parse(await admin('/health'));
    expect(health.capture).toMatchObject({ mode: 'drifted', drift: { count: 1 } });
    expect(agent.output().split('\n').filter((line) => line.includes('the iptables rules drifted'))).toHaveLength(1);

    // put back by hand: the agent sees it and is healthy again
    await inNs(ns.a, 'iptables', ['-t', 'nat', '-A', 'OUTPUT', '-j', 'ISTIO_OUTPUT']);
    await inNs(ns.a, 'iptables', ['-t', 'nat', '-A', 'OUTPUT', '-j', 'DNS_OUTPUT']);
    await eventually(async () => JSON.parse(await admin('/health')).capture.mode === 'applied', 'capture applied again', 30_000);
    expect((await adminCall('/healthz/ready')).code).toBe(200);

    expect((await agent.stop('SIGTERM')).code).toBe(0);
    expect(await natRules(ns.a)).toBe(baseline);
  });

  it('removes the stale rules of a crashed agent on the next start', async () => {
    const first = startAgent();
    await eventually(async () => (await status()) === '<FLOW_TAKEOVER>', '<FLOW_TAKEOVER>', 60_000);
    const health = JSON.parse(await admin('/health'));
    const children: number[] = [health.components.envoy.pid, health.components['mesh-dns'].pid];
    await first.stop('SIGKILL');
    // the crash leaves the rules (fail closed); children lose their parent and exit
    expect(await natRules(ns.a)).toMatch(/ISTIO_OUTPUT/);
    const second = startAgent();
    await eventually(async () => (await status()) === '<FLOW_TAKEOVER>', '<FLOW_TAKEOVER> after the crash', 60_000).catch((err) => {
      throw new Error(`${err.message}\nagent output:\n${second.output()}`);
    });
    expect(second.output()).toContain('removed stale iptables rules');
    // children that outlived the crash (they would hold the ports) were ended by the next start
    expect(children.filter(pidAlive)).toEqual([]);
    const rules = await natRules(ns.a);
    expect(rules.match(/-A OUTPUT .*-j ISTIO_OUTPUT/g)).toHaveLength(1);
    expect(JSON.parse(await admin('/health')).capture.mode).toBe('applied');
    expect((await second.stop('SIGTERM')).code).toBe(0);
    expect(await natRules(ns.a)).toBe(baseline);
  });

  it('without root stays at <CONFIG_READY> and says why and how to fix it', async () => {
    const agent = startAgent({ prefix: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'] });
    await eventually(async () => (await status()) === '<CONFIG_READY>' && JSON.parse(await admin('/health')).capture.mode === 'unavailable', 'capture found unavailable', 60_000);
    const health = JSON.parse(await admin('/health'));
    expect(health.healthy).toBe(false);
    expect(health.capture).toMatchObject({ mode: 'unavailable', code: 'MESH_AGENT_NOT_ROOT' });
    expect(health.problems.join('\n')).toMatch(/iptables rules need root.*fix: run mesh-agent as root/);
    const latest = JSON.parse(await admin('/latest_error'));
    expect(latest.code).toBe('MESH_AGENT_NOT_ROOT');
    expect(await status()).toBe('<CONFIG_READY>');
    const ready = await adminCall('/healthz/ready');
    expect(ready.code).toBe(503);
    expect(ready.body).toMatch(/^not ready: status is <CONFIG_READY>, not yet <FLOW_TAKEOVER>; traffic is not taken over: iptables rules need root/);
    // `mesh-agent wait` does not let the application start, and says why
    const wait = await inNs(ns.a, process.execPath, [agentBin, 'wait', '--timeout', '2']).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code?: number; stderr?: string }) => ({ code: err.code, stderr: err.stderr ?? '' }),
    );
    expect(wait.code).toBe(5);
    expect(wait.stderr).toMatch(/status is <CONFIG_READY>; \/health says: traffic is not taken over: iptables rules need root/);
    expect(await natRules(ns.a)).toBe(baseline);
    expect((await agent.stop('SIGTERM')).code).toBe(0);
  });
});
