import type { Cluster } from '../cluster/cluster';
import type { Host } from '../cluster/host';
import type { ForwardedRequest, StreamResponseHead, UpstreamCallbacks, UpstreamCodec, UpstreamResetKind } from '../http/codec/types';
import type { RequestHead } from '../http/head-parser';
import type { RouteStats } from '../routing/route-stats';
import type { ProxyRuntime } from '../runtime';
import { Http1UpstreamCodec } from '../upstream/http1-upstream-codec';
import { Http2UpstreamCodec } from '../upstream/http2-upstream-codec';

/** A request body up to this size is copied for a mirror; a larger one (or one of unknown length) is not mirrored. */
export const MAX_SHADOW_BODY_BYTES = 64 * 1024;
const DEFAULT_SHADOW_TIMEOUT_MS = 15_000;
const EMPTY = Buffer.alloc(0);

/** `order:8080` -> `order-shadow:8080`, `order` -> `order-shadow` (Envoy's shadow host). */
export function shadowAuthority(authority: string): string {
  const colon = authority.lastIndexOf(':');
  if (colon > 0 && authority.indexOf(']', colon) < 0 && /^\d+$/.test(authority.slice(colon + 1))) return `${authority.slice(0, colon)}-shadow${authority.slice(colon)}`;
  return `${authority}-shadow`;
}

/** Whether a request's body can be mirrored: none, or a known length up to MAX_SHADOW_BODY_BYTES (not chunked, no 100-continue). */
export function shadowableBody(head: RequestHead): boolean {
  if (head.bodyKind === 'none') return true;
  return head.bodyKind !== 'chunked' && !head.expectContinue && head.contentLength >= 0 && head.contentLength <= MAX_SHADOW_BODY_BYTES;
}

/** What a mirror copies from the main request, taken once when the route picked it. */
export interface ShadowSource {
  head: RequestHead;
  /** the forwarded path (after prefixRewrite) */
  path: string;
  /** the forwarded authority (after hostRewrite), before the -shadow suffix */
  authority: string | undefined;
  scheme: 'http' | 'https';
  /** the main request's HTTP/1.1 head */
  h1Head: string;
  /** the main request's HTTP/2 header list (made only for an http2 mirror cluster) */
  headerList: (() => { readonly names: readonly string[]; readonly values: readonly string[] });
}

/**
 * Envoy's request mirroring (shadowing): a fire-and-forget copy of a request to another cluster,
 * through the same upstream pools and breakers, with `-shadow` appended to the Host. The response
 * is read and thrown away; whatever happens to the copy (no host, overflow, reset, timeout) is counted
 * and never reaches the main request, which never waits for it. Bounded: only bodies up to
 * MAX_SHADOW_BODY_BYTES are copied, the copy ends at the route's timeout, and the mirror cluster's
 * circuit breakers cap how many are in flight.
 */
export class ShadowRequest implements ForwardedRequest, UpstreamCallbacks {
  readonly head: RequestHead;
  readonly path: string;
  readonly authority: string | undefined;
  readonly upstreamPath: string;
  readonly upstreamAuthority: string | undefined;
  readonly scheme: 'http' | 'https';
  readonly attempt = 0;
  private readonly body: Buffer[] = [];
  private codec: UpstreamCodec | undefined;
  private timer: NodeJS.Timeout | undefined;
  private breaker = false;
  private done = false;
  private status = 0;
  private host: Host | undefined;
  private readonly h1: string;
  private list: { readonly names: readonly string[]; readonly values: readonly string[] } | undefined;

  constructor(private readonly rt: ProxyRuntime, private readonly stats: RouteStats, private readonly cluster: Cluster, source: ShadowSource, private readonly timeoutMs: number) {
    // the codec reads method, protocol and body framing; HTTP/1.1 so a chunked response is not de-chunked for nothing
    this.head = { ...source.head, protocol: 'HTTP/1.1' };
    this.path = source.path;
    this.upstreamPath = source.path;
    this.authority = source.authority === undefined ? undefined : shadowAuthority(source.authority);
    this.upstreamAuthority = this.authority;
    this.scheme = source.scheme;
    this.h1 = this.authority === undefined ? source.h1Head : replaceHostLine(source.h1Head, this.authority);
    if (cluster.protocol === 'http2') this.list = source.headerList();
  }

  h1Head(): string { return this.h1; }
  headerList(): { readonly names: readonly string[]; readonly values: readonly string[] } { return this.list ?? { names: [], values: [] }; }

  /** Body bytes of the main request (copied: the caller's buffers may be reused). */
  addBody(chunk: Buffer): void {
    if (chunk.length > 0) this.body.push(Buffer.from(chunk));
  }

  /** Sends the copy (the whole body is here). Never throws: a failure is counted. */
  send(): void {
    try {
      this.start();
    } catch (err) {
      this.rt.onInternalError(err, 'request mirror');
      this.fail();
    }
  }

  private start(): void {
    const cluster = this.cluster;
    if (cluster.circuitBreakers) {
      if (!cluster.circuitBreakers.tryAcquireRequest(false)) { cluster.stats.upstream_rq_pending_overflow.inc(); this.fail(); return; }
      this.breaker = true;
    }
    const pick = cluster.pickHost({ hashKey: undefined });
    if (!pick.host) { cluster.stats.upstream_cx_none_healthy.inc(); this.fail(); return; }
    this.stats.shadow_sent.inc();
    cluster.stats.upstream_rq_total.inc();
    cluster.stats.upstream_rq_active.inc();
    const codec = cluster.protocol === 'http2' ? new Http2UpstreamCodec(this.rt.pool.http2) : new Http1UpstreamCodec(this.rt, (err, where) => { this.rt.onInternalError(err, `request mirror: ${where}`); this.finish(false); });
    this.codec = codec;
    const ms = this.timeoutMs > 0 ? this.timeoutMs : DEFAULT_SHADOW_TIMEOUT_MS;
    this.timer = setTimeout(() => this.finish(false), ms).unref();
    const attached = codec.attach(cluster, pick.host, this);
    if (attached === 'ready') this.sendOn(codec);
    else if (attached === 'overflow') { this.codec = undefined; this.finish(false); }
  }

  private sendOn(codec: UpstreamCodec): void {
    this.host = codec.host;
    if (this.host) this.host.stats.rq_total++;
    const noBody = this.head.bodyKind === 'none';
    codec.sendHeaders(this, noBody);
    if (noBody) return;
    for (const chunk of this.body) codec.sendData(chunk, false);
    codec.sendData(EMPTY, true);
    this.body.length = 0;
  }

  onUpstreamReady(): void { if (this.codec && !this.done) this.sendOn(this.codec); }
  onUpstream100Continue(): void { /* the body was sent with the head */ }
  onUpstreamHeaders(res: StreamResponseHead, _firstBody: Buffer | undefined, endStream: boolean): void {
    this.status = res.status;
    if (endStream) this.finish(true);
  }
  onUpstreamData(_chunk: Buffer, endStream: boolean): void { if (endStream) this.finish(true); }
  onUpstreamTrailers(): void { this.finish(true); }
  onUpstreamReset(_kind: UpstreamResetKind): void { this.codec = undefined; this.finish(false); }
  onUpstreamDrain(): void { /* nothing waits */ }

  /** Nothing was sent (breaker, no healthy host). */
  private fail(): void {
    if (this.done) return;
    this.done = true;
    this.stats.shadow_failed.inc();
    this.release();
  }

  private finish(complete: boolean): void {
    if (this.done) return;
    this.done = true;
    if (this.timer) { clearTimeout(this.timer); this.timer = undefined; }
    const s = this.cluster.stats;
    s.upstream_rq_active.dec();
    s.upstream_rq_completed.inc();
    const cls = (this.status / 100) | 0;
    if (complete && cls === 2) s.upstream_rq_2xx.inc();
    else if (complete && cls === 3) s.upstream_rq_3xx.inc();
    else if (complete && cls === 4) s.upstream_rq_4xx.inc();
    else if (complete && cls === 5) s.upstream_rq_5xx.inc();
    const host = this.host;
    if (!complete) {
      // no response (reset, connect failure, timeout): counted here, never told to the main request
      this.stats.shadow_failed.inc();
      this.codec?.abort();
    }
    if (host) { if (complete && cls < 5) host.stats.rq_success++; else host.stats.rq_error++; }
    this.codec = undefined;
    this.release();
  }

  private release(): void {
    this.body.length = 0;
    if (this.breaker) { this.breaker = false; this.cluster.circuitBreakers?.releaseRequest(false); }
  }
}

/** The head with its Host line replaced (the main request's head has exactly one, or none for an authority-less request). */
function replaceHostLine(head: string, authority: string): string {
  const m = /\r\nhost:[^\r]*\r\n/i.exec(head);
  if (m) return `${head.slice(0, m.index)}\r\nhost: ${authority}\r\n${head.slice(m.index + m[0].length)}`;
  return `${head.slice(0, head.length - 2)}host: ${authority}\r\n\r\n`;
}
