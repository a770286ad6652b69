// Test helpers: HTTP over real sockets, polling for readiness, bounded load loops.
import http from 'node:http';

export function httpGet(url: string, opts: { headers?: Record<string, string>; proxy?: string; timeoutMs?: number; keepAlive?: boolean } = {}): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  const target = new URL(url);
  const via = opts.proxy ? new URL(opts.proxy) : undefined;
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: via ? via.hostname : target.hostname,
        port: via ? via.port : target.port || 80,
        path: via ? url : target.pathname + target.search,
        method: 'GET',
        headers: { ...(via ? { host: target.host } : {}), ...opts.headers },
        agent: false,
        timeout: opts.timeoutMs ?? 10_000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`timeout: ${url}`)));
    req.on('error', reject);
    req.end();
  });
}

export function httpRequest(method: string, url: string, body?: string): Promise<{ status: number; body: string }> {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: target.hostname, port: target.port, path: target.pathname + target.search, method, agent: false, timeout: 60_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('timeout', () => req.destroy(new Error(`timeout: ${method} ${url}`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Polls `check` until it returns a value other than undefined/false, or fails with the last reason. */
export async function eventually<T>(check: () => Promise<T | undefined | false> | T | undefined | false, what: string, timeoutMs = 30_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message ?? last}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Runs `workers` loops of `fn` until stop() (or maxCount requests / maxMs); records every failure. */
export function steadyLoad(fn: () => Promise<void>, opts: { workers: number; maxCount: number; maxMs: number }) {
  let stopped = false;
  let count = 0;
  const failures: string[] = [];
  const started = Date.now();
  const loops = Array.from({ length: opts.workers }, async () => {
    while (!stopped && count < opts.maxCount && Date.now() - started < opts.maxMs) {
      count += 1;
      try {
        await fn();
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
  });
  return {
    get count() {
      return count;
    },
    failures,
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return { count, failures };
    },
  };
}
