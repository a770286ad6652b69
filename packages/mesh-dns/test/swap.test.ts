// The name table is swapped whole while queries keep coming: no query may see half a table.
import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMeshDns, type MeshDns, type MeshService } from '../src/index';
import { nativeUdpStatus } from '../src/native-udp';
import { dig, quietLogger, UDP_PATHS } from './helpers';

const SERVICES = 50;
const table = (generation: 1 | 2): MeshService[] =>
  Array.from({ length: SERVICES }, (_, i) => ({ name: `svc-${i}`, namespace: i % 2 ? 'shop' : 'default', vip: `240.240.${generation}.${i + 1}` }));

describe.each(UDP_PATHS)('atomic name-table swap (UDP through $path)', ({ nativeUdp }) => {
  let dns: MeshDns;
  let port: number;

  beforeAll(async () => {
    // no upstream: a name missing from the table would come back SERVFAIL and count as wrong
    dns = createMeshDns({ listen: { port: 0 }, services: table(1), upstreams: ['127.0.0.1:9'], upstreamTimeoutMs: 200, nativeUdp, logger: quietLogger() });
    port = (await dns.start()).udp.port;
  });
  afterAll(async () => {
    await dns?.close();
  });

  it('gives zero wrong answers under continuous queries while the table is swapped', async () => {
    const client = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => client.bind(0, '127.0.0.1', () => resolve()));
    const pending = new Map<number, { service: number; resolve: () => void }>();
    const wrong: string[] = [];
    const seen = { 1: 0, 2: 0 };
    client.on('message', (msg) => {
      const answer = dnsPacket.decode(msg);
      const entry = pending.get(answer.id!);
      if (!entry) return;
      pending.delete(answer.id!);
      const i = entry.service;
      const data = answer.answers?.[0] && 'data' in answer.answers[0] ? String(answer.answers[0].data) : undefined;
      if ((msg[3] & 0x0f) !== 0 || answer.answers?.length !== 1) wrong.push(`svc-${i}: rcode ${msg[3] & 0x0f} with ${answer.answers?.length} answers`);
      else if (data === `240.240.1.${i + 1}`) seen[1]++;
      else if (data === `240.240.2.${i + 1}`) seen[2]++;
      else wrong.push(`svc-${i}: ${data}`);
      entry.resolve();
    });

    const forms = (i: number): string[] => {
      const ns = i % 2 ? 'shop' : 'default';
      return [`svc-${i}.${ns}`, `svc-${i}.${ns}.svc`, `svc-${i}.${ns}.svc.cluster.local`];
    };
    let nextId = 1;
    let stop = false;
    let sent = 0;
    const MAX_QUERIES = 20_000; // bounded in count ...
    const deadline = Date.now() + 20_000; // ... and in time
    const load = (async () => {
      while (!stop && sent < MAX_QUERIES && Date.now() < deadline) {
        const batch: Promise<void>[] = [];
        for (let k = 0; k < 32; k++) {
          const i = sent % SERVICES;
          const name = forms(i)[sent % 3];
          const id = nextId++ & 0xffff || 1;
          nextId = id + 1;
          sent++;
          batch.push(
            new Promise<void>((resolve) => {
              pending.set(id, { service: i, resolve });
              setTimeout(() => {
                if (pending.delete(id)) {
                  wrong.push(`svc-${i}: no answer`);
                  resolve();
                }
              }, 5000);
            }),
          );
          client.send(dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name }] }), port, '127.0.0.1');
        }
        await Promise.all(batch);
      }
    })();

    let swaps = 0;
    for (; swaps < 40 && sent < MAX_QUERIES && Date.now() < deadline; swaps++) {
      dns.updateNames(table(swaps % 2 === 0 ? 2 : 1));
      await new Promise((r) => setTimeout(r, 15));
    }
    stop = true;
    await load;
    client.close();

    expect(wrong).toEqual([]);
    expect(dns.udpPath.path).toBe(nativeUdp && nativeUdpStatus().loaded ? 'recvmmsg' : 'dgram');
    expect(swaps).toBeGreaterThanOrEqual(10);
    expect(sent).toBeGreaterThan(1000);
    // both tables really served during the run: the swaps happened under load
    expect(seen[1]).toBeGreaterThan(0);
    expect(seen[2]).toBeGreaterThan(0);
    // and the server still answers the real dig with the last table
    const last = swaps % 2 === 0 ? 1 : 2;
    const r = await dig(port, 'svc-3.shop', 'A');
    expect(r.answers.map((a) => a.data)).toEqual([`240.240.${last}.4`]);
  });
});
