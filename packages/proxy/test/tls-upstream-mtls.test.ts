import fs from 'node:fs';
import https from 'node:https';
import { connect as netConnect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request, startProxy, startUpstream, waitFor, type StartedProxy, type TestUpstream } from './support/proxy-harness';
import { createTestCa, issueLeaf, type TestCa, type TestLeaf } from './support/test-certs';

// Outbound mTLS origination (issue 13) against real TLS servers on loopback that require a client
// certificate: the peer's chain and registered identity are checked, failures are connect failures
// (503 UF) counted in cluster.<name>.ssl.*, rotated secret files apply to the next connection.

const TD = 'spiffe://cluster.local/ns/default/sa';
const ORDER = `${TD}/order`;

interface TlsUpstream {
  port: number;
  /** what each request saw of the client's TLS side */
  seen: { clientId: string | undefined; serial: string; servername: string | false; alpn: string | false | null; protocol: string | null; headers: Record<string, unknown> }[];
  /** raw TLS handshakes the server saw complete or fail */
  handshakeErrors: string[];
  close(): Promise<void>;
}

async function startTlsUpstream(leaf: TestLeaf, clientCa: string, opts: { closeEach?: boolean; maxVersion?: tls.SecureVersion } = {}): Promise<TlsUpstream> {
  const seen: TlsUpstream['seen'] = [];
  const handshakeErrors: string[] = [];
  const server = https.createServer({
    cert: fs.readFileSync(leaf.certChain), key: fs.readFileSync(leaf.privateKey), ca: fs.readFileSync(clientCa),
    requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['http/1.1'], minVersion: 'TLSv1.2', ...(opts.maxVersion ? { maxVersion: opts.maxVersion } : {}),
  }, (req, res) => {
    const socket = req.socket as tls.TLSSocket & { servername?: string | false };
    const peer = socket.getPeerCertificate();
    seen.push({
      clientId: peer.subjectaltname?.replace(/^URI:/, ''), serial: peer.serialNumber.toLowerCase(),
      servername: socket.servername ?? false, alpn: socket.alpnProtocol, protocol: socket.getProtocol(), headers: req.headers,
    });
    if (opts.closeEach) res.setHeader('connection', 'close');
    res.end('secure hello\n');
  });
  server.on('tlsClientError', (err) => handshakeErrors.push(err.message));
  // WebSocket-style upgrade: 101, then an echo, after recording the client certificate like a request
  server.on('upgrade', (req, socket: tls.TLSSocket, head: Buffer) => {
    seen.push({ clientId: socket.getPeerCertificate().subjectaltname?.replace(/^URI:/, ''), serial: socket.getPeerCertificate().serialNumber.toLowerCase(), servername: false, alpn: socket.alpnProtocol, protocol: socket.getProtocol(), headers: req.headers });
    socket.on('error', () => {});
    socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n');
    if (head.length > 0) socket.write(head);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port, seen, handshakeErrors,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

let dir: string;
let ca: TestCa;
let otherCa: TestCa;
let client: TestLeaf;
const ups: Record<string, TlsUpstream> = {};
let plain: TestUpstream;
/** accepts TCP and never answers the ClientHello */
let silent: Server;
const silentSockets = new Set<Socket>();
let p: StartedProxy;

const SNI = 'outbound_.8080_._.order.default.svc.cluster.local';

function mtlsCluster(name: string, port: number, identity: string | undefined): Record<string, unknown> {
  return {
    name, connectTimeoutMs: 3000,
    endpoints: [{ address: '127.0.0.1', port, metadata: identity ? { identity } : {} }],
    tls: { secret: 'user', sni: SNI },
  };
}

function bootstrap(clusters: Record<string, unknown>[]): Record<string, unknown> {
  return {
    accessLog: { format: 'json', path: '/dev/null' },
    secrets: [{ name: 'user', certChain: client.certChain, privateKey: client.privateKey, trustBundle: client.trustBundle }],
    clusters,
    routes: { virtualHosts: clusters.map((c) => ({ name: c.name, domains: [String(c.name).split('#')[2]], routes: [{ match: { prefix: '/' }, route: { cluster: c.name } }] })) },
  };
}

function stat(name: string): number {
  return (p.proxy.stats.all().find((s) => s.name === name) as { value?: number } | undefined)?.value ?? 0;
}

function logFor(pathName: string): Record<string, unknown> | undefined {
  return p.log.map((l) => JSON.parse(l) as Record<string, unknown>).reverse().find((l) => l.path === pathName);
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tls-upstream-'));
  ca = createTestCa(path.join(dir, 'ca'));
  otherCa = createTestCa(path.join(dir, 'other-ca'), 'someone-else');
  client = issueLeaf(ca, path.join(dir, 'user'), `${TD}/user`);
  ups.order = await startTlsUpstream(issueLeaf(ca, path.join(dir, 'order'), ORDER), ca.cert);
  ups.evil = await startTlsUpstream(issueLeaf(ca, path.join(dir, 'evil'), `${TD}/evil`), ca.cert);
  ups.unknown = await startTlsUpstream(issueLeaf(otherCa, path.join(dir, 'unknown'), ORDER), ca.cert);
  ups.expired = await startTlsUpstream(issueLeaf(ca, path.join(dir, 'expired'), ORDER, { expired: true }), ca.cert);
  ups.rotate = await startTlsUpstream(issueLeaf(ca, path.join(dir, 'rotate'), ORDER), ca.cert, { closeEach: true });
  ups.tls12 = await startTlsUpstream(issueLeaf(ca, path.join(dir, 'tls12'), ORDER), ca.cert, { maxVersion: 'TLSv1.2' });
  ups.switch = await startTlsUpstream(issueLeaf(ca, path.join(dir, 'switch'), ORDER), ca.cert);
  plain = await startUpstream('plain');
  silent = createServer((s) => { silentSockets.add(s); s.on('error', () => {}); s.on('close', () => silentSockets.delete(s)); });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  p = await startProxy(bootstrap([
    mtlsCluster('out#8080#order', ups.order!.port, ORDER),
    mtlsCluster('out#8080#evil', ups.evil!.port, ORDER),
    mtlsCluster('out#8080#unknown', ups.unknown!.port, ORDER),
    mtlsCluster('out#8080#expired', ups.expired!.port, ORDER),
    mtlsCluster('out#8080#rotate', ups.rotate!.port, ORDER),
    mtlsCluster('out#8080#plain', plain.port, undefined),
    mtlsCluster('out#8080#tls12', ups.tls12!.port, ORDER),
    mtlsCluster('out#8080#switch', ups.switch!.port, ORDER),
    { ...mtlsCluster('out#8080#silent', (silent.address() as AddressInfo).port, ORDER), connectTimeoutMs: 300 },
  ]));
});

afterAll(async () => {
  await p?.proxy.close();
  for (const u of Object.values(ups)) await u.close();
  await plain?.close();
  for (const s of silentSockets) s.destroy();
  await new Promise<void>((resolve) => (silent ? silent.close(() => resolve()) : resolve()));
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('outbound mTLS origination', () => {
  it('reaches an endpoint with a registered identity over mTLS, presenting the secret (SNI, ALPN, TLS 1.3), and reuses the connection', async () => {
    const agent = new (await import('node:http')).Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const r1 = await request(p.port, { host: 'order', path: '/one', headers: { 'x-mesh-debug-upstream': '1' }, agent });
      expect(r1.status).toBe(200);
      expect(r1.body).toBe('secure hello\n');
      expect(r1.headers['x-mesh-upstream-transport']).toBe(`tls TLSv1.3 peer=${ORDER}`);
      const r2 = await request(p.port, { host: 'order', path: '/two', agent });
      expect(r2.status).toBe(200);
      expect(r2.headers['x-mesh-upstream-transport']).toBeUndefined();
    } finally { agent.destroy(); }
    const seen = ups.order!.seen;
    expect(seen).toHaveLength(2);
    expect(seen[0]).toMatchObject({ clientId: `${TD}/user`, serial: client.serial, servername: SNI, alpn: 'http/1.1', protocol: 'TLSv1.3' });
    // the trace header stays between the client and this proxy
    expect(seen[0]!.headers['x-mesh-debug-upstream']).toBeUndefined();
    expect(stat('cluster.out#8080#order.ssl.handshake')).toBe(1); // the second request reused the pooled mTLS connection
    expect(stat('cluster.out#8080#order.ssl.connection_error')).toBe(0);
  });

  it('refuses a peer whose certificate names another identity: 503 UF, ssl.fail_verify_san, the reason in the access log, no request sent', async () => {
    const r = await request(p.port, { host: 'evil', path: '/evil' });
    expect(r.status).toBe(503);
    expect(r.body).toContain(`transport failure reason: TLS error: peer identity ${TD}/evil is not the registered ${ORDER}`);
    expect(stat('cluster.out#8080#evil.ssl.fail_verify_san')).toBe(1);
    expect(stat('cluster.out#8080#evil.ssl.connection_error')).toBe(1);
    expect(stat('cluster.out#8080#evil.ssl.handshake')).toBe(0);
    expect(stat('cluster.out#8080#evil.upstream_cx_connect_fail')).toBe(1);
    expect(ups.evil!.seen).toHaveLength(0);
    await waitFor(() => logFor('/evil') !== undefined, 'access log line');
    expect(logFor('/evil')).toMatchObject({ response_code: 503, response_flags: 'UF', upstream_transport_failure_reason: `TLS error: peer identity ${TD}/evil is not the registered ${ORDER}` });
  });

  it('refuses a peer certificate from an unknown CA and an expired one: ssl.fail_verify_error', async () => {
    const unknown = await request(p.port, { host: 'unknown', path: '/unknown' });
    expect(unknown.status).toBe(503);
    expect(stat('cluster.out#8080#unknown.ssl.fail_verify_error')).toBe(1);
    expect(stat('cluster.out#8080#unknown.ssl.fail_verify_san')).toBe(0);
    expect(ups.unknown!.seen).toHaveLength(0);
    const expired = await request(p.port, { host: 'expired', path: '/expired' });
    expect(expired.status).toBe(503);
    expect(expired.body).toContain('CERT_HAS_EXPIRED');
    expect(stat('cluster.out#8080#expired.ssl.fail_verify_error')).toBe(1);
    expect(ups.expired!.seen).toHaveLength(0);
    await waitFor(() => logFor('/expired') !== undefined, 'access log line');
    expect(logFor('/unknown')).toMatchObject({ response_flags: 'UF' });
    expect(String(logFor('/expired')!.upstream_transport_failure_reason)).toMatch(/^TLS error: CERT_HAS_EXPIRED/);
  });

  it('an endpoint without a registered identity stays plaintext in the same kind of cluster', async () => {
    const r = await request(p.port, { host: 'plain', path: '/plain', headers: { 'x-mesh-debug-upstream': '1' } });
    expect(r.status).toBe(200);
    expect(r.body).toBe('plain GET /plain 0\n');
    expect(r.headers['x-mesh-upstream-transport']).toBe('plaintext');
    expect(plain.requests.at(-1)!.headers['x-mesh-debug-upstream']).toBeUndefined();
    expect(stat('cluster.out#8080#plain.ssl.handshake')).toBe(0);
  });

  it('an idle plaintext connection never serves the host once it has an identity (and the identity makes it a new host)', async () => {
    const agent = new (await import('node:http')).Agent({ keepAlive: true, maxSockets: 1 });
    const before = plain.requests.length;
    try {
      expect((await request(p.port, { host: 'plain', path: '/pooled', agent })).status).toBe(200);
      expect(p.proxy.pool.idleCount()).toBeGreaterThan(0);
      // the same address and port now registered with an identity: mTLS, which this plaintext server cannot speak
      const clusters = (p.proxy.config.clusters ?? []).map((c) => (c.name === 'out#8080#plain' ? mtlsCluster('out#8080#plain', plain.port, ORDER) : c));
      p.proxy.update(bootstrap(clusters as unknown as Record<string, unknown>[]));
      const r = await request(p.port, { host: 'plain', path: '/after', agent });
      expect(r.status).toBe(503);
      expect(plain.requests.length).toBe(before + 1);
      expect(stat('cluster.out#8080#plain.ssl.connection_error')).toBe(1);
    } finally { agent.destroy(); }
  });
});

describe('handshake edges', () => {
  it('a peer that allows TLS 1.2 only is still reached (1.3 preferred, 1.2 allowed)', async () => {
    const r = await request(p.port, { host: 'tls12', path: '/v12', headers: { 'x-mesh-debug-upstream': '1' } });
    expect(r.status).toBe(200);
    expect(r.headers['x-mesh-upstream-transport']).toBe(`tls TLSv1.2 peer=${ORDER}`);
    expect(ups.tls12!.seen.at(-1)).toMatchObject({ clientId: `${TD}/user`, protocol: 'TLSv1.2' });
  });

  it('a peer that accepts TCP but never completes the handshake: the connect timeout covers it (503 UF, ssl.connection_error)', async () => {
    const r = await request(p.port, { host: 'silent', path: '/silent' });
    expect(r.status).toBe(503);
    expect(r.body).toContain('transport failure reason: TLS error: upstream connect timeout');
    expect(stat('cluster.out#8080#silent.ssl.connection_error')).toBe(1);
    expect(stat('cluster.out#8080#silent.upstream_cx_connect_fail')).toBe(1);
  });

  it('an idle mTLS connection never serves a plaintext request once the cluster stops originating TLS', async () => {
    const agent = new (await import('node:http')).Agent({ keepAlive: true, maxSockets: 1 });
    try {
      expect((await request(p.port, { host: 'switch', path: '/tls', agent })).status).toBe(200);
      expect(stat('cluster.out#8080#switch.ssl.handshake')).toBe(1);
      // same host, same identity; only the cluster's tls goes: the pooled TLS connection must not carry it
      const clusters = (p.proxy.config.clusters ?? []).map((c) => (c.name === 'out#8080#switch' ? { ...mtlsCluster('out#8080#switch', ups.switch!.port, ORDER), tls: undefined } : c));
      p.proxy.update(bootstrap(clusters as unknown as Record<string, unknown>[]));
      const r = await request(p.port, { host: 'switch', path: '/plain-now', agent });
      expect(r.status).toBe(503); // plaintext HTTP to a TLS server: no response
      expect(ups.switch!.seen).toHaveLength(1);
    } finally { agent.destroy(); }
  });
});

describe('upgrades (WebSocket) to an mTLS host', () => {
  it('go over mTLS too, presenting the secret and checking the identity', async () => {
    const before = ups.order!.seen.length;
    const text = await new Promise<string>((resolve) => {
      const s = netConnect(p.port, '127.0.0.1');
      let got = '';
      const done = setTimeout(() => { s.destroy(); resolve(got); }, 5000);
      s.setEncoding('latin1');
      s.on('connect', () => s.write('GET /ws HTTP/1.1\r\nHost: order\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'));
      s.on('data', (d: string) => {
        got += d;
        if (got.includes('\r\n\r\n') && !got.includes('ping-pong')) s.write('ping-pong');
        if (got.endsWith('ping-pong')) { clearTimeout(done); s.destroy(); resolve(got); }
      });
      s.on('error', () => {});
    });
    expect(text).toMatch(/^HTTP\/1\.1 101 /);
    expect(text.endsWith('ping-pong')).toBe(true);
    expect(ups.order!.seen.length).toBe(before + 1);
    expect(ups.order!.seen.at(-1)).toMatchObject({ clientId: `${TD}/user`, protocol: 'TLSv1.3' });
  });
});

describe('the client certificate comes from the watched secret files', () => {
  it('a renamed-over certificate is presented on the next new connection; a broken one is rejected and the last good one kept', async () => {
    expect((await request(p.port, { host: 'rotate', path: '/r1' })).status).toBe(200);
    expect(ups.rotate!.seen.at(-1)!.serial).toBe(client.serial);
    const rotated = issueLeaf(ca, path.join(dir, 'user'), `${TD}/user`);
    expect(rotated.serial).not.toBe(client.serial);
    await waitFor(() => stat('sds.user.update_success') === 1, 'sds.user.update_success 1');
    expect((await request(p.port, { host: 'rotate', path: '/r2' })).status).toBe(200);
    expect(ups.rotate!.seen.at(-1)!.serial).toBe(rotated.serial);

    // a half-written or wrong replacement: rejected, counted, the rotated certificate still in use
    const tmp = path.join(dir, 'user', '.broken');
    fs.writeFileSync(tmp, '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n');
    fs.renameSync(tmp, rotated.certChain);
    await waitFor(() => stat('sds.user.update_rejected') === 1, 'sds.user.update_rejected 1');
    expect(stat('sds.user.update_success')).toBe(1);
    expect((await request(p.port, { host: 'rotate', path: '/r3' })).status).toBe(200);
    expect(ups.rotate!.seen.at(-1)!.serial).toBe(rotated.serial);
  });
});
