// Doctor and trace ask DNS questions on the wire; here against a real dnsmasq the test starts on loopback.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { queryA, systemNameserver } from '../src/diagnostics/dns-wire';

const hasDnsmasq = existsSync('/usr/sbin/dnsmasq');

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

describe.skipIf(!hasDnsmasq && !process.env.CI)('diagnostics DNS queries', () => {
  let dnsmasq: ChildProcess | undefined;
  let port = 0;
  const dir = mkdtempSync(join(tmpdir(), 'diag-dns-'));
  beforeAll(async () => {
    port = await freePort();
    writeFileSync(join(dir, 'hosts'), '240.240.0.1 order\n');
    dnsmasq = spawn('/usr/sbin/dnsmasq', ['--keep-in-foreground', '--no-resolv', '--no-hosts', `--addn-hosts=${join(dir, 'hosts')}`, '--listen-address=127.0.0.1', '--bind-interfaces', `--port=${port}`, '--pid-file=', '--user=root'], { stdio: 'ignore' });
    for (let i = 0; i < 100; i++) {
      const answer = await queryA('127.0.0.1', port, 'order', 300);
      if (answer.addresses.length) return;
    }
    throw new Error('dnsmasq did not start');
  });
  afterAll(() => { dnsmasq?.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }); });

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
