// The two ways mesh-dns serves UDP: batches through the recvmmsg/sendmmsg addon (native/udp_batch.c)
// and Node's dgram, one datagram at a time (the fallback when the addon is not built). The same
// answers on both, from outside: real sockets, real dig, the real bin.
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import dnsPacket from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMeshDns, type MeshDns, type MeshService } from '../src/index';
import { nativeUdpStatus } from '../src/native-udp';
import { dig, freePort, quietLogger, startDnsmasq, stopChild, UDP_PATHS, waitFor, type Dnsmasq } from './helpers';

const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(packageDir, 'bin', 'mesh-dns.js');
const addonLoaded = nativeUdpStatus().loaded;

const SERVICES = 20;
const table = (generation: number): MeshService[] => Array.from({ length: SERVICES }, (_, i) => ({ name: `svc-${i}`, vip: `240.240.${generation}.${i + 1}` }));

/** `name` with the case of each letter flipped at random (0x20): the answer must echo it exactly. */
function mixCase(name: string, random: () => number): string {
  return [...name].map((c) => (random() < 0.5 ? c.toUpperCase() : c)).join('');
}

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Sends `packets` from one socket in waves of `wave` (each wave sent at once, so the server finds
 * many datagrams per read), waiting for each wave's answers (bounded); returns the answers by ID.
 */
async function burst(port: number, packets: Buffer[], expected: (p: Buffer) => boolean, opts: { wave?: number; address?: string } = {}): Promise<Map<number, Buffer>> {
  const address = opts.address ?? '127.0.0.1';
  const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  const answers = new Map<number, Buffer>();
  let waiting: (() => void) | undefined;
  let due = 0;
  socket.on('message', (msg) => {
    answers.set(msg.readUInt16BE(0), msg);
    if (answers.size >= due) waiting?.();
  });
  await new Promise<void>((resolve) => socket.bind(0, address, () => resolve()));
  const wave = opts.wave ?? 48;
  for (let start = 0; start < packets.length; start += wave) {
    const slice = packets.slice(start, start + wave);
    due += slice.filter(expected).length;
    const done = new Promise<void>((resolve) => {
      waiting = resolve;
      setTimeout(resolve, 10_000);
    });
    for (const p of slice) socket.send(p, port, address);
    if (answers.size < due) await done;
  }
  await new Promise((r) => setTimeout(r, 100)); // anything unexpected (an answer to a dropped packet) shows up too
  socket.close();
  return answers;
}

const query = (id: number, name: string, type: dnsPacket.RecordType | 'ANY' = 'A', edns = false): Buffer =>
  dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: type as dnsPacket.RecordType, name }],
    ...(edns ? { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as never] } : {}),
  });

/** The question section of a query or answer: bytes 12 up to the end of the first question. */
function questionBytes(msg: Buffer): Buffer {
  let pos = 12;
  while (msg[pos] !== 0) pos += 1 + msg[pos];
  return msg.subarray(12, pos + 5);
}

describe('the recvmmsg/sendmmsg addon', () => {
  it('is built and loads (the package build builds it; CI fails without it, elsewhere the fallback tests still run)', (ctx) => {
    const status = nativeUdpStatus();
    if (!status.loaded && process.env.CI !== 'true') ctx.skip(`addon not built here: ${status.error}`);
    expect(status).toEqual({ loaded: true });
  });

  it('takes the UDP socket over: every query is read and answered through it, and counted', async (ctx) => {
    if (!addonLoaded) ctx.skip('addon not built');
    const dns = createMeshDns({ listen: { port: 0 }, services: table(1), upstreams: ['127.0.0.1:9'], logger: quietLogger() });
    try {
      const port = (await dns.start()).udp.port;
      expect(dns.udpPath.path).toBe('recvmmsg');
      const packets = Array.from({ length: 300 }, (_, i) => query(i + 1, `svc-${i % SERVICES}`));
      const answers = await burst(port, packets, () => true);
      expect(answers.size).toBe(300);
      const stats = dns.udpPath.stats!;
      expect(stats.datagrams).toBe(300);
      expect(stats.answers).toBe(300);
      expect(stats.batches).toBeGreaterThan(0);
      expect(stats.batches).toBeLessThanOrEqual(300);
      expect(stats.sendErrors).toBe(0);
      expect(dns.configDump().udp).toMatchObject({ path: 'recvmmsg', stats: { datagrams: 300 } });
    } finally {
      await dns.close();
    }
  });

  it('the bin uses it, and MESH_DNS_NO_NATIVE_UDP=1 switches it off (dgram, with the reason in /config_dump)', async () => {
    for (const env of [{}, { MESH_DNS_NO_NATIVE_UDP: '1' }]) {
      const [port, adminPort] = [await freePort(), await freePort()];
      const child = spawn(bin, ['--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${adminPort}`, '--service', 'order', '--upstream', '127.0.0.1:9', '--log-level', 'none'], {
        stdio: 'ignore',
        env: { ...process.env, ...env },
      });
      try {
        const dump = await waitFor(async () => {
          const res = await fetch(`http://127.0.0.1:${adminPort}/config_dump`).catch(() => undefined);
          return res?.ok ? ((await res.json()) as { udp: { path: string; reason?: string } }) : undefined;
        }, 'the admin server');
        const r = await dig(port, 'order.default.svc', 'A');
        expect(r.answers.map((a) => a.data)).toEqual(['240.240.0.1']);
        if ('MESH_DNS_NO_NATIVE_UDP' in env) {
          expect(dump.udp.path).toBe('dgram');
          expect(dump.udp.reason).toContain('MESH_DNS_NO_NATIVE_UDP=1');
        } else {
          expect(dump.udp.path).toBe(addonLoaded ? 'recvmmsg' : 'dgram');
        }
      } finally {
        await stopChild(child);
      }
    }
  });
});

describe.each(UDP_PATHS)('UDP answers (through $path)', ({ path: udpPath, nativeUdp }) => {
  let upstream: Dnsmasq;
  let dns: MeshDns;
  let port: number;

  beforeAll(async () => {
    upstream = await startDnsmasq();
    dns = createMeshDns({ listen: { port: 0 }, services: table(1), upstreams: [`127.0.0.1:${upstream.port}`], upstreamTimeoutMs: 1000, nativeUdp, logger: quietLogger() });
    port = (await dns.start()).udp.port;
  });
  afterAll(async () => {
    await dns?.close();
    await upstream?.stop();
  });

  it('serves this path', () => {
    expect(dns.udpPath.path).toBe(udpPath === 'recvmmsg' && addonLoaded ? 'recvmmsg' : 'dgram');
  });

  it('answers a burst of mixed queries, each with its own ID and its question exactly as asked', async () => {
    const random = prng(17);
    const packets: Buffer[] = [];
    const kinds = new Map<number, { kind: 'A' | 'nodata' | 'outside' | 'formerr'; service?: number; packet: Buffer }>();
    for (let id = 1; id <= 400; id++) {
      const i = id % SERVICES;
      const form = [`svc-${i}`, `svc-${i}.default`, `svc-${i}.default.svc.cluster.local`][id % 3];
      let packet: Buffer;
      let kind: 'A' | 'nodata' | 'outside' | 'formerr';
      if (id % 10 === 3) {
        packet = query(id, mixCase('www.ext.test', random)); // forwarded: answered after the batch
        kind = 'outside';
      } else if (id % 10 === 5) {
        packet = query(id, mixCase(form, random), 'AAAA', true);
        kind = 'nodata';
      } else if (id % 10 === 7) {
        packet = Buffer.from([id >> 8, id & 0xff, 0x01, 0, 0, 2, 0, 0, 0, 0, 0, 0]); // QDCOUNT 2, no questions
        kind = 'formerr';
      } else {
        packet = query(id, mixCase(form, random), id % 4 === 0 ? 'ANY' : 'A', id % 2 === 0);
        kind = 'A';
      }
      kinds.set(id, { kind, service: i, packet });
      packets.push(packet);
      // responses are never answered (no reflection loops): one after every ten queries
      if (id % 10 === 0) packets.push(dnsPacket.encode({ type: 'response', id: 60000 + id, flags: dnsPacket.AUTHORITATIVE_ANSWER, questions: [{ type: 'A', name: form }] }));
    }
    const answers = await burst(port, packets, (p) => (p[2] & 0x80) === 0);
    const wrong: string[] = [];
    for (const [id, { kind, service, packet }] of kinds) {
      const answer = answers.get(id);
      if (!answer) {
        wrong.push(`${id} (${kind}): no answer`);
        continue;
      }
      const rcode = answer[3] & 0x0f;
      if (kind === 'formerr') {
        if (rcode !== 1) wrong.push(`${id}: rcode ${rcode}, expected FORMERR`);
        continue;
      }
      if (!questionBytes(answer).equals(questionBytes(packet))) wrong.push(`${id}: question not echoed as asked`);
      const decoded = dnsPacket.decode(answer);
      const data = (decoded.answers ?? []).map((a) => String((a as { data?: unknown }).data));
      const expected = kind === 'A' ? [`240.240.1.${service! + 1}`] : kind === 'outside' ? ['198.18.5.5'] : [];
      if (rcode !== 0 || data.join() !== expected.join()) wrong.push(`${id} (${kind}): rcode ${rcode} answers ${data.join()}`);
      if (kind !== 'outside' && (answer[2] & 0x04) === 0) wrong.push(`${id}: not authoritative`);
      // EDNS in, EDNS out (the OPT record), and not without
      const hadOpt = packet.readUInt16BE(10) === 1;
      if (kind !== 'outside' && (answer.readUInt16BE(10) === 1) !== hadOpt) wrong.push(`${id}: additional count ${answer.readUInt16BE(10)}`);
    }
    expect(wrong).toEqual([]);
    // nothing answered that should not be: the responses' IDs got nothing back
    expect([...answers.keys()].filter((id) => id > 60000)).toEqual([]);
  });

  it('answers from the new table right after a swap, none from the old one', async () => {
    const before = await burst(port, Array.from({ length: 100 }, (_, k) => query(k + 1, `svc-${k % SERVICES}.default.svc`)), () => true);
    expect([...before.values()].every((a) => String((dnsPacket.decode(a).answers?.[0] as { data?: unknown })?.data).startsWith('240.240.1.'))).toBe(true);
    dns.updateNames(table(2));
    try {
      const after = await burst(port, Array.from({ length: 100 }, (_, k) => query(k + 1, `svc-${k % SERVICES}.default.svc`)), () => true);
      expect(after.size).toBe(100);
      for (const [id, answer] of after) {
        expect(String((dnsPacket.decode(answer).answers?.[0] as { data?: unknown })?.data)).toBe(`240.240.2.${((id - 1) % SERVICES) + 1}`);
      }
    } finally {
      dns.updateNames(table(1));
    }
  });

  it('answers a query in a 60,000-byte datagram and the small one right behind it (slots do not overlap)', async () => {
    const big = Buffer.concat([query(1, 'svc-1'), Buffer.alloc(60_000, 0xab)]);
    const small = query(2, 'svc-2');
    const answers = await burst(port, [big, small], () => true, { wave: 2 });
    expect(String((dnsPacket.decode(answers.get(1)!).answers?.[0] as { data?: unknown })?.data)).toBe('240.240.1.2');
    expect(String((dnsPacket.decode(answers.get(2)!).answers?.[0] as { data?: unknown })?.data)).toBe('240.240.1.3');
  });

  it('on a dual-stack :: listener answers IPv4 clients (v4-mapped senders) and IPv6 clients', async () => {
    const dual = createMeshDns({ listen: { address: '::', port: 0 }, services: table(1), upstreams: ['127.0.0.1:9'], nativeUdp, logger: quietLogger() });
    try {
      const dualPort = (await dual.start()).udp.port;
      const v4 = await dig(dualPort, 'svc-4', 'A', [], '127.0.0.1');
      const v6 = await dig(dualPort, 'svc-5', 'A', [], '::1');
      expect(v4.answers.map((a) => a.data)).toEqual(['240.240.1.5']);
      expect(v6.answers.map((a) => a.data)).toEqual(['240.240.1.6']);
      const answers = await burst(dualPort, Array.from({ length: 50 }, (_, k) => query(k + 1, `svc-${k % SERVICES}`)), () => true, { address: '::1' });
      expect(answers.size).toBe(50);
    } finally {
      await dual.close();
    }
  });

  it('close() lets the process exit by itself, with the socket and the addon duplicate of it closed', async () => {
    // A child script (the built package): starts, answers its own query, closes; it must exit on its
    // own (a poll handle left open would keep it running), with as many sockets open as before start.
    const script = `
      import dgram from 'node:dgram';
      import fs from 'node:fs';
      import { createMeshDns } from ${JSON.stringify(path.join(packageDir, 'dist', 'index.js'))};
      import { createLogger } from ${JSON.stringify(path.join(packageDir, 'node_modules', '@mesh-agent', 'admin-kit', 'dist', 'index.js'))};
      const sockets = () => fs.readdirSync('/proc/self/fd').filter((fd) => { try { return fs.readlinkSync('/proc/self/fd/' + fd).startsWith('socket:'); } catch { return false; } }).length;
      const before = sockets();
      const logger = createLogger({ component: 'mesh-dns', scopes: ['default', 'model'], level: 'none' });
      const dns = createMeshDns({ listen: { port: 0 }, services: [{ name: 'order' }], upstreams: ['127.0.0.1:9'], nativeUdp: ${nativeUdp}, logger });
      const { udp } = await dns.start();
      const client = dgram.createSocket('udp4');
      const answer = await new Promise((resolve) => {
        client.once('message', (m) => resolve(m));
        client.send(Buffer.from([0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, 111, 114, 100, 101, 114, 0, 0, 1, 0, 1]), udp.port, '127.0.0.1');
      });
      client.close();
      const path = dns.udpPath.path;
      await dns.close();
      // libuv closes the addon's poll handle (and with it the duplicate fd) in the close phase of this loop turn
      await new Promise((r) => setTimeout(r, 20));
      console.log(['answered', answer.readUInt16BE(0), answer.subarray(-4).join('.'), path, 'sockets', before, sockets()].join(' '));
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (err += c));
    const code = await new Promise<number | string>((resolve) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve('still running 30 s after close()');
      }, 30_000);
      child.once('exit', (c) => {
        clearTimeout(timer);
        resolve(c ?? -1);
      });
    });
    expect({ code, err }).toEqual({ code: 0, err: '' });
    const [, id, vip, usedPath, , before, after] = out.trim().split(' ');
    expect([id, vip]).toEqual(['7', '240.240.0.1']);
    expect(usedPath).toBe(udpPath === 'recvmmsg' && addonLoaded ? 'recvmmsg' : 'dgram');
    expect(after).toBe(before);
  });
});
