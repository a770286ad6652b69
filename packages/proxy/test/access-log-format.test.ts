import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProxy, type MeshProxy } from '../src/proxy';
import { request, startUpstream, waitFor, type TestUpstream } from './support/proxy-harness';

// Access logs in Envoy's format-string syntax and json_format (issue 16): real requests through the
// real proxy to a real upstream, the lines read back from real files the proxy appended to.

describe('access log format strings', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'proxy-access-log-'));
  const files = { text: path.join(dir, 'text.log'), json: path.join(dir, 'outbound.json'), inbound: path.join(dir, 'inbound.json'), plain: path.join(dir, 'default.log') };
  const lines = (file: string): string[] => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : []);
  let up: TestUpstream;
  let proxy: MeshProxy;
  let port: number;
  const TEXT = '%START_TIME(%s)% "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    + '"%REQ(USER-AGENT)%" "%REQ(X-TENANT):4%" "%RESP(X-UPSTREAM-SAYS)%" %ROUTE_NAME% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% 100%%';
  const JSON_FORMAT = {
    code: '%RESPONSE_CODE%', method: '%REQ(:METHOD)%', path: '%REQ(:PATH)%', route: '%ROUTE_NAME%', cluster: '%UPSTREAM_CLUSTER%',
    bytes_sent: '%BYTES_SENT%', flags: '%RESPONSE_FLAGS%', tenant: '%REQ(X-TENANT)%', summary: '%REQ(:METHOD)% -> %RESPONSE_CODE% %RESP(X-UPSTREAM-SAYS)%',
    started: '%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%',
  };

  const config = (extra: Record<string, unknown> = {}) => ({
    admin: { address: '127.0.0.1', port: 0 },
    listener: { name: 'virtual', address: '127.0.0.1', port: 0 },
    accessLog: { path: files.text, textFormat: TEXT },
    accessLogs: [
      { direction: 'outbound', path: files.json, jsonFormat: JSON_FORMAT },
      { direction: 'inbound', path: files.inbound, format: 'json' },
      { path: files.plain },
    ],
    clusters: [{ name: 'out#80#orders', endpoints: [{ address: '127.0.0.1', port: up.port }] }],
    routes: { virtualHosts: [{ name: 'orders', domains: ['orders'], routes: [
      { name: 'maintenance', match: { prefix: '/down' }, directResponse: { status: 503, body: 'down' } },
      { name: 'orders-api', match: { prefix: '/' }, route: { cluster: 'out#80#orders' } },
    ] }] },
    ...extra,
  });

  beforeAll(async () => {
    up = await startUpstream('orders', (req, res) => { res.setHeader('x-upstream-says', 'hello'); res.end(`orders ${req.url}\n`); });
    proxy = createProxy(config());
    port = (await proxy.start()).listener.port;
    const agent = new http.Agent({ keepAlive: true });
    expect((await request(port, { host: 'orders', path: '/orders/7?x=1', agent, headers: { 'user-agent': 'curl/8', 'x-tenant': 'acme-corp' } })).status).toBe(200);
    expect((await request(port, { host: 'orders', path: '/down', agent })).status).toBe(503);
    expect((await request(port, { host: 'nobody', path: '/', agent })).status).toBe(404);
    agent.destroy();
    await waitFor(() => lines(files.text).length === 3 && lines(files.json).length === 3 && lines(files.plain).length === 3, 'three lines in each access log');
  });
  afterAll(async () => {
    await proxy?.close();
    await up?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('textFormat: every operator filled, a missing value is "-", :LENGTH truncates, %% is a literal %', () => {
    const [ok, down, none] = lines(files.text);
    const m = /^(\d+) "GET \/orders\/7\?x=1 HTTP\/1\.1" 200 - (\d+) (\d+) (\d+) "curl\/8" "acme" "hello" orders-api out#80#orders 127\.0\.0\.1:(\d+) 127\.0\.0\.1 100%$/.exec(ok!);
    expect(m, ok).not.toBeNull();
    expect(Math.abs(Number(m![1]) - Date.now() / 1000)).toBeLessThan(600); // %START_TIME(%s)%: epoch seconds
    expect(Number(m![2])).toBeGreaterThan(0);
    expect(Number(m![5])).toBe(up.port);
    expect(down).toMatch(/^\d+ "GET \/down HTTP\/1\.1" 503 - \d+ \d+ \d+ "-" "-" "-" maintenance - - 127\.0\.0\.1 100%$/);
    expect(none).toMatch(/^\d+ "GET \/ HTTP\/1\.1" 404 NR \d+ \d+ \d+ "-" "-" "-" - - - 127\.0\.0\.1 100%$/);
  });

  it('jsonFormat: one operator keeps its type (numbers, null when absent), mixed values are strings; outbound only', () => {
    const [ok, down, none] = lines(files.json).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(ok).toMatchObject({ code: 200, method: 'GET', path: '/orders/7?x=1', route: 'orders-api', cluster: 'out#80#orders', flags: null, tenant: 'acme-corp', summary: 'GET -> 200 hello' });
    expect(typeof ok!.bytes_sent).toBe('number');
    expect(ok!.started).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(Math.abs(Date.parse(ok!.started as string) - Date.now())).toBeLessThan(600_000);
    expect(Object.keys(ok!)).toEqual(Object.keys(JSON_FORMAT));
    expect(down).toMatchObject({ code: 503, route: 'maintenance', cluster: null, summary: 'GET -> 503 -' });
    expect(none).toMatchObject({ code: 404, route: null, flags: 'NR' });
    // these requests went outbound: the inbound-only log stays empty
    expect(lines(files.inbound)).toEqual([]);
  });

  it('a log without a format keeps Envoy\'s default line, unchanged', () => {
    const [ok] = lines(files.plain);
    expect(ok).toMatch(/^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET \/orders\/7\?x=1 HTTP\/1\.1" 200 - \d+ \d+ \d+ \d+ "127\.0\.0\.1" "curl\/8" "[0-9a-f-]{36}" "orders" "127\.0\.0\.1:\d+"$/);
  });

  it('an unknown operator is a config error naming it and the field; a live update with one is refused and the logs go on', async () => {
    expect(() => createProxy(config({ accessLog: { path: files.text, textFormat: '%START_TIME% %UPSTREAM_ZONE%' } })))
      .toThrow(/accessLog\.textFormat[\s\S]*unknown command operator %UPSTREAM_ZONE% at column 14/);
    expect(() => createProxy(config({ accessLog: { path: files.text, textFormat: '%REQ()%' } }))).toThrow(/%REQ\(HEADER\)% needs a header name/);
    expect(() => createProxy(config({ accessLog: { path: files.text, textFormat: '%DURATION' } }))).toThrow(/malformed command operator at column 1 \(%DURATION\.\.\.\)/);
    let err: unknown;
    try {
      proxy.update(config({ accessLogs: [{ direction: 'outbound', path: files.json, jsonFormat: { ok: '%RESPONSE_CODE%', bad: '%NOPE(1)%' } }] }));
    } catch (e) { err = e; }
    expect(String((err as Error)?.message)).toMatch(/accessLogs\[0\]\.jsonFormat\.bad[\s\S]*unknown command operator %NOPE%/);
    const before = lines(files.json).length;
    expect((await request(port, { host: 'orders', path: '/after' })).status).toBe(200);
    await waitFor(() => lines(files.json).length === before + 1, 'the old outbound log still written');
    expect(JSON.parse(lines(files.json).at(-1)!)).toMatchObject({ path: '/after', route: 'orders-api' });
  });
});
