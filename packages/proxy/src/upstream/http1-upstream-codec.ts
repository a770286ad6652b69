import type { Cluster } from '../cluster/cluster';
import type { Host } from '../cluster/host';
import { BodyFramer } from '../http/body-framer';
import type { ForwardedRequest, UpstreamCallbacks, UpstreamCodec } from '../http/codec/types';
import { HttpParseError, parseResponseHead, type ResponseHead } from '../http/head-parser';
import type { ProxyRuntime } from '../runtime';
import { PLAINTEXT_TRANSPORT, type PendingRequest, type UpstreamConnection, type UpstreamOwner } from './pool';

const CRLFCRLF = Buffer.from('\r\n\r\n');
const EMPTY = Buffer.alloc(0);
const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');
const CRLF = Buffer.from('\r\n', 'latin1');

/**
 * HTTP/1.1 to one upstream host on a pooled keep-alive connection (upstream/pool.ts): writes the request
 * head the ActiveStream built once (one latin1 Buffer), passes request body bytes through with their
 * framing, parses the response head and tracks the response framing so the connection can be reused.
 * One per RouterFilter, reused across its tries and requests: no allocation per request beyond the
 * response head's parse. Every pool callback is guarded: a bug ends the request (onError), never the process.
 */
export class Http1UpstreamCodec implements UpstreamCodec, UpstreamOwner {
  readonly protocol = 'http1' as const;
  private conn: UpstreamConnection | undefined;
  private queued: PendingRequest | undefined;
  private cb: UpstreamCallbacks | undefined;
  private resBuf: Buffer | undefined;
  private res: ResponseHead | undefined;
  private readonly resFramer = new BodyFramer(502);
  /** a chunked response de-chunked for an HTTP/1.0 or HTTP/2 request (passed on as 'stream') */
  private dechunk = false;
  /** the request body is sent chunk-encoded (an HTTP/2 request without content-length) */
  private chunkEncode = false;
  private requestEnded = false;
  private requestHasBody = false;
  private method = '';
  private downstreamProtocol = 'HTTP/1.1';
  /** bumped whenever the try changes (attach, abort, end): a callback that started a new try is detected */
  private generation = 0;

  constructor(private readonly rt: ProxyRuntime, private readonly onError: (err: unknown, where: string) => void) {}

  get host(): Host | undefined { return this.conn?.host; }
  get transport(): string { return this.conn?.transport ?? PLAINTEXT_TRANSPORT; }

  attach(cluster: Cluster, host: Host, callbacks: UpstreamCallbacks): 'ready' | 'queued' | 'overflow' {
    if (this.conn || this.queued) this.endTry();
    this.cb = callbacks;
    this.generation++;
    this.resBuf = undefined;
    this.res = undefined;
    this.requestEnded = false;
    const conn = this.rt.pool.acquire(cluster, host, this);
    if (conn) { this.conn = conn; return 'ready'; }
    // max_connections: wait in the pending queue (max_pending_requests), or overflow when it is full
    this.queued = this.rt.pool.enqueue(cluster, host, this);
    return this.queued ? 'queued' : 'overflow';
  }

  sendHeaders(req: ForwardedRequest, endStream: boolean): void {
    const head = req.head;
    this.method = head.method;
    this.downstreamProtocol = head.protocol;
    this.requestEnded = endStream;
    this.requestHasBody = head.bodyKind !== 'none';
    this.chunkEncode = head.bodyKind === 'stream' && head.contentLength < 0;
    const conn = this.conn;
    if (conn) conn.socket.write(Buffer.from(req.h1Head(), 'latin1'));
  }

  sendData(chunk: Buffer, end: boolean): boolean {
    if (end) this.requestEnded = true;
    const up = this.conn;
    if (!up || up.closed) return true;
    let ok = true;
    if (this.chunkEncode) {
      if (chunk.length > 0) {
        up.socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
        up.socket.write(chunk);
        ok = up.socket.write(CRLF);
      }
      if (end) ok = up.socket.write(LAST_CHUNK);
      return ok;
    }
    if (chunk.length > 0) ok = up.socket.write(chunk);
    return ok;
  }

  sendTrailers(_names: readonly string[], _values: readonly string[]): void {
    // HTTP/1.1 trailers are not forwarded (no upstream here asked for them); the body ends.
    this.sendData(EMPTY, true);
  }

  pauseResponse(): void {
    const up = this.conn;
    if (up && !up.closed) up.socket.pause();
  }

  resumeResponse(): void {
    const up = this.conn;
    if (up && !up.closed) up.socket.resume();
  }

  abort(): void {
    this.generation++;
    if (this.queued) { this.rt.pool.cancelPending(this.queued); this.queued = undefined; }
    const up = this.conn;
    this.conn = undefined;
    this.res = undefined;
    this.resBuf = undefined;
    if (up) this.rt.pool.discard(up);
  }

  /** The try is over: the connection goes back to the pool when both messages were complete and the upstream keeps it. */
  private endTry(): void {
    if (this.queued) { this.rt.pool.cancelPending(this.queued); this.queued = undefined; }
    const up = this.conn;
    this.conn = undefined;
    this.generation++;
    if (!up) return;
    up.socket.resume();
    const reusable = this.res !== undefined && !this.res.close && this.requestEnded && this.resFramer.done;
    this.res = undefined;
    if (reusable) this.rt.pool.release(up);
    else this.rt.pool.discard(up);
  }

  // ---- pool events (UpstreamOwner) --------------------------------------------------------

  onUpstreamConnect(): void { /* the head was queued on the socket before connect */ }

  onUpstreamDrain(conn: UpstreamConnection): void {
    if (conn !== this.conn) return;
    try { this.cb?.onUpstreamDrain(); } catch (err) { this.onError(err, 'upstream drain'); }
  }

  onPendingReady(conn: UpstreamConnection): void {
    try {
      this.queued = undefined;
      this.conn = conn;
      this.cb!.onUpstreamReady();
    } catch (err) { this.onError(err, 'pending request ready'); }
  }

  onUpstreamData(conn: UpstreamConnection, chunk: Buffer): void {
    try {
      if (conn !== this.conn) return;
      if (this.res === undefined) {
        this.resBuf = this.resBuf === undefined ? chunk : Buffer.concat([this.resBuf, chunk]);
        this.parseResponseHead();
        return;
      }
      this.forwardResponseBody(chunk, 0);
    } catch (err) { this.onError(err, 'response data'); }
  }

  onUpstreamClose(conn: UpstreamConnection, connectFailed: boolean, _error: Error | undefined): void {
    try { this.upstreamClosed(conn, connectFailed); } catch (err) { this.onError(err, 'upstream close'); }
  }

  private upstreamClosed(conn: UpstreamConnection, connectFailed: boolean): void {
    if (conn !== this.conn) return;
    this.conn = undefined;
    this.generation++;
    const cb = this.cb!;
    if (this.res !== undefined) {
      if (this.res.bodyKind === 'close') { this.resFramer.done = true; this.res = undefined; cb.onUpstreamData(EMPTY, true); return; }
      this.res = undefined;
      // Truncated response: the client cannot be told with a status any more.
      cb.onUpstreamReset('reset', undefined);
      return;
    }
    // Before any response byte: a pooled keep-alive connection the upstream had just closed cannot have served a body-less request.
    if (!connectFailed && conn.uses > 1 && this.resBuf === undefined && !this.requestHasBody) { cb.onUpstreamReset('refused', undefined); return; }
    if (connectFailed) cb.onUpstreamReset('connect-failure', conn.transportFailureReason);
    else cb.onUpstreamReset('reset', undefined);
  }

  private protocolError(message: string): void {
    const up = this.conn;
    this.conn = undefined;
    this.res = undefined;
    this.resBuf = undefined;
    this.generation++;
    if (up) this.rt.pool.discard(up);
    this.cb!.onUpstreamReset('protocol-error', message);
  }

  private parseResponseHead(): void {
    for (;;) {
      const buf = this.resBuf!;
      const end = buf.indexOf(CRLFCRLF);
      if (end < 0) {
        if (buf.length > this.rt.limits.maxHeadersBytes) this.protocolError('upstream response headers too large');
        return;
      }
      let res: ResponseHead;
      try {
        res = parseResponseHead(buf.toString('latin1', 0, end), this.rt.limits, this.method);
      } catch (err) {
        if (err instanceof HttpParseError) { this.protocolError(err.message); return; }
        throw err;
      }
      if (res.status >= 100 && res.status < 200) {
        // 100 Continue goes to a client that asked for it; other 1xx are dropped (101 never reaches here).
        const gen = this.generation;
        if (res.status === 100) this.cb!.onUpstream100Continue();
        if (gen !== this.generation) return;
        this.resBuf = end + 4 < buf.length ? buf.subarray(end + 4) : undefined;
        if (this.resBuf === undefined) return;
        continue;
      }
      this.resBuf = undefined;
      this.startResponse(res, buf, end + 4);
      return;
    }
  }

  private startResponse(res: ResponseHead, buf: Buffer, bodyStart: number): void {
    this.res = res;
    this.resFramer.reset(res.bodyKind, res.contentLength);
    this.dechunk = res.bodyKind === 'chunked' && this.downstreamProtocol !== 'HTTP/1.1';
    const cb = this.cb!;
    const gen = this.generation;
    if (this.dechunk) {
      // chunked framing is HTTP/1.1's: an HTTP/1.0 or HTTP/2 client gets the payload
      res.bodyKind = 'stream';
      cb.onUpstreamHeaders(res, undefined, false);
      if (gen === this.generation && bodyStart < buf.length) this.forwardResponseBody(buf, bodyStart);
      return;
    }
    let bodyLen: number;
    try {
      bodyLen = this.resFramer.feed(buf, bodyStart);
    } catch (err) {
      if (err instanceof HttpParseError) { this.protocolError(err.message); return; }
      throw err;
    }
    const done = this.resFramer.done;
    cb.onUpstreamHeaders(res, bodyLen > 0 ? buf.subarray(bodyStart, bodyStart + bodyLen) : undefined, done);
    if (gen !== this.generation) return; // the router dropped this try (retry) or the request is over
    if (done) this.endTry();
    else if (bodyStart + bodyLen < buf.length) this.protocolError('bytes after the response');
  }

  private forwardResponseBody(buf: Buffer, offset: number): void {
    const cb = this.cb!;
    const gen = this.generation;
    let n: number;
    try {
      if (this.dechunk) {
        n = this.resFramer.feed(buf, offset, (s, e) => { if (e > s && gen === this.generation) cb.onUpstreamData(buf.subarray(s, e), false); });
      } else {
        n = this.resFramer.feed(buf, offset);
      }
    } catch (err) {
      if (err instanceof HttpParseError) { if (gen === this.generation) this.protocolError(err.message); return; }
      throw err;
    }
    if (gen !== this.generation) return;
    const done = this.resFramer.done;
    if (this.dechunk) { if (done) cb.onUpstreamData(EMPTY, true); }
    else if (n > 0 || done) cb.onUpstreamData(offset === 0 && n === buf.length ? buf : buf.subarray(offset, offset + n), done);
    if (gen !== this.generation) return;
    if (done) this.endTry();
    else if (offset + n < buf.length) this.protocolError('bytes after the response');
  }
}
