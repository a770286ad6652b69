import { fork, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curl, startUpstream, waitFor, type TestUpstream } from './support/proxy-harness';

// The real bin (bin/mesh-proxy.js over dist/): standalone with a watched file, bad input, and under a
// parent speaking the control protocol over the fork IPC channel with handed-over listening sockets.
const bin = path.resolve(__dirname, '..', 'bin', 'mesh-proxy.js');
const children: ChildProcess[] = [];
let dir: string;
let a: TestUpstream;
let b: TestUpstream;

function config(port: number, upstream: TestUpstream, version: string) {
  return {
    version,
    admin: { address: '127.0.0.1', port: 0 },
    listener: { name: 'virtual', address: '127.0.0.1', port },
    clusters: [{ name: 'out#80#order', endpoints: [{ address: '127.0.0.1', port: upstream.port }] }],
    routes: { virtualHosts: [{ name: 'order', domains: ['order'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#80#order' } }] }] },
  };
}

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('exit', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'proxy-cli-'));
  [a, b] = await Promise.all([startUpstream('A'), startUpstream('B')]);
});
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await a?.close();
  await b?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('mesh-proxy CLI', () => {
  it('prints usage with --help and exits 0', async () => {
    const r = await run(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('usage: mesh-proxy --config FILE');
  });

  it('exits 2 with a clear message on an unknown flag and on a missing --config', async () => {
    const r = await run(['--bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('mesh-proxy: error [MESH_USAGE]: unknown argument "--bogus"');
    const r2 = await run([]);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toContain('missing --config FILE');
  });

  it('exits 2 naming file, line and field for an invalid config', async () => {
    const file = path.join(dir, 'bad.yaml');
    fs.writeFileSync(file, 'clusters:\n  - name: "out#80#x"\n    lbPolicy: fastest\n');
    const r = await run(['--config', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('MESH_CONFIG_INVALID');
    expect(r.stderr).toMatch(/bad\.yaml:3: clusters\[0\]\.lbPolicy/);
  });

  it('exits 5 when the listener port is taken', async () => {
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    const port = (holder.address() as net.AddressInfo).port;
    const file = path.join(dir, 'busy.json');
    fs.writeFileSync(file, JSON.stringify(config(port, a, 'busy')));
    const r = await run(['--config', file]);
    holder.close();
    expect(r.code).toBe(5);
    expect(r.stderr).toContain('MESH_PROXY_LISTEN_FAILED');
  });

  it('serves from a config file and applies an edit of the file while running; keeps it on a bad edit', async () => {
    const port = await freePort();
    const file = path.join(dir, 'proxy.json');
    fs.writeFileSync(file, JSON.stringify(config(port, a, 'v1')));
    const child = spawn(process.execPath, [bin, '--config', file], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    await waitFor(() => stderr.includes('listening on'), 'the proxy to start', 30_000);
    expect((await curl(['-x', `127.0.0.1:${port}`, 'http://order/one'])).stdout).toBe('A GET /one 0\n');
    fs.writeFileSync(file, JSON.stringify(config(port, b, 'v2')));
    await waitFor(async () => (await curl(['-x', `127.0.0.1:${port}`, 'http://order/two'])).stdout.startsWith('B '), 'the edit to apply', 30_000);
    fs.writeFileSync(file, '{"clusters": [{"name": 1}]}');
    await waitFor(() => stderr.includes('config rejected'), 'the bad edit to be rejected', 30_000);
    expect((await curl(['-x', `127.0.0.1:${port}`, 'http://order/three'])).stdout).toBe('B GET /three 0\n');
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }, 90_000);

  // Issue 12 audit: no input may kill the proxy. Each of these ended the process before.
  it('exits 2 naming the field when the access log cannot be opened, and rejects such a live edit while serving on', async () => {
    const file = path.join(dir, 'bad-log.json');
    fs.writeFileSync(file, JSON.stringify({ ...config(0, a, 'log'), accessLog: { path: path.join(dir, 'no-such-dir', 'access.log') } }));
    const r = await run(['--config', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('MESH_CONFIG_INVALID');
    expect(r.stderr).toMatch(/accessLog\.path: cannot open ".*no-such-dir\/access\.log" for appending: ENOENT/);

    const port = await freePort();
    const live = path.join(dir, 'live-log.json');
    fs.writeFileSync(live, JSON.stringify(config(port, a, 'v1')));
    const child = spawn(process.execPath, [bin, '--config', live], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    await waitFor(() => stderr.includes('listening on'), 'the proxy to start', 30_000);
    // the edit also moves the cluster to B: rejected whole, so A keeps answering
    fs.writeFileSync(live, JSON.stringify({ ...config(port, b, 'v2'), accessLog: { path: path.join(dir, 'no-such-dir', 'access.log') } }));
    await waitFor(() => stderr.includes('config rejected'), 'the bad edit to be rejected', 30_000);
    expect(stderr).toContain('accessLog.path: cannot open');
    expect((await curl(['-x', `127.0.0.1:${port}`, 'http://order/still'])).stdout).toBe('A GET /still 0\n');
    expect(child.exitCode).toBeNull();
    child.kill('SIGTERM');
    await new Promise((res) => child.once('exit', res));
  }, 90_000);

  it('exits 2 naming file, line and field for a health-check path it could never send (a space)', async () => {
    const file = path.join(dir, 'bad-hc.yaml');
    fs.writeFileSync(file, 'clusters:\n  - name: "out#80#x"\n    endpoints: [{ address: 127.0.0.1, port: 9 }]\n    healthCheck:\n      path: "/he alth"\n');
    const r = await run(['--config', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('MESH_CONFIG_INVALID');
    expect(r.stderr).toMatch(/bad-hc\.yaml:5: clusters\[0\]\.healthCheck\.path: a health-check path is "\/" followed by visible ASCII characters/);
  });

  it('keeps serving when the reader of its stdout access log goes away (EPIPE), and says so once', async () => {
    const port = await freePort();
    const file = path.join(dir, 'stdout-log.json');
    fs.writeFileSync(file, JSON.stringify({ ...config(port, a, 'pipe'), accessLog: { path: '/dev/stdout' } }));
    const child = spawn(process.execPath, [bin, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    await waitFor(() => stderr.includes('listening on'), 'the proxy to start', 30_000);
    child.stdout!.destroy(); // the log collector is gone: the proxy's next access log write fails with EPIPE
    for (let i = 0; i < 5; i++) expect((await curl(['-x', `127.0.0.1:${port}`, `http://order/p${i}`])).stdout).toBe(`A GET /p${i} 0\n`);
    await waitFor(() => stderr.includes('access log write failed'), 'the access log failure to be reported', 30_000);
    expect(stderr.split('access log write failed').length - 1).toBe(1);
    expect((await curl(['-x', `127.0.0.1:${port}`, 'http://order/after'])).stdout).toBe('A GET /after 0\n');
    expect(child.exitCode).toBeNull();
    child.kill('SIGTERM');
    await new Promise((res) => child.once('exit', res));
  }, 90_000);

  it('under a parent: takes handed-over sockets, config and registry, answers ready, drains on request', async () => {
    const listener = net.createServer();
    const admin = net.createServer();
    await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => admin.listen(0, '127.0.0.1', r));
    const lport = (listener.address() as net.AddressInfo).port;
    const aport = (admin.address() as net.AddressInfo).port;
    const child = fork(bin, [], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    children.push(child);
    const messages: { type: string }[] = [];
    child.on('message', (m) => messages.push(m as { type: string }));
    child.send({ type: 'handle', name: 'listener' }, listener);
    child.send({ type: 'handle', name: 'admin' }, admin);
    const cfg = config(0, a, 'ipc-1');
    cfg.clusters = [{ name: 'out#80#order', endpoints: [] }];
    child.send({ type: 'config', config: cfg });
    child.send({ type: 'start', epoch: 3 });
    await waitFor(() => messages.some((m) => m.type === 'ready'), 'ready', 30_000);
    expect(messages.find((m) => m.type === 'ready')).toMatchObject({ type: 'ready', epoch: 3, pid: child.pid });
    expect(messages.find((m) => m.type === 'config-applied')).toMatchObject({ version: 'ipc-1' });
    listener.close();
    admin.close();
    child.send({ type: 'registry', snapshot: { services: [{ name: 'order', instances: [{ id: 'o1', address: '127.0.0.1', port: b.port }] }] } });
    await waitFor(async () => (await curl(['-x', `127.0.0.1:${lport}`, 'http://order/ipc'])).stdout === 'B GET /ipc 0\n', 'registry endpoints', 30_000);
    const info = JSON.parse((await curl([`http://127.0.0.1:${aport}/server_info`])).stdout);
    expect(info.command_line_options.restart_epoch).toBe(3);
    child.send({ type: 'drain', drainTimeMs: 1000 });
    const code = await new Promise((r) => child.once('exit', r));
    expect(code).toBe(0);
  }, 90_000);
});
