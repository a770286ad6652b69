// Doctor and trace ask DNS questions on the wire; here against a real dnsmasq the test starts on loopback.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { queryA, systemNameserver } from '../src/diagnostics/dns-wire';
import { DNSMASQ, startDnsmasq, type Dnsmasq } from './dnsmasq';
import { freePort } from './etcd-server';

const hasDnsmasq = existsSync(DNSMASQ);

describe.skipIf(!hasDnsmasq && !process.env.CI)('diagnostics DNS queries', () => {
  let dnsmasq: Dnsmasq | undefined;
  let port = 0;
  const dir = mkdtempSync(join(tmpdir(), 'diag-dns-'));
  beforeAll(async () => {
    dnsmasq = await startDnsmasq({ order: '240.240.0.1' });
    port = dnsmasq.port;
  });
  afterAll(() => { dnsmasq?.stop(); rmSync(dir, { recursive: true, force: true }); });

  it('gets the A record and its rcode', async () => {
    const answer = await queryA('127.0.0.1', port, 'order');
    expect(answer).toMatchObject({ rcode: 0, rcodeName: 'NOERROR', addresses: ['240.240.0.1'], server: `127.0.0.1:${port}` });
  });

  it('reports an unknown name as NXDOMAIN (dnsmasq with no upstream answers REFUSED)', async () => {
    const answer = await queryA('127.0.0.1', port, 'no-such-name.invalid');
    expect(answer.addresses).toEqual([]);
    expect(['NXDOMAIN', 'REFUSED']).toContain(answer.rcodeName);
  });

  it('says when nothing answers', async () => {
    const answer = await queryA('127.0.0.1', await freePort(), 'order', 500);
    expect(answer.addresses).toEqual([]);
    expect(answer.error).toBeTruthy();
  });

  it('reads the first nameserver of a resolv.conf', () => {
    const file = join(dir, 'resolv.conf');
    writeFileSync(file, '# comment\nsearch x\nnameserver 198.18.0.1\nnameserver 10.0.0.1\n');
    expect(systemNameserver(file)).toBe('198.18.0.1');
    expect(systemNameserver(join(dir, 'missing'))).toBe('127.0.0.1');
  });
});
