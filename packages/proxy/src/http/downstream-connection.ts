import { randomUUID } from 'node:crypto';
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Cluster, UpstreamOutcome } from '../cluster/cluster';
import type { Host } from '../cluster/host';
import type { CompiledRoute } from '../routing/router';
import type { ConfigSnapshot, ProxyRuntime } from '../runtime';
import type { PendingRequest, UpstreamConnection, UpstreamOwner } from '../upstream/pool';
import { BodyFramer } from './body-framer';
import { stripV4Mapped, type ConnectionOrigin } from './connection-origin';
import { HttpParseError, parseRequestHead, parseResponseHead, type RequestHead, type ResponseHead } from './head-parser';
import { isHopByHop, reasonPhrase } from './hop-by-hop';
import { RBAC_DENIED_BODY, type CompiledRbac } from './rbac';
import { addFlag, ResponseFlag } from './response-flags';
import { statScopeOf } from '../resilience/cluster-resilience';
import { IMMEDIATE_HC_FAIL_HEADER } from '../resilience/health-checker';
import type { TryOutcome } from '../resilience/retry-policy';
import type { DownstreamTransport } from '../tls/inbound-tls';
import { MAX_RETRY_BODY_BYTES, RequestRetryState, routeRetryPolicy, withAttemptCountHeader } from '../resilience/retry-state';

const CRLFCRLF = Buffer.from('\r\n\r\n');
const CONTINUE_100 = 'HTTP/1.1 100 Continue\r\n\r\n';
const DEFAULT_ROUTE_TIMEOUT_MS = 15_000;
const BLACKHOLE_BODY = 'refused by the mesh listener: it serves captured traffic and explicit-proxy requests from this host only (BlackHoleCluster)\n';
/**
 * Draining closes a keep-alive connection after its next response (`connection: close`), or once
 * it has been idle this long: closing one that just went idle races with the client's next request
 * on it (the client would see a reset), so a busy client is told to go instead (issue 6).
 * A connection that has not served a request yet is never closed this way: it was just accepted and its
 * first request may still be on its way (slow under load); it is served with `connection: close`, or cut
 * at the end of the drain time, as Envoy does.
 */
export const DRAIN_IDLE_GRACE_MS = 1000;
/** Transparent re-sends of a body-less request whose pooled connection turned out stale. */
const MAX_STALE_RESENDS = 3;

const enum St { Head, Body, Waiting, Upgraded, Closed }

/**
 * One downstream (client) connection and its request flow:
 *   head parsed → route → cluster → breaker check → pick host (healthy only,
 *   panic threshold) → upstream attempt → outcome reported → retry decision →
 *   response streamed back → access log and stats.
 * Requests on a connection are handled one at a time (pipelined requests wait
 * in `pending`); bodies are passed through unbuffered with their framing tracked.
 */
export class DownstreamConnection implements UpstreamOwner {
  private state: St = St.Head;
  private pending: Buffer | undefined;
  private headStartedAt = 0;
  lastActivity = Date.now();
  /** responses completed on this connection; a draining proxy leaves never-used connections open */
  responsesServed = 0;
  private readonly reqFramer = new BodyFramer(400);
  private readonly resFramer = new BodyFramer(502);
  private readonly peer: string;
  private closeAfterResponse = false;

  // Per-request state.
  private req: RequestHead | undefined;
  private snapshot: ConfigSnapshot | undefined;
  private cluster: Cluster | undefined;
  private host: Host | undefined;
  private upstream: UpstreamConnection | undefined;
  private upstreamHead = '';
  private resends = 0;
  private resBuf: Buffer | undefined;
  private res: ResponseHead | undefined;
  private dechunk = false;
  private responseStarted = false;
  private breakerAcquired = false;
  /** Stream idle timeout: bytes moved at the last sweep, and since when they have not changed. */
  private streamMark = -1;
  private streamIdleSince = 0;
  /** Waiting in the cluster's pending queue for a connection (max_connections reached). */
  private queued: PendingRequest | undefined;
  /** Body bytes that came with the head of a queued request (the socket is paused meanwhile). */
  private queuedBody: Buffer | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Retries and per-try timeout of the current request (issue 6). */
  private retry: RequestRetryState | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** The request body so far, kept for a retry (issue 6). */
  private replay: Buffer[] | undefined;
  private replayBytes = 0;
  /** Per-try timeout: one unref'd Timeout per connection re-armed with refresh() (no allocation per request); deadline 0 = disarmed. */
  private tryTimer: NodeJS.Timeout | undefined;
  private tryTimerMs = 0;
  private tryDeadline = 0;
  private startMs = 0;
  private startEpoch = 0;
  private upstreamStartMs = 0;
  private upstreamServiceTime: number | undefined;
  private bytesReceived = 0;
  private bytesSent = 0;
  private flags = '';
  private status = 0;
  private path = '';
  private authority: string | undefined;
  private requestId: string | undefined;

  /**
   * `origin`: inbound, outbound, local or refused, decided once by the acceptor (connection-origin.ts);
   * `transport`: plaintext, or TLS terminated by the acceptor with the caller's identity (issue 13).
   */
  constructor(readonly socket: net.Socket, private readonly rt: ProxyRuntime, private readonly onClosed: (c: DownstreamConnection) => void,
    private readonly origin: ConnectionOrigin, readonly transport: DownstreamTransport) {
    this.peer = stripV4Mapped(socket.remoteAddress ?? '');
    socket.setNoDelay(true);
    if (this.origin.kind === 'refused') {
      rt.blackhole.stats.upstream_cx_total.inc();
      rt.onRefused(this.peer, this.origin.reason);
    }
    // Every callback is guarded: a bug in one ends this connection (internalError), never the process.
    socket.on('data', (chunk: Buffer) => { try { this.onData(chunk); } catch (err) { this.internalError(err, 'request data'); } });
    socket.on('drain', () => { if (this.upstream && !this.upstream.closed) this.upstream.socket.resume(); });
    socket.on('error', () => { /* 'close' follows */ });
    socket.on('end', () => { try { this.onDownstreamEnd(); } catch (err) { this.internalError(err, 'downstream end'); } });
    socket.on('close', () => {
      try { this.onDownstreamClose(); } catch (err) { this.internalError(err, 'downstream close'); } finally { this.onClosed(this); }
    });
  }

  /**
   * A bug surfaced in a callback of this connection: log it (with its stack), answer 500 when no
   * response has started, otherwise cut the connection. The process and every other connection go on.
   */
  private internalError(err: unknown, where: string): void {
    this.rt.onInternalError(err, where);
    let answered = false;
    try {
      this.abortUpstream();
      if (this.state !== St.Closed && this.req !== undefined && !this.responseStarted) {
        this.closeAfterResponse = true;
        this.localReply(500, 'internal error\n', '');
        answered = true;
      }
    } catch { /* failing again: cut below */ }
    if (!answered) this.socket.destroy();
  }

  get idle(): boolean {
    return this.state === St.Head && this.pending === undefined;
  }

  /** Called by the proxy's sweep: headers timeout (408) and idle keep-alive timeout. */
  sweep(now: number): void {
    try { this.sweepAt(now); } catch (err) { this.internalError(err, 'sweep'); }
  }

  private sweepAt(now: number): void {
    if (this.req !== undefined && (this.state === St.Body || this.state === St.Waiting)) {
      // stream idle timeout, checked here rather than with a timer per request: no byte moved since the last look?
      const moved = this.bytesReceived + this.bytesSent;
      if (moved !== this.streamMark) { this.streamMark = moved; this.streamIdleSince = now; }
      else if (now - this.streamIdleSince >= this.rt.limits.streamIdleTimeoutMs) this.onStreamIdleTimeout();
      return;
    }
    if (this.state !== St.Head) return;
    if (this.pending !== undefined) {
      if (now - this.headStartedAt > this.rt.limits.headersTimeoutMs) {
        this.rt.http.downstream_rq_timeout.inc();
        this.localReplyAndClose(408, 'request headers timeout\n', ResponseFlag.StreamIdleTimeout);
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
      head = parseRequestHead(buf.toString("latin1", 0, end), this.rt.limits);
    } catch (err) {
      if (err instanceof HttpParseError) { this.protocolError(err.status, `${err.message}\n`); return; }
      throw err;
    }
    this.startRequest(head, buf, end + 4);
  }

  private protocolError(status: number, body: string): void {
    this.rt.http.downstream_cx_protocol_error.inc();
    this.localReplyAndClose(status, body.endsWith('\n') ? body : `${body}\n`, ResponseFlag.DownstreamProtocolError);
  }

  private resetRequestState(): void {
    this.req = undefined; this.snapshot = undefined; this.cluster = undefined; this.host = undefined; this.upstream = undefined;
    this.upstreamHead = ''; this.resends = 0; this.resBuf = undefined; this.res = undefined; this.dechunk = false;
    this.responseStarted = false; this.breakerAcquired = false; this.upstreamServiceTime = undefined; this.routeTimeoutMs = 0;
    this.bytesReceived = 0; this.bytesSent = 0; this.flags = ''; this.status = 0; this.path = '';
    this.authority = undefined; this.requestId = undefined;
    this.transportFailure = undefined; this.debugUpstream = false; this.responseCodeDetails = undefined;
  }

  private startRequest(head: RequestHead, buf: Buffer, bodyStart: number): void {
    this.resetRequestState();
    const rt = this.rt;
    this.req = head;
    this.streamMark = -1;
    this.startMs = performance.now();
    this.startEpoch = Date.now();
    this.bytesReceived = bodyStart;
    rt.http.downstream_rq_total.inc();
    rt.http.downstream_rq_active.inc();
    if (head.close || rt.draining) this.closeAfterResponse = true;
    this.reqFramer.reset(head.bodyKind, head.contentLength);

    // Neither captured nor from this host (item 4 of issue 12): Envoy's BlackHoleCluster, whatever the request.
    if (this.origin.kind === 'refused') { this.refuse(head, buf, bodyStart); return; }

    // Request target: origin-form, or absolute-form from an explicit proxy client (curl -x).
    let target = head.target;
    let authority = head.host;
    if (target.charCodeAt(0) !== 47 /* / */) {
      const m = /^http:\/\/([^/?#]+)(.*)$/i.exec(target);
      if (m) {
        authority = m[1]; // checked by the head parser (absoluteFormAuthority)
        target = m[2] || '/';
      } else if (head.method === 'OPTIONS' && target === '*') {
        // As Envoy: only a path reaches the router; the asterisk-form is answered here with 404 and no
        // body (response code details absolute_path_rejected), the connection kept (docs/proxy-design.md).
        rt.http.downstream_rq_non_relative_path.inc();
        this.path = target;
        this.authority = authority;
        this.localReply(404, '', '', buf, bodyStart);
        return;
      } else {
        this.path = target;
        this.authority = authority;
        this.closeAfterResponse = true;
        this.localReply(head.method === 'CONNECT' ? 405 : 400, head.method === 'CONNECT' ? 'CONNECT is not supported\n' : 'unsupported request target\n', ResponseFlag.DownstreamProtocolError);
        return;
      }
    }
    this.path = target;
    this.authority = authority;
    this.state = St.Waiting; // until an upstream takes the body

    const snap = rt.snapshot; // pinned for the whole request: updates never split a request
    this.snapshot = snap;
    const q = target.indexOf('?');
    const pathOnly = q < 0 ? target : target.slice(0, q);

    // 1. route
    let clusterName: string | undefined;
    let route: CompiledRoute | undefined;
    const inbound = this.origin.kind === 'inbound' ? this.origin.cluster : undefined;
    if (inbound !== undefined) {
      // Envoy's RBAC filter runs before the router: a caller the port's policies do not allow never reaches the application
      const rbac = this.origin.kind === 'inbound' ? snap.inboundPorts.get(this.origin.port)?.rbac : undefined;
      if (rbac && !this.rbacAllows(rbac, head.method, pathOnly)) { this.localReply(403, RBAC_DENIED_BODY, ResponseFlag.RbacAccessDenied, buf, bodyStart); return; }
      clusterName = inbound;
    } else {
      const r = snap.routes.match(authority ?? '', pathOnly, head);
      if (r.kind !== 'route') {
        rt.http.no_route.inc();
        this.localReply(404, `no route for host "${authority ?? ''}"${r.kind === 'no-route' ? ` and path "${pathOnly}" in virtual host "${r.virtualHost}"` : ''}\n`, ResponseFlag.NoRouteFound, buf, bodyStart);
        return;
      }
      route = r.route;
      const direct = route.config.directResponse;
      if (direct) {
        this.localReply(direct.status, direct.body ?? '', '', buf, bodyStart);
        return;
      }
      clusterName = route.pickCluster();
    }

    // 2. cluster
    const cluster = clusterName !== undefined ? snap.clusters.get(clusterName) : undefined;
    if (!cluster) {
      rt.http.no_cluster.inc();
      this.localReply(503, `cluster not found: ${clusterName ?? '(none)'}\n`, ResponseFlag.NoClusterFound, buf, bodyStart);
      return;
    }
    this.cluster = cluster;

    // The proxy's own health (issue 6): after /healthcheck/fail, or while draining, the local
    // service's health-check path fails here so the registry and other proxies take this instance out.
    if ((rt.healthCheckFailed || rt.draining) && (inbound !== undefined || cluster.name.startsWith('in#'))
      && pathOnly === (cluster.config.healthCheck?.path ?? '/health')) {
      this.localReply(503, rt.draining ? 'draining\n' : 'health check failed\n', '', buf, bodyStart, `${IMMEDIATE_HC_FAIL_HEADER}: true\r\n`);
      return;
    }

    // Request id and forwarding headers, built once (also reused for a transparent re-send).
    this.upstreamHead = this.buildUpstreamHead(head, target, cluster);

    // Upgrade (WebSocket): http-proxy-3 takes the socket from here.
    if (head.upgrade !== undefined) {
      const pick = cluster.pickHost({ hashKey: this.hashKey(head, cluster) });
      if (!pick.host) { this.localReply(503, 'no healthy upstream\n', ResponseFlag.NoHealthyUpstream, buf, bodyStart); return; }
      this.state = St.Upgraded;
      this.socket.removeAllListeners('data');
      this.socket.removeAllListeners('end');
      this.socket.removeAllListeners('drain');
      this.socket.pause(); // nothing may be read (and lost) before http-proxy-3 takes the socket
      rt.http.downstream_cx_upgrades_total.inc();
      rt.http.downstream_rq_active.dec();
      rt.handleUpgrade(head, target, this.socket, buf.subarray(bodyStart), cluster, pick.host);
      return;
    }

    // 3. circuit breaker (hook, issue 6): refuse at once with UO, no queueing.
    if (cluster.circuitBreakers) {
      if (!cluster.circuitBreakers.tryAcquireRequest(false)) {
        cluster.stats.upstream_rq_pending_overflow.inc();
        this.localReply(503, 'upstream connect error or disconnect/reset before headers. reset reason: overflow\n', ResponseFlag.UpstreamOverflow, buf, bodyStart);
        return;
      }
      this.breakerAcquired = true;
    }

    // Route timeout (Envoy's default 15 s; 0 disables), counted as Envoy does from the end of the
    // request body, so a long upload is not cut: armed in armRouteTimer(). Per-try timeouts and
    // retries: issue 6 hooks in attemptUpstream/onAttemptFailed.
    this.routeTimeoutMs = route?.config.route?.timeoutMs ?? DEFAULT_ROUTE_TIMEOUT_MS;
    if (this.reqFramer.done) this.armRouteTimer();

    const retryConfig = route?.config.route?.retryPolicy;
    const retryPolicy = retryConfig ? routeRetryPolicy(retryConfig) : undefined;
    if (retryPolicy) {
      // A body is kept (up to MAX_RETRY_BODY_BYTES) while it streams through, so a retry can send it again.
      const replayable = head.bodyKind === 'none' || (!head.expectContinue && head.contentLength <= MAX_RETRY_BODY_BYTES);
      this.retry = new RequestRetryState(retryPolicy, head.method, replayable, cluster.circuitBreakers, statScopeOf(cluster));
      if (replayable && head.bodyKind !== 'none') { this.replay = []; this.replayBytes = 0; }
    }

    cluster.stats.upstream_rq_total.inc();
    cluster.stats.upstream_rq_active.inc();

    // 4.-5. pick a host and send the head (and whatever body bytes came with it).
    if (!this.attemptUpstream(undefined)) return;
    if (this.queued) {
      // no connection yet: keep what came with the head, read nothing more until one frees
      this.queuedBody = bodyStart < buf.length ? buf.subarray(bodyStart) : undefined;
      this.socket.pause();
      return;
    }
    if (bodyStart < buf.length) this.forwardRequestBody(buf, bodyStart);
    else if (!this.reqFramer.done) this.state = St.Body;
  }

  private rbacAllows(rbac: CompiledRbac, method: string, path: string): boolean {
    const principal = this.transport.peerIdentity;
    if (rbac.check({ principal, method, path }).allowed) return true;
    this.responseCodeDetails = 'rbac_access_denied_matched_policy[none]';
    this.rt.onRbacDenied({ port: rbac.port, principal, method, path, peer: this.peer });
    return false;
  }

  /** Envoy's BlackHoleCluster: 502 with flag NR, counted on the cluster, logged; the connection closes after it. */
  private refuse(head: RequestHead, buf: Buffer, bodyStart: number): void {
    const blackhole = this.rt.blackhole;
    this.path = head.target;
    this.authority = head.host;
    this.cluster = blackhole;
    blackhole.stats.upstream_rq_total.inc();
    blackhole.stats.upstream_rq_active.inc();
    this.closeAfterResponse = true;
    this.localReply(502, BLACKHOLE_BODY, ResponseFlag.NoRouteFound, buf, bodyStart);
  }

  private hashKey(head: RequestHead, cluster: Cluster): string | undefined {
    const name = cluster.hashHeader;
    if (name === undefined) return undefined;
    for (let i = 0; i < head.lower.length; i++) if (head.lower[i] === name) return head.values[i];
    return undefined;
  }

  /** Picks a host, takes a connection from the pool and writes the request head. False when a local reply was sent. */
  private attemptUpstream(exclude: Host | undefined): boolean {
    const cluster = this.cluster!;
    const pick = cluster.pickHost({ hashKey: this.hashKey(this.req!, cluster), exclude });
    if (!pick.host) {
      cluster.stats.upstream_cx_none_healthy.inc();
      this.finishWithLocalReply(503, 'no healthy upstream\n', ResponseFlag.NoHealthyUpstream);
      return false;
    }
    const conn = this.rt.pool.acquire(cluster, pick.host, this);
    if (!conn) {
      // max_connections: wait in the pending queue (max_pending_requests), or 503 UO at once when it is full
      this.queued = this.rt.pool.enqueue(cluster, pick.host, this);
      if (this.queued) return true;
      this.host = pick.host;
      this.finishWithLocalReply(503, 'upstream connect error or disconnect/reset before headers. reset reason: overflow\n', ResponseFlag.UpstreamOverflow);
      return false;
    }
    this.sendOn(conn);
    return true;
  }

  /** A queued request got its connection: send it, then let the body flow. */
  onPendingReady(conn: UpstreamConnection): void {
    try { this.sendQueued(conn); } catch (err) { this.internalError(err, 'pending request ready'); }
  }

  private sendQueued(conn: UpstreamConnection): void {
    this.queued = undefined;
    this.sendOn(conn);
    const body = this.queuedBody;
    this.queuedBody = undefined;
    if (this.socket.isPaused()) this.socket.resume();
    if (body) this.forwardRequestBody(body, 0);
    else if (!this.reqFramer.done && this.state === St.Waiting) this.state = St.Body;
  }

  /** Writes the request head (and a retry's replayed body) on `conn`; arms the per-try timeout. */
  private sendOn(conn: UpstreamConnection): void {
    this.host = conn.host;
    this.upstream = conn;
    conn.host.stats.rq_total++;
    this.upstreamStartMs = performance.now();
    const retry = this.retry;
    conn.socket.write(Buffer.from(retry ? withAttemptCountHeader(this.upstreamHead, retry.attempt) : this.upstreamHead, 'latin1'));
    // A retry sends the body received so far again; the rest follows as it arrives.
    if (retry && retry.attempt > 1 && this.replay) {
      for (const b of this.replay) conn.socket.write(b);
      if (this.state === St.Body && this.socket.isPaused()) this.socket.resume(); // paused for the failed try's backpressure
    }
    if (retry && retry.perTryTimeoutMs > 0) {
      this.armTryTimer(retry.perTryTimeoutMs);
    }
  }

  private buildUpstreamHead(head: RequestHead, target: string, _cluster: Cluster): string {
    let out = `${head.method} ${target} HTTP/1.1\r\n`;
    // RFC 9112 3.2.2: a proxy receiving the absolute-form replaces Host with the target's authority,
    // so the upstream sees the name the request was routed by.
    const absoluteForm = head.target.charCodeAt(0) !== 47;
    let xff: string | undefined;
    let xfp = false;
    let hostSeen = false;
    const tokens = head.connectionTokens;
    for (let i = 0; i < head.names.length; i++) {
      const n = head.lower[i]!;
      if (n === 'transfer-encoding') { out += `${head.names[i]!}: ${head.values[i]!}\r\n`; continue; } // chunked framing passes through as is
      if (n === DEBUG_UPSTREAM_HEADER) { this.debugUpstream = head.values[i] === '1'; continue; } // mesh-agent trace asks; the upstream never sees it
      if (isHopByHop(n, tokens)) continue;
      // Envoy's SANITIZE_SET on inbound: only this proxy vouches for the caller's certificate
      if (n === 'x-forwarded-client-cert' && this.origin.kind === 'inbound') continue;
      if (n === 'x-forwarded-for') { xff = xff === undefined ? head.values[i] : `${xff}, ${head.values[i]!}`; continue; }
      if (n === 'x-request-id') this.requestId = head.values[i];
      else if (n === 'x-forwarded-proto') xfp = true;
      else if (n === 'host') { if (absoluteForm) continue; hostSeen = true; }
      out += `${head.names[i]!}: ${head.values[i]!}\r\n`;
    }
    if (!hostSeen && this.authority) out += `host: ${this.authority}\r\n`;
    xff = xff === undefined ? this.peer : `${xff}, ${this.peer}`;
    out += `x-forwarded-for: ${xff}\r\n`;
    if (!xfp) out += this.transport.tls ? 'x-forwarded-proto: https\r\n' : 'x-forwarded-proto: http\r\n';
    if (this.transport.clientCertDetails !== undefined) out += `x-forwarded-client-cert: ${this.transport.clientCertDetails}\r\n`;
    if (this.requestId === undefined) {
      this.requestId = randomUUID();
      out += `x-request-id: ${this.requestId}\r\n`;
    }
    this.forwardedFor = xff;
    return `${out}\r\n`;
  }
  private forwardedFor: string | undefined;
  /** `x-mesh-debug-upstream: 1` was sent: the response says how the upstream was reached. */
  private debugUpstream = false;
  /** Why the last try's TLS handshake failed (access log `upstream_transport_failure_reason`). */
  private transportFailure: string | undefined;
  /** Envoy's %RESPONSE_CODE_DETAILS% where this proxy sets one (RBAC denials). */
  private responseCodeDetails: string | undefined;

  /** Passes request body bytes through to the upstream while the framing says they belong to this request. */
  private forwardRequestBody(buf: Buffer, offset: number): void {
    let n: number;
    try {
      n = this.reqFramer.feed(buf, offset);
    } catch (err) {
      if (err instanceof HttpParseError) {
        // The upstream saw part of a bad body: it cannot be reused.
        this.abortUpstream();
        this.protocolErrorMidRequest(err.message);
        return;
      }
      throw err;
    }
    this.bytesReceived += n;
    if (this.replay !== undefined && n > 0) this.keepForReplay(buf, offset, n);
    const up = this.upstream;
    if (n > 0 && up && !up.closed) {
      const ok = up.socket.write(offset === 0 && n === buf.length ? buf : buf.subarray(offset, offset + n));
      if (!ok) this.socket.pause();
    }
    if (this.reqFramer.done) {
      this.state = St.Waiting;
      this.armRouteTimer();
      if (offset + n < buf.length) this.pending = buf.subarray(offset + n);
    } else {
      this.state = St.Body;
    }
  }

  private protocolErrorMidRequest(message: string): void {
    this.rt.http.downstream_cx_protocol_error.inc();
    this.closeAfterResponse = true;
    if (!this.responseStarted) this.finishWithLocalReply(400, `${message}\n`, ResponseFlag.DownstreamProtocolError);
    else { this.flags = addFlag(this.flags, ResponseFlag.DownstreamProtocolError); this.finishRequest(); this.socket.destroy(); }
  }

  // ---- upstream events -------------------------------------------------------------

  onUpstreamConnect(): void { /* the head was queued on the socket before connect */ }

  onUpstreamDrain(): void {
    if (this.state === St.Body) this.socket.resume();
  }

  onUpstreamData(conn: UpstreamConnection, chunk: Buffer): void {
    try { this.upstreamData(conn, chunk); } catch (err) { this.internalError(err, 'response data'); }
  }

  private upstreamData(conn: UpstreamConnection, chunk: Buffer): void {
    if (conn !== this.upstream) return;
    if (this.res === undefined) {
      this.resBuf = this.resBuf === undefined ? chunk : Buffer.concat([this.resBuf, chunk]);
      this.parseResponseHead();
      return;
    }
    this.forwardResponseBody(chunk, 0);
  }

  private parseResponseHead(): void {
    for (;;) {
      const buf = this.resBuf!;
      const end = buf.indexOf(CRLFCRLF);
      if (end < 0) {
        if (buf.length > this.rt.limits.maxHeadersBytes) this.upstreamProtocolError('upstream response headers too large');
        return;
      }
      let res: ResponseHead;
      try {
        res = parseResponseHead(buf.toString("latin1", 0, end), this.rt.limits, this.req!.method);
      } catch (err) {
        if (err instanceof HttpParseError) { this.upstreamProtocolError(err.message); return; }
        throw err;
      }
      if (res.status >= 100 && res.status < 200) {
        // 100 Continue goes to a client that asked for it; other 1xx are dropped (101 never reaches here).
        if (res.status === 100 && this.req!.expectContinue && this.req!.minor === 1) this.socket.write(CONTINUE_100, 'latin1');
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
    this.tryDeadline = 0;
    if (this.retry && this.retryResponse(res.status)) return;
    this.res = res;
    this.status = res.status;
    this.upstreamServiceTime = Math.round(performance.now() - this.upstreamStartMs);
    this.reportOutcome({ kind: 'response', status: res.status });
    const req = this.req!;
    this.resFramer.reset(res.bodyKind, res.contentLength);
    if (req.minor === 0 || res.bodyKind === 'close' || this.rt.draining || !this.reqFramer.done) this.closeAfterResponse = true;
    this.dechunk = req.minor === 0 && res.bodyKind === 'chunked';

    let out = `HTTP/1.1 ${res.status} ${res.reason}\r\n`;
    const tokens = res.connectionTokens;
    for (let i = 0; i < res.names.length; i++) {
      const n = res.lower[i]!;
      if (n === 'transfer-encoding' && !this.dechunk) { out += `${res.names[i]!}: ${res.values[i]!}\r\n`; continue; }
      if (isHopByHop(n, tokens)) continue;
      out += `${res.names[i]!}: ${res.values[i]!}\r\n`;
    }
    out += `x-envoy-upstream-service-time: ${this.upstreamServiceTime}\r\n`;
    if (this.debugUpstream && this.upstream) out += `x-mesh-upstream-transport: ${this.upstream.transport}\r\n`;
    if (this.closeAfterResponse) out += 'connection: close\r\n';
    else if (req.minor === 0) out += 'connection: keep-alive\r\n';
    out += '\r\n';
    this.responseStarted = true;

    // One write for the head and the first body bytes (one syscall for small responses).
    const bodyAvail = buf.length - bodyStart;
    let bodyLen = 0;
    try {
      bodyLen = this.dechunk ? 0 : this.resFramer.feed(buf, bodyStart);
    } catch (err) {
      if (err instanceof HttpParseError) { this.upstreamProtocolError(err.message); return; }
      throw err;
    }
    if (this.dechunk) {
      this.writeDownstream(Buffer.from(out, 'latin1'));
      if (bodyAvail > 0) this.forwardResponseBody(buf, bodyStart);
      else if (this.resFramer.done) this.finishExchange();
      return;
    }
    const headLen = Buffer.byteLength(out, 'latin1');
    const whole = Buffer.allocUnsafe(headLen + bodyLen);
    whole.write(out, 0, "latin1");
    if (bodyLen > 0) buf.copy(whole, headLen, bodyStart, bodyStart + bodyLen);
    this.writeDownstream(whole);
    if (this.resFramer.done) this.finishExchange();
    else if (bodyStart + bodyLen < buf.length) this.upstreamProtocolError('bytes after the response');
  }

  private forwardResponseBody(buf: Buffer, offset: number): void {
    let n: number;
    try {
      if (this.dechunk) {
        n = this.resFramer.feed(buf, offset, (s, e) => { if (e > s) this.writeDownstream(buf.subarray(s, e)); });
      } else {
        n = this.resFramer.feed(buf, offset);
        if (n > 0) this.writeDownstream(offset === 0 && n === buf.length ? buf : buf.subarray(offset, offset + n));
      }
    } catch (err) {
      if (err instanceof HttpParseError) { this.upstreamProtocolError(err.message); return; }
      throw err;
    }
    if (this.resFramer.done) this.finishExchange();
    else if (offset + n < buf.length) this.upstreamProtocolError('bytes after the response');
  }

  private writeDownstream(data: Buffer): void {
    this.bytesSent += data.length;
    if (!this.socket.write(data) && this.upstream && !this.upstream.closed) this.upstream.socket.pause();
  }

  onUpstreamClose(conn: UpstreamConnection, connectFailed: boolean, error: Error | undefined): void {
    try { this.upstreamClosed(conn, connectFailed, error); } catch (err) { this.internalError(err, 'upstream close'); }
  }

  private upstreamClosed(conn: UpstreamConnection, connectFailed: boolean, _error: Error | undefined): void {
    if (conn !== this.upstream) return;
    this.upstream = undefined;
    if (this.res !== undefined) {
      if (this.res.bodyKind === 'close') { this.resFramer.done = true; this.finishExchange(); return; }
      // Truncated response: the client cannot be told with a status any more.
      this.flags = addFlag(this.flags, ResponseFlag.UpstreamConnectionTermination);
      this.closeAfterResponse = true;
      this.finishRequest();
      this.socket.destroy();
      return;
    }
    // Before any response byte.
    const stale = !connectFailed && conn.uses > 1 && this.resBuf === undefined && this.req!.bodyKind === 'none';
    if (stale && this.resends < MAX_STALE_RESENDS) {
      // A pooled keep-alive connection the upstream had just closed: re-send on another one.
      this.resends++;
      this.attemptUpstream(undefined);
      return;
    }
    const outcome: UpstreamOutcome = connectFailed ? { kind: 'connect-failure' } : { kind: 'reset' };
    if (connectFailed) this.transportFailure = conn.transportFailureReason;
    this.reportOutcome(outcome);
    this.host!.stats.rq_error++;
    this.onAttemptFailed(outcome);
  }

  /**
   * Hook (issue 6): the retry decision. Today an attempt that failed before the
   * response ends the request with 503; the resilience module decides here
   * whether to retry (another host: attemptUpstream(this.host)), with back-off,
   * and sets URX when retries are exhausted.
   */
  private onAttemptFailed(outcome: UpstreamOutcome): void {
    if (this.retryAfter(outcome)) return;
    if (outcome.kind === 'timeout') {
      this.finishWithLocalReply(504, 'upstream request timeout\n', ResponseFlag.UpstreamRequestTimeout);
    } else if (outcome.kind === 'connect-failure') {
      // Envoy's body, with the TLS handshake's failure reason when there is one
      const transport = this.transportFailure === undefined ? '' : `, transport failure reason: ${this.transportFailure}`;
      this.finishWithLocalReply(503, `upstream connect error or disconnect/reset before headers. reset reason: connection failure${transport}\n`, ResponseFlag.UpstreamConnectionFailure);
    } else {
      this.finishWithLocalReply(503, 'upstream connect error or disconnect/reset before headers. reset reason: connection termination\n', ResponseFlag.UpstreamConnectionTermination);
    }
  }

  /** Issue 6: true when the retry policy sends the request again; otherwise the flag it gives (URX, UO) is set. */
  private retryAfter(outcome: TryOutcome): boolean {
    const decision = this.retry?.decide(outcome);
    if (!decision) return false;
    if (!decision.retry) {
      if (decision.flag) this.flags = addFlag(this.flags, decision.flag);
      return false;
    }
    this.scheduleRetry(decision.backoffMs);
    return true;
  }

  /** Issue 6: after the back-off, the next try goes to another host where one exists. */
  private scheduleRetry(backoffMs: number): void {
    this.tryDeadline = 0; // the failed try's timer must not fire during the back-off
    const tried = this.host;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      try {
        if (this.state !== St.Closed && this.req !== undefined && this.cluster) this.attemptUpstream(tried);
      } catch (err) { this.internalError(err, 'retry'); }
    }, backoffMs);
  }

  /** Issue 6: a retriable response is dropped (its connection closed) and the request sent again. */
  private retryResponse(status: number): boolean {
    const outcome = { kind: 'response' as const, status };
    // the decision first: it also counts upstream_rq_retry_success for a good answer after retries
    const decision = this.retry!.decide(outcome);
    if (!decision.retry) {
      if (decision.flag) this.flags = addFlag(this.flags, decision.flag);
      return false;
    }
    this.reportOutcome(outcome);
    if (this.host) this.host.stats.rq_error++;
    this.abortUpstream();
    this.scheduleRetry(decision.backoffMs);
    return true;
  }

  private keepForReplay(buf: Buffer, offset: number, n: number): void {
    this.replayBytes += n;
    if (this.replayBytes > MAX_RETRY_BODY_BYTES) {
      this.replay = undefined;
      this.retry?.disableReplay();
      return;
    }
    this.replay!.push(Buffer.from(buf.subarray(offset, offset + n)));
  }

  private armTryTimer(ms: number): void {
    this.tryDeadline = Date.now() + ms;
    if (this.tryTimer && this.tryTimerMs === ms) { this.tryTimer.refresh(); return; }
    if (this.tryTimer) clearTimeout(this.tryTimer);
    this.tryTimerMs = ms;
    this.tryTimer = setTimeout(() => { try { this.onTryTimer(); } catch (err) { this.internalError(err, 'per-try timeout'); } }, ms).unref();
  }

  private onTryTimer(): void {
    if (this.tryDeadline === 0) return;
    const left = this.tryDeadline - Date.now();
    if (left > 0) { this.armTryTimer(left); return; }
    this.tryDeadline = 0;
    this.onPerTryTimeout();
  }

  /** Issue 6: the per-try timeout fired before the response head: count it, drop the try, maybe retry. */
  private onPerTryTimeout(): void {
    const cluster = this.cluster;
    if (!cluster || this.state === St.Closed || this.responseStarted || this.res !== undefined) return;
    statScopeOf(cluster).counter('upstream_rq_per_try_timeout').inc();
    if (this.host) this.host.stats.rq_timeout++;
    this.abortUpstream();
    this.reportOutcome({ kind: 'timeout' });
    this.onAttemptFailed({ kind: 'timeout' });
  }

  /** Hook (issue 6): the outlier detector sees every attempt's outcome. */
  private reportOutcome(outcome: UpstreamOutcome): void {
    const host = this.host;
    if (host) this.cluster?.outlierDetector?.reportOutcome(host, outcome);
  }

  private routeTimeoutMs = 0;

  private armRouteTimer(): void {
    if (this.routeTimeoutMs > 0 && this.timer === undefined && this.cluster) this.timer = setTimeout(() => { try { this.onRouteTimeout(); } catch (err) { this.internalError(err, 'route timeout'); } }, this.routeTimeoutMs);
  }

  private onRouteTimeout(): void {
    this.timer = undefined;
    const cluster = this.cluster;
    if (!cluster || this.state === St.Closed) return;
    cluster.stats.upstream_rq_timeout.inc();
    if (this.host) { this.host.stats.rq_timeout++; this.reportOutcome({ kind: 'timeout' }); }
    this.abortUpstream();
    if (this.responseStarted) {
      this.flags = addFlag(this.flags, ResponseFlag.UpstreamRequestTimeout);
      this.closeAfterResponse = true;
      this.finishRequest();
      this.socket.destroy();
      return;
    }
    this.finishWithLocalReply(504, 'upstream request timeout\n', ResponseFlag.UpstreamRequestTimeout);
  }

  /** Envoy's stream idle timeout: 408 before the response started, otherwise the stream is cut; flag SI. */
  private onStreamIdleTimeout(): void {
    this.rt.http.downstream_rq_idle_timeout.inc();
    this.abortUpstream();
    this.closeAfterResponse = true;
    if (this.responseStarted) {
      this.flags = addFlag(this.flags, ResponseFlag.StreamIdleTimeout);
      this.finishRequest();
      this.socket.destroy();
      return;
    }
    this.finishWithLocalReply(408, 'stream timeout\n', ResponseFlag.StreamIdleTimeout);
  }

  private upstreamProtocolError(message: string): void {
    this.abortUpstream();
    if (this.host) this.host.stats.rq_error++;
    if (this.responseStarted) {
      this.flags = addFlag(this.flags, ResponseFlag.UpstreamProtocolError);
      this.finishRequest();
      this.socket.destroy();
      return;
    }
    this.finishWithLocalReply(502, `upstream protocol error: ${message}\n`, ResponseFlag.UpstreamProtocolError);
  }

  private abortUpstream(): void {
    const up = this.upstream;
    this.upstream = undefined;
    if (up) this.rt.pool.discard(up);
  }

  // ---- completion ------------------------------------------------------------------

  /** The response went out completely: recycle the upstream connection and go on with the next request. */
  private finishExchange(): void {
    // The upstream answered before the request body was all here: the rest of it cannot be
    // told apart from a next request, so this connection ends after the response.
    if (!this.reqFramer.done) this.closeAfterResponse = true;
    const up = this.upstream;
    this.upstream = undefined;
    if (up) {
      up.socket.resume();
      const reusable = !this.res!.close && this.reqFramer.done && this.resFramer.done;
      if (reusable) this.rt.pool.release(up);
      else this.rt.pool.discard(up);
    }
    this.finishRequest();
  }

  /** A reply made by the proxy itself, after the cluster was chosen (counts as an upstream request). */
  private finishWithLocalReply(status: number, body: string, flag: string): void {
    this.abortUpstream();
    if (!this.reqFramer.done) this.closeAfterResponse = true;
    this.localReply(status, body, flag);
  }

  private localReply(status: number, body: string, flag: string, buf?: Buffer, bodyStart?: number, extraHeaders = ''): void {
    this.flags = addFlag(this.flags, flag);
    this.status = status;
    // A request body we will not read makes the connection unusable.
    let used = 0;
    if (!this.reqFramer.done) {
      if (buf && bodyStart !== undefined && bodyStart < buf.length) {
        try { used = this.reqFramer.feed(buf, bodyStart); this.bytesReceived += used; } catch { /* closing anyway */ }
      }
      if (!this.reqFramer.done) this.closeAfterResponse = true;
    }
    // Bytes after this request (a pipelined one) are the next request's: kept, not dropped.
    if (this.reqFramer.done && buf && bodyStart !== undefined && bodyStart + used < buf.length) this.pending = buf.subarray(bodyStart + used);
    if (this.rt.draining) this.closeAfterResponse = true;
    const bodyBuf = Buffer.from(body);
    // as Envoy's local replies: no content-type when there is no body
    const head = `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\ncontent-length: ${bodyBuf.length}\r\n${bodyBuf.length > 0 ? 'content-type: text/plain\r\n' : ''}server: envoy\r\n${extraHeaders}${this.closeAfterResponse ? 'connection: close\r\n' : ''}\r\n`;
    this.responseStarted = true;
    if (!this.socket.destroyed) {
      this.socket.write(head, 'latin1');
      if (this.req?.method !== 'HEAD') this.socket.write(bodyBuf);
    }
    this.bytesSent += Buffer.byteLength(head) + bodyBuf.length;
    this.finishRequest();
  }

  private localReplyAndClose(status: number, body: string, flag: string): void {
    this.closeAfterResponse = true;
    if (this.req === undefined) {
      this.resetRequestState();
      this.startMs = performance.now();
      this.startEpoch = Date.now();
      this.rt.http.downstream_rq_total.inc();
      this.rt.http.downstream_rq_active.inc();
    }
    this.localReply(status, body, flag);
  }

  private finishRequest(): void {
    if (this.queued) { this.rt.pool.cancelPending(this.queued); this.queued = undefined; }
    this.queuedBody = undefined;
    if (this.timer) { clearTimeout(this.timer); this.timer = undefined; }
    this.tryDeadline = 0;
    if (this.retryTimer) { clearTimeout(this.retryTimer); this.retryTimer = undefined; }
    if (this.retry) { this.retry.finish(); this.retry = undefined; }
    this.replay = undefined;
    const rt = this.rt;
    const status = this.status;
    rt.http.downstream_rq_active.dec();
    rt.http.downstream_rq_completed.inc();
    const cls = (status / 100) | 0;
    if (cls === 2) rt.http.downstream_rq_2xx.inc();
    else if (cls === 5) rt.http.downstream_rq_5xx.inc();
    else if (cls === 4) rt.http.downstream_rq_4xx.inc();
    else if (cls === 3) rt.http.downstream_rq_3xx.inc();
    else if (cls === 1) rt.http.downstream_rq_1xx.inc();
    const cluster = this.cluster;
    if (cluster && (this.host || this.flags)) {
      const s = cluster.stats;
      s.upstream_rq_active.dec();
      s.upstream_rq_completed.inc();
      if (cls === 2) s.upstream_rq_2xx.inc();
      else if (cls === 5) s.upstream_rq_5xx.inc();
      else if (cls === 4) s.upstream_rq_4xx.inc();
      else if (cls === 3) s.upstream_rq_3xx.inc();
      if (this.upstreamServiceTime !== undefined) s.upstream_rq_time.record(this.upstreamServiceTime);
      if (this.host) {
        if (status > 0 && status < 500 && !this.flags) this.host.stats.rq_success++;
        else if (this.res !== undefined && status >= 500) this.host.stats.rq_error++;
      }
    }
    if (this.breakerAcquired) { this.breakerAcquired = false; cluster?.circuitBreakers?.releaseRequest(false); }
    const req = this.req;
    if (rt.accessLog) {
      rt.accessLog.log({
        startTime: this.startEpoch,
        method: req?.method ?? '-',
        path: this.path || '-',
        protocol: req ? (req.minor === 0 ? 'HTTP/1.0' : 'HTTP/1.1') : '-',
        status,
        flags: this.flags,
        bytesReceived: this.bytesReceived,
        bytesSent: this.bytesSent,
        durationMs: Math.round(performance.now() - this.startMs),
        upstreamServiceTimeMs: this.upstreamServiceTime,
        forwardedFor: this.forwardedFor,
        userAgent: req ? headerOf(req, 'user-agent') : undefined,
        requestId: this.requestId,
        authority: this.authority,
        upstreamHost: this.host ? `${this.host.address}:${this.host.port}` : undefined,
        upstreamCluster: cluster?.name,
        upstreamTransportFailureReason: this.transportFailure,
        responseCodeDetails: this.responseCodeDetails,
      });
    }
    this.req = undefined;
    this.cluster = undefined;
    this.snapshot = undefined;
    this.res = undefined;
    this.forwardedFor = undefined;
    this.responsesServed++;
    if (this.closeAfterResponse) {
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
    this.closeAfterResponse = true;
  }

  private onDownstreamClose(): void {
    const wasActive = this.req !== undefined && this.state !== St.Closed && this.state !== St.Upgraded;
    this.state = St.Closed;
    if (wasActive) {
      this.abortUpstream();
      this.flags = addFlag(this.flags, ResponseFlag.DownstreamConnectionTermination);
      this.closeAfterResponse = true;
      this.finishRequest();
    } else if (this.timer) {
      clearTimeout(this.timer);
    }
  }
}

/** Request header `mesh-agent trace` sends (value `1`); removed before the upstream. */
export const DEBUG_UPSTREAM_HEADER = 'x-mesh-debug-upstream';

function headerOf(h: RequestHead, lowerName: string): string | undefined {
  for (let i = 0; i < h.lower.length; i++) if (h.lower[i] === lowerName) return h.values[i];
  return undefined;
}
