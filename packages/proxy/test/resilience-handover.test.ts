import { fork, spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProxy, type MeshProxy } from '../src/proxy';
import { startUpstream, waitFor, type Upstream } from './resilience-upstreams';

// Hand-over as the agent does it: the test is the parent. It owns the listening sockets,
// forks the real `mesh-proxy` bin (built dist) and speaks the control protocol over IPC.
const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.join(here, '..', 'bin', 'mesh-proxy.js');
const DIST_CLI = path.join(here, '..', 'dist', 'cli.js');

const children: ChildProcess[] = [];
let up: Upstream;

beforeAll(async () => {
  if (!fs.existsSync(DIST_CLI)) throw new Error(`${DIST_CLI} is missing: build the package first (pnpm --filter @mesh-agent/proxy build); nx runs build before test`);
  up = await startUpstream('handover-app');
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const o of owners) o.close();
  await up?.close();
});

/**
 * A bound TCP socket the parent holds but never accepts on, as the agent's sockets.ts does: a
 * listening net.Server in the parent would take connections too. Each child calls listen() on its
 * duplicate; the socket lives while any process holds it.
 */
function ownedSocket(): { server: net.Server; port: number; close(): void } {
  const tcpWrap = (process as any).binding('tcp_wrap') as { TCP: new (type: number) => any; constants: { SERVER: number } };
  const raw = tcpWrap.TCP ? new tcpWrap.TCP(tcpWrap.constants.SERVER) : undefined;
  if (raw.bind('127.0.0.1', 0) !== 0) throw new Error('cannot bind 127.0.0.1:0');
  const out: { port?: number } = {};
  raw.getsockname(out);
  const server = new net.Server();
  (server as unknown as { _handle: unknown })._handle = raw;
  const owned = { server, port: out.port!, close: () => raw.close() };
  owners.push(owned);
  return owned;
}
const owners: { close(): void }[] = [];

function config(upstream: Upstream) {
  return {
    version: 'handover',
    admin: { address: '127.0.0.1', port: 0 },
    listener: { name: 'virtual', address: '127.0.0.1', port: 0 },
    clusters: [{ name: 'out#80#order', endpoints: [{ address: upstream.address, port: upstream.port }] }],
    routes: { virtualHosts: [{ name: 'order', domains: ['order'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#80#order' } }] }] },
    drainTimeMs: 5000,
  };
}

/** Forks a proxy generation on the shared sockets and waits for its `ready`. */
async function startGeneration(epoch: number, listener: net.Server, admin: net.Server): Promise<ChildProcess> {
  const child = fork(BIN, [], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  children.push(child);
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
  const ready = new Promise<void>((resolve, reject) => {
    child.on('message', (m: { type: string; epoch?: number; message?: string }) => {
      if (m.type === 'ready' && m.epoch === epoch) resolve();
      if (m.type === 'error') reject(new Error(`generation ${epoch}: ${m.message}`));
    });
    child.once('exit', (code) => reject(new Error(`generation ${epoch} exited ${code}: ${stderr}`)));
  });
  child.send({ type: 'handle', name: 'listener' }, listener);
  child.send({ type: 'handle', name: 'admin' }, admin);
  child.send({ type: 'config', config: config(up) });
  child.send({ type: 'start', epoch });
  await ready;
  return child;
}

function get(port: number, agent: http.Agent): Promise<{ status: number; connection?: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: 'http://order/', agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('drain and hand-over', () => {
  it('a new generation takes the listening socket, the old one drains: a steady stream of keep-alive requests sees zero failures', async () => {
    const listenerSocket = ownedSocket();
    const adminSocket = ownedSocket();
    const listener = listenerSocket.server;
    const admin = adminSocket.server;
    const port = listenerSocket.port;
    const old = await startGeneration(0, listener, admin);

    // Four clients, each sending one request after the other on keep-alive connections; bounded in count and time.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    const results = { ok: 0, failed: [] as string[], closes: 0 };
    let stop = false;
    const deadline = Date.now() + 60_000;
    const client = async () => {
      for (let i = 0; i < 5000 && !stop && Date.now() < deadline; i++) {
        try {
          const r = await get(port, agent);
          if (r.status === 200) results.ok++;
          else results.failed.push(`status ${r.status}`);
          if (r.connection === 'close') results.closes++;
        } catch (err) {
          results.failed.push((err as Error).message);
        }
      }
    };
    const clients = Array.from({ length: 4 }, client);
    await waitFor('traffic on the old generation', () => results.ok >= 200, 30_000);

    const next = await startGeneration(1, listener, admin);
    const oldExit = new Promise<number | null>((resolve) => old.once('exit', (code) => resolve(code)));
    old.send({ type: 'drain', drainTimeMs: 5000 });
    const beforeExit = results.ok;
    expect(await oldExit).toBe(0);
    // the stream goes on, served by the new generation alone
    await waitFor('traffic on the new generation', () => results.ok >= beforeExit + 200, 30_000);
    stop = true;
    await Promise.all(clients);
    agent.destroy();
    next.send({ type: 'drain', drainTimeMs: 1000 });
    await new Promise((resolve) => next.once('exit', resolve));

    expect(results.failed).toEqual([]);
    expect(results.ok).toBeGreaterThanOrEqual(beforeExit + 200);
    // the old generation told its keep-alive clients to reconnect
    expect(results.closes).toBeGreaterThanOrEqual(1);
  }, 180_000);
});

describe('drain in the library', () => {
  let proxy: MeshProxy | undefined;
  afterAll(async () => { await proxy?.close(); });

  it('/server_info says DRAINING while a request finishes; the response carries Connection: close; new connections are refused', async () => {
    const hang = await startUpstream('drain-slow', 'hang');
    proxy = createProxy({ ...config(hang), drainTimeMs: 10_000 });
    const addrs = await proxy.start();
    const inflight = new Promise<{ status: number; connection?: string }>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: addrs.listener.port, path: 'http://order/', agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }));
      }).on('error', reject);
    });
    await waitFor('request upstream', () => hang.hits === 1);
    const drained = proxy.drain(10_000);
    const info = await new Promise<{ state: string }>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: addrs.admin!.port, path: '/server_info', agent: false }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => { body += c.toString(); });
        res.on('end', () => resolve(JSON.parse(body) as { state: string }));
      }).on('error', reject);
    });
    expect(info.state).toBe('DRAINING');
    const refused = await new Promise<string>((resolve) => {
      const s = net.connect(addrs.listener.port, '127.0.0.1');
      s.on('connect', () => { s.destroy(); resolve('connected'); });
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    expect(refused).toBe('ECONNREFUSED');
    // the upstream answers now: the request in flight completes, told to close its connection
    hang.release();
    const r = await inflight;
    expect(r.status).toBe(200);
    expect(r.connection).toBe('close');
    await drained;
    await hang.close();
  });
});

describe('drain time up', () => {
  it('a connection still busy when the drain time runs out is cut; the proxy has no connection left', async () => {
    const hang = await startUpstream('drain-cut', 'hang');
    const p = createProxy({ ...config(hang), drainTimeMs: 200 });
    try {
      const addrs = await p.start();
      const inflight = new Promise<string>((resolve) => {
        http.get({ host: '127.0.0.1', port: addrs.listener.port, path: 'http://order/', agent: false }, (res) => {
          res.resume();
          res.on('end', () => resolve(`status ${res.statusCode}`));
        }).on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code ?? e.message}`));
      });
      await waitFor('request upstream', () => hang.hits === 1);
      await p.drain(200);
      expect(p.activeConnections).toBe(0);
      expect(await inflight).toBe('error ECONNRESET');
    } finally {
      hang.release();
      await p.close();
      await hang.close();
    }
  });
});

describe('drain and a connection not used yet', () => {
  it('keeps a just-accepted connection open past the idle grace, serves its first request with Connection: close; a used idle one is closed', async () => {
    const p = createProxy({ ...config(up), drainTimeMs: 10_000 });
    try {
      const addrs = await p.start();
      // a keep-alive connection that has served a request, then sits idle
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      expect((await get(addrs.listener.port, agent)).status).toBe(200);
      const usedSocket = Object.values(agent.freeSockets)[0]![0]!;
      let usedClosed = false;
      usedSocket.once('close', () => { usedClosed = true; });
      // a connection accepted just before the drain whose request has not arrived yet (a slow client under load)
      const fresh = net.connect(addrs.listener.port, '127.0.0.1');
      await new Promise<void>((resolve) => fresh.once('connect', () => resolve()));
      let freshClosed = false;
      fresh.once('close', () => { freshClosed = true; });
      await waitFor('proxy sees both connections', () => p.activeConnections === 2);
      const drained = p.drain(10_000);
      await waitFor('the used idle connection closed by the drain', () => usedClosed, 10_000);
      expect(freshClosed).toBe(false);
      const answer = new Promise<string>((resolve) => {
        let text = '';
        fresh.on('data', (c: Buffer) => { text += c.toString('latin1'); });
        fresh.once('close', () => resolve(text));
      });
      fresh.write('GET http://order/ HTTP/1.1\r\nHost: order\r\n\r\n');
      const text = await answer;
      expect(text.startsWith('HTTP/1.1 200')).toBe(true);
      expect(text.toLowerCase()).toContain('connection: close');
      await drained;
      agent.destroy();
    } finally {
      await p.close();
    }
  });
});

describe('/quitquitquit', () => {
  it('drains then exits 0: the request in flight still gets its answer', async () => {
    const slow = await startUpstream('quit-slow', 'hang');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'resilience-quit-'));
    const file = path.join(dir, 'proxy.json');
    fs.writeFileSync(file, JSON.stringify(config(slow)));
    const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
    try {
      await waitFor('proxy listening', () => /listening on .*:(\d+), admin on .*:(\d+)/.test(stderr));
      const [, listenPort, adminPort] = /listening on .*:(\d+), admin on .*:(\d+)/.exec(stderr)!;
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      const inflight = get(Number(listenPort), new http.Agent({ keepAlive: true }));
      await waitFor('request upstream', () => slow.hits === 1);
      const quit = await new Promise<number>((resolve, reject) => {
        http.request({ host: '127.0.0.1', port: Number(adminPort), path: '/quitquitquit', method: 'POST', agent: false }, (res) => { res.resume(); resolve(res.statusCode ?? 0); }).on('error', reject).end();
      });
      expect(quit).toBe(200);
      slow.release();
      const r = await inflight;
      expect(r.status).toBe(200);
      expect(r.connection).toBe('close');
      expect(await exited).toBe(0);
    } finally {
      await slow.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
