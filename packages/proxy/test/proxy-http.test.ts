import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { cluster, curl, deadPort, rawExchange, request, startProxy, startUpstream, vhost, waitFor, type StartedProxy, type TestUpstream } from './support/proxy-harness';

// HTTP/1.1 behaviour through the proxy against real upstreams: keep-alive, streaming, 100-continue,
// forwarding headers, upgrades, and what happens on bad input and failing upstreams.
describe('HTTP/1.1 data plane', () => {
  let echo: TestUpstream;
  let chunky: TestUpstream;
  let resetter: net.Server;
  let resetterPort: number;
  let refusedPort: number;
  let wss: WebSocketServer;
  let wsPort: number;
  let p: StartedProxy;

  beforeAll(async () => {
    echo = await startUpstream('echo', (req, res) => {
      res.setHeader('content-type', 'application/json');
      res.setHeader('connection', 'keep-alive, x-private');
      res.setHeader('x-private', 'hop');
      res.setHeader('keep-alive', 'timeout=30');
      res.end(JSON.stringify({ url: req.url, headers: req.headers }));
    });
    // Streams a chunked response and counts a streamed request body.
    chunky = await startUpstream('chunky', (req, res) => {
      if (req.url?.startsWith('/stream-out')) {
        res.writeHead(200, { 'content-type': 'text/plain' });
        let i = 0;
        const tick = () => { if (i++ < 5) { res.write(`part${i};`); setImmediate(tick); } else res.end(); };
        tick();
        return;
      }
      res.end('done\n');
    });
    // Accepts and resets before answering (UC); a closed port gives a refusal (UF).
    resetter = net.createServer((s) => { s.once('data', () => s.resetAndDestroy()); });
    await new Promise<void>((r) => resetter.listen(0, '127.0.0.1', r));
    resetterPort = (resetter.address() as net.AddressInfo).port;
    refusedPort = await deadPort();
    wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    wss.on('connection', (ws, req) => { ws.on('message', (m) => ws.send(`echo:${m.toString()}:${req.headers['x-forwarded-for'] ?? ''}`)); });
    await new Promise<void>((r) => wss.once('listening', r));
    wsPort = (wss.address() as net.AddressInfo).port;

    p = await startProxy({
      clusters: [
        cluster('out#80#echo', [echo]),
        cluster('out#80#chunky', [chunky]),
        { name: 'out#80#reset', endpoints: [{ address: '127.0.0.1', port: resetterPort }] },
        { name: 'out#80#refused', endpoints: [{ address: '127.0.0.1', port: refusedPort }] },
        { name: 'out#80#empty', endpoints: [] },
        { name: 'out#80#ws', endpoints: [{ address: '127.0.0.1', port: wsPort }] },
      ],
      routes: {
        virtualHosts: [
          vhost('echo', ['echo'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#echo' } }]),
          vhost('chunky', ['chunky'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#chunky' } }]),
          vhost('reset', ['reset'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#reset' } }]),
          vhost('refused', ['refused'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#refused' } }]),
          vhost('empty', ['empty'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#empty' } }]),
          vhost('ws', ['ws'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#ws' } }]),
        ],
      },
      limits: { maxHeadersBytes: 8192, maxHeadersCount: 50, headersTimeoutMs: 1500 },
    });
  });
  afterAll(async () => {
    await p?.proxy.close();
    await echo?.close();
    await chunky?.close();
    resetter?.close();
    wss?.close();
  });

  it('keeps both sides alive: many requests on one downstream connection reuse one upstream connection', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const before = echo.requests.length;
    for (let i = 0; i < 20; i++) expect((await request(p.port, { host: 'echo', path: `/k${i}`, agent })).status).toBe(200);
    agent.destroy();
    const seen = echo.requests.slice(before);
    expect(seen).toHaveLength(20);
    expect(new Set(seen.map((r) => r.socketId)).size).toBe(1);
  });

  it('sets x-forwarded-for, x-forwarded-proto, generates x-request-id, and propagates a given one', async () => {
    const r1 = JSON.parse((await request(p.port, { host: 'echo', headers: { 'x-forwarded-for': '203.0.113.9' } })).body);
    expect(r1.headers['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.1');
    expect(r1.headers['x-forwarded-proto']).toBe('http');
    expect(r1.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    const r2 = JSON.parse((await request(p.port, { host: 'echo', headers: { 'x-request-id': 'given-id-1' } })).body);
    expect(r2.headers['x-request-id']).toBe('given-id-1');
  });

  it('removes hop-by-hop headers in both directions, including those named by Connection', async () => {
    const res = await request(p.port, { host: 'echo', headers: { connection: 'x-secret', 'x-secret': 'no', te: 'trailers', 'keep-alive': 'timeout=5', 'x-kept': 'yes' } });
    const seen = JSON.parse(res.body).headers;
    expect(seen['x-secret']).toBeUndefined();
    expect(seen.te).toBeUndefined();
    expect(seen['keep-alive']).toBeUndefined();
    expect(seen['x-kept']).toBe('yes');
    expect(res.headers['x-private']).toBeUndefined();
    expect(res.headers['keep-alive']).toBeUndefined();
    expect(res.headers['x-envoy-upstream-service-time']).toMatch(/^\d+$/);
  });

  it('streams a chunked response and a chunked request body through', async () => {
    const out = await curl(['-H', 'Host: chunky', `http://127.0.0.1:${p.port}/stream-out`]);
    expect(out.stdout).toBe('part1;part2;part3;part4;part5;');
    const before = chunky.requests.length;
    const up = await curl(['-H', 'Host: chunky', '-H', 'Transfer-Encoding: chunked', '--data-binary', '@-', `http://127.0.0.1:${p.port}/upload`], { input: 'x'.repeat(100_000) });
    expect(up.stdout).toBe('done\n');
    expect(chunky.requests[before]!.bodyBytes).toBe(100_000);
    expect(chunky.requests[before]!.headers['transfer-encoding']).toBe('chunked');
  });

  it('handles Expect: 100-continue (curl waits for the 100 before the body)', async () => {
    const before = chunky.requests.length;
    const r = await curl(['-v', '-H', 'Host: chunky', '-H', 'Expect: 100-continue', '--data-binary', '@-', `http://127.0.0.1:${p.port}/expect`], { input: 'y'.repeat(5000) });
    expect(r.stdout).toBe('done\n');
    expect(r.stderr).toContain('HTTP/1.1 100 Continue');
    expect(chunky.requests[before]!.bodyBytes).toBe(5000);
  });

  it('de-chunks a chunked response for an HTTP/1.0 client and closes', async () => {
    const r = await rawExchange(p.port, 'GET /stream-out HTTP/1.0\r\nHost: chunky\r\n\r\n');
    expect(r.text).toMatch(/^HTTP\/1.1 200 OK\r\n/);
    expect(r.text.toLowerCase()).not.toContain('transfer-encoding');
    expect(r.text.endsWith('\r\n\r\npart1;part2;part3;part4;part5;')).toBe(true);
    expect(r.closed).toBe(true);
  });

  it('passes a WebSocket upgrade through (echo via http-proxy-3)', async () => {
    const active = () => p.proxy.stats.gauge('http.', 'virtual', 'downstream_cx_active').value;
    const ws = new WebSocket(`ws://127.0.0.1:${p.port}/chat`, { headers: { host: 'ws' } });
    const reply = await new Promise<string>((resolve, reject) => {
      ws.on('open', () => ws.send('hello'));
      ws.on('message', (m) => resolve(m.toString()));
      ws.on('error', reject);
    });
    ws.close();
    expect(reply).toBe('echo:hello:127.0.0.1');
    // the closed upgraded connection is counted once (it used to be subtracted twice): the gauge is the open connections
    await new Promise<void>((resolve) => ws.once('close', () => resolve()));
    await waitFor(() => !p.proxy.upgradedOpen, 'the proxy to see the upgraded connection close');
    expect(active()).toBe(p.proxy.activeConnections);
  });

  it('answers a malformed request with 400 and closes the connection', async () => {
    for (const bad of ['GARBAGE\r\n\r\n', 'GET / HTTP/1.1\r\nHost: echo\r\nBad Header: x\r\n\r\n', 'GET / HTTP/1.1\nHost: echo\n\n', 'GET / HTTP/9.9\r\nHost: echo\r\n\r\n', 'GET / HTTP/1.1\r\n\r\n']) {
      const r = await rawExchange(p.port, bad);
      expect(r.text, JSON.stringify(bad)).toMatch(/^HTTP\/1.1 400 /);
      expect(r.closed).toBe(true);
    }
  });

  it('rejects oversized headers with 431', async () => {
    const r = await rawExchange(p.port, `GET / HTTP/1.1\r\nHost: echo\r\nx-big: ${'a'.repeat(10_000)}\r\n\r\n`);
    expect(r.text).toMatch(/^HTTP\/1.1 431 /);
    expect(r.closed).toBe(true);
    const many = Array.from({ length: 60 }, (_, i) => `x-h${i}: v`).join('\r\n');
    const r2 = await rawExchange(p.port, `GET / HTTP/1.1\r\nHost: echo\r\n${many}\r\n\r\n`);
    expect(r2.text).toMatch(/^HTTP\/1.1 431 /);
  });

  it('cuts a slow client with a headers timeout (408)', async () => {
    const s = net.connect(p.port, '127.0.0.1');
    let text = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => { text += d; });
    s.on('error', () => {});
    s.write('GET / HTTP/1.1\r\nHost: ec');
    const closed = new Promise<void>((r) => s.on('close', () => r()));
    await closed;
    expect(text).toMatch(/^HTTP\/1.1 408 /);
  });

  it('rejects request smuggling attempts: CL+TE, conflicting CLs, bad chunk framing, TE in HTTP/1.0', async () => {
    const before = echo.requests.length;
    const attempts = [
      'POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: echo\r\n\r\n',
      'POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhello',
      'POST / HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n',
      'POST / HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n',
      'POST / HTTP/1.0\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: -1\r\n\r\n',
      'POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: 1e3\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: echo\r\n folded: header\r\n\r\n',
    ];
    for (const a of attempts) {
      const r = await rawExchange(p.port, a);
      expect(r.text, JSON.stringify(a)).toMatch(/^HTTP\/1.1 (400|501) /);
      expect(r.closed).toBe(true);
    }
    // Bad chunk framing after the head: the upstream may have seen the head, but the client gets 400 and a close.
    const badChunk = await rawExchange(p.port, 'POST /c HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n');
    expect(badChunk.text).toMatch(/^HTTP\/1.1 400 /);
    expect(echo.requests.slice(before).some((r) => r.url === '/smuggled')).toBe(false);
  });

  // Issue 12, item 7: RFC 9112 3.2 — a request with more than one Host, or a Host that is not
  // uri-host [":" port], MUST get 400. Each of these used to be forwarded with 200.
  it('refuses a Host that is a list, empty, has a path or userinfo (400, connection closed, never forwarded)', async () => {
    const before = echo.requests.length;
    const dpeBefore = p.log.filter((l) => l.includes(' 400 DPE ')).length;
    const bad = ['echo, other.example.com', 'echo,other.example.com', '', 'echo/path', 'user@echo', 'echo other', 'echo:80x', '[::1', '[not-v6]:80'];
    for (const host of bad) {
      const r = await rawExchange(p.port, `GET /h HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      expect(r.text, JSON.stringify(host)).toMatch(/^HTTP\/1.1 400 /);
      expect(r.closed).toBe(true);
    }
    // userinfo in an absolute-form target is refused the same way
    const abs = await rawExchange(p.port, 'GET http://user@echo/h HTTP/1.1\r\nHost: echo\r\n\r\n');
    expect(abs.text).toMatch(/^HTTP\/1.1 400 /);
    expect(echo.requests.length).toBe(before);
    await waitFor(() => p.log.filter((l) => l.includes(' 400 DPE ')).length >= dpeBefore + bad.length + 1, 'the DPE access log lines');
    // valid forms still pass: a port, upper case, an IP literal (no virtual host: 404, not 400)
    expect((await rawExchange(p.port, 'GET /ok HTTP/1.1\r\nHost: echo:80\r\nConnection: close\r\n\r\n')).text).toMatch(/^HTTP\/1.1 200 /);
    expect((await rawExchange(p.port, 'GET /ok HTTP/1.1\r\nHost: ECHO\r\nConnection: close\r\n\r\n')).text).toMatch(/^HTTP\/1.1 200 /);
    expect((await rawExchange(p.port, 'GET /ok HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n')).text).toMatch(/^HTTP\/1.1 404 /);
  });

  it('absolute-form: the upstream gets the target\'s authority as Host (RFC 9112 3.2.2), an empty Host is then allowed', async () => {
    const r = await curl(['-x', `http://127.0.0.1:${p.port}`, '-H', 'Host: somewhere-else', 'http://echo/abs']);
    expect(JSON.parse(r.stdout).headers.host).toBe('echo');
    const empty = await rawExchange(p.port, 'GET http://echo/abs2 HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n');
    expect(empty.text).toMatch(/^HTTP\/1.1 200 /);
    expect(JSON.parse(empty.text.slice(empty.text.indexOf('\r\n\r\n') + 4)).headers.host).toBe('echo');
  });

  it('answers OPTIONS * as Envoy does: 404 with no body, never routed, counted, the connection kept', async () => {
    const before = echo.requests.length;
    const r = await rawExchange(p.port, 'OPTIONS * HTTP/1.1\r\nHost: echo\r\n\r\nGET /after-options HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n');
    expect(r.text).toMatch(/^HTTP\/1.1 404 Not Found\r\ncontent-length: 0\r\nserver: envoy\r\n\r\nHTTP\/1.1 200 OK\r\n/);
    expect(echo.requests.slice(before).map((q) => `${q.method} ${q.url}`)).toEqual(['GET /after-options']);
    await waitFor(() => p.log.some((l) => l.includes('"OPTIONS * HTTP/1.1" 404 - ')), 'the OPTIONS * access log line');
    expect(p.proxy.stats.counter('http.', 'virtual', 'downstream_rq_non_relative_path').value).toBe(1);
    // any local reply keeps a pipelined request behind it (it used to be dropped, the client left waiting)
    const nr = await rawExchange(p.port, 'GET /x HTTP/1.1\r\nHost: nowhere\r\n\r\nGET /after-404 HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n');
    expect(nr.text).toMatch(/^HTTP\/1.1 404 Not Found\r\n[\s\S]*no route for host "nowhere"\nHTTP\/1.1 200 OK\r\n/);
    expect(nr.closed).toBe(true);
  });

  it('gives 503 with UF on a refused connection, UC on a reset, UH with no endpoints (access log flags)', async () => {
    const refused = await curl(['-i', '-H', 'Host: refused', `http://127.0.0.1:${p.port}/r`]);
    expect(refused.stdout).toMatch(/^HTTP\/1.1 503 /);
    expect(refused.stdout).toContain('reset reason: connection failure');
    const reset = await curl(['-i', '-H', 'Host: reset', `http://127.0.0.1:${p.port}/x`]);
    expect(reset.stdout).toMatch(/^HTTP\/1.1 503 /);
    const empty = await curl(['-i', '-H', 'Host: empty', `http://127.0.0.1:${p.port}/e`]);
    expect(empty.stdout).toMatch(/^HTTP\/1.1 503 /);
    expect(empty.stdout).toContain('no healthy upstream');
    await waitFor(() => p.log.some((l) => l.includes('"GET /e HTTP/1.1" 503 UH')), 'the UH access log line');
    expect(p.log.some((l) => l.includes('"GET /r HTTP/1.1" 503 UF'))).toBe(true);
    expect(p.log.some((l) => l.includes('"GET /x HTTP/1.1" 503 UC'))).toBe(true);
  });

  it('an upstream that answers before the whole body arrived: the client gets that answer and a close, never a 400', async () => {
    const early = net.createServer((s) => {
      s.once('data', () => s.write('HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nbig!'));
      s.on('error', () => {});
    });
    await new Promise<void>((r) => early.listen(0, '127.0.0.1', r));
    const ep = (early.address() as net.AddressInfo).port;
    p.proxy.update({ ...p.proxy.config, clusters: [...(p.proxy.config.clusters ?? []), { name: 'out#80#early', endpoints: [{ address: '127.0.0.1', port: ep }] }],
      routes: { virtualHosts: [...(p.proxy.config.routes?.virtualHosts ?? []), vhost('early', ['early'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#early' } }])] } });
    const r = await rawExchange(p.port, `POST /up HTTP/1.1\r\nHost: early\r\nContent-Length: 100000\r\n\r\n${'z'.repeat(1000)}`);
    early.close();
    expect(r.text).toMatch(/^HTTP\/1.1 413 /);
    expect(r.text).toMatch(/connection: close/i);
    expect(r.text.endsWith('big!')).toBe(true);
    expect(r.closed).toBe(true);
  });

  it('a malformed or ambiguous upstream response gives 502 with UPE, and the proxy keeps serving', async () => {
    const answers = ['garbage\r\n\r\n', 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 'HTTP/1.1 2000 OK\r\n\r\n'];
    for (const [i, answer] of answers.entries()) {
      const bad = net.createServer((s) => { s.once('data', () => s.end(answer)); s.on('error', () => {}); });
      await new Promise<void>((r) => bad.listen(0, '127.0.0.1', r));
      const bp = (bad.address() as net.AddressInfo).port;
      p.proxy.update({ ...p.proxy.config, clusters: [...(p.proxy.config.clusters ?? []).filter((c) => c.name !== 'out#80#bad'), { name: 'out#80#bad', endpoints: [{ address: '127.0.0.1', port: bp }] }],
        routes: { virtualHosts: [...(p.proxy.config.routes?.virtualHosts ?? []).filter((v) => v.name !== 'bad'), vhost('bad', ['bad'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#bad' } }])] } });
      const r = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'Host: bad', `http://127.0.0.1:${p.port}/bad${i}`]);
      bad.close();
      expect(r.stdout, answer).toBe('502');
      await waitFor(() => p.log.some((l) => l.includes(`"GET /bad${i} HTTP/1.1" 502 UPE`)), 'the UPE line');
    }
    expect((await request(p.port, { host: 'echo' })).status).toBe(200);
  });

  it('Connection: close from the client closes after the response', async () => {
    const r = await rawExchange(p.port, 'GET /c HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n');
    expect(r.text).toMatch(/^HTTP\/1.1 200 OK\r\n/);
    expect(r.text).toMatch(/\r\nconnection: close\r\n/);
    expect(r.closed).toBe(true);
  });

  it('never crashes on random garbage', async () => {
    for (let i = 0; i < 30; i++) {
      const junk = Buffer.from(Array.from({ length: 200 + i * 37 }, (_, k) => (k * 7919 + i * 31) % 256));
      await rawExchange(p.port, junk, 200);
    }
    expect((await request(p.port, { host: 'echo' })).status).toBe(200);
  });
});

describe('streaming memory', () => {
  const children: ChildProcess[] = [];
  afterAll(() => { for (const c of children) c.kill('SIGKILL'); });

  /** Peak resident set (VmHWM) of a process, in MiB. */
  const peakRss = (pid: number) => Number(/VmHWM:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

  it('streams a 100 MB request body and a 100 MB response with flat memory (proxy in its own process)', async () => {
    const size = 100 * 1024 * 1024;
    const sink = await startUpstream('sink', (req, res) => {
      if (req.url === '/download') {
        res.writeHead(200, { 'content-length': String(size) });
        const chunk = Buffer.alloc(64 * 1024, 0x61);
        let sent = 0;
        const pump = () => {
          while (sent < size) {
            sent += chunk.length;
            if (!res.write(chunk)) { res.once('drain', pump); return; }
          }
          res.end();
        };
        pump();
        return;
      }
      res.end('ok\n');
    });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'proxy-stream-'));
    try {
      const cfg = path.join(dir, 'proxy.json');
      fs.writeFileSync(cfg, JSON.stringify({
        admin: { address: '127.0.0.1', port: 0 },
        listener: { name: 'virtual', address: '127.0.0.1', port: 0 },
        clusters: [cluster('out#80#sink', [sink])],
        routes: { virtualHosts: [vhost('sink', ['sink'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#sink' } }])] },
      }));
      const bigFile = path.join(dir, 'big.bin');
      const fd = fs.openSync(bigFile, 'w');
      const block = Buffer.alloc(1024 * 1024, 0x62);
      for (let i = 0; i < 100; i++) fs.writeSync(fd, block);
      fs.closeSync(fd);

      const child = spawn(process.execPath, [path.join(__dirname, '..', 'bin', 'mesh-proxy.js'), '--config', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
      children.push(child);
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
      await waitFor(() => /listening on [^:]+:(\d+)/.test(stderr), 'the proxy to listen', 30_000);
      const port = Number(/listening on [^:]+:(\d+)/.exec(stderr)![1]);
      // A few small requests first so the baseline includes a warmed-up proxy.
      for (let i = 0; i < 5; i++) await curl(['-H', 'Host: sink', `http://127.0.0.1:${port}/warm`]);
      const base = peakRss(child.pid!);

      const upload = await curl(['-X', 'POST', '-T', bigFile, '-H', 'Host: sink', `http://127.0.0.1:${port}/upload`], { timeoutMs: 120_000 });
      expect(upload.stdout).toBe('ok\n');
      expect(sink.requests.at(-1)!.bodyBytes).toBe(size);
      const download = await curl(['-o', '/dev/null', '-w', '%{size_download}', '-H', 'Host: sink', `http://127.0.0.1:${port}/download`], { timeoutMs: 120_000 });
      expect(download.stdout).toBe(String(size));

      const growth = peakRss(child.pid!) - base;
      expect(growth).toBeLessThan(60);
    } finally {
      await sink.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});

describe('route timeout', () => {
  it('counts from the end of the request body (a slow upload is not cut) and gives 504 UT when the answer is late', async () => {
    const slow = await startUpstream('slow', (req, res) => {
      if (req.url === '/hang') return; // never answers
      res.end('got it\n');
    });
    const p = await startProxy({
      clusters: [cluster('out#80#slow', [slow])],
      routes: { virtualHosts: [vhost('slow', ['slow'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#slow', timeoutMs: 800 } }])] },
    });
    try {
      // The body takes about 2 s to arrive, longer than the route timeout.
      const s = net.connect(p.port, '127.0.0.1');
      let text = '';
      s.setEncoding('latin1');
      s.on('data', (d: string) => { text += d; });
      await new Promise<void>((r) => s.on('connect', () => r()));
      s.write('POST /upload HTTP/1.1\r\nHost: slow\r\nContent-Length: 10\r\n\r\n');
      for (let i = 0; i < 10; i++) {
        await new Promise((r) => setTimeout(r, 200));
        s.write('x');
      }
      await waitFor(() => text.includes('got it'), 'the answer after the slow upload');
      expect(text).toMatch(/^HTTP\/1.1 200 OK\r\n/);
      s.destroy();
      const late = await curl(['-s', '-w', '%{http_code}', '-H', 'Host: slow', `http://127.0.0.1:${p.port}/hang`]);
      expect(late.stdout).toBe('upstream request timeout\n504');
      await waitFor(() => p.log.some((l) => l.includes('"GET /hang HTTP/1.1" 504 UT')), 'the UT access log line');
    } finally {
      await p.proxy.close();
      await slow.close();
    }
  });
});
