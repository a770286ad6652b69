// Mesh names answered by mesh-dns itself, checked with the real dig over UDP and TCP.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMeshDns, type MeshDns } from '../src/index';
import { dig, quietLogger } from './helpers';

describe('mesh names', () => {
  let dns: MeshDns;
  let port: number;

  beforeAll(async () => {
    dns = createMeshDns({
      listen: { address: '127.0.0.1', port: 0 },
      services: [{ name: 'order' }, { name: 'user', namespace: 'prod', vip: '240.240.0.7' }],
      suffixes: ['svc.cluster.local', 'tsf.mesh'],
      upstreams: ['127.0.0.1:9'], // never used: every query here is a mesh name
      logger: quietLogger(),
    });
    port = (await dns.start()).udp.port;
  });
  afterAll(async () => {
    await dns?.close();
  });

  const aliasesOfOrder = [
    'order',
    'order.default',
    'order.default.svc',
    'order.default.svc.cluster.local',
    'order.tsf.mesh',
    'order.default.tsf.mesh',
    'order.default.svc.tsf.mesh',
  ];

  for (const transport of ['udp', 'tcp'] as const) {
    const extra = transport === 'tcp' ? ['+tcp'] : [];

    it(`answers every alias form with the mesh VIP, authoritative, TTL 30 (${transport})`, async () => {
      for (const name of aliasesOfOrder) {
        for (const form of [name, `${name}.`]) {
          const r = await dig(port, form, 'A', extra);
          expect(r.status, form).toBe('NOERROR');
          expect(r.flags, form).toContain('aa');
          expect(r.answers, form).toEqual([{ name: `${name}.`, ttl: 30, type: 'A', data: '240.240.0.1' }]);
          expect(r.tcp).toBe(transport === 'tcp');
        }
      }
    });

    it(`answers a per-service VIP (${transport})`, async () => {
      for (const name of ['user', 'user.prod', 'user.prod.svc', 'user.prod.svc.cluster.local']) {
        const r = await dig(port, name, 'A', extra);
        expect(r.answers.map((a) => a.data), name).toEqual(['240.240.0.7']);
      }
    });

    it(`gives NOERROR with no answers, never NXDOMAIN, for AAAA and other types (${transport})`, async () => {
      for (const type of ['AAAA', 'TXT', 'MX', 'SRV']) {
        const r = await dig(port, 'order.default', type, extra);
        expect(r.status, type).toBe('NOERROR');
        expect(r.flags, type).toContain('aa');
        expect(r.answers, type).toEqual([]);
      }
    });
  }

  it('is case-insensitive and echoes the question exactly as asked (0x20)', async () => {
    const r = await dig(port, 'OrDeR.DeFaUlT.SvC', 'A');
    expect(r.question).toBe('OrDeR.DeFaUlT.SvC.');
    expect(r.answers).toEqual([{ name: 'OrDeR.DeFaUlT.SvC.', ttl: 30, type: 'A', data: '240.240.0.1' }]);
  });

  it('answers without EDNS too (no OPT record back)', async () => {
    const r = await dig(port, 'order', 'A', ['+noedns']);
    expect(r.answers.map((a) => a.data)).toEqual(['240.240.0.1']);
    expect(r.raw).not.toContain('OPT PSEUDOSECTION');
  });

  it('uses a configured TTL and a new mesh VIP after updateNames', async () => {
    dns.updateNames([{ name: 'pay', namespace: 'shop' }], { ttl: 5, meshVip: '240.240.0.9' });
    try {
      const r = await dig(port, 'pay.shop', 'A');
      expect(r.answers).toEqual([{ name: 'pay.shop.', ttl: 5, type: 'A', data: '240.240.0.9' }]);
      const gone = await dig(port, 'order', 'A');
      expect(gone.answers).toEqual([]); // no longer a mesh name: forwarded (to a dead upstream here)
    } finally {
      dns.updateNames([{ name: 'order' }, { name: 'user', namespace: 'prod', vip: '240.240.0.7' }], { ttl: 30, meshVip: '240.240.0.1' });
    }
  });

  it('refuses a bad name table and keeps serving the old one', async () => {
    expect(() => dns.updateNames([{ name: 'bad name!' }])).toThrowError(/not a valid DNS name/);
    expect(() => dns.updateNames([{ name: 'ok', vip: '999.1.1.1' }])).toThrowError(/not an IPv4 address/);
    const r = await dig(port, 'order', 'A');
    expect(r.answers.map((a) => a.data)).toEqual(['240.240.0.1']);
  });
});

describe('IPv6 listener', () => {
  it('serves mesh names on ::1 over UDP and TCP', async () => {
    const dns = createMeshDns({ listen: { address: '::1', port: 0 }, services: [{ name: 'order' }], upstreams: ['[::1]:9'], logger: quietLogger() });
    try {
      const { udp } = await dns.start();
      for (const extra of [[], ['+tcp']]) {
        const r = await dig(udp.port, 'order.default.svc', 'A', extra, '::1');
        expect(r.answers.map((a) => a.data)).toEqual(['240.240.0.1']);
      }
    } finally {
      await dns.close();
    }
  });
});
