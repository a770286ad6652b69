import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from './support/proxy-harness';
import { labUnavailable, NetnsLab, proxyBin, sh } from './support/netns-lab';
import { createTestCa, issueLeaf, type TestLeaf } from './support/test-certs';

// Inbound mTLS for real (issue 13): the proxy and the local application in namespace A behind real
// iptables REDIRECT rules, clients (curl, openssl s_client) in namespace B with certificates made by
// the openssl CLI. Port 8089 is strict, 8090 permissive, 8093 has no TLS.
const missing = labUnavailable([['openssl', 'version']]);
if (missing && process.env.CI) throw new Error(`tls-inbound-mtls: ${missing}`);

const TD = 'spiffe://cluster.local/ns/default/sa';
const L = 'listener.0.0.0.0_15001.';
const SNI_8089 = 'outbound_.8089_._.user.default.svc.cluster.local';

describe.skipIf(missing !== undefined)('inbound mTLS on captured ports and the direct path', () => {
  const lab = new NetnsLab(`tin${process.pid % 100000}`, 22);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'proxy-tls-in-'));
  const accessLogFile = path.join(dir, 'access.log');
  let proxyOut: () => string = () => '';
  let ca: ReturnType<typeof createTestCa>;
  let user: TestLeaf, order: TestLeaf, rogue: TestLeaf, expired: TestLeaf;
  const accessLog = (): Record<string, unknown>[] => (fs.existsSync(accessLogFile) ? fs.readFileSync(accessLogFile, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []);
  const stat = (name: string) => lab.stat(15000, name);

  /** curl from namespace B; `-k`: the server certificate carries only a URI SAN (its chain is checked with s_client below). */
  function curlFromB(url: string, leaf?: TestLeaf, extra: string[] = []): { code: number; body: string; status: string } {
    const r = lab.inNs(lab.b, ['curl', '-s', '-k', '--max-time', '10', '-w', '\n%{http_code}', ...(leaf ? ['--cert', leaf.certChain, '--key', leaf.privateKey] : []), ...extra, url], { allowFail: true });
    const nl = r.stdout.lastIndexOf('\n');
    return { code: r.code, body: r.stdout.slice(0, Math.max(0, nl)).trimEnd(), status: r.stdout.slice(nl + 1) };
  }

  beforeAll(async () => {
    ca = createTestCa(path.join(dir, 'ca'));
    user = issueLeaf(ca, path.join(dir, 'user'), `${TD}/user`);
    order = issueLeaf(ca, path.join(dir, 'order'), `${TD}/order`);
    expired = issueLeaf(ca, path.join(dir, 'expired'), `${TD}/order`, { expired: true });
    rogue = issueLeaf(createTestCa(path.join(dir, 'rogue-ca'), 'rogue-ca'), path.join(dir, 'rogue'), `${TD}/order`);
    lab.create();
    for (const port of ['8089', '8090', '8093', '8094']) lab.inNs(lab.a, ['iptables', '-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '--dport', port, '-j', 'REDIRECT', '--to-ports', '15001']);
    lab.start(lab.a, [process.execPath, '-e', `require('http').createServer((q,s)=>s.end(q.url==='/headers'?JSON.stringify(q.headers):'app '+q.url+' '+(q.headers['x-forwarded-for']||'')+'\\n')).listen(18089,'127.0.0.1')`]);
    const cfg = path.join(dir, 'proxy.json');
    const app = (name: string) => ({ name, endpoints: [{ address: '127.0.0.1', port: 18089 }] });
    fs.writeFileSync(cfg, JSON.stringify({
      admin: { address: '127.0.0.1', port: 15000 },
      listener: { name: 'virtual', address: '0.0.0.0', port: 15001 },
      localAddresses: [lab.ipA],
      secrets: [{ name: 'user', certChain: user.certChain, privateKey: user.privateKey, trustBundle: user.trustBundle }],
      inbound: [
        { port: 8089, cluster: 'in#8089#user', tls: { mode: 'strict', secret: 'user' } },
        { port: 8090, cluster: 'in#8090#user', tls: { mode: 'permissive', secret: 'user' } },
        { port: 8093, cluster: 'in#8093#user' },
        // sniffed (a port declared with no protocol) and strict: sniffed plaintext TCP must not get around strict
        { port: 8094, cluster: 'in#8094#user', protocol: 'auto', tls: { mode: 'strict', secret: 'user' } },
      ],
      accessLog: { format: 'json', path: accessLogFile },
      // short, so the tests of a silent client and a stalled handshake wait little
      limits: { headersTimeoutMs: 1500 },
      clusters: [app('in#8089#user'), app('in#8090#user'), app('in#8093#user'), app('in#8094#user')],
    }));
    proxyOut = lab.start(lab.a, [process.execPath, proxyBin, '--config', cfg]).out;
    await lab.waitHttp(lab.a, 'http://127.0.0.1:15000/ready');
    await lab.waitHttp(lab.a, 'http://127.0.0.1:18089/');
  }, 90_000);

  afterAll(() => {
    if (process.env.DEBUG_PROXY_OUT) console.log(proxyOut());
    lab.remove();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('openssl s_client against the strict captured port sees the proxy\'s chain with the SPIFFE SAN; its HTTP request reaches the app over TLS 1.3', () => {
    const before = stat(`${L}ssl.handshake`);
    const r = lab.inNs(lab.b, ['openssl', 's_client', '-connect', `${lab.ipA}:8089`, '-cert', order.certChain, '-key', order.privateKey, '-CAfile', ca.cert,
      '-showcerts', '-verify_return_error', '-ign_eof'], { input: 'GET /hello HTTP/1.1\r\nHost: user\r\nConnection: close\r\n\r\n', allowFail: true, timeoutMs: 20_000 });
    expect(r.stdout).toContain('Verify return code: 0 (ok)');
    expect(r.stdout).toMatch(/New, TLSv1\.3/);
    expect(r.stdout).toContain('HTTP/1.1 200 OK');
    expect(r.stdout).toContain(`app /hello ${lab.ipB}`);
    const leafPem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.stdout)![0];
    const san = sh(['openssl', 'x509', '-noout', '-ext', 'subjectAltName'], { input: leafPem }).stdout;
    expect(san).toContain(`URI:${TD}/user`);
    expect(stat(`${L}ssl.handshake`)).toBe(before + 1);
  });

  it('strict: plaintext is closed unanswered, counted no_filter_chain_match, logged with flag NFCF, never reaches the app', async () => {
    const appBefore = stat('cluster.in#8089#user.upstream_rq_total');
    const r = curlFromB(`http://${lab.ipA}:8089/plain`);
    expect(r.code).toBe(52); // curl: empty reply from server
    expect(stat(`${L}no_filter_chain_match`)).toBe(1);
    expect(stat('cluster.in#8089#user.upstream_rq_total')).toBe(appBefore);
    await waitFor(() => accessLog().some((l) => l.response_flags === 'NFCF'), 'the NFCF access log line');
    expect(accessLog().find((l) => l.response_flags === 'NFCF')).toMatchObject({ response_code: 0, method: '-', x_forwarded_for: lab.ipB });
    await waitFor(() => proxyOut().includes('plaintext refused on a strict mTLS port'), 'the warning', 5000);
    // mTLS on the same port is served
    const ok = curlFromB(`https://${lab.ipA}:8089/tls`, order);
    expect(ok).toMatchObject({ status: '200', body: `app /tls ${lab.ipB}` });
  });

  it('strict on a sniffed (auto) port: plaintext bytes that are not HTTP are refused too (no plaintext TCP around strict); mTLS is served', () => {
    const refusedBefore = stat(`${L}no_filter_chain_match`);
    const appBefore = stat('cluster.in#8094#user.upstream_cx_total');
    // a redis-like first message: sniffed as TCP, which strict mode refuses
    const raw = lab.inNs(lab.b, [process.execPath, '-e', `const s=require('net').connect(8094,'${lab.ipA}',()=>s.write('*1\\r\\n$4\\r\\nPING\\r\\n'));let got='';s.on('data',(d)=>got+=d);s.on('error',()=>{});s.on('close',()=>{console.log('closed:'+JSON.stringify(got));process.exit(0)});setTimeout(()=>{console.log('open');process.exit(0)},5000)`], { allowFail: true });
    expect(raw.stdout.trim()).toBe('closed:""');
    expect(stat(`${L}no_filter_chain_match`)).toBe(refusedBefore + 1);
    expect(stat('cluster.in#8094#user.upstream_cx_total')).toBe(appBefore);
    expect(curlFromB(`https://${lab.ipA}:8094/tls`, order)).toMatchObject({ status: '200', body: `app /tls ${lab.ipB}` });
  });

  it('permissive: plaintext and mTLS are both served', () => {
    expect(curlFromB(`http://${lab.ipA}:8090/plain`)).toMatchObject({ status: '200', body: `app /plain ${lab.ipB}` });
    expect(curlFromB(`https://${lab.ipA}:8090/tls`, order)).toMatchObject({ status: '200', body: `app /tls ${lab.ipB}` });
  });

  it('the application learns the caller\'s identity from x-forwarded-client-cert (set by the proxy only, as Istio\'s sidecars) and x-forwarded-proto https', () => {
    const spoof = ['-H', `x-forwarded-client-cert: URI=${TD}/admin`];
    const tlsHeaders = JSON.parse(curlFromB(`https://${lab.ipA}:8089/headers`, order, spoof).body);
    const hash = new crypto.X509Certificate(fs.readFileSync(order.certChain)).fingerprint256.replace(/:/g, '').toLowerCase();
    expect(tlsHeaders['x-forwarded-client-cert']).toBe(`By=${TD}/user;Hash=${hash};Subject="";URI=${TD}/order`);
    expect(tlsHeaders['x-forwarded-proto']).toBe('https');
    const plainHeaders = JSON.parse(curlFromB(`http://${lab.ipA}:8090/headers`, undefined, spoof).body);
    expect(plainHeaders['x-forwarded-client-cert']).toBeUndefined(); // a plaintext caller cannot claim an identity
    expect(plainHeaders['x-forwarded-proto']).toBe('http');
  });

  it('h2 by ALPN (issue 14): curl negotiates HTTP/2 with the strict port, HTTP/1.1 when it offers only that; both reach the app, logged per protocol', async () => {
    const get = (path: string, extra: string[]) => lab.inNs(lab.b, ['curl', '-s', '-k', '--max-time', '10', '--cert', user.certChain, '--key', user.privateKey,
      '-w', 'version=%{http_version} status=%{http_code}', ...extra, `https://${lab.ipA}:8089${path}`], { allowFail: true }).stdout;
    const h2 = get('/alpn-h2', []);
    expect(h2).toContain('app /alpn-h2');
    expect(h2).toMatch(/version=2 status=200$/);
    expect(get('/alpn-h1', ['--http1.1'])).toMatch(/app \/alpn-h1[\s\S]*version=1\.1 status=200$/);
    await waitFor(() => accessLog().some((l) => l.path === '/alpn-h2' && l.protocol === 'HTTP/2') && accessLog().some((l) => l.path === '/alpn-h1' && l.protocol === 'HTTP/1.1'), 'both access log lines');
    expect(stat('http.virtual.downstream_cx_http2_total')).toBeGreaterThanOrEqual(1);
  });

  it('a port without tls serves plaintext as before', () => {
    expect(curlFromB(`http://${lab.ipA}:8093/plain`)).toMatchObject({ status: '200', body: `app /plain ${lab.ipB}` });
  });

  it('a client certificate from an unknown CA, an expired one and none at all are refused, each on its counter; the proxy lives on', async () => {
    const appBefore = stat('cluster.in#8089#user.upstream_rq_total');
    const verifyBefore = stat(`${L}ssl.fail_verify_error`);
    const noCertBefore = stat(`${L}ssl.fail_verify_no_cert`);
    expect(curlFromB(`https://${lab.ipA}:8089/rogue`, rogue).status).toBe('000');
    expect(stat(`${L}ssl.fail_verify_error`)).toBe(verifyBefore + 1);
    expect(curlFromB(`https://${lab.ipA}:8089/expired`, expired).status).toBe('000');
    expect(stat(`${L}ssl.fail_verify_error`)).toBe(verifyBefore + 2);
    expect(curlFromB(`https://${lab.ipA}:8090/nocert`).status).toBe('000'); // permissive: TLS still needs a client certificate
    expect(stat(`${L}ssl.fail_verify_no_cert`)).toBe(noCertBefore + 1);
    expect(stat('cluster.in#8089#user.upstream_rq_total')).toBe(appBefore);
    await waitFor(() => proxyOut().includes('inbound TLS handshake refused'), 'the warning', 5000);
    expect(curlFromB(`https://${lab.ipA}:8089/after`, order)).toMatchObject({ status: '200' });
  });

  it('a client that sends nothing, or stops inside its ClientHello, is closed after the headers timeout and counted', () => {
    const probe = (bytes: string) => lab.inNs(lab.b, [process.execPath, '-e', `const s=require('net').connect(8089,'${lab.ipA}',()=>{${bytes ? `s.write(Buffer.from('${bytes}','hex'))` : ''}});
      s.on('close',()=>{console.log('closed by the proxy');process.exit(0)});s.on('error',()=>{});setTimeout(()=>{console.log('still open');process.exit(1)},10000)`], { allowFail: true, timeoutMs: 20_000 });
    expect(probe('').stdout).toContain('closed by the proxy');
    expect(stat(`${L}downstream_pre_cx_timeout`)).toBe(1);
    expect(probe('160301020001').stdout).toContain('closed by the proxy'); // a TLS record header and one byte of the hello
    expect(stat(`${L}downstream_cx_transport_socket_connect_timeout`)).toBe(1);
    expect(stat(`${L}ssl.handshake`)).toBeGreaterThan(0); // the proxy lives on
  });

  it('a certificate replaced on disk serves the next handshake (new serial), without a restart', async () => {
    const serialOf = () => {
      const r = lab.inNs(lab.b, ['openssl', 's_client', '-connect', `${lab.ipA}:8089`, '-cert', order.certChain, '-key', order.privateKey, '-CAfile', ca.cert], { input: '', allowFail: true, timeoutMs: 20_000 });
      const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.stdout)![0];
      return sh(['openssl', 'x509', '-noout', '-serial'], { input: pem }).stdout.trim().replace(/^serial=/, '').toLowerCase();
    };
    expect(serialOf()).toBe(user.serial);
    const rotated = issueLeaf(ca, path.join(dir, 'user'), `${TD}/user`);
    await waitFor(() => stat('sds.user.update_success') >= 1, 'the reload of the rotated secret', 10_000);
    expect(serialOf()).toBe(rotated.serial);
    expect(curlFromB(`https://${lab.ipA}:8089/rotated`, order)).toMatchObject({ status: '200' });
  });

  it('direct path: TLS to A:15001 from another host whose SNI names a local mTLS port is served as inbound to that port', () => {
    const appBefore = stat('cluster.in#8089#user.upstream_rq_total');
    const r = curlFromB(`https://${SNI_8089}/direct`, order, ['--connect-to', `${SNI_8089}:443:${lab.ipA}:15001`]);
    expect(r).toMatchObject({ status: '200', body: `app /direct ${lab.ipB}` });
    expect(stat('cluster.in#8089#user.upstream_rq_total')).toBe(appBefore + 1);
  });

  it('direct path: anything else stays refused (TLS with another SNI or none, no client certificate, plaintext)', () => {
    const nfcBefore = stat(`${L}no_filter_chain_match`);
    const bhBefore = stat('cluster.BlackHoleCluster.upstream_cx_total');
    const wrongService = 'outbound_.8089_._.order.default.svc.cluster.local';
    expect(curlFromB(`https://${wrongService}/x`, order, ['--connect-to', `${wrongService}:443:${lab.ipA}:15001`]).status).toBe('000');
    expect(curlFromB(`https://${lab.ipA}:15001/no-sni`, order).status).toBe('000'); // an IP in the URL: no SNI
    expect(stat(`${L}no_filter_chain_match`)).toBe(nfcBefore + 2);
    expect(stat('cluster.BlackHoleCluster.upstream_cx_total')).toBe(bhBefore + 2);
    // the SNI of the permissive port: on the direct path a client certificate is required anyway
    const noCertBefore = stat(`${L}ssl.fail_verify_no_cert`);
    const sni8090 = 'outbound_.8090_._.user.default.svc.cluster.local';
    expect(curlFromB(`https://${sni8090}/x`, undefined, ['--connect-to', `${sni8090}:443:${lab.ipA}:15001`]).status).toBe('000');
    expect(stat(`${L}ssl.fail_verify_no_cert`)).toBe(noCertBefore + 1);
    // plaintext to the listener from another host: 502 NR as before
    const plain = curlFromB(`http://${lab.ipA}:15001/direct-plain`, undefined, ['-H', `Host: ${lab.ipA}:8089`]);
    expect(plain.status).toBe('502');
    expect(plain.body).toContain('BlackHoleCluster');
  });
});
