import { execFile } from 'node:child_process';
import http from 'node:http';
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProxy } from '../src/proxy';
import { startH2Upstream, type H2Upstream } from './support/h2-upstream';
import { cluster, curl, deadPort, startProxy, startUpstream, vhost, waitFor, type StartedProxy, type TestUpstream } from './support/proxy-harness';

// Issue 16, the proxy side of traffic rules: every match kind, weighted splits, rewrites, redirects,
// header changes, mirroring, fault injection and local rate limits, through the real proxy with real
// Node upstreams on loopback (curl where the wire format matters). Shares are checked against binomial
// bounds (the probability of a false failure is stated at each); loops are bounded in count, and every
// request in them has a timeout.

interface Answer { status: number; headers: http.IncomingHttpHeaders; body: string; ms: number }

/** One request through the proxy on a keep-alive agent; never hangs (10 s timeout). */
function send(port: number, agent: http.Agent, opts: { host: string; path: string; method?: string; headers?: Record<string, string>; body?: string | Buffer }): Promise<Answer> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, agent, path: opts.path, method: opts.method ?? 'GET', headers: { host: opts.host, ...opts.headers }, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, ms: performance.now() - started }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`request ${opts.path} timed out`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** `n` requests, `parallel` at a time. */
async function many(n: number, parallel: number, one: (i: number) => Promise<Answer>): Promise<Answer[]> {
  const out: Answer[] = [];
  for (let i = 0; i < n; i += parallel) out.push(...(await Promise.all(Array.from({ length: Math.min(parallel, n - i) }, (_, k) => one(i + k)))));
  return out;
}

async function stat(admin: number, name: string): Promise<number> {
  const text = (await curl(['-s', `http://127.0.0.1:${admin}/stats?filter=${encodeURIComponent(`^${name.replace(/[.#]/g, (c) => `\\${c}`)}$`)}`])).stdout;
  const m = new RegExp(`^${name.replace(/[.#]/g, (c) => `\\${c}`)}: (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

describe('route matching (issue 16)', () => {
  let a: TestUpstream, b: TestUpstream, c: TestUpstream, d: TestUpstream;
  let p: StartedProxy;
  beforeAll(async () => {
    [a, b, c, d] = await Promise.all([startUpstream('A'), startUpstream('B'), startUpstream('C'), startUpstream('D')]);
    p = await startProxy({
      clusters: [cluster('a', [a]), cluster('b', [b]), cluster('c', [c]), cluster('d', [d])],
      routes: {
        virtualHosts: [vhost('match', ['match', 'match.alt'], [
          { match: { prefix: '/q', queryParameters: [{ name: 'debug', exact: '1 2' }] }, route: { cluster: 'a' } },
          { match: { prefix: '/q', queryParameters: [{ name: 'id', regex: '[0-9]+' }] }, route: { cluster: 'b' } },
          { match: { prefix: '/q', queryParameters: [{ name: 'trace', present: true }] }, route: { cluster: 'c' } },
          { match: { prefix: '/h', headers: [{ name: 'x-user', prefix: 'beta-' }] }, route: { cluster: 'a' } },
          { match: { prefix: '/h', headers: [{ name: 'x-env', exact: 'prod', invert: true }] }, route: { cluster: 'b' } },
          { match: { prefix: '/p', headers: [{ name: 'x-block', present: true, invert: true }] }, route: { cluster: 'c' } },
          { match: { prefix: '/m', headers: [{ name: ':method', exact: 'POST' }] }, route: { cluster: 'c' } },
          { match: { prefix: '/auth', headers: [{ name: ':authority', exact: 'match.alt' }] }, route: { cluster: 'a' } },
          { match: { prefix: '/' }, route: { cluster: 'd' } },
        ])],
      },
    });
  });
  afterAll(async () => {
    await p?.proxy.close();
    await Promise.all([a, b, c, d].map((u) => u?.close()));
  });

  const via = async (path: string, opts: { host?: string; headers?: string[]; method?: string } = {}) =>
    (await curl([...(opts.method ? ['-X', opts.method] : []), ...(opts.headers ?? []).flatMap((h) => ['-H', h]), '-H', `Host: ${opts.host ?? 'match'}`, `http://127.0.0.1:${p.port}${path}`])).stdout.split(' ')[0];

  it('matches query parameters: exact (URL-decoded), regex (whole value), present', async () => {
    expect(await via('/q?debug=1%202')).toBe('A');
    expect(await via('/q?x=0&debug=1+2')).toBe('A');
    expect(await via('/q?debug=12')).toBe('D');
    expect(await via('/q?id=42')).toBe('B');
    expect(await via('/q?id=42x')).toBe('D');
    expect(await via('/q?trace')).toBe('C');
    expect(await via('/q?tracex=1')).toBe('D');
    expect(await via('/q')).toBe('D');
  });

  it('matches header prefix and inverted matches, Envoy\'s way for absent headers', async () => {
    expect(await via('/h', { headers: ['x-user: beta-7'] })).toBe('A');
    expect(await via('/h', { headers: ['x-user: alpha-7'] })).toBe('D');
    expect(await via('/h', { headers: ['x-env: staging'] })).toBe('B');
    expect(await via('/h', { headers: ['x-env: prod'] })).toBe('D');
    expect(await via('/h')).toBe('D'); // an absent header fails an inverted exact match (Envoy)
    expect(await via('/p')).toBe('C'); // present inverted: matches when absent
    expect(await via('/p', { headers: ['x-block: 1'] })).toBe('D');
  });

  it('matches the :method and :authority pseudo-headers', async () => {
    expect(await via('/m', { method: 'POST' })).toBe('C');
    expect(await via('/m')).toBe('D');
    expect(await via('/auth', { host: 'match.alt' })).toBe('A');
    expect(await via('/auth')).toBe('D');
    const explicit = await curl(['-x', `127.0.0.1:${p.port}`, 'http://match.alt/auth']);
    expect(explicit.stdout.split(' ')[0]).toBe('A'); // absolute-form authority
  });
});

describe('weighted split (issue 16)', () => {
  let v1: TestUpstream, v2: TestUpstream;
  let p: StartedProxy;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 20 });
  beforeAll(async () => {
    [v1, v2] = await Promise.all([startUpstream('v1'), startUpstream('v2')]);
    p = await startProxy({
      clusters: [cluster('out#80#order#v1', [v1]), cluster('out#80#order#v2', [v2])],
      routes: {
        virtualHosts: [vhost('order', ['order'], [{
          name: 'split-90-10', metadata: { rule: 'split-90-10', service: 'order' }, match: { prefix: '/' },
          route: { weightedClusters: [{ name: 'out#80#order#v1', weight: 90 }, { name: 'out#80#order#v2', weight: 10, requestHeadersToAdd: [{ name: 'x-version', value: 'v2' }] }] },
        }])],
      },
    });
  });
  afterAll(async () => {
    agent.destroy();
    await p?.proxy.close();
    await Promise.all([v1, v2].map((u) => u?.close()));
  });

  it('splits 90/10 over 2,000 requests within binomial bounds', async () => {
    const answers = await many(2000, 20, () => send(p.port, agent, { host: 'order', path: '/s' }));
    expect(answers.every((r) => r.status === 200)).toBe(true);
    const toV1 = answers.filter((r) => r.body.startsWith('v1 ')).length;
    // n = 2000, p = 0.9: sd = sqrt(2000 * 0.9 * 0.1) = 13.4 requests (0.67 %); 90 % +- 3 % is +- 4.5 sd,
    // a false failure about 7 in a million runs
    expect(toV1 / 2000).toBeGreaterThanOrEqual(0.87);
    expect(toV1 / 2000).toBeLessThanOrEqual(0.93);
    expect(v1.requests.length + v2.requests.length).toBe(2000);
    // a weighted cluster's own request headers go with it only
    expect(v2.requests.every((r) => r.headers['x-version'] === 'v2')).toBe(true);
    expect(v1.requests.some((r) => r.headers['x-version'] !== undefined)).toBe(false);
  });

  it('says which vhost, route and cluster served a request when x-mesh-debug-upstream: 1 is sent', async () => {
    const r = await curl(['-s', '-D', '-', '-o', '/dev/null', '-H', 'Host: order', '-H', 'x-mesh-debug-upstream: 1', `http://127.0.0.1:${p.port}/dbg`]);
    expect(r.stdout).toMatch(/\r\nx-mesh-route: vhost=order; route=split-90-10; cluster=out#80#order#v[12]; rule=split-90-10; service=order\r\n/); // the route's metadata last
    const plain = await curl(['-s', '-D', '-', '-o', '/dev/null', '-H', 'Host: order', `http://127.0.0.1:${p.port}/dbg`]);
    expect(plain.stdout).not.toContain('x-mesh-route');
    expect([...v1.requests, ...v2.requests].some((u) => u.headers['x-mesh-debug-upstream'] !== undefined)).toBe(false);
  });
});

describe('rewrites, redirects, header changes, direct responses (issue 16)', () => {
  let a: TestUpstream;
  let p: StartedProxy;
  beforeAll(async () => {
    a = await startUpstream('A', (req, res) => {
      res.setHeader('x-internal', 'secret');
      res.setHeader('x-powered', 'node');
      res.end(`A ${req.url} host=${req.headers.host} orig=${String(req.headers['x-envoy-original-path'])}\n`);
    });
    p = await startProxy({
      clusters: [cluster('a', [a])],
      routes: {
        virtualHosts: [vhost('order', ['order', 'order:8080'], [
          { match: { prefix: '/api/' }, route: { cluster: 'a', prefixRewrite: '/v2/', hostRewrite: 'order-v2' } },
          { match: { path: '/exact' }, route: { cluster: 'a', prefixRewrite: '/other' } },
          { match: { path: '/old' }, redirect: { pathRedirect: '/new', responseCode: 302 } },
          { match: { prefix: '/docs/' }, redirect: { prefixRewrite: '/manual/', stripQuery: true } },
          { match: { prefix: '/secure' }, redirect: { schemeRedirect: 'https', hostRedirect: 'secure.example', portRedirect: 8443 } },
          { match: { prefix: '/tls' }, redirect: { schemeRedirect: 'https' } },
          { match: { prefix: '/maint' }, directResponse: { status: 503, body: 'down for maintenance' }, responseHeadersToAdd: [{ name: 'retry-after', value: '60' }] },
          {
            match: { prefix: '/hdr' }, route: { cluster: 'a' },
            requestHeadersToAdd: [{ name: 'x-added', value: '1' }, { name: 'x-set', value: 'new', append: false }],
            requestHeadersToRemove: ['x-secret'],
            responseHeadersToAdd: [{ name: 'x-served-by', value: 'mesh' }, { name: 'x-powered', value: 'mesh', append: false }],
            responseHeadersToRemove: ['x-internal'],
          },
          { match: { prefix: '/' }, route: { cluster: 'a' } },
        ])],
      },
    });
  });
  afterAll(async () => {
    await p?.proxy.close();
    await a?.close();
  });

  const url = (path: string) => `http://127.0.0.1:${p.port}${path}`;

  it('prefixRewrite replaces the matched prefix (query kept) and sets x-envoy-original-path; hostRewrite sets the Host', async () => {
    const r = await curl(['-H', 'Host: order', '-H', 'x-envoy-original-path: /forged', url('/api/items?x=1')]);
    expect(r.stdout).toBe('A /v2/items?x=1 host=order-v2 orig=/api/items?x=1\n');
    expect(a.requests.at(-1)!.headers['x-envoy-original-path']).toBe('/api/items?x=1'); // the client's own is not forwarded
    expect((await curl(['-H', 'Host: order', url('/exact?y')])).stdout).toBe('A /other?y host=order orig=/exact?y\n');
    expect((await curl(['-H', 'Host: order', url('/plain')])).stdout).toBe('A /plain host=order orig=undefined\n');
  });

  it('redirects with Envoy\'s Location rules', async () => {
    const loc = async (path: string, host = 'order') => {
      const r = await curl(['-s', '-D', '-', '-o', '/dev/null', '-H', `Host: ${host}`, url(path)]);
      return `${/^HTTP\/1.1 (\d+)/.exec(r.stdout)?.[1]} ${/\r\nlocation: ([^\r]*)\r\n/i.exec(r.stdout)?.[1]}`;
    };
    expect(await loc('/old?x=1')).toBe('302 http://order/new?x=1');
    expect(await loc('/docs/a/b?q=1', 'order:8080')).toBe('301 http://order:8080/manual/a/b');
    expect(await loc('/secure/x')).toBe('301 https://secure.example:8443/secure/x');
    expect(await loc('/tls', 'order:80')).toBe('301 https://order/tls');
    expect(a.requests.some((r) => r.url.startsWith('/old') || r.url.startsWith('/docs'))).toBe(false);
  });

  it('adds, sets and removes request and response headers', async () => {
    const r = await curl(['-s', '-D', '-', '-H', 'Host: order', '-H', 'x-added: 0', '-H', 'x-set: old', '-H', 'x-secret: s', url('/hdr')]);
    const seen = a.requests.at(-1)!.headers;
    expect(seen['x-added']).toBe('0, 1'); // append: true adds a value
    expect(seen['x-set']).toBe('new'); // append: false replaces
    expect(seen['x-secret']).toBeUndefined();
    expect(r.stdout).toMatch(/\r\nx-served-by: mesh\r\n/);
    expect(r.stdout).toMatch(/\r\nx-powered: mesh\r\n/);
    expect(r.stdout).not.toMatch(/x-powered: node|x-internal/);
  });

  it('answers a direct response with the route\'s response headers', async () => {
    const r = await curl(['-s', '-i', '-H', 'Host: order', url('/maint')]);
    expect(r.stdout).toMatch(/^HTTP\/1.1 503/);
    expect(r.stdout).toMatch(/\r\nretry-after: 60\r\n/);
    expect(r.stdout.endsWith('down for maintenance')).toBe(true);
    expect(await stat(p.admin, 'http.virtual.rq_direct_response')).toBe(1);
    expect(await stat(p.admin, 'http.virtual.rq_redirect')).toBeGreaterThanOrEqual(4);
  });

  it('/config_dump shows the routes in Envoy\'s shape', async () => {
    const dump = JSON.parse((await curl(['-s', `http://127.0.0.1:${p.admin}/config_dump?resource=static_route_configs`])).stdout) as { configs: { route_config: { virtual_hosts: { routes: Record<string, unknown>[] }[] } }[] };
    const routes = dump.configs[0]!.route_config.virtual_hosts[0]!.routes;
    expect(routes[0]).toMatchObject({ route: { cluster: 'a', prefix_rewrite: '/v2/', host_rewrite_literal: 'order-v2' } });
    expect(routes[2]).toMatchObject({ redirect: { path_redirect: '/new', response_code: 'FOUND' } });
    expect(routes[7]).toMatchObject({
      request_headers_to_add: [{ header: { key: 'x-added', value: '1' }, append_action: 'APPEND_IF_EXISTS_OR_ADD' }, { header: { key: 'x-set', value: 'new' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }],
      request_headers_to_remove: ['x-secret'], response_headers_to_remove: ['x-internal'],
    });
  });
});

describe('request mirroring (issue 16)', () => {
  let main: TestUpstream, mirror: TestUpstream, slow: TestUpstream;
  let p: StartedProxy;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 10 });
  beforeAll(async () => {
    main = await startUpstream('main');
    mirror = await startUpstream('mirror', (_req, res) => { res.statusCode = 500; res.end('mirror answers are thrown away\n'); });
    slow = await startUpstream('slow', () => { /* never answers */ });
    const dead = await deadPort();
    p = await startProxy({
      clusters: [
        cluster('main', [main]), cluster('mirror', [mirror]), cluster('slow', [slow]),
        { name: 'down', endpoints: [{ address: '127.0.0.1', port: dead }] },
      ],
      routes: {
        virtualHosts: [vhost('order', ['order', 'order:8080'], [
          { name: 'all', match: { prefix: '/all' }, route: { cluster: 'main', requestMirrorPolicies: [{ cluster: 'mirror' }] } },
          { match: { prefix: '/half' }, route: { cluster: 'main', requestMirrorPolicies: [{ cluster: 'mirror', percent: 50 }] } },
          { match: { prefix: '/down' }, route: { cluster: 'main', requestMirrorPolicies: [{ cluster: 'down' }] } },
          { match: { prefix: '/slow' }, route: { cluster: 'main', timeoutMs: 60_000, requestMirrorPolicies: [{ cluster: 'slow' }] } },
        ])],
      },
    });
  });
  afterAll(async () => {
    agent.destroy();
    await p?.proxy.close();
    await Promise.all([main, mirror, slow].map((u) => u?.close()));
  });

  it('sends a copy with the body and a -shadow Host to the mirror; the client gets the main answer', async () => {
    const r = await curl(['-s', '-H', 'Host: order:8080', '-H', 'x-mesh-debug-upstream: 1', '-D', '-', '--data-binary', 'hello mirror', url(p, '/all/x?y=1')]);
    expect(r.stdout).toMatch(/\r\nx-mesh-route: vhost=order; route=all; cluster=main; mirror=mirror\r\n/);
    expect(r.stdout.endsWith('main POST /all/x?y=1 12\n')).toBe(true);
    await waitFor(() => mirror.requests.length === 1, 'the mirrored request');
    const copy = mirror.requests[0]!;
    expect(copy).toMatchObject({ method: 'POST', url: '/all/x?y=1', bodyBytes: 12 });
    expect(copy.headers.host).toBe('order-shadow:8080');
    expect(copy.headers['x-request-id']).toBe(main.requests.at(-1)!.headers['x-request-id']);
    await waitFor(async () => (await stat(p.admin, 'cluster.mirror.upstream_rq_5xx')) === 1, 'the mirror cluster counting the copy');
    expect(await stat(p.admin, 'http.virtual.shadow.sent')).toBe(1);
  });

  it('mirrors a share of the requests within binomial bounds', async () => {
    const before = mirror.requests.length;
    const answers = await many(400, 10, () => send(p.port, agent, { host: 'order', path: '/half' }));
    expect(answers.every((r) => r.status === 200 && r.body.startsWith('main '))).toBe(true);
    await waitFor(async () => (await stat(p.admin, 'cluster.mirror.upstream_rq_completed')) === (await stat(p.admin, 'cluster.mirror.upstream_rq_total')), 'the copies to finish');
    const copies = mirror.requests.length - before;
    // n = 400, p = 0.5: sd = 10 copies; 200 +- 50 is +- 5 sd (a false failure about 6 in 10 million runs)
    expect(copies).toBeGreaterThanOrEqual(150);
    expect(copies).toBeLessThanOrEqual(250);
  });

  it('never lets a mirror that is down or never answers touch the main request', async () => {
    const down = await many(20, 10, () => send(p.port, agent, { host: 'order', path: '/down' }));
    expect(down.every((r) => r.status === 200 && r.body.startsWith('main GET /down'))).toBe(true);
    await waitFor(async () => (await stat(p.admin, 'http.virtual.shadow.failed')) >= 20, 'the failed copies counted');
    const slowAnswers = await many(20, 10, () => send(p.port, agent, { host: 'order', path: '/slow' }));
    expect(slowAnswers.every((r) => r.status === 200 && r.body.startsWith('main GET /slow'))).toBe(true);
    await waitFor(() => slow.requests.length === 20, 'the copies reaching the slow mirror');
  });

  it('does not mirror a body over 64 KiB, and counts it', async () => {
    const body = Buffer.alloc(100 * 1024, 'x');
    const before = mirror.requests.length;
    const r = await send(p.port, agent, { host: 'order', path: '/all/big', method: 'POST', body });
    expect(r.body).toBe('main POST /all/big 102400\n');
    expect(await stat(p.admin, 'http.virtual.shadow.skipped_body')).toBe(1);
    await new Promise((res) => setTimeout(res, 100)); // a copy, if one were sent, would have arrived by now
    expect(mirror.requests.length).toBe(before);
  });
});

function url(p: StartedProxy, path: string): string { return `http://127.0.0.1:${p.port}${path}`; }

describe('fault injection (issue 16)', () => {
  let up: TestUpstream;
  let p: StartedProxy;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 20 });
  beforeAll(async () => {
    up = await startUpstream('up');
    p = await startProxy({
      clusters: [cluster('up', [up])],
      routes: {
        virtualHosts: [vhost('f', ['f'], [
          { match: { prefix: '/abort' }, route: { cluster: 'up' }, fault: { abort: { httpStatus: 503, percent: 30 } } },
          { match: { prefix: '/delay' }, route: { cluster: 'up' }, fault: { delay: { fixedDelayMs: 25, percent: 20 } } },
          { name: 'both', match: { prefix: '/both' }, route: { cluster: 'up' }, fault: { delay: { fixedDelayMs: 10, percent: 100 }, abort: { httpStatus: 418, percent: 100 } } },
          { match: { prefix: '/body' }, route: { cluster: 'up' }, fault: { delay: { fixedDelayMs: 50, percent: 100 } } },
          { match: { prefix: '/long' }, route: { cluster: 'up' }, fault: { delay: { fixedDelayMs: 3000, percent: 100 } } },
          { match: { prefix: '/grpc' }, route: { cluster: 'up' }, fault: { abort: { grpcStatus: 14, percent: 100 } } },
        ])],
      },
    });
  });
  afterAll(async () => {
    agent.destroy();
    await p?.proxy.close();
    await up?.close();
  });

  it('aborts its share of the requests with the configured status, flag FI, counted', async () => {
    const answers = await many(1000, 20, () => send(p.port, agent, { host: 'f', path: '/abort' }));
    const aborted = answers.filter((r) => r.status === 503);
    expect(aborted.every((r) => r.body === 'fault filter abort')).toBe(true);
    expect(answers.filter((r) => r.status === 200).length + aborted.length).toBe(1000);
    // n = 1000, p = 0.3: sd = 14.5 requests (1.45 %); 30 % +- 6 % is +- 4.1 sd (a false failure about 4 in 100,000 runs)
    expect(aborted.length / 1000).toBeGreaterThanOrEqual(0.24);
    expect(aborted.length / 1000).toBeLessThanOrEqual(0.36);
    expect(await stat(p.admin, 'http.virtual.fault.aborts_injected')).toBe(aborted.length);
    expect(up.requests.filter((r) => r.url === '/abort').length).toBe(1000 - aborted.length);
    await waitFor(() => p.log.filter((l) => l.includes('"GET /abort HTTP/1.1" 503 FI')).length === aborted.length, 'the access log lines with FI');
  });

  it('delays its share of the requests by at least the delay, flag DI, counted', async () => {
    const answers = await many(400, 20, () => send(p.port, agent, { host: 'f', path: '/delay', headers: { 'x-mesh-debug-upstream': '1' } }));
    expect(answers.every((r) => r.status === 200)).toBe(true);
    const delayed = answers.filter((r) => String(r.headers['x-mesh-route']).includes('fault=delay'));
    // n = 400, p = 0.2: sd = 8 requests (2 %); 20 % +- 8 % is +- 4 sd (a false failure about 6 in 100,000 runs)
    expect(delayed.length / 400).toBeGreaterThanOrEqual(0.12);
    expect(delayed.length / 400).toBeLessThanOrEqual(0.28);
    expect(delayed.every((r) => r.ms >= 24)).toBe(true); // the delay itself (timers may fire up to 1 ms early)
    expect(await stat(p.admin, 'http.virtual.fault.delays_injected')).toBe(delayed.length);
  });

  it('delays first, then aborts, and holds a request body through the delay', async () => {
    const r = await send(p.port, agent, { host: 'f', path: '/both', headers: { 'x-mesh-debug-upstream': '1' } });
    expect(r.status).toBe(418);
    expect(r.headers['x-mesh-route']).toBe('vhost=f; route=both; cluster=-; fault=delay,abort');
    await waitFor(() => p.log.some((l) => l.includes('"GET /both HTTP/1.1" 418 DI,FI')), 'the access log line with DI,FI');
    const body = Buffer.alloc(200 * 1024, 'b');
    const posted = await send(p.port, agent, { host: 'f', path: '/body', method: 'POST', body });
    expect(posted.body).toBe(`up POST /body ${body.length}\n`);
    expect(posted.ms).toBeGreaterThanOrEqual(49);
  });

  it('survives a client that leaves during the delay', async () => {
    const gone = await curl(['-s', '--max-time', '1', '-H', 'Host: f', url(p, '/long')]);
    expect(gone.code).toBe(28); // curl's timeout
    await waitFor(() => p.log.some((l) => l.includes('"GET /long HTTP/1.1" 0 DC,DI') || l.includes('"GET /long HTTP/1.1" 0 DI,DC')), 'the access log line of the abandoned request');
    expect(up.requests.some((r) => r.url === '/long')).toBe(false);
    expect((await send(p.port, agent, { host: 'f', path: '/delay' })).status).toBe(200);
  });

  it('keeps a keep-alive connection usable after aborting a request whose body was not read', async () => {
    const one = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const aborted = await send(p.port, one, { host: 'f', path: '/grpc', method: 'POST', body: Buffer.alloc(10 * 1024, 'q') });
      expect(aborted.headers['grpc-status']).toBe('14');
      const next = await send(p.port, one, { host: 'f', path: '/body', method: 'POST', body: 'after' });
      expect(next.body).toBe('up POST /body 5\n');
    } finally {
      one.destroy();
    }
  });

  it('aborts with a gRPC status as a trailers-only response', async () => {
    const r = await curl(['-s', '-D', '-', '-o', '/dev/null', '-H', 'Host: f', url(p, '/grpc')]);
    expect(r.stdout).toMatch(/^HTTP\/1.1 200/);
    expect(r.stdout).toMatch(/\r\ngrpc-status: 14\r\n/);
    expect(r.stdout).toMatch(/\r\ngrpc-message: fault filter abort\r\n/);
  });
});

describe('local rate limit (issue 16)', () => {
  let up: TestUpstream;
  let p: StartedProxy;
  const config = (maxTokens: number) => ({
    clusters: [cluster('up', [up])],
    routes: {
      virtualHosts: [
        vhost('r', ['r'], [{ name: 'limited', match: { prefix: '/' }, route: { cluster: 'up' }, rateLimit: { maxTokens, tokensPerFill: 1, fillIntervalMs: 3_600_000 } }]),
        { ...vhost('svc', ['svc'], [{ match: { prefix: '/a' }, route: { cluster: 'up' } }, { match: { prefix: '/b' }, route: { cluster: 'up' } }]), rateLimit: { maxTokens: 3, fillIntervalMs: 3_600_000 } },
      ],
    },
  });
  beforeAll(async () => {
    up = await startUpstream('up');
    p = await startProxy(config(5));
  });
  afterAll(async () => {
    await p?.proxy.close();
    await up?.close();
  });

  it('gives 429 local_rate_limited with x-envoy-ratelimited and flag RL once the bucket is empty', async () => {
    const answers: { code: string; text: string }[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await curl(['-s', '-D', '-', '-H', 'Host: r', '-H', 'x-mesh-debug-upstream: 1', url(p, `/n${i}`)]);
      answers.push({ code: /^HTTP\/1.1 (\d+)/.exec(r.stdout)![1]!, text: r.stdout });
    }
    expect(answers.map((a) => a.code)).toEqual(['200', '200', '200', '200', '200', '429', '429', '429']);
    expect(answers[0]!.text).toContain('; ratelimit=ok\r\n');
    const limited = answers[7]!.text;
    expect(limited).toMatch(/\r\nx-envoy-ratelimited: true\r\n/);
    expect(limited).toContain('x-mesh-route: vhost=r; route=limited; cluster=-; ratelimit=limited\r\n');
    expect(limited.endsWith('\r\n\r\nlocal_rate_limited')).toBe(true);
    expect(up.requests.length).toBe(5);
    expect(await stat(p.admin, 'http.virtual.http_local_rate_limit.rate_limited')).toBe(3);
    expect(await stat(p.admin, 'http.virtual.http_local_rate_limit.ok')).toBe(5);
    await waitFor(() => p.log.filter((l) => / 429 RL /.test(l)).length === 3, 'the access log lines with RL');
  });

  it('keeps the bucket across an update that leaves the limit as it is; a changed limit starts full', async () => {
    p.proxy.update({ ...config(5), admin: { address: '127.0.0.1', port: 0 }, listener: { name: 'virtual', address: '127.0.0.1', port: 0 }, accessLog: { format: 'text', path: '/dev/null' } });
    expect((await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'Host: r', url(p, '/after')])).stdout).toBe('429');
    p.proxy.update({ ...config(6), admin: { address: '127.0.0.1', port: 0 }, listener: { name: 'virtual', address: '127.0.0.1', port: 0 }, accessLog: { format: 'text', path: '/dev/null' } });
    expect((await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'Host: r', url(p, '/changed')])).stdout).toBe('200');
  });

  it('shares a virtual host\'s bucket between its routes', async () => {
    const codes: string[] = [];
    for (const path of ['/a', '/b', '/a', '/b', '/a']) codes.push((await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'Host: svc', url(p, path)])).stdout);
    expect(codes).toEqual(['200', '200', '200', '429', '429']);
  });

  it('keeps /stats/prometheus promtool-clean with the new counters', async () => {
    const text = (await curl(['-s', `http://127.0.0.1:${p.admin}/stats/prometheus`])).stdout;
    expect(text).toContain('envoy_http_http_local_rate_limit_rate_limited_total{envoy_http_conn_manager_prefix="virtual"} 6'); // 3 + 1 after the update + 2 on svc
    const check = await new Promise<{ code: number; out: string }>((resolve) => {
      const child = execFile('promtool', ['check', 'metrics'], (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }));
      child.stdin!.end(text);
    });
    expect(check).toEqual({ code: 0, out: '' });
  });
});

describe('route rules over HTTP/2 (issue 16)', () => {
  let h2: H2Upstream, shadow: H2Upstream, h1: TestUpstream;
  let p: StartedProxy;
  beforeAll(async () => {
    h2 = await startH2Upstream(); // echoes the request body
    shadow = await startH2Upstream();
    h1 = await startUpstream('h1');
    p = await startProxy({
      clusters: [
        { ...cluster('h2', []), protocol: 'http2', endpoints: [{ address: '127.0.0.1', port: h2.port }] },
        { ...cluster('shadow', []), protocol: 'http2', endpoints: [{ address: '127.0.0.1', port: shadow.port }] },
        cluster('h1', [h1]),
      ],
      routes: {
        virtualHosts: [vhost('svc', ['svc'], [
          {
            match: { prefix: '/api/' }, route: { cluster: 'h2', prefixRewrite: '/', hostRewrite: 'svc-v2', requestMirrorPolicies: [{ cluster: 'shadow' }] },
            requestHeadersToAdd: [{ name: 'x-rule', value: 'api' }],
          },
          { name: 'slow', match: { prefix: '/slow' }, route: { cluster: 'h1' }, fault: { delay: { fixedDelayMs: 30, percent: 100 } } },
        ])],
      },
    });
  });
  afterAll(async () => {
    await p?.proxy.close();
    await Promise.all([h2?.close(), shadow?.close(), h1?.close()]);
  });

  it('rewrites :path and :authority, adds headers and mirrors to an HTTP/2 upstream', async () => {
    const r = await curl(['-s', '-H', 'Host: svc', '--data-binary', 'ping', url(p, '/api/echo?x=1')]);
    expect(r.stdout).toBe('ping');
    const seen = h2.streams.at(-1)!;
    expect(seen.path).toBe('/echo?x=1');
    expect(seen.headers[':authority']).toBe('svc-v2');
    expect(seen.headers['x-rule']).toBe('api');
    expect(seen.headers['x-envoy-original-path']).toBe('/api/echo?x=1');
    await waitFor(() => shadow.streams.length === 1, 'the mirrored stream');
    expect(shadow.streams[0]!.path).toBe('/echo?x=1');
    expect(shadow.streams[0]!.headers[':authority']).toBe('svc-v2-shadow');
  });

  it('holds an HTTP/2 request body through a fault delay and says so in x-mesh-route', async () => {
    const session = http2.connect(`http://127.0.0.1:${p.port}`);
    try {
      const body = Buffer.alloc(100 * 1024, 'z');
      const answer = await new Promise<{ status: number; route: string; text: string }>((resolve, reject) => {
        const req = session.request({ ':method': 'POST', ':path': '/slow', ':authority': 'svc', 'x-mesh-debug-upstream': '1' });
        let status = 0; let route = ''; let text = '';
        req.setTimeout(10_000, () => req.close());
        req.on('response', (h) => { status = Number(h[':status']); route = String(h['x-mesh-route']); });
        req.setEncoding('utf8');
        req.on('data', (c: string) => { text += c; });
        req.on('end', () => resolve({ status, route, text }));
        req.on('error', reject);
        req.end(body);
      });
      expect(answer).toEqual({ status: 200, route: 'vhost=svc; route=slow; cluster=h1; fault=delay', text: `h1 POST /slow ${body.length}\n` });
    } finally {
      session.close();
    }
  });
});

describe('route schema errors reach the proxy caller (issue 16)', () => {
  it('names the field path of a bad rule', () => {
    expect(() => createProxy({
      clusters: [{ name: 'c' }],
      routes: { virtualHosts: [{ name: 'v', domains: ['v'], routes: [{ match: { prefix: '/' }, route: { cluster: 'c' }, fault: { abort: { httpStatus: 503, percent: 150 } } }] }] },
    })).toThrow(/routes\.virtualHosts\[0\]\.routes\[0\]\.fault\.abort\.percent: a percentage is 0\.\.100/);
    expect(() => createProxy({
      clusters: [{ name: 'c' }],
      routes: { virtualHosts: [{ name: 'v', domains: ['v'], routes: [{ match: { prefix: '/' }, route: { cluster: 'c', requestMirrorPolicies: [{ cluster: 'ghost' }] } }] }] },
    })).toThrow(/routes\.virtualHosts\[0\]\.routes\[0\]\.route\.requestMirrorPolicies\[0\]\.cluster: unknown mirror cluster "ghost"/);
  });
});
