// The bin from outside: flags, config files, exit codes, and the agent's control protocol over IPC.
import { execFile, fork, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dig, freePort, startBlackhole, startDnsmasq, stopChild, tempDir, waitFor, type Dnsmasq } from './helpers';

const execFileAsync = promisify(execFile);
const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(packageDir, 'bin', 'mesh-dns.js');

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('mesh-dns bin', () => {
  let upstream: Dnsmasq;
  const children: ChildProcess[] = [];
  const dirs: string[] = [];

  beforeAll(async () => {
    upstream = await startDnsmasq();
  });
  afterAll(async () => {
    await Promise.all(children.map(stopChild));
    await upstream?.stop();
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('prints its help through npx from the built workspace', async () => {
    // packages/agent depends on @mesh-agent/mesh-dns, so pnpm links the bin there
    const { stdout } = await execFileAsync('npx', ['--no-install', 'mesh-dns', '--help'], { cwd: path.join(packageDir, '..', 'agent'), timeout: 60_000 });
    expect(stdout).toMatch(/^Usage: mesh-dns \[options\]/);
    expect(stdout).toContain('--upstream IP[:PORT]');
    const direct = await run(['--help']);
    expect(direct.code).toBe(0);
    expect(direct.stdout).toBe(stdout);
    const version = await run(['--version']);
    expect(version.stdout).toMatch(/^mesh-dns \d+\.\d+\.\d+\n$/);
  });

  it('exits 2 with a clear error for bad flags, a bad config and a looping upstream', async () => {
    const unknown = await run(['--frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/mesh-dns: error \[MESH_DNS_USAGE\]: Unknown option '--frobnicate'/);
    expect(unknown.stderr).toMatch(/hint: run mesh-dns --help/);

    const dir = tempDir('cli-bad');
    dirs.push(dir);
    const file = path.join(dir, 'dns.yaml');
    fs.writeFileSync(file, 'listen:\n  port: 55354\nttl: -1\nupstreams:\n  - not-an-ip\n');
    const bad = await run(['--config', file, '--no-admin']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('[MESH_CONFIG_INVALID]');
    expect(bad.stderr).toMatch(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:3: ttl`));
    expect(bad.stderr).toMatch(/:5: upstreams(\[0\]|\.0)/);

    const port = await freePort();
    const loop = await run(['--listen', `127.0.0.1:${port}`, '--upstream', `127.0.0.1:${port}`, '--no-admin']);
    expect(loop.code).toBe(2);
    expect(loop.stderr).toMatch(/\[MESH_DNS_UPSTREAM_LOOP\]: upstreams: upstream 127\.0\.0\.1:\d+ is this mesh-dns itself/);
  });

  it('serves mesh names and forwards the rest when run standalone, reloads its config file, exits 0 on SIGTERM', async () => {
    const port = await freePort();
    const adminPort = await freePort();
    const dir = tempDir('cli-run');
    dirs.push(dir);
    const file = path.join(dir, 'dns.yaml');
    fs.writeFileSync(file, `services:\n  - name: order\nupstreams: ["127.0.0.1:${upstream.port}"]\n`);
    const child = spawn(process.execPath, [bin, '--config', file, '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${adminPort}`, '--log-level', 'warn'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const first = await waitFor(async () => {
      const r = await dig(port, 'order', 'A', ['+timeout=1']);
      return r.answers.length > 0 ? r : undefined;
    }, 'mesh-dns to answer');
    expect(first.answers.map((a) => a.data)).toEqual(['240.240.0.1']);
    expect((await dig(port, 'www.ext.test')).answers.map((a) => a.data)).toEqual(['198.18.5.5']);
    const help = await (await fetch(`http://127.0.0.1:${adminPort}/help`)).text();
    expect(help.split('\n')[1]).toBe('\tGET /health: print out the health info for mesh-dns');

    fs.writeFileSync(file, `services:\n  - name: pay\n    vip: 240.240.3.3\nupstreams: ["127.0.0.1:${upstream.port}"]\n`);
    await waitFor(async () => (await dig(port, 'pay.default.svc', 'A', ['+timeout=1'])).answers[0]?.data === '240.240.3.3', 'the config file to be re-read');
    expect((await dig(port, 'order')).answers).toEqual([]); // gone from the table: forwarded, dnsmasq refuses it

    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(stderr).not.toMatch(/error/i);
  });

  it('exits 0 on SIGTERM while an upstream query is in flight: its late SERVFAIL is dropped, not sent on the closed socket', async () => {
    const blackhole = await startBlackhole();
    const port = await freePort();
    const child = spawn(process.execPath, [bin, '--listen', `127.0.0.1:${port}`, '--no-admin', '--service', 'order', '-u', `127.0.0.1:${blackhole.port}`, '--upstream-timeout', '1500', '--log-level', 'none'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    try {
      await waitFor(async () => (await dig(port, 'order', 'A', ['+timeout=1'])).answers.length > 0, 'mesh-dns to answer');
      const pending = dig(port, 'slow.example.test', 'A', ['+timeout=3']);
      await waitFor(() => blackhole.received() >= 1, 'the query to reach the upstream');
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0); // the process lives until the upstream attempt times out, then ends cleanly
      expect(stderr).toBe('');
      await pending;
    } finally {
      await blackhole.close();
    }
  });

  it('follows the control protocol when started by the agent: handles, config, start, ready, registry, drain', async () => {
    // The test plays the agent: it owns the listening sockets and hands them over.
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', () => resolve()));
    const port = udp.address().port;
    const tcp = net.createServer();
    await new Promise<void>((resolve) => tcp.listen(port, '127.0.0.1', () => resolve()));
    const admin = net.createServer();
    await new Promise<void>((resolve) => admin.listen(0, '127.0.0.1', () => resolve()));
    const adminPort = (admin.address() as net.AddressInfo).port;

    const child = fork(bin, ['--log-level', 'none'], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    children.push(child);
    const messages: Record<string, any>[] = [];
    child.on('message', (m) => messages.push(m as Record<string, any>));
    try {
      const hand = (name: string, handle: unknown): Promise<void> =>
        new Promise((resolve, reject) => child.send({ type: 'handle', name }, handle as never, (err) => (err ? reject(err) : resolve())));
      await hand('dns-udp', udp);
      await hand('dns-tcp', tcp);
      await hand('admin', admin);
      // Handed over: the parent closes its copies, or the kernel would share datagrams and connections with it.
      udp.close();
      tcp.close();
      admin.close();
      child.send({ type: 'config', config: { services: [{ name: 'order' }], upstreams: [`127.0.0.1:${upstream.port}`], listen: { port } } });
      child.send({ type: 'start', epoch: 3 });
      const ready = await waitFor(() => messages.find((m) => m.type === 'ready' || m.type === 'error'), 'ready');
      expect(ready).toEqual({ type: 'ready', epoch: 3, pid: child.pid });

      for (const extra of [[], ['+tcp']]) {
        expect((await dig(port, 'order.default.svc', 'A', extra)).answers.map((a) => a.data)).toEqual(['240.240.0.1']);
      }
      expect((await dig(port, 'www.ext.test')).answers.map((a) => a.data)).toEqual(['198.18.5.5']);
      expect(await (await fetch(`http://127.0.0.1:${adminPort}/status`)).text()).toBe('<SERVING>\n');

      child.send({ type: 'registry', snapshot: { revision: 7, services: [{ name: 'user', namespace: 'prod', vip: '240.240.0.8', instances: [] }] } });
      await waitFor(() => messages.find((m) => m.type === 'config-applied' && m.version === '7'), 'registry applied');
      expect((await dig(port, 'user.prod')).answers.map((a) => a.data)).toEqual(['240.240.0.8']);

      child.send({ type: 'registry', snapshot: { services: [{ name: 'Not A Name' }] } });
      const error = await waitFor(() => messages.find((m) => m.type === 'error'), 'an error for a bad snapshot');
      expect(error.code).toBe('MESH_CONFIG_INVALID');
      expect((await dig(port, 'user.prod')).answers.map((a) => a.data)).toEqual(['240.240.0.8']); // the old table stays

      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.send({ type: 'drain', drainTimeMs: 200 });
      expect(await exited).toBe(0);
    } finally {
      await stopChild(child);
    }
  });
});
