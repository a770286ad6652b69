import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Cluster } from '../../cluster/cluster';
import type { ClusterChoice, CompiledRoute } from '../../routing/router';
import { mutatePairs, withoutDropped } from '../../routing/header-mutation';
import { redirectLocation } from '../../routing/redirect';
import { ShadowRequest, shadowableBody } from '../../router/shadow-request';
import type { ConfigSnapshot, ProxyRuntime } from '../../runtime';
import { IMMEDIATE_HC_FAIL_HEADER } from '../../resilience/health-checker';
import { withAttemptCountHeader } from '../../resilience/retry-state';
import { RouterFilter } from '../../router/router-filter';
import type { DownstreamStream, DownstreamStreamCallbacks, ExtraHeaders, ForwardedRequest, StreamRequestHead, StreamResponseHead } from '../codec/types';
import type { RequestHead } from '../head-parser';
import { isHopByHop, reasonPhrase } from '../hop-by-hop';
import { RBAC_DENIED_BODY, type CompiledRbac } from '../rbac';
import { addFlag, ResponseFlag } from '../response-flags';
import { countGrpcCall, grpcLocalReply, isGrpcRequest } from '../grpc';
import { HopTrace, isTraceHeader } from '../../observability/tracing';

const BLACKHOLE_BODY = 'refused by the mesh listener: it serves captured traffic and explicit-proxy requests from this host only (BlackHoleCluster)\n';
const NO_HEADERS: string[] = [];
/** Envoy's local_ratelimit answer (issue 16). */
const RATE_LIMITED_BODY = 'local_rate_limited';
const RATE_LIMITED_HEADERS = ['x-envoy-ratelimited', 'true'];
const FAULT_ABORT_BODY = 'fault filter abort';
/** The route's answer to `x-mesh-debug-upstream: 1` (issue 16): vhost, route, cluster and the policies applied. */
export const DEBUG_ROUTE_HEADER = 'x-mesh-route';
const FAULT_DELAYED = 1;
const FAULT_ABORTED = 2;
const EMPTY_BODY = Buffer.alloc(0);

/** True for `percent` % of the calls (fractions allowed). */
function sampled(percent: number): boolean {
  return percent >= 100 || (percent > 0 && Math.random() * 100 < percent);
}

/** Request header `mesh-agent trace` sends (value `1`); removed before the upstream. */
export const DEBUG_UPSTREAM_HEADER = 'x-mesh-debug-upstream';

/**
 * Envoy's ActiveStream and filter manager: one request's life, whatever the protocol.
 *   origin (refused -> BlackHoleCluster) -> target/authority -> RBAC filter -> route (direct response) ->
 *   cluster -> the proxy's own health-check short-circuit -> request id and forwarding headers ->
 *   RouterFilter (breakers, host, tries, retries, timeouts, relay) -> downstream stats and access log.
 * Local replies are made here (sendLocalReply). The HTTP/1 codec reuses one ActiveStream for all the
 * requests of its connection (reset per request, no allocation); the HTTP/2 codec makes one per stream.
 */
export class ActiveStream implements DownstreamStreamCallbacks, ForwardedRequest {
  readonly router: RouterFilter;
  /** the request's head (undefined between requests) */
  head!: StreamRequestHead;
  private req: RequestHead | undefined;
  path = '';
  authority: string | undefined;
  readonly scheme: 'http' | 'https';
  /** no request in flight: finished (logged) or not started */
  finished = true;
  /** a response head went out (local or relayed): the request can no longer be answered with a status */
  responseStarted = false;
  /** content-type application/grpc*: local replies are gRPC errors, grpc-timeout applies, gRPC stats are kept */
  grpc = false;
  /** the grpc-status of a local reply to a gRPC request */
  private localGrpcStatus: number | undefined;
  /** `x-mesh-debug-upstream: 1` was sent: the response says how the upstream was reached */
  debugUpstream = false;
  private snapshot: ConfigSnapshot | undefined;
  private cluster: Cluster | undefined;
  /** the matched route (outbound), for %ROUTE_NAME% */
  private route: CompiledRoute | undefined;
  /** the response head and the pairs added to it, for %RESP(...)% */
  private resHead: StreamResponseHead | undefined;
  private resExtra: ExtraHeaders | undefined;
  private flags = '';
  private status = 0;
  private startMs = 0;
  private startEpoch = 0;
  private requestId: string | undefined;
  private forwardedFor: string | undefined;
  /** Envoy's %RESPONSE_CODE_DETAILS% where this proxy sets one (RBAC denials). */
  private responseCodeDetails: string | undefined;
  /** the forwarded HTTP/1.1 head without the attempt count, built once per request */
  private upstreamHead = '';
  private headers: { names: string[]; values: string[] } | undefined;
  /** the path and authority sent upstream: `path`/`authority`, or the route's prefixRewrite/hostRewrite (issue 16) */
  upstreamPath = '';
  upstreamAuthority: string | undefined;
  /** the cluster the route picked, with its request header mutation (issue 16) */
  private choice: ClusterChoice | undefined;
  /** issue 16, for x-mesh-route: fault applied (FAULT_* bits), rate limit result, mirrors sent */
  private faultApplied = 0;
  private rateLimitResult: 'ok' | 'limited' | undefined;
  private mirrored: string | undefined;
  /** a fault delay in progress: the body that arrives meanwhile waits here (the request is paused) */
  private faultTimer: NodeJS.Timeout | undefined;
  private delayedBody: Buffer[] | undefined;
  private delayedEnd = false;
  private delayedTrailers: [readonly string[], readonly string[]] | undefined;
  /** mirrors waiting for the end of the request body */
  private shadows: ShadowRequest[] | undefined;
  /** what route matching reads, one object per ActiveStream (filled per request) */
  private routeReq: { path: string; target: string; authority: string; head: RequestHead } | undefined;
  /** a local reply made by the route itself (redirect, direct response): the route's response headers apply */
  private routeReply = false;
  /** this hop's trace context (issue 16): extracted from the request, injected upstream, exported as a span when sampled */
  readonly trace = new HopTrace();

  constructor(private readonly rt: ProxyRuntime, readonly stream: DownstreamStream) {
    this.scheme = stream.transport.tls ? 'https' : 'http';
    this.router = new RouterFilter(rt, this);
  }

  get attempt(): number { return this.router.retry?.attempt ?? 0; }

  h1Head(): string {
    const retry = this.router.retry;
    return retry ? withAttemptCountHeader(this.upstreamHead, retry.attempt) : this.upstreamHead;
  }

  headerList(): { readonly names: readonly string[]; readonly values: readonly string[] } {
    return this.headers ??= this.buildHeaderList();
  }

  addFlag(flag: string): void { this.flags = addFlag(this.flags, flag); }

  private begin(): void {
    this.finished = false;
    this.responseStarted = false;
    this.snapshot = undefined; this.cluster = undefined; this.route = undefined; this.resHead = undefined; this.resExtra = undefined;
    this.flags = ''; this.status = 0; this.path = ''; this.authority = undefined;
    this.requestId = undefined; this.forwardedFor = undefined; this.responseCodeDetails = undefined;
    this.debugUpstream = false; this.upstreamHead = ''; this.headers = undefined;
    this.grpc = false; this.localGrpcStatus = undefined;
    this.upstreamPath = ''; this.upstreamAuthority = undefined; this.choice = undefined;
    this.faultApplied = 0; this.rateLimitResult = undefined; this.mirrored = undefined; this.routeReply = false;
    this.startMs = performance.now();
    this.startEpoch = Date.now();
    this.rt.http.downstream_rq_total.inc();
    this.rt.http.downstream_rq_active.inc();
  }

  onRequestHeaders(head: StreamRequestHead): void {
    const rt = this.rt;
    this.begin();
    this.head = head;
    this.req = head;
    this.grpc = isGrpcRequest(head.lower, head.values);
    this.trace.extract(head.lower, head.values, rt.tracing.samplingPercent);
    const origin = this.stream.origin;

    // Neither captured nor from this host (item 4 of issue 12): Envoy's BlackHoleCluster, whatever the request.
    if (origin.kind === 'refused') { this.refuse(head); return; }

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
        this.sendLocalReply(404, '', '');
        return;
      } else if (head.method === 'CONNECT' && origin.kind === 'local' && head.protocol !== 'HTTP/2' && rt.snapshot.connectTargets.has(target.toLowerCase())) {
        // Envoy's CONNECT termination to a mesh TCP service by NAME:PORT (outboundTcp domains), for this host's
        // applications only (a direct connection from this host): a peer must never tunnel out through us
        this.stream.handOverTcp(rt.snapshot.connectTargets.get(target.toLowerCase())!);
        return;
      } else {
        this.path = target;
        this.authority = authority;
        this.stream.closeAfterResponse();
        this.sendLocalReply(head.method === 'CONNECT' ? 405 : 400, head.method === 'CONNECT' ? 'CONNECT is not supported\n' : 'unsupported request target\n', ResponseFlag.DownstreamProtocolError);
        return;
      }
    }
    this.path = target;
    this.authority = authority;
    this.upstreamPath = target;
    this.upstreamAuthority = authority;

    const snap = rt.snapshot; // pinned for the whole request: updates never split a request
    this.snapshot = snap;
    const q = target.indexOf('?');
    const pathOnly = q < 0 ? target : target.slice(0, q);

    // 1. route
    const inbound = origin.kind === 'inbound' ? origin.cluster : undefined;
    if (inbound !== undefined) {
      // Envoy's RBAC filter runs before the router: a caller the port's policies do not allow never reaches the application
      const rbac = origin.kind === 'inbound' ? snap.inboundPorts.get(origin.port)?.rbac : undefined;
      if (rbac && !this.rbacAllows(rbac, head.method, pathOnly)) { this.sendLocalReply(403, RBAC_DENIED_BODY, ResponseFlag.RbacAccessDenied); return; }
      this.forward(head, pathOnly, inbound, undefined);
      return;
    }
    const routeReq = this.routeReq ??= { path: '', target: '', authority: '', head };
    routeReq.path = pathOnly; routeReq.target = target; routeReq.authority = authority ?? ''; routeReq.head = head;
    const r = snap.routes.match(routeReq);
    if (r.kind !== 'route') {
      rt.http.no_route.inc();
      this.sendLocalReply(404, `no route for host "${authority ?? ''}"${r.kind === 'no-route' ? ` and path "${pathOnly}" in virtual host "${r.virtualHost}"` : ''}\n`, ResponseFlag.NoRouteFound);
      return;
    }
    const route = r.route;
    this.route = route;
    // issue 16: rate limits, faults, redirects, rewrites, header changes and mirrors take the longer way
    if (!route.plain) { this.routeFilters(route); return; }
    const direct = route.config.directResponse;
    if (direct) {
      rt.routeStats.rq_direct_response.inc();
      this.sendLocalReply(direct.status, direct.body ?? '', '');
      return;
    }
    const choice = route.pickCluster();
    this.choice = choice;
    this.forward(head, pathOnly, choice?.name, route);
  }

  /** 2.-5. (after the route and its filters): the cluster, the proxy's own health, the forwarded head, the router filter. */
  private forward(head: RequestHead, pathOnly: string, clusterName: string | undefined, route: CompiledRoute | undefined): void {
    const rt = this.rt;
    const snap = this.snapshot!;
    const inbound = this.stream.origin.kind === 'inbound' ? clusterName : undefined;
    // 2. cluster
    const cluster = clusterName !== undefined ? snap.clusters.get(clusterName) : undefined;
    if (!cluster) {
      rt.http.no_cluster.inc();
      this.sendLocalReply(503, `cluster not found: ${clusterName ?? '(none)'}\n`, ResponseFlag.NoClusterFound);
      return;
    }
    this.cluster = cluster;

    // The proxy's own health (issue 6): after /healthcheck/fail, or while draining, the local
    // service's health-check path fails here so the registry and other proxies take this instance out.
    if ((rt.healthCheckFailed || rt.draining) && (inbound !== undefined || cluster.name.startsWith('in#'))
      && pathOnly === (cluster.config.healthCheck?.path ?? '/health')) {
      this.sendLocalReply(503, rt.draining ? 'draining\n' : 'health check failed\n', '', [IMMEDIATE_HC_FAIL_HEADER, 'true']);
      return;
    }

    // Request id and forwarding headers, built once (also reused for retries and a transparent re-send).
    this.upstreamHead = this.buildUpstreamHead(head, this.upstreamPath);

    // Upgrade (WebSocket, HTTP/1 only): http-proxy-3 takes the socket from here.
    if (head.upgrade !== undefined) {
      const pick = cluster.pickHost({ hashKey: this.hashKey(cluster) });
      if (!pick.host) { this.sendLocalReply(503, 'no healthy upstream\n', ResponseFlag.NoHealthyUpstream); return; }
      rt.http.downstream_cx_upgrades_total.inc();
      rt.http.downstream_rq_active.dec();
      this.finished = true;
      this.stream.handOverUpgrade(head, this.upstreamPath, cluster, pick.host);
      return;
    }

    // 3.-5. the router filter: breaker, host, try, retries, timeouts, relay.
    this.router.start(head, cluster, route);
    if (route?.mirrors !== undefined) this.startMirrors(route, head);
  }

  onRequestData(chunk: Buffer, end: boolean): void {
    if (this.finished) return;
    if (this.faultTimer !== undefined) { this.holdDuringDelay(chunk, end); return; }
    if (this.shadows !== undefined) this.shadowBody(chunk, end);
    this.router.onRequestData(chunk, end);
  }

  onRequestTrailers(names: readonly string[], values: readonly string[]): void {
    if (this.finished) return;
    if (this.faultTimer !== undefined) { this.delayedTrailers = [names, values]; this.delayedEnd = true; return; }
    if (this.shadows !== undefined) this.shadowBody(EMPTY_BODY, true);
    this.router.onRequestTrailers(names, values);
  }

  // ---- issue 16: the route's filters (Envoy's local_ratelimit and fault filters, then the router's actions) ----

  /** Envoy's filter order: local rate limit (virtual host's bucket, then the route's), fault delay, fault abort, then redirect, direct response or forward. */
  private routeFilters(route: CompiledRoute): void {
    const stats = this.rt.routeStats;
    if (route.vhostRateLimit !== undefined || route.rateLimit !== undefined) {
      stats.rate_limit_enabled.inc();
      const now = performance.now();
      const ok = (route.vhostRateLimit === undefined || route.vhostRateLimit.tryTake(now)) && (route.rateLimit === undefined || route.rateLimit.tryTake(now));
      if (!ok) {
        this.rateLimitResult = 'limited';
        stats.rate_limited.inc();
        stats.rate_limit_enforced.inc();
        this.sendLocalReply(429, RATE_LIMITED_BODY, ResponseFlag.RateLimited, RATE_LIMITED_HEADERS);
        return;
      }
      this.rateLimitResult = 'ok';
      stats.rate_limit_ok.inc();
    }
    const delay = route.fault?.delay;
    if (delay !== undefined && sampled(delay.percent)) {
      // Envoy's fault filter holds the request (its body waits, paused) and then goes on as if nothing happened
      this.faultApplied |= FAULT_DELAYED;
      this.addFlag(ResponseFlag.DelayInjected);
      stats.delays_injected.inc();
      this.faultTimer = setTimeout(() => {
        try { this.afterFaultDelay(route); } catch (err) { this.onInternalError(err, 'fault delay'); }
      }, delay.fixedDelayMs);
      return;
    }
    this.routeAction(route);
  }

  private holdDuringDelay(chunk: Buffer, end: boolean): void {
    if (chunk.length > 0) (this.delayedBody ??= []).push(Buffer.from(chunk));
    if (end) this.delayedEnd = true;
    else this.stream.pauseRequest();
  }

  private afterFaultDelay(route: CompiledRoute): void {
    this.faultTimer = undefined;
    const body = this.delayedBody;
    const ended = this.delayedEnd;
    const trailers = this.delayedTrailers;
    this.delayedBody = undefined; this.delayedEnd = false; this.delayedTrailers = undefined;
    if (this.finished) return;
    this.routeAction(route);
    if (this.finished || this.responseStarted) { this.stream.resumeRequest(); return; } // answered locally: the rest of the body is read and dropped
    // reading goes on (a socket resumes on the next turn, after the replay; the router pauses it again if it must wait)
    if (!ended) this.stream.resumeRequest();
    // the body held meanwhile goes on as if it had just arrived
    if (body !== undefined) for (let i = 0; i < body.length; i++) this.onRequestData(body[i]!, ended && trailers === undefined && i === body.length - 1);
    if (trailers !== undefined) this.onRequestTrailers(trailers[0], trailers[1]);
    else if (ended && body === undefined && this.head.bodyKind !== 'none') this.onRequestData(EMPTY_BODY, true);
  }

  /** After the filters: abort (fault), redirect, direct response, or the cluster with the route's rewrites. */
  private routeAction(route: CompiledRoute): void {
    const rt = this.rt;
    const abort = route.fault?.abort;
    if (abort !== undefined && sampled(abort.percent)) {
      this.faultApplied |= FAULT_ABORTED;
      rt.routeStats.aborts_injected.inc();
      this.addFlag(ResponseFlag.FaultInjected);
      if (abort.grpcStatus !== undefined) this.sendGrpcLocalReply(200, FAULT_ABORT_BODY, undefined, abort.grpcStatus);
      else this.sendLocalReply(abort.httpStatus ?? 503, FAULT_ABORT_BODY, '');
      return;
    }
    const redirect = route.redirect;
    if (redirect !== undefined) {
      rt.routeStats.rq_redirect.inc();
      const location = redirectLocation(redirect, { scheme: this.scheme, authority: this.authority ?? '', target: this.path, matchedLength: route.matchedLength });
      this.routeReply = true;
      this.sendLocalReply(redirect.responseCode ?? 301, '', '', ['location', location]);
      return;
    }
    const direct = route.config.directResponse;
    if (direct) {
      rt.routeStats.rq_direct_response.inc();
      this.routeReply = true;
      this.sendLocalReply(direct.status, direct.body ?? '', '');
      return;
    }
    // Envoy's prefix_rewrite (the matched prefix or path replaced, the query kept) and host_rewrite_literal
    if (route.prefixRewrite !== undefined) this.upstreamPath = route.prefixRewrite + this.path.slice(route.matchedLength);
    if (route.hostRewrite !== undefined) this.upstreamAuthority = route.hostRewrite;
    const choice = route.pickCluster();
    this.choice = choice;
    const q = this.path.indexOf('?');
    this.forward(this.head, q < 0 ? this.path : this.path.slice(0, q), choice?.name, route);
  }

  /** Envoy's request mirroring: each policy samples its share; the copies go once the body is complete (bodies up to 64 KiB). */
  private startMirrors(route: CompiledRoute, head: RequestHead): void {
    if (this.finished || this.head !== head) return; // answered already (no healthy upstream, overflow): nothing to copy
    const rt = this.rt;
    const snap = this.snapshot!;
    for (const m of route.mirrors!) {
      if (!sampled(m.percent)) continue;
      const cluster = snap.clusters.get(m.cluster);
      if (!cluster) { rt.routeStats.shadow_failed.inc(); continue; }
      this.mirrored = this.mirrored === undefined ? m.cluster : `${this.mirrored},${m.cluster}`;
      if (!shadowableBody(head)) { rt.routeStats.shadow_skipped_body.inc(); continue; }
      const shadow = new ShadowRequest(rt, rt.routeStats, cluster, {
        head, path: this.upstreamPath, authority: this.upstreamAuthority, scheme: this.scheme, h1Head: this.upstreamHead, headerList: () => this.headerList(),
      }, route.config.route?.timeoutMs ?? 15_000);
      if (head.bodyKind === 'none') shadow.send();
      else (this.shadows ??= []).push(shadow);
    }
  }

  private shadowBody(chunk: Buffer, end: boolean): void {
    const shadows = this.shadows!;
    for (const s of shadows) s.addBody(chunk);
    if (!end) return;
    this.shadows = undefined;
    for (const s of shadows) s.send();
  }

  onDownstreamDrain(): void {
    if (!this.finished) this.router.onDownstreamDrain();
  }

  onDownstreamReset(flag: string): void {
    if (this.finished) return;
    this.router.abortUpstream();
    this.flags = addFlag(this.flags, flag);
    this.finish();
  }

  onResponseComplete(): void {
    if (!this.finished) this.finish();
  }

  /** Envoy's stream idle timeout: 408 before the response started, otherwise the stream is cut; flag SI. */
  onStreamIdleTimeout(): void {
    if (this.finished) return;
    this.rt.http.downstream_rq_idle_timeout.inc();
    this.router.abortUpstream();
    this.stream.closeAfterResponse();
    if (this.responseStarted) { this.resetStream(ResponseFlag.StreamIdleTimeout); return; }
    this.sendLocalReply(408, 'stream timeout\n', ResponseFlag.StreamIdleTimeout);
  }

  /**
   * A bug surfaced in a callback of this request: logged (with its stack); 500 when no response has
   * started, otherwise the stream is cut. The process and every other request go on.
   */
  onInternalError(err: unknown, where: string): void {
    this.rt.onInternalError(err, where);
    try {
      this.router.abortUpstream();
      if (!this.finished && !this.responseStarted) {
        this.stream.closeAfterResponse();
        this.sendLocalReply(500, 'internal error\n', '');
        return;
      }
    } catch { /* failing again: cut below */ }
    if (!this.finished) { try { this.resetStream(ResponseFlag.DownstreamConnectionTermination); return; } catch { /* cut below */ } }
    this.stream.reset('');
  }

  /** The downstream request body broke its framing (HTTP/1 chunked): 400 DPE, or the stream is cut after the head went out. */
  onDownstreamProtocolError(message: string): void {
    this.rt.http.downstream_cx_protocol_error.inc();
    this.router.abortUpstream();
    this.stream.closeAfterResponse();
    if (this.finished) return;
    if (!this.responseStarted) this.sendLocalReply(400, `${message}\n`, ResponseFlag.DownstreamProtocolError);
    else this.resetStream(ResponseFlag.DownstreamProtocolError);
  }

  /** The response cannot be completed: the request is finished with `flag`, then the stream is reset. */
  resetStream(flag: string): void {
    this.flags = addFlag(this.flags, flag);
    this.stream.closeAfterResponse();
    if (!this.finished) this.finish();
    this.stream.reset(flag);
  }

  /** A response head relayed by the router. */
  encodeResponseHeaders(res: StreamResponseHead, extra: ExtraHeaders, firstBody: Buffer | undefined, endStream: boolean): void {
    this.status = res.status;
    this.responseStarted = true;
    const route = this.route;
    if (route !== undefined && (route.responseHeaders !== undefined || this.debugUpstream)) {
      // issue 16: the route's response header changes and the x-mesh-route answer (new arrays: only on these routes)
      const m = route.responseHeaders;
      if (m !== undefined) res = { ...res, ...withoutDropped(res.names, res.lower, res.values, m.drop) };
      extra = this.routeResponsePairs(extra, true);
    }
    this.resHead = res; this.resExtra = extra;
    this.stream.encodeHeaders(res, extra, firstBody, endStream);
  }

  /**
   * A reply made by the proxy itself. `extra`: more header pairs (lower-case names). As Envoy's local replies:
   * `content-type: text/plain` only with a body, `server: envoy`.
   */
  sendLocalReply(status: number, body: string, flag: string, extra?: readonly string[]): void {
    this.router.abortUpstream();
    this.flags = addFlag(this.flags, flag);
    // errors only: a direct response (200 ...) to a gRPC request goes as configured
    if (this.grpc && status >= 400 && this.req !== undefined) { this.sendGrpcLocalReply(status, body, extra); return; }
    this.status = status;
    const bodyBuf = Buffer.from(body);
    const pairs = ['content-length', String(bodyBuf.length)];
    if (bodyBuf.length > 0) pairs.push('content-type', 'text/plain');
    pairs.push('server', 'envoy');
    if (extra) pairs.push(...extra);
    const sent = this.route === undefined ? pairs : this.routeResponsePairs(pairs, this.routeReply);
    const head: StreamResponseHead = {
      status, reason: reasonPhrase(status), names: NO_HEADERS, lower: NO_HEADERS, values: NO_HEADERS,
      bodyKind: bodyBuf.length > 0 ? 'length' : 'none', contentLength: bodyBuf.length, close: false, connectionTokens: undefined, local: true,
    };
    this.responseStarted = true;
    this.resHead = head; this.resExtra = sent;
    // the codec calls onResponseComplete() (and an HTTP/1 codec may then start the next request on this object)
    this.stream.encodeHeaders(head, sent, bodyBuf.length > 0 ? bodyBuf : undefined, true);
  }

  /**
   * Envoy's local reply to a gRPC request: trailers-only (HTTP 200, content-type application/grpc,
   * grpc-status mapped from the HTTP status and the flag, grpc-message the body's text), one HEADERS frame
   * with END_STREAM on HTTP/2. A gRPC client then sees UNAVAILABLE, DEADLINE_EXCEEDED, ... instead of a
   * protocol error for a 503 or 504.
   */
  private sendGrpcLocalReply(status: number, body: string, extra: readonly string[] | undefined, grpcStatus?: number): void {
    const g = grpcLocalReply(status, body, this.flags);
    // a fault abort with grpcStatus answers that status (Envoy's abort.grpc_status)
    if (grpcStatus !== undefined) { g.grpcStatus = grpcStatus; g.values[1] = String(grpcStatus); }
    this.status = g.status;
    this.localGrpcStatus = g.grpcStatus;
    let pairs: ExtraHeaders = ['content-length', '0', 'server', 'envoy'];
    if (extra) pairs = [...pairs, ...extra];
    if (this.route !== undefined) pairs = this.routeResponsePairs(pairs, false);
    const head: StreamResponseHead = {
      status: g.status, reason: reasonPhrase(g.status), names: g.names, lower: g.names, values: g.values,
      bodyKind: 'none', contentLength: 0, close: false, connectionTokens: undefined, local: true,
    };
    this.responseStarted = true;
    this.resHead = head; this.resExtra = pairs;
    this.stream.encodeHeaders(head, pairs, undefined, true);
  }

  /**
   * Issue 16: the pairs of a response on a matched route: the route's response header changes (upstream
   * responses and the route's own replies: redirect, direct response) and, when `x-mesh-debug-upstream: 1`
   * was sent, `x-mesh-route: vhost=..; route=..; cluster=..[; fault=..][; mirror=..][; ratelimit=..]`.
   */
  private routeResponsePairs(pairs: ExtraHeaders, mutate: boolean): string[] | ExtraHeaders {
    const route = this.route!;
    const m = mutate ? route.responseHeaders : undefined;
    // a local reply before the forwarded head was built has not looked at the debug header yet
    const debug = this.debugUpstream || (this.upstreamHead === '' && this.header(DEBUG_UPSTREAM_HEADER) === '1');
    if (m === undefined && !debug) return pairs;
    const out = m === undefined ? [...pairs] : mutatePairs(pairs, m);
    if (debug) {
      let v = `vhost=${route.virtualHost}; route=${route.label}; cluster=${this.choice?.name ?? '-'}`;
      if (this.faultApplied !== 0) v += `; fault=${this.faultApplied === FAULT_DELAYED ? 'delay' : this.faultApplied === FAULT_ABORTED ? 'abort' : 'delay,abort'}`;
      if (this.mirrored !== undefined) v += `; mirror=${this.mirrored}`;
      if (this.rateLimitResult !== undefined) v += `; ratelimit=${this.rateLimitResult}`;
      out.push(DEBUG_ROUTE_HEADER, v + route.debugMetadata);
    }
    return out;
  }

  /** The value of a request header (lower-case name), undefined when absent. */
  header(lowerName: string): string | undefined {
    const head = this.req;
    return head ? headerOf(head, lowerName) : undefined;
  }

  /** A reply before any request head was complete (headers timeout, malformed head): counted and logged as a request. */
  replyWithoutRequest(status: number, body: string, flag: string): void {
    this.begin();
    this.req = undefined;
    this.stream.closeAfterResponse();
    this.sendLocalReply(status, body, flag);
  }

  private rbacAllows(rbac: CompiledRbac, method: string, path: string): boolean {
    const principal = this.stream.transport.peerIdentity;
    if (rbac.check({ principal, method, path }).allowed) return true;
    this.responseCodeDetails = 'rbac_access_denied_matched_policy[none]';
    this.rt.onRbacDenied({ port: rbac.port, principal, method, path, peer: this.stream.peer });
    return false;
  }

  /** Envoy's BlackHoleCluster: 502 with flag NR, counted on the cluster, logged; the connection closes after it. */
  private refuse(head: RequestHead): void {
    const blackhole = this.rt.blackhole;
    this.path = head.target;
    this.authority = head.host;
    this.cluster = blackhole;
    blackhole.stats.upstream_rq_total.inc();
    blackhole.stats.upstream_rq_active.inc();
    this.stream.closeAfterResponse();
    this.sendLocalReply(502, BLACKHOLE_BODY, ResponseFlag.NoRouteFound);
  }

  hashKey(cluster: Cluster): string | undefined {
    const name = cluster.hashHeader;
    const head = this.req;
    if (name === undefined || head === undefined) return undefined;
    for (let i = 0; i < head.lower.length; i++) if (head.lower[i] === name) return head.values[i];
    return undefined;
  }

  private buildUpstreamHead(head: RequestHead, target: string): string {
    let out = `${head.method} ${target} HTTP/1.1\r\n`;
    // RFC 9112 3.2.2: a proxy receiving the absolute-form replaces Host with the target's authority,
    // so the upstream sees the name the request was routed by.
    const absoluteForm = head.target.charCodeAt(0) !== 47;
    const inbound = this.stream.origin.kind === 'inbound';
    let xff: string | undefined;
    let xfp = false;
    let hostSeen = false;
    const tokens = head.connectionTokens;
    // issue 16: the route's request header changes (undefined on a plain route: one check per header)
    const mutation = this.choice?.requestHeaders;
    // hostRewrite: the received Host is replaced
    const keepHost = !absoluteForm && this.upstreamAuthority === this.authority;
    for (let i = 0; i < head.names.length; i++) {
      const n = head.lower[i]!;
      if (n === 'transfer-encoding') { out += `${head.names[i]!}: ${head.values[i]!}\r\n`; continue; } // chunked framing passes through as is
      if (n === DEBUG_UPSTREAM_HEADER) { this.debugUpstream = head.values[i] === '1'; continue; } // mesh-agent trace asks; the upstream never sees it
      if (mutation !== undefined && mutation.drop.has(n)) continue;
      if (isTraceHeader(n)) continue; // replaced below with this hop's span as the parent
      if (isHopByHop(n, tokens)) continue;
      // Envoy's SANITIZE_SET on inbound: only this proxy vouches for the caller's certificate
      if (n === 'x-forwarded-client-cert' && inbound) continue;
      if (n === 'x-forwarded-for') { xff = xff === undefined ? head.values[i] : `${xff}, ${head.values[i]!}`; continue; }
      if (n === 'x-request-id') this.requestId = head.values[i];
      else if (n === 'x-forwarded-proto') xfp = true;
      else if (n === 'host') { if (!keepHost) continue; hostSeen = true; }
      out += `${head.names[i]!}: ${head.values[i]!}\r\n`;
    }
    if (!hostSeen && this.upstreamAuthority) out += `host: ${this.upstreamAuthority}\r\n`;
    if (mutation !== undefined) for (let i = 0; i < mutation.add.length; i += 2) out += `${mutation.add[i]!}: ${mutation.add[i + 1]!}\r\n`;
    // Envoy's prefix_rewrite keeps the path the client asked for
    if (this.upstreamPath !== this.path) out += `x-envoy-original-path: ${this.path}\r\n`;
    // an HTTP/2 request without content-length reaches an HTTP/1.1 upstream chunked (the codec frames it)
    if (head.bodyKind === 'stream' && head.contentLength < 0) out += 'transfer-encoding: chunked\r\n';
    const peer = this.stream.peer;
    xff = xff === undefined ? peer : `${xff}, ${peer}`;
    out += `x-forwarded-for: ${xff}\r\n`;
    const transport = this.stream.transport;
    if (!xfp) out += transport.tls ? 'x-forwarded-proto: https\r\n' : 'x-forwarded-proto: http\r\n';
    if (transport.clientCertDetails !== undefined) out += `x-forwarded-client-cert: ${transport.clientCertDetails}\r\n`;
    if (this.requestId === undefined) {
      this.requestId = randomUUID();
      out += `x-request-id: ${this.requestId}\r\n`;
    }
    out += this.trace.h1Headers();
    this.forwardedFor = xff;
    return `${out}\r\n`;
  }

  /**
   * The forwarded headers for an HTTP/2 upstream: the same choices as buildUpstreamHead (which ran first
   * and fixed the request id and x-forwarded-for), as a list without pseudo-headers, host or
   * connection-specific headers.
   */
  private buildHeaderList(): { names: string[]; values: string[] } {
    const head = this.head;
    const names: string[] = [];
    const values: string[] = [];
    const inbound = this.stream.origin.kind === 'inbound';
    let xfp = false;
    const mutation = this.choice?.requestHeaders;
    for (let i = 0; i < head.names.length; i++) {
      const n = head.lower[i]!;
      if (n === 'te') { if (head.values[i]!.toLowerCase() === 'trailers') { names.push('te'); values.push('trailers'); } continue; }
      if (n === DEBUG_UPSTREAM_HEADER || n === 'host' || n === 'transfer-encoding' || n === 'x-forwarded-for' || isTraceHeader(n)) continue;
      if (isHopByHop(n, head.connectionTokens)) continue;
      if (mutation !== undefined && mutation.drop.has(n)) continue;
      if (n === 'x-forwarded-client-cert' && inbound) continue;
      if (n === 'x-forwarded-proto') xfp = true;
      names.push(n);
      values.push(head.values[i]!);
    }
    names.push('x-forwarded-for'); values.push(this.forwardedFor ?? this.stream.peer);
    const transport = this.stream.transport;
    if (!xfp) { names.push('x-forwarded-proto'); values.push(transport.tls ? 'https' : 'http'); }
    if (transport.clientCertDetails !== undefined) { names.push('x-forwarded-client-cert'); values.push(transport.clientCertDetails); }
    if (!head.lower.includes('x-request-id') && this.requestId !== undefined) { names.push('x-request-id'); values.push(this.requestId); }
    if (mutation !== undefined) for (let i = 0; i < mutation.add.length; i += 2) { names.push(mutation.add[i]!); values.push(mutation.add[i + 1]!); }
    if (this.upstreamPath !== this.path) { names.push('x-envoy-original-path'); values.push(this.path); }
    this.trace.pushHeaders(names, values);
    return { names, values };
  }

  /** Issue 16: this hop's span (only with tracing.otlp and a sampled trace), Envoy's tags from what the access log sees. */
  private recordSpan(req: RequestHead, cluster: Cluster | undefined, status: number): void {
    const host = this.router.host;
    this.rt.tracing.record({
      trace: this.trace, inbound: this.stream.origin.kind === 'inbound',
      startEpochMs: performance.timeOrigin + this.startMs, endEpochMs: performance.timeOrigin + performance.now(),
      method: req.method, scheme: this.scheme, authority: this.authority, path: this.path || '-', protocol: req.protocol,
      status, flags: this.flags, requestId: this.requestId, userAgent: headerOf(req, 'user-agent'), peer: this.stream.peer,
      bytesReceived: this.stream.bytesReceived, bytesSent: this.stream.bytesSent,
      upstreamCluster: cluster?.name, upstreamHost: host ? `${host.address}:${host.port}` : undefined,
      grpcStatus: this.grpc ? this.localGrpcStatus ?? this.router.grpcStatus : undefined,
    });
  }

  /** The request is over: router clean-up, downstream and upstream stats, the access log line. */
  private finish(): void {
    this.finished = true;
    const rt = this.rt;
    const router = this.router;
    router.finishTimers();
    if (this.faultTimer !== undefined) { clearTimeout(this.faultTimer); this.faultTimer = undefined; }
    this.delayedBody = undefined; this.delayedEnd = false; this.delayedTrailers = undefined;
    this.shadows = undefined; // the request ended before its body did: its mirrors are not sent
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
    router.recordStats(cluster, status, this.flags);
    if (this.grpc && cluster) countGrpcCall(cluster.statsStore, cluster.name, this.path, this.localGrpcStatus ?? router.grpcStatus);
    const req = this.req;
    if (rt.accessLog) {
      const host = router.host;
      rt.accessLog.log({
        startTime: this.startEpoch,
        method: req?.method ?? '-',
        path: this.path || '-',
        protocol: req ? req.protocol : '-',
        status,
        flags: this.flags,
        bytesReceived: this.stream.bytesReceived,
        bytesSent: this.stream.bytesSent,
        durationMs: Math.round(performance.now() - this.startMs),
        upstreamServiceTimeMs: router.upstreamServiceTime,
        forwardedFor: this.forwardedFor,
        userAgent: req ? headerOf(req, 'user-agent') : undefined,
        requestId: this.requestId,
        authority: this.authority,
        upstreamHost: host ? `${host.address}:${host.port}` : undefined,
        upstreamCluster: cluster?.name,
        direction: this.stream.origin.kind === 'inbound' ? 'inbound' : 'outbound',
        routeName: this.route?.config.name,
        downstreamRemoteAddress: this.stream.peer,
        requestHeaders: req,
        responseHeaders: this.resHead,
        responseExtra: this.resExtra,
        upstreamTransportFailureReason: router.transportFailure,
        responseCodeDetails: this.responseCodeDetails,
      });
    }
    if (req !== undefined && this.trace.sampled && rt.tracing.sink) this.recordSpan(req, cluster, status);
    router.clear();
    this.req = undefined;
    this.cluster = undefined;
    this.route = undefined; this.resHead = undefined; this.resExtra = undefined;
    this.snapshot = undefined;
    this.forwardedFor = undefined;
  }
}

function headerOf(h: RequestHead, lowerName: string): string | undefined {
  for (let i = 0; i < h.lower.length; i++) if (h.lower[i] === lowerName) return h.values[i];
  return undefined;
}
