// Envoy's /certs and the certificate expiry gauges (issue 13), from the proxy's loaded secrets.
import type { StatsStore } from '../stats/store';
import type { CertificateInfo, LoadedSecret } from '../tls/secret-store';

const DAY_MS = 86_400_000;

/** Envoy's `days_until_expiration`: whole days left, 0 once expired. */
function daysLeft(cert: CertificateInfo, now: number): number {
  return Math.max(0, Math.floor((cert.expirationTime.getTime() - now) / DAY_MS));
}

/** RFC 3339 without milliseconds, as Envoy prints certificate times. */
function rfc3339(d: Date): string {
  return `${d.toISOString().slice(0, 19)}Z`;
}

function details(cert: CertificateInfo, now: number): object {
  return {
    path: cert.path,
    serial_number: cert.serialNumber,
    subject_alt_names: cert.subjectAltNames,
    // a uint64 in Envoy's proto JSON: a string
    days_until_expiration: String(daysLeft(cert, now)),
    valid_from: rfc3339(cert.validFrom),
    expiration_time: rfc3339(cert.expirationTime),
  };
}

/** GET /certs in Envoy's shape: one entry per secret, its trust bundle as `ca_cert`, its chain (leaf first) as `cert_chain`. */
export function renderCerts(secrets: readonly LoadedSecret[], now = Date.now()): object {
  return { certificates: secrets.map((s) => ({ ca_cert: s.trustBundle.map((c) => details(c, now)), cert_chain: s.chain.map((c) => details(c, now)) })) };
}

/**
 * Envoy's `server.days_until_first_cert_expiring` and `server.seconds_until_first_cert_expiring` over every
 * loaded certificate (chains and trust bundles), and per secret `sds.<name>.expiration_timestamp_seconds`
 * (the leaf's notAfter as unix time, what an alert compares with time()). Set at scrape time.
 */
export function refreshCertGauges(stats: StatsStore, secrets: readonly LoadedSecret[], now = Date.now()): void {
  let first: number | undefined;
  for (const s of secrets) {
    for (const c of [...s.chain, ...s.trustBundle]) {
      const t = c.expirationTime.getTime();
      if (first === undefined || t < first) first = t;
    }
    const leaf = s.chain[0];
    if (leaf) stats.gauge('sds.', s.name, 'expiration_timestamp_seconds').set(Math.floor(leaf.expirationTime.getTime() / 1000));
  }
  if (first === undefined) return; // no certificate: no expiry to report
  stats.gauge('server.', undefined, 'days_until_first_cert_expiring').set(Math.max(0, Math.floor((first - now) / DAY_MS)));
  stats.gauge('server.', undefined, 'seconds_until_first_cert_expiring').set(Math.max(0, Math.floor((first - now) / 1000)));
}
