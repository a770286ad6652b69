// The agent with the real proxy and mesh-dns as children, on ephemeral ports (traffic capture off
// here: iptables is exercised in capture.test.ts inside a network namespace).
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startApp, startTestAgent, type TestAgent, type TestApp } from './agent-fixture';
import { queryA } from './dns-client';
import { eventually, httpGet, httpRequest, steadyLoad } from './helpers';
import { pidAlive } from './netns';
import { preferredVip } from '../src/vip-allocation';

// mesh-dns answers a service with its own VIP (its hash slot in the default range)
const ORDER_VIP = preferredVip({ name: 'order', namespace: 'default' }, { vipCidr: '240.240.0.0/16', meshVip: '240.240.0.1' });

const exec = promisify(execFile);

/** The source document's pilot-agent /help, byte for byte. */
const EXPECTED_HELP = [
  'admin commands are:',
  '\tGET /health: print out the health info for data-plane',
  '\tGET /config_dump/{component}: print out the configuration of the component, component can be pilot-agent/envoy/mesh-dns',
  '\tGET /help: print out list of admin commands',
  '\tGET /config/agent: print out the pilot-agent configuration',
  '\tGET /config/services: print out the services info',
  '\tGET /config/global: print out the global mesh configuration',
  '\tGET /config/envoy: print out the envoy startup configuration',
  '\tGET /version: print out the pilot-agent version',
  '\tGET /version/{component}: print out the version of the component, component can be pilot-agent/envoy/mesh-dns',
  '\tGET /latest_error: print out the latest error info',
  '\tGET /status: print out the status, result could be <INIT>, <CONFIG_READY>, <FLOW_TAKEOVER>, <SERVICE_REGISTERED>',
  '\tGET /epoch/{component}: print out the component restart epoch, component can be envoy/mesh-dns',
  '\tPOST /hot_restart/{component}: hot restart the component process, component can be envoy/mesh-dns',
  '\tPUT /update: update the component',
  '\tPUT /logging/{scope}/{level}: dynamic change logging level, scope can be healthz/admin/ads/default/model, level can be debug/info/warn/error/none',
].map((line) => `${line}\n`).join('');

let user: TestApp;
let order1: TestApp;
let order2: TestApp;
let pay: TestApp;
let t: TestAgent;

beforeAll(async () => {
  user = await startApp('user');
  order1 = await startApp('order-1');
  order2 = await startApp('order-2');
  pay = await startApp('pay-1');
  t = await startTestAgent({
    appPort: user.port,
    registry: {
      services: [
        {
          name: 'order',
          instances: [
            { id: 'order-1', address: '127.0.0.1', port: order1.port },
            { id: 'order-2', address: '127.0.0.1', port: order2.port },
          ],
        },
      ],
    },
  });
});

afterAll(async () => {
  await t?.stop();
  await Promise.all([user, order1, order2, pay].map((a) => a?.close()));
});

const viaProxy = (url: string) => httpGet(url, { proxy: t.proxy });
const status = async () => (await httpGet(`${t.admin}/status`)).body;
const epoch = async (component: string) => Number((await httpGet(`${t.admin}/epoch/${component}`)).body.trim());

describe('mesh-agent with the real proxy and mesh-dns', () => {
  it('serves /help byte for byte as the source document prints it', async () => {
    const res = await httpGet(`${t.admin}/help`);
    expect(res.status).toBe(200);
    expect(res.body).toBe(EXPECTED_HELP);
  });

  it('registers the local service once its health check passes and reports healthy', async () => {
    await eventually(async () => (await status()) === '<SERVICE_REGISTERED>\n', '<SERVICE_REGISTERED>');
    const health = await httpGet(`${t.admin}/health`);
    expect(health.status).toBe(200);
    const report = JSON.parse(health.body);
    expect(report.capture.mode).toBe('disabled');
    expect(report.registry.registered).toEqual([expect.objectContaining({ service: 'user', address: '127.0.0.1', port: user.port, healthy: true })]);
    expect(report.statusHistory.map((s: { status: string }) => s.status)).toEqual(['<INIT>', '<CONFIG_READY>', '<FLOW_TAKEOVER>', '<SERVICE_REGISTERED>']);
  });

  it('routes by name through the proxy, alternating between the instances, and mesh-dns answers the VIP', async () => {
    const answers = new Set<string>();
    for (let i = 0; i < 4; i++) answers.add((await viaProxy('http://order/')).body.trim());
    expect([...answers].sort()).toEqual(['order-1', 'order-2']);
    const dns = await queryA(t.dnsPort, 'order');
    expect(dns).toMatchObject({ rcode: 0, addresses: [ORDER_VIP] });
    const { stdout } = await exec('dig', ['+short', '+tries=1', '+time=3', '@127.0.0.1', '-p', String(t.dnsPort), 'order.default.svc.cluster.local']);
    expect(stdout.trim()).toBe(ORDER_VIP);
  });

  it('shows its config, the app config directory, and the components\' dumps and versions', async () => {
    const agentCfg = JSON.parse((await httpGet(`${t.admin}/config/agent`)).body);
    expect(agentCfg.appConfigDir).toBe(t.dir);
    expect(agentCfg.config.registry.backend).toBe('file');
    const envoyStartup = JSON.parse((await httpGet(`${t.admin}/config/envoy`)).body);
    // one outbound cluster per service, named after the port most instances use (the lowest on a tie)
    const orderCluster = `out#${Math.min(order1.port, order2.port)}#order`;
    expect(envoyStartup.clusters.map((c: { name: string }) => c.name)).toEqual(expect.arrayContaining([`in#${user.port}#user`, orderCluster]));
    const envoyDump = await httpGet(`${t.admin}/config_dump/envoy`);
    expect(envoyDump.status).toBe(200);
    expect(envoyDump.body).toContain(orderCluster);
    const dnsDump = await httpGet(`${t.admin}/config_dump/mesh-dns`);
    expect(dnsDump.status).toBe(200);
    expect(dnsDump.body).toContain('order');
    const own = JSON.parse((await httpGet(`${t.admin}/config_dump/pilot-agent`)).body);
    expect(own.status).toBe('<SERVICE_REGISTERED>');
    expect((await httpGet(`${t.admin}/config_dump/nginx`)).status).toBe(404);
    const services = JSON.parse((await httpGet(`${t.admin}/config/services`)).body);
    expect(services.local.spec.services[0].name).toBe('user');
    const version = JSON.parse((await httpGet(`${t.admin}/version/mesh-dns`)).body);
    expect(version.component).toBe('mesh-dns');
    expect(version.version).toEqual(expect.any(String));
    expect((await httpGet(`${t.admin}/version/envoy`)).status).toBe(200);
  });

  it('changes a log scope with PUT and refuses a GET', async () => {
    const ok = await httpRequest('PUT', `${t.admin}/logging/healthz/debug`);
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body).levels.healthz).toBe('debug');
    expect((await httpGet(`${t.admin}/logging/healthz/debug`)).status).toBe(405);
    const bad = await httpRequest('PUT', `${t.admin}/logging/nope/debug`);
    expect(bad.status).toBe(400);
    expect(bad.body).toContain('healthz');
    expect((await httpGet(`${t.admin}/hot_restart/envoy`)).status).toBe(405);
  });

  it('restarts a proxy killed with kill -9 as epoch + 1, says why, and serves again', async () => {
    const before = await epoch('envoy');
    const pid = t.agent.supervisors.get('envoy')!.pid!;
    await exec('kill', ['-9', String(pid)]);
    await eventually(async () => (await epoch('envoy')) === before + 1, `epoch ${before + 1} at /epoch/envoy`);
    const res = await eventually(async () => {
      const r = await viaProxy('http://order/');
      return r.status === 200 ? r : undefined;
    }, 'traffic through the restarted proxy');
    expect(res.body).toMatch(/^order-[12]/);
    const latest = JSON.parse((await httpGet(`${t.admin}/latest_error`)).body);
    expect(latest.message).toMatch(new RegExp(`envoy epoch ${before} \\(pid ${pid}\\) died \\(killed by SIGKILL\\)`));
  });

  it('hot-restarts the proxy under steady load with zero failed requests', async () => {
    const before = await epoch('envoy');
    const load = steadyLoad(
      async () => {
        const r = await viaProxy('http://order/');
        if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.body.slice(0, 200)}`);
      },
      { workers: 4, maxCount: 50_000, maxMs: 120_000 },
    );
    await eventually(() => load.count > 50, 'load to run');
    const res = await httpRequest('POST', `${t.admin}/hot_restart/envoy`);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({ component: 'envoy', epoch: before + 1, previousEpoch: before });
    const countAfterRestart = load.count;
    await eventually(() => load.count > countAfterRestart + 100, 'load on the new epoch');
    const result = await load.stop();
    expect(result.failures).toEqual([]);
    expect(await epoch('envoy')).toBe(before + 1);
  });

  it('hot-restarts mesh-dns under steady query load with zero failed queries', async () => {
    const before = await epoch('mesh-dns');
    const load = steadyLoad(
      async () => {
        const a = await queryA(t.dnsPort, 'order');
        if (a.rcode !== 0 || a.addresses[0] !== ORDER_VIP) throw new Error(`rcode ${a.rcode} ${a.addresses.join(',')}`);
      },
      { workers: 4, maxCount: 50_000, maxMs: 120_000 },
    );
    await eventually(() => load.count > 50, 'load to run');
    const res = await httpRequest('POST', `${t.admin}/hot_restart/mesh-dns`);
    expect(res.status).toBe(200);
    const countAfterRestart = load.count;
    await eventually(() => load.count > countAfterRestart + 100, 'queries on the new epoch');
    const result = await load.stop();
    expect(result.failures).toEqual([]);
    expect(await epoch('mesh-dns')).toBe(before + 1);
  });

  it('PUT /update adds a service that then resolves and routes, without a restart', async () => {
    const epochs = [await epoch('envoy'), await epoch('mesh-dns')];
    expect((await viaProxy('http://pay/')).status).not.toBe(200);
    const update = stringify({ services: [{ name: 'pay', vip: '240.240.0.9', instances: [{ id: 'pay-1', address: '127.0.0.1', port: pay.port }] }] });
    const res = await httpRequest('PUT', `${t.admin}/update`, update);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({ services: 1 });
    const { stdout } = await exec('dig', ['+short', '+tries=1', '+time=3', '@127.0.0.1', '-p', String(t.dnsPort), 'pay']);
    expect(stdout.trim()).toBe('240.240.0.9');
    const routed = await viaProxy('http://pay/');
    expect(routed.status).toBe(200);
    expect(routed.body.trim()).toBe('pay-1');
    // the registry's own services stay
    expect((await viaProxy('http://order/')).status).toBe(200);
    expect([await epoch('envoy'), await epoch('mesh-dns')]).toEqual(epochs);
  });

  it('PUT /update refuses invalid input whole and keeps the old config', async () => {
    const bad = stringify({ services: [{ name: 'Bad_Name', instances: [{ id: 'x', address: 'not-an-ip', port: 80 }] }], global: { retries: { numRetries: -1 } } });
    const res = await httpRequest('PUT', `${t.admin}/update`, bad);
    expect(res.status).toBe(400);
    expect(res.body).toMatch(/services\[0\]\.name/);
    expect(res.body).toMatch(/services\[0\]\.instances\[0\]\.address/);
    expect(res.body).toMatch(/global\.retries\.numRetries/);
    expect((await httpRequest('PUT', `${t.admin}/update`, 'nonsense: [')).status).toBe(400);
    expect((await httpRequest('PUT', `${t.admin}/update`, 'other: 1')).status).toBe(400);
    // still in force
    expect((await viaProxy('http://pay/')).body.trim()).toBe('pay-1');
    expect((await queryA(t.dnsPort, 'pay')).addresses).toEqual(['240.240.0.9']);
  });

  it('follows a change of the registry file within a second or so', async () => {
    const extra = await startApp('order-3');
    try {
      const file = path.join(t.dir, 'registry.yaml');
      fs.writeFileSync(file, stringify({ services: [{ name: 'order', instances: [{ id: 'order-3', address: '127.0.0.1', port: extra.port }] }] }));
      await eventually(async () => (await viaProxy('http://order/')).body.trim() === 'order-3', 'order-3 to answer');
      for (let i = 0; i < 4; i++) expect((await viaProxy('http://order/')).body.trim()).toBe('order-3');
    } finally {
      await extra.close();
    }
  });

  it('marks the local instance unhealthy when its health check fails, and healthy again', async () => {
    user.healthy = false;
    await eventually(async () => JSON.parse((await httpGet(`${t.admin}/health`)).body).registry.registered[0]?.healthy === false, 'unhealthy registration');
    const health = await httpGet(`${t.admin}/health`);
    expect(health.status).toBe(503);
    expect(JSON.parse(health.body).problems.join('\n')).toContain('HTTP 503');
    user.healthy = true;
    await eventually(async () => (await httpGet(`${t.admin}/health`)).status === 200, 'healthy again');
  });

  it('stops cleanly: children gone, sockets closed, registration removed', async () => {
    const pids = [t.agent.supervisors.get('envoy')!.pid!, t.agent.supervisors.get('mesh-dns')!.pid!];
    await t.agent.stop();
    expect(pids.filter(pidAlive)).toEqual([]);
    expect(t.agent.registrations()).toEqual([]);
    await expect(httpGet(`${t.admin}/status`, { timeoutMs: 2000 })).rejects.toThrow();
    await expect(viaProxy('http://order/')).rejects.toThrow();
  });
});
