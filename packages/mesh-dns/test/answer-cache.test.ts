// How long upstream answers are cached and how the cache stays bounded (answers built with dns-packet).
import dnsPacket from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { AnswerCache } from '../src/answer-cache';
import { layoutAnswer } from '../src/wire';

const soa = { type: 'SOA' as const, name: 'ext.test', ttl: 300, data: { mname: 'ns.ext.test', rname: 'admin.ext.test', serial: 1, refresh: 60, retry: 60, expire: 600, minimum: 45 } };

describe('cache lifetimes', () => {
  it('keeps a positive answer for its smallest TTL', () => {
    const answer = dnsPacket.encode({
      type: 'response', id: 1, flags: dnsPacket.RECURSION_AVAILABLE, questions: [{ type: 'A', name: 'a.ext.test' }],
      answers: [{ type: 'A', name: 'a.ext.test', ttl: 120, data: '198.18.0.1' }, { type: 'A', name: 'a.ext.test', ttl: 30, data: '198.18.0.2' }],
      additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as never],
    });
    const layout = layoutAnswer(answer)!;
    expect(layout.cacheTtl).toBe(30);
    expect(layout.ttlOffsets).toHaveLength(2); // the OPT record's "TTL" (flags) is never touched
  });

  it('keeps a negative answer (NXDOMAIN or NODATA) for the SOA minimum, capped by the SOA TTL', () => {
    const nx = dnsPacket.encode({ type: 'response', id: 1, flags: 3, questions: [{ type: 'A', name: 'no.ext.test' }], authorities: [soa] });
    expect(layoutAnswer(nx)!.rcode).toBe(3);
    expect(layoutAnswer(nx)!.cacheTtl).toBe(45);
    const nodata = dnsPacket.encode({ type: 'response', id: 1, questions: [{ type: 'AAAA', name: 'a.ext.test' }], authorities: [{ ...soa, ttl: 20 }] });
    expect(layoutAnswer(nodata)!.cacheTtl).toBe(20);
  });

  it('does not cache truncated answers, negative answers without an SOA, TTL 0 or SERVFAIL', () => {
    const tc = dnsPacket.encode({ type: 'response', id: 1, flags: dnsPacket.TRUNCATED_RESPONSE, questions: [{ type: 'A', name: 'big.test' }], answers: [{ type: 'A', name: 'big.test', ttl: 60, data: '198.18.0.1' }] });
    expect(layoutAnswer(tc)!.cacheTtl).toBeUndefined();
    const bareNx = dnsPacket.encode({ type: 'response', id: 1, flags: 3, questions: [{ type: 'A', name: 'no.test' }] });
    expect(layoutAnswer(bareNx)!.cacheTtl).toBeUndefined();
    const zero = dnsPacket.encode({ type: 'response', id: 1, questions: [{ type: 'A', name: 'z.test' }], answers: [{ type: 'A', name: 'z.test', ttl: 0, data: '198.18.0.1' }] });
    expect(layoutAnswer(zero)!.cacheTtl).toBeUndefined();
    const servfail = dnsPacket.encode({ type: 'response', id: 1, flags: 2, questions: [{ type: 'A', name: 's.test' }], authorities: [soa] });
    expect(layoutAnswer(servfail)!.cacheTtl).toBeUndefined();
  });

  it('reports a malformed answer as undefined instead of throwing', () => {
    const answer = dnsPacket.encode({ type: 'response', id: 1, questions: [{ type: 'A', name: 'a.test' }], answers: [{ type: 'A', name: 'a.test', ttl: 60, data: '198.18.0.1' }] });
    for (let cut = 12; cut < answer.length; cut++) expect(() => layoutAnswer(answer.subarray(0, cut))).not.toThrow();
    expect(layoutAnswer(answer.subarray(0, answer.length - 2))).toBeUndefined();
    const loop = Buffer.concat([Buffer.from([0, 1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0]), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4])]);
    expect(layoutAnswer(loop)?.cacheTtl).toBe(60); // a pointer is skipped, never followed: no loop possible
  });
});

describe('AnswerCache', () => {
  it('lowers TTLs by the time spent cached and forgets expired answers', () => {
    let now = 1_000_000;
    const cache = new AnswerCache(10, () => now);
    const answer = dnsPacket.encode({ type: 'response', id: 1, questions: [{ type: 'A', name: 'a.test' }], answers: [{ type: 'A', name: 'a.test', ttl: 60, data: '198.18.0.1' }] });
    const layout = layoutAnswer(answer)!;
    cache.set('a', answer, layout.ttlOffsets, layout.cacheTtl!);
    now += 25_000;
    const hit = dnsPacket.decode(cache.get('a')!);
    expect((hit.answers![0] as { ttl?: number }).ttl).toBe(35);
    now += 35_000;
    expect(cache.get('a')).toBeUndefined();
    expect(cache.stats()).toMatchObject({ hits: 1, misses: 1, entries: 0 });
  });

  it('stays bounded: the least recently used entry goes first', () => {
    const cache = new AnswerCache(3);
    const bytes = Buffer.alloc(12);
    for (const key of ['a', 'b', 'c']) cache.set(key, bytes, [], 60);
    expect(cache.get('a')).toBeDefined(); // a is now the most recent
    cache.set('d', bytes, [], 60);
    expect(cache.get('b')).toBeUndefined();
    expect(cache.get('a')).toBeDefined();
    expect(cache.stats()).toMatchObject({ entries: 3, maxEntries: 3, evictions: 1 });
    for (let i = 0; i < 1000; i++) cache.set(`k${i}`, bytes, [], 60);
    expect(cache.stats().entries).toBe(3);
  });
});
