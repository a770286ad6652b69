import http2 from 'node:http2';
import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { rawExchange, startProxy, waitFor, type StartedProxy } from './support/proxy-harness';
import { startH2Upstream, type H2Upstream } from './support/h2-upstream';

// Body framing between the layers (issue 14, the split): a response of unknown length (an HTTP/2
// upstream without content-length: bodyKind 'stream') is chunk-encoded by the HTTP/1 codec for an
// HTTP/1.1 client, sent close-delimited to an HTTP/1.0 client, and carries no body for HEAD. Real
// node:http2 upstream, the proxy on ephemeral ports, raw client sockets reading the bytes on the wire.
const ups: H2Upstream[] = [];
const proxies: StartedProxy[] = [];
const servers: net.Server[] = [];
afterAll(async () => {
  for (const p of proxies) await p.proxy.close();
  await Promise.all(ups.map((u) => u.close()));
  for (const s of servers) s.close();
});

async function setup(): Promise<StartedProxy> {
  const up = await startH2Upstream({
    handler: (stream, headers) => {
      stream.respond({ ':status': 200, 'content-type': 'text/plain', 'x-up': 'h2' });
      if (headers[':method'] === 'HEAD') { stream.end(); return; }
      stream.write('hello ');
      setTimeout(() => stream.end('world'), 20); // two DATA frames, no content-length
    },
  });
  ups.push(up);
  const p = await startProxy({
    clusters: [{ name: 'out#9000#h2', protocol: 'http2', endpoints: [{ address: up.address, port: up.port }] }],
    routes: { virtualHosts: [{ name: 'h2', domains: ['h2'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#9000#h2' } }] }] },
  });
  proxies.push(p);
  return p;
}

function split(text: string): { head: string; body: string } {
  const i = text.indexOf('\r\n\r\n');
  return { head: text.slice(0, i).toLowerCase(), body: text.slice(i + 4) };
}

describe('a response of unknown length from an HTTP/2 upstream, to HTTP/1 clients', () => {
  it('HTTP/1.1: chunk-encoded (transfer-encoding: chunked, last chunk), and the keep-alive connection serves the next request', async () => {
    const p = await setup();
    const r = await rawExchange(p.port, 'GET /a HTTP/1.1\r\nHost: h2\r\n\r\nGET /b HTTP/1.1\r\nHost: h2\r\nConnection: close\r\n\r\n');
    const responses = r.text.split(/(?=HTTP\/1\.1 )/);
    expect(responses).toHaveLength(2);
    for (const one of responses) {
      const { head, body } = split(one);
      expect(head).toMatch(/^http\/1\.1 200 /);
      expect(head).toContain('transfer-encoding: chunked');
      expect(head).not.toContain('content-length');
      expect(head).toContain('x-up: h2');
      expect(body).toBe('6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n');
    }
    expect(r.closed).toBe(true);
  });

  it('HTTP/1.0: the body is close-delimited (no chunked framing the client cannot read), then the connection closes', async () => {
    const p = await setup();
    const r = await rawExchange(p.port, 'GET /a HTTP/1.0\r\nHost: h2\r\n\r\n');
    const { head, body } = split(r.text);
    expect(head).toMatch(/^http\/1\.1 200 /);
    expect(head).not.toContain('transfer-encoding');
    expect(head).toContain('connection: close');
    expect(body).toBe('hello world');
    expect(r.closed).toBe(true);
  });

  it('HEAD: the head only, and the connection goes on', async () => {
    const p = await setup();
    const r = await rawExchange(p.port, 'HEAD /a HTTP/1.1\r\nHost: h2\r\n\r\nGET /b HTTP/1.1\r\nHost: h2\r\nConnection: close\r\n\r\n');
    const responses = r.text.split(/(?=HTTP\/1\.1 )/);
    expect(responses).toHaveLength(2);
    expect(split(responses[0]!).body).toBe('');
    expect(split(responses[1]!).body).toBe('6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n');
  });
});

/** A raw HTTP/1.1 upstream: records the request bytes it got, answers once the request ended with a chunked response. */
async function rawUpstream(): Promise<{ port: number; seen: () => string }> {
  let seen = '';
  const server = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.on('data', (c: Buffer) => {
      seen += c.toString('latin1');
      const end = seen.indexOf('\r\n\r\n');
      const ended = end >= 0 && (/content-length: 0/i.test(seen.slice(0, end)) || seen.endsWith('0\r\n\r\n') || /content-length: 11\r\n/i.test(seen.slice(0, end)) && seen.length >= end + 4 + 11);
      if (ended) sock.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-up: raw\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n');
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, seen: () => seen };
}

describe('an HTTP/2 client to an HTTP/1.1 upstream', () => {
  it('a request body without content-length goes chunk-encoded (transfer-encoding: chunked); the chunked response comes back de-chunked', async () => {
    const up = await rawUpstream();
    const p = await startProxy({
      clusters: [{ name: 'out#80#raw', endpoints: [{ address: '127.0.0.1', port: up.port }] }],
      routes: { virtualHosts: [{ name: 'raw', domains: ['raw'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#80#raw' } }] }] },
    });
    proxies.push(p);
    const client = http2.connect(`http://127.0.0.1:${p.port}`);
    client.on('error', () => {});
    try {
      const res = await new Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }>((resolve, reject) => {
        const req = client.request({ ':method': 'POST', ':path': '/up', ':authority': 'raw' });
        let body = '';
        let headers: http2.IncomingHttpHeaders = {};
        req.on('response', (h) => { headers = h; });
        req.setEncoding('latin1');
        req.on('data', (c: string) => { body += c; });
        req.on('end', () => resolve({ status: Number(headers[':status']), headers, body }));
        req.on('error', reject);
        req.write('hello ');
        setTimeout(() => req.end('world'), 20); // two DATA frames, the length never announced
      });
      expect(res.status).toBe(200);
      expect(res.body).toBe('abcde');
      expect(res.headers['x-up']).toBe('raw');
      expect(res.headers['transfer-encoding']).toBeUndefined();
      await waitFor(() => up.seen().endsWith('0\r\n\r\n'), 'the last chunk upstream');
      const seen = up.seen();
      const head = seen.slice(0, seen.indexOf('\r\n\r\n')).toLowerCase();
      expect(head).toMatch(/^post \/up http\/1\.1\r\n/);
      expect(head).toContain('host: raw');
      expect(head).toContain('transfer-encoding: chunked');
      expect(head).not.toContain('content-length');
      expect(seen.slice(seen.indexOf('\r\n\r\n') + 4)).toBe('6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n');
    } finally {
      client.close();
    }
  });
});
