// The agent's mTLS integration (issue 13) with the real proxy as its child: certificates issued by
// the built-in CA into the run dir, renewed at half their life, registered identities, the
// operator's files checked before start, and bad sources refused before anything is applied.
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { agentConfigSchema, isMeshError, parseConfig, spiffeIdOf } from '@mesh-agent/shared-config';
import { CertificateProvisioner } from '../src/certificates';
import { createRootCa, issueWorkloadCertificate, writeCaDir, writeWorkloadFiles, type CaMaterial } from '../src/pki/index';
import { startApp, startTestAgent, tempDir, type TestAgent, type TestApp } from './agent-fixture';
import { eventually, httpGet, steadyLoad } from './helpers';

const exec = promisify(execFile);
const USER_ID = 'spiffe://cluster.local/ns/default/sa/user';

/** What openssl (not our own parser) reads from a PEM certificate file. */
async function openssl(file: string): Promise<{ serial: string; san: string }> {
  const { stdout } = await exec('openssl', ['x509', '-in', file, '-noout', '-serial', '-ext', 'subjectAltName']);
  return { serial: /serial=([0-9A-F]+)/i.exec(stdout)![1]!.toUpperCase(), san: stdout };
}

const json = async (url: string) => JSON.parse((await httpGet(url)).body);
/** A counter of the proxy's /stats (Envoy's text format), 0 when absent. */
async function proxyCounter(t: TestAgent, name: string): Promise<number> {
  const { body } = await httpGet(`${t.proxyAdmin}/stats`);
  const line = body.split('\n').find((l) => l.startsWith(`${name}: `));
  return line ? Number(line.slice(name.length + 2)) : 0;
}

/** The proxy's Envoy-shaped /certs: each secret's leaf (serial in lower-case hex, as Envoy prints it) and its SPIFFE SAN. */
async function proxyLeaves(t: TestAgent): Promise<Array<{ serial: string; uri: string | undefined; days: number }>> {
  const certs = await json(`${t.proxyAdmin}/certs`);
  return certs.certificates.map((c: { cert_chain: Array<{ serial_number: string; subject_alt_names: Array<{ uri?: string }>; days_until_expiration: string | number }> }) => ({
    serial: c.cert_chain[0]!.serial_number.toUpperCase(),
    uri: c.cert_chain[0]!.subject_alt_names.find((s) => s.uri)?.uri,
    days: Number(c.cert_chain[0]!.days_until_expiration), // Envoy prints it as a string (a uint64)
  }));
}

let app: TestApp;
let ca: CaMaterial;
let caDir: string;

beforeAll(async () => {
  app = await startApp('user');
  ca = await createRootCa({ trustDomain: 'cluster.local', ttlDays: 1 });
  caDir = path.join(tempDir('mesh-agent-ca-'), 'ca');
  writeCaDir(caDir, ca);
});

afterAll(async () => {
  await app?.close();
  if (caDir) fs.rmSync(path.dirname(caDir), { recursive: true, force: true });
});

describe('built-in issuer', { timeout: 90_000 }, () => {
  let t: TestAgent;
  beforeAll(async () => {
    t = await startTestAgent({ appPort: app.port, config: { mtls: { ca: { dir: caDir }, certTtlSeconds: 10 } } });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('writes the local service its certificate before the proxy starts: SPIFFE URI SAN, key 0600, dir 0700, the proxy loaded it', async () => {
    const dir = path.join(t.dir, 'certs', 'user');
    const { san, serial } = await openssl(path.join(dir, 'cert-chain.pem'));
    expect(san).toContain(`URI:${USER_ID}`);
    expect(fs.statSync(path.join(dir, 'key.pem')).mode & 0o777).toBe(0o600);
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    expect(fs.readFileSync(path.join(dir, 'root-cert.pem'), 'utf8')).toBe(ca.rootPem);
    // the chain verifies against the root, by openssl
    await exec('openssl', ['verify', '-CAfile', path.join(dir, 'root-cert.pem'), path.join(dir, 'cert-chain.pem')]);
    expect((await proxyLeaves(t)).map(({ serial: s, uri }) => ({ serial: s, uri }))).toEqual([{ serial, uri: USER_ID }]);
    const bootstrap = await json(`${t.admin}/config/envoy`);
    expect(bootstrap.secrets).toEqual([{ name: 'user', certChain: path.join(dir, 'cert-chain.pem'), privateKey: path.join(dir, 'key.pem'), trustBundle: path.join(dir, 'root-cert.pem') }]);
    expect(bootstrap.inbound[0].tls).toEqual({ mode: 'permissive', secret: 'user' });
  });

  it('registers the instance with its SPIFFE ID and shows identities and the next renewal (no key) in /config_dump and /health', async () => {
    const health = await eventually(async () => {
      const h = await json(`${t.admin}/health`);
      return h.registry.registered.length > 0 ? h : undefined;
    }, 'the registration');
    expect(health.registry.registered[0].metadata).toMatchObject({ identity: USER_ID });
    const dump = await json(`${t.admin}/config_dump/pilot-agent`);
    expect(dump.mtls).toMatchObject({ source: 'ca', identities: { user: USER_ID }, lastRotationError: null });
    expect(Date.parse(dump.mtls.nextRotation)).toBeGreaterThan(Date.now() - 10_000);
    expect(JSON.stringify(dump)).not.toContain('PRIVATE KEY');
    expect(health.mtls.identities).toEqual({ user: USER_ID });
  });

  it('renews at half the life (certTtlSeconds 10): a new serial on disk, still 0600, loaded by the proxy', async () => {
    const file = path.join(t.dir, 'certs', 'user', 'cert-chain.pem');
    const first = (await openssl(file)).serial;
    const loads = await proxyCounter(t, 'sds.user.update_success');
    const second = await eventually(async () => {
      const { serial } = await openssl(file);
      return serial !== first ? serial : undefined;
    }, 'a renewed certificate on disk', 20_000, 200);
    expect(second).not.toBe(first);
    expect(fs.statSync(path.join(t.dir, 'certs', 'user', 'key.pem')).mode & 0o777).toBe(0o600);
    await eventually(async () => (await proxyCounter(t, 'sds.user.update_success')) > loads, 'the proxy loading the renewed certificate', 10_000);
    // the proxy serves a renewed one (by now maybe a later renewal than `second`: certificates live 10 s)
    await eventually(async () => {
      const [leaf] = await proxyLeaves(t);
      return leaf!.serial !== first && leaf!.serial === (await openssl(file)).serial;
    }, 'the renewed certificate in the proxy\'s /certs', 10_000, 200);
    expect(await proxyCounter(t, 'sds.user.update_rejected')).toBe(0);
    const dump = await json(`${t.admin}/config_dump/pilot-agent`);
    expect(dump.mtls.rotations).toBeGreaterThanOrEqual(1);
  });
});

describe('renewal under steady load', { timeout: 90_000 }, () => {
  it('loses no request: calls to an mTLS peer keep succeeding while the certificate is replaced, and new handshakes present the new one', async () => {
    // the peer requires a client certificate of the mesh and closes every connection, so each call is a new handshake
    const peerCert = await issueWorkloadCertificate(ca, { spiffeId: 'spiffe://cluster.local/ns/default/sa/order', ttlMs: 3_600_000 });
    const clientSerials = new Set<string>();
    const peer = https.createServer({ cert: peerCert.certChainPem, key: peerCert.privateKeyPem, ca: ca.rootPem, requestCert: true, rejectUnauthorized: true }, (req, res) => {
      clientSerials.add((req.socket as import('node:tls').TLSSocket).getPeerCertificate().serialNumber.toUpperCase());
      res.setHeader('connection', 'close');
      res.end('order\n');
    });
    peer.on('tlsClientError', () => undefined);
    await new Promise<void>((resolve) => peer.listen(0, '127.0.0.1', () => resolve()));
    const registry = { services: [{ name: 'order', instances: [{ id: 'order-1', address: '127.0.0.1', port: (peer.address() as AddressInfo).port, metadata: { identity: 'spiffe://cluster.local/ns/default/sa/order' } }] }] };
    const t = await startTestAgent({ appPort: app.port, registry, config: { mtls: { ca: { dir: caDir }, certTtlSeconds: 10 } } });
    try {
      const file = path.join(t.dir, 'certs', 'user', 'cert-chain.pem');
      const first = (await openssl(file)).serial;
      const load = steadyLoad(async () => {
        const res = await httpGet('http://order/', { proxy: t.proxy, timeoutMs: 5000 });
        if (res.status !== 200 || res.body !== 'order\n') throw new Error(`HTTP ${res.status} ${res.headers['x-envoy-response-flags'] ?? ''} ${res.body.slice(0, 100)}`);
      }, { workers: 4, maxCount: 20_000, maxMs: 20_000 });
      await eventually(async () => (await openssl(file)).serial !== first && clientSerials.size >= 2, 'a renewal seen by the peer', 20_000, 200);
      const { count, failures } = await load.stop();
      expect(failures).toEqual([]);
      expect(count).toBeGreaterThan(20);
      expect(clientSerials).toContain(first);
    } finally {
      await t.stop();
      await new Promise<void>((resolve) => { peer.closeAllConnections(); peer.close(() => resolve()); });
    }
  });
});

describe('a failed renewal', { timeout: 90_000 }, () => {
  it('is logged and shown in /latest_error, the old certificate keeps serving, and it is retried until the CA is back', async () => {
    const dir = path.join(tempDir('mesh-agent-ca-'), 'ca');
    writeCaDir(dir, ca);
    const t = await startTestAgent({ appPort: app.port, config: { mtls: { ca: { dir }, certTtlSeconds: 10 } } });
    try {
      const file = path.join(t.dir, 'certs', 'user', 'cert-chain.pem');
      const before = fs.readFileSync(file, 'utf8');
      const key = fs.readFileSync(path.join(dir, 'ca-key.pem'));
      fs.rmSync(path.join(dir, 'ca-key.pem'));
      const latest = await eventually(async () => {
        const e = await json(`${t.admin}/latest_error`);
        return JSON.stringify(e).includes('MESH_AGENT_CERT_ROTATION_FAILED') ? e : undefined;
      }, 'the failed renewal in /latest_error', 20_000, 200);
      expect(JSON.stringify(latest)).toContain('ca-key.pem');
      expect(fs.readFileSync(file, 'utf8')).toBe(before);
      expect(t.agent.supervisors.get('envoy')!.healthy).toBe(true);
      fs.writeFileSync(path.join(dir, 'ca-key.pem'), key, { mode: 0o600 });
      await eventually(() => fs.readFileSync(file, 'utf8') !== before, 'the renewal once the CA key is back', 20_000, 200);
      expect((await json(`${t.admin}/config_dump/pilot-agent`)).mtls.rotations).toBeGreaterThanOrEqual(1);
    } finally {
      await t.stop();
      fs.rmSync(path.dirname(dir), { recursive: true, force: true });
    }
  });
});

describe('files source', { timeout: 90_000 }, () => {
  it("checks the operator's files, registers their SPIFFE ID, points the proxy at them, and the proxy picks up a replaced file", async () => {
    const dir = tempDir('mesh-agent-files-');
    const id = 'spiffe://cluster.local/ns/default/sa/user-from-vault';
    const files = writeWorkloadFiles(path.join(dir, 'tls'), await issueWorkloadCertificate(ca, { spiffeId: id, ttlMs: 3_600_000 * 2 }));
    const mtls = { files: { certChain: files.certChain, privateKey: files.privateKey, trustBundle: files.trustBundle }, mode: 'strict' as const };
    const t = await startTestAgent({ appPort: app.port, config: { mtls } });
    try {
      const bootstrap = await json(`${t.admin}/config/envoy`);
      expect(bootstrap.secrets).toEqual([{ name: 'user', ...mtls.files }]);
      expect(bootstrap.inbound[0].tls).toEqual({ mode: 'strict', secret: 'user' });
      const registered = await eventually(async () => (await json(`${t.admin}/health`)).registry.registered[0], 'the registration');
      expect(registered.metadata.identity).toBe(id);
      const [leaf] = await proxyLeaves(t);
      expect(leaf).toMatchObject({ serial: (await openssl(files.certChain)).serial, uri: id });
      expect(leaf!.days).toBe(0); // two hours left
      const loads = await proxyCounter(t, 'sds.user.update_success');
      // the issuer (here: us) replaces the files; the proxy's watcher loads them, the agent is not involved
      writeWorkloadFiles(path.join(dir, 'tls'), await issueWorkloadCertificate(ca, { spiffeId: id, ttlMs: 3_600_000 * 2 }));
      await eventually(async () => (await proxyCounter(t, 'sds.user.update_success')) > loads, 'the proxy loading the replaced files', 15_000, 200);
      expect((await proxyLeaves(t))[0]!.serial).toBe((await openssl(files.certChain)).serial);
    } finally {
      await t.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a bad certificate source stops the start at <INIT>, before anything is applied (exit 2 naming the file)', { timeout: 60_000 }, () => {
  async function startFails(mtls: unknown, services?: unknown[]): Promise<{ code: string; exitCode: number; message: string; hint?: string }> {
    try {
      const t = await startTestAgent({ appPort: app.port, config: { mtls } as never, ...(services ? { services } : {}) });
      await t.stop();
    } catch (err) {
      if (!isMeshError(err)) throw err;
      return { code: err.code, exitCode: err.exitCode, message: err.message, hint: err.hint };
    }
    throw new Error('the agent started');
  }

  it('a missing CA dir', async () => {
    const missing = path.join(tempDir('mesh-agent-ca-'), 'nothing-here');
    const e = await startFails({ ca: { dir: missing } });
    expect(e).toMatchObject({ code: 'MESH_PKI_CA_UNREADABLE', exitCode: 2 });
    expect(e.message).toContain(`mtls.ca.dir ${missing}`);
    expect(e.message).toContain(path.join(missing, 'ca-cert.pem'));
    expect(e.hint).toContain('mesh-agent ca init');
  });

  it("files whose key is not the leaf's, a leaf without a spiffe:// SAN, an expired leaf", async () => {
    const dir = tempDir('mesh-agent-files-');
    try {
      const good = writeWorkloadFiles(path.join(dir, 'good'), await issueWorkloadCertificate(ca, { spiffeId: USER_ID, ttlMs: 3_600_000 }));
      const other = writeWorkloadFiles(path.join(dir, 'other'), await issueWorkloadCertificate(ca, { spiffeId: USER_ID, ttlMs: 3_600_000 }));
      const mismatch = await startFails({ files: { certChain: good.certChain, privateKey: other.privateKey, trustBundle: good.trustBundle } });
      expect(mismatch).toMatchObject({ code: 'MESH_AGENT_CERT_INVALID', exitCode: 2 });
      expect(mismatch.message).toContain(`mtls.files.privateKey (${other.privateKey}) does not match`);

      // a plain server certificate (DNS SAN only), made by openssl
      const noSpiffe = { certChain: path.join(dir, 'dns.pem'), privateKey: path.join(dir, 'dns-key.pem'), trustBundle: path.join(dir, 'dns.pem') };
      await exec('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=user', '-addext', 'subjectAltName=DNS:user.example', '-days', '1', '-keyout', noSpiffe.privateKey, '-out', noSpiffe.certChain]);
      expect(spiffeIdOf(new crypto.X509Certificate(fs.readFileSync(noSpiffe.certChain)).subjectAltName)).toBeUndefined();
      const e = await startFails({ files: noSpiffe });
      expect(e.message).toContain(`the leaf of mtls.files.certChain (${noSpiffe.certChain}) has no spiffe:// URI SAN (SAN: DNS:user.example)`);

      const expired = writeWorkloadFiles(path.join(dir, 'expired'), await issueWorkloadCertificate(ca, { spiffeId: USER_ID, ttlMs: 1000, notBefore: new Date(Date.now() - 120_000) }));
      expect((await startFails({ files: { certChain: expired.certChain, privateKey: expired.privateKey, trustBundle: expired.trustBundle } })).message).toContain('expired on');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the bin: exit 2 naming the file, and no bootstrap, no rule, no child', async () => {
    const dir = tempDir('mesh-agent-mtls-cli-');
    try {
      const spec = path.join(dir, 'spec.yaml');
      fs.writeFileSync(spec, stringify({ apiVersion: 'v1', kind: 'Application', spec: { services: [{ name: 'user', ports: [{ targetPort: app.port }] }] } }));
      const config = path.join(dir, 'agent.yaml');
      const bootstrap = path.join(dir, 'proxy-bootstrap.json');
      fs.writeFileSync(config, stringify({
        node: { ip: '127.0.0.1' },
        app: { specFile: spec },
        ports: { agentAdmin: 0, proxyAdmin: 0, proxyListener: 0, dns: 0, dnsAdmin: 0 },
        registry: { backend: 'file', file: { path: path.join(dir, 'registry.yaml') } },
        iptables: { enabled: false, stateFile: path.join(dir, 'iptables-state.json') },
        paths: { runDir: dir, proxyBootstrap: bootstrap, dnsConfig: path.join(dir, 'mesh-dns.json') },
        mtls: { ca: { dir: path.join(dir, 'no-ca') } },
      }));
      fs.writeFileSync(path.join(dir, 'registry.yaml'), stringify({ services: [] }));
      const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../bin/mesh-agent.js');
      const res = await exec(process.execPath, [bin, 'start', '--config', config], { timeout: 30_000 }).then(() => ({ code: 0, stderr: '' }), (err) => ({ code: err.code as number, stderr: String(err.stderr) }));
      expect(res.code).toBe(2);
      expect(res.stderr).toContain(`MESH_PKI_CA_UNREADABLE`);
      expect(res.stderr).toContain(path.join(dir, 'no-ca', 'ca-cert.pem'));
      expect(fs.existsSync(bootstrap)).toBe(false);
      expect(fs.existsSync(path.join(dir, 'children.json'))).toBe(false);
      expect(fs.existsSync(path.join(dir, 'certs'))).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("files the proxy's user cannot read (the agent as root drops the proxy to proxy.uid)", async () => {
    const dir = tempDir('mesh-agent-files-');
    try {
      const files = writeWorkloadFiles(path.join(dir, 'tls'), await issueWorkloadCertificate(ca, { spiffeId: USER_ID, ttlMs: 3_600_000 * 2 }));
      fs.chmodSync(path.join(dir, 'tls'), 0o755);
      const provisioner = new CertificateProvisioner({
        agent: parseConfig(agentConfigSchema, { mtls: { files: { certChain: files.certChain, privateKey: files.privateKey, trustBundle: files.trustBundle } } }),
        services: ['user'],
        owner: { uid: 1000, gid: 1000 },
        log: { info: () => undefined, warn: () => undefined },
        onError: () => undefined,
      });
      // key.pem is root's, mode 0600
      await expect(provisioner.prepare()).rejects.toThrow(`mtls.files.privateKey (${files.privateKey}) is not readable by the proxy's user 1000:1000 (owner 0:0, mode 600)`);
      fs.chownSync(files.privateKey, 1000, 1000);
      await provisioner.prepare();
      expect(provisioner.identityOf('user')).toBe(USER_ID);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('mtls.services naming a service that is not in spec.yaml', async () => {
    const e = await startFails({ ca: { dir: caDir }, services: { billing: { mode: 'strict' } } });
    expect(e).toMatchObject({ code: 'MESH_CONFIG_INVALID', exitCode: 2 });
    expect(e.message).toMatch(/^mtls\.services\.billing: "billing" is not a service of .*spec\.yaml$/);
  });
});
