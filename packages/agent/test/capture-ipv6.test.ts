// Dual-stack capture through the agent (iptables.ipv6: true), with real iptables and ip6tables in
// network namespaces this test creates: node.ip6 detected, both tables hold the chains, an IPv6
// inbound connection from a peer namespace reaches the application through the proxy, IPv6
// outbound to a captured range goes through the proxy, and IPv4 keeps working on the dual-stack
// listener. Without an IPv6 address to capture, the agent refuses to start and says what to set.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { tempDir } from './agent-fixture';
import { eventually } from './helpers';
import { createNsPair, inNs, ipv6NatUnavailable, natRules, nsAdminClient, run, skipNetnsTests, spawnInNs, writeNsAgentFiles, type NsPair, type NsProcess } from './netns';
import { preferredVip } from '../src/vip-allocation';

// mesh-dns answers a service with its own VIP (its hash slot in the default range)
const ORDER_VIP = preferredVip({ name: 'order', namespace: 'default' }, { vipCidr: '240.240.0.0/16', meshVip: '240.240.0.1' });

const exec = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const agentBin = path.resolve(here, '../bin/mesh-agent.js');
const appScript = path.join(here, 'fixtures', 'http-app.mjs');
const skipNs = skipNetnsTests();
const noV6 = skipNs ? undefined : ipv6NatUnavailable();
if (noV6) console.warn(`skipping the dual-stack capture tests: ${noV6}`);
/** A captured IPv6 "VIP" range (iptables.includeOutboundCidrs) and one address in it, served by the peer namespace when not captured. */
const VIP6_RANGE = 'fd00:240::/64';
const VIP6 = 'fd00:240::1';

describe.skipIf(skipNs || noV6 !== undefined)('dual-stack traffic capture (iptables.ipv6) in network namespaces', { timeout: 240_000 }, () => {
  let ns: NsPair;
  let dir: string;
  const processes: NsProcess[] = [];
  let baseline4: string;
  let baseline6: string;
  let baseConfig: Record<string, any>;

  const { curlIn, admin, status } = nsAdminClient(() => ns.a);

  function writeConfig(name: string, config: Record<string, any>): string {
    const file = path.join(dir, `agent-${name}.yaml`);
    fs.writeFileSync(file, stringify(config));
    return file;
  }

  beforeAll(async () => {
    ns = await createNsPair('ip6', 78, { v6: true });
    dir = tempDir('mesh-agent-ipv6-');
    const files = writeNsAgentFiles(dir, {
      nodeIp: ns.ipA,
      services: [{ name: 'user', ports: [{ targetPort: 8089 }], healthCheck: { path: '/health' } }],
      registry: [{ name: 'order', instances: [{ id: 'order-b', address: ns.ipB, port: 8080 }] }],
      dnsUpstream: `${ns.ipB}:53`,
    });
    // node.ip6 is not set: detected from the namespace's global IPv6 address
    baseConfig = { ...files.config, iptables: { ...files.config.iptables, ipv6: true, includeOutboundCidrs: [VIP6_RANGE] } };
    await inNs(ns.b, 'ip', ['-6', 'addr', 'add', `${VIP6}/128`, 'dev', 'lo']);
    const peer = spawnInNs(ns.b, process.execPath, [appScript, 'order-b', '8080']);
    processes.push(peer);
    await eventually(() => peer.output().includes('listening'), 'the peer app');
    baseline4 = await natRules(ns.a);
    baseline6 = await natRules(ns.a, 'ip6tables-save');
  });

  afterAll(async () => {
    for (const p of processes.reverse()) await p.stop('SIGKILL').catch(() => undefined);
    await ns?.remove();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('captures both families: ip6tables holds the chains for node.ip6 (detected), IPv6 inbound reaches the app through the proxy, IPv4 still works', async () => {
    const agent = spawnInNs(ns.a, process.execPath, [agentBin, 'start', '--config', writeConfig('dual', baseConfig)]);
    processes.push(agent);
    const app = spawnInNs(ns.a, process.execPath, [appScript, 'user-a', '8089']);
    processes.push(app);
    await eventually(async () => (await status()) === '<SERVICE_REGISTERED>', '<SERVICE_REGISTERED>', 60_000).catch((err) => {
      throw new Error(`${err.message}\nagent output:\n${agent.output()}`);
    });
    expect(JSON.parse(await admin('/config_dump/pilot-agent')).nodeIp6).toBe(ns.ip6A);
    expect(JSON.parse(await admin('/health')).capture.mode).toBe('applied');

    const nat4 = await natRules(ns.a);
    expect(nat4).toContain(`-A ISTIO_INBOUND -d ${ns.ipA}/32 -p tcp -m tcp --dport 8089 -j ISTIO_REDIRECT`);
    expect(nat4).toContain('-A DNS_OUTPUT -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.1:55354');
    const nat6 = await natRules(ns.a, 'ip6tables-save');
    expect(nat6).toContain('-A PREROUTING -p tcp -j ISTIO_INBOUND');
    expect(nat6).toContain(`-A ISTIO_INBOUND -d ${ns.ip6A}/128 -p tcp -m tcp --dport 8089 -j ISTIO_REDIRECT`);
    expect(nat6).toContain('-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001');
    expect(nat6).toContain(`-A ISTIO_OUTPUT -d ${VIP6_RANGE} -p tcp -j DNAT --to-destination [${ns.ip6A}]:15001`);
    // mesh-dns serves 127.0.0.1 only: IPv6 DNS is not DNATed to nothing
    expect(nat6).not.toContain('DNS_OUTPUT');

    // IPv6 inbound from the peer: the app listens on IPv4 only, so an answer means the proxy delivered it
    const inbound6 = await curlIn(ns.b, ['-g', `http://[${ns.ip6A}]:8089/from-b-v6`]);
    expect(inbound6).toMatch(/^user-a GET \/from-b-v6/);
    const rqTotal = async () => Number((await curlIn(ns.a, ['127.0.0.1:15000/clusters'])).split('\n').find((l) => l.startsWith('in#8089#user::') && l.includes('::rq_total::'))?.split('::').at(-1));
    const afterV6 = await rqTotal();
    expect(afterV6).toBeGreaterThanOrEqual(1);
    // IPv4 inbound on the same (dual-stack) listener
    expect(await curlIn(ns.b, [`http://${ns.ipA}:8089/from-b-v4`])).toMatch(/^user-a GET \/from-b-v4/);
    expect(await rqTotal()).toBe(afterV6 + 1);
    // outbound: IPv4 to the mesh VIP and IPv6 to the captured range both go through the proxy, routed by Host
    expect(await curlIn(ns.a, ['--resolve', 'order:80:240.240.0.1', 'http://order/v4-out'])).toMatch(/^order-b GET \/v4-out host=order/);
    expect(await curlIn(ns.a, ['-g', '-H', 'Host: order', `http://[${VIP6}]/v6-out`])).toMatch(/^order-b GET \/v6-out host=order/);
    // IPv4 DNS capture as before
    expect((await inNs(ns.a, 'dig', ['+short', '+tries=1', '+time=5', `@${ns.ipB}`, 'order'])).trim()).toBe(ORDER_VIP);

    expect((await agent.stop('SIGTERM')).code).toBe(0);
    expect(await natRules(ns.a)).toBe(baseline4);
    expect(await natRules(ns.a, 'ip6tables-save')).toBe(baseline6);
    await app.stop();
  });

  it('with iptables.ipv6 and no IPv6 address to capture: exits 2 naming node.ip6, nothing applied', async () => {
    // a namespace with loopback only: no global IPv6 address to detect
    const bare = `ma-ip6-bare-${process.pid}`;
    await run('ip', ['netns', 'add', bare]);
    try {
      await inNs(bare, 'ip', ['link', 'set', 'lo', 'up']);
      const config = writeConfig('no-ip6', { ...baseConfig, node: { ip: '127.0.0.1', serviceName: 'user' } });
      const result = await exec('ip', ['netns', 'exec', bare, process.execPath, agentBin, 'start', '--config', config], { timeout: 60_000 }).then(
        () => ({ code: 0, stderr: '' }),
        (err: { code?: number; stderr?: string }) => ({ code: err.code, stderr: err.stderr ?? '' }),
      );
      expect(result.code).toBe(2);
      expect(result.stderr).toContain('error [MESH_CONFIG_INVALID]: iptables.ipv6 is on, but node.ip6 is not set and this host has no global IPv6 address to detect');
      expect(result.stderr).toContain("hint: set node.ip6 to the node's IPv6 address");
      expect(await natRules(bare)).not.toMatch(/ISTIO|DNS_OUTPUT/);
      expect(await natRules(bare, 'ip6tables-save')).not.toMatch(/ISTIO|DNS_OUTPUT/);
    } finally {
      await run('ip', ['netns', 'del', bare]).catch(() => undefined);
    }
  });
});
