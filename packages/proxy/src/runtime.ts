import type net from 'node:net';
import type { Cluster } from './cluster/cluster';
import type { Host } from './cluster/host';
import type { RequestHead } from './http/head-parser';
import type { CompiledRbac } from './http/rbac';
import type { AccessLogger } from './observability/access-log';
import type { ProxyTracing } from './observability/tracing';
import type { RouteStats } from './routing/route-stats';
import type { RouteTable } from './routing/router';
import type { Counter, Gauge } from './stats/store';
import type { SecretStore } from './tls/secret-store';
import type { UpstreamPool } from './upstream/pool';

/** Everything a request needs from the config, swapped as one object on update (atomic per request). */
export interface ConfigSnapshot {
  readonly version: string;
  readonly routes: RouteTable;
  readonly clusters: ReadonlyMap<string, Cluster>;
  readonly inboundByPort: ReadonlyMap<number, string>;
  /** Per inbound port: its cluster, TLS mode and compiled RBAC policies (issue 13). */
  readonly inboundPorts: ReadonlyMap<number, InboundPortState>;
  /** How many inbound ports terminate TLS (strict or permissive): 0 = the direct path needs no sniffing. */
  readonly inboundTlsPorts: number;
  readonly localAddresses: ReadonlySet<string>;
  /** `outboundCidrs`: a redirected connection whose original destination is in here is outbound. */
  readonly outboundDestinations: net.BlockList;
  /** `outboundTcp` (issue 15): `VIP:port` -> the cluster its connections are piped to as bytes, at once (`tcp`) or after sniffing (`auto`). */
  readonly outboundTcp: ReadonlyMap<string, { readonly cluster: string; readonly protocol: 'tcp' | 'auto' }>;
  /** `outboundTcp[].domains`, lower case: an HTTP/1.1 CONNECT to one of these NAME:PORTs is tunnelled to its cluster. */
  readonly connectTargets: ReadonlyMap<string, string>;
}

export interface InboundPortState {
  readonly port: number;
  readonly cluster: string;
  /** `http` (today's path), `tcp` (bytes at once) or `auto` (sniffed), issue 15. */
  readonly protocol: 'http' | 'tcp' | 'auto';
  /** The local service (from `in#PORT#SERVICE`): what an Istio SNI on the direct path must name. */
  readonly service: string | undefined;
  readonly tls: { readonly mode: 'strict' | 'permissive' | 'disable'; readonly secret?: string } | undefined;
  /** undefined = no policy: every caller is allowed. */
  readonly rbac: CompiledRbac | undefined;
}

export interface ResolvedLimits {
  maxHeadersBytes: number;
  maxHeadersCount: number;
  headersTimeoutMs: number;
  idleTimeoutMs: number;
  /** Envoy's stream idle timeout: no byte of the request body or the response for this long cuts the request (flag SI). */
  streamIdleTimeoutMs: number;
  /** HTTP/2 downstream SETTINGS_MAX_CONCURRENT_STREAMS (issue 14). */
  http2MaxConcurrentStreams: number;
  /** HTTP/2 downstream SETTINGS_INITIAL_WINDOW_SIZE. */
  http2InitialStreamWindowBytes: number;
  /** Inbound protocol `auto`: the sniff's wait for the first bytes (issue 15). */
  protocolDetectionTimeoutMs: number;
  /** A TCP session quiet for this long is closed. */
  tcpIdleTimeoutMs: number;
}

export interface HttpConnManagerStats {
  downstream_cx_total: Counter;
  downstream_cx_active: Gauge;
  downstream_cx_destroy: Counter;
  downstream_cx_protocol_error: Counter;
  /** Envoy's per-protocol connection and request counters (issue 14). */
  downstream_cx_http1_total: Counter;
  downstream_cx_http2_total: Counter;
  downstream_cx_http2_active: Gauge;
  downstream_rq_http1_total: Counter;
  downstream_rq_http2_total: Counter;
  downstream_rq_total: Counter;
  downstream_rq_active: Gauge;
  downstream_rq_completed: Counter;
  downstream_rq_1xx: Counter;
  downstream_rq_2xx: Counter;
  downstream_rq_3xx: Counter;
  downstream_rq_4xx: Counter;
  downstream_rq_5xx: Counter;
  downstream_rq_timeout: Counter;
  downstream_rq_idle_timeout: Counter;
  /** Envoy's counter for a request target that is not a path (`OPTIONS *`): answered 404 locally. */
  downstream_rq_non_relative_path: Counter;
  downstream_rq_ws_on_non_ws_route: Counter;
  downstream_cx_upgrades_total: Counter;
  no_route: Counter;
  no_cluster: Counter;
}

/**
 * What SO_ORIGINAL_DST says about an accepted connection: rewritten by a NAT rule (the capture), not
 * rewritten (someone connected to the listener itself, or no NAT entry exists), or unknown (no addon).
 */
export type OriginalDestination =
  | { kind: 'redirected'; address: string; port: number }
  | { kind: 'direct' }
  | { kind: 'unknown'; reason: string };

export interface ProxyRuntime {
  snapshot: ConfigSnapshot;
  readonly pool: UpstreamPool;
  /** The bootstrap's TLS secrets by name; `get(name).secureContext` is current at handshake time (rotation). */
  readonly secrets: SecretStore;
  readonly limits: ResolvedLimits;
  accessLog: AccessLogger | undefined;
  /** Trace propagation settings and, with `tracing.otlp`, the span exporter (issue 16); replaced on a config update that changes `tracing`. */
  tracing: ProxyTracing;
  readonly http: HttpConnManagerStats;
  /** Issue 16: fault, local rate limit, redirect/direct response and mirroring counters (http.<listener>.). */
  readonly routeStats: RouteStats;
  readonly listenerStats: { downstream_cx_total: Counter; downstream_cx_active: Gauge };
  /** SO_ORIGINAL_DST of an accepted socket. */
  originalDst(socket: net.Socket): OriginalDestination;
  /** Envoy's BlackHoleCluster: where connections the listener must not serve are counted (502 NR). */
  readonly blackhole: Cluster;
  /** A connection was refused (BlackHoleCluster): logged, rate limited. */
  onRefused(peer: string, reason: string): void;
  /** An HTTP/2 session ended by a protocol error or a limit nghttp2 enforces (a flood, CONTINUATION, memory): counted by the codec, logged (rate-limited) here. */
  onHttp2SessionError(peer: string, err: Error): void;
  /** A request was denied by an inbound port's RBAC policies (403): logged, rate limited. */
  onRbacDenied(denial: { port: number; principal: string | undefined; method: string; path: string; peer: string }): void;
  /** A bug surfaced inside a socket or timer callback: logged; the connection is closed, the process lives on. */
  onInternalError(err: unknown, where: string): void;
  /** Hands an Upgrade (WebSocket) request to http-proxy-3; the socket is no longer ours. */
  handleUpgrade(head: RequestHead, path: string, socket: net.Socket, rest: Buffer, cluster: Cluster, host: Host): void;
  /** An HTTP/1.1 CONNECT to a mesh TCP service: the socket (and the bytes after the head) go to the TCP proxy. */
  handleConnect(socket: net.Socket, rest: Buffer, cluster: string): void;
  /** Draining: responses carry `connection: close` and idle connections are closed (issue 6). */
  draining: boolean;
  /** POST /healthcheck/fail: the inbound health-check path answers 503 (issue 6). */
  healthCheckFailed: boolean;
}
