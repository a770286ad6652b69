// The built-in issuer's CA: a mesh root, per-host intermediates, and the CA dir in Istio's plug-in CA layout.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { EXIT_CODES, MeshError } from '@mesh-agent/shared-config';
import { ensurePrivateDir, writeFileAtomic } from './atomic-file';
import { type CryptoKey, generateKeyPair, importSigningKey, joinPem, privateKeyPem, randomSerialHex, splitPemCertificates, x509 } from './keys';

/** A CA as PEM text: what `mesh-agent ca init|intermediate` writes and what the agent signs with. */
export interface CaMaterial {
  /** this CA's certificate */
  certPem: string;
  /** this CA's private key (PKCS#8 PEM) */
  keyPem: string;
  /** this CA's certificate and its parents up to and including the root */
  chainPem: string;
  /** the trust bundle: the root certificate(s) every peer of the mesh trusts */
  rootPem: string;
}

/** Istio's plug-in CA ("cacerts") file names. */
export const CA_FILES = { cert: 'ca-cert.pem', key: 'ca-key.pem', chain: 'cert-chain.pem', root: 'root-cert.pem' } as const;

/** How the files of a CA are called in error messages: the paths in a CA dir, or the files an operator passed. */
export type CaFileLabels = Record<keyof typeof CA_FILES, string>;

/** Clock skew allowance: certificates start 5 minutes in the past. */
export const NOT_BEFORE_BACKDATE_MS = 5 * 60_000;
const DAY_MS = 86_400_000;

const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const CA_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export interface RootCaOptions { trustDomain: string; ttlDays?: number; commonName?: string }
export interface IntermediateCaOptions { name: string; ttlDays?: number }

function invalid(message: string, hint: string): MeshError {
  return new MeshError('MESH_PKI_CA_INVALID', message, { exitCode: EXIT_CODES.usage, hint });
}

function badOption(message: string, hint: string): MeshError {
  return new MeshError('MESH_PKI_OPTION_INVALID', message, { exitCode: EXIT_CODES.usage, hint });
}

function checkTtlDays(ttlDays: number, what: string): void {
  if (!Number.isFinite(ttlDays) || ttlDays <= 0) throw badOption(`${what}: ttlDays ${String(ttlDays)} is not a positive number of days`, 'give a lifetime in days, e.g. 3650 for a root, 30 for an intermediate');
}

/** The X.509 extensions of a CA certificate; pathLength 0 for intermediates (they sign workloads only). */
async function caExtensions(publicKey: CryptoKey, issuerPublicKey: CryptoKey, pathLength?: number): Promise<x509.Extension[]> {
  return [
    new x509.BasicConstraintsExtension(true, pathLength, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
    await x509.SubjectKeyIdentifierExtension.create(publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(issuerPublicKey),
  ];
}

/** A new self-signed mesh root: subject O=<trust domain> (as Istio's), ECDSA P-256, 10 years by default. */
export async function createRootCa(options: RootCaOptions): Promise<CaMaterial> {
  const { trustDomain, ttlDays = 3650, commonName = `${options.trustDomain} mesh root CA` } = options;
  if (!TRUST_DOMAIN.test(trustDomain)) throw badOption(`trust domain "${trustDomain}" is not valid: SPIFFE allows lower-case letters, digits, ".", "-" and "_"`, 'use e.g. cluster.local or example.org');
  checkTtlDays(ttlDays, 'root CA');
  const keys = await generateKeyPair();
  const notBefore = new Date(Date.now() - NOT_BEFORE_BACKDATE_MS);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(),
    name: [{ O: [trustDomain] }, { CN: [commonName] }],
    notBefore,
    notAfter: new Date(Date.now() + ttlDays * DAY_MS),
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as crypto.webcrypto.EcdsaParams,
    extensions: await caExtensions(keys.publicKey, keys.publicKey),
  });
  const certPem = cert.toString('pem');
  return { certPem: `${certPem}\n`, keyPem: await privateKeyPem(keys.privateKey), chainPem: `${certPem}\n`, rootPem: `${certPem}\n` };
}

/**
 * A CA signed by `parent` (a root or another intermediate) for one host or group of hosts. Its life is
 * cut to the parent's: a CA that outlives its issuer would only fail verification later.
 */
export async function createIntermediateCa(parent: CaMaterial, options: IntermediateCaOptions): Promise<CaMaterial> {
  const { name, ttlDays = 30 } = options;
  if (!CA_NAME.test(name)) throw badOption(`intermediate name "${name}" is not valid: letters, digits, ".", "-" and "_", at most 63`, 'name it after the host or group it is for, e.g. host-a');
  checkTtlDays(ttlDays, 'intermediate CA');
  const issuer = validateCaMaterial(parent);
  const signing = await importSigningKey(parent.keyPem);
  const keys = await generateKeyPair();
  const issuerCert = new x509.X509Certificate(parent.certPem);
  const trustDomain = issuerCert.subjectName.getField('O')[0];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: [...(trustDomain ? [{ O: [trustDomain] }] : []), { CN: [name] }],
    issuer: issuerCert.subjectName,
    notBefore: new Date(Date.now() - NOT_BEFORE_BACKDATE_MS),
    notAfter: new Date(Math.min(Date.now() + ttlDays * DAY_MS, issuer.notAfter.getTime())),
    publicKey: keys.publicKey,
    signingKey: signing.key,
    signingAlgorithm: signing.algorithm,
    extensions: await caExtensions(keys.publicKey, await issuerCert.publicKey.export(), 0),
  });
  const certPem = `${cert.toString('pem')}\n`;
  return { certPem, keyPem: await privateKeyPem(keys.privateKey), chainPem: joinPem([certPem, ...splitPemCertificates(parent.chainPem)]), rootPem: parent.rootPem };
}

export interface ValidatedCa {
  cert: crypto.X509Certificate;
  notAfter: Date;
  /** true when this CA is itself the root (its chain is just itself) */
  isRoot: boolean;
  /** the chain's PEM blocks: this CA first, the root last */
  chain: string[];
}

function parseCert(pem: string, label: string): crypto.X509Certificate {
  try {
    return new crypto.X509Certificate(pem);
  } catch (err) {
    throw invalid(`${label} is not a PEM certificate (${(err as Error).message})`, `put the CA certificate in PEM ("-----BEGIN CERTIFICATE-----") into ${label}`);
  }
}

function checkValidNow(cert: crypto.X509Certificate, label: string, now: Date): void {
  if (now.getTime() > new Date(cert.validTo).getTime()) throw invalid(`${label} (${cert.subject.replace(/\n/g, ', ')}) expired on ${new Date(cert.validTo).toISOString()}`, 'issue a new CA: `mesh-agent ca intermediate` for a host CA, `mesh-agent ca init --force` for a new root (all peers must then trust it)');
  if (now.getTime() < new Date(cert.validFrom).getTime()) throw invalid(`${label} is not valid before ${new Date(cert.validFrom).toISOString()}`, "check this host's clock (NTP), or wait until the certificate becomes valid");
}

function checkIsCa(cert: crypto.X509Certificate, label: string): void {
  if (!cert.ca) throw invalid(`${label} is not a CA certificate (basicConstraints CA:TRUE is missing)`, 'use a CA certificate: `mesh-agent ca init` creates one, or ask your PKI for an intermediate with basicConstraints CA:TRUE');
  const ku = new x509.X509Certificate(cert.raw).getExtension(x509.KeyUsagesExtension);
  if (ku && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0) throw invalid(`${label} may not sign certificates (its keyUsage lacks keyCertSign)`, 'ask your PKI for an intermediate whose keyUsage includes keyCertSign');
}

/**
 * Checks a CA before anything is signed or written with it: the key matches the certificate, it is a CA
 * that may sign, it is valid now, and its chain leads to a certificate of the trust bundle. Errors are
 * MESH_PKI_CA_INVALID naming the file (as `labels` call them) and what to do.
 */
export function validateCaMaterial(material: CaMaterial, labels: CaFileLabels = CA_FILES, now = new Date()): ValidatedCa {
  const cert = parseCert(material.certPem, labels.cert);
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(material.keyPem);
  } catch (err) {
    throw invalid(`${labels.key} is not a PEM private key (${(err as Error).message})`, `put the CA's private key in PEM into ${labels.key}`);
  }
  if (!cert.checkPrivateKey(key)) throw invalid(`the key in ${labels.key} does not match the certificate in ${labels.cert}`, `put the key that belongs to ${labels.cert} into ${labels.key} (compare \`openssl pkey -pubout\` with \`openssl x509 -pubkey\`)`);
  checkIsCa(cert, labels.cert);
  checkValidNow(cert, labels.cert, now);

  const roots = splitPemCertificates(material.rootPem).map((pem) => parseCert(pem, labels.root));
  if (roots.length === 0) throw invalid(`${labels.root} holds no PEM certificate`, `put the mesh root certificate (the trust bundle) into ${labels.root}`);
  for (const root of roots) checkIsCa(root, labels.root);

  const chain = splitPemCertificates(material.chainPem);
  const chainCerts = chain.map((pem) => parseCert(pem, labels.chain));
  if (chainCerts.length === 0 || chainCerts[0]!.fingerprint256 !== cert.fingerprint256) {
    throw invalid(`${labels.chain} does not start with the certificate in ${labels.cert}`, `${labels.chain} is ${labels.cert} followed by its parents up to the root (cat ca-cert.pem [intermediates] root-cert.pem > cert-chain.pem)`);
  }
  for (let i = 0; i + 1 < chainCerts.length; i++) {
    const child = chainCerts[i]!;
    const parent = chainCerts[i + 1]!;
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) throw invalid(`${labels.chain}: certificate ${i + 1} (${child.subject.replace(/\n/g, ', ')}) is not signed by certificate ${i + 2} (${parent.subject.replace(/\n/g, ', ')})`, `order ${labels.chain} from ${labels.cert} up to the root, each certificate followed by its issuer`);
    checkValidNow(parent, `${labels.chain}: certificate ${i + 2}`, now);
  }
  const top = chainCerts[chainCerts.length - 1]!;
  const anchored = roots.some((root) => root.fingerprint256 === top.fingerprint256 || (top.checkIssued(root) && top.verify(root.publicKey)));
  if (!anchored) throw invalid(`${labels.cert} does not chain to ${labels.root}: ${top.subject.replace(/\n/g, ', ')} is not signed by any certificate in ${labels.root}`, `put the root that issued this CA into ${labels.root}, and any certificates between them into ${labels.chain}`);
  const isRoot = roots.some((root) => root.fingerprint256 === cert.fingerprint256);
  return { cert, notAfter: new Date(cert.validTo), isRoot, chain };
}

/** Paths of the four files of a CA dir. */
export function caDirFiles(dir: string): CaFileLabels {
  return { cert: path.join(dir, CA_FILES.cert), key: path.join(dir, CA_FILES.key), chain: path.join(dir, CA_FILES.chain), root: path.join(dir, CA_FILES.root) };
}

/**
 * Writes a CA dir: dir 0700, ca-key.pem 0600, the certificates 0644, each file atomically. Refuses
 * nothing: `mesh-agent ca init` checks for an existing CA before it calls this.
 */
export function writeCaDir(dir: string, material: CaMaterial): CaFileLabels {
  const files = caDirFiles(dir);
  ensurePrivateDir(dir, 0o700);
  writeFileAtomic(files.key, material.keyPem, 0o600);
  writeFileAtomic(files.cert, material.certPem, 0o644);
  writeFileAtomic(files.chain, material.chainPem, 0o644);
  writeFileAtomic(files.root, material.rootPem, 0o644);
  return files;
}

/** Reads and validates a CA dir (see validateCaMaterial); MESH_PKI_CA_UNREADABLE when a file cannot be read. */
export async function loadCaDir(dir: string): Promise<CaMaterial> {
  const files = caDirFiles(dir);
  const read = (file: string): string => {
    try {
      return fs.readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new MeshError('MESH_PKI_CA_UNREADABLE', `cannot read the CA file ${file}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`, {
        exitCode: code === 'EACCES' || code === 'EPERM' ? EXIT_CODES.permission : EXIT_CODES.usage,
        hint: code === 'EACCES' || code === 'EPERM' ? `run as root (the CA key is mode 0600), or fix the owner of ${dir}` : `create the CA dir with \`mesh-agent ca init --dir ${dir}\` (a root) or \`mesh-agent ca intermediate --root-dir ROOT --dir ${dir} --name HOST\` (a host CA), or point mtls.ca.dir at an existing one`,
      });
    }
  };
  const material: CaMaterial = { certPem: read(files.cert), keyPem: read(files.key), chainPem: read(files.chain), rootPem: read(files.root) };
  validateCaMaterial(material, files);
  return material;
}
