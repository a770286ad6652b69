// The built-in issuer checked by outside tools: openssl verify/x509/s_client and a real TLS handshake.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spiffeIdOf } from '@mesh-agent/shared-config';
import { createIntermediateCa, createRootCa, issueWorkloadCertificate, loadCaDir, validateCaMaterial, writeCaDir, writeWorkloadFiles, type CaMaterial } from '../src/pki/index';
import { tempDir } from './agent-fixture';

const ORDER = 'spiffe://cluster.local/ns/default/sa/order';
const USER = 'spiffe://cluster.local/ns/default/sa/user';
const HOUR = 3_600_000;

function openssl(args: string[], input?: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = execFile('openssl', args, { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` });
    });
    child.stdin?.end(input ?? '');
  });
}

const dirs: string[] = [];
function scratch(): string {
  const dir = tempDir('mesh-agent-pki-');
  dirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

function verify(files: { certChain: string; trustBundle: string }): Promise<{ code: number; out: string }> {
  return openssl(['verify', '-CAfile', files.trustBundle, '-untrusted', files.certChain, files.certChain]);
}

function mode(file: string): number {
  return fs.statSync(file).mode & 0o777;
}

describe('pki: built-in issuer', { timeout: 60_000 }, () => {
  let root: CaMaterial;
  let hostCa: CaMaterial;
  beforeAll(async () => {
    root = await createRootCa({ trustDomain: 'cluster.local' });
    hostCa = await createIntermediateCa(root, { name: 'host-a' });
  });

  it('issues a leaf from the root that openssl verifies, with the SPIFFE URI SAN only, EKU server+client, CA:FALSE, P-256', async () => {
    const leaf = await issueWorkloadCertificate(root, { spiffeId: ORDER, ttlMs: 24 * HOUR });
    const files = writeWorkloadFiles(path.join(scratch(), 'order'), leaf);
    const res = await verify(files);
    expect(res.out).toContain(': OK');
    expect(res.code).toBe(0);

    const text = await openssl(['x509', '-noout', '-text', '-in', files.certChain]);
    expect(text.out).toMatch(/X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/default\/sa\/order\s/);
    expect(text.out).toMatch(/X509v3 Extended Key Usage:\s+TLS Web Server Authentication, TLS Web Client Authentication/);
    expect(text.out).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
    expect(text.out).toMatch(/X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment/);
    expect(text.out).toContain('ASN1 OID: prime256v1');
    expect(text.out).toContain('Signature Algorithm: ecdsa-with-SHA256');
    expect(text.out).toContain('X509v3 Subject Key Identifier');
    expect(text.out).toContain('X509v3 Authority Key Identifier');
    expect(text.out).toMatch(/Subject: ?\n/);
    // 24 h, backdated 5 min for clock skew
    expect(leaf.notAfter.getTime() - leaf.notBefore.getTime()).toBe(24 * HOUR + 5 * 60_000);
    expect(leaf.notBefore.getTime()).toBeLessThan(Date.now() - 4 * 60_000);
    // issued by the root itself: leaf + root
    expect(leaf.certChainPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(new (await import('node:crypto')).X509Certificate(fs.readFileSync(files.certChain)).serialNumber.toLowerCase()).toBe(leaf.serialNumber.toLowerCase());
  });

  it('issues through a per-host intermediate: chain leaf + intermediate (no root), openssl verifies against the root only', async () => {
    expect(hostCa.chainPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(hostCa.rootPem).toBe(root.rootPem);
    const caText = await openssl(['x509', '-noout', '-text'], hostCa.certPem);
    expect(caText.out).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(caText.out).toMatch(/Subject: O ?= ?cluster\.local, CN ?= ?host-a/);

    const leaf = await issueWorkloadCertificate(hostCa, { spiffeId: USER, ttlMs: HOUR });
    expect(leaf.certChainPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(leaf.certChainPem).not.toContain(root.certPem.trim());
    const files = writeWorkloadFiles(path.join(scratch(), 'user'), leaf);
    const res = await verify(files);
    expect(res.code).toBe(0);
    // without the intermediate openssl cannot build the path: the chain file is what makes it verify
    const leafOnly = path.join(files.dir, 'leaf.pem');
    fs.writeFileSync(leafOnly, leaf.certChainPem.split(/(?<=-----END CERTIFICATE-----\n)/)[0]!);
    const broken = await openssl(['verify', '-CAfile', files.trustBundle, leafOnly]);
    expect(broken.code).not.toBe(0);
  });

  it('a real mTLS handshake: node server requiring client certs, openssl s_client presenting an issued chain', async () => {
    const server = await issueWorkloadCertificate(hostCa, { spiffeId: ORDER, ttlMs: HOUR });
    const clientCa = await createIntermediateCa(root, { name: 'host-b' });
    const client = writeWorkloadFiles(path.join(scratch(), 'client'), await issueWorkloadCertificate(clientCa, { spiffeId: USER, ttlMs: HOUR }));
    const peers: Array<string | undefined> = [];
    const srv = tls.createServer({ cert: server.certChainPem, key: server.privateKeyPem, ca: server.trustBundlePem, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' }, (socket) => {
      peers.push(spiffeIdOf(socket.getPeerCertificate().subjectaltname));
      socket.end('hello from order\n');
    });
    const refusals: string[] = [];
    srv.on('tlsClientError', (err) => refusals.push(`${String((err as NodeJS.ErrnoException).code)} ${err.message}`));
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const port = (srv.address() as { port: number }).port;
    try {
      const ok = await openssl(['s_client', '-connect', `127.0.0.1:${port}`, '-cert', client.certChain, '-cert_chain', client.certChain, '-key', client.privateKey, '-CAfile', client.trustBundle, '-verify_return_error', '-ign_eof']);
      expect(ok.out).toContain('hello from order');
      expect(ok.out).toContain('Verify return code: 0 (ok)');
      expect(ok.out).toMatch(/New, TLSv1\.3, Cipher is/);
      expect(peers).toEqual([USER]);

      // a client whose certificate comes from another root is refused by the server
      const otherRoot = await createRootCa({ trustDomain: 'cluster.local' });
      const stranger = writeWorkloadFiles(path.join(scratch(), 'stranger'), await issueWorkloadCertificate(otherRoot, { spiffeId: USER, ttlMs: HOUR }));
      const refused = await openssl(['s_client', '-connect', `127.0.0.1:${port}`, '-cert', stranger.certChain, '-key', stranger.privateKey, '-CAfile', client.trustBundle, '-ign_eof']);
      expect(refused.out).not.toContain('hello from order');
      await expect.poll(() => refusals.length).toBe(1);
      // the same from a node client (the reason itself is asserted with openssl verify below)
      const nodeClient = tls.connect({ host: '127.0.0.1', port, cert: fs.readFileSync(stranger.certChain), key: fs.readFileSync(stranger.privateKey), ca: root.rootPem, checkServerIdentity: () => undefined });
      const clientEnd = await new Promise<string>((resolve) => {
        let got = '';
        nodeClient.on('data', (chunk: Buffer) => (got += chunk.toString()));
        nodeClient.on('error', (err) => resolve(`error ${err.message}`));
        nodeClient.on('close', () => resolve(got));
      });
      expect(clientEnd).not.toContain('hello from order');
      await expect.poll(() => refusals.length).toBe(2);
      expect(peers).toEqual([USER]);
      expect(peers).toEqual([USER]);
    } finally {
      await new Promise((resolve) => srv.close(resolve));
    }
  });

  it('a leaf from another root fails verification; an expired leaf fails verification', async () => {
    const otherRoot = await createRootCa({ trustDomain: 'cluster.local' });
    const foreign = await issueWorkloadCertificate(otherRoot, { spiffeId: ORDER, ttlMs: HOUR });
    const dir = scratch();
    const foreignChain = path.join(dir, 'foreign.pem');
    fs.writeFileSync(foreignChain, foreign.certChainPem.split(/(?<=-----END CERTIFICATE-----\n)/)[0]!);
    const ourRoot = path.join(dir, 'root.pem');
    fs.writeFileSync(ourRoot, root.rootPem);
    const bad = await openssl(['verify', '-CAfile', ourRoot, foreignChain]);
    expect(bad.code).not.toBe(0);
    expect(bad.out).toContain('unable to get local issuer certificate');

    const expired = await issueWorkloadCertificate(hostCa, { spiffeId: ORDER, ttlMs: HOUR, notBefore: new Date(Date.now() - 2 * HOUR) });
    expect(expired.notAfter.getTime()).toBeLessThan(Date.now());
    const files = writeWorkloadFiles(path.join(dir, 'expired'), expired);
    const res = await verify(files);
    expect(res.code).not.toBe(0);
    expect(res.out).toContain('certificate has expired');
  });

  it('every issuance has a fresh key and a random positive 128-bit serial', async () => {
    const a = await issueWorkloadCertificate(hostCa, { spiffeId: ORDER, ttlMs: HOUR });
    const b = await issueWorkloadCertificate(hostCa, { spiffeId: ORDER, ttlMs: HOUR });
    expect(a.privateKeyPem).not.toBe(b.privateKeyPem);
    expect(a.serialNumber).not.toBe(b.serialNumber);
    for (const serial of [a.serialNumber, b.serialNumber]) {
      expect(serial).toMatch(/^[0-9a-f]{32}$/i);
      expect(Number.parseInt(serial.slice(0, 1), 16)).toBeLessThan(8);
    }
  });

  it('caps a leaf at its issuer\'s life and refuses a bad SPIFFE ID or lifetime with a clear error', async () => {
    const leaf = await issueWorkloadCertificate(hostCa, { spiffeId: ORDER, ttlMs: 365 * 24 * HOUR });
    expect(leaf.notAfter.getTime()).toBeLessThanOrEqual(validateCaMaterial(hostCa).notAfter.getTime());
    await expect(issueWorkloadCertificate(hostCa, { spiffeId: 'https://order', ttlMs: HOUR })).rejects.toMatchObject({ code: 'MESH_PKI_OPTION_INVALID', message: expect.stringContaining('"https://order" is not a SPIFFE ID') });
    await expect(issueWorkloadCertificate(hostCa, { spiffeId: ORDER, ttlMs: 0 })).rejects.toMatchObject({ code: 'MESH_PKI_OPTION_INVALID' });
    await expect(createRootCa({ trustDomain: 'Bad Domain' })).rejects.toMatchObject({ code: 'MESH_PKI_OPTION_INVALID' });
  });
});

describe('pki: files', { timeout: 60_000 }, () => {
  it('writes workload files with Istio names: dir 0700, key.pem 0600, chowned to the proxy user, no temp files left', async () => {
    const root = await createRootCa({ trustDomain: 'cluster.local' });
    const cert = await issueWorkloadCertificate(root, { spiffeId: ORDER, ttlMs: HOUR });
    const dir = path.join(scratch(), 'certs', 'order');
    const asRoot = process.getuid?.() === 0;
    const owner = asRoot ? { uid: 65534, gid: 65534 } : {};
    const files = writeWorkloadFiles(dir, cert, owner);
    expect(files).toEqual({ dir, certChain: path.join(dir, 'cert-chain.pem'), privateKey: path.join(dir, 'key.pem'), trustBundle: path.join(dir, 'root-cert.pem') });
    expect(mode(dir)).toBe(0o700);
    expect(mode(files.privateKey)).toBe(0o600);
    expect(mode(files.certChain)).toBe(0o644);
    expect(mode(files.trustBundle)).toBe(0o644);
    if (asRoot) {
      for (const file of [dir, files.privateKey, files.certChain, files.trustBundle]) expect(fs.statSync(file).uid).toBe(65534);
    }
    expect(fs.readdirSync(dir).sort()).toEqual(['cert-chain.pem', 'key.pem', 'root-cert.pem']);
    expect(fs.readFileSync(files.privateKey, 'utf8')).toBe(cert.privateKeyPem);
    // rotation: written again over the old files, still 0600, the new content
    const next = await issueWorkloadCertificate(root, { spiffeId: ORDER, ttlMs: HOUR });
    writeWorkloadFiles(dir, next, owner);
    expect(fs.readFileSync(files.privateKey, 'utf8')).toBe(next.privateKeyPem);
    expect(mode(files.privateKey)).toBe(0o600);
    expect(fs.readdirSync(dir)).toHaveLength(3);
  });

  it('writes and loads a CA dir (ca-key.pem 0600, dir 0700) and names the file and the fix when it is wrong', async () => {
    const root = await createRootCa({ trustDomain: 'cluster.local' });
    const host = await createIntermediateCa(root, { name: 'host-a' });
    const dir = path.join(scratch(), 'ca');
    const files = writeCaDir(dir, host);
    expect(mode(dir)).toBe(0o700);
    expect(mode(files.key)).toBe(0o600);
    expect(fs.readdirSync(dir).sort()).toEqual(['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem']);
    expect(await loadCaDir(dir)).toEqual(host);

    await expect(loadCaDir(path.join(dir, 'none'))).rejects.toMatchObject({ code: 'MESH_PKI_CA_UNREADABLE', exitCode: 2, message: expect.stringContaining(`${path.join(dir, 'none', 'ca-cert.pem')}: no such file`), hint: expect.stringContaining('mesh-agent ca init') });

    const other = await createIntermediateCa(root, { name: 'host-b' });
    fs.writeFileSync(files.key, other.keyPem);
    await expect(loadCaDir(dir)).rejects.toMatchObject({ code: 'MESH_PKI_CA_INVALID', message: `the key in ${files.key} does not match the certificate in ${files.cert}` });

    const leaf = await issueWorkloadCertificate(root, { spiffeId: ORDER, ttlMs: HOUR });
    writeCaDir(dir, { certPem: leaf.certChainPem.split(/(?<=-----END CERTIFICATE-----\n)/)[0]!, keyPem: leaf.privateKeyPem, chainPem: leaf.certChainPem, rootPem: root.rootPem });
    await expect(loadCaDir(dir)).rejects.toMatchObject({ code: 'MESH_PKI_CA_INVALID', message: `${files.cert} is not a CA certificate (basicConstraints CA:TRUE is missing)` });

    const strangerRoot = await createRootCa({ trustDomain: 'cluster.local' });
    writeCaDir(dir, { ...host, rootPem: strangerRoot.rootPem });
    await expect(loadCaDir(dir)).rejects.toMatchObject({ code: 'MESH_PKI_CA_INVALID', message: expect.stringContaining(`${files.cert} does not chain to ${files.root}`) });

    writeCaDir(dir, { ...host, chainPem: other.certPem });
    await expect(loadCaDir(dir)).rejects.toMatchObject({ code: 'MESH_PKI_CA_INVALID', message: `${files.chain} does not start with the certificate in ${files.cert}` });

    expect(() => validateCaMaterial(host, undefined, new Date(Date.now() + 31 * 24 * HOUR))).toThrow(/ca-cert\.pem \(O=cluster\.local, CN=host-a\) expired on/);
  });

  it('accepts a root-cert.pem with two roots (root rotation): old and new host CAs load, their leaves verify against the one bundle', async () => {
    const oldRoot = await createRootCa({ trustDomain: 'cluster.local', commonName: 'old root' });
    const newRoot = await createRootCa({ trustDomain: 'cluster.local', commonName: 'new root' });
    const bundle = `${oldRoot.rootPem}${newRoot.rootPem}`;
    const dir = scratch();
    const hosts = [await createIntermediateCa(oldRoot, { name: 'host-a' }), await createIntermediateCa(newRoot, { name: 'host-b' })];
    for (const [i, host] of hosts.entries()) {
      writeCaDir(path.join(dir, `ca-${i}`), { ...host, rootPem: bundle });
      const loaded = await loadCaDir(path.join(dir, `ca-${i}`));
      const leaf = await issueWorkloadCertificate(loaded, { spiffeId: ORDER, ttlMs: HOUR });
      expect(leaf.trustBundlePem).toBe(bundle);
      const files = writeWorkloadFiles(path.join(dir, `leaf-${i}`), leaf);
      expect((await verify(files)).code).toBe(0);
    }
  });
});
