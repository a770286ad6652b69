// `mesh-agent demo` as a user runs it: a process, the commands it prints, then Ctrl-C (SIGINT).
// Ports are free ones passed with the demo's port flags (the usual ones may be taken on this machine).
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { startDnsmasq, type Dnsmasq } from './dnsmasq';
import { freePort } from './etcd-server';
import { eventually } from './helpers';
import { pidAlive } from './netns';
import { preferredVip } from '../src/vip-allocation';

// mesh-dns answers a service with its own VIP (its hash slot in the default range)
const ORDER_VIP = preferredVip({ name: 'order', namespace: 'default' }, { vipCidr: '240.240.0.0/16', meshVip: '240.240.0.1' });

const exec = promisify(execFile);
const agentBin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../bin/mesh-agent.js');

describe('mesh-agent demo', { timeout: 120_000 }, () => {
  const started: number[] = [];
  let dnsmasq: Dnsmasq | undefined;
  afterAll(() => {
    for (const pid of started) if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
    dnsmasq?.stop();
  });

  it('runs with no configuration, answers the printed commands, and stops cleanly on SIGINT', async () => {
    const ports = { admin: await freePort(), proxy: await freePort(), proxyAdmin: await freePort(), dns: await freePort(), dnsAdmin: await freePort(), app: await freePort() };
    // names outside the mesh go to a resolver this test starts, never to the machine's own
    dnsmasq = await startDnsmasq({ 'outside.test': '198.18.5.5' });
    const child = spawn(
      process.execPath,
      [agentBin, 'demo', '--admin-port', String(ports.admin), '--proxy-port', String(ports.proxy), '--proxy-admin-port', String(ports.proxyAdmin), '--dns-port', String(ports.dns), '--dns-admin-port', String(ports.dnsAdmin), '--app-port', String(ports.app), '--dns-upstream', dnsmasq.upstream],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    started.push(child.pid!);
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await eventually(() => {
      if (child.exitCode !== null) throw new Error(`the demo exited with ${child.exitCode}`);
      return out.includes('Press Ctrl-C');
    }, 'the demo to print what to try', 60_000).catch((err) => {
      throw new Error(`${err.message}\n${out}`);
    });
    // the printed commands, with the ports in use
    expect(out).toContain(`curl -x 127.0.0.1:${ports.proxy} http://order/`);
    expect(out).toContain(`dig @127.0.0.1 -p ${ports.dns} order`);
    expect(out).toContain(`curl 127.0.0.1:${ports.admin}/status`);
    expect(out).toContain(`curl -s 127.0.0.1:${ports.proxyAdmin}/clusters | grep "in#"`);
    expect(out).toContain(`curl -s 127.0.0.1:${ports.proxyAdmin}/certs`);

    const curl = async (...args: string[]) => (await exec('curl', ['-s', '--max-time', '10', ...args])).stdout;
    // the demo's traffic rule: canary 80/20 between order's versions (both seen in 60 calls but once in 600,000 runs), beta users on v2
    const answers = new Set<string>();
    for (let i = 0; i < 60 && answers.size < 2; i++) answers.add((await curl('-x', `127.0.0.1:${ports.proxy}`, 'http://order/')).split(' (')[0]);
    expect([...answers].sort()).toEqual(['hello from order-1', 'hello from order-2']);
    for (let i = 0; i < 3; i++) expect((await curl('-x', `127.0.0.1:${ports.proxy}`, '-H', 'x-user: beta', 'http://order/')).split(' (')[0]).toBe('hello from order-2');
    const rulesSummary = JSON.parse(await curl(`127.0.0.1:${ports.admin}/diagnostics/summary`));
    expect(rulesSummary.rules).toEqual([expect.objectContaining({ service: 'order', lines: [expect.stringContaining('beta-users: match header x-user exact beta -> v2'), expect.stringContaining('canary: every request -> v1 80%, v2 20%')] })]);
    expect((await exec('dig', ['+short', '+tries=1', '+time=5', '@127.0.0.1', '-p', String(ports.dns), 'order'])).stdout.trim()).toBe(ORDER_VIP);
    // --dns-upstream: a name outside the mesh is forwarded to the given resolver
    expect((await exec('dig', ['+short', '+tries=1', '+time=5', '@127.0.0.1', '-p', String(ports.dns), 'outside.test'])).stdout.trim()).toBe('198.18.5.5');
    expect(await curl(`127.0.0.1:${ports.admin}/status`)).toBe('<SERVICE_REGISTERED>\n');
    const inLines = (await curl(`127.0.0.1:${ports.proxyAdmin}/clusters`)).split('\n').filter((l) => l.includes('in#'));
    expect(inLines).toContain(`in#${ports.app}#user::127.0.0.1:${ports.app}::health_flags::healthy`);
    // mTLS is on: the local service's certificate, with its SPIFFE ID, served by the proxy
    const certs = JSON.parse(await curl(`127.0.0.1:${ports.proxyAdmin}/certs`)).certificates;
    expect(certs).toHaveLength(1);
    expect(certs[0].cert_chain[0].subject_alt_names).toEqual([{ uri: 'spiffe://cluster.local/ns/default/sa/user' }]);
    expect(Number(certs[0].cert_chain[0].days_until_expiration)).toBeGreaterThan(0);
    const health = JSON.parse(await curl(`127.0.0.1:${ports.admin}/health`));
    expect(health.registry.registered[0].metadata.identity).toBe('spiffe://cluster.local/ns/default/sa/user');
    expect(health.capture.mode).toBe('disabled');
    const children = [health.components.envoy.pid, health.components['mesh-dns'].pid];
    // nothing is redirected to the proxy in the demo, so it stays off the network
    expect(JSON.parse(await curl(`127.0.0.1:${ports.admin}/config/envoy`)).listener.address).toBe('127.0.0.1');
    // issue 15: the TCP peer clock is routed by its own VIP and port (no HTTP route), shown as tcp on the home page
    const clockVip = (await exec('dig', ['+short', '+tries=1', '+time=5', '@127.0.0.1', '-p', String(ports.dns), 'clock'])).stdout.trim();
    expect(clockVip).toMatch(/^240\.240\.\d+\.\d+$/);
    expect(clockVip).not.toBe(ORDER_VIP);
    const clockRoute = (await curl(`127.0.0.1:${ports.proxyAdmin}/clusters`)).split('\n').find((l) => /^out#\d+#clock::tcp_route::/.test(l));
    expect(clockRoute).toMatch(new RegExp(`^out#(\\d+)#clock::tcp_route::${clockVip.replace(/\./g, '\\.')}:\\1$`));
    const clockPort = Number(/^out#(\d+)#/.exec(clockRoute!)![1]);
    // the printed way to reach it through the mesh: a CONNECT tunnel through the proxy's listener (no capture in the demo)
    expect(out).toContain(`curl -s --max-time 2 -p -x 127.0.0.1:${ports.proxy} telnet://clock:${clockPort} </dev/null`);
    // server-first: the clock greets a client that sends nothing, through the proxy (counted by its out# cluster)
    const clockCx = async () => Number(/^cluster\.out#\d+#clock\.upstream_cx_total: (\d+)$/m.exec(await curl(`127.0.0.1:${ports.proxyAdmin}/stats`))?.[1] ?? 0);
    const cxBefore = await clockCx();
    const tunnelled = await exec('curl', ['-s', '--max-time', '2', '-p', '-x', `127.0.0.1:${ports.proxy}`, `telnet://clock:${clockPort}`], { timeout: 10_000 }).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }));
    expect(tunnelled.stdout).toMatch(/^clock-1: the time is \d{4}-/);
    expect(await clockCx()).toBe(cxBefore + 1);
    const summary = JSON.parse(await curl(`127.0.0.1:${ports.admin}/diagnostics/summary`));
    expect(summary.services.find((s: { name: string }) => s.name === 'clock')).toMatchObject({ cluster: `out#${clockPort}#clock`, protocol: `tcp ${clockVip}:${clockPort}` });
    const dir = JSON.parse(await curl(`127.0.0.1:${ports.admin}/config/agent`)).appConfigDir;
    expect(fs.existsSync(dir)).toBe(true);

    const wait = await exec(process.execPath, [agentBin, 'wait', '--registered', '--timeout', '30', '--admin', `http://127.0.0.1:${ports.admin}`]);
    expect(wait.stdout).toContain('sidecar ready: <SERVICE_REGISTERED>');

    child.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(out).toContain('mesh-agent demo: stopped (SIGINT)');
    expect(children.filter(pidAlive)).toEqual([]);
    expect(fs.existsSync(dir)).toBe(false);
    // every port is free again
    await expect(exec('curl', ['-s', '--max-time', '3', `127.0.0.1:${ports.admin}/status`])).rejects.toThrow();
    await expect(exec('curl', ['-s', '--max-time', '3', `127.0.0.1:${ports.app}/`])).rejects.toThrow();
  });
});
