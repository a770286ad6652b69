// The router's try on an HTTP/2 upstream (issue 14, Envoy's codec client for http2): one stream on a
// pooled session. The request head becomes :method/:scheme/:authority/:path plus the forwarded header
// list; an HTTP/1.1 chunked request body is de-chunked; request and response trailers go both ways;
// back-pressure both ways rides on HTTP/2 flow control (a paused stream stops taking DATA, the others
// on the session go on).
import http2 from 'node:http2';
import type { Cluster } from '../cluster/cluster';
import type { Host } from '../cluster/host';
import { BodyFramer } from '../http/body-framer';
import { HttpParseError } from '../http/head-parser';
import { reasonPhrase } from '../http/hop-by-hop';
import type { ForwardedRequest, StreamResponseHead, UpstreamCallbacks, UpstreamCodec } from '../http/codec/types';
import { PLAINTEXT_TRANSPORT } from '../tls/upstream-tls';
import type { Http2Pool, Http2PoolWaiter, Http2UpstreamSession } from './http2-pool';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_NO_ERROR, NGHTTP2_PROTOCOL_ERROR, NGHTTP2_FLAG_END_STREAM } = http2.constants;
const EMPTY = Buffer.alloc(0);

const enum St { Idle, Queued, Sending, Done }

export class Http2UpstreamCodec implements UpstreamCodec, Http2PoolWaiter {
  readonly protocol = 'http2' as const;
  host: Host | undefined;
  private cluster: Cluster | undefined;
  private callbacks: UpstreamCallbacks | undefined;
  private session: Http2UpstreamSession | undefined;
  private stream: http2.ClientHttp2Stream | undefined;
  private ticket: object | undefined;
  private state: St = St.Idle;
  /** the response head was reported (a later failure is a reset after headers) */
  private gotHeaders = false;
  private responseEnded = false;
  private trailers: { names: string[]; values: string[] } | undefined;
  private requestTrailers: { names: readonly string[]; values: readonly string[] } | undefined;
  /** de-chunks an HTTP/1.1 chunked request body */
  private dechunk: BodyFramer | undefined;

  constructor(private readonly pool: Http2Pool) {}

  /** `plaintext` or `tls ... peer=...` of the current try, or of the last one once its stream ended. */
  get transport(): string { return this.session?.transport ?? this.lastTransport; }

  attach(cluster: Cluster, host: Host, callbacks: UpstreamCallbacks): 'ready' | 'queued' | 'overflow' {
    this.reset();
    this.cluster = cluster;
    this.callbacks = callbacks;
    const s = this.pool.acquire(cluster, host);
    if (s) {
      this.session = s;
      this.host = s.host;
      this.state = St.Sending;
      return 'ready';
    }
    this.host = host;
    this.ticket = this.pool.enqueue(cluster, host, this);
    if (!this.ticket) return 'overflow';
    this.state = St.Queued;
    return 'queued';
  }

  onSessionReady(session: Http2UpstreamSession): void {
    if (this.state !== St.Queued) { this.pool.releaseStream(session); return; }
    this.ticket = undefined;
    this.session = session;
    this.host = session.host;
    this.state = St.Sending;
    this.callbacks?.onUpstreamReady();
  }

  sendHeaders(req: ForwardedRequest, endStream: boolean): void {
    const s = this.session;
    if (!s || this.state !== St.Sending) return;
    const list = req.headerList();
    const headers: http2.OutgoingHttpHeaders = {
      ':method': req.head.method,
      ':scheme': req.scheme,
      ':path': req.upstreamPath,
    };
    if (req.upstreamAuthority !== undefined) headers[':authority'] = req.upstreamAuthority;
    for (let i = 0; i < list.names.length; i++) {
      const n = list.names[i]!;
      const prev = headers[n];
      headers[n] = prev === undefined ? list.values[i]! : Array.isArray(prev) ? [...prev, list.values[i]!] : [String(prev), list.values[i]!];
    }
    if (req.attempt > 0) headers['x-envoy-attempt-count'] = String(req.attempt);
    this.dechunk = req.head.bodyKind === 'chunked' ? new BodyFramer(400).reset('chunked', -1) : undefined;
    let stream: http2.ClientHttp2Stream;
    try {
      // waitForTrailers: request trailers (gRPC client streaming ends with none, but HTTP/2 may carry some) go after the body
      stream = s.session.request(headers, { endStream, waitForTrailers: !endStream });
    } catch (err) {
      // a session that went away between acquire and now (GOAWAY, closed), or a header Node refuses
      const closed = s.closed || s.goingAway || s.session.destroyed;
      const cb = this.callbacks;
      this.fail(closed ? 'refused' : 'protocol-error', (err as Error).message, true);
      // told after sendHeaders returned (the router is inside its send path now)
      const kind = closed ? 'refused' : 'protocol-error';
      const gen = this.gen;
      process.nextTick(() => { if (this.gen === gen) cb?.onUpstreamReset(kind, (err as Error).message); });
      return;
    }
    this.stream = stream;
    // from here the stream holds the session slot: it is given back when the stream closes, however late
    // (an aborted try's stream may close after this codec already serves the next try)
    this.slotOnStream = true;
    let released = false;
    const release = () => { if (!released) { released = true; this.pool.releaseStream(s); } };
    stream.on('response', (h, flags) => this.onResponse(stream, h, flags));
    stream.on('data', (chunk: Buffer) => { if (stream === this.stream && this.gotHeaders) this.callbacks?.onUpstreamData(chunk, false); });
    stream.on('trailers', (t) => { if (stream === this.stream) this.trailers = flatten(t); });
    stream.on('end', () => this.onEnd(stream));
    stream.on('drain', () => { if (stream === this.stream) this.callbacks?.onUpstreamDrain(); });
    stream.on('wantTrailers', () => {
      const t = this.requestTrailers;
      const obj: http2.OutgoingHttpHeaders = {};
      if (t) for (let i = 0; i < t.names.length; i++) obj[t.names[i]!.toLowerCase()] = t.values[i]!;
      try { stream.sendTrailers(obj); } catch { stream.close(NGHTTP2_CANCEL); }
    });
    stream.on('error', () => { /* 'close' follows with the code */ });
    stream.on('close', () => { release(); this.onStreamClose(stream); });
  }

  sendData(chunk: Buffer, end: boolean): boolean {
    const stream = this.stream;
    if (!stream || this.state !== St.Sending || stream.destroyed) return true;
    let ok = true;
    if (this.dechunk) {
      try {
        this.dechunk.feed(chunk, 0, (a, b) => { if (b > a) ok = stream.write(chunk.subarray(a, b)) && ok; });
      } catch (err) {
        if (err instanceof HttpParseError) { stream.close(NGHTTP2_CANCEL); return true; }
        throw err;
      }
      if (end || this.dechunk.done) { stream.end(); this.dechunk = undefined; }
      return ok;
    }
    if (chunk.length > 0) ok = stream.write(chunk);
    if (end) stream.end();
    return ok;
  }

  sendTrailers(names: readonly string[], values: readonly string[]): void {
    const stream = this.stream;
    if (!stream || this.state !== St.Sending || stream.destroyed) return;
    this.requestTrailers = { names, values };
    stream.end(); // 'wantTrailers' sends them after the last DATA
  }

  pauseResponse(): void { this.stream?.pause(); }
  resumeResponse(): void { this.stream?.resume(); }

  abort(): void {
    this.gen++;
    const stream = this.stream;
    if (this.state === St.Queued && this.ticket && this.cluster) this.pool.cancelPending(this.cluster, this.ticket);
    this.ticket = undefined;
    this.callbacks = undefined;
    this.giveBack();
    this.stream = undefined; // its late events are not this try's
    if (stream && !stream.destroyed) stream.close(NGHTTP2_CANCEL); // RST_STREAM CANCEL; its 'close' gives the slot back
    this.state = St.Done;
  }

  /** bumped by every attach and abort: a deferred callback of an older try is dropped */
  private gen = 0;

  private reset(): void {
    this.gen++;
    this.host = undefined; this.cluster = undefined; this.callbacks = undefined; this.session = undefined; this.stream = undefined;
    this.ticket = undefined; this.state = St.Idle; this.gotHeaders = false; this.responseEnded = false; this.trailers = undefined;
    this.requestTrailers = undefined; this.dechunk = undefined; this.slotOnStream = false;
  }
  private slotOnStream = false;

  private onResponse(stream: http2.ClientHttp2Stream, h: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader, flags: number): void {
    if (stream !== this.stream) return;
    const status = Number(h[':status']);
    if (status >= 100 && status < 200) return; // 1xx: 'headers' events, never 'response' for the final one
    const res = responseHead(status, h, (flags & NGHTTP2_FLAG_END_STREAM) !== 0);
    this.gotHeaders = true;
    const end = res.bodyKind === 'none';
    if (end) this.responseEnded = true;
    this.callbacks?.onUpstreamHeaders(res, undefined, end);
  }

  private onEnd(stream: http2.ClientHttp2Stream): void {
    if (stream !== this.stream || !this.gotHeaders || this.responseEnded) return;
    this.responseEnded = true;
    const t = this.trailers;
    if (t && t.names.length > 0) this.callbacks?.onUpstreamTrailers(t.names, t.values);
    else this.callbacks?.onUpstreamData(EMPTY, true);
  }

  private onStreamClose(stream: http2.ClientHttp2Stream): void {
    if (stream !== this.stream) return;
    const s = this.session;
    this.giveBack();
    if (this.state === St.Done) return;
    this.state = St.Done;
    if (this.responseEnded) return;
    const code = stream.rstCode;
    if (!s?.connected) { this.fail('connect-failure', s?.failureReason); return; }
    // REFUSED_STREAM, or a GOAWAY below this stream: the upstream never processed it, another session may
    if (!this.gotHeaders && (code === NGHTTP2_REFUSED_STREAM || (code === NGHTTP2_NO_ERROR && s.goingAway))) { this.fail('refused', undefined); return; }
    // nghttp2 resets a stream whose response breaks the protocol (bad content-length, bad headers): Envoy's UPE
    if (code === NGHTTP2_PROTOCOL_ERROR) { this.fail('protocol-error', 'the HTTP/2 response broke the protocol (PROTOCOL_ERROR)'); return; }
    this.fail('reset', `stream reset by the upstream (${codeName(code)})`);
  }

  private fail(kind: 'connect-failure' | 'reset' | 'refused' | 'protocol-error', reason: string | undefined, silent = false): void {
    this.state = St.Done;
    const cb = this.callbacks;
    this.callbacks = undefined;
    this.giveBack();
    if (!silent) cb?.onUpstreamReset(kind, reason);
  }

  /** The try is over: forget the session; give its slot back unless a stream holds it. */
  private giveBack(): void {
    const s = this.session;
    if (!s) return;
    this.session = undefined;
    if (!this.slotOnStream) this.pool.releaseStream(s);
    this.slotOnStream = false;
    // keep the transport text for the trace header of a finished try
    this.lastTransport = s.transport;
  }
  private lastTransport = PLAINTEXT_TRANSPORT;
}

function flatten(h: http2.IncomingHttpHeaders): { names: string[]; values: string[] } {
  const names: string[] = [];
  const values: string[] = [];
  for (const k of Object.keys(h)) {
    if (k.charCodeAt(0) === 58 /* : */) continue;
    const v = h[k];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) { names.push(k); values.push(x); }
    else { names.push(k); values.push(String(v)); }
  }
  return { names, values };
}

/** The HTTP/2 response as the router and the downstream codecs take it (names lower-case as HTTP/2 has them). */
function responseHead(status: number, h: http2.IncomingHttpHeaders, endStream: boolean): StreamResponseHead {
  const { names, values } = flatten(h);
  let contentLength = -1;
  const cl = h['content-length'];
  if (typeof cl === 'string' && /^\d{1,15}$/.test(cl)) contentLength = Number(cl);
  // nghttp2 checks the DATA against content-length, so a declared length can frame an HTTP/1 response
  const bodyKind = endStream ? 'none' : contentLength >= 0 ? 'length' : 'stream';
  return { status, reason: reasonPhrase(status), names, lower: names, values, bodyKind, contentLength: endStream ? 0 : contentLength, close: false, connectionTokens: undefined };
}

const CODE_NAMES: Record<number, string> = {
  0: 'NO_ERROR', 1: 'PROTOCOL_ERROR', 2: 'INTERNAL_ERROR', 3: 'FLOW_CONTROL_ERROR', 5: 'STREAM_CLOSED', 6: 'FRAME_SIZE_ERROR',
  7: 'REFUSED_STREAM', 8: 'CANCEL', 9: 'COMPRESSION_ERROR', 11: 'ENHANCE_YOUR_CALM', 13: 'HTTP_1_1_REQUIRED',
};
function codeName(code: number): string { return CODE_NAMES[code] ?? `code ${code}`; }
