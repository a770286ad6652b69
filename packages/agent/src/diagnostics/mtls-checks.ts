// The doctor's mTLS hops (issue 13): the local services' certificates (what the proxy serves, the
// files on disk, validity, chain to the trust bundle, expected SPIFFE ID) and the peers' identities
// (a real TLS handshake with this node's certificate to one endpoint of each peer service).
import crypto from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';
import { spiffeId, spiffeIdOf } from '@mesh-agent/shared-config';
import { outboundSni } from '../mtls-settings.js';
import type { CheckContext, CheckResult } from './checks.js';
import type { SidecarSnapshot } from './sidecar.js';

const DAY_MS = 86_400_000;
/** Peers handshaken with per doctor run: one endpoint per service, bounded. */
const MAX_PEER_SERVICES = 8;
const HANDSHAKE_TIMEOUT_MS = 3_000;

interface IssuedCert { service: string; spiffeId: string; serialNumber: string; notAfter: string; certChain: string; privateKey: string; trustBundle: string }

function mtlsStatus(snap: SidecarSnapshot): { source: string; identities: Record<string, string>; certificates: IssuedCert[] } | undefined {
  return snap.agent.dump?.mtls ?? snap.agent.healthJson?.mtls ?? undefined;
}

const NOT_USED = 'not used: mTLS is off (no mtls.ca or mtls.files in the agent config); sidecars talk plaintext';

function readCerts(file: string): crypto.X509Certificate[] {
  const pem = fs.readFileSync(file, 'utf8');
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((block) => new crypto.X509Certificate(block));
}

/** Walks leaf -> its chain -> the trust bundle; the name of the anchor, or why it does not chain. */
export function verifyChain(chain: crypto.X509Certificate[], bundle: crypto.X509Certificate[]): { ok: true; anchor: string } | { ok: false; why: string } {
  if (chain.length === 0) return { ok: false, why: 'no certificate in the chain file' };
  if (bundle.length === 0) return { ok: false, why: 'no certificate in the trust bundle' };
  for (let i = 0; i < chain.length; i++) {
    const cert = chain[i]!;
    const root = bundle.find((r) => cert.checkIssued(r) && cert.verify(r.publicKey));
    if (root) return { ok: true, anchor: root.subject.replace(/\n/g, ', ') };
    const next = chain[i + 1];
    if (!next) break;
    if (!cert.checkIssued(next) || !cert.verify(next.publicKey)) return { ok: false, why: `certificate ${i + 1} (${cert.subject.replace(/\n/g, ', ') || cert.subjectAltName}) is not signed by the next one in the chain` };
  }
  return { ok: false, why: 'the chain does not lead to any certificate of the trust bundle' };
}

/** The proxy's /certs leaf carrying `identity`, in Envoy's shape. */
function servedLeaf(snap: SidecarSnapshot, identity: string): { serial_number: string; expiration_time: string } | undefined {
  const certificates: any[] = snap.proxy.certsJson?.certificates ?? [];
  for (const entry of certificates) {
    const leaf = entry?.cert_chain?.[0];
    if ((leaf?.subject_alt_names ?? []).some((s: { uri?: string }) => s?.uri === identity)) return leaf;
  }
  return undefined;
}

export function checkCertificates({ snap }: CheckContext): CheckResult {
  const hop = 'certificates';
  const config = snap.agent.configJson;
  const mtls = mtlsStatus(snap);
  if (!config?.mtls?.ca && !config?.mtls?.files) return { hop, status: 'OK', evidence: NOT_USED };
  const curlCerts = `curl -s ${snap.adminHost}:${snap.ports.proxyAdmin}/certs`;
  if (!mtls) return { hop, status: 'FAIL', evidence: 'mtls is configured but the agent reports no certificates (/config_dump/pilot-agent has no mtls)', fix: `curl -s ${snap.adminHost}:${snap.ports.agentAdmin}/latest_error says why` };
  const results: string[] = [];
  const fixes: string[] = [];
  let status: CheckResult['status'] = 'OK';
  const worse = (s: CheckResult['status']) => { if (s === 'FAIL' || status === 'OK') status = s; };
  for (const svc of snap.localServices) {
    const cert = mtls.certificates.find((c) => c.service === svc.name);
    // the built-in issuer names a service after its spec.yaml entry; files carry the operator's one identity
    const expected = config.mtls.ca ? spiffeId(config.mtls.trustDomain ?? 'cluster.local', config.node?.namespace ?? 'default', svc.name) : mtls.identities[svc.name];
    if (!cert || !expected) { worse('FAIL'); results.push(`${svc.name}: no certificate issued`); fixes.push(`curl -s ${snap.adminHost}:${snap.ports.agentAdmin}/latest_error`); continue; }
    let chain: crypto.X509Certificate[];
    let bundle: crypto.X509Certificate[];
    try {
      chain = readCerts(cert.certChain);
      bundle = readCerts(cert.trustBundle);
    } catch (err) {
      worse('FAIL');
      results.push(`${svc.name}: cannot read ${cert.certChain} / ${cert.trustBundle}: ${(err as Error).message}`);
      fixes.push('run mesh-agent doctor as root (the certificate dir is the proxy user\'s, mode 0700)');
      continue;
    }
    const leaf = chain[0];
    const id = spiffeIdOf(leaf?.subjectAltName);
    if (!leaf || id !== expected) {
      worse('FAIL');
      results.push(`${svc.name}: ${cert.certChain} carries ${id ?? 'no spiffe:// URI SAN'}, expected ${expected}`);
      fixes.push(config.mtls.files ? 'issue the certificate with the expected SPIFFE ID as its URI SAN' : 'restart the agent: it issues a new certificate');
      continue;
    }
    const leftMs = new Date(leaf.validTo).getTime() - Date.now();
    if (leftMs <= 0) {
      worse('FAIL');
      results.push(`${svc.name}: ${id} expired at ${new Date(leaf.validTo).toISOString()}`);
      fixes.push(config.mtls.ca ? `renewal failed: curl -s ${snap.adminHost}:${snap.ports.agentAdmin}/latest_error; check mtls.ca.dir` : 'your issuer did not renew the files: check it (Vault agent, cert-manager, step, SPIRE helper)');
      continue;
    }
    const verified = verifyChain(chain, bundle);
    if (!verified.ok) {
      worse('FAIL');
      results.push(`${svc.name}: ${cert.certChain} does not verify against ${cert.trustBundle}: ${verified.why}`);
      fixes.push('peers refuse a chain they cannot verify: put the issuing CA (and its parents) in the trust bundle, the intermediates after the leaf in the chain');
      continue;
    }
    const served = servedLeaf(snap, id);
    const left = leftMs >= DAY_MS ? `${Math.floor(leftMs / DAY_MS)} day(s) left` : `${Math.round(leftMs / 60_000)} min left`;
    if (!served) {
      worse('FAIL');
      results.push(`${svc.name}: the proxy does not serve ${id} (${snap.proxy.certs ? `${curlCerts}: ${snap.proxy.certs.status || snap.proxy.certs.error}` : 'no /certs'})`);
      fixes.push(`${curlCerts}; curl -s ${snap.adminHost}:${snap.ports.proxyAdmin}/stats | grep sds. (update_rejected: the proxy refused the files; its /latest_error says why)`);
      continue;
    }
    const serial = leaf.serialNumber.toLowerCase();
    if (served.serial_number.toLowerCase() !== serial) {
      worse('WARN');
      results.push(`${svc.name}: the proxy serves serial ${served.serial_number}, the file holds ${serial} (a renewal not loaded yet?)`);
      fixes.push(`the proxy polls the files every second: run doctor again; if it stays, ${curlCerts} and the proxy's sds.${svc.name}.update_rejected`);
      continue;
    }
    results.push(`${svc.name}: ${id}, serial ${serial}, ${left} (until ${new Date(leaf.validTo).toISOString()}), chain verifies to ${verified.anchor}, served by the proxy`);
  }
  if (!snap.localServices.length) return { hop, status: 'WARN', evidence: 'no local service', fix: 'declare the application in spec.yaml' };
  return { hop, status, evidence: results.join('; '), ...(fixes.length ? { fix: [...new Set(fixes)].join('; ') } : {}) };
}

interface PeerEndpoint { service: string; namespace: string; address: string; port: number; identity: string }

function peersWithIdentity(snap: SidecarSnapshot): PeerEndpoint[] {
  const local = new Set(snap.localServices.map((s) => s.name));
  const services: any[] = snap.agent.servicesJson?.registry?.services ?? [];
  const out: PeerEndpoint[] = [];
  for (const svc of services) {
    if (local.has(svc?.name)) continue;
    // one endpoint per service: a healthy one first
    const instances: any[] = (svc?.instances ?? []).filter((i: any) => typeof i?.metadata?.identity === 'string');
    const pick = instances.find((i) => i.healthy !== false) ?? instances[0];
    if (pick) out.push({ service: svc.name, namespace: svc.namespace ?? 'default', address: pick.address, port: Number(pick.port), identity: pick.metadata.identity });
  }
  return out.slice(0, MAX_PEER_SERVICES);
}

/** A TLS handshake as the proxy makes it: this node's certificate, the trust bundle, Istio's SNI; what the peer presented. */
export function handshake(peer: PeerEndpoint, own: { cert: string; key: string; ca: string }): Promise<{ presented?: string; protocol?: string; error?: string }> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (result: { presented?: string; protocol?: string; error?: string }) => {
      if (done) return;
      done = true;
      socket.destroy();
      resolve(result);
    };
    const socket = tls.connect({
      host: peer.address,
      port: peer.port,
      servername: outboundSni(peer.port, { name: peer.service, namespace: peer.namespace }),
      ALPNProtocols: ['http/1.1'],
      minVersion: 'TLSv1.2',
      cert: own.cert,
      key: own.key,
      ca: own.ca,
      // identity is a SPIFFE URI SAN, compared below, not a host name
      checkServerIdentity: () => undefined,
    });
    socket.setTimeout(HANDSHAKE_TIMEOUT_MS, () => finish({ error: `no TLS handshake within ${HANDSHAKE_TIMEOUT_MS} ms` }));
    socket.once('secureConnect', () => finish({ presented: spiffeIdOf(socket.getPeerCertificate()?.subjectaltname), protocol: socket.getProtocol() ?? undefined }));
    socket.once('error', (err) => finish({ error: err.message }));
  });
}

export async function checkPeerIdentity({ snap }: CheckContext): Promise<CheckResult> {
  const hop = 'peer-identity';
  const config = snap.agent.configJson;
  const mtls = mtlsStatus(snap);
  if (!config?.mtls?.ca && !config?.mtls?.files) return { hop, status: 'OK', evidence: NOT_USED };
  const peers = peersWithIdentity(snap);
  if (!peers.length) return { hop, status: 'OK', evidence: 'no peer service registered an identity: calls to peers are plaintext (their sidecars run without mTLS or in mode disable)' };
  const main = config.node?.serviceName ?? snap.localServices[0]?.name;
  const own = mtls?.certificates.find((c) => c.service === main);
  if (!own) return { hop, status: 'FAIL', evidence: `no certificate of ${main} to present`, fix: 'see the certificates line' };
  let material: { cert: string; key: string; ca: string };
  try {
    material = { cert: fs.readFileSync(own.certChain, 'utf8'), key: fs.readFileSync(own.privateKey, 'utf8'), ca: fs.readFileSync(own.trustBundle, 'utf8') };
  } catch (err) {
    return { hop, status: 'WARN', evidence: `cannot read ${main}'s certificate files: ${(err as Error).message}`, fix: 'run mesh-agent doctor as root (key.pem is mode 0600)' };
  }
  const results: string[] = [];
  const fixes: string[] = [];
  let failed = false;
  for (const peer of peers) {
    const where = `${peer.service} ${peer.address}:${peer.port}`;
    const r = await handshake(peer, material);
    if (r.error) {
      failed = true;
      results.push(`${where}: handshake failed: ${r.error}`);
      fixes.push(/certificate|verify|issuer/i.test(r.error)
        ? `${peer.service}'s certificate does not verify against ${own.trustBundle}: both sides need the same mesh root (mesh-agent ca show --dir on each CA dir)`
        : `${peer.service}'s sidecar does not terminate mTLS on ${peer.port}: check its /status and mtls mode, and the route to ${peer.address}`);
    } else if (r.presented !== peer.identity) {
      failed = true;
      results.push(`${where}: presented ${r.presented ?? 'no spiffe:// URI SAN'}, registered ${peer.identity}`);
      fixes.push(`the endpoint is not the workload the registry says (or its agent registered a stale identity): the proxy refuses it (503 UF, cluster ssl.fail_verify_san); check who listens on ${peer.address}:${peer.port}`);
    } else {
      results.push(`${where}: presented ${r.presented} as registered (${r.protocol})`);
    }
  }
  return { hop, status: failed ? 'FAIL' : 'OK', evidence: results.join('; '), ...(fixes.length ? { fix: [...new Set(fixes)].join('; ') } : {}) };
}
