import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { DrainManager } from '../src/resilience/drain-manager';
import { ProxySelfHealth } from '../src/resilience/self-health';
import { waitFor } from './resilience-upstreams';

// A real node:http server tracked by the drain manager, real keep-alive clients on loopback.
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

async function tracked(handler: http.RequestListener) {
  const drain = new DrainManager();
  const server = http.createServer(handler);
  server.keepAliveTimeout = 30_000;
  drain.trackHttpServer(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  cleanups.push(() => { server.closeAllConnections(); server.close(); });
  return { drain, server, port };
}

function get(port: number, agent: http.Agent, path = '/'): Promise<{ status: number; connection: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body }));
    }).on('error', reject);
  });
}

describe('drain manager on a real HTTP server', () => {
  it('finishes in-flight requests with Connection: close, closes idle keep-alive connections, stops accepting, state DRAINING', async () => {
    const slow: http.ServerResponse[] = [];
    const { drain, port } = await tracked((req, res) => {
      if (req.url === '/slow') { slow.push(res); return; }
      res.end('fast');
    });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 10 });
    cleanups.push(() => agent.destroy());
    // one idle keep-alive connection and one with a request in flight
    const first = await get(port, agent);
    expect(first.connection).toBe('keep-alive');
    const otherAgent = new http.Agent({ keepAlive: true });
    cleanups.push(() => otherAgent.destroy());
    const inflight = get(port, otherAgent, '/slow');
    await waitFor('slow request arrived', () => slow.length === 1);
    expect(drain.openConnections).toBe(2);
    expect(drain.state).toBe('LIVE');

    const drained = drain.drain(10_000);
    expect(drain.state).toBe('DRAINING');
    // the idle connection is closed at once; the busy one stays until its response is done
    await waitFor('idle connection closed', () => drain.openConnections === 1);
    // no new connections are accepted
    const refused = await new Promise<string>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('connect', () => { s.destroy(); resolve('connected'); });
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    expect(refused).toBe('ECONNREFUSED');
    slow[0]!.end('slow done');
    const r = await inflight;
    expect(r.status).toBe(200);
    expect(r.body).toBe('slow done');
    expect(r.connection).toBe('close');
    const result = await drained;
    expect(result.forced).toBe(0);
    expect(drain.openConnections).toBe(0);
  });

  it('cuts what is still open when the drain time is up', async () => {
    const { drain, port } = await tracked(() => { /* never answers */ });
    const failed = new Promise<string>((resolve) => {
      http.get({ host: '127.0.0.1', port, path: '/', agent: false }, () => resolve('answered')).on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    await waitFor('connection open', () => drain.openConnections === 1);
    const result = await drain.drain(200);
    expect(result.forced).toBe(1);
    expect(await failed).toBe('ECONNRESET');
  });

  it('every request in flight when the drain starts completes, each answered with Connection: close', async () => {
    const held: http.ServerResponse[] = [];
    const { drain, port } = await tracked((_req, res) => { held.push(res); });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    cleanups.push(() => agent.destroy());
    const batch = Array.from({ length: 8 }, () => get(port, agent));
    await waitFor('eight requests in flight', () => held.length === 8);
    const drained = drain.drain(10_000);
    for (const res of held) res.end('ok');
    const results = await Promise.all(batch);
    expect(results.map((r) => r.status)).toEqual(Array(8).fill(200));
    expect(results.map((r) => r.connection)).toEqual(Array(8).fill('close'));
    expect((await drained).forced).toBe(0);
  });
});

describe('proxy self health', () => {
  it('after fail() the inbound health-check path gets 503 with x-envoy-immediate-health-check-fail until ok()', () => {
    const drain = new DrainManager();
    const h = new ProxySelfHealth(['/health'], drain);
    expect(h.inboundReply('/health')).toBeUndefined();
    h.fail();
    expect(h.inboundReply('/health?full=1')).toMatchObject({ status: 503, headers: { 'x-envoy-immediate-health-check-fail': 'true' } });
    expect(h.inboundReply('/api/orders')).toBeUndefined();
    h.ok();
    expect(h.inboundReply('/health')).toBeUndefined();
    void drain.drain(10);
    expect(h.inboundReply('/health')?.status).toBe(503);
    expect(h.inboundReply('/health')?.body).toContain('draining');
  });
});
