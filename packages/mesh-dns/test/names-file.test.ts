// The name table from a watched RegistrySnapshot file, and how aliases are claimed.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildNameTable, createMeshDns } from '../src/index';
import { dig, quietLogger, tempDir, waitFor } from './helpers';

describe('names file', () => {
  it('serves the services of a RegistrySnapshot file and swaps when it changes; a bad file keeps the old table', async () => {
    const dir = tempDir('names');
    const file = path.join(dir, 'registry.yaml');
    fs.writeFileSync(file, 'services:\n  - name: order\n    instances:\n      - { id: order-1, address: 198.18.0.2, port: 8089 }\n');
    const dns = createMeshDns({ listen: { port: 0 }, namesFile: file, resolvConfPollMs: 200, upstreams: ['127.0.0.1:9'], upstreamTimeoutMs: 200, logger: quietLogger() });
    try {
      const { udp } = await dns.start();
      expect((await dig(udp.port, 'order.default.svc')).answers.map((a) => a.data)).toEqual(['240.240.0.1']);

      fs.writeFileSync(`${file}.new`, 'services:\n  - name: pay\n    namespace: shop\n    vip: 240.240.0.5\n');
      fs.renameSync(`${file}.new`, file);
      await waitFor(async () => (await dig(udp.port, 'pay.shop', 'A', ['+timeout=1'])).answers[0]?.data === '240.240.0.5', 'the names file to be re-read');
      expect((await dig(udp.port, 'order')).answers).toEqual([]);

      fs.writeFileSync(file, 'services:\n  - name: Not Valid\n');
      await waitFor(() => dns.latestError?.message.includes('previous name table stays'), 'the bad file to be reported');
      expect(dns.latestError?.code).toBe('MESH_CONFIG_INVALID');
      expect((await dig(udp.port, 'pay.shop')).answers.map((a) => a.data)).toEqual(['240.240.0.5']);
    } finally {
      await dns.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses to start on a bad names file, saying where', async () => {
    const dir = tempDir('names-bad');
    const file = path.join(dir, 'registry.yaml');
    fs.writeFileSync(file, 'services:\n  - name: ok\n  - name: ok\n');
    const dns = createMeshDns({ listen: { port: 0 }, namesFile: file, upstreams: ['127.0.0.1:9'], logger: quietLogger() });
    try {
      await expect(dns.start()).rejects.toThrowError(/registry\.yaml:3: services(\[1\]|\.1)\.name: service "ok\.default" is listed twice/);
    } finally {
      await dns.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('alias claims', () => {
  it('gives a bare name to the service in namespace default, else the first listed; longer forms never clash', () => {
    const table = buildNameTable(
      [
        { name: 'order', namespace: 'shop', vip: '240.240.0.2' },
        { name: 'order', namespace: 'default', vip: '240.240.0.3' },
        { name: 'user', namespace: 'a', vip: '240.240.0.4' },
        { name: 'user', namespace: 'b', vip: '240.240.0.5' },
      ],
      { meshVip: '240.240.0.1', ttl: 30, suffixes: ['svc.cluster.local'] },
    );
    const vip = (name: string) => table.names.get(name)?.vip;
    expect(vip('order')).toBe('240.240.0.3');
    expect(vip('order.shop')).toBe('240.240.0.2');
    expect(vip('order.shop.svc.cluster.local')).toBe('240.240.0.2');
    expect(vip('user')).toBe('240.240.0.4');
    expect(vip('user.b.svc')).toBe('240.240.0.5');
  });
});
