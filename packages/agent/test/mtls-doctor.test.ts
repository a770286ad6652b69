// doctor's `certificates` and `peer-identity` hops and trace's `tls` hop (issue 13), against a real
// agent and proxy and real TLS peers: one presenting the identity it registered, one presenting
// another identity, one from another mesh root, and a plaintext one.
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { doctorChecks } from '../src/diagnostics/doctor';
import { traceRequest } from '../src/diagnostics/trace';
import { createRootCa, issueWorkloadCertificate, writeCaDir, type CaMaterial } from '../src/pki/index';
import { startApp, startTestAgent, tempDir, type TestAgent, type TestApp } from './agent-fixture';

const id = (sa: string) => `spiffe://cluster.local/ns/default/sa/${sa}`;

/** An mTLS peer as a sidecar terminates it: client certificate required, chained to `ca`'s root. */
async function tlsPeer(name: string, ca: CaMaterial, presents: string, trustRoot: string): Promise<{ port: number; close(): Promise<void> }> {
  const cert = await issueWorkloadCertificate(ca, { spiffeId: presents, ttlMs: 3_600_000 });
  const server = https.createServer({ cert: cert.certChainPem, key: cert.privateKeyPem, ca: trustRoot, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' }, (_req, res) => res.end(`${name}\n`));
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }) };
}

let user: TestApp;
let plain: http.Server;
let peers: Array<{ close(): Promise<void> }> = [];
let t: TestAgent;
let caDir: string;

beforeAll(async () => {
  user = await startApp('user');
  const ca = await createRootCa({ trustDomain: 'cluster.local', ttlDays: 1 });
  const other = await createRootCa({ trustDomain: 'cluster.local', ttlDays: 1, commonName: 'another mesh root' });
  caDir = path.join(tempDir('mesh-agent-ca-'), 'ca');
  writeCaDir(caDir, ca);
  const order = await tlsPeer('order', ca, id('order'), ca.rootPem);
  const pay = await tlsPeer('pay', ca, id('evil'), ca.rootPem);
  const shop = await tlsPeer('shop', other, id('shop'), ca.rootPem);
  peers = [order, pay, shop];
  plain = http.createServer((_req, res) => res.end('legacy\n'));
  await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', () => resolve()));
  const instance = (name: string, port: number, identity?: string) => ({ name, instances: [{ id: `${name}-1`, address: '127.0.0.1', port, metadata: identity ? { identity } : {} }] });
  t = await startTestAgent({
    appPort: user.port,
    registry: { services: [instance('order', order.port, id('order')), instance('pay', pay.port, id('pay')), instance('shop', shop.port, id('shop')), instance('legacy', (plain.address() as AddressInfo).port)] },
    config: { mtls: { ca: { dir: caDir } } },
  });
}, 60_000);

afterAll(async () => {
  await t?.stop();
  await Promise.all(peers.map((p) => p.close()));
  plain?.close();
  await user?.close();
  if (caDir) fs.rmSync(path.dirname(caDir), { recursive: true, force: true });
});

describe('doctor and trace with mTLS', { timeout: 60_000 }, () => {
  it('peer-identity: a real handshake with the node\'s certificate to each peer; a wrong identity and an unknown CA FAIL, naming both sides', async () => {
    const report = await doctorChecks(t.admin);
    const peer = report.checks.find((c) => c.hop === 'peer-identity')!;
    expect(peer.status).toBe('FAIL');
    const lines = peer.evidence.split('; ');
    expect(lines.find((l) => l.startsWith('order '))).toMatch(new RegExp(`^order 127\\.0\\.0\\.1:\\d+: presented ${id('order')} as registered \\(TLSv1\\.[23]\\)$`));
    expect(lines.find((l) => l.startsWith('pay '))).toMatch(new RegExp(`: presented ${id('evil')}, registered ${id('pay')}$`));
    expect(lines.find((l) => l.startsWith('shop '))).toMatch(/: handshake failed: .*(certificate|verify)/i);
    // legacy registered no identity: not handshaken
    expect(peer.evidence).not.toContain('legacy');
    expect(peer.fix).toContain('ssl.fail_verify_san');
  });

  it('certificates: the local service\'s SPIFFE ID, days left, the chain verified to the root, served by the proxy', async () => {
    const report = await doctorChecks(t.admin);
    const certs = report.checks.find((c) => c.hop === 'certificates')!;
    expect(certs.status).toBe('OK');
    expect(certs.evidence).toMatch(new RegExp(`^user: ${id('user')}, serial [0-9a-f]+, 0 day\\(s\\) left|^user: ${id('user')}, serial [0-9a-f]+, \\d+ min left`));
    expect(certs.evidence).toContain('chain verifies to O=cluster.local, CN=cluster.local mesh root CA');
    expect(certs.evidence).toContain('served by the proxy');
  });

  it('trace: a tls hop with the peer identity the proxy verified, and plaintext to a peer without identity', async () => {
    const tls = await traceRequest('http://order/', t.admin, { via: 'proxy' });
    expect(tls.ok).toBe(true);
    expect(tls.hops.map((h) => h.hop)).toEqual(['dns', 'listener', 'route', 'endpoint', 'tls', 'upstream']);
    expect(tls.hops.find((h) => h.hop === 'tls')!.detail).toMatch(new RegExp(`^mTLS TLSv1\\.[23], peer identity ${id('order')} `));
    const legacy = await traceRequest('http://legacy/', t.admin, { via: 'proxy' });
    expect(legacy.ok).toBe(true);
    expect(legacy.hops.find((h) => h.hop === 'tls')!.detail).toMatch(/^plaintext: the endpoint registered no identity/);
    // the proxy refuses the impostor: 503, counted as a wrong peer identity
    const evil = await traceRequest('http://pay/', t.admin, { via: 'proxy' });
    expect(evil.ok).toBe(false);
    expect(evil.status).toBe(503);
    const stats = await new Promise<string>((resolve, reject) => http.get(`${t.proxyAdmin}/stats`, (res) => { let b = ''; res.on('data', (d) => (b += d)); res.on('end', () => resolve(b)); }).on('error', reject));
    expect(stats).toMatch(/^cluster\.out#\d+#pay\.ssl\.fail_verify_san: [1-9]/m);
  });

  it('certificates FAILs when the chain on disk no longer verifies against the trust bundle', async () => {
    const other = await createRootCa({ trustDomain: 'cluster.local', ttlDays: 1, commonName: 'a root nobody uses' });
    fs.writeFileSync(path.join(t.dir, 'certs', 'user', 'root-cert.pem'), other.rootPem);
    const report = await doctorChecks(t.admin);
    const certs = report.checks.find((c) => c.hop === 'certificates')!;
    expect(certs.status).toBe('FAIL');
    expect(certs.evidence).toContain(`user: ${path.join(t.dir, 'certs', 'user', 'cert-chain.pem')} does not verify against ${path.join(t.dir, 'certs', 'user', 'root-cert.pem')}`);
    expect(report.ok).toBe(false);
  });
});
