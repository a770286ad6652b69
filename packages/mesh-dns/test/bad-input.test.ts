// Malformed, truncated and hostile packets: FORMERR or dropped, never a crash, never a stall.
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMeshDns, type MeshDns } from '../src/index';
import { nativeUdpStatus } from '../src/native-udp';
import { dig, quietLogger, rawUdp, startDnsmasq, UDP_PATHS, type Dnsmasq } from './helpers';

/** A deterministic PRNG (mulberry32) so a failing fuzz run can be replayed. */
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

const header = (id: number, flagsHi: number, qd: number, an = 0, ns = 0, ar = 0): number[] => [id >> 8, id & 0xff, flagsHi, 0, 0, qd, 0, an, 0, ns, 0, ar];
const qname = (...labels: string[]): number[] => [...labels.flatMap((l) => [l.length, ...Buffer.from(l)]), 0];
const rcodeOf = (msg: Buffer): number => msg[3] & 0x0f;

describe.each(UDP_PATHS)('bad input (UDP through $path)', ({ nativeUdp }) => {
  let upstream: Dnsmasq;
  let dns: MeshDns;
  let port: number;

  beforeAll(async () => {
    upstream = await startDnsmasq();
    dns = createMeshDns({
      listen: { port: 0 },
      services: [{ name: 'order' }],
      upstreams: [`127.0.0.1:${upstream.port}`],
      upstreamTimeoutMs: 500,
      tcpIdleTimeoutMs: 1000,
      nativeUdp,
      logger: quietLogger(),
    });
    port = (await dns.start()).udp.port;
  });
  afterAll(async () => {
    await dns?.close();
    await upstream?.stop();
  });

  it('answers FORMERR for a bad question and drops what must not be answered', async () => {
    const cases: { what: string; packet: number[]; expect: number | 'drop' }[] = [
      { what: 'compression pointer loop in the question', packet: [...header(1, 1, 1), 0xc0, 0x0c, 0, 1, 0, 1], expect: 1 },
      { what: 'pointer to itself after a label', packet: [...header(2, 1, 1), 1, 0x61, 0xc0, 0x0e, 0, 1, 0, 1], expect: 1 },
      { what: 'label longer than 63', packet: [...header(3, 1, 1), 64, ...Buffer.alloc(64, 0x61), 0, 0, 1, 0, 1], expect: 1 },
      { what: 'name longer than 255', packet: [...header(4, 1, 1), ...Array.from({ length: 5 }, () => [63, ...Buffer.alloc(63, 0x62)]).flat(), 0, 0, 1, 0, 1], expect: 1 },
      { what: 'QDCOUNT 0', packet: [...header(5, 1, 0)], expect: 1 },
      { what: 'QDCOUNT 2', packet: [...header(6, 1, 2), ...qname('order'), 0, 1, 0, 1, ...qname('order'), 0, 1, 0, 1], expect: 1 },
      { what: 'question cut short', packet: [...header(7, 1, 1), 5, 0x6f, 0x72], expect: 1 },
      { what: 'type and class missing', packet: [...header(8, 1, 1), ...qname('order')], expect: 1 },
      { what: 'answer records in a query', packet: [...header(9, 1, 1, 1), ...qname('order'), 0, 1, 0, 1], expect: 1 },
      { what: 'opcode UPDATE', packet: [...header(10, 0x28, 1), ...qname('order'), 0, 1, 0, 1], expect: 4 },
      { what: 'a response (QR set): never answered, no reflection loops', packet: [...header(11, 0x81, 1), ...qname('order'), 0, 1, 0, 1], expect: 'drop' },
      { what: 'shorter than a header', packet: [0, 1, 1, 0, 0], expect: 'drop' },
      { what: 'empty datagram', packet: [], expect: 'drop' },
    ];
    for (const c of cases) {
      const answer = await rawUdp(port, Buffer.from(c.packet), c.expect === 'drop' ? 300 : 3000);
      if (c.expect === 'drop') {
        expect(answer, c.what).toBeUndefined();
      } else {
        expect(answer, c.what).toBeDefined();
        expect(rcodeOf(answer!), c.what).toBe(c.expect);
        expect(answer!.readUInt16BE(0), c.what).toBe(c.packet[0] * 256 + c.packet[1]);
        expect(answer![2] & 0x80, c.what).toBe(0x80);
      }
    }
  });

  it('survives thousands of random and mutated packets, then still answers correctly', async () => {
    const random = prng(20261126);
    const valid = [
      dnsPacket.encode({ type: 'query', id: 7, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'order.default.svc' }] }),
      dnsPacket.encode({ type: 'query', id: 8, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'AAAA', name: 'www.ext.test' }], additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 4096 } as never] }),
      dnsPacket.encode({ type: 'query', id: 9, questions: [{ type: 'TXT', name: 'txt.test' }] }),
    ];
    const packets: Buffer[] = [];
    for (let i = 0; i < 1500; i++) {
      const len = Math.floor(random() * 300);
      packets.push(Buffer.from(Array.from({ length: len }, () => Math.floor(random() * 256))));
    }
    for (let i = 0; i < 3000; i++) {
      const base = Buffer.from(valid[i % valid.length]);
      const mode = i % 4;
      let p: Buffer = base;
      if (mode === 0) for (let k = 0; k < 1 + Math.floor(random() * 4); k++) p[Math.floor(random() * p.length)] = Math.floor(random() * 256);
      else if (mode === 1) p = base.subarray(0, Math.floor(random() * base.length));
      else if (mode === 2) p = Buffer.concat([base, Buffer.from(Array.from({ length: Math.floor(random() * 64) }, () => Math.floor(random() * 256)))]);
      else {
        p[12 + Math.floor(random() * Math.max(1, p.length - 16))] = 0xc0 | Math.floor(random() * 4); // compression pointers in odd places
        p[2] &= 0x7f;
      }
      packets.push(p);
    }

    const sender = dgram.createSocket('udp4');
    sender.on('message', () => undefined);
    await new Promise<void>((resolve) => sender.bind(0, '127.0.0.1', () => resolve()));
    for (let i = 0; i < packets.length; i++) {
      sender.send(packets[i], port, '127.0.0.1');
      if (i % 100 === 99) await new Promise((r) => setTimeout(r, 5)); // bounded pace: let the kernel buffers drain
    }
    // the same garbage over TCP, framed, on a few connections
    for (let c = 0; c < 5; c++) {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => undefined);
      socket.on('data', () => undefined);
      await new Promise((resolve) => socket.once('connect', resolve));
      for (const p of packets.slice(c * 300, c * 300 + 300)) {
        const frame = Buffer.alloc(2 + p.length);
        frame.writeUInt16BE(p.length, 0);
        p.copy(frame, 2);
        socket.write(frame);
      }
      socket.end();
    }
    sender.close();

    for (const extra of [[], ['+tcp']]) {
      const mesh = await dig(port, 'order', 'A', extra);
      expect(mesh.answers.map((a) => a.data)).toEqual(['240.240.0.1']);
      const outside = await dig(port, 'www.ext.test', 'A', extra);
      expect(outside.answers.map((a) => a.data)).toEqual(['198.18.5.5']);
    }
    const stats = dns.metrics.snapshot();
    expect(stats.queries['OTHER|formerr']).toBeGreaterThan(100);
    expect(dns.udpPath.path).toBe(nativeUdp && nativeUdpStatus().loaded ? 'recvmmsg' : 'dgram');
  });

  it('does not stall other clients: half-sent TCP frames and idle connections', async () => {
    const stalled: net.Socket[] = [];
    for (let i = 0; i < 20; i++) {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      await new Promise((resolve) => s.once('connect', resolve));
      if (i % 2 === 0) s.write(Buffer.from([0xff, 0xff, 1, 2, 3])); // announces 65535 bytes, sends 3
      stalled.push(s);
    }
    const r1 = await dig(port, 'order', 'A');
    const r2 = await dig(port, 'order', 'A', ['+tcp']);
    expect(r1.answers.map((a) => a.data)).toEqual(['240.240.0.1']);
    expect(r2.answers.map((a) => a.data)).toEqual(['240.240.0.1']);
    // the idle timeout (1 s here) closes every stalled connection
    await Promise.all(stalled.map((s) => (s.destroyed || s.readableEnded ? Promise.resolve() : new Promise((resolve) => s.once('close', resolve)))));
    expect(stalled.every((s) => s.destroyed)).toBe(true);
  });

  it('answers many pipelined queries on one TCP connection, each with its own ID', async () => {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    const ids = Array.from({ length: 200 }, (_, i) => i + 100);
    const frames = ids.map((id) => {
      const q = dnsPacket.encode({ type: 'query', id, questions: [{ type: 'A', name: id % 2 ? 'order' : 'www.ext.test' }] });
      const f = Buffer.alloc(2 + q.length);
      f.writeUInt16BE(q.length, 0);
      q.copy(f, 2);
      return f;
    });
    socket.write(Buffer.concat(frames));
    const got = new Map<number, string>();
    let buf = Buffer.alloc(0);
    await new Promise<void>((resolve, reject) => {
      socket.on('error', reject);
      socket.on('data', (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
          buf = buf.subarray(2 + msg.length);
          const d = dnsPacket.decode(msg);
          got.set(d.id!, String((d.answers?.[0] as { data?: unknown })?.data));
        }
        if (got.size === ids.length) resolve();
      });
    });
    socket.destroy();
    for (const id of ids) expect(got.get(id)).toBe(id % 2 ? '240.240.0.1' : '198.18.5.5');
  });
});
