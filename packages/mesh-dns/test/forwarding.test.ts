// Outside names forwarded to a real upstream (dnsmasq started here), checked with the real dig.
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import dnsPacket from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMeshDns, type MeshDns } from '../src/index';
import { dig, freePort, quietLogger, startBlackhole, startDnsmasq, tempDir, waitFor, type Dnsmasq } from './helpers';

describe('forwarding to the upstreams', () => {
  let upstream: Dnsmasq;
  let dns: MeshDns;
  let port: number;

  beforeAll(async () => {
    upstream = await startDnsmasq();
    dns = createMeshDns({ listen: { port: 0 }, services: [{ name: 'order' }], upstreams: [`127.0.0.1:${upstream.port}`], logger: quietLogger() });
    port = (await dns.start()).udp.port;
  });
  afterAll(async () => {
    await dns?.close();
    await upstream?.stop();
  });

  it('relays an outside answer over UDP and TCP', async () => {
    for (const extra of [[], ['+tcp']]) {
      const direct = await dig(upstream.port, 'www.ext.test', 'A', extra);
      const r = await dig(port, 'www.ext.test', 'A', extra);
      expect(r.status).toBe('NOERROR');
      expect(r.answers.map((a) => a.data)).toEqual(['198.18.5.5']);
      // relayed unchanged: the same flags and records as asking dnsmasq directly
      expect(r.flags).toEqual(direct.flags);
      const withoutTtl = (answers: { ttl: number }[]) => answers.map(({ ttl: _ttl, ...rest }) => rest);
      expect(withoutTtl(r.answers)).toEqual(withoutTtl(direct.answers));
      // the TTL is the upstream's (60), lowered only by the seconds the answer spent in the cache
      expect(r.answers[0].ttl).toBeGreaterThan(40);
      expect(r.answers[0].ttl).toBeLessThanOrEqual(60);
    }
    const txt = await dig(port, 'txt.test', 'TXT');
    expect(txt.answers.map((a) => a.data)).toEqual(['"hello"']);
  });

  it('passes NXDOMAIN through', async () => {
    for (const extra of [[], ['+tcp']]) {
      const r = await dig(port, 'missing.nx.test', 'A', extra);
      expect(r.status).toBe('NXDOMAIN');
      expect(r.answers).toEqual([]);
    }
  });

  it('relays a truncated UDP answer (TC) and the full answer over TCP', async () => {
    const udpOnly = await dig(port, 'big.test', 'A', ['+noedns', '+ignore']);
    expect(udpOnly.flags).toContain('tc');
    expect(udpOnly.tcp).toBe(false);
    const retried = await dig(port, 'big.test', 'A', ['+noedns']); // dig retries over TCP on TC
    expect(retried.tcp).toBe(true);
    expect(retried.flags).not.toContain('tc');
    expect(retried.answers).toHaveLength(120);
    expect(new Set(retried.answers.map((a) => a.data)).size).toBe(120);
  });

  it('caches upstream answers by their TTL and counts cache hits', async () => {
    const before = dns.metrics.snapshot().cacheHits;
    await dig(port, 'cached.ext.test', 'A');
    const second = await dig(port, 'CACHED.ext.test', 'A');
    expect(second.answers.map((a) => a.data)).toEqual(['198.18.5.5']);
    expect(second.question).toBe('CACHED.ext.test.'); // the question as this client asked it
    expect(dns.metrics.snapshot().cacheHits).toBe(before + 1);
    const dump = dns.configDump() as { cache: { entriesSample: { key: string }[] } };
    expect(dump.cache.entriesSample.map((e) => e.key)).toContain('cached.ext.test|1|1|1010');
  });

  it('serves EDNS0 through: the client OPT reaches the upstream and its OPT comes back', async () => {
    const r = await dig(port, 'www.ext.test', 'A', ['+edns=0', '+bufsize=1400']);
    expect(r.raw).toContain('OPT PSEUDOSECTION');
    expect(r.answers.map((a) => a.data)).toEqual(['198.18.5.5']);
  });
});

describe('upstream failures', () => {
  it('gives SERVFAIL within the timeout when every upstream is down, after trying each one', async () => {
    const blackhole = await startBlackhole();
    const closedPort = await freePort(); // nothing listens: ICMP port unreachable
    const dns = createMeshDns({
      listen: { port: 0 },
      upstreams: [`127.0.0.1:${closedPort}`, `127.0.0.1:${blackhole.port}`],
      upstreamTimeoutMs: 300,
      logger: quietLogger(),
    });
    try {
      const { udp } = await dns.start();
      const healthOf = (name: string) => (dns.configDump() as { upstreams: { health: Record<string, Record<string, unknown>> } }).upstreams.health[name];
      for (const extra of [[], ['+tcp']]) {
        // dig waits 8 s: an answer at all proves mesh-dns gave up on its own timeout, well before that
        const r = await dig(udp.port, 'www.example.test', 'A', extra);
        expect(r.status).toBe('SERVFAIL');
        expect(r.question).toBe('www.example.test.');
        if (extra.length > 0) continue;
        // over UDP: each upstream's failure, in the order tried, and what to do about each
        expect(dns.latestError?.message).toContain(`127.0.0.1:${closedPort}: query refused (ECONNREFUSED, ICMP port unreachable)`);
        expect(dns.latestError?.message).toContain(`127.0.0.1:${blackhole.port}: no answer within 300 ms`);
        expect(dns.latestError?.hint).toContain(`nothing serves DNS on 127.0.0.1:${closedPort}`);
        expect(dns.latestError?.hint).toContain(`127.0.0.1:${blackhole.port} did not answer within 300 ms`);
        expect(healthOf(`127.0.0.1:${closedPort}`)).toMatchObject({ healthy: false, lastReason: 'refused', lastErrno: 'ECONNREFUSED' });
        expect(healthOf(`127.0.0.1:${blackhole.port}`)).toMatchObject({ healthy: false, lastReason: 'timeout' });
      }
      expect(blackhole.received()).toBeGreaterThanOrEqual(1); // the second upstream was tried after the first failed
      const failures = dns.metrics.snapshot().upstreamFailures;
      expect(failures[`127.0.0.1:${closedPort}`]).toBeGreaterThanOrEqual(2);
      expect(failures[`127.0.0.1:${blackhole.port}`]).toBeGreaterThanOrEqual(1);
      expect(dns.latestError?.message).toMatch(/every upstream failed for www.example.test/);
      expect(dns.latestError?.message).toContain(`127.0.0.1:${closedPort}: TCP connection refused (ECONNREFUSED)`); // then over TCP
      expect(await dns.metrics.text()).toMatch(new RegExp(`^mesh_dns_upstream_healthy\\{upstream="127\\.0\\.0\\.1:${closedPort}"\\} 0$`, 'm'));
    } finally {
      await dns.close();
      await blackhole.close();
    }
  });

  it('over TCP: an upstream that resets the connection gives SERVFAIL and is unhealthy until it answers again', async () => {
    // a TCP resolver that resets every connection once it has read a query, until told to answer
    let reset = true;
    const server = net.createServer((conn) => {
      conn.on('error', () => undefined);
      conn.once('data', (frame) => {
        if (reset) return conn.resetAndDestroy();
        const q = dnsPacket.decode(frame.subarray(2));
        const name = q.questions![0].name;
        const answer = dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, questions: q.questions, answers: [{ type: 'A', name, ttl: 60, data: '198.18.9.9' }] });
        const out = Buffer.alloc(2 + answer.length);
        out.writeUInt16BE(answer.length, 0);
        answer.copy(out, 2);
        conn.end(out);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const name = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    const dns = createMeshDns({ listen: { port: 0 }, services: [{ name: 'order' }], upstreams: [name], upstreamTimeoutMs: 2000, logger: quietLogger() });
    try {
      const { udp } = await dns.start();
      const failed = await dig(udp.port, 'www.ext.test', 'A', ['+tcp']);
      expect(failed.status).toBe('SERVFAIL');
      expect((await dig(udp.port, 'order', 'A', ['+tcp'])).answers.map((a) => a.data)).toEqual(['240.240.0.1']);
      const healthOf = () => (dns.configDump() as { upstreams: { health: Record<string, Record<string, unknown>> } }).upstreams.health[name];
      expect(healthOf()).toMatchObject({ healthy: false, lastReason: 'reset', lastErrno: 'ECONNRESET', consecutiveFailures: 1 });
      expect(dns.latestError?.message).toContain(`${name}: TCP connection reset by the upstream (ECONNRESET)`);
      expect(dns.latestError?.hint).toContain(`${name} closed the TCP connection before answering`);
      reset = false;
      const ok = await dig(udp.port, 'www.ext.test', 'A', ['+tcp']);
      expect(ok.answers.map((a) => a.data)).toEqual(['198.18.9.9']);
      expect(healthOf()).toMatchObject({ healthy: true, consecutiveFailures: 0, failures: 1 });
    } finally {
      await dns.close();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('accepts only an answer whose ID and question match the query it sent', async () => {
    // A hostile upstream: first a wrong ID, then the right ID with another question, then the real answer.
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', () => resolve()));
    const ids: number[] = [];
    sock.on('message', (msg, rinfo) => {
      const q = dnsPacket.decode(msg);
      ids.push(q.id!);
      const reply = (id: number, name: string, ip: string): Buffer =>
        dnsPacket.encode({ type: 'response', id, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, questions: [{ type: 'A', name, class: 'IN' }], answers: [{ type: 'A', name, ttl: 60, data: ip }] });
      sock.send(reply((q.id! + 1) & 0xffff, q.questions![0].name, '198.18.66.1'), rinfo.port, rinfo.address);
      sock.send(reply(q.id!, 'evil.test', '198.18.66.2'), rinfo.port, rinfo.address);
      setTimeout(() => sock.send(reply(q.id!, q.questions![0].name, '198.18.9.9'), rinfo.port, rinfo.address), 50);
    });
    const dns = createMeshDns({ listen: { port: 0 }, upstreams: [`127.0.0.1:${sock.address().port}`], upstreamTimeoutMs: 3000, logger: quietLogger() });
    try {
      const { udp } = await dns.start();
      const r = await dig(udp.port, 'good.test', 'A');
      expect(r.answers.map((a) => a.data)).toEqual(['198.18.9.9']);
      const r2 = await dig(udp.port, 'good2.test', 'A');
      expect(r2.answers.map((a) => a.data)).toEqual(['198.18.9.9']);
      expect(ids).toHaveLength(2);
      expect(ids[0]).not.toBe(ids[1]); // random IDs, not the client's (dig's differ anyway) nor a counter we can see
    } finally {
      await dns.close();
      sock.close();
    }
  });
});

describe('upstreams from resolv.conf', () => {
  it('reads resolv.conf and re-reads it when it changes', async () => {
    const upstream = await startDnsmasq();
    const dir = tempDir('resolv');
    const file = path.join(dir, 'resolv.conf');
    const deadPort = await freePort();
    fs.writeFileSync(file, `# generated\nsearch example.internal\nnameserver 127.0.0.1:${deadPort}\noptions ndots:5\n`);
    const dns = createMeshDns({ listen: { port: 0 }, resolvConf: file, resolvConfPollMs: 200, upstreamTimeoutMs: 300, logger: quietLogger() });
    try {
      const { udp } = await dns.start();
      expect(dns.currentUpstreams.map((u) => `${u.address}:${u.port}`)).toEqual([`127.0.0.1:${deadPort}`]);
      expect((await dig(udp.port, 'www.ext.test')).status).toBe('SERVFAIL');
      // replaced atomically, as resolvconf does: write aside, rename over
      fs.writeFileSync(`${file}.new`, `nameserver 127.0.0.1:${upstream.port}\n`);
      fs.renameSync(`${file}.new`, file);
      await waitFor(() => dns.currentUpstreams[0]?.port === upstream.port, 'resolv.conf re-read');
      const r = await dig(udp.port, 'www.ext.test');
      expect(r.answers.map((a) => a.data)).toEqual(['198.18.5.5']);
    } finally {
      await dns.close();
      await upstream.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('skips a resolv.conf nameserver that is mesh-dns itself', async () => {
    const dir = tempDir('resolv-self');
    const file = path.join(dir, 'resolv.conf');
    const port = await freePort();
    fs.writeFileSync(file, `nameserver 127.0.0.1:${port}\nnameserver 127.0.0.1:53\n`);
    const dns = createMeshDns({ listen: { port }, resolvConf: file, logger: quietLogger() });
    try {
      await dns.start();
      expect(dns.currentUpstreams.map((u) => `${u.address}:${u.port}`)).toEqual(['127.0.0.1:53']);
    } finally {
      await dns.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('no loops', () => {
  it('refuses a configured upstream that is mesh-dns itself, with a clear error', async () => {
    const port = await freePort();
    for (const upstream of [`127.0.0.1:${port}`, `127.0.0.2:${port}`]) {
      expect(() => createMeshDns({ listen: { address: '127.0.0.1', port }, upstreams: [upstream], logger: quietLogger() })).toThrowError(
        expect.objectContaining({ code: 'MESH_DNS_UPSTREAM_LOOP', message: expect.stringContaining('is this mesh-dns itself') }),
      );
    }
    expect(() => createMeshDns({ listen: { address: '0.0.0.0', port }, upstreams: [`127.0.0.1:${port}`], logger: quietLogger() })).toThrowError(/would loop/);
    // with port 0 the check waits for the real port
    const dns = createMeshDns({ listen: { port: 0 }, upstreams: ['127.0.0.1:53'], logger: quietLogger() });
    await dns.start();
    try {
      expect(() => dns.updateUpstreams([`127.0.0.1:${dns.addresses!.udp.port}`])).toThrowError(expect.objectContaining({ code: 'MESH_DNS_UPSTREAM_LOOP' }));
      expect(dns.currentUpstreams.map((u) => u.port)).toEqual([53]); // the old list stays
    } finally {
      await dns.close();
    }
  });
});
