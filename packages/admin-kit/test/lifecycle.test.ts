import net from 'node:net';
import http from 'node:http';
import { execFileSync, spawnSync } from 'node:child_process';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createAdminServer, isLoopbackHost, routes, type AdminServer } from '../src/index';
import { request } from './support/http';
import { CHILD_SCRIPT, fork, killQuietly, requireBuild, spawn, waitForExit, waitForLine } from './support/child';
import type { ChildProcess } from 'node:child_process';

const open: AdminServer[] = [];
const children: ChildProcess[] = [];
const netServers: net.Server[] = [];

function makeServer(opts: Partial<Parameters<typeof createAdminServer>[0]> = {}): AdminServer {
  const server = createAdminServer({ component: 'test', helpStyle: 'istio', ...opts }).add(routes.help('print out list of admin commands'));
  open.push(server);
  return server;
}

function listeningNetServer(): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    netServers.push(server);
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => resolve(server));
  });
}

/** True when something can bind 127.0.0.1:port right now. */
function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen({ host: '127.0.0.1', port, exclusive: true }, () => probe.close(() => resolve(true)));
  });
}

afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
  for (const child of children.splice(0)) killQuietly(child);
  for (const server of netServers.splice(0)) if (server.listening) server.close();
});

describe('binding', () => {
  it('binds 127.0.0.1 by default, on an ephemeral port for port 0, and reports it', async () => {
    const server = makeServer();
    expect(server.address).toBeUndefined();
    const address = await server.listen();
    expect(address.address).toBe('127.0.0.1');
    expect(address.port).toBeGreaterThan(0);
    expect(server.address).toEqual(address);
    expect((await request(address.port, 'GET', '/help')).status).toBe(200);
  });

  it.each(['0.0.0.0', '198.18.0.1', '::', '10.1.2.3', 'example.com'])('refuses the non-loopback host %s unless allowNonLoopback', (host) => {
    let caught: unknown;
    try {
      createAdminServer({ component: 'pilot-agent', helpStyle: 'istio', host });
    } catch (err) {
      caught = err;
    }
    expect(caught).toMatchObject({ code: 'MESH_ADMIN_NON_LOOPBACK', exitCode: 2 });
    expect((caught as Error).message).toContain(`would listen on ${host}, which is not a loopback address`);
    expect((caught as { hint: string }).hint).toContain('allowNonLoopback: true');
    expect(() => createAdminServer({ component: 'pilot-agent', helpStyle: 'istio', host, allowNonLoopback: true })).not.toThrow();
  });

  it('knows the loopback hosts', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]', '::ffff:127.0.0.1']) expect(isLoopbackHost(host)).toBe(true);
    for (const host of ['0.0.0.0', '::', '128.0.0.1', '::ffff:10.0.0.1', '198.18.0.1', 'localhost.example']) expect(isLoopbackHost(host)).toBe(false);
  });

  it('refuses a port outside 0..65535', () => {
    expect(() => createAdminServer({ component: 'x', helpStyle: 'istio', port: 70000 })).toThrow(expect.objectContaining({ code: 'MESH_ADMIN_BAD_PORT' }));
  });

  it('a busy port gives MESH_ADMIN_PORT_IN_USE naming the address', async () => {
    const holder = await listeningNetServer();
    const port = (holder.address() as net.AddressInfo).port;
    const server = makeServer({ port });
    await expect(server.listen()).rejects.toMatchObject({
      code: 'MESH_ADMIN_PORT_IN_USE',
      message: expect.stringContaining(`127.0.0.1:${port}`),
    });
  });

  it('an allowed non-loopback address that is not on this machine fails with a clear error', async () => {
    const server = makeServer({ host: '198.18.255.254', allowNonLoopback: true });
    await expect(server.listen()).rejects.toMatchObject({ code: 'MESH_ADMIN_LISTEN_FAILED', message: expect.stringContaining('198.18.255.254') });
  });

  it('listen() twice is refused', async () => {
    const server = makeServer();
    await server.listen();
    await expect(server.listen()).rejects.toMatchObject({ code: 'MESH_ADMIN_ALREADY_LISTENING' });
  });
});

describe('close()', () => {
  it('releases the port at once, even with an idle keep-alive connection open', async () => {
    const server = makeServer();
    const { port } = await server.listen();
    const agent = new http.Agent({ keepAlive: true, keepAliveMsecs: 60_000 });
    try {
      expect((await request(port, 'GET', '/help', { agent })).status).toBe(200);
      const idle = Object.values(agent.freeSockets).flat();
      expect(idle).toHaveLength(1);
      const idleClosed = new Promise<void>((resolve) => idle[0]!.once('close', () => resolve()));

      await server.close();
      await idleClosed; // the server destroyed its side of the keep-alive connection
      expect(await canBind(port)).toBe(true);
      await expect(request(port, 'GET', '/help')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
      expect(server.address).toBeDefined();
    } finally {
      agent.destroy();
    }
  });

  it('does not wait for a request still in flight: its connection is destroyed', async () => {
    let entered!: () => void;
    const inHandler = new Promise<void>((resolve) => (entered = resolve));
    let release!: () => void;
    const stuck = new Promise<void>((resolve) => (release = resolve));
    const server = makeServer().add({
      method: 'GET',
      path: '/slow',
      help: 'never answers on its own',
      handler: async () => {
        entered();
        await stuck;
        return 'late\n';
      },
    });
    const { port } = await server.listen();
    const pending = request(port, 'GET', '/slow');
    await inHandler;
    await server.close();
    await expect(pending).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect(await canBind(port)).toBe(true);
    release();
  });

  it('is idempotent and refuses a new listen afterwards', async () => {
    const server = makeServer();
    await server.listen();
    await Promise.all([server.close(), server.close()]);
    await server.close();
    await expect(server.listen()).rejects.toMatchObject({ code: 'MESH_ADMIN_CLOSED' });
  });

  it('on a server that never listened resolves', async () => {
    await makeServer().close();
  });

  it('leaves nothing that keeps a process alive (a child ends by itself after close)', async () => {
    requireBuild();
    const child = spawn(process.execPath, [CHILD_SCRIPT, 'keepalive'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    const ready = await waitForLine<{ closedAfterKeepAlive: number }>(child, 'ready');
    expect(ready.closedAfterKeepAlive).toBeGreaterThan(0);
    expect(await waitForExit(child, 20_000)).toBe(0);
  });
});

describe('listenOn() a socket handed over by a parent', () => {
  it('serves on a listening net.Server of the same process', async () => {
    const handle = await listeningNetServer();
    const port = (handle.address() as net.AddressInfo).port;
    const server = makeServer();
    const address = await server.listenOn(handle);
    expect(address).toEqual({ address: '127.0.0.1', port });
    expect((await request(port, 'GET', '/help')).body).toContain('\tGET /help: print out list of admin commands\n');
    await server.close();
    expect(await canBind(port)).toBe(true);
  });

  it('serves in a forked child on a socket sent over IPC (as the agent hands over the admin port)', async () => {
    requireBuild();
    const handle = await listeningNetServer();
    const port = (handle.address() as net.AddressInfo).port;
    const child = fork(CHILD_SCRIPT, ['ipc'], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    children.push(child);
    const ready = new Promise<{ address: { port: number }; pid: number }>((resolve) =>
      child.on('message', (msg: { type?: string }) => msg.type === 'ready' && resolve(msg as never)),
    );
    child.send({ type: 'handle', name: 'admin' }, handle);
    const msg = await ready;
    handle.close(); // the parent lets go; the child keeps serving
    expect(msg.address.port).toBe(port);

    const pid = JSON.parse((await request(port, 'GET', '/pid')).body).pid;
    expect(pid).toBe(child.pid);
    child.send({ type: 'close' });
    expect(await waitForExit(child, 20_000)).toBe(0);
    expect(await canBind(port)).toBe(true);
  });

  it('serves on an inherited file descriptor ({ fd })', async () => {
    requireBuild();
    const handle = await listeningNetServer();
    const port = (handle.address() as net.AddressInfo).port;
    const fd = (handle as unknown as { _handle: { fd: number } })._handle.fd;
    expect(fd).toBeGreaterThan(2);
    const child = spawn(process.execPath, [CHILD_SCRIPT, 'fd', '3'], { stdio: ['pipe', 'pipe', 'pipe', fd] });
    children.push(child);
    const ready = await waitForLine<{ port: number }>(child, 'ready');
    handle.close();
    expect(ready.port).toBe(port);
    expect(JSON.parse((await request(port, 'GET', '/pid')).body).pid).toBe(child.pid);
    child.stdin!.end('close\n');
    expect(await waitForExit(child, 20_000)).toBe(0);
  });
});

// A non-loopback bind for real: inside a network namespace this test creates, on an address of 198.18.0.0/15.
const NS = `ak-admin-${process.pid}`;
const haveNetns = process.getuid?.() === 0 && spawnSync('ip', ['netns', 'list']).status === 0;

describe.skipIf(!haveNetns)('allowNonLoopback inside a network namespace', () => {
  afterAll(() => {
    spawnSync('ip', ['netns', 'del', NS]);
  });

  it('serves on 198.18.7.1 when asked explicitly, reachable there', async () => {
    requireBuild();
    execFileSync('ip', ['netns', 'add', NS]);
    execFileSync('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
    execFileSync('ip', ['-n', NS, 'addr', 'add', '198.18.7.1/32', 'dev', 'lo']);
    const child = spawn('ip', ['netns', 'exec', NS, process.execPath, CHILD_SCRIPT, 'host', '198.18.7.1'], { stdio: ['pipe', 'pipe', 'pipe'] });
    children.push(child);
    const ready = await waitForLine<{ address: string; port: number }>(child, 'ready');
    expect(ready.address).toBe('198.18.7.1');
    const curl = spawnSync('ip', ['netns', 'exec', NS, 'curl', '-s', '--max-time', '20', `http://198.18.7.1:${ready.port}/help`], { encoding: 'utf8' });
    expect(curl.status).toBe(0);
    expect(curl.stdout).toBe('admin commands are:\n\tGET /help: print out list of admin commands\n\tGET /pid: print out the pid\n');
    child.stdin!.end('close\n');
    expect(await waitForExit(child, 20_000)).toBe(0);
  });
});
