// Downstream HTTP/2 (issue 14): h2c with prior knowledge and h2 over TLS by ALPN, on Node's node:http2
// (nghttp2: a maintained codec with the rapid-reset, CONTINUATION and HPACK limits built in). One
// Http2ServerConnection per connection (the handle proxy.ts keeps), one Http2DownstreamStream per stream;
// each stream gets its own ActiveStream, so routing, RBAC, clusters, retries, stats and the access log are
// the HTTP/1 ones.
import http2 from 'node:http2';
import type net from 'node:net';
import type { Cluster } from '../../cluster/cluster';
import type { Host } from '../../cluster/host';
import type { ProxyRuntime, ResolvedLimits } from '../../runtime';
import type { DownstreamTransport } from '../../tls/inbound-tls';
import { stripV4Mapped, type ConnectionOrigin } from '../connection-origin';
import type { RequestHead } from '../head-parser';
import { isHopByHop } from '../hop-by-hop';
import { ResponseFlag } from '../response-flags';
import type { DownstreamConnectionHandle, DownstreamStream, DownstreamStreamCallbacks, ExtraHeaders, HttpProtocol, StreamResponseHead } from './types';

const {
  NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR, NGHTTP2_REFUSED_STREAM, NGHTTP2_FLAG_END_STREAM,
} = http2.constants;
const EMPTY = Buffer.alloc(0);
const DIGITS = /^[0-9]{1,15}$/;
/** Node's default (MB): the most one session may buffer (HPACK tables, frames, stream buffers) before it is refused with ENHANCE_YOUR_CALM. */
export const HTTP2_MAX_SESSION_MEMORY_MB = 10;

/**
 * The SETTINGS and limits of every downstream session (Envoy's http2_protocol_options, with a bounded
 * max_concurrent_streams). nghttp2 enforces them: a header list over maxHeaderListSize (an HPACK bomb
 * included) resets the stream with ENHANCE_YOUR_CALM; more than 8 CONTINUATION frames, a rapid-reset
 * flood (more than 1000 resets, then 33/s) or maxSessionInvalidFrames bad frames end the session with GOAWAY.
 */
export function http2SessionOptions(limits: ResolvedLimits): http2.ServerOptions {
  return {
    maxSessionMemory: HTTP2_MAX_SESSION_MEMORY_MB,
    // the regular fields (maxHeadersCount, as HTTP/1) and the four request pseudo-headers
    maxHeaderListPairs: limits.maxHeadersCount + 4,
    maxSessionInvalidFrames: 1000,
    maxSessionRejectedStreams: 100,
    peerMaxConcurrentStreams: limits.http2MaxConcurrentStreams,
    settings: {
      maxConcurrentStreams: limits.http2MaxConcurrentStreams,
      maxHeaderListSize: limits.maxHeadersBytes,
      initialWindowSize: limits.http2InitialStreamWindowBytes,
      enablePush: false,
    },
  };
}

/** Makes the ActiveStream of one HTTP/2 stream (proxy.ts passes the connection manager's constructor). */
export type StreamFactory = (stream: DownstreamStream) => DownstreamStreamCallbacks;

/**
 * One HTTP/2 connection: the node:http2 session on the socket the acceptor handed over (its sniffed
 * bytes unshifted), its streams, idle timeout and drain (GOAWAY: streams in flight finish, new ones are
 * refused and the client opens them on the next epoch's listener).
 */
export class Http2ServerConnection implements DownstreamConnectionHandle {
  readonly session: http2.ServerHttp2Session;
  readonly peer: string;
  responsesServed = 0;
  lastActivity = Date.now();
  private readonly streams = new Set<Http2DownstreamStream>();
  private closed = false;
  private draining = false;

  constructor(readonly socket: net.Socket, readonly rt: ProxyRuntime, readonly origin: ConnectionOrigin, readonly transport: DownstreamTransport,
    readonly newStream: StreamFactory, private readonly onClosed: (c: Http2ServerConnection) => void) {
    this.peer = stripV4Mapped(socket.remoteAddress ?? '');
    socket.setNoDelay(true);
    if (origin.kind === 'refused') {
      rt.blackhole.stats.upstream_cx_total.inc();
      rt.onRefused(this.peer, origin.reason);
    }
    rt.http.downstream_cx_http2_total.inc();
    rt.http.downstream_cx_http2_active.inc();
    // A server-side TLSSocket made outside a tls.Server (inbound-tls.ts) keeps secureConnecting true after
    // 'secure'; node:http2 would then wait for a 'secureConnect' that never comes
    const tlsSocket = socket as net.Socket & { secureConnecting?: boolean };
    if (transport.tls && tlsSocket.secureConnecting) tlsSocket.secureConnecting = false;
    this.session = http2.performServerHandshake(socket, http2SessionOptions(rt.limits));
    const session = this.session;
    // Every callback is guarded: a bug ends this session, never the process.
    session.on('stream', (stream: http2.ServerHttp2Stream, _headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: string[]) => {
      try { this.onStream(stream, flags, rawHeaders); } catch (err) { this.internalError(err, 'HTTP/2 stream'); }
    });
    // a protocol violation or a limit nghttp2 enforces (flood, CONTINUATION, memory): GOAWAY was sent, the session ends
    session.on('error', (err: Error) => {
      try {
        rt.http.downstream_cx_protocol_error.inc();
        rt.onHttp2SessionError(`${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`, err);
      } catch { /* counting and logging only */ }
    });
    session.on('frameError', () => { /* the stream or session error follows */ });
    session.on('close', () => this.finish());
    socket.once('close', () => this.finish());
  }

  get idle(): boolean { return this.streams.size === 0; }

  private internalError(err: unknown, where: string): void {
    this.rt.onInternalError(err, where);
    try { this.session.destroy(); } catch { /* already gone */ }
    this.socket.destroy();
  }

  private onStream(stream: http2.ServerHttp2Stream, flags: number, rawHeaders: string[]): void {
    this.lastActivity = Date.now();
    stream.on('error', () => { /* 'close' follows; a reset is reported there */ });
    if (this.closed || this.draining) { stream.close(NGHTTP2_REFUSED_STREAM); return; }
    const ds = new Http2DownstreamStream(this, stream);
    this.streams.add(ds);
    // Started on the next tick: a stream the client already reset in the same read (a rapid-reset flood,
    // CVE-2023-44487) never reaches an upstream.
    process.nextTick(() => {
      try { ds.start(flags, rawHeaders); } catch (err) { ds.internalError(err, 'HTTP/2 request headers'); }
    });
  }

  /** Called by a stream when it is closed on both sides. */
  streamClosed(ds: Http2DownstreamStream, served: boolean): void {
    this.streams.delete(ds);
    this.lastActivity = Date.now();
    if (served) this.responsesServed++;
  }

  sweep(now: number): void {
    try {
      for (const s of this.streams) s.sweep(now);
      if (this.streams.size === 0 && !this.closed && (now - this.lastActivity > this.rt.limits.idleTimeoutMs || this.draining)) this.session.close();
    } catch (err) { this.internalError(err, 'HTTP/2 sweep'); }
  }

  /** GOAWAY (NO_ERROR, last stream id): streams in flight finish, then the session closes. */
  startDrain(_now: number): void {
    if (this.draining || this.closed) return;
    this.draining = true;
    try { this.session.close(); } catch (err) { this.internalError(err, 'HTTP/2 drain'); }
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      for (const s of [...this.streams]) s.connectionGone();
      this.rt.http.downstream_cx_http2_active.dec();
    } catch (err) {
      this.rt.onInternalError(err, 'HTTP/2 session close');
    } finally {
      this.onClosed(this);
    }
  }
}

/** One request/response exchange on an HTTP/2 stream: the DownstreamStream the ActiveStream answers through. */
export class Http2DownstreamStream implements DownstreamStream {
  readonly protocol: HttpProtocol = 'HTTP/2';
  bytesReceived = 0;
  bytesSent = 0;
  private cb: DownstreamStreamCallbacks | undefined;
  /** the ActiveStream is done with this request (response complete, reset, or the request finished with a local reply) */
  private done = false;
  private requestEnded = false;
  private trailers: Record<string, string | string[]> | undefined;
  private responded = false;
  /** Stream idle timeout: bytes moved at the last sweep, and since when they have not changed. */
  private mark = -1;
  private idleSince = 0;

  constructor(private readonly conn: Http2ServerConnection, readonly stream: http2.ServerHttp2Stream) {
    stream.on('close', () => this.onClose());
  }

  get peer(): string { return this.conn.peer; }
  get origin(): ConnectionOrigin { return this.conn.origin; }
  get transport(): DownstreamTransport { return this.conn.transport; }

  start(flags: number, raw: string[]): void {
    const stream = this.stream;
    if (stream.destroyed || stream.closed || this.done) return; // reset before we got to it
    const rt = this.conn.rt;
    rt.http.downstream_rq_http2_total.inc();
    const head = requestHeadOf(raw, (flags & NGHTTP2_FLAG_END_STREAM) !== 0 || stream.endAfterHeaders);
    this.requestEnded = head.bodyKind === 'none';
    this.cb = this.conn.newStream(this);
    // the client's window opened again after encodeData returned false: the router resumes the upstream
    stream.on('drain', () => {
      try { if (!this.done) this.cb!.onDownstreamDrain(); } catch (err) { this.internalError(err, 'HTTP/2 drain'); }
    });
    this.cb.onRequestHeaders(head);
    if (this.done || this.requestEnded) {
      // Read the readable side to its end, even with no body: node:http2 resets (RST_STREAM NO_ERROR, dropping
      // response DATA still queued) a server stream whose response finished while its request side was never
      // read; and a body answered before it arrived is read and dropped (flow control).
      stream.resume();
      return;
    }
    stream.on('data', (chunk: Buffer) => {
      try {
        this.bytesReceived += chunk.length;
        if (!this.done) this.cb!.onRequestData(chunk, false);
      } catch (err) { this.internalError(err, 'HTTP/2 request data'); }
    });
    stream.on('trailers', (trailers: http2.IncomingHttpHeaders, _flags: number, rawTrailers: string[]) => {
      try {
        this.requestEnded = true;
        if (this.done) return;
        const names: string[] = [];
        const values: string[] = [];
        for (let i = 0; i + 1 < rawTrailers.length; i += 2) { names.push(rawTrailers[i]!); values.push(rawTrailers[i + 1]!); }
        this.cb!.onRequestTrailers(names, values);
      } catch (err) { this.internalError(err, 'HTTP/2 request trailers'); }
    });
    stream.on('end', () => {
      try {
        if (this.requestEnded) return;
        this.requestEnded = true;
        if (!this.done) this.cb!.onRequestData(EMPTY, true);
      } catch (err) { this.internalError(err, 'HTTP/2 request end'); }
    });
  }

  encodeHeaders(res: StreamResponseHead, extra: ExtraHeaders, firstBody: Buffer | undefined, endStream: boolean): void {
    const stream = this.stream;
    if (this.responded || stream.destroyed || stream.closed) return;
    this.responded = true;
    const out: http2.OutgoingHttpHeaders = { ':status': res.status };
    const tokens = res.connectionTokens;
    for (let i = 0; i < res.lower.length; i++) {
      const n = res.lower[i]!;
      // connection-specific fields are malformed in HTTP/2 (RFC 9113 8.2.2); node:http2 would throw on them
      if (isHopByHop(n, tokens) || n === 'host' || n.charCodeAt(0) === 58 /* : */) continue;
      addHeader(out, n, res.values[i]!);
    }
    for (let i = 0; i + 1 < extra.length; i += 2) addHeader(out, extra[i]!, extra[i + 1]!);
    const body = firstBody !== undefined && firstBody.length > 0 ? firstBody : undefined;
    if (endStream && body === undefined) {
      stream.respond(out, { endStream: true });
      this.responseComplete();
      return;
    }
    // trailers may follow (gRPC): node:http2 asks for them after the last DATA frame ('wantTrailers')
    stream.respond(out, { waitForTrailers: true });
    stream.once('wantTrailers', () => {
      try { stream.sendTrailers(this.trailers ?? {}); } catch { stream.close(NGHTTP2_INTERNAL_ERROR); }
    });
    if (body) {
      this.bytesSent += body.length;
      if (endStream) { stream.end(body); this.responseComplete(); } else stream.write(body);
    }
  }

  encodeData(chunk: Buffer, endStream: boolean): boolean {
    const stream = this.stream;
    if (stream.destroyed || stream.closed || stream.writableEnded) return true;
    this.bytesSent += chunk.length;
    if (endStream) {
      stream.end(chunk.length > 0 ? chunk : undefined);
      this.responseComplete();
      return true;
    }
    return stream.write(chunk);
  }

  encodeTrailers(names: readonly string[], values: readonly string[]): void {
    const stream = this.stream;
    if (stream.destroyed || stream.closed || stream.writableEnded) return;
    const t: Record<string, string | string[]> = {};
    for (let i = 0; i < names.length; i++) {
      const n = names[i]!.toLowerCase();
      if (isHopByHop(n, undefined) || n.charCodeAt(0) === 58) continue;
      addHeader(t as http2.OutgoingHttpHeaders, n, values[i]!);
    }
    this.trailers = t;
    stream.end();
    this.responseComplete();
  }

  encode100Continue(): void {
    const stream = this.stream;
    if (!this.responded && !stream.destroyed && !stream.closed) stream.additionalHeaders({ ':status': 100 });
  }

  /** RST_STREAM: CANCEL for a timeout (UT, SI), INTERNAL_ERROR otherwise; Envoy's choice too. */
  reset(flag: string): void {
    this.done = true;
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return;
    stream.close(flag === ResponseFlag.UpstreamRequestTimeout || flag === ResponseFlag.StreamIdleTimeout ? NGHTTP2_CANCEL : NGHTTP2_INTERNAL_ERROR);
  }

  /** HTTP/2 multiplexes: one response never ends the connection. */
  closeAfterResponse(): void { /* nothing to do */ }

  pauseRequest(): void { if (!this.stream.destroyed) this.stream.pause(); }
  resumeRequest(): void { if (!this.stream.destroyed) this.stream.resume(); }

  /** CONNECT tunnels are HTTP/1.1 only (types.ts): reaching here is a bug. */
  handOverTcp(_cluster: string): void {
    this.reset(ResponseFlag.DownstreamProtocolError);
  }

  /** An HTTP/2 request never carries an Upgrade (types.ts): reaching here is a bug. */
  handOverUpgrade(_head: RequestHead, _target: string, _cluster: Cluster, _host: Host): void {
    this.reset(ResponseFlag.DownstreamProtocolError);
  }

  private responseComplete(): void {
    if (this.done) return;
    this.done = true;
    // a request body the upstream no longer wants is still read (and dropped) so the window keeps moving
    if (!this.requestEnded && !this.stream.destroyed) { this.stream.removeAllListeners('data'); this.stream.resume(); }
    // the end is written (perhaps still buffered for the client's window): the ActiveStream finishes the request
    this.cb?.onResponseComplete();
  }

  /** Stream idle timeout (Envoy's stream_idle_timeout), from the connection's sweep: no timer per stream. */
  sweep(now: number): void {
    const moved = this.bytesReceived + this.bytesSent;
    if (moved !== this.mark) { this.mark = moved; this.idleSince = now; return; }
    if (now - this.idleSince < this.conn.rt.limits.streamIdleTimeoutMs) return;
    if (!this.done && this.cb) { this.cb.onStreamIdleTimeout(); return; }
    // Answered, but the client never opened its window for the rest (a zero-window stall): cut, so the
    // buffered response is freed.
    if (!this.stream.destroyed && !this.stream.closed) this.stream.close(NGHTTP2_CANCEL);
  }

  /** The session is gone (socket closed, GOAWAY with an error): streams still open end as DC. */
  connectionGone(): void {
    if (this.done || !this.cb) return;
    this.done = true;
    try { this.cb.onDownstreamReset(ResponseFlag.DownstreamConnectionTermination); } catch (err) { this.conn.rt.onInternalError(err, 'HTTP/2 connection gone'); }
  }

  private onClose(): void {
    const served = this.responded;
    this.conn.streamClosed(this, served);
    if (this.done || !this.cb) { this.done = true; return; }
    this.done = true;
    // closed before the response was complete: the client reset it (RST_STREAM, flag DR) or the session went (DC)
    const flag = this.stream.rstCode !== undefined && this.stream.rstCode !== NGHTTP2_NO_ERROR && !this.conn.session.destroyed
      ? ResponseFlag.DownstreamRemoteReset : ResponseFlag.DownstreamConnectionTermination;
    try { this.cb.onDownstreamReset(flag); } catch (err) { this.conn.rt.onInternalError(err, 'HTTP/2 stream reset'); }
  }

  internalError(err: unknown, where: string): void {
    if (this.cb && !this.done) {
      try { this.cb.onInternalError(err, where); return; } catch { /* fall through: reset below */ }
    }
    this.conn.rt.onInternalError(err, where);
    this.done = true;
    if (!this.stream.destroyed && !this.stream.closed) this.stream.close(NGHTTP2_INTERNAL_ERROR);
  }
}

function addHeader(out: http2.OutgoingHttpHeaders, name: string, value: string): void {
  const prev = out[name];
  if (prev === undefined) out[name] = value;
  else if (Array.isArray(prev)) prev.push(value);
  else out[name] = [String(prev), value];
}

/**
 * The request head of an HTTP/2 stream in the HTTP/1 shape (types.ts): pseudo-headers out of the list,
 * :authority as host (a `host` field then dropped: :authority wins, RFC 9113 8.3.1), cookie crumbs joined.
 * nghttp2 has checked the pseudo-headers and refused connection-specific fields already.
 */
export function requestHeadOf(raw: readonly string[], endStream: boolean): RequestHead {
  let method = 'GET';
  let path: string | undefined;
  let authority: string | undefined;
  let hostField: string | undefined;
  let cookie: string | undefined;
  let contentLength = -1;
  let expectContinue = false;
  const names: string[] = [];
  const lower: string[] = [];
  const values: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const n = raw[i]!;
    const v = raw[i + 1]!;
    if (n.charCodeAt(0) === 58 /* : */) {
      if (n === ':method') method = v;
      else if (n === ':path') path = v;
      else if (n === ':authority') authority = v;
      continue;
    }
    if (n === 'cookie') { cookie = cookie === undefined ? v : `${cookie}; ${v}`; continue; }
    if (n === 'host') { hostField = v; continue; }
    if (n === 'content-length' && DIGITS.test(v)) contentLength = Number(v);
    else if (n === 'expect' && v.toLowerCase() === '100-continue') expectContinue = true;
    names.push(n); lower.push(n); values.push(v);
  }
  if (cookie !== undefined) { names.push('cookie'); lower.push('cookie'); values.push(cookie); }
  const host = authority ?? hostField;
  if (authority === undefined && hostField !== undefined) { names.push('host'); lower.push('host'); values.push(hostField); }
  return {
    method, target: path ?? (method === 'CONNECT' ? (authority ?? '') : '/'), minor: 1, protocol: 'HTTP/2',
    bodyKind: endStream ? 'none' : 'stream', contentLength: endStream ? 0 : contentLength, host,
    close: false, connectionTokens: undefined, upgrade: undefined, expectContinue,
    names, lower, values,
  };
}
