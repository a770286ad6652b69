import { performance } from 'node:perf_hooks';
import type { Cluster, UpstreamOutcome } from '../cluster/cluster';
import type { Host } from '../cluster/host';
import type { ActiveStream } from '../http/conn-manager/active-stream';
import type { StreamResponseHead, UpstreamCallbacks, UpstreamCodec, UpstreamResetKind } from '../http/codec/types';
import type { RequestHead } from '../http/head-parser';
import { ResponseFlag } from '../http/response-flags';
import type { CompiledRoute } from '../routing/router';
import type { ProxyRuntime } from '../runtime';
import { statScopeOf } from '../resilience/cluster-resilience';
import type { TryOutcome } from '../resilience/retry-policy';
import { MAX_RETRY_BODY_BYTES, RequestRetryState, routeRetryPolicy } from '../resilience/retry-state';
import { Http1UpstreamCodec } from '../upstream/http1-upstream-codec';
import { Http2UpstreamCodec } from '../upstream/http2-upstream-codec';
import { grpcRouteTimeoutMs, grpcStatusOf } from '../http/grpc';

const DEFAULT_ROUTE_TIMEOUT_MS = 15_000;
/** Transparent re-sends of a request the upstream provably did not process (stale keep-alive connection). */
const MAX_STALE_RESENDS = 3;
const EMPTY = Buffer.alloc(0);
const OVERFLOW_BODY = 'upstream connect error or disconnect/reset before headers. reset reason: overflow\n';

/**
 * Envoy's router filter, the last filter of a request: breaker check, host selection (healthy only,
 * panic threshold), the pending queue, one try at a time through an UpstreamCodec, outcomes reported to
 * outlier detection, retries with body replay and back-off, per-try and route timeouts, the transparent
 * re-send of a stale connection, and the response relayed to the downstream stream with back-pressure.
 * One per ActiveStream, reused with it (HTTP/1: across the requests of a connection).
 */
export class RouterFilter implements UpstreamCallbacks {
  cluster: Cluster | undefined;
  /** the host of the current (or last) try */
  host: Host | undefined;
  /** the response head was relayed downstream: the request can no longer be answered with a status */
  responding = false;
  /** a response head came from the upstream (host stats: a 5xx counts as an error) */
  gotResponse = false;
  upstreamServiceTime: number | undefined;
  /** why the last try's TLS handshake failed (access log `upstream_transport_failure_reason`) */
  transportFailure: string | undefined;
  private upstream: UpstreamCodec | undefined;
  private readonly h1: Http1UpstreamCodec;
  private req: RequestHead | undefined;
  private requestEnded = false;
  private resends = 0;
  private breakerAcquired = false;
  private queued = false;
  /** request body that arrived while the try waited for a connection */
  private queuedBody: Buffer[] | undefined;
  private routeTimer: NodeJS.Timeout | undefined;
  private routeTimeoutMs = 0;
  /** Retries and per-try timeout of the current request (issue 6). */
  retry: RequestRetryState | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** The request body so far, kept for a retry (issue 6). */
  private replay: Buffer[] | undefined;
  private replayBytes = 0;
  /** Per-try timeout: one unref'd Timeout per router re-armed with refresh() (no allocation per request); deadline 0 = disarmed. */
  private tryTimer: NodeJS.Timeout | undefined;
  private tryTimerMs = 0;
  private tryDeadline = 0;
  private upstreamStartMs = 0;
  /** x-envoy-upstream-service-time (and x-mesh-upstream-transport) for the response head; reused */
  private readonly extra: string[] = ['x-envoy-upstream-service-time', ''];
  private readonly extraWithTransport: string[] = ['x-envoy-upstream-service-time', '', 'x-mesh-upstream-transport', ''];

  constructor(private readonly rt: ProxyRuntime, private readonly active: ActiveStream) {
    this.h1 = new Http1UpstreamCodec(rt, (err, where) => active.onInternalError(err, where));
  }

  /** HTTP/2 upstream codec, made on the first request to an http2 cluster (issue 14). */
  private h2: Http2UpstreamCodec | undefined;
  /** The grpc-status of the response (headers of a trailers-only one, or trailers), for the gRPC stats. */
  grpcStatus: number | undefined;

  /** The codec for a cluster's protocol (`protocol: http2`: a stream on a pooled HTTP/2 session). */
  private codecFor(cluster: Cluster): UpstreamCodec {
    if (cluster.protocol === 'http2') return this.h2 ??= new Http2UpstreamCodec(this.rt.pool.http2);
    return this.h1;
  }

  /**
   * Starts routing one request to `cluster` (the ActiveStream has done RBAC, route and cluster lookup).
   * Local replies (overflow, no healthy upstream) go through the ActiveStream.
   */
  start(head: RequestHead, cluster: Cluster, route: CompiledRoute | undefined): void {
    this.cluster = cluster;
    this.req = head;
    this.requestEnded = head.bodyKind === 'none';
    // circuit breaker (issue 6): refuse at once with UO, no queueing.
    if (cluster.circuitBreakers) {
      if (!cluster.circuitBreakers.tryAcquireRequest(false)) {
        cluster.stats.upstream_rq_pending_overflow.inc();
        this.active.sendLocalReply(503, OVERFLOW_BODY, ResponseFlag.UpstreamOverflow);
        return;
      }
      this.breakerAcquired = true;
    }

    // Route timeout (Envoy's default 15 s; 0 disables), counted as Envoy does from the end of the
    // request body, so a long upload is not cut: armed in armRouteTimer().
    this.routeTimeoutMs = route?.config.route?.timeoutMs ?? DEFAULT_ROUTE_TIMEOUT_MS;
    // gRPC: the client's deadline (grpc-timeout) caps it, Envoy's max_grpc_timeout semantics
    if (this.active.grpc) this.routeTimeoutMs = grpcRouteTimeoutMs(this.routeTimeoutMs, this.active.header('grpc-timeout'));
    if (this.requestEnded) this.armRouteTimer();

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
    this.attemptUpstream(undefined);
  }

  /** Request body bytes from the downstream (framed as the head says). */
  onRequestData(chunk: Buffer, end: boolean): void {
    if (this.replay !== undefined && chunk.length > 0) this.keepForReplay(chunk);
    if (end) this.requestEnded = true;
    if (this.queued) {
      // no connection yet: keep it, read nothing more until one frees
      // (a queued retry sends the replay buffer, which has these bytes already)
      if (chunk.length > 0 && !(this.replay && this.retry && this.retry.attempt > 1)) (this.queuedBody ??= []).push(chunk);
      this.active.stream.pauseRequest();
    } else {
      const up = this.upstream;
      if (up && !up.sendData(chunk, end)) this.active.stream.pauseRequest();
    }
    if (end) this.armRouteTimer();
  }

  onRequestTrailers(names: readonly string[], values: readonly string[]): void {
    this.requestEnded = true;
    if (!this.queued) this.upstream?.sendTrailers(names, values);
    this.armRouteTimer();
  }

  onDownstreamDrain(): void {
    this.upstream?.resumeResponse();
  }

  /** Picks a host, takes a connection from the pool and sends the request head. */
  private attemptUpstream(exclude: Host | undefined): void {
    const cluster = this.cluster!;
    const pick = cluster.pickHost({ hashKey: this.active.hashKey(cluster), exclude });
    if (!pick.host) {
      cluster.stats.upstream_cx_none_healthy.inc();
      this.finishWithLocalReply(503, 'no healthy upstream\n', ResponseFlag.NoHealthyUpstream);
      return;
    }
    const codec = this.codecFor(cluster);
    this.upstream = codec;
    const attached = codec.attach(cluster, pick.host, this);
    if (attached === 'ready') { this.sendOn(codec); return; }
    if (attached === 'queued') {
      // max_connections: waiting in the pending queue (max_pending_requests)
      this.queued = true;
      this.active.stream.pauseRequest();
      return;
    }
    this.upstream = undefined;
    this.host = pick.host;
    this.finishWithLocalReply(503, OVERFLOW_BODY, ResponseFlag.UpstreamOverflow);
  }

  /** Writes the request head (and a retry's replayed body); arms the per-try timeout. */
  private sendOn(codec: UpstreamCodec): void {
    const host = codec.host!;
    this.host = host;
    host.stats.rq_total++;
    this.upstreamStartMs = performance.now();
    const retry = this.retry;
    codec.sendHeaders(this.active, this.req!.bodyKind === 'none');
    // A retry sends the body received so far again; the rest follows as it arrives.
    if (retry && retry.attempt > 1 && this.replay) {
      this.sendBody(codec, this.replay);
      if (!this.requestEnded) this.active.stream.resumeRequest(); // paused for the failed try's backpressure
    }
    if (retry && retry.perTryTimeoutMs > 0) this.armTryTimer(retry.perTryTimeoutMs);
  }

  // ---- upstream events (UpstreamCallbacks) ------------------------------------------------

  onUpstreamReady(): void {
    const codec = this.upstream;
    if (!codec || !this.queued) return;
    this.queued = false;
    this.sendOn(codec);
    const body = this.queuedBody;
    this.queuedBody = undefined;
    const replayed = this.retry !== undefined && this.retry.attempt > 1 && this.replay !== undefined; // sendOn sent it all
    if (!replayed && this.req!.bodyKind !== 'none') this.sendBody(codec, body ?? []);
    this.active.stream.resumeRequest();
  }

  /** Body bytes kept while no try could take them; the end of the request with the last. */
  private sendBody(codec: UpstreamCodec, chunks: readonly Buffer[]): void {
    for (const chunk of chunks) codec.sendData(chunk, false);
    if (this.requestEnded && this.req!.bodyKind !== 'none') codec.sendData(EMPTY, true);
  }

  onUpstream100Continue(): void {
    const req = this.req;
    if (req && req.expectContinue && req.minor === 1) this.active.stream.encode100Continue();
  }

  onUpstreamHeaders(res: StreamResponseHead, firstBody: Buffer | undefined, endStream: boolean): void {
    this.tryDeadline = 0;
    // a trailers-only gRPC response carries its status in the headers (retry-on unavailable, ...)
    const grpcStatus = this.active.grpc ? grpcStatusOf(res.lower, res.values) : undefined;
    if (this.retry && this.retryResponse(res.status, grpcStatus)) return;
    this.grpcStatus = grpcStatus;
    this.gotResponse = true;
    this.upstreamServiceTime = Math.round(performance.now() - this.upstreamStartMs);
    this.reportOutcome({ kind: 'response', status: res.status });
    // fixed arrays, values replaced: no array growth or shrink per response
    const transport = this.active.debugUpstream && this.upstream ? this.upstream.transport : undefined;
    const extra = transport === undefined ? this.extra : this.extraWithTransport;
    extra[1] = String(this.upstreamServiceTime);
    if (transport !== undefined) extra[3] = transport;
    this.responding = true;
    this.active.encodeResponseHeaders(res, extra, firstBody, endStream);
  }

  onUpstreamData(chunk: Buffer, endStream: boolean): void {
    if (!this.active.stream.encodeData(chunk, endStream) && !endStream) this.upstream?.pauseResponse();
  }

  onUpstreamTrailers(names: readonly string[], values: readonly string[]): void {
    if (this.active.grpc) this.grpcStatus = grpcStatusOf(names, values) ?? this.grpcStatus;
    this.active.stream.encodeTrailers(names, values);
  }

  onUpstreamDrain(): void {
    if (!this.requestEnded) this.active.stream.resumeRequest();
  }

  onUpstreamReset(kind: UpstreamResetKind, reason: string | undefined): void {
    this.upstream = undefined;
    if (kind === 'protocol-error') { this.upstreamProtocolError(reason ?? 'protocol error'); return; }
    if (this.responding) {
      // Truncated response: the client cannot be told with a status any more.
      this.active.resetStream(this.upstreamResetFlag());
      return;
    }
    if (kind === 'refused' && this.resends < MAX_STALE_RESENDS) {
      // A pooled keep-alive connection the upstream had just closed: re-send on another one.
      this.resends++;
      this.attemptUpstream(undefined);
      return;
    }
    const outcome: UpstreamOutcome = kind === 'connect-failure' ? { kind: 'connect-failure' } : { kind: 'reset' };
    if (kind === 'connect-failure') this.transportFailure = reason;
    this.reportOutcome(outcome);
    this.host!.stats.rq_error++;
    this.onAttemptFailed(outcome);
  }

  /** UC for an HTTP/1 upstream connection that ended mid-response; UR for an HTTP/2 stream reset. */
  private upstreamResetFlag(): string {
    return this.cluster?.protocol === 'http2' ? ResponseFlag.UpstreamRemoteReset : ResponseFlag.UpstreamConnectionTermination;
  }

  /** A try failed before the response: the retry decision, else the local reply Envoy gives. */
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
      if (decision.flag) this.active.addFlag(decision.flag);
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
        if (this.cluster && !this.active.finished) this.attemptUpstream(tried);
      } catch (err) { this.active.onInternalError(err, 'retry'); }
    }, backoffMs);
  }

  /** Issue 6: a retriable response is dropped (its connection closed) and the request sent again. */
  private retryResponse(status: number, grpcStatus: number | undefined): boolean {
    const outcome = { kind: 'response' as const, status, grpcStatus };
    // the decision first: it also counts upstream_rq_retry_success for a good answer after retries
    const decision = this.retry!.decide(outcome);
    if (!decision.retry) {
      if (decision.flag) this.active.addFlag(decision.flag);
      return false;
    }
    this.reportOutcome(outcome);
    if (this.host) this.host.stats.rq_error++;
    this.abortUpstream();
    this.scheduleRetry(decision.backoffMs);
    return true;
  }

  private keepForReplay(chunk: Buffer): void {
    this.replayBytes += chunk.length;
    if (this.replayBytes > MAX_RETRY_BODY_BYTES) {
      this.replay = undefined;
      this.retry?.disableReplay();
      return;
    }
    this.replay!.push(Buffer.from(chunk));
  }

  private armTryTimer(ms: number): void {
    this.tryDeadline = Date.now() + ms;
    if (this.tryTimer && this.tryTimerMs === ms) { this.tryTimer.refresh(); return; }
    if (this.tryTimer) clearTimeout(this.tryTimer);
    this.tryTimerMs = ms;
    this.tryTimer = setTimeout(() => { try { this.onTryTimer(); } catch (err) { this.active.onInternalError(err, 'per-try timeout'); } }, ms).unref();
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
    if (!cluster || this.active.finished || this.responding || this.gotResponse) return;
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

  private armRouteTimer(): void {
    if (this.routeTimeoutMs > 0 && this.routeTimer === undefined && this.cluster) {
      this.routeTimer = setTimeout(() => { try { this.onRouteTimeout(); } catch (err) { this.active.onInternalError(err, 'route timeout'); } }, this.routeTimeoutMs);
    }
  }

  private onRouteTimeout(): void {
    this.routeTimer = undefined;
    const cluster = this.cluster;
    if (!cluster || this.active.finished) return;
    cluster.stats.upstream_rq_timeout.inc();
    if (this.host) { this.host.stats.rq_timeout++; this.reportOutcome({ kind: 'timeout' }); }
    this.abortUpstream();
    if (this.responding) { this.active.resetStream(ResponseFlag.UpstreamRequestTimeout); return; }
    this.finishWithLocalReply(504, 'upstream request timeout\n', ResponseFlag.UpstreamRequestTimeout);
  }

  private upstreamProtocolError(message: string): void {
    this.abortUpstream();
    if (this.host) this.host.stats.rq_error++;
    if (this.responding) { this.active.resetStream(ResponseFlag.UpstreamProtocolError); return; }
    this.finishWithLocalReply(502, `upstream protocol error: ${message}\n`, ResponseFlag.UpstreamProtocolError);
  }

  /** Ends the current try now (retry, timeout, client gone); its callbacks are silenced. */
  abortUpstream(): void {
    const up = this.upstream;
    this.upstream = undefined;
    this.queued = false;
    this.queuedBody = undefined;
    up?.abort();
  }

  /** A reply made by the proxy itself, after the cluster was chosen (counts as an upstream request). */
  private finishWithLocalReply(status: number, body: string, flag: string): void {
    this.abortUpstream();
    this.active.sendLocalReply(status, body, flag);
  }

  /**
   * The request is over (called by the ActiveStream's finish, before its stats): timers, the retry state,
   * the pending queue slot. A try whose response completed gives its connection back on its own.
   */
  finishTimers(): void {
    if (this.queued) this.abortUpstream();
    this.queuedBody = undefined;
    if (this.routeTimer) { clearTimeout(this.routeTimer); this.routeTimer = undefined; }
    this.tryDeadline = 0;
    if (this.retryTimer) { clearTimeout(this.retryTimer); this.retryTimer = undefined; }
    if (this.retry) { this.retry.finish(); this.retry = undefined; }
    this.replay = undefined;
  }

  /** The upstream side of the request's stats (Envoy's upstream_rq_* and the host's counters); then resets for the next request. */
  recordStats(cluster: Cluster | undefined, status: number, flags: string): void {
    const cls = (status / 100) | 0;
    if (cluster && (this.host || flags)) {
      const s = cluster.stats;
      s.upstream_rq_active.dec();
      s.upstream_rq_completed.inc();
      if (cls === 2) s.upstream_rq_2xx.inc();
      else if (cls === 5) s.upstream_rq_5xx.inc();
      else if (cls === 4) s.upstream_rq_4xx.inc();
      else if (cls === 3) s.upstream_rq_3xx.inc();
      if (this.upstreamServiceTime !== undefined) s.upstream_rq_time.record(this.upstreamServiceTime);
      if (this.host) {
        if (status > 0 && status < 500 && !flags) this.host.stats.rq_success++;
        else if (this.gotResponse && status >= 500) this.host.stats.rq_error++;
      }
    }
    if (this.breakerAcquired) { this.breakerAcquired = false; cluster?.circuitBreakers?.releaseRequest(false); }
  }

  /** Forget the request (after the access log line). */
  clear(): void {
    this.cluster = undefined;
    this.host = undefined;
    this.req = undefined;
    this.upstream = undefined;
    this.responding = false;
    this.gotResponse = false;
    this.upstreamServiceTime = undefined;
    this.transportFailure = undefined;
    this.grpcStatus = undefined;
    this.resends = 0;
    this.requestEnded = false;
  }
}
