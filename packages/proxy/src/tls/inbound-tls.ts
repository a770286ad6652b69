// Inbound mTLS on the one listener (issue 13): Envoy's tls_inspector and filter-chain match, for the
// captured service ports whose `inbound[].tls.mode` is strict or permissive, and for TLS sent to the
// listener itself from another host (the direct path: served only as authenticated inbound traffic).
import type { X509Certificate } from 'node:crypto';
import type net from 'node:net';
import tls from 'node:tls';
import type { MeshLogger } from '@mesh-agent/admin-kit';
import { spiffeIdOf } from '@mesh-agent/shared-config';
import type { ConnectionOrigin } from '../http/connection-origin';
import { stripV4Mapped } from '../http/connection-origin';
import { ResponseFlag } from '../http/response-flags';
import { LogLimiter } from '../observability/log-limiter';
import type { InboundPortState, ProxyRuntime } from '../runtime';
import type { Counter, StatsStore } from '../stats/store';

/** What the acceptor learned about a connection's transport; DownstreamConnection gets it with the origin. */
export interface DownstreamTransport {
  readonly tls: boolean;
  /** The client certificate's SPIFFE ID (first `spiffe://` URI SAN); undefined on plaintext or a certificate without one. */
  readonly peerIdentity?: string;
  /** `TLSv1.3`, `TLSv1.2`. */
  readonly protocol?: string;
  /** Istio's `x-forwarded-client-cert` for the local application: `By=<own id>;Hash=<sha256 of the client cert>;Subject="";URI=<caller id>`. */
  readonly clientCertDetails?: string;
  /** The protocol the client and the acceptor agreed on by ALPN: `h2` goes to the HTTP/2 codec, anything else (none included) to HTTP/1. */
  readonly alpn?: string;
}

export const PLAINTEXT: DownstreamTransport = Object.freeze({ tls: false });

/** Both codecs (issue 14): h2 first, as Envoy's listener offers it; a client without ALPN gets HTTP/1 (or h2 with prior knowledge). */
export const INBOUND_ALPN = ['h2', 'http/1.1'];
/** The largest ClientHello record the direct path waits for (one TLS record). */
const MAX_CLIENT_HELLO_BYTES = 16 * 1024 + 5;
const TLS_HANDSHAKE_RECORD = 0x16;
export const INBOUND_LOG_INTERVAL_MS = 10_000;

/** Envoy's listener TLS counters (`listener.<address>_<port>.ssl.*`) and the filter-chain miss. */
export interface ListenerTlsStats {
  handshake: Counter;
  connection_error: Counter;
  fail_verify_error: Counter;
  fail_verify_no_cert: Counter;
  no_certificate: Counter;
  no_filter_chain_match: Counter;
  /** Nothing arrived within the headers timeout while the first bytes were awaited (Envoy's listener filter timeout). */
  downstream_pre_cx_timeout: Counter;
  /** The TLS handshake did not finish within the headers timeout. */
  downstream_cx_transport_socket_connect_timeout: Counter;
}

export function listenerTlsStats(stats: StatsStore, listenerScope: string): ListenerTlsStats {
  const c = (leaf: string) => stats.counter('listener.', listenerScope, leaf);
  return {
    handshake: c('ssl.handshake'), connection_error: c('ssl.connection_error'), fail_verify_error: c('ssl.fail_verify_error'),
    fail_verify_no_cert: c('ssl.fail_verify_no_cert'), no_certificate: c('ssl.no_certificate'),
    no_filter_chain_match: c('no_filter_chain_match'), downstream_pre_cx_timeout: c('downstream_pre_cx_timeout'),
    downstream_cx_transport_socket_connect_timeout: c('downstream_cx_transport_socket_connect_timeout'),
  };
}

export type HandshakeFailure = 'fail_verify_error' | 'fail_verify_no_cert' | 'connection_error';

/**
 * Which Envoy counter a refused handshake goes to. A chain the trust bundle does not vouch for (unknown
 * CA, expired, not yet valid: OpenSSL's X509_V_ERR_* names from the verify result) is a verify error;
 * a client that sent no certificate fails the handshake itself; anything else is a connection error.
 */
export function classifyHandshakeFailure(code: string | undefined, fromVerifyResult: boolean): HandshakeFailure {
  if (code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE' || code === 'NO_PEER_CERTIFICATE') return 'fail_verify_no_cert';
  return fromVerifyResult ? 'fail_verify_error' : 'connection_error';
}

export type ClientHelloScan = { kind: 'incomplete' } | { kind: 'invalid' } | { kind: 'hello'; sni: string | undefined };

/**
 * The SNI of a TLS ClientHello in `buf` (the first record; RFC 8446 4.1.2, RFC 6066 3). Like Envoy's
 * tls_inspector it only reads: the handshake itself is Node's. `incomplete` until the whole record is in.
 */
export function scanClientHello(buf: Buffer): ClientHelloScan {
  if (buf.length < 5) return { kind: 'incomplete' };
  if (buf[0] !== TLS_HANDSHAKE_RECORD) return { kind: 'invalid' };
  const recordLen = buf.readUInt16BE(3);
  if (recordLen > MAX_CLIENT_HELLO_BYTES - 5) return { kind: 'invalid' };
  if (buf.length < 5 + recordLen) return { kind: 'incomplete' };
  const rec = buf.subarray(5, 5 + recordLen);
  if (rec.length < 4 || rec[0] !== 0x01) return { kind: 'invalid' };
  // a ClientHello spread over several records (very large) is read as one without an SNI
  const end = Math.min(rec.length, 4 + rec.readUIntBE(1, 3));
  let p = 4 + 2 + 32; // handshake header, legacy_version, random
  if (p + 1 > end) return { kind: 'invalid' };
  p += 1 + rec[p]!; // session id
  if (p + 2 > end) return { kind: 'invalid' };
  p += 2 + rec.readUInt16BE(p); // cipher suites
  if (p + 1 > end) return { kind: 'invalid' };
  p += 1 + rec[p]!; // compression methods
  if (p + 2 > end) return { kind: 'hello', sni: undefined }; // no extensions
  const extEnd = Math.min(end, p + 2 + rec.readUInt16BE(p));
  p += 2;
  while (p + 4 <= extEnd) {
    const type = rec.readUInt16BE(p);
    const len = rec.readUInt16BE(p + 2);
    p += 4;
    if (p + len > extEnd) return { kind: 'invalid' };
    if (type === 0) {
      // server_name_list: list length, then name_type 0 (host_name), length, name
      let q = p + 2;
      const listEnd = Math.min(p + len, p + 2 + (len >= 2 ? rec.readUInt16BE(p) : 0));
      while (q + 3 <= listEnd) {
        const nameType = rec[q]!;
        const nameLen = rec.readUInt16BE(q + 1);
        q += 3;
        if (q + nameLen > listEnd) return { kind: 'invalid' };
        if (nameType === 0) return { kind: 'hello', sni: rec.toString('latin1', q, q + nameLen) };
        q += nameLen;
      }
      return { kind: 'hello', sni: undefined };
    }
    p += len;
  }
  return { kind: 'hello', sni: undefined };
}

/** Istio's outbound SNI, `outbound_.<port>_.<subset>_.<service>.<namespace>.svc.<domain>`: the port and service it names. */
export function parseOutboundSni(sni: string): { port: number; service: string } | undefined {
  const m = /^outbound_\.(\d{1,5})_\.[^.]*_\.([^.]+)\./.exec(sni);
  return m ? { port: Number(m[1]), service: m[2]! } : undefined;
}

export interface InboundAcceptorHooks {
  /** The connection is classified and its transport known: hand it to the HTTP codec. */
  serve(socket: net.Socket, origin: ConnectionOrigin, transport: DownstreamTransport): void;
  /** The connection ended before it was served (refused, timed out, handshake failed): the listener's accounting. */
  closedUnserved(): void;
}

/** Envoy's XFCC element as Istio's sidecars set it on inbound (forward_client_cert_details SANITIZE_SET: By, Hash, Subject, URI). */
export function clientCertDetails(localIdentity: string | undefined, cert: X509Certificate, peerIdentity: string | undefined): string {
  const hash = cert.fingerprint256.replace(/:/g, '').toLowerCase();
  // a header value: the subject's lines joined, control characters dropped, quotes escaped
  const subject = [...(cert.subject ?? '').split('\n').filter(Boolean).join(',')].filter((c) => c >= ' ' && c !== '\x7f').join('').replace(/"/g, '\\"');
  return `${localIdentity ? `By=${localIdentity};` : ''}Hash=${hash};Subject="${subject}"${peerIdentity ? `;URI=${peerIdentity}` : ''}`;
}

/** Node's tls.Server checks the client chain after the handshake (VerifyCallback accepts, the result is read here); a TLSSocket made outside a tls.Server must do the same. */
function peerVerifyError(socket: tls.TLSSocket): { code?: string; message: string } | undefined {
  const handle = (socket as unknown as { _handle?: { verifyError?: () => (Error & { code?: string }) | null } })._handle;
  if (typeof handle?.verifyError !== 'function') return { code: 'VERIFY_RESULT_UNAVAILABLE', message: 'the TLS handle offers no verify result' };
  const err = handle.verifyError();
  return err ? { code: err.code, message: err.message } : undefined;
}

/**
 * Decides what an accepted connection's first bytes mean where TLS is configured and terminates
 * mTLS. Everything else (no TLS on the port, outbound, local) never reaches it: that path stays as it was.
 */
export class InboundAcceptor {
  private readonly refusedLog = new LogLimiter(INBOUND_LOG_INTERVAL_MS);
  private readonly handshakeLog = new LogLimiter(INBOUND_LOG_INTERVAL_MS);
  /** Sockets still being sniffed or in their handshake: not yet the proxy's connections, closed with it. */
  private readonly pending = new Set<net.Socket>();

  constructor(private readonly rt: ProxyRuntime, private readonly stats: ListenerTlsStats, private readonly logger: MeshLogger, private readonly hooks: InboundAcceptorHooks) {}

  /** true: the acceptor owns the socket from here (it calls `serve` or closes it); false: serve it as plaintext now. */
  take(socket: net.Socket, origin: ConnectionOrigin): boolean {
    const snap = this.rt.snapshot;
    if (origin.kind === 'inbound') {
      const entry = snap.inboundPorts.get(origin.port);
      if (!entry?.tls || entry.tls.mode === 'disable') return false;
      this.sniff(socket, origin, entry);
      return true;
    }
    if (origin.kind === 'refused' && origin.direct && snap.inboundTlsPorts > 0) {
      this.sniff(socket, origin, undefined);
      return true;
    }
    return false;
  }

  /** The proxy closes: connections not yet handed over go too (server.close() would wait for them). */
  destroyPending(): void {
    for (const s of this.pending) s.destroy();
    this.pending.clear();
  }

  /** Waits for the first bytes (bounded by the headers timeout); `entry` undefined = the direct path. */
  private sniff(socket: net.Socket, origin: ConnectionOrigin, entry: InboundPortState | undefined): void {
    const rt = this.rt;
    const peer = stripV4Mapped(socket.remoteAddress ?? '');
    const startedAt = Date.now();
    let served = false;
    let buf: Buffer | undefined;
    socket.setNoDelay(true);
    socket.on('error', () => { /* 'close' follows */ });
    this.pending.add(socket);
    socket.once('close', () => {
      this.pending.delete(socket);
      if (!served) { served = true; this.hooks.closedUnserved(); }
    });
    const timer = setTimeout(() => {
      try { this.stats.downstream_pre_cx_timeout.inc(); socket.destroy(); } catch (err) { rt.onInternalError(err, 'inbound first-bytes timeout'); }
    }, rt.limits.headersTimeoutMs);
    timer.unref();
    const done = (): Buffer => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.pause();
      const first = buf!;
      socket.unshift(first);
      return first;
    };
    const handOver = (s: net.Socket, o: ConnectionOrigin, transport: DownstreamTransport) => {
      served = true;
      this.pending.delete(socket);
      this.hooks.serve(s, o, transport);
      s.resume();
    };
    const onData = (chunk: Buffer) => {
      try {
        buf = buf === undefined ? chunk : Buffer.concat([buf, chunk]);
        if (entry) {
          // a captured port with TLS configured: the first byte decides
          const first = done();
          if (first[0] === TLS_HANDSHAKE_RECORD) { this.terminate(socket, origin, entry, peer, () => { served = true; this.pending.delete(socket); }); return; }
          if (entry.tls!.mode === 'strict') { this.refusePlaintext(socket, entry, peer, first.length, startedAt); return; }
          handOver(socket, origin, PLAINTEXT);
          return;
        }
        // the direct path: only a ClientHello naming a local TLS port is served, the rest is refused as before
        const scan = buf[0] === TLS_HANDSHAKE_RECORD ? scanClientHello(buf) : { kind: 'invalid' as const };
        if (scan.kind === 'incomplete') return;
        done();
        if (buf[0] !== TLS_HANDSHAKE_RECORD) { handOver(socket, origin, PLAINTEXT); return; }
        const target = scan.kind === 'hello' && scan.sni !== undefined ? this.directTarget(scan.sni) : undefined;
        if (!target) { this.refuseDirectTls(socket, origin, peer, scan.kind === 'hello' ? scan.sni : undefined, buf.length, startedAt); return; }
        this.terminate(socket, { kind: 'inbound', cluster: target.cluster, port: target.port }, target, peer, () => { served = true; this.pending.delete(socket); });
      } catch (err) {
        rt.onInternalError(err, 'inbound first bytes');
        socket.destroy();
      }
    };
    socket.on('data', onData);
  }

  /** The inbound port a direct connection's SNI names: same port and service, TLS configured. */
  private directTarget(sni: string): InboundPortState | undefined {
    const named = parseOutboundSni(sni);
    if (!named) return undefined;
    const entry = this.rt.snapshot.inboundPorts.get(named.port);
    if (!entry?.tls || entry.tls.mode === 'disable' || entry.service !== named.service) return undefined;
    return entry;
  }

  /** mTLS termination: client certificate required and checked against the secret's trust bundle. */
  private terminate(raw: net.Socket, origin: ConnectionOrigin, entry: InboundPortState, peer: string, onServed: () => void): void {
    const rt = this.rt;
    const secret = rt.secrets.get(entry.tls!.secret!);
    if (!secret) {
      // the schema ties inbound tls to a defined secret; a missing one is a bug, refused closed
      this.handshakeFailed(peer, entry.port, 'connection_error', 'NO_SECRET', `secret ${entry.tls!.secret!} is not loaded`);
      raw.destroy();
      return;
    }
    let settled = false;
    const socket = new tls.TLSSocket(raw, {
      isServer: true, secureContext: secret.secureContext, requestCert: true, rejectUnauthorized: true, ALPNProtocols: INBOUND_ALPN,
    });
    // from here the TLS socket is what gets destroyed: destroying the raw one beneath a live TLSWrap crashes Node (SIGSEGV, Node 20)
    this.pending.delete(raw);
    this.pending.add(socket);
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      try { this.stats.downstream_cx_transport_socket_connect_timeout.inc(); socket.destroy(); } catch (err) { rt.onInternalError(err, 'inbound TLS handshake timeout'); }
    }, rt.limits.headersTimeoutMs);
    timer.unref();
    socket.on('error', (err: Error & { code?: string }) => {
      try {
        clearTimeout(timer);
        if (settled) return; // after the hand-over the connection's own handlers see it ('close' follows)
        settled = true;
        this.handshakeFailed(peer, entry.port, classifyHandshakeFailure(err.code, false), err.code, err.message);
        socket.destroy();
      } catch (e) { rt.onInternalError(e, 'inbound TLS error'); }
    });
    socket.once('close', () => {
      this.pending.delete(socket);
      try {
        clearTimeout(timer);
        if (settled) return;
        settled = true; // the client went away mid-handshake
        this.handshakeFailed(peer, entry.port, 'connection_error', 'ECONNRESET', 'the client closed the connection during the TLS handshake');
      } catch (e) { rt.onInternalError(e, 'inbound TLS close'); }
    });
    socket.once('secure', () => {
      try {
        clearTimeout(timer);
        if (settled) return;
        settled = true;
        const verify = peerVerifyError(socket);
        if (verify) {
          this.handshakeFailed(peer, entry.port, classifyHandshakeFailure(verify.code, true), verify.code, verify.message);
          socket.destroy();
          return;
        }
        const cert = socket.getPeerX509Certificate();
        if (!cert) {
          this.handshakeFailed(peer, entry.port, 'fail_verify_no_cert', 'NO_PEER_CERTIFICATE', 'no client certificate');
          socket.destroy();
          return;
        }
        this.stats.handshake.inc();
        this.pending.delete(socket);
        onServed();
        const peerIdentity = spiffeIdOf(cert.subjectAltName);
        this.hooks.serve(socket, origin, { tls: true, peerIdentity, protocol: socket.getProtocol() ?? undefined, clientCertDetails: clientCertDetails(secret.identity, cert, peerIdentity), alpn: socket.alpnProtocol || undefined });
      } catch (err) {
        rt.onInternalError(err, 'inbound TLS secure');
        socket.destroy();
      }
    });
  }

  /** Counts and logs; the caller destroys the TLS socket (never the raw one beneath it: TLSWrap may be inside a callback). */
  private handshakeFailed(peer: string, port: number, counter: HandshakeFailure, code: string | undefined, message: string): void {
    this.stats[counter].inc();
    const count = this.handshakeLog.note();
    if (count !== undefined) {
      this.logger.scope('connection').warn({ peer, port, counter: `ssl.${counter}`, code, reason: message.split('\n')[0], refused: count },
        'inbound TLS handshake refused; see docs/troubleshooting.md, "Inbound TLS handshake failures"');
    }
  }

  /** Strict mode, plaintext first bytes: closed unanswered (Envoy: no filter chain matches, flag NFCF). */
  private refusePlaintext(socket: net.Socket, entry: InboundPortState, peer: string, bytes: number, startedAt: number): void {
    this.stats.no_filter_chain_match.inc();
    this.logRefused(peer, bytes, startedAt);
    const count = this.refusedLog.note();
    if (count !== undefined) {
      this.logger.scope('connection').warn({ peer, port: entry.port, cluster: entry.cluster, refused: count },
        'plaintext refused on a strict mTLS port (NFCF); see docs/troubleshooting.md, "NFCF: plaintext refused in strict mode"');
    }
    socket.destroy();
  }

  /** TLS to the listener itself whose SNI names no local TLS port: refused, as every direct connection from another host. */
  private refuseDirectTls(socket: net.Socket, origin: ConnectionOrigin, peer: string, sni: string | undefined, bytes: number, startedAt: number): void {
    this.stats.no_filter_chain_match.inc();
    this.rt.blackhole.stats.upstream_cx_total.inc();
    this.logRefused(peer, bytes, startedAt);
    this.rt.onRefused(peer, `${origin.kind === 'refused' ? origin.reason : 'direct connection'}; TLS with SNI ${sni === undefined ? '(none)' : JSON.stringify(sni)} names no local inbound port with mTLS`);
    socket.destroy();
  }

  /** Envoy writes a connection-level access log line for a filter-chain miss: no request, flag NFCF. */
  private logRefused(peer: string, bytes: number, startedAt: number): void {
    this.rt.accessLog?.log({
      startTime: startedAt, method: '-', path: '-', protocol: '-', status: 0, flags: ResponseFlag.NoFilterChainFound,
      bytesReceived: bytes, bytesSent: 0, durationMs: Date.now() - startedAt, upstreamServiceTimeMs: undefined,
      forwardedFor: peer, userAgent: undefined, requestId: undefined, authority: undefined, upstreamHost: undefined, upstreamCluster: undefined,
    });
  }
}
