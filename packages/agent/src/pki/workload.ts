// Workload certificates: what a local service presents to its peers (SPIFFE ID as the only URI SAN).
import path from 'node:path';
import { EXIT_CODES, MeshError } from '@mesh-agent/shared-config';
import { ensurePrivateDir, writeFileAtomic, type FileOwner } from './atomic-file';
import { type CaMaterial, NOT_BEFORE_BACKDATE_MS, validateCaMaterial } from './ca';
import { generateKeyPair, importSigningKey, joinPem, privateKeyPem, randomSerialHex, x509 } from './keys';

export interface WorkloadCertificate {
  /** the leaf, then the issuer's chain without the root (the root only when it is the issuer itself) */
  certChainPem: string;
  privateKeyPem: string;
  /** the roots a peer's certificate must chain to */
  trustBundlePem: string;
  /** hex, as openssl and Envoy's /certs show it */
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
  spiffeId: string;
}

export interface IssueOptions {
  spiffeId: string;
  ttlMs: number;
  /** default: now minus 5 minutes (clock skew between hosts); tests set it in the past to make expired certificates */
  notBefore?: Date;
}

/** SPIFFE ID syntax (spiffe.io, SPIFFE-ID.md): lower-case trust domain, a non-empty path of unreserved segments. */
const SPIFFE_ID = /^spiffe:\/\/[a-z0-9._-]+(\/[A-Za-z0-9._-]+)+$/;

function badOption(message: string, hint: string): MeshError {
  return new MeshError('MESH_PKI_OPTION_INVALID', message, { exitCode: EXIT_CODES.usage, hint });
}

/** The Istio file names of one local service's certificate dir. */
export const WORKLOAD_FILES = { certChain: 'cert-chain.pem', privateKey: 'key.pem', trustBundle: 'root-cert.pem' } as const;

export interface WorkloadFilePaths { dir: string; certChain: string; privateKey: string; trustBundle: string }

/**
 * Signs a fresh key (ECDSA P-256, new for every issuance) for `spiffeId`. The certificate's life is cut
 * to the issuer's remaining life; `notAfter` says what it got. The subject is empty, as Istio's, so the
 * SAN extension is critical (RFC 5280 4.2.1.6).
 */
export async function issueWorkloadCertificate(issuer: CaMaterial, options: IssueOptions): Promise<WorkloadCertificate> {
  const { spiffeId, ttlMs } = options;
  if (!SPIFFE_ID.test(spiffeId)) throw badOption(`"${spiffeId}" is not a SPIFFE ID`, 'use spiffe://<trust-domain>/ns/<namespace>/sa/<service>, e.g. spiffe://cluster.local/ns/default/sa/order');
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw badOption(`certificate lifetime ${String(ttlMs)} ms is not a positive duration`, 'give a lifetime, e.g. 86400000 ms (24 h)');
  const ca = validateCaMaterial(issuer);
  const notBefore = options.notBefore ?? new Date(Date.now() - NOT_BEFORE_BACKDATE_MS);
  const wanted = (options.notBefore ? notBefore.getTime() : Date.now()) + ttlMs;
  const notAfter = new Date(Math.min(wanted, ca.notAfter.getTime()));
  const signing = await importSigningKey(issuer.keyPem);
  const keys = await generateKeyPair();
  const issuerCert = new x509.X509Certificate(issuer.certPem);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    issuer: issuerCert.subjectName,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: signing.key,
    signingAlgorithm: signing.algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(await issuerCert.publicKey.export()),
    ],
  });
  const leafPem = `${cert.toString('pem')}\n`;
  const parents = ca.isRoot ? ca.chain : ca.chain.slice(0, -1);
  return {
    certChainPem: joinPem([leafPem, ...parents]),
    privateKeyPem: await privateKeyPem(keys.privateKey),
    trustBundlePem: issuer.rootPem,
    serialNumber: cert.serialNumber,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    spiffeId,
  };
}

/**
 * Writes one service's certificate dir in Istio's layout: the dir 0700, key.pem 0600, the certificates
 * 0644, all owned by `owner` (the proxy's user) when running as root. Each file is replaced atomically;
 * the key is written first, so a watcher that sees the new chain finds its key already there
 * (the proxy's secret store also waits for the files to settle).
 */
export function writeWorkloadFiles(dir: string, cert: WorkloadCertificate, owner: FileOwner = {}): WorkloadFilePaths {
  const paths: WorkloadFilePaths = {
    dir,
    certChain: path.join(dir, WORKLOAD_FILES.certChain),
    privateKey: path.join(dir, WORKLOAD_FILES.privateKey),
    trustBundle: path.join(dir, WORKLOAD_FILES.trustBundle),
  };
  ensurePrivateDir(dir, 0o700, owner);
  writeFileAtomic(paths.privateKey, cert.privateKeyPem, 0o600, owner);
  writeFileAtomic(paths.certChain, cert.certChainPem, 0o644, owner);
  writeFileAtomic(paths.trustBundle, cert.trustBundlePem, 0o644, owner);
  return paths;
}
