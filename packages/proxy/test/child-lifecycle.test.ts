import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curl, startUpstream, waitFor, type TestUpstream } from './support/proxy-harness';

// The real bin as the agent's child, from outside: this test plays the agent over the fork IPC channel.
// 1. Handed-over sockets accept the moment they arrive in the child: requests sent then (before
//    'start', even before the config) are all answered, no connection left hanging.
// 2. When the agent dies (kill -9 of the process that forked the child), the child exits and its
//    port can be bound again.
const bin = path.resolve(__dirname, '..', 'bin', 'mesh-proxy.js');
const children: ChildProcess[] = [];
const orphans: number[] = [];
let upstream: TestUpstream;

function config(version: string, upstreamPort: number) {
  return {
    version,
    admin: { address: '127.0.0.1', port: 0 },
    listener: { name: 'virtual', address: '127.0.0.1', port: 0 },
    clusters: [{ name: 'out#80#order', endpoints: [{ address: '127.0.0.1', port: upstreamPort }] }],
    routes: { virtualHosts: [{ name: 'order', domains: ['order'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#80#order' } }] }] },
  };
}

async function listening(): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as net.AddressInfo).port };
}

function send(child: ChildProcess, message: object, handle?: unknown): Promise<void> {
  return new Promise((resolve, reject) => child.send(message, handle as never, {}, (err) => (err ? reject(err) : resolve())));
}

function forkChild() {
  const child = fork(bin, [], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
  children.push(child);
  const messages: Record<string, any>[] = [];
  child.on('message', (m) => messages.push(m as Record<string, any>));
  return { child, messages };
}

/** TCP connections to `port` that process `pid` has accepted (one still in the backlog has no owner). */
function acceptedBy(pid: number, port: number): number {
  const out = execFileSync('ss', ['-Hntp', 'state', 'established', `sport = :${port}`], { encoding: 'utf8' });
  return out.split('\n').filter((line) => line.includes(`pid=${pid},`)).length;
}

function isGone(pid: number): boolean {
  try {
    // an orphan that exited may stay a zombie until PID 1 reaps it: gone all the same
    return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z') ?? true;
  } catch {
    return true;
  }
}

beforeAll(async () => {
  upstream = await startUpstream('A');
});
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  for (const pid of orphans) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
  }
  await upstream?.close();
});

describe('mesh-proxy as the agent child', () => {
  it('answers requests sent the moment the sockets arrive, before start (config first, as the agent does)', async () => {
    const listener = await listening();
    const admin = await listening();
    const { child, messages } = forkChild();
    await send(child, { type: 'config', config: config('c1', upstream.port) });
    await waitFor(() => messages.some((m) => m.type === 'config-applied'), 'config-applied', 30_000);
    await send(child, { type: 'handle', name: 'listener' }, listener.server);
    await send(child, { type: 'handle', name: 'admin' }, admin.server);
    listener.server.close();
    admin.server.close();
    // no 'start' yet: every request has to be answered anyway
    const results = await Promise.all([
      ...Array.from({ length: 8 }, (_, i) => curl(['-x', `127.0.0.1:${listener.port}`, `http://order/early-${i}`])),
      curl([`http://127.0.0.1:${admin.port}/ready`]),
    ]);
    for (let i = 0; i < 8; i++) expect(results[i]).toMatchObject({ code: 0, stdout: `A GET /early-${i} 0\n` });
    expect(results[8]).toMatchObject({ code: 0, stdout: 'LIVE\n' });
    expect(messages.some((m) => m.type === 'ready')).toBe(false);

    await send(child, { type: 'start', epoch: 5 });
    await waitFor(() => messages.some((m) => m.type === 'ready' || m.type === 'error'), 'ready', 30_000);
    expect(messages.find((m) => m.type === 'ready' || m.type === 'error')).toEqual({ type: 'ready', epoch: 5, pid: child.pid });
    const info = JSON.parse((await curl([`http://127.0.0.1:${admin.port}/server_info`])).stdout);
    expect(info.command_line_options.restart_epoch).toBe(5);
    const exited = new Promise((r) => child.once('exit', r));
    await send(child, { type: 'drain', drainTimeMs: 500 });
    expect(await exited).toBe(0);
  }, 120_000);

  it('holds connections that arrive before the config and serves them once the config is in', async () => {
    const listener = await listening();
    const admin = await listening();
    const { child, messages } = forkChild();
    // the code is loaded once the child answers something: a registry snapshot is answered too
    await send(child, { type: 'registry', snapshot: { revision: 3, services: [] } });
    await waitFor(() => messages.some((m) => m.type === 'config-applied'), 'the child to be up', 30_000);
    expect(messages).toEqual([{ type: 'config-applied', version: '3' }]);
    await send(child, { type: 'handle', name: 'listener' }, listener.server);
    await send(child, { type: 'handle', name: 'admin' }, admin.server);
    listener.server.close();
    admin.server.close();
    const requests = Promise.all(Array.from({ length: 4 }, (_, i) => curl(['-x', `127.0.0.1:${listener.port}`, `http://order/held-${i}`])));
    // the child has accepted all four connections, before it has any config
    await waitFor(() => acceptedBy(child.pid!, listener.port) === 4, 'the child to accept the connections', 30_000);

    await send(child, { type: 'config', config: config('c2', upstream.port) });
    const results = await requests;
    for (let i = 0; i < 4; i++) expect(results[i]).toMatchObject({ code: 0, stdout: `A GET /held-${i} 0\n` });
  }, 120_000);

  it('exits when the agent that forked it is killed with SIGKILL, freeing its port', async () => {
    // The intermediate process plays the agent: binds the sockets, forks the real bin, hands them over,
    // waits for ready, prints the child's pid and port, then stays until it is killed.
    const script = `
      import { fork } from 'node:child_process';
      import net from 'node:net';
      const [bin, cfg] = process.argv.slice(1);
      const listen = () => new Promise((r) => { const s = net.createServer(); s.listen(0, '127.0.0.1', () => r(s)); });
      const listener = await listen();
      const admin = await listen();
      const port = listener.address().port;
      const child = fork(bin, [], { execArgv: [], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
      const send = (m, h) => new Promise((r, j) => child.send(m, h, {}, (e) => (e ? j(e) : r())));
      child.on('message', (m) => {
        if (m.type === 'ready') process.stdout.write(JSON.stringify({ pid: child.pid, port }) + '\\n');
      });
      await send({ type: 'config', config: JSON.parse(cfg) });
      await send({ type: 'handle', name: 'listener' }, listener);
      await send({ type: 'handle', name: 'admin' }, admin);
      listener.close();
      admin.close();
      await send({ type: 'start', epoch: 0 });
      setInterval(() => {}, 1000);
    `;
    const agent = spawn(process.execPath, ['--input-type=module', '-e', script, bin, JSON.stringify(config('c3', upstream.port))], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(agent);
    let out = '';
    agent.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor(() => out.includes('\n'), 'the child to be ready', 30_000);
    const { pid, port } = JSON.parse(out.split('\n')[0]!) as { pid: number; port: number };
    orphans.push(pid);
    expect((await curl(['-x', `127.0.0.1:${port}`, 'http://order/before'])).stdout).toBe('A GET /before 0\n');

    agent.kill('SIGKILL');
    await waitFor(() => isGone(pid), `mesh-proxy (pid ${pid}) to exit after its agent died`, 30_000);
    // the port is free again: the next agent binds it
    const again = net.createServer();
    await new Promise<void>((resolve, reject) => {
      again.once('error', reject);
      again.listen(port, '127.0.0.1', () => resolve());
    });
    await new Promise<void>((resolve) => again.close(() => resolve()));
  }, 120_000);
});
