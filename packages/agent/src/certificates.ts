// The local services' workload certificates (issue 13). Built-in issuer: the agent signs one per
// local service with the CA of mtls.ca.dir, writes it where the proxy's secret store watches, and
// renews it at half its life. Files source: the operator's files are checked before start; the proxy
// watches them itself. Either way nothing starts (no rule, no child) until the certificates are good.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { EXIT_CODES, MeshError, spiffeId, spiffeIdOf, type AgentConfig } from '@mesh-agent/shared-config';
import { certDirOf, mtlsSource, secretOf, type MtlsSource } from './mtls-settings';
import { issueWorkloadCertificate, loadCaDir, writeWorkloadFiles, type CaMaterial } from './pki/index';

interface Log {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface CertificateProvisionerOptions {
  agent: AgentConfig;
  /** the local services (spec.yaml) */
  services: string[];
  /** owner of the written files: the proxy's user when the agent is root and drops the children's privileges */
  owner?: { uid: number; gid: number };
  log: Log;
  /** a failed renewal (also shown in /latest_error) */
  onError: (err: unknown) => void;
  /** 0..1, for the ±5 % jitter of the renewal time (tests pin it) */
  random?: () => number;
}

export interface IssuedCertificate {
  service: string;
  spiffeId: string;
  serialNumber: string;
  notBefore: string;
  notAfter: string;
  /** file paths (never their contents) */
  certChain: string;
  privateKey: string;
  trustBundle: string;
}

/** What /config_dump/pilot-agent and /health show: no key material. */
export interface CertificateStatus {
  source: MtlsSource;
  identities: Record<string, string>;
  certificates: IssuedCertificate[];
  /** built-in issuer: when the next renewal runs */
  nextRotation: string | null;
  rotations: number;
  lastRotationError: { at: string; message: string } | null;
}

/** A file-sourced certificate that expires within this is reported (the issuer should have renewed it). */
export const EXPIRY_WARNING_MS = 60 * 60_000;
const RETRY_INITIAL_MS = 1000;
const RETRY_MAX_MS = 60_000;

export class CertificateProvisioner {
  private readonly source: MtlsSource;
  private readonly identities = new Map<string, string>();
  private readonly issued = new Map<string, IssuedCertificate>();
  private timer: NodeJS.Timeout | undefined;
  private nextAt: Date | undefined;
  private retryMs = RETRY_INITIAL_MS;
  private rotations = 0;
  private lastError: CertificateStatus['lastRotationError'] = null;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly opts: CertificateProvisionerOptions) {
    const source = mtlsSource(opts.agent);
    if (!source) throw new MeshError('MESH_AGENT_MTLS_OFF', 'no certificate source is configured (mtls.ca or mtls.files)');
    this.source = source;
  }

  private get mtls() {
    return this.opts.agent.mtls!;
  }

  /** The SPIFFE ID a local service presents (and is registered with). */
  identityOf(service: string): string | undefined {
    return this.identities.get(service);
  }

  /** Issues (built-in) or checks (files) every local service's certificate; throws MeshError (exit 2) naming the file and the fix. */
  async prepare(): Promise<void> {
    if (this.source === 'files') {
      this.checkFiles();
      return;
    }
    const ca = await this.loadCa();
    // the proxy user must reach <certDir>/<service>/ (0700, its own): the parent stays traversable
    fs.mkdirSync(certDirOf(this.opts.agent), { recursive: true, mode: 0o755 });
    await this.issueAll(ca);
  }

  private async loadCa(): Promise<CaMaterial> {
    const dir = this.mtls.ca!.dir;
    try {
      return await loadCaDir(dir);
    } catch (err) {
      const e = err as MeshError;
      throw new MeshError(e.code ?? 'MESH_PKI_CA_INVALID', `mtls.ca.dir ${dir}: ${e.message}`, { exitCode: e.exitCode ?? EXIT_CODES.usage, hint: e.hint, cause: err });
    }
  }

  private async issueAll(ca: CaMaterial): Promise<void> {
    const { trustDomain, certTtlSeconds } = this.mtls;
    const namespace = this.opts.agent.node.namespace;
    // every certificate is signed before any file is replaced: a failure leaves the old set whole
    const fresh = [];
    for (const service of this.opts.services) {
      const id = spiffeId(trustDomain, namespace, service);
      fresh.push({ service, id, cert: await issueWorkloadCertificate(ca, { spiffeId: id, ttlMs: certTtlSeconds * 1000 }) });
    }
    for (const { service, id, cert } of fresh) {
      const dir = path.join(certDirOf(this.opts.agent), service);
      const files = writeWorkloadFiles(dir, cert, this.opts.owner ?? {});
      this.identities.set(service, id);
      this.issued.set(service, { service, spiffeId: id, serialNumber: cert.serialNumber, notBefore: cert.notBefore.toISOString(), notAfter: cert.notAfter.toISOString(), certChain: files.certChain, privateKey: files.privateKey, trustBundle: files.trustBundle });
      this.opts.log.info({ service, spiffeId: id, serial: cert.serialNumber, notAfter: cert.notAfter.toISOString() }, `issued ${id} (serial ${cert.serialNumber}, valid until ${cert.notAfter.toISOString()}) into ${dir}`);
    }
  }

  /** Built-in issuer: renews every certificate at half its life (±5 %); a failed renewal is retried with back-off while the old one serves. */
  start(): void {
    if (this.source !== 'ca') return;
    this.stopped = false;
    this.schedule(this.halfLifeMs());
  }

  private halfLifeMs(): number {
    const jitter = 1 + ((this.opts.random ?? Math.random)() * 2 - 1) * 0.05;
    return Math.round((this.mtls.certTtlSeconds * 1000 * jitter) / 2);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.nextAt = new Date(Date.now() + delayMs);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.rotate().finally(() => (this.running = undefined));
    }, delayMs);
    this.timer.unref();
  }

  private async rotate(): Promise<void> {
    try {
      await this.issueAll(await this.loadCa());
      this.rotations += 1;
      this.retryMs = RETRY_INITIAL_MS;
      this.schedule(this.halfLifeMs());
    } catch (err) {
      const soonest = Math.min(...[...this.issued.values()].map((c) => Date.parse(c.notAfter)));
      const left = soonest - Date.now();
      const message = `renewing the workload certificates failed: ${(err as Error).message}; the current ones serve until ${new Date(soonest).toISOString()}${left <= 0 ? ' (expired: peers now refuse this host)' : ''}, retrying in ${Math.round(this.retryMs / 1000)} s`;
      this.lastError = { at: new Date().toISOString(), message };
      this.opts.onError(new MeshError('MESH_AGENT_CERT_ROTATION_FAILED', message, { hint: (err as MeshError).hint ?? `check mtls.ca.dir (${this.mtls.ca!.dir}) and ${certDirOf(this.opts.agent)}`, cause: err }));
      const delay = this.retryMs;
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
      this.schedule(delay);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.nextAt = undefined;
    await this.running;
  }

  status(): CertificateStatus {
    return {
      source: this.source,
      identities: Object.fromEntries(this.identities),
      certificates: [...this.issued.values()],
      nextRotation: this.nextAt?.toISOString() ?? null,
      rotations: this.rotations,
      lastRotationError: this.lastError,
    };
  }

  /** Files source: readable PEM, the key matches the leaf, the leaf carries a spiffe:// URI SAN and is valid now. */
  private checkFiles(): void {
    const files = this.mtls.files!;
    const read = (field: keyof typeof files): string => {
      const file = files[field];
      try {
        return fs.readFileSync(file, 'utf8');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        throw filesError(`mtls.files.${field}: cannot read ${file}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`, `point mtls.files.${field} at the file your issuer (Vault agent, cert-manager, step, SPIRE helper) writes, and check it exists before the agent starts`);
      }
    };
    const chainPem = read('certChain');
    const keyPem = read('privateKey');
    const bundlePem = read('trustBundle');
    const chain = pemCertificates(chainPem, `mtls.files.certChain (${files.certChain})`);
    const bundle = pemCertificates(bundlePem, `mtls.files.trustBundle (${files.trustBundle})`);
    const leaf = chain[0]!;
    let key: crypto.KeyObject;
    try {
      key = crypto.createPrivateKey(keyPem);
    } catch (err) {
      throw filesError(`mtls.files.privateKey (${files.privateKey}) is not a PEM private key: ${(err as Error).message}`, 'put the private key of the leaf certificate in PEM there');
    }
    if (!leaf.checkPrivateKey(key)) {
      throw filesError(`mtls.files.privateKey (${files.privateKey}) does not match the first certificate of mtls.files.certChain (${files.certChain})`, 'give the key that belongs to the leaf (compare `openssl pkey -pubout` with `openssl x509 -pubkey`); the chain starts with the leaf');
    }
    const id = spiffeIdOf(leaf.subjectAltName);
    if (!id) {
      throw filesError(`the leaf of mtls.files.certChain (${files.certChain}) has no spiffe:// URI SAN (SAN: ${leaf.subjectAltName ?? 'none'})`, `issue it with a URI SAN such as ${spiffeId(this.mtls.trustDomain, this.opts.agent.node.namespace, this.opts.services[0]!)}`);
    }
    const notAfter = new Date(leaf.validTo);
    const now = Date.now();
    if (notAfter.getTime() <= now) throw filesError(`the leaf of mtls.files.certChain (${files.certChain}) expired on ${notAfter.toISOString()}`, 'let your issuer renew it (the proxy picks the new file up on its own)');
    if (new Date(leaf.validFrom).getTime() > now) throw filesError(`the leaf of mtls.files.certChain (${files.certChain}) is not valid before ${new Date(leaf.validFrom).toISOString()}`, "check this host's clock (NTP)");
    const anchored = chain.some((c) => bundle.some((root) => root.fingerprint256 === c.fingerprint256 || (c.checkIssued(root) && c.verify(root.publicKey))));
    if (!anchored) {
      throw filesError(`mtls.files.certChain (${files.certChain}) does not chain to any certificate of mtls.files.trustBundle (${files.trustBundle})`, 'put the root (or intermediate) that issued the chain into the trust bundle, and the intermediates after the leaf in the chain');
    }
    // the proxy runs as proxy.uid/gid and reads the files itself
    const owner = this.opts.owner;
    if (owner) {
      for (const field of ['certChain', 'privateKey', 'trustBundle'] as const) {
        const st = fs.statSync(files[field]);
        if (!readableBy(st, owner)) {
          throw filesError(`mtls.files.${field} (${files[field]}) is not readable by the proxy's user ${owner.uid}:${owner.gid} (owner ${st.uid}:${st.gid}, mode ${(st.mode & 0o777).toString(8)})`, `chown ${owner.uid}:${owner.gid} ${files[field]} (keep a key mode 0600), or have your issuer write it so`);
        }
      }
    }
    if (notAfter.getTime() - now < EXPIRY_WARNING_MS) {
      this.opts.log.warn({ file: files.certChain, notAfter: notAfter.toISOString() }, `the certificate ${files.certChain} expires at ${notAfter.toISOString()}, in less than an hour: is its issuer renewing it?`);
    }
    const secret = secretOf(this.opts.agent, this.opts.services[0]!);
    for (const service of this.opts.services) {
      this.identities.set(service, id);
      this.issued.set(service, { service, spiffeId: id, serialNumber: leaf.serialNumber, notBefore: new Date(leaf.validFrom).toISOString(), notAfter: notAfter.toISOString(), certChain: secret.certChain, privateKey: secret.privateKey, trustBundle: secret.trustBundle });
    }
    this.opts.log.info({ spiffeId: id, file: files.certChain }, `using ${id} from ${files.certChain} for ${this.opts.services.join(', ')}`);
  }
}

function readableBy(st: fs.Stats, who: { uid: number; gid: number }): boolean {
  if (who.uid === 0) return true;
  if (st.uid === who.uid) return (st.mode & 0o400) !== 0;
  if (st.gid === who.gid) return (st.mode & 0o040) !== 0;
  return (st.mode & 0o004) !== 0;
}

function filesError(message: string, hint: string): MeshError {
  return new MeshError('MESH_AGENT_CERT_INVALID', message, { exitCode: EXIT_CODES.usage, hint });
}

function pemCertificates(pem: string, label: string): crypto.X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw filesError(`${label} holds no PEM certificate`, 'put the certificates in PEM ("-----BEGIN CERTIFICATE-----") there');
  return blocks.map((block, i) => {
    try {
      return new crypto.X509Certificate(block);
    } catch (err) {
      throw filesError(`${label}: certificate ${i + 1} is not valid PEM: ${(err as Error).message}`, 'replace it with the PEM your issuer wrote');
    }
  });
}
