// Issue 13: mTLS between sidecars across hosts, with the real capture path. A (`user`, permissive,
// built-in issuer) calls `order`, served by B (strict, built-in issuer, short-lived certificates,
// an allow list naming `user`) and B2 (strict, certificates from files an "external issuer" writes).
// Every refusal is made from outside the mesh (the infra namespace) with real openssl and curl.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chownSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { preflight } from './support/preflight.js';
import { delay, nsArgv, nsRun, run, waitFor, withLog } from './support/exec.js';
import { createWorld, hostRules, APP_PORT, type World } from './support/world.js';
import { APP_USER, PROXY_USER } from './support/infra.js';
import { admin, adminJson, appGet, AGENT_BIN, clusterStat, escapeStat, listenerStat, mesh, startSidecar, statSum, type Role, type Sidecar } from './support/mesh.js';
import { parseProgress, parseSummary, writeLoadScript } from './support/load.js';
import { issueWorkloadCertificate, loadCaDir, writeWorkloadFiles } from '../../packages/agent/src/pki/index.js';

const pre = preflight();

const PROXY_ADMIN = 15000;
const TRUST_DOMAIN = 'cluster.local';
const ORDER_OUT = `out#${APP_PORT}#order`;
const id = (service: string) => `spiffe://${TRUST_DOMAIN}/ns/default/sa/${service}`;
const ORDER_SNI = `outbound_.${APP_PORT}_._.order.default.svc.cluster.local`;
const RBAC_PREFIX = `http.inbound_0.0.0.0_${APP_PORT}.rbac`;



interface CertDetails { serial_number: string; subject_alt_names: Array<{ uri?: string }>; days_until_expiration: string | number }
interface CertsDump { certificates: Array<{ ca_cert: CertDetails[]; cert_chain: CertDetails[] }> }

/** The serial of the proxy's certificate carrying `identity`, from /certs. */
async function servedSerial(ns: string, identity: string): Promise<string | undefined> {
  const dump = await adminJson<CertsDump>(ns, PROXY_ADMIN, '/certs');
  for (const entry of dump.certificates) {
    const leaf = entry.cert_chain[0];
    if (leaf?.subject_alt_names.some((san) => san.uri === identity)) return leaf.serial_number.toLowerCase();
  }
  return undefined;
}

interface Handshake { ok: boolean; output: string; serial?: string; sans?: string; response: string }

/** A real `openssl s_client` handshake (and one HTTP request) from the infra namespace, outside the mesh. */
async function sClient(world: World, target: string, client: { cert: string; key: string } | undefined, caFile: string, servername = ORDER_SNI): Promise<Handshake> {
  const args = ['s_client', '-connect', target, '-servername', servername, '-CAfile', caFile, '-showcerts', '-verify_return_error', '-ign_eof'];
  // -cert sends the leaf only: -cert_chain adds the host CA that issued it (the peer trusts only the root)
  if (client) args.push('-cert', client.cert, '-cert_chain', client.cert, '-key', client.key);
  const request = 'GET /over-mtls HTTP/1.1\r\nHost: order\r\nConnection: close\r\n\r\n';
  const res = await nsRun(world.host('infra').ns, 'openssl', args, { input: request, allowFail: true, timeoutMs: 15_000 });
  const output = `${res.stdout}\n${res.stderr}`;
  const leafPem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(res.stdout)?.[0];
  let serial: string | undefined;
  let sans: string | undefined;
  if (leafPem) {
    const text = await run('openssl', ['x509', '-noout', '-serial', '-ext', 'subjectAltName'], { input: leafPem, allowFail: true });
    serial = /serial=([0-9A-F]+)/i.exec(text.stdout)?.[1]?.toLowerCase();
    sans = text.stdout;
  }
  const response = res.stdout.slice(res.stdout.indexOf('HTTP/1.1') >= 0 ? res.stdout.indexOf('HTTP/1.1') : res.stdout.length);
  return { ok: /Verify return code: 0 \(ok\)/.test(output), output, serial, sans, response };
}

/** curl over TLS from the infra namespace presenting a client certificate (server name not checked: the peer's SAN is a SPIFFE URI). */
function curlTls(world: World, url: string, client?: { cert: string; key: string }): Promise<{ code: number; stdout: string }> {
  const args = ['-sk', '--max-time', '10', '-o', '-', '-w', '\n%{http_code}', ...(client ? ['--cert', client.cert, '--key', client.key] : []), url];
  return nsRun(world.host('infra').ns, 'curl', args, { allowFail: true }).then((r) => {
    const cut = r.stdout.lastIndexOf('\n');
    return { code: Number(r.stdout.slice(cut + 1)) || 0, stdout: r.stdout.slice(0, cut) };
  });
}

describe.skipIf(!pre.ok)('e2e: mTLS between sidecars (issue 13)', () => {
  let world: World;
  const sidecars: Partial<Record<Role, Sidecar>> = {};
  let pki: string;
  let rootCert: string;
  const certs: Record<string, { cert: string; key: string }> = {};
  let b2Certs: string;

  const ca = (args: string[]) => run(process.execPath, [AGENT_BIN, 'ca', ...args], { allowFail: true, timeoutMs: 60_000 });
  const ok = async (args: string[]) => {
    const res = await ca(args);
    expect(res.code, `mesh-agent ca ${args.join(' ')}\n${res.stdout}${res.stderr}`).toBe(0);
    return res;
  };
  /** A client certificate for `service` from the ca dir `dir`, as files for openssl/curl. */
  const clientCert = async (name: string, dir: string, service: string) => {
    const out = join(pki, `client-${name}`);
    await ok(['issue', '--ca-dir', dir, '--service', service, '--trust-domain', TRUST_DOMAIN, '--out', out]);
    certs[name] = { cert: join(out, 'cert-chain.pem'), key: join(out, 'key.pem') };
  };
  const mtlsConfig = (caDir: string | undefined, lines: string[]) => [
    'mtls:',
    `  trustDomain: ${TRUST_DOMAIN}`,
    ...(caDir ? ['  ca:', `    dir: ${caDir}`] : []),
    ...lines,
  ];

  beforeAll(async () => {
    world = await createWorld();
    pki = join(world.dir, 'pki');
    mkdirSync(pki, { recursive: true });
    // The operator's root stays here (the test's "offline" machine); each host gets its own intermediate.
    await ok(['init', '--dir', join(pki, 'root'), '--trust-domain', TRUST_DOMAIN]);
    for (const host of ['a', 'b', 'b2']) await ok(['intermediate', '--root-dir', join(pki, 'root'), '--dir', join(pki, `ca-${host}`), '--name', `host-${host}`]);
    rootCert = join(pki, 'root', 'root-cert.pem');
    // B2's certificates come from "an external issuer" (files source): issued here, readable by the proxy user only.
    b2Certs = join(pki, 'b2-files');
    await ok(['issue', '--ca-dir', join(pki, 'ca-b2'), '--service', 'order', '--trust-domain', TRUST_DOMAIN, '--out', b2Certs]);
    for (const f of ['', 'cert-chain.pem', 'key.pem', 'root-cert.pem']) chownSync(join(b2Certs, f), PROXY_USER.uid, PROXY_USER.gid);
    // Callers from outside the mesh: the allowed identity, one the allow list does not name, one from another root.
    await clientCert('user', join(pki, 'ca-a'), 'user');
    await clientCert('evil', join(pki, 'ca-a'), 'evil');
    await ok(['init', '--dir', join(pki, 'other-root'), '--trust-domain', TRUST_DOMAIN]);
    await clientCert('foreign', join(pki, 'other-root'), 'user');
    // An expired certificate of the right CA: issued two days ago for one day.
    const expired = await issueWorkloadCertificate(await loadCaDir(join(pki, 'ca-a')), { spiffeId: id('user'), ttlMs: 86_400_000, notBefore: new Date(Date.now() - 2 * 86_400_000) });
    const expiredDir = join(pki, 'client-expired');
    await writeWorkloadFiles(expiredDir, expired);
    certs.expired = { cert: join(expiredDir, 'cert-chain.pem'), key: join(expiredDir, 'key.pem') };

    sidecars.b = await startSidecar(world, 'b', {
      extraConfig: mtlsConfig(join(pki, 'ca-b'), [
        '  mode: strict',
        // short-lived so that the test sees rotations (at about half the life)
        '  certTtlSeconds: 20',
        '  services:',
        '    order:',
        '      allow:',
        `        - principals: [${id('user')}]`,
      ]),
    });
    sidecars.b2 = await startSidecar(world, 'b2', {
      extraConfig: mtlsConfig(undefined, [
        '  mode: strict',
        '  files:',
        `    certChain: ${join(b2Certs, 'cert-chain.pem')}`,
        `    privateKey: ${join(b2Certs, 'key.pem')}`,
        `    trustBundle: ${join(b2Certs, 'root-cert.pem')}`,
      ]),
    });
    sidecars.a = await startSidecar(world, 'a', { extraConfig: mtlsConfig(join(pki, 'ca-a'), ['  mode: permissive']) });
    // A sees both order instances with their identities before the tests start.
    await waitFor('A to know both order instances', async () => {
      const { stdout } = await admin(world.host('a').ns, PROXY_ADMIN, '/clusters');
      return stdout.includes(`${ORDER_OUT}::${world.host('b').address}:${APP_PORT}::`) && stdout.includes(`${ORDER_OUT}::${world.host('b2').address}:${APP_PORT}::`);
    }, { timeoutMs: 30_000 });
  }, 300_000);

  afterAll(async () => {
    await world?.teardown();
    if (world) expect(await hostRules()).toBe(world.hostRulesBefore);
  }, 120_000);

  it('A\'s application reaches B\'s over mTLS: encrypted on the wire, both sides count the handshake', async () => {
    const a = world.host('a').ns;
    const b = world.host('b').ns;
    const handshakesA = await statSum(a, clusterStat(ORDER_OUT, 'ssl.handshake'));
    const handshakesB = await statSum(b, listenerStat('ssl.handshake'));
    // tcpdump on B's wire while A's application calls order by name (plain HTTP from the application).
    const dump = world.procs.start('tcpdump-b', nsArgv(b, 'tcpdump', ['-i', 'eth0', '-A', '-n', '-l', '-s', '0', 'tcp', 'port', String(APP_PORT)]));
    await waitFor('tcpdump to listen', async () => dump.lines.some((l) => l.includes('listening on')), { timeoutMs: 10_000 }).catch((err) => { throw withLog(err, dump); });
    const codes: number[] = [];
    for (let i = 0; i < 6; i++) codes.push((await appGet(a, `http://order/plaintext-marker-${i}`)).code);
    await delay(500);
    await world.procs.stop(dump);
    expect(codes).toEqual([200, 200, 200, 200, 200, 200]);
    const wire = dump.lines.join('\n');
    // packets were seen, and none carried the request line or the application's answer
    expect(wire).toMatch(new RegExp(`${escapeStat(world.host('b').address)}\\.${APP_PORT}`));
    expect(wire).not.toContain('plaintext-marker');
    expect(wire).not.toContain('hello from');
    expect(await statSum(a, clusterStat(ORDER_OUT, 'ssl.handshake'))).toBeGreaterThan(handshakesA);
    expect(await statSum(b, listenerStat('ssl.handshake'))).toBeGreaterThan(handshakesB);
  });

  it('openssl s_client against B\'s captured port shows the chain up to the mesh root and the SPIFFE SAN', async () => {
    const res = await sClient(world, `${world.host('b').address}:${APP_PORT}`, certs.user, rootCert);
    expect(res.ok, res.output.slice(-1500)).toBe(true);
    // leaf (depth 0) issued by host B's intermediate (depth 1), which the root (depth 2) signed
    expect(res.output).toMatch(/depth=2/);
    expect(res.output).toMatch(/depth=1 .*host-b/);
    expect(res.sans).toContain(`URI:${id('order')}`);
    expect(res.response).toMatch(/^HTTP\/1\.1 200/);
    expect(res.response).toContain('hello from host-b path /over-mtls');
  });

  it('plaintext from a peer in strict mode is refused and counted (NFCF)', async () => {
    const b = world.host('b').ns;
    const before = await statSum(b, listenerStat('no_filter_chain_match'));
    const res = await nsRun(world.host('infra').ns, 'curl', ['-s', '--max-time', '5', '-w', '%{http_code}', `http://${world.host('b').address}:${APP_PORT}/plain`], { allowFail: true });
    expect(res.stdout).not.toContain('hello from');
    expect(res.stdout.slice(-3)).toBe('000');
    expect(await statSum(b, listenerStat('no_filter_chain_match'))).toBe(before + 1);
  });

  it('a caller the allow list does not name gets 403 RBAC; the named one gets through', async () => {
    const b = world.host('b').ns;
    const deniedBefore = await statSum(b, new RegExp(`^${escapeStat(RBAC_PREFIX)}\\.denied$`));
    const allowedBefore = await statSum(b, new RegExp(`^${escapeStat(RBAC_PREFIX)}\\.allowed$`));
    const evil = await curlTls(world, `https://${world.host('b').address}:${APP_PORT}/orders`, certs.evil);
    expect(evil).toEqual({ code: 403, stdout: 'RBAC: access denied' });
    expect(await statSum(b, new RegExp(`^${escapeStat(RBAC_PREFIX)}\\.denied$`))).toBe(deniedBefore + 1);
    const user = await curlTls(world, `https://${world.host('b').address}:${APP_PORT}/orders`, certs.user);
    expect(user.code).toBe(200);
    expect(user.stdout).toContain('hello from host-b path /orders');
    expect(await statSum(b, new RegExp(`^${escapeStat(RBAC_PREFIX)}\\.allowed$`))).toBe(allowedBefore + 1);
  });

  it('a certificate of an unknown CA and an expired one are refused in the handshake and counted', async () => {
    const b = world.host('b').ns;
    const target = `${world.host('b').address}:${APP_PORT}`;
    for (const name of ['foreign', 'expired']) {
      const before = await statSum(b, listenerStat('ssl.fail_verify_error'));
      const res = await sClient(world, target, certs[name], rootCert);
      expect(res.response, `${name}: ${res.output.slice(-800)}`).not.toContain('hello from');
      expect(await statSum(b, listenerStat('ssl.fail_verify_error')), name).toBe(before + 1);
    }
    // without any client certificate: no request is served either
    const none = await sClient(world, target, undefined, rootCert);
    expect(none.response).not.toContain('hello from');
  });

  it('another host reaches 15001 directly only as authenticated mesh traffic', async () => {
    const listener = `${world.host('b').address}:15001`;
    const plain = await nsRun(world.host('infra').ns, 'curl', ['-s', '--max-time', '5', '-w', '\n%{http_code}', '-H', 'Host: order', `http://${listener}/direct`], { allowFail: true });
    expect(plain.stdout).not.toContain('hello from');
    expect(plain.stdout.trim().split('\n').pop()).toBe('502');
    const anonymous = await sClient(world, listener, undefined, rootCert);
    expect(anonymous.response).not.toContain('hello from');
    const authenticated = await sClient(world, listener, certs.user, rootCert);
    expect(authenticated.ok, authenticated.output.slice(-1200)).toBe(true);
    expect(authenticated.response).toContain('hello from host-b path /over-mtls');
  });

  it('B\'s certificate rotates at about half its life under steady load, losing no request', async () => {
    const a = world.host('a').ns;
    const b = world.host('b').ns;
    const first = await servedSerial(b, id('order'));
    expect(first).toBeTruthy();
    const script = writeLoadScript(world.dir);
    const stopFile = join(world.dir, 'mtls-load-stop');
    const load = world.procs.start('mtls-load', nsArgv(a, process.execPath, [script, 'http://order/steady', stopFile, '20000', '60000'], APP_USER));
    await waitFor('the load to be running', async () => parseProgress(load.lines) >= 20, { timeoutMs: 30_000 }).catch((err) => { throw withLog(err, load); });
    // certTtlSeconds 20: a new certificate within about 10 s (a margin for the jitter and the load)
    const rotated = await waitFor('B to serve a new certificate', async () => {
      const now = await servedSerial(b, id('order'));
      return now && now !== first ? now : undefined;
    }, { timeoutMs: 25_000, intervalMs: 500 });
    const mark = parseProgress(load.lines);
    await waitFor('requests after the rotation', async () => parseProgress(load.lines) >= mark + 50, { timeoutMs: 30_000 }).catch(async (err) => {
      writeFileSync(stopFile, '');
      await load.exited;
      throw withLog(err, load, 10);
    });
    writeFileSync(stopFile, '');
    await load.exited;
    const summary = parseSummary(load.lines);
    expect(summary, load.lines.slice(-5).join('\n')).toBeDefined();
    expect(summary!.failures).toEqual([]);
    expect(summary!.failed).toBe(0);
    expect(summary!.ok).toBeGreaterThan(70);
    // a new handshake is made with the new certificate (serial as /certs shows it)
    const res = await sClient(world, `${world.host('b').address}:${APP_PORT}`, certs.user, rootCert);
    expect(res.ok, res.output.slice(-800)).toBe(true);
    expect([rotated, await servedSerial(b, id('order'))]).toContain(res.serial);
    // the key on disk is the proxy user's alone
    const dir = join(sidecars.b!.dir, 'run', 'certs', 'order');
    const { stdout } = await run('stat', ['-c', '%a %u', join(dir, 'key.pem')]);
    expect(stdout.trim()).toBe(`600 ${PROXY_USER.uid}`);
  }, 120_000);

  it('file-sourced certificates replaced on disk are picked up; a wrong identity is refused by the caller', async () => {
    const a = world.host('a').ns;
    const b2 = world.host('b2').ns;
    const target = `${world.host('b2').address}:${APP_PORT}`;
    const before = await servedSerial(b2, id('order'));
    expect(before).toBeTruthy();
    // the external issuer renews: new files renamed into place (as Vault agent or cert-manager do)
    const replace = async (service: string) => {
      const next = join(pki, `b2-next-${service}`);
      await ok(['issue', '--ca-dir', join(pki, 'ca-b2'), '--service', service, '--trust-domain', TRUST_DOMAIN, '--out', next]);
      for (const f of ['cert-chain.pem', 'key.pem', 'root-cert.pem']) {
        chownSync(join(next, f), PROXY_USER.uid, PROXY_USER.gid);
        renameSync(join(next, f), join(b2Certs, f));
      }
      return readFileSync(join(b2Certs, 'cert-chain.pem'), 'utf8');
    };
    await replace('order');
    const renewed = await waitFor('B2 to serve the renewed certificate', async () => {
      const now = await servedSerial(b2, id('order'));
      return now && now !== before ? now : undefined;
    }, { timeoutMs: 15_000, intervalMs: 300 });
    const seen = await sClient(world, target, certs.user, rootCert);
    expect(seen.serial).toBe(renewed);

    // Now the files hold another identity than the one B2 registered for order: A must refuse B2
    // (counted as fail_verify_san) and its requests go to B instead.
    await replace('evil');
    await waitFor('B2 to serve the evil certificate', async () => (await sClient(world, target, certs.user, rootCert)).sans?.includes(id('evil')), { timeoutMs: 15_000, intervalMs: 500 });
    // A's pooled connections to B2 were verified before the swap: a hot restart of A's proxy starts
    // an empty pool, so the next calls handshake with B2 anew
    const epoch = Number((await admin(a, 15020, '/epoch/envoy')).stdout.trim());
    await admin(a, 15020, '/hot_restart/envoy', 'POST');
    await waitFor('A\'s new proxy epoch', async () => Number((await admin(a, 15020, '/epoch/envoy')).stdout.trim()) === epoch + 1, { timeoutMs: 30_000 });
    await waitFor('A\'s new epoch to know both order instances', async () => {
      const { stdout } = await admin(a, PROXY_ADMIN, '/clusters');
      return stdout.includes(`${ORDER_OUT}::${world.host('b').address}:${APP_PORT}::`) && stdout.includes(`${ORDER_OUT}::${world.host('b2').address}:${APP_PORT}::`);
    }, { timeoutMs: 30_000 });
    const sanBefore = await statSum(a, clusterStat(ORDER_OUT, 'ssl.fail_verify_san'));
    // bursts of concurrent calls; every call is answered (by B when B2 is refused), at most 10 bursts
    const codes: number[] = [];
    // (one burst at least, whatever the counter says: the calls must be answered either way)
    for (let burst = 0; burst < 10 && (burst === 0 || (await statSum(a, clusterStat(ORDER_OUT, 'ssl.fail_verify_san'))) === sanBefore); burst++) {
      codes.push(...await Promise.all(Array.from({ length: 24 }, (_, i) => appGet(a, `http://order/after-swap-${burst}-${i}`).then((r) => r.code))));
    }
    expect(await statSum(a, clusterStat(ORDER_OUT, 'ssl.fail_verify_san'))).toBeGreaterThan(sanBefore);
    expect(codes.length).toBeGreaterThan(0);
    expect(codes.every((c) => c === 200), codes.join(',')).toBe(true);
  }, 90_000);

  it('doctor on A checks the certificates and the peers\' identities', async () => {
    const res = await mesh(world, 'a', ['doctor', '--json']);
    const report = JSON.parse(res.stdout) as { checks: Array<{ name: string; ok?: boolean; status?: string; detail?: string }> };
    const text = JSON.stringify(report);
    expect(text).toContain(id('user'));
    expect(text).toContain(id('order'));
  });
});
