/**
 * Real upstreams for the resilience tests: Node HTTP servers on loopback whose
 * behaviour can be switched mid-test (answer, 503, hang, reset the connection,
 * die, fail the health check). Not a test file itself.
 */
import http from 'node:http';
import type net from 'node:net';
import type { HealthFlag } from '../src/resilience/types';

export type Behavior = 'ok' | '503' | 'hang' | 'reset';

export interface Upstream {
  name: string;
  address: string;
  port: number;
  behavior: Behavior;
  /** status the health-check path answers */
  healthStatus: number;
  /** extra header on health-check answers */
  healthHeaders: Record<string, string>;
  hangHealth: boolean;
  /** requests seen, except health checks */
  hits: number;
  healthHits: number;
  /** request headers of the last health check */
  lastHealthHeaders: http.IncomingHttpHeaders;
  /** x-envoy-attempt-count of each request seen */
  attemptHeaders: string[];
  /** request bodies received in full */
  bodies: string[];
  /** answers every request held by 'hang' with 200 */
  release(): void;
  close(): Promise<void>;
  /** stops listening and cuts every connection: connects are refused from now on */
  kill(): Promise<void>;
}

export async function startUpstream(name: string, behavior: Behavior = 'ok'): Promise<Upstream> {
  const sockets = new Set<net.Socket>();
  const hanging = new Set<http.ServerResponse>();
  const up: Upstream = {
    name, address: '127.0.0.1', port: 0, behavior, healthStatus: 200, healthHeaders: {}, hangHealth: false, hits: 0, healthHits: 0, lastHealthHeaders: {}, attemptHeaders: [], bodies: [],
    release: () => {},
    close: async () => {},
    kill: async () => {},
  };
  const server = http.createServer((req, res) => {
    if (req.url === '/health') {
      up.healthHits++;
      up.lastHealthHeaders = req.headers;
      if (up.hangHealth) { hanging.add(res); return; }
      res.writeHead(up.healthStatus, { 'content-type': 'text/plain', ...up.healthHeaders });
      res.end(`${name} health ${up.healthStatus}`);
      return;
    }
    up.hits++;
    up.attemptHeaders.push(String(req.headers['x-envoy-attempt-count'] ?? ''));
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => { body += c; });
    req.on('end', () => up.bodies.push(body));
    switch (up.behavior) {
      // answers once the request body is read (a 503 answers at once, before it)
      case 'ok': req.on('end', () => { res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': name }); res.end(name); }); return;
      case '503': res.writeHead(503, { 'content-type': 'text/plain', 'x-upstream': name }); res.end(`${name} unavailable`); return;
      case 'hang': hanging.add(res); return;
      case 'reset': req.socket.resetAndDestroy(); return;
    }
  });
  server.keepAliveTimeout = 30_000;
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  up.port = (server.address() as net.AddressInfo).port;
  const shut = async () => {
    for (const r of hanging) r.destroy();
    for (const s of sockets) s.destroy();
    if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  up.release = () => {
    for (const r of hanging) if (!r.headersSent) { r.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': name }); r.end(`${name} late`); }
    hanging.clear();
  };
  up.close = shut;
  up.kill = shut;
  return up;
}

/** A port nothing listens on: a server bound then closed (connects are refused). */
export async function deadPort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

export interface TestHost {
  address: string;
  port: number;
  healthFlags: Set<HealthFlag>;
  stats: { rq_timeout: number };
  name: string;
}

export function hostOf(up: { address: string; port: number; name?: string }): TestHost {
  return { address: up.address, port: up.port, healthFlags: new Set(), stats: { rq_timeout: 0 }, name: up.name ?? `${up.address}:${up.port}` };
}

/** Polls `check` until it is true (readiness, not a fixed sleep); fails with `what` after `timeoutMs`. */
export async function waitFor(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
