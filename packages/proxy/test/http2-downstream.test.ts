import { execFile } from 'node:child_process';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PassThrough } from 'node:stream';
import { createLogger } from '@mesh-agent/admin-kit';
import { createProxy } from '../src/proxy';
import { cluster, curl, request, startProxy, startUpstream, vhost, waitFor, type StartedProxy, type TestUpstream } from './support/proxy-harness';
import { ErrorCode, Flag, frame, FrameType, headers, indexed, literal, literalIndexed, RawH2, requestBlock, rstStream, Setting, windowUpdate } from './support/h2-frames';

// Downstream HTTP/2 (issue 14): h2c with prior knowledge through the listener to HTTP/1.1 upstreams,
// multiplexing with per-stream back-pressure, client resets (DR), drain with GOAWAY, and the attack
// patterns of the last years sent as raw frames, each followed by a normal request that must be served.

const MAX_STREAMS = 50;

interface H2Response { status: number; headers: http2.IncomingHttpHeaders; body: string }

/** One request on an HTTP/2 session (node:http2 client). */
function h2get(session: http2.ClientHttp2Session, authority: string, path = '/', extra: Record<string, string> = {}): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':method': 'GET', ':path': path, ':authority': authority, ...extra }, { endStream: true });
    let body = '';
    let head: http2.IncomingHttpHeaders = {};
    req.setEncoding('utf8');
    req.on('response', (h) => { head = h; });
    req.on('data', (c: string) => { body += c; });
    req.on('end', () => resolve({ status: Number(head[':status']), headers: head, body }));
    req.on('error', reject);
  });
}

function h2connect(port: number, settings: http2.Settings = {}): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(`http://127.0.0.1:${port}`, { settings });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

async function stats(p: StartedProxy): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: p.admin, path: '/stats' }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { b += c; });
      res.on('end', () => resolve(b));
    }).on('error', reject);
  });
}

function statValue(text: string, name: string): number {
  const m = new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

/** A normal HTTP/2 request on a fresh connection: the proxy still serves after an attack. */
async function stillServes(p: StartedProxy): Promise<void> {
  const s = await h2connect(p.port);
  try {
    const r = await h2get(s, 'echo', '/after');
    expect(r.status).toBe(200);
    expect(r.body).toContain('echo GET /after');
  } finally { s.close(); }
  const h1 = await request(p.port, { host: 'echo', path: '/after-h1' });
  expect(h1.status).toBe(200);
}

function nghttp(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('nghttp', args, { encoding: 'utf8', timeout: 30_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('downstream HTTP/2', () => {
  let echo: TestUpstream;
  let slow: TestUpstream;
  /** Streams a large body as fast as the proxy takes it; counts what it could write. */
  let big: TestUpstream;
  let bigWritten = 0;
  let bigAborted = 0;
  let p: StartedProxy;

  beforeAll(async () => {
    echo = await startUpstream('echo');
    slow = await startUpstream('slow', (req, res) => {
      const ms = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('ms') ?? '300');
      setTimeout(() => { res.setHeader('content-type', 'text/plain'); res.end(`slow ${req.url}\n`); }, ms);
    });
    big = await startUpstream('big', (req, res) => {
      const total = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('bytes') ?? String(32 * 1024 * 1024));
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      let sent = 0;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) });
      res.on('close', () => { if (sent < total) bigAborted++; });
      const pump = () => {
        while (sent < total) {
          const n = Math.min(chunk.length, total - sent);
          sent += n;
          bigWritten += n;
          if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) { res.once('drain', pump); return; }
        }
        res.end();
      };
      pump();
    });
    p = await startProxy({
      clusters: [cluster('out#80#echo', [echo]), cluster('out#80#slow', [slow]), cluster('out#80#big', [big])],
      routes: {
        virtualHosts: [
          vhost('echo', ['echo'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#echo' } }]),
          vhost('slow', ['slow'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#slow' } }]),
          vhost('big', ['big'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#big', timeoutMs: 0 } }]),
        ],
      },
      limits: { streamIdleTimeoutMs: 1500, headersTimeoutMs: 2000, http2MaxConcurrentStreams: MAX_STREAMS },
    });
  });
  afterAll(async () => {
    await p?.proxy.close();
    await echo?.close();
    await slow?.close();
    await big?.close();
  });

  it('serves curl --http2-prior-knowledge to an HTTP/1.1 upstream, logged as HTTP/2 and counted per protocol', async () => {
    const before = echo.requests.length;
    const r = await curl(['--http2-prior-knowledge', '-i', '--connect-to', `echo:80:127.0.0.1:${p.port}`, 'http://echo/h2c?x=1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^HTTP\/2 200/);
    expect(r.stdout).toContain('echo GET /h2c?x=1');
    expect(r.stdout).toMatch(/x-envoy-upstream-service-time: \d+/);
    const seen = echo.requests[before]!;
    expect(seen.headers.host).toBe('echo');
    expect(seen.headers['x-forwarded-proto']).toBe('http');
    expect(seen.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    await waitFor(() => p.log.some((l) => l.includes('"GET /h2c?x=1 HTTP/2" 200')), 'the access log line');
    const s = await stats(p);
    expect(statValue(s, 'http.virtual.downstream_cx_http2_total')).toBeGreaterThanOrEqual(1);
    expect(statValue(s, 'http.virtual.downstream_rq_http2_total')).toBeGreaterThanOrEqual(1);
  });

  it('Upgrade: h2c (curl --http2) is answered over HTTP/1.1; Upgrade and HTTP2-Settings never reach the upstream', async () => {
    const before = echo.requests.length;
    const r = await curl(['--http2', '-i', '--connect-to', `echo:80:127.0.0.1:${p.port}`, 'http://echo/upgrade-h2c']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 200/);
    expect(r.stdout).not.toMatch(/101 Switching/);
    expect(r.stdout).toContain('echo GET /upgrade-h2c');
    const seen = echo.requests[before]!;
    expect(seen.url).toBe('/upgrade-h2c');
    expect(seen.headers.upgrade).toBeUndefined();
    expect(seen.headers['http2-settings']).toBeUndefined();
    expect(String(seen.headers.connection ?? '')).not.toMatch(/upgrade|http2-settings/i);
    const st = await stats(p);
    expect(statValue(st, 'http.virtual.downstream_cx_http1_total')).toBeGreaterThanOrEqual(1);
    expect(statValue(st, 'http.virtual.downstream_rq_http1_total')).toBeGreaterThanOrEqual(1);
  });

  it('multiplexes many concurrent streams on one connection (nghttp -m, and a node:http2 client)', async () => {
    const cxBefore = statValue(await stats(p), 'http.virtual.downstream_cx_http2_total');
    const n = await nghttp(['-n', '-s', '-m', '40', '-H', ':authority: slow', `http://127.0.0.1:${p.port}/?ms=200`]);
    expect(n.code, n.stderr + n.stdout).toBe(0);
    // nghttp -s prints one line per request with its status
    expect(n.stdout.match(/\b200\b/g)?.length ?? 0).toBeGreaterThanOrEqual(40);
    const s = await h2connect(p.port);
    // the client queues what exceeds the server's SETTINGS_MAX_CONCURRENT_STREAMS once it knows them
    await waitFor(() => s.remoteSettings.maxConcurrentStreams === MAX_STREAMS, 'the server SETTINGS');
    const started = Date.now();
    const all = await Promise.all(Array.from({ length: 100 }, (_, i) => h2get(s, 'slow', `/?ms=300&i=${i}`)));
    const took = Date.now() - started;
    s.close();
    expect(all.every((r) => r.status === 200)).toBe(true);
    expect(new Set(all.map((r) => r.body)).size).toBe(100);
    // 100 requests of 300 ms each, at most MAX_STREAMS at a time on one connection: concurrent, not one after another
    expect(took).toBeLessThan(100 * 300);
    expect(statValue(await stats(p), 'http.virtual.downstream_cx_http2_total') - cxBefore).toBe(2);
  });

  it('every response of 20 multiplexed 1 MiB GETs arrives complete (nghttp -m 20, six runs): no stream is reset after its response was handed over', async () => {
    for (let run = 0; run < 6; run++) {
      const n = await nghttp(['-ns', '-m', '20', '-H', ':authority: big', `http://127.0.0.1:${p.port}/?bytes=1048576&run=${run}`]);
      expect(n.code, n.stdout + n.stderr).toBe(0);
      expect(n.stdout + n.stderr).not.toContain('not processed');
      expect(n.stdout.split('\n').filter((l) => /\s200\s+1M\s/.test(l))).toHaveLength(20);
    }
  });

  it('announces its SETTINGS limits and refuses streams beyond max concurrent streams', async () => {
    const c = await RawH2.connect(p.port);
    try {
      await c.until(() => c.frames.some((f) => f.type === FrameType.SETTINGS && !(f.flags & Flag.ACK)), 3000, 'the server SETTINGS');
      const sf = c.frames.find((f) => f.type === FrameType.SETTINGS && !(f.flags & Flag.ACK))!;
      const entries = new Map<number, number>();
      for (let i = 0; i + 6 <= sf.payload.length; i += 6) entries.set(sf.payload.readUInt16BE(i), sf.payload.readUInt32BE(i + 2));
      expect(entries.get(Setting.MAX_CONCURRENT_STREAMS)).toBe(MAX_STREAMS);
      expect(entries.get(Setting.MAX_HEADER_LIST_SIZE)).toBe(60 * 1024);
      // MAX_STREAMS + 5 slow requests at once: nghttp2 refuses the ones beyond the limit (RST_STREAM
      // REFUSED_STREAM) or, once its SETTINGS were acknowledged, ends the session (GOAWAY PROTOCOL_ERROR)
      const before = slow.requests.length;
      for (let i = 0; i < MAX_STREAMS + 5; i++) c.write(headers(1 + 2 * i, requestBlock('slow', `/?ms=800&limit=${i}`)));
      await c.until(() => c.rstCode(1 + 2 * (MAX_STREAMS + 4)) !== undefined || c.goaway() !== undefined, 3000, 'a refusal');
      const refusedLast = c.rstCode(1 + 2 * (MAX_STREAMS + 4));
      if (refusedLast !== undefined) expect(refusedLast).toBe(ErrorCode.REFUSED_STREAM);
      else expect([ErrorCode.PROTOCOL_ERROR, ErrorCode.INTERNAL_ERROR]).toContain(c.goaway()!.code);
      await new Promise((r) => setTimeout(r, 1000));
      expect(slow.requests.slice(before).filter((r) => r.url.includes('limit=')).length).toBeLessThanOrEqual(MAX_STREAMS);
    } finally { c.close(); }
    await stillServes(p);
  });

  it('a stream whose client does not read does not stall another stream on the same connection; its upstream is paused', async () => {
    const s = await h2connect(p.port);
    try {
      bigWritten = 0;
      const stalled = s.request({ ':method': 'GET', ':path': '/?bytes=67108864', ':authority': 'big' }, { endStream: true });
      stalled.on('error', () => {});
      let stalledHead = false;
      stalled.on('response', () => { stalledHead = true; stalled.pause(); });
      await waitFor(() => stalledHead, 'the stalled response head');
      // the other stream is served while the first one's client reads nothing
      const r = await h2get(s, 'echo', '/fast');
      expect(r.status).toBe(200);
      await new Promise((res) => setTimeout(res, 500));
      // back-pressure reached the upstream: it could write only a bounded part of its 64 MiB
      expect(bigWritten).toBeLessThan(16 * 1024 * 1024);
      stalled.close(http2.constants.NGHTTP2_CANCEL);
    } finally { s.close(); }
  });

  it('a request body to an upstream that does not read is held back by HTTP/2 flow control: the client can send only a bounded amount', async () => {
    const sink = await startUpstream('sink', () => { /* never answers; startUpstream's handler runs after the body, so it is not read to the end */ });
    const q = await startProxy({
      clusters: [cluster('out#80#sink', [sink])],
      routes: { virtualHosts: [vhost('sink', ['sink'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#sink', timeoutMs: 0 } }])] },
    });
    const s = await h2connect(q.port);
    s.on('error', () => {});
    try {
      const req = s.request({ ':method': 'POST', ':path': '/upload', ':authority': 'sink' });
      req.on('error', () => {});
      sink.server.on('request', (r: http.IncomingMessage) => r.pause());
      const chunk = Buffer.alloc(64 * 1024, 0x62);
      let written = 0;
      const deadline = Date.now() + 2000;
      // bounded: 2 s or 64 MiB, writing only while the stream takes more
      while (Date.now() < deadline && written < 64 * 1024 * 1024) {
        if (req.write(chunk)) { written += chunk.length; continue; }
        written += chunk.length;
        await Promise.race([new Promise((r) => req.once('drain', r)), new Promise((r) => setTimeout(r, 200))]);
      }
      expect(written).toBeLessThan(24 * 1024 * 1024);
      req.close(http2.constants.NGHTTP2_CANCEL);
    } finally { s.destroy(); await q.proxy.close(); await sink.close(); }
  });

  it('RST_STREAM from the client mid-response ends the upstream request and is logged with flag DR', async () => {
    const abortedBefore = bigAborted;
    const s = await h2connect(p.port);
    try {
      const req = s.request({ ':method': 'GET', ':path': '/?bytes=67108864&rst=1', ':authority': 'big' }, { endStream: true });
      req.on('error', () => {});
      let got = 0;
      await new Promise<void>((resolve) => req.on('data', (c: Buffer) => { got += c.length; if (got > 256 * 1024) resolve(); }));
      req.close(http2.constants.NGHTTP2_CANCEL);
      await waitFor(() => p.log.some((l) => l.includes('/?bytes=67108864&rst=1 HTTP/2" 200 DR')), 'the access log line with DR');
      await waitFor(() => bigAborted > abortedBefore, 'the upstream request ended');
    } finally { s.close(); }
    await stillServes(p);
  });

  describe('attack patterns, sent as raw frames', () => {
    it('rapid reset (CVE-2023-44487): the flood ends with GOAWAY, the upstream sees a bounded number of requests, memory stays bounded', async () => {
      const before = echo.requests.length;
      const rssBefore = process.memoryUsage().rss;
      const c = await RawH2.connect(p.port);
      let pairs = 0;
      // bounded: at most 20 000 HEADERS+RST_STREAM pairs, or 10 s
      const deadline = Date.now() + 10_000;
      for (let batch = 0; batch < 200 && !c.closed && Date.now() < deadline; batch++) {
        const frames: Buffer[] = [];
        for (let i = 0; i < 100; i++) { const id = 1 + 2 * pairs++; frames.push(headers(id, requestBlock('echo', `/flood/${id}`)), rstStream(id)); }
        c.write(Buffer.concat(frames));
        await new Promise((r) => setImmediate(r));
      }
      await c.until(() => c.goaway() !== undefined || c.closed, 10_000, 'GOAWAY after the flood');
      c.close();
      // nghttp2's reset rate limit: the session stopped processing long before the flood's end
      const goaway = c.goaway();
      expect(goaway, c.summary()).toBeDefined();
      expect(goaway!.lastStreamId).toBeLessThan(2 * pairs / 4);
      const reached = echo.requests.slice(before).filter((r) => r.url.startsWith('/flood/')).length;
      expect(reached).toBeLessThanOrEqual(MAX_STREAMS);
      expect(process.memoryUsage().rss - rssBefore).toBeLessThan(200 * 1024 * 1024);
      await stillServes(p);
    });

    it('a session ended by a flood is logged once per interval, naming the peer and nghttp2\'s reason (the counter counts every one)', async () => {
      const lines: string[] = [];
      const sink = new PassThrough();
      sink.setEncoding('utf8');
      sink.on('data', (chunk: string) => { for (const l of chunk.split('\n')) if (l) lines.push(l); });
      const logger = createLogger({ component: 'envoy', scopes: ['admin', 'config', 'connection', 'http', 'upstream', 'main'], level: 'info', destination: sink });
      const q = createProxy({ admin: { address: '127.0.0.1', port: 0 }, listener: { name: 'virtual', address: '127.0.0.1', port: 0 },
        clusters: [cluster('echo', [echo])], routes: { virtualHosts: [vhost('echo', ['echo'], [{ match: { prefix: '/' }, route: { cluster: 'echo' } }])] } }, { logger });
      const { listener } = await q.start();
      try {
        const floods = async () => {
          const c = await RawH2.connect(listener.port);
          c.write(headers(1, requestBlock('echo', '/continuation'), 0));
          for (let i = 0; i < 10_000 && !c.closed; i++) {
            c.write(frame(FrameType.CONTINUATION, 0, 1, literal(`x-c${i}`, 'v'.repeat(200))));
            if (i % 50 === 49) await new Promise((r) => setImmediate(r));
          }
          await c.until(() => c.closed, 5000, 'the session closed');
        };
        await floods();
        await floods();
        await waitFor(() => lines.some((l) => l.includes('HTTP/2 session ended by a protocol error or a flood limit')), 'the warning');
        const warnings = lines.filter((l) => l.includes('HTTP/2 session ended')).map((l) => JSON.parse(l));
        expect(warnings).toHaveLength(1); // the second flood within the interval is counted, not logged
        expect(warnings[0]).toMatchObject({ scope: 'connection', peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
        expect(warnings[0].reason).toMatch(/\S/);
        const errors = q.stats.all().find((x) => /^http\.[^.]+\.downstream_cx_protocol_error$/.test(x.name));
        expect(errors && 'value' in errors ? errors.value : 0).toBeGreaterThanOrEqual(2);
      } finally { await q.close(); }
    });

    it('CONTINUATION flood: endless CONTINUATION frames without END_HEADERS end the session', async () => {
      const c = await RawH2.connect(p.port);
      c.write(headers(1, requestBlock('echo', '/continuation'), 0));
      let sent = 0;
      for (let i = 0; i < 10_000 && !c.closed; i++) {
        c.write(frame(FrameType.CONTINUATION, 0, 1, literal(`x-c${i}`, 'v'.repeat(200))));
        sent++;
        if (i % 50 === 49) await new Promise((r) => setImmediate(r));
      }
      await c.until(() => c.closed, 5000, 'the session closed');
      expect(c.goaway()).toBeDefined();
      expect(sent).toBeLessThan(10_000);
      expect(echo.requests.some((r) => r.url === '/continuation')).toBe(false);
      await stillServes(p);
    });

    it('HPACK bomb: one large dynamic-table entry referenced many times is refused by the header list limit; the connection goes on', async () => {
      const c = await RawH2.connect(p.port);
      try {
        const block = Buffer.concat([requestBlock('echo', '/bomb'), literalIndexed('x-bomb', 'b'.repeat(4000)), ...Array.from({ length: 4000 }, () => indexed(62))]);
        c.write(headers(1, block));
        await c.until(() => c.rstCode(1) !== undefined || c.closed, 5000, 'the bomb refused');
        expect(c.rstCode(1) ?? c.goaway()?.code).toBe(ErrorCode.ENHANCE_YOUR_CALM);
        expect(echo.requests.some((r) => r.url === '/bomb')).toBe(false);
        // the same connection serves the next request (its HPACK state is intact)
        c.write(headers(3, requestBlock('echo', '/after-bomb')));
        await c.until(() => c.frames.some((f) => f.type === FrameType.DATA && f.streamId === 3 && (f.flags & Flag.END_STREAM) !== 0), 5000, 'the next response');
        expect(echo.requests.some((r) => r.url === '/after-bomb')).toBe(true);
      } finally { c.close(); }
      await stillServes(p);
    });

    it('zero-window stall: a client that never opens its window is cut by the stream idle timeout, the upstream paused meanwhile', async () => {
      bigWritten = 0;
      const c = await RawH2.connect(p.port, [[Setting.INITIAL_WINDOW_SIZE, 0]]);
      try {
        c.write(headers(1, requestBlock('big', '/?bytes=67108864&stall=1')));
        await c.until(() => c.frames.some((f) => f.type === FrameType.HEADERS && f.streamId === 1), 5000, 'the response head');
        await c.until(() => c.rstCode(1) !== undefined || c.closed, 8000, 'the stalled stream cut');
        expect(c.frames.filter((f) => f.type === FrameType.DATA && f.streamId === 1).length).toBe(0);
        expect(bigWritten).toBeLessThan(16 * 1024 * 1024);
        await waitFor(() => p.log.some((l) => l.includes('stall=1 HTTP/2" 200 SI')), 'the access log line with SI');
        // a connection window update alone changes nothing for the stream: still bounded, nothing crashes
        c.write(windowUpdate(0, 1024));
      } finally { c.close(); }
      await stillServes(p);
    });
  });

  it('drain: GOAWAY to HTTP/2 clients, the streams in flight finish', async () => {
    const q = await startProxy({
      clusters: [cluster('out#80#slow', [slow])],
      routes: { virtualHosts: [vhost('slow', ['slow'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#slow' } }])] },
    });
    const s = await h2connect(q.port);
    let goaway = false;
    s.on('goaway', () => { goaway = true; });
    s.on('error', () => {});
    const inFlight = Promise.all([h2get(s, 'slow', '/?ms=800&a=1'), h2get(s, 'slow', '/?ms=800&a=2')]);
    await new Promise((r) => setTimeout(r, 200));
    const drained = q.proxy.drain(5000);
    await waitFor(() => goaway, 'GOAWAY');
    const done = await inFlight;
    expect(done.map((r) => r.status)).toEqual([200, 200]);
    await drained;
    expect(statValue(await stats(q), 'http.virtual.downstream_cx_http2_active')).toBe(0);
    await q.proxy.close();
  });

  it('an idle HTTP/2 connection is closed after idleTimeoutMs (GOAWAY), and counted closed', async () => {
    const q = await startProxy({
      clusters: [cluster('out#80#echo', [echo])],
      routes: { virtualHosts: [vhost('echo', ['echo'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#echo' } }])] },
      limits: { idleTimeoutMs: 1000 },
    });
    try {
      const s = await h2connect(q.port);
      s.on('error', () => {});
      let goaway = false;
      s.on('goaway', () => { goaway = true; });
      expect((await h2get(s, 'echo', '/idle')).status).toBe(200);
      expect(statValue(await stats(q), 'http.virtual.downstream_cx_http2_active')).toBe(1);
      await waitFor(() => goaway && s.closed, 'the idle session closed by the proxy', 6000);
      await waitFor(async () => statValue(await stats(q), 'http.virtual.downstream_cx_http2_active') === 0, 'the gauge back to 0', 3000);
    } finally { await q.proxy.close(); }
  });

  it('rejects an HTTP/2 window outside 65535..262144 with a clear config error', () => {
    expect(() => createProxy({ limits: { http2InitialStreamWindowBytes: 1000 } })).toThrow(/limits\.http2InitialStreamWindowBytes.*at least 65535/s);
  });

  it('net: a connection that sent only part of the preface is closed after the headers timeout', async () => {
    const sock = net.connect(p.port, '127.0.0.1');
    sock.on('error', () => {});
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.write('PRI * HTTP/2.0\r\n');
    const closedAt = await new Promise<number>((r) => sock.once('close', () => r(Date.now())));
    expect(closedAt).toBeGreaterThan(0);
  });
});
