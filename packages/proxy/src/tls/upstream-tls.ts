// Outbound mTLS origination (issue 13): a connection to an endpoint with a registered identity is TLS,
// presents the cluster's secret, checks the chain against the secret's trust bundle and that the
// peer's leaf carries exactly the registered SPIFFE ID as a URI SAN (hostnames play no part).
import net from 'node:net';
import tls from 'node:tls';
import { spiffeIdOf, uriSans } from '@mesh-agent/shared-config';
import type { StatsStore } from '../stats/store';
import type { LoadedSecret } from './secret-store';

/** What a cluster's `tls` resolves to; the pool compares these by reference. */
export interface UpstreamTlsSettings { readonly secret: string; readonly sni: string | undefined }

export interface SecretLookup { get(name: string): LoadedSecret | undefined }

/** What the trace header says about a plaintext upstream connection. */
export const PLAINTEXT_TRANSPORT = 'plaintext';

/** ALPN offered to peer sidecars of an HTTP/1.1 cluster. */
export const UPSTREAM_ALPN = ['http/1.1'];
/** ALPN offered to the peers of an HTTP/2 cluster: h2 only (the pool speaks nothing else on those connections). */
export const UPSTREAM_ALPN_H2 = ['h2'];

/** The ALPN list a cluster's mTLS connections offer, by the cluster's protocol. */
export function upstreamAlpn(protocol: 'http1' | 'http2'): string[] {
  return protocol === 'http2' ? UPSTREAM_ALPN_H2 : UPSTREAM_ALPN;
}

/** The peer presented a certificate that chains fine but names another identity (Envoy's `ssl.fail_verify_san`). */
export class PeerIdentityError extends Error {
  readonly code = 'MESH_TLS_PEER_IDENTITY';
  constructor(readonly expected: string, readonly presented: string[]) {
    super(`peer identity ${presented.length > 0 ? presented.join(',') : '(none)'} is not the registered ${expected}`);
  }
}

/** OpenSSL's certificate verification results (X509_V_ERR_* as Node names them): Envoy's `ssl.fail_verify_error`. */
const VERIFY_ERROR = /^(CERT_|UNABLE_TO_|SELF_SIGNED_CERT|DEPTH_ZERO_SELF_SIGNED|INVALID_CA|INVALID_PURPOSE|PATH_LENGTH_EXCEEDED|KEYUSAGE_NO|ERROR_IN_CERT)/;

export type TlsFailureKind = 'fail_verify_san' | 'fail_verify_error' | 'other';

export function tlsFailureKind(err: Error | undefined): TlsFailureKind {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'MESH_TLS_PEER_IDENTITY') return 'fail_verify_san';
  if (code && VERIFY_ERROR.test(code)) return 'fail_verify_error';
  return 'other';
}

/** Envoy's `%UPSTREAM_TRANSPORT_FAILURE_REASON%`: why the TLS handshake with the upstream failed. */
export function transportFailureReason(err: Error | undefined): string {
  if (!err) return 'TLS error: connection closed during the handshake';
  const code = (err as NodeJS.ErrnoException).code;
  return `TLS error: ${code && code !== 'MESH_TLS_PEER_IDENTITY' && !err.message.includes(code) ? `${code}: ` : ''}${err.message}`;
}

/**
 * Counts one handshake of `cluster` Envoy's way: `ssl.handshake` on success; on failure
 * `ssl.connection_error` plus `ssl.fail_verify_san` or `ssl.fail_verify_error` when the certificate was the cause.
 */
export function countHandshake(stats: StatsStore, cluster: string, err: Error | undefined, ok: boolean): void {
  if (ok) { stats.counter('cluster.', cluster, 'ssl.handshake').inc(); return; }
  stats.counter('cluster.', cluster, 'ssl.connection_error').inc();
  const kind = tlsFailureKind(err);
  if (kind !== 'other') stats.counter('cluster.', cluster, `ssl.${kind}`).inc();
}

/**
 * Opens a TLS connection to `host` presenting the secret's current certificate (so a rotation applies to
 * the next connection). A secret that is not loaded fails the connection (a connect failure), never throws.
 */
export function connectUpstreamTls(host: { address: string; port: number; identity: string | undefined }, settings: UpstreamTlsSettings, secrets: SecretLookup | undefined, alpn: string[] = UPSTREAM_ALPN): net.Socket {
  const secret = secrets?.get(settings.secret);
  const expected = host.identity;
  if (!secret || expected === undefined) {
    const socket = new net.Socket();
    const why = !secret ? `secret "${settings.secret}" is not loaded` : 'the endpoint has no identity';
    process.nextTick(() => socket.destroy(Object.assign(new Error(why), { code: 'MESH_TLS_NO_SECRET' })));
    return socket;
  }
  return tls.connect({
    host: host.address,
    port: host.port,
    secureContext: secret.secureContext,
    servername: settings.sni,
    ALPNProtocols: alpn,
    minVersion: 'TLSv1.2',
    rejectUnauthorized: true,
    // Called only once the chain verified: the identity check replaces the hostname check.
    checkServerIdentity: (_name, cert) => {
      const presented = uriSans(cert.subjectaltname);
      return presented.includes(expected) ? undefined : new PeerIdentityError(expected, presented);
    },
  });
}

/** The peer's SPIFFE ID and the TLS version of an established connection (for the trace header). */
export function describeTls(socket: tls.TLSSocket): { protocol: string; peer: string | undefined } {
  return { protocol: socket.getProtocol() ?? 'unknown', peer: spiffeIdOf(socket.getPeerCertificate().subjectaltname) };
}
