import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cluster, curl, startProxy, startUpstream, vhost, type StartedProxy, type TestUpstream } from './support/proxy-harness';

// Real Node upstreams on loopback, real curl through the proxy; each route kind must pick its own upstream.
describe('routing', () => {
  let a: TestUpstream, b: TestUpstream, c: TestUpstream, d: TestUpstream;
  let p: StartedProxy;

  beforeAll(async () => {
    [a, b, c, d] = await Promise.all([startUpstream('A'), startUpstream('B'), startUpstream('C'), startUpstream('D')]);
    p = await startProxy({
      clusters: [cluster('out#80#a', [a]), cluster('out#80#b', [b]), cluster('out#80#c', [c]), cluster('out#80#d', [d])],
      routes: {
        virtualHosts: [
          vhost('order', ['order', 'order.default', 'order:8080'], [
            { match: { path: '/exact' }, route: { cluster: 'out#80#b' } },
            { match: { regex: '^/v[0-9]+/' }, route: { cluster: 'out#80#c' } },
            { match: { prefix: '/', headers: [{ name: 'x-canary', exact: 'yes' }] }, route: { cluster: 'out#80#d' } },
            { match: { prefix: '/', headers: [{ name: 'x-user', regex: 'vip-[0-9]+' }] }, route: { cluster: 'out#80#c' } },
            { match: { prefix: '/present', headers: [{ name: 'x-debug', present: true }] }, route: { cluster: 'out#80#d' } },
            { match: { prefix: '/static' }, directResponse: { status: 200, body: 'static answer\n' } },
            { match: { prefix: '/api' }, route: { cluster: 'out#80#a' } },
          ]),
          vhost('wild', ['*.example.com'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#b' } }]),
        ],
      },
    });
  });
  afterAll(async () => {
    await p?.proxy.close();
    await Promise.all([a, b, c, d].map((u) => u?.close()));
  });

  const via = (host: string, path: string, headers: string[] = []) =>
    curl([...headers.flatMap((h) => ['-H', h]), '-H', `Host: ${host}`, `http://127.0.0.1:${p.port}${path}`]);

  it('routes by path prefix', async () => {
    expect((await via('order', '/api/items')).stdout).toBe('A GET /api/items 0\n');
  });
  it('routes by exact path, and the exact path does not match a longer one', async () => {
    expect((await via('order', '/exact')).stdout).toBe('B GET /exact 0\n');
    expect((await via('order', '/exact/more')).stdout).toContain('no route');
  });
  it('routes by regex on the path (query string excluded)', async () => {
    expect((await via('order', '/v2/x?y=1')).stdout).toBe('C GET /v2/x?y=1 0\n');
  });
  it('routes by header: exact, regex and present', async () => {
    expect((await via('order', '/anything', ['x-canary: yes'])).stdout).toBe('D GET /anything 0\n');
    expect((await via('order', '/anything', ['x-user: vip-42'])).stdout).toBe('C GET /anything 0\n');
    expect((await via('order', '/anything', ['x-user: vip-x'])).stdout).toContain('no route');
    expect((await via('order', '/present', ['x-debug: 1'])).stdout).toBe('D GET /present 0\n');
  });
  it('answers a direct response without an upstream', async () => {
    const r = await curl(['-i', '-H', 'Host: order', `http://127.0.0.1:${p.port}/static`]);
    expect(r.stdout).toMatch(/^HTTP\/1.1 200 OK/);
    expect(r.stdout.endsWith('static answer\n')).toBe(true);
  });
  it('matches domains with and without a port, aliases and wildcards', async () => {
    expect((await via('order.default', '/api/1')).stdout).toBe('A GET /api/1 0\n');
    expect((await via('order:8080', '/api/2')).stdout).toBe('A GET /api/2 0\n');
    expect((await via('order:9999', '/api/3')).stdout).toBe('A GET /api/3 0\n'); // port stripped, "order" matches
    expect((await via('shop.example.com', '/')).stdout).toBe('B GET / 0\n');
  });
  it('gives 404 naming the host when no virtual host matches, with flag NR in the access log', async () => {
    const r = await curl(['-i', '-H', 'Host: nowhere', `http://127.0.0.1:${p.port}/x`]);
    expect(r.stdout).toMatch(/^HTTP\/1.1 404/);
    expect(r.stdout).toContain('no route for host "nowhere"');
    await new Promise((res) => setTimeout(res, 50));
    expect(p.log.some((l) => l.includes('"GET /x HTTP/1.1" 404 NR') && l.includes('"nowhere"'))).toBe(true);
  });
  it('serves explicit proxy requests: curl -x reaches the configured cluster', async () => {
    const r = await curl(['-x', `127.0.0.1:${p.port}`, 'http://order/api/proxied']);
    expect(r.stdout).toBe('A GET /api/proxied 0\n');
    const last = a.requests[a.requests.length - 1]!;
    expect(last.url).toBe('/api/proxied'); // origin-form upstream
    expect(last.headers['proxy-connection']).toBeUndefined(); // hop-by-hop removed
  });
});

describe('access log', () => {
  it('writes one JSON object per request with Envoy\'s fields when format is json', async () => {
    const up = await startUpstream('J');
    const p = await startProxy({
      accessLog: { format: 'json', path: '/dev/null' },
      clusters: [cluster('out#80#j', [up])],
      routes: { virtualHosts: [vhost('j', ['j'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#j' } }])] },
    });
    try {
      await curl(['-H', 'Host: j', '-H', 'x-request-id: rid-7', '-A', 'agent/1', `http://127.0.0.1:${p.port}/json?q=1`]);
      await curl(['-H', 'Host: other', `http://127.0.0.1:${p.port}/none`]);
      await new Promise((r) => setTimeout(r, 50));
      const lines = p.log.map((l) => JSON.parse(l));
      expect(lines[0]).toMatchObject({
        method: 'GET', path: '/json?q=1', protocol: 'HTTP/1.1', response_code: 200, response_flags: '-',
        user_agent: 'agent/1', request_id: 'rid-7', authority: 'j', upstream_host: `127.0.0.1:${up.port}`, upstream_cluster: 'out#80#j',
      });
      expect(lines[0].start_time).toMatch(/^\d{4}-\d\d-\d\dT/);
      expect(lines[0].bytes_sent).toBeGreaterThan(0);
      expect(lines[1]).toMatchObject({ response_code: 404, response_flags: 'NR', authority: 'other', upstream_host: null });
    } finally {
      await p.proxy.close();
      await up.close();
    }
  });
});
