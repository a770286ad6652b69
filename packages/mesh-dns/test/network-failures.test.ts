// Network conditions must never kill mesh-dns. In a network namespace this test creates (only `lo`
// up, so 198.18.99.1 has no route), the real bin forwards to 198.18.99.1: every outside name gets
// SERVFAIL at once, mesh names keep their answer, the upstream is reported unhealthy with the errno
// and what to do; a firewall rule that makes `send` fail (EPERM) likewise; once a resolver answers
// on that address the upstream is healthy again. A datagram from source port 0 is dropped.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stopChild, tempDir, waitFor } from './helpers';

const execFileAsync = promisify(execFile);
const NS = `mdns-net-${process.pid}`;
const UPSTREAM = '198.18.99.1';
const UPSTREAM_NAME = `${UPSTREAM}:53`;
const TIMEOUT_MS = 5000;
const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'mesh-dns.js');

const inNs = (...args: string[]): string => execFileSync('ip', ['netns', 'exec', NS, ...args], { encoding: 'utf8', timeout: 30_000 });

/** Real dig inside the namespace; the status, the answers and how long it took. */
async function digNs(name: string, extra: string[] = []): Promise<{ status: string; answers: string[]; ms: number; raw: string }> {
  const started = Date.now();
  const { stdout } = await execFileAsync('ip', ['netns', 'exec', NS, 'dig', '@127.0.0.1', '-p', '55354', name, 'A', '+tries=1', '+timeout=8', '+nocookie', ...extra], { timeout: 30_000 }).catch(
    (err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }),
  );
  const answers = [...stdout.matchAll(/^\S+\s+\d+\s+IN\s+A\s+(\S+)$/gm)].map((m) => m[1]);
  return { status: /status: ([A-Z]+)/.exec(stdout)?.[1] ?? 'NO_ANSWER', answers, ms: Date.now() - started, raw: stdout };
}

async function admin(route: string): Promise<{ status: number; body: string }> {
  const { stdout } = await execFileAsync('ip', ['netns', 'exec', NS, 'curl', '-s', '-m', '10', '-w', '\n%{http_code}', `http://127.0.0.1:15021${route}`]);
  const cut = stdout.lastIndexOf('\n');
  return { status: Number(stdout.slice(cut + 1)), body: stdout.slice(0, cut) };
}

const json = async (route: string): Promise<any> => JSON.parse((await admin(route)).body);
const upstreamHealth = async (): Promise<any> => (await json('/config_dump')).upstreams.health[UPSTREAM_NAME];
const healthyGauge = async (): Promise<string | undefined> =>
  /^mesh_dns_upstream_healthy\{upstream="198\.18\.99\.1:53"\} (\d)$/m.exec((await admin('/metrics')).body)?.[1];

describe('network failures (network namespace, only lo up)', () => {
  const children: ChildProcess[] = [];
  let dir: string;
  let meshDns: ChildProcess;
  let stderr = '';

  const expectAlive = (): void => {
    expect(meshDns.exitCode).toBeNull();
    expect(meshDns.signalCode).toBeNull();
    expect(stderr).toBe('');
  };

  beforeAll(async () => {
    dir = tempDir('net');
    fs.chmodSync(dir, 0o755);
    execFileSync('ip', ['netns', 'add', NS]);
    inNs('ip', 'link', 'set', 'lo', 'up');
    meshDns = spawn('ip', ['netns', 'exec', NS, process.execPath, bin, '--listen', '127.0.0.1:55354', '--admin', '127.0.0.1:15021', '--service', 'order',
      '-u', UPSTREAM, '--upstream-timeout', String(TIMEOUT_MS), '--log-level', 'none'], { stdio: ['ignore', 'ignore', 'pipe'] });
    meshDns.stderr!.on('data', (d) => (stderr += d));
    children.push(meshDns);
    await waitFor(async () => (await digNs('order', ['+timeout=1'])).answers[0] === '240.240.0.1' && (await admin('/status')).status === 200, 'mesh-dns in the namespace');
  });

  afterAll(async () => {
    for (const child of children) await stopChild(child);
    try {
      execFileSync('ip', ['netns', 'delete', NS]);
    } catch {
      // already gone
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('an unreachable upstream (ENETUNREACH): SERVFAIL at once over UDP and TCP, mesh names still answered, the upstream unhealthy and why', async () => {
    expect(inNs('ip', 'route', 'show')).toBe(''); // no route anywhere: connect() to the upstream fails with ENETUNREACH
    for (const extra of [[], ['+tcp']]) {
      const r = await digNs('example.com', extra);
      expect(r.status).toBe('SERVFAIL');
      expect(r.ms).toBeLessThan(TIMEOUT_MS); // failed on the errno, not after waiting out the upstream timeout
      expectAlive();
      const mesh = await digNs('order', extra);
      expect(mesh.answers).toEqual(['240.240.0.1']);
    }
    const health = await upstreamHealth();
    expect(health).toMatchObject({ healthy: false, lastErrno: 'ENETUNREACH', lastReason: 'unreachable' });
    expect(health.consecutiveFailures).toBeGreaterThanOrEqual(2);
    expect(await healthyGauge()).toBe('0');
    const latest = await json('/latest_error');
    expect(latest.code).toBe('MESH_DNS_UPSTREAMS_FAILED');
    expect(latest.message).toContain(`every upstream failed for example.com`);
    expect(latest.message).toContain(`${UPSTREAM_NAME}: network unreachable (ENETUNREACH)`);
    expect(latest.hint).toContain(`ip route get ${UPSTREAM}`);
    // /health probes the upstream the same way (this probe crashed mesh-dns too): 200, upstream unreachable
    const probed = await admin('/health');
    expect(probed.status).toBe(200);
    const [up] = JSON.parse(probed.body).upstreams;
    expect(up).toMatchObject({ upstream: UPSTREAM_NAME, reachable: false, healthy: false, lastErrno: 'ENETUNREACH' });
    expectAlive();
  });

  it('a send refused by the kernel (an OUTPUT rule drops it: EPERM): SERVFAIL at once, the upstream unhealthy and why', async () => {
    inNs('ip', 'addr', 'add', `${UPSTREAM}/32`, 'dev', 'lo'); // reachable now, but
    inNs('iptables', '-A', 'OUTPUT', '-d', UPSTREAM, '-p', 'udp', '--dport', '53', '-j', 'DROP');
    try {
      expect(inNs('iptables-save', '-t', 'filter')).toContain(`-A OUTPUT -d ${UPSTREAM}/32 -p udp -m udp --dport 53 -j DROP`);
      const r = await digNs('blocked.example.com');
      expect(r.status).toBe('SERVFAIL');
      expect(r.ms).toBeLessThan(TIMEOUT_MS);
      expectAlive();
      expect(await upstreamHealth()).toMatchObject({ healthy: false, lastErrno: 'EPERM', lastReason: 'blocked' });
      const latest = await json('/latest_error');
      expect(latest.message).toContain('blocked.example.com');
      expect(latest.message).toContain('(EPERM)');
      expect(latest.hint).toContain('iptables -S OUTPUT');
      expect((await digNs('order')).answers).toEqual(['240.240.0.1']);
    } finally {
      inNs('iptables', '-D', 'OUTPUT', '-d', UPSTREAM, '-p', 'udp', '--dport', '53', '-j', 'DROP');
    }
  });

  it('is healthy again once the upstream answers', async () => {
    const dnsmasq = spawn('ip', ['netns', 'exec', NS, 'dnsmasq', '--no-daemon', '--port=53', `--listen-address=${UPSTREAM}`, '--bind-interfaces', '--no-resolv', '--no-hosts',
      '--conf-file=/dev/null', `--pid-file=${path.join(dir, 'dnsmasq.pid')}`, '--user=root', '--address=/ext.test/198.18.5.5'], { stdio: 'ignore' });
    children.push(dnsmasq);
    const r = await waitFor(async () => {
      const answer = await digNs('www.ext.test', ['+timeout=1']);
      return answer.answers[0] === '198.18.5.5' ? answer : undefined;
    }, 'an answer through mesh-dns from the resolver now on the upstream address');
    expect(r.status).toBe('NOERROR');
    const health = await upstreamHealth();
    expect(health).toMatchObject({ healthy: true, consecutiveFailures: 0 });
    expect(Date.parse(health.lastSuccess)).toBeGreaterThan(Date.parse(health.lastFailure));
    expect(await healthyGauge()).toBe('1');
    expectAlive();
  });

  it('drops a datagram from source port 0 (it cannot be answered) and keeps serving', async () => {
    // SNAT the client's source port to 0 on the way in: the datagram reaches mesh-dns from port 0
    const rule = ['POSTROUTING', '-p', 'udp', '--dport', '55354', '-j', 'SNAT', '--to-source', '127.0.0.1:0'];
    const droppedBefore = (await json('/config_dump')).stats.droppedPackets;
    inNs('iptables', '-t', 'nat', '-A', ...rule);
    try {
      const r = await digNs('order', ['+timeout=1']);
      expect(r.status).toBe('NO_ANSWER');
    } finally {
      inNs('iptables', '-t', 'nat', '-D', ...rule);
    }
    expectAlive();
    expect((await json('/config_dump')).stats.droppedPackets).toBeGreaterThan(droppedBefore);
    expect((await digNs('order')).answers).toEqual(['240.240.0.1']);
  });
});
