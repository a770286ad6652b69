// A small HTTP client for the admin ports: bounded time, never throws for an HTTP status,
// reports a connection failure as evidence instead.
import http from 'node:http';

export interface HttpAnswer {
  url: string;
  /** 0 when no HTTP answer came back (connection refused, timeout) */
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** why there was no answer: 'connect ECONNREFUSED 127.0.0.1:15021', 'timed out after 2000 ms' */
  error?: string;
  ms: number;
}

export interface HttpOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  timeoutMs?: number;
  /** connect to this address and port instead of the URL's host (the URL's host stays the Host header) */
  connectTo?: { host: string; port: number };
}

export function httpRequest(url: string, opts: HttpOptions = {}): Promise<HttpAnswer> {
  const started = performance.now();
  const target = new URL(url);
  // Generous: the admin ports answer in milliseconds, but a loaded machine can stall a process for a while.
  const timeoutMs = opts.timeoutMs ?? 5_000;
  return new Promise((resolve) => {
    let settled = false;
    const finish = (answer: Omit<HttpAnswer, 'url' | 'ms'>) => {
      if (settled) return;
      settled = true;
      resolve({ url, ms: Math.round((performance.now() - started) * 10) / 10, ...answer });
    };
    const req = http.request({
      host: opts.connectTo?.host ?? target.hostname,
      port: opts.connectTo?.port ?? (target.port ? Number(target.port) : 80),
      path: `${target.pathname}${target.search}`,
      method: opts.method ?? 'GET',
      headers: { host: target.host, ...opts.headers },
      agent: false,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => finish({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (err) => finish({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), error: err.message }));
    });
    req.setTimeout(timeoutMs, () => {
      finish({ status: 0, headers: {}, body: '', error: `timed out after ${timeoutMs} ms` });
      req.destroy();
    });
    req.on('error', (err) => finish({ status: 0, headers: {}, body: '', error: err.message }));
    req.end(opts.body);
  });
}

export async function getJson(url: string, timeoutMs?: number): Promise<{ answer: HttpAnswer; json?: any }> {
  const answer = await httpRequest(url, { timeoutMs, headers: { accept: 'application/json' } });
  if (answer.status === 0) return { answer };
  try {
    return { answer, json: JSON.parse(answer.body) };
  } catch {
    return { answer };
  }
}

/** "127.0.0.1:15021/health: connect ECONNREFUSED" or "...: HTTP 503" */
export function describeAnswer(answer: HttpAnswer): string {
  const where = answer.url.replace(/^http:\/\//, '');
  if (answer.status === 0) return `${where}: ${answer.error ?? 'no answer'}`;
  return `${where}: HTTP ${answer.status}`;
}
