// The bin as the agent's child, from outside: a test process plays the agent over the fork IPC channel.
// 1. Sockets start accepting the moment they arrive in the child: queries sent then (before 'start',
//    even before the config) are all answered, none dropped, no TCP connection left hanging.
// 2. When the agent dies (kill -9 of the process that forked the child), the child exits and its
//    port can be bound again.
// 3. Hot restart: the next epoch gets the same UDP socket while the old one drains; no query is lost
//    (on the recvmmsg/sendmmsg path when the addon is built: the addon reads a dup of the fd).
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import dnsPacket from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeUdpStatus } from '../src/native-udp';
import { dig, startBlackhole, stopChild, waitFor } from './helpers';

const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(packageDir, 'bin', 'mesh-dns.js');

interface Handed {
  port: number;
  adminPort: number;
  udp: dgram.Socket;
  tcp: net.Server;
  admin: net.Server;
}

/** The sockets the agent would own: UDP and TCP on one ephemeral port, and an admin port. */
async function bindSockets(): Promise<Handed> {
  for (let attempt = 0; ; attempt++) {
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', () => resolve()));
    const port = udp.address().port;
    const tcp = net.createServer();
    const ok = await new Promise<boolean>((resolve) => {
      tcp.once('error', () => resolve(false));
      tcp.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (!ok) {
      udp.close();
      if (attempt < 20) continue;
      throw new Error('no port free for both UDP and TCP');
    }
    const admin = net.createServer();
    await new Promise<void>((resolve) => admin.listen(0, '127.0.0.1', () => resolve()));
    return { port, adminPort: (admin.address() as net.AddressInfo).port, udp, tcp, admin };
  }
}

function send(child: ChildProcess, message: object, handle?: unknown): Promise<void> {
  return new Promise((resolve, reject) => child.send(message, handle as never, {}, (err) => (err ? reject(err) : resolve())));
}

/** Hands the sockets over, then closes the test's copies, so only the child accepts and reads. */
async function handOver(child: ChildProcess, s: Handed): Promise<void> {
  await send(child, { type: 'handle', name: 'admin' }, s.admin);
  await send(child, { type: 'handle', name: 'dns-udp' }, s.udp);
  await send(child, { type: 'handle', name: 'dns-tcp' }, s.tcp);
  s.udp.close();
  s.tcp.close();
  s.admin.close();
}

/** Sends `count` A queries for `name` from one socket; resolves with the answers by query id (bounded). */
function udpQueries(port: number, name: string, count: number): { sent: Promise<void>; answers: Promise<Map<number, string[]>> } {
  const socket = dgram.createSocket('udp4');
  const answers = new Map<number, string[]>();
  let markSent!: () => void;
  const sent = new Promise<void>((resolve) => (markSent = resolve));
  const done = new Promise<Map<number, string[]>>((resolve) => {
    const timer = setTimeout(() => finish(), 30_000);
    const finish = () => {
      clearTimeout(timer);
      socket.close();
      resolve(answers);
    };
    socket.on('message', (msg) => {
      const packet = dnsPacket.decode(msg);
      answers.set(packet.id ?? -1, (packet.answers ?? []).map((a) => String((a as { data: unknown }).data)));
      if (answers.size === count) finish();
    });
    socket.bind(0, '127.0.0.1', () => {
      let pending = count;
      for (let id = 1; id <= count; id++) {
        const query = dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name }] });
        socket.send(query, port, '127.0.0.1', () => {
          if (--pending === 0) markSent();
        });
      }
    });
  });
  return { sent, answers: done };
}

/** The Recv-Q of the UDP socket on `port`: 0 once the child read every datagram sent to it. */
function udpRecvQueue(port: number): number {
  const out = execFileSync('ss', ['-Hnlu', `sport = :${port}`], { encoding: 'utf8' });
  return Number(out.trim().split(/\s+/)[1] ?? -1);
}

/** TCP connections to `port` that process `pid` has accepted (an unaccepted one has no owner yet). */
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

describe('mesh-dns as the agent child', () => {
  let blackhole: Awaited<ReturnType<typeof startBlackhole>>;
  const children: ChildProcess[] = [];
  const pids: number[] = [];
  const config = (port: number, adminPort: number) => ({
    services: [{ name: 'order' }],
    upstreams: [`127.0.0.1:${blackhole.port}`], // never asked: only mesh names are queried
    listen: { address: '127.0.0.1', port },
    admin: { address: '127.0.0.1', port: adminPort },
  });
  const forkChild = () => {
    const child = fork(bin, ['--log-level', 'none'], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    children.push(child);
    const messages: Record<string, any>[] = [];
    child.on('message', (m) => messages.push(m as Record<string, any>));
    return { child, messages };
  };

  beforeAll(async () => {
    blackhole = await startBlackhole();
  });
  afterAll(async () => {
    await Promise.all(children.map(stopChild));
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await blackhole?.close();
  });

  it('answers queries sent the moment the sockets arrive, before start (config first, as the agent does)', async () => {
    const sockets = await bindSockets();
    const { child, messages } = forkChild();
    try {
      await send(child, { type: 'config', config: config(sockets.port, sockets.adminPort) });
      await waitFor(() => messages.find((m) => m.type === 'config-applied'), 'config-applied');
      await handOver(child, sockets);
      // no 'start' yet: every query and connection has to be served anyway
      const udp = udpQueries(sockets.port, 'order.default.svc', 50);
      const tcp = Promise.all([1, 2, 3].map(() => dig(sockets.port, 'order.default.svc', 'A', ['+tcp'])));
      const status = fetch(`http://127.0.0.1:${sockets.adminPort}/status`).then((r) => r.text());
      const answers = await udp.answers;
      expect(answers.size).toBe(50);
      for (const data of answers.values()) expect(data).toEqual(['240.240.0.1']);
      for (const result of await tcp) expect(result.answers.map((a) => a.data)).toEqual(['240.240.0.1']);
      expect(await status).toBe('<SERVING>\n');
      expect(messages.some((m) => m.type === 'ready')).toBe(false);

      await send(child, { type: 'start', epoch: 4 });
      expect(await waitFor(() => messages.find((m) => m.type === 'ready' || m.type === 'error'), 'ready')).toEqual({ type: 'ready', epoch: 4, pid: child.pid });
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      await send(child, { type: 'drain', drainTimeMs: 200 });
      expect(await exited).toBe(0);
    } finally {
      await stopChild(child);
    }
  }, 120_000);

  it('holds what arrives before the config and serves it once the config is in', async () => {
    const sockets = await bindSockets();
    const { child, messages } = forkChild();
    try {
      // the code is loaded once the child answers something: a registry snapshot is answered too
      await send(child, { type: 'registry', snapshot: { revision: 1, services: [{ name: 'order', instances: [] }] } });
      await waitFor(() => messages.find((m) => m.type === 'config-applied'), 'the child to be up');
      await send(child, { type: 'handle', name: 'dns-udp' }, sockets.udp);
      await send(child, { type: 'handle', name: 'dns-tcp' }, sockets.tcp);
      sockets.udp.close();
      sockets.tcp.close();
      sockets.admin.close();
      const udp = udpQueries(sockets.port, 'order.default.svc', 20);
      await udp.sent;
      const tcp = dig(sockets.port, 'order.default.svc', 'A', ['+tcp']);
      // the child has read every datagram and accepted the connection, all before it has a config
      await waitFor(() => udpRecvQueue(sockets.port) === 0, 'the child to read the datagrams');
      await waitFor(() => acceptedBy(child.pid!, sockets.port) === 1, 'the child to accept the TCP connection');
      expect(messages.filter((m) => m.type !== 'config-applied')).toEqual([]);

      await send(child, { type: 'config', config: { ...config(sockets.port, 0), services: [] } });
      const answers = await udp.answers;
      expect(answers.size).toBe(20);
      for (const data of answers.values()) expect(data).toEqual(['240.240.0.1']); // names from the snapshot
      expect((await tcp).answers.map((a) => a.data)).toEqual(['240.240.0.1']);
    } finally {
      await stopChild(child);
    }
  }, 120_000);

  it('hot restart: the UDP socket goes from one epoch to the next under steady queries, none lost, both epochs on the recvmmsg path when the addon is built', async () => {
    const sockets = await bindSockets();
    // The test keeps its copy of the UDP socket for the next epoch, as the agent does, without reading it.
    const symbol = Object.getOwnPropertySymbols(sockets.udp).find((s) => s.description === 'state symbol')!;
    (sockets.udp as unknown as Record<symbol, { handle: { recvStop(): number } }>)[symbol].handle.recvStop();
    sockets.admin.close();
    const startEpoch = async (epoch: number) => {
      const admin = net.createServer();
      await new Promise<void>((resolve) => admin.listen(0, '127.0.0.1', () => resolve()));
      const adminPort = (admin.address() as net.AddressInfo).port;
      const forked = forkChild();
      await send(forked.child, { type: 'config', config: config(sockets.port, adminPort) });
      await send(forked.child, { type: 'handle', name: 'admin' }, admin);
      await send(forked.child, { type: 'handle', name: 'dns-udp' }, sockets.udp);
      await send(forked.child, { type: 'handle', name: 'dns-tcp' }, sockets.tcp);
      admin.close();
      await send(forked.child, { type: 'start', epoch });
      expect(await waitFor(() => forked.messages.find((m) => m.type === 'ready' || m.type === 'error'), `epoch ${epoch} ready`)).toMatchObject({ type: 'ready', epoch });
      const udpPath = async () => ((await (await fetch(`http://127.0.0.1:${adminPort}/config_dump`)).json()) as { udp: { path: string; reason?: string; stats?: { datagrams: number } } }).udp;
      return { ...forked, udpPath };
    };

    // steady load: 16 queries in flight from one socket, each waited for up to 5 s (a lost one counts)
    const client = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => client.bind(0, '127.0.0.1', () => resolve()));
    const pending = new Map<number, NodeJS.Timeout>();
    const failures: string[] = [];
    let answered = 0;
    let nextId = 1;
    let stopped = false;
    let sent = 0;
    const sendOne = (): void => {
      if (stopped || sent >= 100_000) return;
      const id = nextId;
      nextId = (nextId % 65535) + 1;
      sent++;
      pending.set(id, setTimeout(() => {
        pending.delete(id);
        failures.push(`query ${id}: no answer`);
        sendOne();
      }, 5000));
      client.send(dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'order.default.svc' }] }), sockets.port, '127.0.0.1');
    };
    client.on('message', (msg) => {
      const id = msg.readUInt16BE(0);
      const timer = pending.get(id);
      if (!timer) return;
      clearTimeout(timer);
      pending.delete(id);
      const data = (dnsPacket.decode(msg).answers ?? []).map((a) => String((a as { data?: unknown }).data));
      if (data.join() !== '240.240.0.1') failures.push(`query ${id}: ${data.join() || `rcode ${msg[3] & 0x0f}`}`);
      answered++;
      sendOne();
    });

    const old = await startEpoch(1);
    let next: Awaited<ReturnType<typeof startEpoch>> | undefined;
    try {
      for (let k = 0; k < 16; k++) sendOne();
      await waitFor(() => answered > 500, 'queries answered by epoch 1');
      const oldPath = await old.udpPath();
      // The load pauses while epoch 2 starts: a datagram the new child reads before it serves can be
      // lost today, on the dgram path as on the addon's (a known gap of the hand-over hold, not of
      // the UDP path). Both epochs then read the socket at once, and epoch 1 drains under load.
      stopped = true;
      await waitFor(() => pending.size === 0, 'the queries in flight before epoch 2');
      next = await startEpoch(2);
      stopped = false;
      for (let k = 0; k < 16; k++) sendOne();
      await waitFor(() => answered > 1000, 'queries answered by both epochs');
      const atRestart = answered;
      const exited = new Promise<number | null>((resolve) => old.child.once('exit', (code) => resolve(code)));
      await send(old.child, { type: 'drain', drainTimeMs: 200 });
      expect(await exited).toBe(0);
      await waitFor(() => answered > atRestart + 1000, 'queries answered by epoch 2');
      stopped = true;
      await waitFor(() => pending.size === 0, 'the queries in flight');
      const nextPath = await next.udpPath();
      expect(failures).toEqual([]);
      for (const p of [oldPath, nextPath]) {
        expect(p.path).toBe(nativeUdpStatus().loaded ? 'recvmmsg' : 'dgram');
        if (p.path === 'recvmmsg') expect(p.stats!.datagrams).toBeGreaterThan(0);
      }
    } finally {
      stopped = true;
      for (const timer of pending.values()) clearTimeout(timer);
      client.close();
      await stopChild(old.child);
      if (next) await stopChild(next.child);
      sockets.udp.close();
      sockets.tcp.close();
    }
  }, 120_000);

  it('exits when the agent that forked it is killed with SIGKILL, freeing its port', async () => {
    // The intermediate process plays the agent: binds the sockets, forks the real bin, hands them over,
    // waits for ready, prints the child's pid and port, then stays until it is killed.
    const script = `
      import { fork } from 'node:child_process';
      import dgram from 'node:dgram';
      import net from 'node:net';
      const [bin, upstream] = process.argv.slice(1);
      const udp = dgram.createSocket('udp4');
      await new Promise((r) => udp.bind(0, '127.0.0.1', r));
      const port = udp.address().port;
      const tcp = net.createServer();
      await new Promise((r, j) => { tcp.once('error', j); tcp.listen(port, '127.0.0.1', r); });
      const child = fork(bin, ['--log-level', 'none', '--no-admin'], { execArgv: [], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
      const send = (m, h) => new Promise((r, j) => child.send(m, h, {}, (e) => (e ? j(e) : r())));
      child.on('message', (m) => {
        if (m.type === 'ready') process.stdout.write(JSON.stringify({ pid: child.pid, port }) + '\\n');
      });
      await send({ type: 'config', config: { services: [{ name: 'order' }], upstreams: [upstream], listen: { address: '127.0.0.1', port } } });
      await send({ type: 'handle', name: 'dns-udp' }, udp);
      await send({ type: 'handle', name: 'dns-tcp' }, tcp);
      udp.close();
      tcp.close();
      await send({ type: 'start', epoch: 0 });
      setInterval(() => {}, 1000);
    `;
    const agent = spawn(process.execPath, ['--input-type=module', '-e', script, bin, `127.0.0.1:${blackhole.port}`], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(agent);
    let out = '';
    agent.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const { pid, port } = await waitFor(() => (out.includes('\n') ? (JSON.parse(out.split('\n')[0]!) as { pid: number; port: number }) : undefined), 'the child to be ready', 300);
    pids.push(pid);
    expect((await dig(port, 'order.default.svc')).answers.map((a) => a.data)).toEqual(['240.240.0.1']);

    agent.kill('SIGKILL');
    await waitFor(() => isGone(pid), `mesh-dns (pid ${pid}) to exit after its agent died`, 300);
    // the port is free again: the next agent binds it
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(port, '127.0.0.1', () => resolve());
    });
    udp.close();
    const tcp = net.createServer();
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(port, '127.0.0.1', () => resolve());
    });
    await new Promise<void>((resolve) => tcp.close(() => resolve()));
  }, 120_000);
});
