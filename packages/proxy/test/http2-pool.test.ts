import fs from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import { Cluster } from '../src/cluster/cluster';
import type { ForwardedRequest, StreamResponseHead, UpstreamCallbacks, UpstreamResetKind } from '../src/http/codec/types';
import type { RequestHead } from '../src/http/head-parser';
import { attachResilience } from '../src/resilience/cluster-resilience';
import { StatsStore } from '../src/stats/store';
import { Http2Pool } from '../src/upstream/http2-pool';
import { Http2UpstreamCodec } from '../src/upstream/http2-upstream-codec';
import { startH2Upstream, type H2Upstream } from './support/h2-upstream';
import { waitFor } from './support/proxy-harness';
import { createTestCa, issueLeaf } from './support/test-certs';

// The HTTP/2 upstream pool and codec against real node:http2 servers on loopback: what arrives where is
// read on the server side (which session each stream came on), what comes back through the codec's callbacks.
const ups: H2Upstream[] = [];
const pools: Http2Pool[] = [];
afterAll(async () => {
  for (const p of pools) p.close();
  await Promise.all(ups.map((u) => u.close()));
});

function setup(up: H2Upstream, clusterExtra: Record<string, unknown> = {}) {
  const stats = new StatsStore();
  const cluster = new Cluster({ name: 'out#9000#greeter', protocol: 'http2', endpoints: [{ address: up.address, port: up.port }], ...clusterExtra }, stats);
  attachResilience(cluster);
  const pool = new Http2Pool(60_000);
  pools.push(pool);
  return { stats, cluster, pool };
}

function head(method: string, bodyKind: RequestHead['bodyKind'], grpc = false): RequestHead {
  const names = grpc ? ['content-type', 'te'] : ['x-test'];
  const values = grpc ? ['application/grpc', 'trailers'] : ['1'];
  return { method, target: '/x.Echo/Call', minor: 1, protocol: 'HTTP/1.1', bodyKind, contentLength: -1, host: 'greeter', close: false, connectionTokens: undefined, upgrade: undefined, expectContinue: false, names, lower: names, values };
}

function forwarded(h: RequestHead, attempt = 0): ForwardedRequest {
  return { head: h, path: h.target, authority: 'greeter:9000', upstreamPath: h.target, upstreamAuthority: 'greeter:9000', scheme: 'http', attempt, h1Head: () => '', headerList: () => ({ names: h.lower, values: h.values }) };
}

interface Outcome { res?: StreamResponseHead; body: Buffer[]; trailers?: [readonly string[], readonly string[]]; reset?: [UpstreamResetKind, string | undefined]; done: Promise<void> }

/** One try through the codec; resolves when the response is complete or the try failed. */
function exchange(pool: Http2Pool, cluster: Cluster, h: RequestHead, body?: Buffer, opts: { trailers?: [string[], string[]] } = {}): Outcome & { codec: Http2UpstreamCodec } {
  const codec = new Http2UpstreamCodec(pool);
  let finish!: () => void;
  const out: Outcome & { codec: Http2UpstreamCodec } = { body: [], codec, done: new Promise<void>((r) => { finish = r; }) };
  const send = () => {
    codec.sendHeaders(forwarded(h), h.bodyKind === 'none');
    if (body) {
      if (opts.trailers) { codec.sendData(body, false); codec.sendTrailers(...opts.trailers); } else codec.sendData(body, true);
    }
  };
  const cb: UpstreamCallbacks = {
    onUpstreamReady: send,
    onUpstream100Continue: () => {},
    onUpstreamHeaders: (res, _first, end) => { out.res = res; if (end) finish(); },
    onUpstreamData: (chunk, end) => { if (chunk.length > 0) out.body.push(chunk); if (end) finish(); },
    onUpstreamTrailers: (n, v) => { out.trailers = [n, v]; finish(); },
    onUpstreamReset: (kind, reason) => { out.reset = [kind, reason]; finish(); },
    onUpstreamDrain: () => {},
  };
  const r = codec.attach(cluster, cluster.hosts[0]!, cb);
  if (r === 'ready') send();
  else if (r === 'overflow') { out.reset = ['connect-failure', 'overflow']; finish(); }
  return out;
}

describe('HTTP/2 upstream pool and codec', () => {
  it('a request becomes :method/:path/:authority/:scheme and its headers; the response, its body and gRPC trailers come back', async () => {
    const up = await startH2Upstream();
    ups.push(up);
    const { pool, cluster, stats } = setup(up);
    const x = exchange(pool, cluster, head('POST', 'stream', true), Buffer.from('hello'));
    await x.done;
    expect(x.reset).toBeUndefined();
    expect(x.res!.status).toBe(200);
    expect(Buffer.concat(x.body).toString()).toBe('hello');
    expect(x.trailers).toEqual([['grpc-status', 'grpc-message'], ['0', 'ok']]);
    const seen = up.streams[0]!.headers;
    expect(seen).toMatchObject({ ':method': 'POST', ':path': '/x.Echo/Call', ':authority': 'greeter:9000', ':scheme': 'http', 'content-type': 'application/grpc', te: 'trailers' });
    expect(stats.counter('cluster.', 'out#9000#greeter', 'upstream_cx_http2_total').value).toBe(1);
  });

  it('request trailers reach the upstream after the body', async () => {
    const up = await startH2Upstream();
    ups.push(up);
    const { pool, cluster } = setup(up);
    const x = exchange(pool, cluster, head('POST', 'stream', true), Buffer.from('abc'), { trailers: [['x-checksum'], ['42']] });
    await x.done;
    expect(Buffer.concat(x.body).toString()).toBe('abc');
    await waitFor(() => up.streams[0]!.trailers !== undefined, 'request trailers at the upstream');
    expect(up.streams[0]!.trailers!['x-checksum']).toBe('42');
  });

  it('an HTTP/1.1 chunked request body is de-chunked onto the stream', async () => {
    const up = await startH2Upstream();
    ups.push(up);
    const { pool, cluster } = setup(up);
    const x = exchange(pool, cluster, head('POST', 'chunked'), Buffer.from('5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n'));
    await x.done;
    expect(Buffer.concat(x.body).toString()).toBe('hello world');
  });

  it('streams spread over sessions at the peer\'s SETTINGS_MAX_CONCURRENT_STREAMS, up to max_connections; past that they queue', async () => {
    // the upstream holds every request until 7 are in, so they are all open at once
    const held: (() => void)[] = [];
    const up = await startH2Upstream({
      maxConcurrentStreams: 2,
      handler: (stream) => {
        stream.resume();
        held.push(() => { stream.respond({ ':status': 200 }); stream.end('ok'); });
      },
    });
    ups.push(up);
    const { pool, cluster, stats } = setup(up, { circuitBreakers: { maxConnections: 3 } });
    // a first exchange learns the peer's SETTINGS
    const warm = exchange(pool, cluster, head('GET', 'none'));
    await waitFor(() => held.length === 1, 'warm-up request held');
    held.shift()!();
    await warm.done;
    await waitFor(() => cluster.hosts[0]!.stats.rq_active === 0, 'the warm-up stream closed');
    const xs = Array.from({ length: 7 }, () => exchange(pool, cluster, head('GET', 'none')));
    await waitFor(() => up.streams.length === 7, '6 streams open, 1 queued');
    expect(stats.counter('cluster.', 'out#9000#greeter', 'upstream_rq_pending_total').value).toBe(1);
    const perSession = new Map<number, number>();
    for (const s of up.streams.slice(1)) perSession.set(s.sessionId, (perSession.get(s.sessionId) ?? 0) + 1);
    expect([...perSession.values()]).toEqual([2, 2, 2]);
    expect(stats.counter('cluster.', 'out#9000#greeter', 'upstream_cx_http2_total').value).toBe(3);
    expect(cluster.stats.upstream_cx_overflow.value).toBeGreaterThanOrEqual(1);
    while (held.length > 0) held.shift()!();
    await waitFor(() => up.streams.length === 8, 'the queued one sent once a slot freed');
    while (held.length > 0) held.shift()!();
    await Promise.all(xs.map((x) => x.done));
    expect(xs.every((x) => x.res?.status === 200 && x.reset === undefined)).toBe(true);
  });

  it('GOAWAY from the upstream mid-traffic: streams in flight finish, the next ones go on a new session, none is lost', async () => {
    let goaway = false;
    const up = await startH2Upstream({
      handler: (stream, headers, self) => {
        stream.resume();
        stream.on('end', () => {
          const n = Number(headers['x-n']);
          // the 5th request makes the server announce GOAWAY on its session, then answer it
          if (n === 5 && !goaway) { goaway = true; (stream.session as http2.ServerHttp2Session).goaway(http2.constants.NGHTTP2_NO_ERROR, stream.id); }
          setTimeout(() => { if (!stream.destroyed) { stream.respond({ ':status': 200 }); stream.end(`r${n} s${self.streams.find((s) => s.headers['x-n'] === String(n))!.sessionId}`); } }, 20);
        });
      },
    });
    ups.push(up);
    const { pool, cluster } = setup(up);
    const results: Outcome[] = [];
    for (let i = 0; i < 20; i++) {
      const h = head('GET', 'none');
      h.names = ['x-n']; h.lower = h.names; h.values = [String(i)];
      results.push(exchange(pool, cluster, h));
      await new Promise((r) => setTimeout(r, 5));
    }
    await Promise.all(results.map((x) => x.done));
    // none lost: every request answered, a refused one (above the GOAWAY's last stream id) is reported as such
    const answered = results.filter((x) => x.res?.status === 200).length;
    const refused = results.filter((x) => x.reset?.[0] === 'refused').length;
    expect(answered + refused).toBe(20);
    expect(results.filter((x) => x.reset && x.reset[0] !== 'refused')).toEqual([]);
    expect(new Set(up.streams.map((s) => s.sessionId)).size).toBeGreaterThanOrEqual(2);
    expect(up.sessions[0]!.destroyed || up.sessions[0]!.closed).toBe(true);
  });

  it('a response whose DATA breaks its content-length is a protocol error (Envoy\'s UPE), not a reset', async () => {
    const up = await startH2Upstream({ handler: (stream) => { stream.resume(); stream.respond({ ':status': 200, 'content-length': '10' }); stream.end('abc'); } });
    ups.push(up);
    const { pool, cluster } = setup(up);
    const x = exchange(pool, cluster, head('GET', 'none'));
    await x.done;
    expect(x.reset?.[0]).toBe('protocol-error');
  });

  it('a dead port is a connect failure; a reset stream is a reset; the slot comes back either way', async () => {
    const up = await startH2Upstream({ handler: (stream) => stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR) });
    ups.push(up);
    const { pool, cluster } = setup(up);
    const x = exchange(pool, cluster, head('GET', 'none'));
    await x.done;
    expect(x.reset![0]).toBe('reset');
    expect(x.reset![1]).toContain('INTERNAL_ERROR');
    const dead = new Cluster({ name: 'out#1#dead', protocol: 'http2', endpoints: [{ address: '127.0.0.1', port: 1 }] }, new StatsStore());
    const y = exchange(pool, dead, head('GET', 'none'));
    await y.done;
    expect(y.reset![0]).toBe('connect-failure');
    expect(dead.stats.upstream_cx_connect_fail.value).toBe(1);
    expect(dead.hosts[0]!.stats.rq_active).toBe(0);
    await waitFor(() => cluster.hosts[0]!.stats.rq_active === 0, 'slot given back');
  });
});

describe('HTTP/2 upstream over mTLS (ALPN h2)', () => {
  const TD = 'spiffe://cluster.local/ns/default/sa';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'h2u-mtls-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const ca = createTestCa(path.join(dir, 'ca'));
  const client = issueLeaf(ca, path.join(dir, 'user'), `${TD}/user`);
  const server = issueLeaf(ca, path.join(dir, 'greeter'), `${TD}/greeter`);
  const read = (f: string) => fs.readFileSync(f);
  const secrets = { get: (name: string) => (name === 'default' ? { secureContext: tls.createSecureContext({ cert: read(client.certChain), key: read(client.privateKey), ca: read(client.trustBundle) }) } as never : undefined) };

  function mtlsSetup(up: { address: string; port: number }, identity: string) {
    const stats = new StatsStore();
    const cluster = new Cluster({ name: 'out#9000#greeter', protocol: 'http2', tls: { secret: 'default' }, endpoints: [{ address: up.address, port: up.port, metadata: { identity } }] }, stats);
    const pool = new Http2Pool(60_000);
    pool.secrets = secrets;
    pools.push(pool);
    return { stats, cluster, pool };
  }

  it('offers ALPN h2, presents the secret and checks the registered identity; the transport names the peer', async () => {
    const up = await startH2Upstream({ tls: { key: read(server.privateKey), cert: read(server.certChain), ca: read(ca.cert) } });
    ups.push(up);
    const { pool, cluster, stats } = mtlsSetup(up, `${TD}/greeter`);
    const x = exchange(pool, cluster, head('GET', 'none'));
    await x.done;
    expect(x.reset).toBeUndefined();
    expect(x.res!.status).toBe(200);
    expect(x.codec.transport).toMatch(new RegExp(`^tls TLSv1\\.3 peer=${TD}/greeter$`));
    expect((up.sessions[0]!.socket as tls.TLSSocket).alpnProtocol).toBe('h2');
    expect(stats.counter('cluster.', 'out#9000#greeter', 'ssl.handshake').value).toBe(1);
    // another identity registered for the endpoint: refused as a connect failure with Envoy's reason
    const wrong = mtlsSetup(up, `${TD}/someone-else`);
    const y = exchange(wrong.pool, wrong.cluster, head('GET', 'none'));
    await y.done;
    expect(y.reset![0]).toBe('connect-failure');
    expect(y.reset![1]).toContain(`is not the registered ${TD}/someone-else`);
    expect(wrong.stats.counter('cluster.', 'out#9000#greeter', 'ssl.fail_verify_san').value).toBe(1);
  });

  it('a TLS peer that does not speak h2 is a connect failure naming the reason (ALPN refused, or none negotiated)', async () => {
    const opts = { key: read(server.privateKey), cert: read(server.certChain), ca: read(ca.cert), requestCert: true };
    const h1Only = tls.createServer({ ...opts, ALPNProtocols: ['http/1.1'] }, (s) => s.on('error', () => {}));
    const noAlpn = tls.createServer(opts, (s) => s.on('error', () => {}));
    for (const srv of [h1Only, noAlpn]) await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    try {
      const reasons: (string | undefined)[] = [];
      for (const srv of [h1Only, noAlpn]) {
        const { pool, cluster } = mtlsSetup({ address: '127.0.0.1', port: (srv.address() as { port: number }).port }, `${TD}/greeter`);
        const x = exchange(pool, cluster, head('GET', 'none'));
        await x.done;
        expect(x.reset![0]).toBe('connect-failure');
        reasons.push(x.reset![1]);
      }
      expect(reasons[0]).toMatch(/NO_APPLICATION_PROTOCOL/);
      expect(reasons[1]).toBe('TLS error: MESH_TLS_NO_H2: the peer did not negotiate h2 by ALPN (got none); an http2 cluster needs an HTTP/2 endpoint');
    } finally {
      h1Only.close();
      noAlpn.close();
    }
  });
});
