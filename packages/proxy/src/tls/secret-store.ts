// Envoy's file-sourced SDS (issue 13): TLS secrets named in the bootstrap, loaded from files, watched
// and swapped on change. A handshake takes the secret's current SecureContext, so a rotation never
// touches an established connection and the next handshake already uses the new certificate.
import crypto from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';
import { ConfigError, spiffeIdOf, type TlsSecret as TlsSecretConfig } from '@mesh-agent/shared-config';
import type { StatsStore } from '../stats/store';

/** How often the secret files are stat()ed: fs.watchFile survives rename-replace and symlink swaps (Kubernetes secret volumes, Vault agent). */
export const SECRET_POLL_MS = 1000;

export interface CertificateInfo {
  path: string;
  serialNumber: string;
  /** Envoy's shape: one key per entry (`uri`, `dns`, `ip_address`). */
  subjectAltNames: Array<{ uri?: string; dns?: string; ip_address?: string }>;
  validFrom: Date;
  expirationTime: Date;
  subject: string;
  issuer: string;
}

/** One loaded secret; replaced as a whole when its files change. */
export interface LoadedSecret {
  readonly name: string;
  readonly config: TlsSecretConfig;
  /** cert, key and CA: serves a TLS server (inbound) and a TLS client (outbound) alike. */
  readonly secureContext: tls.SecureContext;
  /** The leaf's SPIFFE ID (first `spiffe://` URI SAN); undefined when the certificate has none. */
  readonly identity: string | undefined;
  readonly chain: CertificateInfo[];
  readonly trustBundle: CertificateInfo[];
  readonly loadedAt: Date;
  /** Increments on every accepted reload. */
  readonly version: number;
}

export class SecretLoadError extends Error {
  constructor(readonly secret: string, readonly field: 'certChain' | 'privateKey' | 'trustBundle' | 'pair', readonly path: string, message: string) {
    super(message);
  }
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

function certificatesIn(pem: string): crypto.X509Certificate[] {
  return (pem.match(PEM_CERT) ?? []).map((block) => new crypto.X509Certificate(block));
}

function sansOf(cert: crypto.X509Certificate): CertificateInfo['subjectAltNames'] {
  if (!cert.subjectAltName) return [];
  return cert.subjectAltName.split(', ').flatMap((entry): CertificateInfo['subjectAltNames'] => {
    if (entry.startsWith('URI:')) return [{ uri: entry.slice(4) }];
    if (entry.startsWith('DNS:')) return [{ dns: entry.slice(4) }];
    if (entry.startsWith('IP Address:')) return [{ ip_address: entry.slice(11) }];
    return [];
  });
}

function describe(cert: crypto.X509Certificate, path: string): CertificateInfo {
  return {
    path, serialNumber: cert.serialNumber.toLowerCase(), subjectAltNames: sansOf(cert),
    validFrom: new Date(cert.validFrom), expirationTime: new Date(cert.validTo), subject: cert.subject, issuer: cert.issuer,
  };
}

function readPem(secret: TlsSecretConfig, field: 'certChain' | 'privateKey' | 'trustBundle'): string {
  const path = secret[field];
  try {
    return fs.readFileSync(path, 'utf8');
  } catch (err) {
    throw new SecretLoadError(secret.name, field, path, `cannot read ${field} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** Reads and checks one secret's files: PEM certificates present, the key matches the leaf. Throws SecretLoadError. */
export function loadSecret(config: TlsSecretConfig, version = 1): LoadedSecret {
  try {
    return readSecret(config, version);
  } catch (err) {
    if (err instanceof SecretLoadError) throw err;
    // whatever else the crypto layer throws is still this secret's files' fault (and a reload runs in a timer: never throw there)
    throw new SecretLoadError(config.name, 'pair', config.certChain, `${config.name}: cannot use the files: ${(err as Error).message}`);
  }
}

function readSecret(config: TlsSecretConfig, version: number): LoadedSecret {
  const chainPem = readPem(config, 'certChain');
  const keyPem = readPem(config, 'privateKey');
  const bundlePem = readPem(config, 'trustBundle');
  let chain: crypto.X509Certificate[];
  let bundle: crypto.X509Certificate[];
  try { chain = certificatesIn(chainPem); } catch (err) { throw new SecretLoadError(config.name, 'certChain', config.certChain, `${config.certChain}: not a PEM certificate chain: ${(err as Error).message}`); }
  try { bundle = certificatesIn(bundlePem); } catch (err) { throw new SecretLoadError(config.name, 'trustBundle', config.trustBundle, `${config.trustBundle}: not PEM certificates: ${(err as Error).message}`); }
  if (chain.length === 0) throw new SecretLoadError(config.name, 'certChain', config.certChain, `${config.certChain} holds no PEM certificate`);
  if (bundle.length === 0) throw new SecretLoadError(config.name, 'trustBundle', config.trustBundle, `${config.trustBundle} holds no PEM certificate`);
  let key: crypto.KeyObject;
  try { key = crypto.createPrivateKey(keyPem); } catch (err) { throw new SecretLoadError(config.name, 'privateKey', config.privateKey, `${config.privateKey}: not a PEM private key: ${(err as Error).message}`); }
  if (!chain[0]!.checkPrivateKey(key)) throw new SecretLoadError(config.name, 'pair', config.privateKey, `${config.privateKey} is not the key of the first certificate in ${config.certChain}`);
  let secureContext: tls.SecureContext;
  try {
    secureContext = tls.createSecureContext({ cert: chainPem, key: keyPem, ca: bundlePem, minVersion: 'TLSv1.2' });
  } catch (err) {
    throw new SecretLoadError(config.name, 'pair', config.certChain, `${config.name}: TLS rejects the files: ${(err as Error).message}`);
  }
  return {
    name: config.name, config, secureContext, identity: spiffeIdOf(chain[0]!.subjectAltName),
    chain: chain.map((c) => describe(c, config.certChain)), trustBundle: bundle.map((c) => describe(c, config.trustBundle)),
    loadedAt: new Date(), version,
  };
}

export interface SecretStoreEvents {
  /** A watched secret was reloaded (new certificate in use for the next handshake). */
  onUpdated?: (secret: LoadedSecret) => void;
  /** A changed file could not be used; the previous secret stays in use. */
  onRejected?: (error: SecretLoadError) => void;
}

/**
 * The proxy's secrets by name. `configure` loads every secret at once and throws a ConfigError
 * naming the field when any is unusable (start-up and updates: nothing half-applied); afterwards
 * the files are polled and a changed secret is swapped in, or rejected and counted.
 */
export class SecretStore {
  private readonly secrets = new Map<string, LoadedSecret>();
  private readonly watched = new Map<string, () => void>();
  private readonly reloadTimers = new Map<string, NodeJS.Timeout>();

  constructor(private readonly stats: StatsStore, private readonly events: SecretStoreEvents = {}, private readonly pollMs = SECRET_POLL_MS) {}

  get(name: string): LoadedSecret | undefined {
    return this.secrets.get(name);
  }

  all(): LoadedSecret[] {
    return [...this.secrets.values()];
  }

  /** Loads `configs` (all or nothing) and watches their files; secrets no longer named are dropped. */
  configure(configs: readonly TlsSecretConfig[]): void {
    const next = new Map<string, LoadedSecret>();
    const issues: { path: string; message: string }[] = [];
    configs.forEach((config, index) => {
      const current = this.secrets.get(config.name);
      if (current && sameFiles(current.config, config)) { next.set(config.name, current); return; }
      try {
        next.set(config.name, loadSecret(config, (current?.version ?? 0) + 1));
      } catch (err) {
        if (!(err instanceof SecretLoadError)) throw err; // loadSecret throws nothing else
        issues.push({ path: `secrets.${index}.${err.field === 'pair' ? 'privateKey' : err.field}`, message: err.message });
      }
    });
    if (issues.length > 0) {
      throw new ConfigError(issues, { source: 'proxy bootstrap', code: 'MESH_PROXY_SECRET_INVALID', hint: 'point the secret at a readable PEM certificate chain (leaf first), its private key and the CA bundle; mesh-agent ca issue writes such a set' });
    }
    for (const name of this.secrets.keys()) if (!next.has(name)) { this.unwatch(name); this.stats.removeScope('sds.', name); }
    this.secrets.clear();
    for (const [name, secret] of next) {
      this.secrets.set(name, secret);
      this.watch(secret.config);
      // present (0) from the start, as Envoy's: an alert on update_rejected needs the series before the first rotation
      this.stats.counter('sds.', name, 'update_success');
      this.stats.counter('sds.', name, 'update_rejected');
    }
  }

  private watch(config: TlsSecretConfig): void {
    this.unwatch(config.name);
    const paths = [config.certChain, config.privateKey, config.trustBundle];
    const listener = (cur: fs.Stats, prev: fs.Stats) => {
      if (cur.mtimeMs === prev.mtimeMs && cur.ino === prev.ino && cur.size === prev.size) return;
      this.scheduleReload(config.name);
    };
    for (const path of paths) fs.watchFile(path, { interval: this.pollMs, persistent: false }, listener);
    this.watched.set(config.name, () => { for (const path of paths) fs.unwatchFile(path, listener); });
  }

  private unwatch(name: string): void {
    this.watched.get(name)?.();
    this.watched.delete(name);
    clearTimeout(this.reloadTimers.get(name));
    this.reloadTimers.delete(name);
  }

  /** A writer replaces the three files one after another: wait for the set to settle before loading it. */
  private scheduleReload(name: string): void {
    clearTimeout(this.reloadTimers.get(name));
    const timer = setTimeout(() => { this.reloadTimers.delete(name); this.reload(name); }, Math.min(200, this.pollMs));
    timer.unref();
    this.reloadTimers.set(name, timer);
  }

  /** Re-reads one secret's files now; returns the secret in use afterwards. */
  reload(name: string): LoadedSecret | undefined {
    const current = this.secrets.get(name);
    if (!current) return undefined;
    try {
      const next = loadSecret(current.config, current.version + 1);
      this.secrets.set(name, next);
      this.stats.counter('sds.', name, 'update_success').inc();
      this.events.onUpdated?.(next);
      return next;
    } catch (err) {
      if (!(err instanceof SecretLoadError)) throw err;
      this.stats.counter('sds.', name, 'update_rejected').inc();
      this.events.onRejected?.(err);
      return current;
    }
  }

  close(): void {
    for (const name of [...this.watched.keys()]) this.unwatch(name);
  }
}

function sameFiles(a: TlsSecretConfig, b: TlsSecretConfig): boolean {
  return a.certChain === b.certChain && a.privateKey === b.privateKey && a.trustBundle === b.trustBundle;
}
