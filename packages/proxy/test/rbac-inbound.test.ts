import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from './support/proxy-harness';
import { labUnavailable, NetnsLab, proxyBin } from './support/netns-lab';
import { createTestCa, issueLeaf, type TestLeaf } from './support/test-certs';

// Inbound RBAC for real (issue 13): callers in namespace B present client certificates (openssl CLI)
// to captured ports of namespace A; the policies allow by SPIFFE ID, method and path. Port 8089 is
// strict, 8090 permissive (plaintext callers have no identity), 8091 has an empty policy list.
const missing = labUnavailable([['openssl', 'version']]);
if (missing && process.env.CI) throw new Error(`rbac-inbound: ${missing}`);

const TD = 'spiffe://cluster.local/ns/default/sa';

describe.skipIf(missing !== undefined)('RBAC on inbound ports', () => {
  const lab = new NetnsLab(`rba${process.pid % 100000}`, 23);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'proxy-rbac-'));
  const accessLogFile = path.join(dir, 'access.log');
  let proxyOut: () => string = () => '';
  let order: TestLeaf, evil: TestLeaf;
  const accessLog = (): Record<string, unknown>[] => (fs.existsSync(accessLogFile) ? fs.readFileSync(accessLogFile, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []);
  const stat = (name: string) => lab.stat(15000, name);

  /** curl from namespace B: one line `<status> <connections opened>` per URL, after each body. */
  function curlFromB(urls: string[], leaf?: TestLeaf, extra: string[] = []): { code: number; stdout: string; results: string[] } {
    const r = lab.inNs(lab.b, ['curl', '-s', '-k', '--max-time', '10', '-w', '\n=%{http_code} %{num_connects}\n', ...(leaf ? ['--cert', leaf.certChain, '--key', leaf.privateKey] : []), ...extra, ...urls], { allowFail: true });
    return { code: r.code, stdout: r.stdout, results: r.stdout.split('\n').filter((l) => l.startsWith('=')).map((l) => l.slice(1)) };
  }
  const url = (port: number, p: string, scheme = 'https') => `${scheme}://${lab.ipA}:${port}${p}`;

  beforeAll(async () => {
    const ca = createTestCa(path.join(dir, 'ca'));
    const user = issueLeaf(ca, path.join(dir, 'user'), `${TD}/user`);
    order = issueLeaf(ca, path.join(dir, 'order'), `${TD}/order`);
    evil = issueLeaf(ca, path.join(dir, 'evil'), `${TD}/evil`);
    lab.create();
    for (const port of ['8089', '8090', '8091']) lab.inNs(lab.a, ['iptables', '-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '--dport', port, '-j', 'REDIRECT', '--to-ports', '15001']);
    lab.start(lab.a, [process.execPath, '-e', `require('http').createServer((q,s)=>s.end('app '+q.method+' '+q.url+'\\n')).listen(18089,'127.0.0.1')`]);
    const cfg = path.join(dir, 'proxy.json');
    const app = (name: string) => ({ name, endpoints: [{ address: '127.0.0.1', port: 18089 }] });
    const tls = (mode: string) => ({ mode, secret: 'user' });
    fs.writeFileSync(cfg, JSON.stringify({
      admin: { address: '127.0.0.1', port: 15000 },
      listener: { name: 'virtual', address: '0.0.0.0', port: 15001 },
      localAddresses: [lab.ipA],
      secrets: [{ name: 'user', certChain: user.certChain, privateKey: user.privateKey, trustBundle: user.trustBundle }],
      inbound: [
        { port: 8089, cluster: 'in#8089#user', tls: tls('strict'), rbac: { policies: [
          { name: 'order-reads-api', principals: [`${TD}/order`], methods: ['GET'], paths: ['/api/*'] },
          { name: 'anyone-health', paths: ['/healthz'] },
        ] } },
        { port: 8090, cluster: 'in#8090#user', tls: tls('permissive'), rbac: { policies: [{ name: 'order-only', principals: [`${TD}/order`] }] } },
        { port: 8091, cluster: 'in#8091#user', tls: tls('strict'), rbac: { policies: [] } },
      ],
      accessLog: { format: 'json', path: accessLogFile },
      clusters: [app('in#8089#user'), app('in#8090#user'), app('in#8091#user')],
    }));
    proxyOut = lab.start(lab.a, [process.execPath, proxyBin, '--config', cfg]).out;
    // B's sidecar: explicit-proxy clients of B reach A's captured ports over mTLS as `order` (outbound side)
    const cfgB = path.join(dir, 'proxy-b.json');
    const out = (name: string, port: number, identity: string) => ({ name, endpoints: [{ address: lab.ipA, port, metadata: { identity } }],
      tls: { secret: 'order', sni: `outbound_.${port}_._.user.default.svc.cluster.local` } });
    fs.writeFileSync(cfgB, JSON.stringify({
      admin: { address: '127.0.0.1', port: 15000 },
      listener: { name: 'virtual', address: '127.0.0.1', port: 15001 },
      secrets: [{ name: 'order', certChain: order.certChain, privateKey: order.privateKey, trustBundle: order.trustBundle }],
      clusters: [out('out#8089#user', 8089, `${TD}/user`), out('out#8089#user-wrong-id', 8089, `${TD}/payments`)],
      routes: { virtualHosts: [
        { name: 'user', domains: ['user'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#8089#user' } }] },
        { name: 'user-wrong-id', domains: ['user-wrong-id'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#8089#user-wrong-id' } }] },
      ] },
    }));
    lab.start(lab.b, [process.execPath, proxyBin, '--config', cfgB]);
    await lab.waitHttp(lab.b, 'http://127.0.0.1:15000/ready');
    await lab.waitHttp(lab.a, 'http://127.0.0.1:15000/ready');
    await lab.waitHttp(lab.a, 'http://127.0.0.1:18089/');
  }, 90_000);

  afterAll(() => {
    lab.remove();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the allowed principal is served (200, rbac.allowed); another principal gets 403 "RBAC: access denied" (rbac.denied, flag RBAC, warned) and never reaches the app', async () => {
    const ok = curlFromB([url(8089, '/api/orders')], order);
    expect(ok.stdout).toContain('app GET /api/orders');
    expect(ok.results).toEqual(['200 1']);
    expect(stat('http.inbound_0.0.0.0_8089.rbac.allowed')).toBe(1);
    const appBefore = stat('cluster.in#8089#user.upstream_rq_total');
    // the HTTP/1.1 wire format of Envoy's answer (curl would negotiate h2 by ALPN otherwise)
    const denied = lab.inNs(lab.b, ['curl', '-s', '-k', '-i', '--http1.1', '--max-time', '10', '--cert', evil.certChain, '--key', evil.privateKey, url(8089, '/api/orders')]);
    expect(denied.stdout).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
    expect(denied.stdout).toMatch(/\r\ncontent-type: text\/plain\r\n/);
    expect(denied.stdout.endsWith('\r\n\r\nRBAC: access denied')).toBe(true);
    expect(stat('http.inbound_0.0.0.0_8089.rbac.denied')).toBe(1);
    expect(stat('cluster.in#8089#user.upstream_rq_total')).toBe(appBefore);
    await waitFor(() => accessLog().some((l) => l.response_flags === 'RBAC'), 'the RBAC access log line');
    expect(accessLog().find((l) => l.response_flags === 'RBAC')).toMatchObject({ response_code: 403, path: '/api/orders', response_code_details: 'rbac_access_denied_matched_policy[none]' });
    await waitFor(() => proxyOut().includes('RBAC denied a request'), 'the warning', 5000);
    const warning = JSON.parse(proxyOut().split('\n').find((l) => l.includes('RBAC denied a request'))!);
    expect(warning).toMatchObject({ level: 'warn', identity: `${TD}/evil`, method: 'GET', path: '/api/orders', port: 8089 });
  });

  it('methods and paths: the allowed principal is denied another method or path; the query is not part of the path; a policy without principals admits any caller', () => {
    expect(curlFromB([url(8089, '/api/orders')], order, ['-X', 'POST']).results).toEqual(['403 1']);
    expect(curlFromB([url(8089, '/admin')], order).results).toEqual(['403 1']);
    expect(curlFromB([url(8089, '/api/orders?page=2')], order).results).toEqual(['200 1']);
    expect(curlFromB([url(8089, '/healthz')], evil).results).toEqual(['200 1']);
  });

  it('a keep-alive connection stays usable after a 403', () => {
    const r = curlFromB([url(8089, '/admin'), url(8089, '/api/next')], order);
    expect(r.results).toEqual(['403 1', '200 0']); // the second request rode the same connection
    expect(r.stdout).toContain('app GET /api/next');
  });

  it('permissive: a plaintext caller has no identity, so a principals policy denies it; the same caller over mTLS is allowed', () => {
    const before = stat('http.inbound_0.0.0.0_8090.rbac.denied');
    const plain = curlFromB([url(8090, '/x', 'http')]);
    expect(plain.results).toEqual(['403 1']);
    expect(plain.stdout).toContain('RBAC: access denied');
    expect(stat('http.inbound_0.0.0.0_8090.rbac.denied')).toBe(before + 1);
    expect(curlFromB([url(8090, '/x')], order).results).toEqual(['200 1']);
  });

  it('sidecar to sidecar: B\'s proxy originates mTLS as order to A\'s strict port, A\'s RBAC sees that identity; a mis-registered identity is refused by B', () => {
    const allowedBefore = stat('http.inbound_0.0.0.0_8089.rbac.allowed');
    const ok = lab.inNs(lab.b, ['curl', '-s', '--max-time', '10', '-w', '\n%{http_code}', '-x', 'http://127.0.0.1:15001', 'http://user/api/from-b']);
    expect(ok.stdout).toBe('app GET /api/from-b\n\n200');
    expect(stat('http.inbound_0.0.0.0_8089.rbac.allowed')).toBe(allowedBefore + 1);
    const denied = lab.inNs(lab.b, ['curl', '-s', '--max-time', '10', '-w', '\n%{http_code}', '-x', 'http://127.0.0.1:15001', 'http://user/admin']);
    expect(denied.stdout).toBe('RBAC: access denied\n403');
    // B registered another identity for A's address: B's own check refuses A's certificate (503 UF)
    const wrong = lab.inNs(lab.b, ['curl', '-s', '--max-time', '10', '-w', '\n%{http_code}', '-x', 'http://127.0.0.1:15001', 'http://user-wrong-id/api/x']);
    expect(wrong.stdout).toMatch(/peer identity spiffe:\/\/cluster\.local\/ns\/default\/sa\/user is not the registered spiffe:\/\/cluster\.local\/ns\/default\/sa\/payments\n\n503$/);
  });

  it('an empty policy list denies everyone', () => {
    expect(curlFromB([url(8091, '/x')], order).results).toEqual(['403 1']);
    expect(stat('http.inbound_0.0.0.0_8091.rbac.denied')).toBe(1);
  });
});
