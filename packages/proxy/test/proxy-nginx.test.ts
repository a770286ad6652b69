import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curl, rawExchange, startProxy, waitFor, type StartedProxy } from './support/proxy-harness';

// nginx from Debian as the upstream: static files (Content-Length), HEAD, 304, nginx's own 404 and a
// chunked (gzip) response, all through the proxy with byte-for-byte comparison.
const hasNginx = spawnSync('sh', ['-c', 'command -v nginx'], { env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin` } }).status === 0;
if (!hasNginx && process.env.CI) throw new Error('proxy-nginx: nginx is not installed (scripts/install-test-deps.sh installs it)');

describe.skipIf(!hasNginx)('nginx upstream', () => {
  let dir: string;
  let nginx: ChildProcess;
  let port: number;
  let p: StartedProxy;
  let big: Buffer;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'proxy-nginx-'));
    fs.mkdirSync(path.join(dir, 'www'));
    big = crypto.randomBytes(3 * 1024 * 1024 + 17);
    fs.writeFileSync(path.join(dir, 'www', 'big.bin'), big);
    fs.writeFileSync(path.join(dir, 'www', 'page.html'), `<html>${'hello mesh '.repeat(2000)}</html>`);
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    port = (s.address() as net.AddressInfo).port;
    await new Promise<void>((r) => s.close(() => r()));
    fs.writeFileSync(path.join(dir, 'nginx.conf'), `worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  types { text/html html; application/octet-stream bin; }
  gzip on; gzip_types text/html; gzip_min_length 10;
  server { listen 127.0.0.1:${port}; root ${dir}/www; etag on; }
}
`);
    nginx = spawn('nginx', ['-c', path.join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: 'ignore', env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin` } });
    await waitFor(async () => (await curl([`http://127.0.0.1:${port}/page.html`, '-o', '/dev/null'])).code === 0, 'nginx', 30_000);
    p = await startProxy({
      clusters: [{ name: 'out#80#static', endpoints: [{ address: '127.0.0.1', port }] }],
      routes: { virtualHosts: [{ name: 'static', domains: ['static'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#80#static' } }] }] },
    });
  }, 60_000);
  afterAll(async () => {
    await p?.proxy.close();
    nginx?.kill('SIGTERM');
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const via = (args: string[]) => curl(['-H', 'Host: static', ...args]);

  it('passes a 3 MB file byte for byte, several times on kept-alive connections', async () => {
    const out = path.join(dir, 'out.bin');
    const urls = Array.from({ length: 3 }, () => `http://127.0.0.1:${p.port}/big.bin`);
    const r = await via(['-o', out, '-o', `${out}2`, '-o', `${out}3`, ...urls]);
    expect(r.code).toBe(0);
    for (const f of [out, `${out}2`, `${out}3`]) expect(fs.readFileSync(f).equals(big)).toBe(true);
  });

  it('HEAD carries Content-Length but no body, and the connection stays usable (pipelined GET after it)', async () => {
    const r = await rawExchange(p.port, 'HEAD /big.bin HTTP/1.1\r\nHost: static\r\n\r\nGET /page.html HTTP/1.1\r\nHost: static\r\nConnection: close\r\n\r\n', 3000);
    const [headResponse, rest] = [r.text.slice(0, r.text.indexOf('\r\n\r\n') + 4), r.text.slice(r.text.indexOf('\r\n\r\n') + 4)];
    expect(headResponse).toMatch(/^HTTP\/1.1 200 OK\r\n/);
    expect(headResponse).toMatch(/content-length: 3145745/i);
    expect(rest).toMatch(/^HTTP\/1.1 200 OK\r\n/);
    expect(rest.endsWith(`<html>${'hello mesh '.repeat(2000)}</html>`)).toBe(true);
    expect(r.closed).toBe(true);
  });

  it('a conditional GET gets 304 without a body; nginx\'s 404 passes through', async () => {
    const first = await via(['-s', '-D', '-', '-o', '/dev/null', `http://127.0.0.1:${p.port}/big.bin`]);
    const etag = /etag: (\S+)/i.exec(first.stdout)![1]!;
    const r = await via(['-s', '-i', '-H', `If-None-Match: ${etag}`, `http://127.0.0.1:${p.port}/big.bin`]);
    expect(r.stdout).toMatch(/^HTTP\/1.1 304 /);
    expect(r.stdout.endsWith('\r\n\r\n')).toBe(true);
    const missing = await via(['-s', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${p.port}/nope`]);
    expect(missing.stdout).toBe('404');
  });

  it('a gzip (chunked) response is passed through and decodes to the original', async () => {
    const r = await via(['-s', '-D', '-', '--compressed', `http://127.0.0.1:${p.port}/page.html`]);
    expect(r.stdout).toMatch(/transfer-encoding: chunked/i);
    expect(r.stdout).toMatch(/content-encoding: gzip/i);
    expect(r.stdout).toContain(`<html>${'hello mesh '.repeat(2000)}</html>`);
  });
});
