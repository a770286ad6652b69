import http from 'node:http';
import http2 from 'node:http2';
import { afterAll, describe, expect, it } from 'vitest';
import { curl, startProxy, startUpstream, waitFor, type StartedProxy } from './support/proxy-harness';
import { grpcFrame, startH2Upstream, type H2Upstream } from './support/h2-upstream';

// Upstream HTTP/2 and gRPC (issue 14, part H2U): real node:http2 upstreams on loopback, the proxy on
// ephemeral ports, seen from outside with real curl (admin and requests).
const ups: H2Upstream[] = [];
const proxies: StartedProxy[] = [];
afterAll(async () => {
  for (const p of proxies) await p.proxy.close();
  await Promise.all(ups.map((u) => u.close()));
});

async function h2up(...args: Parameters<typeof startH2Upstream>): Promise<H2Upstream> {
  const u = await startH2Upstream(...args);
  ups.push(u);
  return u;
}
async function proxy(config: Record<string, unknown>): Promise<StartedProxy> {
  const p = await startProxy(config);
  proxies.push(p);
  return p;
}
const admin = async (p: StartedProxy, path: string) => (await curl(['-s', `http://127.0.0.1:${p.admin}${path}`])).stdout;
const endpoint = (u: H2Upstream) => ({ address: u.address, port: u.port });

describe('cluster protocol in the admin interface', () => {
  it('/clusters and /config_dump show which clusters speak HTTP/2 (Envoy\'s HttpProtocolOptions); connections are counted per protocol', async () => {
    const up = await h2up();
    const h1up = await startUpstream('order');
    const p = await proxy({
      clusters: [
        { name: 'out#9000#greeter', protocol: 'http2', endpoints: [endpoint(up)] },
        { name: 'out#80#order', endpoints: [{ address: h1up.address, port: h1up.port }] },
      ],
      routes: { virtualHosts: [{ name: 'order', domains: ['order'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#80#order' } }] }] },
    });
    expect((await curl(['-s', '-H', 'host: order', `http://127.0.0.1:${p.port}/a`, `http://127.0.0.1:${p.port}/b`])).stdout).toContain('order GET /b');
    await h1up.close();
    expect(await admin(p, '/stats')).toContain('cluster.out#80#order.upstream_cx_http1_total: 1');
    const text = await admin(p, '/clusters');
    expect(text).toContain('out#9000#greeter::protocol::http2');
    expect(text).toContain('out#80#order::protocol::http1');
    const json = JSON.parse(await admin(p, '/clusters?format=json')) as { cluster_statuses: { name: string; protocol: string }[] };
    expect(json.cluster_statuses.filter((c) => c.name !== 'BlackHoleCluster').map((c) => [c.name, c.protocol])).toEqual([['out#9000#greeter', 'http2'], ['out#80#order', 'http1']]);
    const dump = JSON.parse(await admin(p, '/config_dump?resource=static_clusters')) as { configs: { cluster: Record<string, any> }[] };
    const opts = (name: string) => dump.configs.find((c) => c.cluster.name === name)!.cluster.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'];
    expect(opts('out#9000#greeter').explicit_http_config).toEqual({ http2_protocol_options: {} });
    expect(opts('out#80#order').explicit_http_config).toEqual({ http_protocol_options: {} });
  });
});

describe('gRPC health checking (grpc.health.v1.Health/Check over HTTP/2)', () => {
  it('a host flips healthy / unhealthy / healthy with the upstream\'s SERVING / NOT_SERVING; the service name is asked for', async () => {
    const up = await h2up();
    const p = await proxy({
      clusters: [{
        name: 'out#9000#greeter', protocol: 'http2', endpoints: [endpoint(up)],
        healthCheck: { grpc: { serviceName: 'greeter.Greeter' }, intervalMs: 50, timeoutMs: 500, healthyThreshold: 1, unhealthyThreshold: 2 },
      }],
    });
    const flags = async () => /out#9000#greeter::127\.0\.0\.1:\d+::health_flags::(\S+)/.exec(await admin(p, '/clusters'))?.[1];
    await waitFor(async () => (await flags()) === 'healthy', 'healthy after the first SERVING answer');
    const check = up.streams.find((s) => s.path === '/grpc.health.v1.Health/Check')!;
    expect(check.headers['content-type']).toBe('application/grpc');
    expect(check.headers.te).toBe('trailers');
    expect(check.headers[':authority']).toBe(`127.0.0.1:${up.port}`); // the cluster name has '#', no authority
    up.healthStatus = 2; // NOT_SERVING
    await waitFor(async () => (await flags()) === '/failed_active_hc', 'unhealthy after NOT_SERVING');
    up.healthStatus = 1;
    await waitFor(async () => (await flags()) === 'healthy', 'healthy again');
    const stats = await admin(p, '/stats');
    expect(stats).toMatch(/cluster\.out#9000#greeter\.health_check\.success: [1-9]/);
    expect(stats).toMatch(/cluster\.out#9000#greeter\.health_check\.failure: [2-9]/);
    // what the probe asked: HealthCheckRequest { service: "greeter.Greeter" }
    const config = JSON.parse(await admin(p, '/config_dump?resource=static_clusters')) as { configs: { cluster: { health_checks: unknown[] } }[] };
    expect(config.configs[0]!.cluster.health_checks[0]).toMatchObject({ grpc_health_check: { service_name: 'greeter.Greeter' } });
  });

  it('a gRPC error answer, an HTTP/1-only upstream and a dead port all fail the check', async () => {
    const failing = await h2up({ handler: () => { /* unused: health checks are answered below */ } });
    failing.server.removeAllListeners('stream');
    failing.server.on('stream', (stream) => {
      stream.on('error', () => {});
      stream.resume();
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12', 'grpc-message': 'unimplemented' }, { endStream: true });
    });
    const h1 = await import('./support/proxy-harness').then((m) => m.startUpstream('h1-only'));
    const p = await proxy({
      clusters: [{
        name: 'out#9000#greeter', protocol: 'http2', endpoints: [endpoint(failing), { address: h1.address, port: h1.port }, { address: '127.0.0.1', port: 1 }],
        healthCheck: { grpc: {}, intervalMs: 50, timeoutMs: 300, unhealthyThreshold: 1 },
      }],
    });
    await waitFor(async () => /health_check\.failure: ([6-9]|\d\d)/.test(await admin(p, '/stats')), 'every host probed and failing');
    const text = await admin(p, '/clusters');
    expect(text.match(/::health_flags::\/failed_active_hc/g)).toHaveLength(3);
    expect(text).not.toContain('::health_flags::healthy');
    await h1.close();
  });
});

/** A cluster `out#9000#greeter` of HTTP/2 endpoints behind the virtual host `greeter`, with route options. */
function greeterConfig(endpoints: H2Upstream[], route: Record<string, unknown> = {}, cluster: Record<string, unknown> = {}) {
  return {
    clusters: [{ name: 'out#9000#greeter', protocol: 'http2', endpoints: endpoints.map(endpoint), ...cluster }],
    routes: { virtualHosts: [{ name: 'greeter', domains: ['greeter'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#9000#greeter', ...route } }] }] },
  };
}

/** HTTP/1.1 request through the proxy; resolves with status, headers, body and the trailers. */
function h1(p: StartedProxy, path: string, opts: { method?: string; headers?: Record<string, string>; body?: Buffer | string; agent?: http.Agent } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; trailers: NodeJS.Dict<string> }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: p.port, path, method: opts.method ?? 'GET', headers: { host: 'greeter', ...opts.headers }, agent: opts.agent ?? false }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, trailers: res.trailers }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

const GRPC = { 'content-type': 'application/grpc', te: 'trailers' };

describe('HTTP/1.1 downstream to an HTTP/2 upstream, through the proxy', () => {
  it('the request arrives as HTTP/2 with the forwarded headers; the response, its body and trailers come back', async () => {
    const up = await h2up();
    const p = await proxy(greeterConfig([up]));
    const r = await h1(p, '/x.Echo/Call?q=1', { method: 'POST', headers: { ...GRPC, 'x-request-id': 'rid-1' }, body: grpcFrame(Buffer.from('hi')) });
    expect(r.status).toBe(200);
    expect(Buffer.from(r.body, 'latin1')).toEqual(grpcFrame(Buffer.from('hi')));
    expect(r.trailers).toMatchObject({ 'grpc-status': '0', 'grpc-message': 'ok' });
    const seen = up.streams.at(-1)!.headers;
    expect(seen).toMatchObject({ ':method': 'POST', ':path': '/x.Echo/Call?q=1', ':authority': 'greeter', ':scheme': 'http', te: 'trailers', 'x-request-id': 'rid-1', 'x-forwarded-for': '127.0.0.1', 'x-forwarded-proto': 'http' });
    expect(seen.connection).toBeUndefined();
    const stats = await admin(p, '/stats');
    expect(stats).toContain('cluster.out#9000#greeter.upstream_cx_http2_total: 1');
    expect(stats).toContain('cluster.out#9000#greeter.upstream_rq_2xx: 1');
    expect(stats).toContain('cluster.out#9000#greeter.grpc.x.Echo.Call.0: 1');
    expect(stats).toContain('cluster.out#9000#greeter.grpc.x.Echo.Call.success: 1');
    expect(stats).toContain('cluster.out#9000#greeter.grpc.x.Echo.Call.total: 1');
  });

  it('a chunked HTTP/1.1 upload reaches the HTTP/2 upstream de-chunked; a keep-alive client reuses one session', async () => {
    const up = await h2up();
    const p = await proxy(greeterConfig([up]));
    const r = await curl(['-s', '-H', 'host: greeter', '-H', 'transfer-encoding: chunked', '--data-binary', 'hello world', `http://127.0.0.1:${p.port}/upload`, `http://127.0.0.1:${p.port}/upload`]);
    expect(r.stdout).toBe('hello worldhello world');
    expect(new Set(up.streams.map((s) => s.sessionId)).size).toBe(1);
  });

  it('streams spread over sessions at the upstream\'s concurrency limit', async () => {
    const held: (() => void)[] = [];
    const up = await h2up({ maxConcurrentStreams: 2, handler: (stream) => { stream.resume(); held.push(() => { stream.respond({ ':status': 200 }); stream.end('ok'); }); } });
    const p = await proxy(greeterConfig([up]));
    const warm = h1(p, '/warm');
    await waitFor(() => held.length === 1, 'warm-up held');
    held.shift()!();
    await warm;
    await new Promise((r) => setTimeout(r, 50)); // the warm-up stream's close gives its slot back
    const rs = Array.from({ length: 6 }, (_, i) => h1(p, `/r${i}`));
    await waitFor(() => held.length === 6, 'six streams open at the upstream');
    const per = new Map<number, number>();
    for (const s of up.streams.slice(1)) per.set(s.sessionId, (per.get(s.sessionId) ?? 0) + 1);
    expect([...per.values()].sort()).toEqual([2, 2, 2]);
    while (held.length > 0) held.shift()!();
    expect((await Promise.all(rs)).map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
  });

  it('GOAWAY from the upstream mid-traffic loses no request', async () => {
    let n = 0;
    const up = await h2up({
      handler: (stream) => {
        stream.resume();
        stream.on('end', () => {
          // every 10th request makes the server drain its session (GOAWAY at the current stream), then answer
          if (++n % 10 === 0) (stream.session as http2.ServerHttp2Session).goaway(http2.constants.NGHTTP2_NO_ERROR, stream.id);
          setTimeout(() => { if (!stream.destroyed) { stream.respond({ ':status': 200 }); stream.end('ok'); } }, 5);
        });
      },
    });
    const p = await proxy(greeterConfig([up]));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    const rs = await Promise.all(Array.from({ length: 60 }, (_, i) => h1(p, `/g${i}`, { agent })));
    agent.destroy();
    expect(rs.filter((r) => r.status !== 200 || r.body !== 'ok')).toEqual([]);
    expect(up.sessions.length).toBeGreaterThanOrEqual(3);
  });
});

describe('gRPC semantics at the proxy', () => {
  it('no healthy upstream on a gRPC request: HTTP 200, trailers-only grpc-status 14 UNAVAILABLE with the reason', async () => {
    const p = await proxy(greeterConfig([]));
    const r = await h1(p, '/x.Echo/Call', { method: 'POST', headers: GRPC, body: grpcFrame(Buffer.from('hi')) });
    expect(r.status).toBe(200);
    expect(r.headers).toMatchObject({ 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'no healthy upstream' });
    expect(r.body).toBe('');
    // the same request without the gRPC content type: Envoy's plain 503
    expect((await h1(p, '/x.Echo/Call', { method: 'POST', body: 'x' })).status).toBe(503);
    expect(await admin(p, '/stats')).toContain('cluster.out#9000#greeter.grpc.x.Echo.Call.14: 1');
  });

  it('grpc-timeout caps the route timeout: 200 + grpc-status 4 DEADLINE_EXCEEDED after the client\'s deadline', async () => {
    const up = await h2up({ handler: (stream) => { stream.resume(); stream.on('error', () => {}); /* never answers */ } });
    const p = await proxy(greeterConfig([up], { timeoutMs: 10_000 }));
    const t0 = Date.now();
    const r = await h1(p, '/x.Echo/Slow', { method: 'POST', headers: { ...GRPC, 'grpc-timeout': '300m' }, body: grpcFrame(Buffer.alloc(0)) });
    const took = Date.now() - t0;
    expect(r.status).toBe(200);
    expect(r.headers).toMatchObject({ 'content-type': 'application/grpc', 'grpc-status': '4', 'grpc-message': 'upstream request timeout' });
    expect(took).toBeGreaterThanOrEqual(290);
    expect(took).toBeLessThan(9000); // not the route's 10 s
    expect(await admin(p, '/stats')).toContain('cluster.out#9000#greeter.upstream_rq_timeout: 1');
  });

  it('retryOn unavailable: a trailers-only grpc-status 14 answer is retried on another host', async () => {
    const sick = await h2up({ handler: (stream) => { stream.resume(); stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'going down' }, { endStream: true }); } });
    const good = await h2up();
    const p = await proxy(greeterConfig([sick, good], { retryPolicy: { retryOn: 'unavailable', numRetries: 2, retryNonIdempotent: true } }, { lbPolicy: 'round_robin' }));
    for (let i = 0; i < 4; i++) {
      const r = await h1(p, '/x.Echo/Call', { method: 'POST', headers: GRPC, body: grpcFrame(Buffer.from(`m${i}`)) });
      expect(r.status).toBe(200);
      expect(r.trailers['grpc-status']).toBe('0');
    }
    expect(sick.streams.length).toBeGreaterThanOrEqual(1);
    expect(await admin(p, '/stats')).toMatch(/cluster\.out#9000#greeter\.upstream_rq_retry: [1-9]/);
    // without the word the 14 reaches the client
    const q = await proxy(greeterConfig([sick], { retryPolicy: { retryOn: '5xx', numRetries: 2, retryNonIdempotent: true } }));
    expect((await h1(q, '/x.Echo/Call', { method: 'POST', headers: GRPC, body: grpcFrame(Buffer.from('x')) })).headers['grpc-status']).toBe('14');
  });
});

/** One request over a prior-knowledge HTTP/2 connection to the proxy (what a plaintext gRPC client sends). */
function h2call(client: http2.ClientHttp2Session, path: string, headers: Record<string, string>, body: Buffer): Promise<{ headers: http2.IncomingHttpHeaders; trailers?: http2.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const s = client.request({ ':method': 'POST', ':path': path, ':authority': 'greeter', ...headers });
    let h: http2.IncomingHttpHeaders = {};
    let t: http2.IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    s.on('response', (x) => { h = x; });
    s.on('trailers', (x) => { t = x; });
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => resolve({ headers: h, trailers: t, body: Buffer.concat(chunks) }));
    s.on('error', reject);
    s.end(body);
  });
}

describe('HTTP/2 on both sides (h2c prior knowledge to the proxy, h2c to the upstream)', () => {
  it('gRPC trailers travel end to end; a proxy-made error is one trailers-only HEADERS frame; a client cancel resets the upstream stream', async () => {
    const up = await h2up();
    let cancelled = 0;
    const slow = await h2up({ handler: (stream) => { stream.resume(); stream.on('close', () => { if (stream.rstCode === http2.constants.NGHTTP2_CANCEL) cancelled++; }); } });
    const p = await proxy({
      clusters: [
        { name: 'out#9000#greeter', protocol: 'http2', endpoints: [endpoint(up)] },
        { name: 'out#9001#slow', protocol: 'http2', endpoints: [endpoint(slow)] },
        { name: 'out#9002#none', protocol: 'http2' },
      ],
      routes: { virtualHosts: [{ name: 'greeter', domains: ['greeter'], routes: [
        { match: { prefix: '/slow.' }, route: { cluster: 'out#9001#slow' } },
        { match: { prefix: '/none.' }, route: { cluster: 'out#9002#none' } },
        { match: { prefix: '/' }, route: { cluster: 'out#9000#greeter' } },
      ] }] },
    });
    const client = http2.connect(`http://127.0.0.1:${p.port}`);
    client.on('error', () => {});
    try {
      const ok = await h2call(client, '/x.Echo/Call', GRPC, grpcFrame(Buffer.alloc(70_000, 7)));
      expect(ok.headers[':status']).toBe(200);
      expect(ok.body).toEqual(grpcFrame(Buffer.alloc(70_000, 7)));
      expect(ok.trailers).toMatchObject({ 'grpc-status': '0', 'grpc-message': 'ok' });
      const none = await h2call(client, '/none.Svc/M', GRPC, grpcFrame(Buffer.alloc(0)));
      expect(none.headers).toMatchObject({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'no healthy upstream' });
      expect(none.trailers).toBeUndefined();
      expect(none.body.length).toBe(0);
      // the client gives up (RST_STREAM CANCEL): the proxy cancels its stream to the upstream too
      const s = client.request({ ':method': 'POST', ':path': '/slow.Svc/M', ':authority': 'greeter', ...GRPC });
      s.on('error', () => {});
      s.write(grpcFrame(Buffer.from('x')));
      await waitFor(() => slow.streams.length === 1, 'the slow upstream got the stream');
      s.close(http2.constants.NGHTTP2_CANCEL);
      await waitFor(() => cancelled === 1, 'the upstream stream cancelled');
      await waitFor(() => p.log.some((l) => l.includes('/slow.Svc/M') && /\bDR\b/.test(l)), 'access log line with DR');
    } finally {
      client.close();
    }
  });
});

describe('back-pressure through an HTTP/2 upstream session', () => {
  it('a client that stops reading stalls only its own stream (bounded bytes in flight); another request on the same session completes', async () => {
    const LIMIT = 64 * 1024 * 1024;
    let written = 0;
    let bigDone = false;
    const up = await h2up({
      handler: (stream, headers) => {
        stream.resume();
        if (headers[':path'] !== '/big') { stream.respond({ ':status': 200 }); stream.end('small'); return; }
        stream.respond({ ':status': 200 });
        const chunk = Buffer.alloc(64 * 1024, 1);
        // write as fast as HTTP/2 flow control lets us, at most LIMIT bytes
        const pump = () => {
          while (written < LIMIT) {
            written += chunk.length;
            if (!stream.write(chunk)) { stream.once('drain', pump); return; }
          }
          bigDone = true;
          stream.end();
        };
        pump();
      },
    });
    const p = await proxy(greeterConfig([up]));
    // the slow client: sends its request and reads nothing
    const net = await import('node:net');
    const slow = net.connect(p.port, '127.0.0.1');
    slow.on('error', () => {});
    slow.pause();
    slow.write('GET /big HTTP/1.1\r\nhost: greeter\r\n\r\n');
    await waitFor(() => written > 0, 'the upstream started sending');
    await new Promise((r) => setTimeout(r, 500));
    const stalledAt = written;
    await new Promise((r) => setTimeout(r, 300));
    expect(written).toBe(stalledAt); // stalled, not still growing
    expect(written).toBeLessThan(24 * 1024 * 1024); // flow control, socket buffers and the proxy's buffers only
    expect(bigDone).toBe(false);
    const r = await h1(p, '/small');
    expect(r.body).toBe('small');
    expect(new Set(up.streams.map((s) => s.sessionId)).size).toBe(1); // the same session carried both
    // the slow client reads again: everything arrives
    let got = 0;
    slow.on('data', (d: Buffer) => { got += d.length; });
    slow.resume();
    await waitFor(() => bigDone && got >= LIMIT, 'the whole body delivered', 30_000);
    slow.destroy();
  });
});
