import http from 'node:http';
import { PassThrough } from 'node:stream';
import { createProxy, type MeshProxy } from '../../src/proxy';
import { startUpstream, type Upstream } from '../resilience-upstreams';

// Shared by the resilience tests that go through the real proxy: a proxy on loopback ports,
// requests in absolute form (as `curl -x`), its access log captured, its admin port read.
export const proxies: MeshProxy[] = [];
/** For afterEach: closes every proxy started since the last call. */
export async function closeProxies(): Promise<void> {
  await Promise.all(proxies.splice(0).map((p) => p.close()));
}

const upstreams: Upstream[] = [];
/** Starts a real upstream on loopback that closeUpstreams() closes. */
export async function upstream(name: string, behavior: Upstream['behavior'] = 'ok'): Promise<Upstream> {
  const u = await startUpstream(name, behavior);
  upstreams.push(u);
  return u;
}
/** For afterAll: closes every upstream started by upstream(). */
export async function closeUpstreams(): Promise<void> {
  await Promise.all(upstreams.splice(0).map((u) => u.close()));
}

export interface Started { proxy: MeshProxy; port: number; admin: number; log: string[] }

export async function startProxy(clusters: object[], route: object, extra: object = {}): Promise<Started> {
  const log: string[] = [];
  const stream = new PassThrough();
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => { for (const line of chunk.split('\n')) if (line) log.push(line); });
  const proxy = createProxy({
    version: 'resilience-e2e',
    admin: { address: '127.0.0.1', port: 0 },
    listener: { name: 'virtual', address: '127.0.0.1', port: 0 },
    accessLog: { format: 'text', path: '/dev/null' },
    clusters,
    routes: { virtualHosts: [{ name: 'order', domains: ['order'], routes: [{ match: { prefix: '/' }, route }] }] },
    ...extra,
  }, { accessLogStream: stream });
  proxies.push(proxy);
  const addrs = await proxy.start();
  return { proxy, port: addrs.listener.port, admin: addrs.admin!.port, log };
}

export function endpointsOf(...u: Upstream[]) {
  return u.map((x) => ({ address: x.address, port: x.port }));
}

export interface Answer { status: number; body: string; headers: http.IncomingHttpHeaders }
export function viaProxy(port: number, opts: { method?: string; path?: string; agent?: http.Agent; body?: string; chunked?: boolean } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = opts.body === undefined || opts.chunked ? {} : { 'content-length': String(Buffer.byteLength(opts.body)) };
    const req = http.request({ host: '127.0.0.1', port, method: opts.method ?? 'GET', path: `http://order${opts.path ?? '/'}`, agent: opts.agent ?? false, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    if (opts.body !== undefined && opts.chunked) {
      // two chunks, the second a little later: the body streams while the first try is under way
      req.write(opts.body.slice(0, 10));
      setTimeout(() => req.end(opts.body!.slice(10)), 20);
    } else {
      req.end(opts.body);
    }
  });
}

export function admin(port: number, path: string, method = 'GET'): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Polls an async reading until `done` accepts it (readiness by polling, never a fixed sleep). */
export async function pollUntil<T>(what: string, read: () => Promise<T>, done: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (done(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function stat(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}: `));
  return line === undefined ? undefined : Number(line.slice(name.length + 2));
}

/** The response-flags field of Envoy's default text access log line. */
export function flagsOf(line: string): string {
  return /" (\d{3}) (\S+) /.exec(line)?.[2] ?? '?';
}

export const CLUSTER = 'out#80#order';
