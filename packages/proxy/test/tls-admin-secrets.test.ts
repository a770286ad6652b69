import { execFile, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProxy, type StartedProxy } from './support/proxy-harness';
import { createTestCa, issueLeaf, type TestCa, type TestLeaf } from './support/test-certs';

// The operator's views of the proxy's secrets (issue 13) over real HTTP on the admin port: /certs in
// Envoy's shape, /config_dump's SecretsConfigDump (file names, never key bytes), the expiry gauges
// (promtool-clean), and a bad secret refused at update and at start (the real bin, exit 2).

const USER = 'spiffe://cluster.local/ns/default/sa/user';
const ORDER = 'spiffe://cluster.local/ns/default/sa/order';
let dir: string;
let ca: TestCa;
let leaf: TestLeaf;
let p: StartedProxy;

function secretsConfig(l: TestLeaf, overrides: Record<string, string> = {}): Record<string, unknown>[] {
  return [{ name: 'user', certChain: l.certChain, privateKey: l.privateKey, trustBundle: l.trustBundle, ...overrides }];
}

async function admin(pathName: string): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://127.0.0.1:${p.admin}${pathName}`);
  return { status: res.status, text: await res.text() };
}

function promtool(text: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = execFile('promtool', ['check', 'metrics'], (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }));
    child.stdin!.end(text);
  });
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tls-admin-'));
  ca = createTestCa(path.join(dir, 'ca'));
  leaf = issueLeaf(ca, path.join(dir, 'user'), USER);
  p = await startProxy({
    version: 'v1', secrets: secretsConfig(leaf),
    clusters: [{
      name: 'out#8080#order', tls: { secret: 'user', sni: 'outbound_.8080_._.order.default.svc.cluster.local' },
      endpoints: [{ address: '198.18.0.10', port: 8080, metadata: { identity: ORDER } }, { address: '198.18.0.11', port: 8080 }],
    }],
  });
});

afterAll(async () => {
  await p?.proxy.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('admin views of the secrets', () => {
  it('GET /certs lists each secret in Envoy\'s shape: trust bundle as ca_cert, chain as cert_chain, SPIFFE SAN, days until expiration', async () => {
    const r = await admin('/certs');
    expect(r.status).toBe(200);
    const body = JSON.parse(r.text) as { certificates: { ca_cert: Record<string, unknown>[]; cert_chain: Record<string, unknown>[] }[] };
    expect(body.certificates).toHaveLength(1);
    const [entry] = body.certificates;
    const cert = new crypto.X509Certificate(fs.readFileSync(leaf.certChain));
    expect(entry!.cert_chain).toEqual([{
      path: leaf.certChain, serial_number: leaf.serial, subject_alt_names: [{ uri: USER }],
      days_until_expiration: '1', // issued for 2 days, a moment ago
      valid_from: `${new Date(cert.validFrom).toISOString().slice(0, 19)}Z`, expiration_time: `${new Date(cert.validTo).toISOString().slice(0, 19)}Z`,
    }]);
    expect(entry!.ca_cert).toHaveLength(1);
    expect(entry!.ca_cert[0]).toMatchObject({ path: leaf.trustBundle, subject_alt_names: [], days_until_expiration: expect.stringMatching(/^(29|30)$/) });
  });

  it('GET /config_dump shows the secret\'s files and version, never key bytes', async () => {
    const r = await admin('/config_dump');
    expect(r.status).toBe(200);
    const keyBody = fs.readFileSync(leaf.privateKey, 'utf8').split('\n')[1]!;
    expect(r.text).not.toContain('PRIVATE KEY');
    expect(r.text).not.toContain(keyBody);
    const dump = JSON.parse(r.text) as { configs: Record<string, unknown>[] };
    const secrets = dump.configs.find((c) => c['@type'] === 'type.googleapis.com/envoy.admin.v3.SecretsConfigDump') as { dynamic_active_secrets: Record<string, unknown>[] };
    expect(secrets.dynamic_active_secrets).toEqual([{
      name: 'user', version_info: '1', last_updated: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      secret: {
        '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret', name: 'user',
        tls_certificate: { certificate_chain: { filename: leaf.certChain }, private_key: { filename: leaf.privateKey } },
      },
    }]);
    const only = JSON.parse((await admin('/config_dump?resource=dynamic_active_secrets&name_regex=^user$')).text) as { configs: Record<string, unknown>[] };
    expect(only.configs).toHaveLength(1);
    expect(only.configs[0]).toMatchObject({ '@type': 'type.googleapis.com/envoy.admin.v3.SecretsConfigDump.DynamicSecret', name: 'user' });
  });

  it('expiry gauges: server.days|seconds_until_first_cert_expiring and sds.<name>.expiration_timestamp_seconds; /stats/prometheus passes promtool', async () => {
    const stats = JSON.parse((await admin('/stats?format=json')).text) as { stats: { name: string; value: number }[] };
    const value = (name: string) => stats.stats.find((s) => s.name === name)?.value;
    const notAfter = new Date(new crypto.X509Certificate(fs.readFileSync(leaf.certChain)).validTo).getTime();
    expect(value('sds.user.expiration_timestamp_seconds')).toBe(Math.floor(notAfter / 1000));
    // there before the first reload, so an alert on rejected reloads has its series
    expect(value('sds.user.update_success')).toBe(0);
    expect(value('sds.user.update_rejected')).toBe(0);
    expect(value('server.days_until_first_cert_expiring')).toBe(1); // the leaf (2 days) expires before the CA (30)
    const seconds = value('server.seconds_until_first_cert_expiring')!;
    expect(seconds).toBeGreaterThan(86_400);
    expect(seconds).toBeLessThanOrEqual(2 * 86_400);
    const prom = (await admin('/stats/prometheus')).text;
    // promtool refuses the unit "days": the same figure is there in seconds
    expect(prom).not.toContain('days_until_first_cert_expiring');
    expect(prom).toMatch(/^envoy_server_seconds_until_first_cert_expiring \d{5,6}$/m);
    expect(prom).toMatch(new RegExp(`^envoy_sds_user_expiration_timestamp_seconds ${Math.floor(notAfter / 1000)}$`, 'm'));
    expect(prom).toMatch(/^envoy_sds_user_update_rejected_total 0$/m);
    const check = await promtool(prom);
    expect(check.out).toBe('');
    expect(check.code).toBe(0);
  });

  it('an update naming an unreadable key is refused whole, naming secrets.0.privateKey; the running secret stays', async () => {
    const missing = path.join(dir, 'nowhere', 'key.pem');
    expect(() => p.proxy.update({ version: 'v2', secrets: secretsConfig(leaf, { privateKey: missing }) })).toThrow(/secrets\.0\.privateKey[\s\S]*nowhere\/key\.pem: ENOENT/);
    expect(p.proxy.configVersion).toBe('v1');
    const certs = JSON.parse((await admin('/certs')).text) as { certificates: { cert_chain: { serial_number: string }[] }[] };
    expect(certs.certificates[0]!.cert_chain[0]!.serial_number).toBe(leaf.serial);
    // a key of another certificate: refused the same way
    const other = issueLeaf(ca, path.join(dir, 'other'), USER);
    expect(() => p.proxy.update({ version: 'v3', secrets: secretsConfig(leaf, { privateKey: other.privateKey }) })).toThrow(/secrets\.0\.privateKey[\s\S]*is not the key of the first certificate/);
    expect(p.proxy.configVersion).toBe('v1');
  });
});

describe('clusters originating mTLS in /config_dump', () => {
  it('show Istio\'s transport socket matches (secret, SNI, the identities) and which endpoints get TLS', async () => {
    const dump = JSON.parse((await admin('/config_dump?resource=static_clusters')).text) as { configs: { cluster: Record<string, any> }[] };
    const cluster = dump.configs.find((c) => c.cluster.name === 'out#8080#order')!.cluster;
    const [tls, raw] = cluster.transport_socket_matches;
    expect(tls).toMatchObject({
      name: 'tlsMode-istio', match: { tlsMode: 'istio' },
      transport_socket: { name: 'envoy.transport_sockets.tls', typed_config: {
        sni: 'outbound_.8080_._.order.default.svc.cluster.local',
        common_tls_context: {
          alpn_protocols: ['http/1.1'], tls_certificate_sds_secret_configs: [{ name: 'user' }],
          combined_validation_context: { default_validation_context: { match_subject_alt_names: [{ exact: ORDER }] } },
        },
      } },
    });
    expect(raw).toMatchObject({ name: 'tlsMode-disabled', match: {}, transport_socket: { name: 'envoy.transport_sockets.raw_buffer' } });
    const [withId, withoutId] = cluster.load_assignment.endpoints[0].lb_endpoints;
    expect(withId.metadata).toEqual({ filter_metadata: { 'envoy.transport_socket_match': { tlsMode: 'istio' }, 'mesh-agent': { identity: ORDER } } });
    expect(withoutId.metadata).toBeUndefined();
  });
});

describe('mesh-proxy bin', () => {
  it('exits 2 naming secrets.0.privateKey when the bootstrap\'s key cannot be read', async () => {
    const file = path.join(dir, 'bootstrap.yaml');
    fs.writeFileSync(file, [
      'admin: { address: 127.0.0.1, port: 0 }',
      'listener: { address: 127.0.0.1, port: 0 }',
      'secrets:',
      '  - name: user',
      `    certChain: ${leaf.certChain}`,
      `    privateKey: ${path.join(dir, 'missing-key.pem')}`,
      `    trustBundle: ${leaf.trustBundle}`,
      '',
    ].join('\n'));
    const bin = path.resolve(__dirname, '..', 'bin', 'mesh-proxy.js');
    const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [bin, '--config', file], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
      child.on('exit', (code) => resolve({ code: code ?? 1, stderr }));
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('MESH_PROXY_SECRET_INVALID');
    expect(r.stderr).toContain('secrets.0.privateKey');
    expect(r.stderr).toContain('missing-key.pem: ENOENT');
  });
});
