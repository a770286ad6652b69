// `mesh-agent ca ...`: the built-in issuer from the command line (a root, host CAs, one-off workload certificates).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { EXIT_CODES, MeshError, spiffeId as makeSpiffeId } from '@mesh-agent/shared-config';
import { CA_FILES, type CaFileLabels, type CaMaterial, caDirFiles, createIntermediateCa, createRootCa, loadCaDir, validateCaMaterial, writeCaDir } from './ca';
import { joinPem, splitPemCertificates, x509 } from './keys';
import { issueWorkloadCertificate, writeWorkloadFiles } from './workload';

export const CA_USAGE = `Usage: mesh-agent ca COMMAND [options]

The built-in issuer (docs/security.md): a mesh root, one CA per host, workload certificates.

  ca init --dir D [--trust-domain cluster.local] [--ttl-days 3650] [--force]
        create a mesh root CA in D (keep D offline: it can mint every identity)
  ca init --dir D --from-intermediate CERT --key KEY --root ROOT [--chain CHAIN] [--force]
        use an intermediate CA from your own PKI (checked: is a CA, key matches, chains to ROOT)
  ca intermediate --root-dir D --dir OUT --name HOST [--ttl-days 30] [--force]
        a CA for one host (or group of hosts) signed by the root in D; its dir is mtls.ca.dir there
  ca issue --ca-dir D (--spiffe-id ID | --service S [--namespace default] [--trust-domain TD])
           --out DIR [--ttl-hours 24]
        one workload certificate (cert-chain.pem, key.pem, root-cert.pem) for a workload without an agent
  ca show --dir D
        subject, SANs, serial and validity of D's ca-cert.pem and root-cert.pem`;

function usageError(message: string): MeshError {
  return new MeshError('MESH_AGENT_USAGE', message, { exitCode: EXIT_CODES.usage, hint: 'run mesh-agent ca --help for the ca commands and options' });
}

type Values = Record<string, string | boolean | undefined>;

function parse(argv: string[], options: Record<string, { type: 'string' | 'boolean' }>): Values {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }).values as Values;
  } catch (err) {
    throw usageError((err as Error).message);
  }
}

function required(values: Values, flag: string, command: string): string {
  const value = values[flag];
  if (typeof value !== 'string' || value === '') throw usageError(`ca ${command}: --${flag} is required`);
  return value;
}

function positiveNumber(values: Values, flag: string, fallback: number): number {
  const raw = values[flag];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw usageError(`--${flag}: "${String(raw)}" is not a positive number`);
  return n;
}

function readInput(file: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new MeshError('MESH_PKI_CA_UNREADABLE', `cannot read ${what} ${file}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`, {
      exitCode: code === 'EACCES' || code === 'EPERM' ? EXIT_CODES.permission : EXIT_CODES.usage,
      hint: 'check the path (and run as a user that may read it)',
    });
  }
}

/** Refuses to replace an existing CA unless --force: its key may be the only copy, and peers trust its root. */
function refuseExisting(dir: string, force: boolean): void {
  if (force) return;
  const existing = Object.values(caDirFiles(dir)).filter((file) => fs.existsSync(file));
  if (existing.length > 0) {
    throw new MeshError('MESH_PKI_CA_EXISTS', `${dir} already holds a CA (${existing.map((file) => path.basename(file)).join(', ')}); nothing was written`, {
      exitCode: EXIT_CODES.usage,
      hint: 'pick another --dir, or add --force to replace it (peers that trust the old root-cert.pem must then get the new one)',
    });
  }
}

function describeCert(pem: string): string[] {
  const cert = new crypto.X509Certificate(pem);
  return [
    `subject:    ${cert.subject.replace(/\n/g, ', ') || '(empty)'}`,
    `issuer:     ${cert.issuer.replace(/\n/g, ', ')}`,
    `SANs:       ${cert.subjectAltName ?? '(none)'}`,
    `serial:     ${cert.serialNumber.toLowerCase()}`,
    `not before: ${new Date(cert.validFrom).toISOString()}`,
    `not after:  ${new Date(cert.validTo).toISOString()} (${Math.floor((new Date(cert.validTo).getTime() - Date.now()) / 86_400_000)} days left)`,
    `CA:         ${cert.ca ? 'yes' : 'no'}`,
  ];
}

function notAfterOf(pem: string): string {
  return new Date(new crypto.X509Certificate(pem).validTo).toISOString();
}

function listFiles(files: CaFileLabels): string {
  return [
    `  ${files.cert}    this CA's certificate`,
    `  ${files.key}     its private key (mode 0600)`,
    `  ${files.chain}  ${CA_FILES.cert} and its parents up to the root`,
    `  ${files.root}   the trust bundle every peer needs`,
  ].join('\n');
}

/** An operator's intermediate as a CA dir's material: the chain completed up to the root that signed it. */
function materialFromIntermediate(values: Values): { material: CaMaterial; labels: CaFileLabels } {
  const certFile = required(values, 'from-intermediate', 'init');
  const keyFile = required(values, 'key', 'init');
  const rootFile = required(values, 'root', 'init');
  const chainFile = values.chain as string | undefined;
  const certPem = splitPemCertificates(readInput(certFile, 'the intermediate certificate'))[0] ?? '';
  const keyText = readInput(keyFile, 'the intermediate key');
  const rootPem = readInput(rootFile, 'the root certificate');
  const labels: CaFileLabels = { cert: certFile, key: keyFile, chain: chainFile ?? certFile, root: rootFile };
  if (!certPem) throw new MeshError('MESH_PKI_CA_INVALID', `${certFile} holds no PEM certificate`, { exitCode: EXIT_CODES.usage, hint: 'pass the intermediate CA certificate in PEM with --from-intermediate' });
  let keyPem: string;
  try {
    // stored as PKCS#8 whatever the PKI handed out (SEC1 "EC PRIVATE KEY", PKCS#1 RSA)
    keyPem = crypto.createPrivateKey(keyText).export({ format: 'pem', type: 'pkcs8' }).toString();
  } catch (err) {
    throw new MeshError('MESH_PKI_CA_INVALID', `${keyFile} is not an unencrypted PEM private key (${(err as Error).message})`, { exitCode: EXIT_CODES.usage, hint: 'decrypt it first (openssl pkey -in KEY -out key.pem) and pass that with --key' });
  }
  const roots = splitPemCertificates(rootPem);
  const isSame = (a: string, b: string) => new crypto.X509Certificate(a).fingerprint256 === new crypto.X509Certificate(b).fingerprint256;
  // the chain file may or may not repeat the intermediate itself and the root: keep what lies between
  const between = chainFile ? splitPemCertificates(readInput(chainFile, 'the chain')).filter((pem) => !isSame(pem, certPem) && !roots.some((root) => isSame(pem, root))) : [];
  const top = new crypto.X509Certificate(between[between.length - 1] ?? certPem);
  const issuingRoot = roots.find((root) => {
    const candidate = new crypto.X509Certificate(root);
    return top.checkIssued(candidate) && top.verify(candidate.publicKey);
  });
  const material: CaMaterial = { certPem, keyPem, chainPem: joinPem([certPem, ...between, ...(issuingRoot ? [issuingRoot] : [])]), rootPem };
  return { material, labels };
}

async function caInit(argv: string[], out: NodeJS.WritableStream): Promise<number> {
  const values = parse(argv, {
    dir: { type: 'string' }, 'trust-domain': { type: 'string' }, 'ttl-days': { type: 'string' }, force: { type: 'boolean' },
    'from-intermediate': { type: 'string' }, key: { type: 'string' }, root: { type: 'string' }, chain: { type: 'string' },
  });
  if (values.help) return help(out);
  const dir = required(values, 'dir', 'init');
  const fromIntermediate = values['from-intermediate'] !== undefined;
  if (!fromIntermediate && (values.key !== undefined || values.root !== undefined || values.chain !== undefined)) throw usageError('ca init: --key, --root and --chain go with --from-intermediate CERT');
  if (fromIntermediate && (values['trust-domain'] !== undefined || values['ttl-days'] !== undefined)) throw usageError('ca init --from-intermediate: --trust-domain and --ttl-days come from the certificate, drop them');
  refuseExisting(dir, Boolean(values.force));
  if (fromIntermediate) {
    const { material, labels } = materialFromIntermediate(values);
    const checked = validateCaMaterial(material, labels);
    const files = writeCaDir(dir, material);
    out.write(`mesh-agent: imported the intermediate CA ${checked.cert.subject.replace(/\n/g, ', ')} into ${dir} (valid until ${checked.notAfter.toISOString()})\n${listFiles(files)}\n`);
    out.write(`next: set mtls.ca.dir: ${dir} in this host's agent.yaml; it signs the host's services' certificates\n`);
    return EXIT_CODES.ok;
  }
  const trustDomain = (values['trust-domain'] as string | undefined) ?? 'cluster.local';
  const material = await createRootCa({ trustDomain, ttlDays: positiveNumber(values, 'ttl-days', 3650) });
  const files = writeCaDir(dir, material);
  out.write(`mesh-agent: created a mesh root CA for trust domain ${trustDomain} in ${dir} (valid until ${notAfterOf(material.certPem)})\n${listFiles(files)}\n`);
  out.write(`next: keep ${dir} off the mesh hosts (its key can mint any identity of ${trustDomain}) and give each host its own CA:\n`);
  out.write(`  mesh-agent ca intermediate --root-dir ${dir} --dir OUT --name HOST   then copy OUT to HOST and set mtls.ca.dir there\n`);
  return EXIT_CODES.ok;
}

async function caIntermediate(argv: string[], out: NodeJS.WritableStream): Promise<number> {
  const values = parse(argv, { 'root-dir': { type: 'string' }, dir: { type: 'string' }, name: { type: 'string' }, 'ttl-days': { type: 'string' }, force: { type: 'boolean' } });
  if (values.help) return help(out);
  const rootDir = required(values, 'root-dir', 'intermediate');
  const dir = required(values, 'dir', 'intermediate');
  const name = required(values, 'name', 'intermediate');
  const ttlDays = positiveNumber(values, 'ttl-days', 30);
  refuseExisting(dir, Boolean(values.force));
  const parent = await loadCaDir(rootDir);
  const material = await createIntermediateCa(parent, { name, ttlDays });
  const files = writeCaDir(dir, material);
  out.write(`mesh-agent: created the CA of ${name} in ${dir}, signed by ${rootDir} (valid until ${notAfterOf(material.certPem)})\n${listFiles(files)}\n`);
  out.write(`next: copy ${dir} to ${name} (keep ${CA_FILES.key} mode 0600, owned by root) and set mtls.ca.dir to it in its agent.yaml;\n`);
  out.write(`  renew it before it expires with the same command and --force\n`);
  return EXIT_CODES.ok;
}

async function caIssue(argv: string[], out: NodeJS.WritableStream): Promise<number> {
  const values = parse(argv, {
    'ca-dir': { type: 'string' }, 'spiffe-id': { type: 'string' }, service: { type: 'string' }, namespace: { type: 'string' },
    'trust-domain': { type: 'string' }, out: { type: 'string' }, 'ttl-hours': { type: 'string' },
  });
  if (values.help) return help(out);
  const caDir = required(values, 'ca-dir', 'issue');
  const outDir = required(values, 'out', 'issue');
  const given = values['spiffe-id'] as string | undefined;
  const service = values.service as string | undefined;
  if ((given === undefined) === (service === undefined)) throw usageError('ca issue: give exactly one of --spiffe-id ID or --service NAME');
  if (given !== undefined && (values.namespace !== undefined || values['trust-domain'] !== undefined)) throw usageError('ca issue: --namespace and --trust-domain go with --service, not --spiffe-id');
  const ttlHours = positiveNumber(values, 'ttl-hours', 24);
  const issuer = await loadCaDir(caDir);
  // the trust domain defaults to the CA's own (its subject O, as `ca init` writes it)
  const trustDomain = (values['trust-domain'] as string | undefined) ?? new x509.X509Certificate(issuer.certPem).subjectName.getField('O')[0] ?? 'cluster.local';
  const id = given ?? makeSpiffeId(trustDomain, (values.namespace as string | undefined) ?? 'default', service!);
  const cert = await issueWorkloadCertificate(issuer, { spiffeId: id, ttlMs: ttlHours * 3_600_000 });
  const files = writeWorkloadFiles(outDir, cert);
  out.write(`mesh-agent: issued ${id} (serial ${cert.serialNumber}, valid until ${cert.notAfter.toISOString()})\n`);
  out.write(`  ${files.certChain}   leaf and intermediates\n  ${files.privateKey}          private key (mode 0600)\n  ${files.trustBundle}    trust bundle\n`);
  out.write(`next: give the workload these three files (e.g. mtls.files in its agent.yaml); issue a new one before ${cert.notAfter.toISOString()}\n`);
  return EXIT_CODES.ok;
}

async function caShow(argv: string[], out: NodeJS.WritableStream): Promise<number> {
  const values = parse(argv, { dir: { type: 'string' } });
  if (values.help) return help(out);
  const dir = required(values, 'dir', 'show');
  const material = await loadCaDir(dir);
  const files = caDirFiles(dir);
  const chain = splitPemCertificates(material.chainPem);
  out.write(`${files.cert} (chain of ${chain.length}: ${chain.length === 1 ? 'a root' : `${chain.length - 1} parent(s) up to the root`})\n`);
  out.write(`${describeCert(material.certPem).map((line) => `  ${line}`).join('\n')}\n`);
  for (const [i, root] of splitPemCertificates(material.rootPem).entries()) {
    out.write(`${files.root}${i > 0 ? ` #${i + 1}` : ''}\n${describeCert(root).map((line) => `  ${line}`).join('\n')}\n`);
  }
  return EXIT_CODES.ok;
}

function help(out: NodeJS.WritableStream): number {
  out.write(`${CA_USAGE}\n`);
  return EXIT_CODES.ok;
}

/** `mesh-agent ca SUBCOMMAND ...`; errors are MeshErrors for runMain (usage: exit 2). */
export async function runCaCommand(argv: string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined) throw usageError('ca needs a command: init, intermediate, issue or show');
  switch (sub) {
    case 'init':
      return caInit(rest, out);
    case 'intermediate':
      return caIntermediate(rest, out);
    case 'issue':
      return caIssue(rest, out);
    case 'show':
      return caShow(rest, out);
    case '--help':
    case '-h':
    case 'help':
      return help(out);
    default:
      throw usageError(`unknown ca command "${sub}": use init, intermediate, issue or show`);
  }
}
