import { execFile } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { PassThrough } from 'node:stream';
import { createProxy, type MeshProxy } from '../../src/proxy';

/** A real HTTP upstream on loopback that answers with its name and what it saw. */
export interface TestUpstream {
  name: string;
  port: number;
  address: string;
  server: http.Server;
  requests: { method: string; url: string; headers: http.IncomingHttpHeaders; bodyBytes: number; socketId: number }[];
  close(): Promise<void>;
}

let socketIds = 0;

export async function startUpstream(name: string, handler?: http.RequestListener): Promise<TestUpstream> {
  const requests: TestUpstream['requests'] = [];
  const server = http.createServer((req, res) => {
    const socket = req.socket as net.Socket & { testId?: number };
    socket.testId ??= ++socketIds;
    let bodyBytes = 0;
    req.on('data', (c: Buffer) => { bodyBytes += c.length; });
    req.on('end', () => {
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, bodyBytes, socketId: socket.testId! });
      if (handler) return handler(req, res);
      res.setHeader('content-type', 'text/plain');
      res.end(`${name} ${req.method} ${req.url} ${bodyBytes}\n`);
    });
    if (handler && req.method === 'HEAD') req.resume();
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    name, port, address: '127.0.0.1', server, requests,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

export interface StartedProxy {
  proxy: MeshProxy;
  port: number;
  admin: number;
  log: string[];
}

/** Starts the proxy on ephemeral ports with the access log captured in memory. */
export async function startProxy(config: Record<string, unknown>): Promise<StartedProxy> {
  const log: string[] = [];
  const stream = new PassThrough();
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => { for (const line of chunk.split('\n')) if (line) log.push(line); });
  const proxy = createProxy({
    admin: { address: '127.0.0.1', port: 0 },
    listener: { name: 'virtual', address: '127.0.0.1', port: 0 },
    accessLog: { format: 'text', path: '/dev/null' },
    ...config,
  }, { accessLogStream: stream });
  const addrs = await proxy.start();
  return { proxy, port: addrs.listener.port, admin: addrs.admin!.port, log };
}

export function cluster(name: string, ups: TestUpstream[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name, endpoints: ups.map((u) => ({ address: u.address, port: u.port })), ...extra };
}

export function vhost(name: string, domains: string[], routes: unknown[]): Record<string, unknown> {
  return { name, domains, routes };
}

export interface CurlResult { code: number; stdout: string; stderr: string }

/** Real curl; resolves with its exit code (never rejects on a non-zero exit). */
export function curl(args: string[], opts: { input?: string | Buffer; timeoutMs?: number } = {}): Promise<CurlResult> {
  return new Promise((resolve) => {
    const child = execFile('curl', ['-sS', '--max-time', String(Math.ceil((opts.timeoutMs ?? 20000) / 1000)), ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
  });
}

/** Sends raw bytes on a fresh connection and collects everything until the server closes (or idleMs of silence). */
export function rawExchange(port: number, data: string | Buffer, idleMs = 1500): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let text = '';
    let closed = false;
    let timer: NodeJS.Timeout | undefined;
    const arm = () => { clearTimeout(timer); timer = setTimeout(() => { s.destroy(); resolve({ text, closed }); }, idleMs); };
    s.setEncoding('latin1');
    s.on('connect', () => { s.write(data); arm(); });
    s.on('data', (d: string) => { text += d; arm(); });
    s.on('error', () => { /* reset counts as closed */ });
    s.on('close', () => { closed = true; clearTimeout(timer); resolve({ text, closed }); });
  });
}

/** A keep-alive agent with one socket, so requests share a connection. */
export function request(port: number, opts: { host: string; path?: string; method?: string; headers?: Record<string, string>; body?: string | Buffer; agent?: http.Agent }): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: opts.path ?? '/', method: opts.method ?? 'GET', headers: { host: opts.host, ...opts.headers }, agent: opts.agent ?? false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 15000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A port with nothing listening (bound then closed). */
export async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
