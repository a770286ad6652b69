import type net from 'node:net';
import type { Cluster } from '../../cluster/cluster';
import type { Host } from '../../cluster/host';
import type { ProxyRuntime } from '../../runtime';
import type { DownstreamTransport } from '../../tls/inbound-tls';
import { BodyFramer } from '../body-framer';
import { stripV4Mapped, type ConnectionOrigin } from '../connection-origin';
import { ActiveStream } from '../conn-manager/active-stream';
import { HttpParseError, parseRequestHead, type RequestHead } from '../head-parser';
import { isHopByHop } from '../hop-by-hop';
import { ResponseFlag } from '../response-flags';
import type { DownstreamConnectionHandle, DownstreamStream, ExtraHeaders, HttpProtocol, StreamResponseHead } from './types';

const CRLFCRLF = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n', 'latin1');
const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');
const EMPTY = Buffer.alloc(0);
const CONTINUE_100 = 'HTTP/1.1 100 Continue\r\n\r\n';
/**
 * Draining closes a keep-alive connection after its next response (`connection: close`), or once
 * it has been idle this long: closing one that just went idle races with the client's next request
 * on it (the client would see a reset), so a busy client is told to go instead (issue 6).
 * A connection that has not served a request yet is never closed this way: it was just accepted and its
 * first request may still be on its way (slow under load); it is served with `connection: close`, or cut
 * at the end of the drain time, as Envoy does.
 */
export const DRAIN_IDLE_GRACE_MS = 1000;

const enum St { Head, Body, Waiting, Upgraded, Closed }

/**
 * The downstream HTTP/1.x codec (Envoy's http1 ServerConnection plus the per-connection part of the
 * connection manager): reads heads (head-parser.ts) and frames bodies (body-framer.ts) without copying,
 * queues pipelined requests, encodes responses (head and first body bytes in one write), 100-continue,
 * keep-alive/close/drain decisions, the headers, keep-alive and stream idle timeouts from the proxy's
 * once-a-second sweep. Requests are served one at a time by one ActiveStream reused for the connection.
 */
export class Http1ServerCodec implements DownstreamStream, DownstreamConnectionHandle {
  protocol: HttpProtocol = 'HTTP/1.1';
  readonly peer: string;
  lastActivity = Date.now();
  /** responses completed on this connection; a draining proxy leaves never-used connections open */
  responsesServed = 0;
  bytesReceived = 0;
  bytesSent = 0;
  private state: St = St.Head;
  private pending: Buffer | undefined;
  private headStartedAt = 0;
  private readonly reqFramer = new BodyFramer(400);
  private closeAfter = false;
  /** a request is in flight: from its head to the end of its response (or its reset) */
  private active = false;
  private req: RequestHead | undefined;
  private readonly stream: ActiveStream;
  /** While the ActiveStream routes a head: its buffer and where the body starts (a local reply reads the body bytes in it, an upgrade hands them over). */
  private headBuf: Buffer | undefined;
  private headBodyStart = 0;
  /** the response body ('stream') is sent chunk-encoded */
  private chunkResponse = false;
  /** HEAD: no body bytes go out */
  private headResponse = false;
  /** Stream idle timeout: bytes moved at the last sweep, and since when they have not changed. */
  private streamMark = -1;
  private streamIdleSince = 0;

  /**
   * `origin`: inbound, outbound, local or refused, decided once by the acceptor (connection-origin.ts);
   * `transport`: plaintext, or TLS terminated by the acceptor with the caller's identity (issue 13).
   */
  constructor(readonly socket: net.Socket, private readonly rt: ProxyRuntime, private readonly onClosed: (c: Http1ServerCodec) => void,
    readonly origin: ConnectionOrigin, readonly transport: DownstreamTransport) {
    this.peer = stripV4Mapped(socket.remoteAddress ?? '');
    this.stream = new ActiveStream(rt, this);
    socket.setNoDelay(true);
    if (origin.kind === 'refused') {
      rt.blackhole.stats.upstream_cx_total.inc();
      rt.onRefused(this.peer, origin.reason);
    }
    // Every callback is guarded: a bug in one ends this connection (internalError), never the process.
    socket.on('data', (chunk: Buffer) => { try { this.onData(chunk); } catch (err) { this.internalError(err, 'request data'); } });
    socket.on('drain', () => { try { if (this.active) this.stream.onDownstreamDrain(); } catch (err) { this.internalError(err, 'downstream drain'); } });
    socket.on('error', () => { /* 'close' follows */ });
    socket.on('end', () => { try { this.onDownstreamEnd(); } catch (err) { this.internalError(err, 'downstream end'); } });
    socket.on('close', () => {
      try { this.onDownstreamClose(); } catch (err) { this.internalError(err, 'downstream close'); } finally { this.onClosed(this); }
    });
  }

  /** A bug surfaced in a callback: the request in flight answers 500 or is cut; without one the connection ends. */
  private internalError(err: unknown, where: string): void {
    if (this.active && this.state !== St.Closed) {
      try { this.stream.onInternalError(err, where); return; } catch { /* cut below */ }
    } else {
      this.rt.onInternalError(err, where);
    }
    this.socket.destroy();
  }

  get idle(): boolean {
    return this.state === St.Head && this.pending === undefined;
  }

  /** Called by the proxy's sweep: headers timeout (408), idle keep-alive timeout, stream idle timeout. */
  sweep(now: number): void {
    try { this.sweepAt(now); } catch (err) { this.internalError(err, 'sweep'); }
  }

  startDrain(now: number): void {
    if (this.idle && this.responsesServed > 0 && now - this.lastActivity >= DRAIN_IDLE_GRACE_MS) this.socket.end();
  }

  private sweepAt(now: number): void {
    if (this.active && (this.state === St.Body || this.state === St.Waiting)) {
      // stream idle timeout, checked here rather than with a timer per request: no byte moved since the last look?
      const moved = this.bytesReceived + this.bytesSent;
      if (moved !== this.streamMark) { this.streamMark = moved; this.streamIdleSince = now; }
      else if (now - this.streamIdleSince >= this.rt.limits.streamIdleTimeoutMs) this.stream.onStreamIdleTimeout();
      return;
    }
    if (this.state !== St.Head) return;
    if (this.pending !== undefined) {
      if (now - this.headStartedAt > this.rt.limits.headersTimeoutMs) {
        this.rt.http.downstream_rq_timeout.inc();
        this.replyAndClose(408, 'request headers timeout\n', ResponseFlag.StreamIdleTimeout);
      }
    } else if (now - this.lastActivity > this.rt.limits.idleTimeoutMs || (this.rt.draining && this.responsesServed > 0 && now - this.lastActivity >= DRAIN_IDLE_GRACE_MS)) {
      this.socket.end();
    }
  }

  private onData(chunk: Buffer): void {
    this.lastActivity = Date.now();
    switch (this.state) {
      case St.Head:
        if (this.pending === undefined) this.headStartedAt = this.lastActivity;
        this.pending = this.pending === undefined ? chunk : Buffer.concat([this.pending, chunk]);
        this.processPending();
        return;
      case St.Body:
        this.forwardRequestBody(chunk, 0);
        return;
      case St.Waiting:
        // A pipelined request: keep it until the current response is done.
        this.pending = this.pending === undefined ? chunk : Buffer.concat([this.pending, chunk]);
        if (this.pending.length > this.rt.limits.maxHeadersBytes * 2) this.socket.pause();
        return;
      default:
        return;
    }
  }

  private processPending(): void {
    let buf = this.pending;
    if (buf === undefined) return;
    // RFC 9112 2.2: ignore empty lines before a request line.
    let start = 0;
    while (start + 1 < buf.length && buf[start] === 13 && buf[start + 1] === 10) start += 2;
    if (start > 0) { buf = buf.subarray(start); this.pending = buf.length > 0 ? buf : undefined; if (!this.pending) return; }
    const end = buf.indexOf(CRLFCRLF);
    if (end < 0) {
      // A bare LF line ending would never complete a head: refuse it now rather than at the timeout.
      const lf = buf.indexOf(10);
      if (lf === 0 || (lf > 0 && buf[lf - 1] !== 13)) { this.protocolError(400, 'bare LF in request head'); return; }
      if (buf.length > this.rt.limits.maxHeadersBytes) this.protocolError(431, 'request headers too large');
      return;
    }
    if (end + 4 > this.rt.limits.maxHeadersBytes) { this.protocolError(431, 'request headers too large'); return; }
    this.pending = undefined;
    let head: RequestHead;
    try {
      head = parseRequestHead(buf.toString('latin1', 0, end), this.rt.limits);
    } catch (err) {
      if (err instanceof HttpParseError) { this.protocolError(err.status, `${err.message}\n`); return; }
      throw err;
    }
    this.startRequest(head, buf, end + 4);
  }

  private protocolError(status: number, body: string): void {
    this.rt.http.downstream_cx_protocol_error.inc();
    this.replyAndClose(status, body.endsWith('\n') ? body : `${body}\n`, ResponseFlag.DownstreamProtocolError);
  }

  /** A local reply without a (complete) request head; the connection closes after it. */
  private replyAndClose(status: number, body: string, flag: string): void {
    this.closeAfter = true;
    this.active = true;
    this.req = undefined;
    this.bytesReceived = 0;
    this.bytesSent = 0;
    this.stream.replyWithoutRequest(status, body, flag);
  }

  private startRequest(head: RequestHead, buf: Buffer, bodyStart: number): void {
    this.req = head;
    this.protocol = head.protocol;
    this.active = true;
    this.streamMark = -1;
    this.bytesReceived = bodyStart;
    this.bytesSent = 0;
    if (head.close || this.rt.draining) this.closeAfter = true;
    this.reqFramer.reset(head.bodyKind, head.contentLength);
    this.state = St.Waiting; // until the body is forwarded
    this.headBuf = buf;
    this.headBodyStart = bodyStart;
    this.rt.http.downstream_rq_http1_total.inc();
    this.stream.onRequestHeaders(head);
    if (this.headBuf === undefined) return; // answered locally (maybe the next request served too), or upgraded
    this.headBuf = undefined;
    if ((this.state as St) === St.Closed) return; // reset meanwhile
    if (bodyStart < buf.length) this.forwardRequestBody(buf, bodyStart);
    else if (!this.reqFramer.done) this.state = St.Body;
  }

  /** Passes request body bytes on while the framing says they belong to this request. */
  private forwardRequestBody(buf: Buffer, offset: number): void {
    if (this.reqFramer.done) {
      // no body (left): the rest is the next request's
      this.state = St.Waiting;
      if (offset < buf.length) this.pending = buf.subarray(offset);
      return;
    }
    let n: number;
    try {
      n = this.reqFramer.feed(buf, offset);
    } catch (err) {
      if (err instanceof HttpParseError) { this.stream.onDownstreamProtocolError(err.message); return; }
      throw err;
    }
    this.bytesReceived += n;
    const done = this.reqFramer.done;
    if (done) {
      this.state = St.Waiting;
      if (offset + n < buf.length) this.pending = buf.subarray(offset + n);
    } else {
      this.state = St.Body;
    }
    this.stream.onRequestData(offset === 0 && n === buf.length ? buf : buf.subarray(offset, offset + n), done);
  }

  // ---- DownstreamStream: the response ----------------------------------------------------

  encodeHeaders(res: StreamResponseHead, extra: ExtraHeaders, firstBody: Buffer | undefined, endStream: boolean): void {
    const req = this.req;
    const headBuf = this.headBuf;
    if (headBuf !== undefined) {
      // Answered while the head was being routed: the body bytes that came with it are read (and dropped),
      // bytes after them are the next (pipelined) request's.
      this.headBuf = undefined;
      const bodyStart = this.headBodyStart;
      let used = 0;
      if (!this.reqFramer.done && bodyStart < headBuf.length) {
        try { used = this.reqFramer.feed(headBuf, bodyStart); this.bytesReceived += used; } catch { /* closing anyway */ }
      }
      if (this.reqFramer.done && bodyStart + used < headBuf.length) this.pending = headBuf.subarray(bodyStart + used);
    }
    // A request body we will not read (or not all of) makes the connection unusable.
    if (!this.reqFramer.done || this.rt.draining) this.closeAfter = true;
    // An HTTP/1.0 client, or a close-delimited response, ends the connection.
    if (!res.local && ((req !== undefined && req.minor === 0) || res.bodyKind === 'close')) this.closeAfter = true;
    this.chunkResponse = res.bodyKind === 'stream' && req !== undefined && req.minor === 1;
    this.headResponse = req !== undefined && req.method === 'HEAD';

    let out = `HTTP/1.1 ${res.status} ${res.reason}\r\n`;
    const tokens = res.connectionTokens;
    const names = res.names;
    for (let i = 0; i < names.length; i++) {
      const n = res.lower[i]!;
      if (n === 'transfer-encoding' && res.bodyKind === 'chunked') { out += `${names[i]!}: ${res.values[i]!}\r\n`; continue; } // chunked framing passes through
      if (isHopByHop(n, tokens)) continue;
      out += `${names[i]!}: ${res.values[i]!}\r\n`;
    }
    for (let i = 0; i + 1 < extra.length; i += 2) out += `${extra[i]!}: ${extra[i + 1]!}\r\n`;
    if (this.chunkResponse) out += 'transfer-encoding: chunked\r\n';
    if (this.closeAfter) out += 'connection: close\r\n';
    out += '\r\n';

    // One write for the head and the first body bytes (one syscall for small responses).
    const body = firstBody !== undefined && !this.headResponse ? firstBody : undefined;
    const headLen = Buffer.byteLength(out, 'latin1');
    if (body === undefined || body.length === 0) {
      this.write(Buffer.from(out, 'latin1'));
    } else if (this.chunkResponse) {
      this.write(Buffer.from(out, 'latin1'));
      this.writeChunk(body);
    } else {
      const whole = Buffer.allocUnsafe(headLen + body.length);
      whole.write(out, 0, 'latin1');
      body.copy(whole, headLen);
      this.write(whole);
    }
    if (endStream) this.endResponse();
  }

  encodeData(chunk: Buffer, endStream: boolean): boolean {
    let ok = true;
    if (chunk.length > 0 && !this.headResponse) ok = this.chunkResponse ? this.writeChunk(chunk) : this.write(chunk);
    if (endStream) { this.endResponse(); return true; }
    return ok;
  }

  encodeTrailers(names: readonly string[], values: readonly string[]): void {
    if (this.chunkResponse && !this.headResponse) {
      // the trailer section of the last chunk
      let out = '0\r\n';
      for (let i = 0; i < names.length; i++) out += `${names[i]!}: ${values[i]!}\r\n`;
      this.write(Buffer.from(`${out}\r\n`, 'latin1'));
      this.chunkResponse = false;
    }
    this.endResponse();
  }

  encode100Continue(): void {
    const req = this.req;
    if (req && req.expectContinue && req.minor === 1 && !this.socket.destroyed) this.socket.write(CONTINUE_100, 'latin1');
  }

  reset(_flag: string): void {
    if (this.active) { this.active = false; this.responsesServed++; }
    this.closeAfter = true;
    this.state = St.Closed;
    this.pending = undefined;
    this.headBuf = undefined;
    this.socket.destroy();
  }

  closeAfterResponse(): void { this.closeAfter = true; }

  pauseRequest(): void { this.socket.pause(); }

  resumeRequest(): void {
    if (!this.socket.isPaused()) return;
    // not while a pipelined backlog is what paused it
    if (this.state === St.Body || (this.state === St.Waiting && (this.pending === undefined || this.pending.length <= this.rt.limits.maxHeadersBytes * 2))) this.socket.resume();
  }

  handOverUpgrade(head: RequestHead, target: string, cluster: Cluster, host: Host): void {
    const rest = this.detach();
    this.rt.handleUpgrade(head, target, this.socket, rest, cluster, host);
  }

  handOverTcp(cluster: string): void {
    const rest = this.detach();
    this.rt.handleConnect(this.socket, rest, cluster);
  }

  /** The socket leaves the codec (upgrade, CONNECT): what followed the head, unread by anyone yet. */
  private detach(): Buffer {
    const rest = this.headBuf !== undefined ? this.headBuf.subarray(this.headBodyStart) : EMPTY;
    this.headBuf = undefined;
    this.active = false;
    this.state = St.Upgraded;
    this.socket.removeAllListeners('data');
    this.socket.removeAllListeners('end');
    this.socket.removeAllListeners('drain');
    this.socket.pause(); // nothing may be read (and lost) before the new owner takes the socket
    return rest;
  }

  private write(data: Buffer): boolean {
    this.bytesSent += data.length;
    if (this.socket.destroyed) return true;
    return this.socket.write(data);
  }

  private writeChunk(data: Buffer): boolean {
    this.write(Buffer.from(`${data.length.toString(16)}\r\n`, 'latin1'));
    this.write(data);
    return this.write(CRLF);
  }

  /** The response went out completely: the ActiveStream logs it, then the connection goes on or closes. */
  private endResponse(): void {
    if (this.chunkResponse && !this.headResponse) this.write(LAST_CHUNK);
    this.chunkResponse = false;
    this.stream.onResponseComplete();
    if (!this.active) return; // reset meanwhile
    this.active = false;
    this.req = undefined;
    this.responsesServed++;
    if (this.closeAfter) {
      this.state = St.Closed;
      this.pending = undefined;
      this.socket.end();
      return;
    }
    this.state = St.Head;
    this.lastActivity = Date.now();
    if (this.socket.isPaused()) this.socket.resume();
    if (this.pending !== undefined) {
      this.headStartedAt = this.lastActivity;
      this.processPending();
    }
  }

  private onDownstreamEnd(): void {
    // Half-close from the client: finish what is in flight, then close.
    if (this.state === St.Head) { this.socket.end(); return; }
    this.closeAfter = true;
  }

  private onDownstreamClose(): void {
    const wasActive = this.active && this.state !== St.Closed && this.state !== St.Upgraded;
    this.state = St.Closed;
    if (wasActive) {
      this.active = false;
      this.closeAfter = true;
      this.stream.onDownstreamReset(ResponseFlag.DownstreamConnectionTermination);
    }
  }
}
