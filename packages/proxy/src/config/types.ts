/**
 * The proxy's bootstrap config (contract: docs/package-apis.md, ProxyBootstrap).
 * Validated by the zod schema in @mesh-agent/shared-config (schemas/proxy-bootstrap.ts);
 * these are the resolved shapes the proxy works with.
 */
import type { LbPolicy } from '../cluster/load-balancer';

/** Envoy's Locality: where a host (or this node) runs. */
export interface LocalityConfig {
  region?: string;
  zone?: string;
  subZone?: string;
}

export interface EndpointConfig {
  address: string;
  port: number;
  weight?: number;
  healthy?: boolean;
  metadata?: Record<string, unknown>;
  locality?: LocalityConfig;
}

/** Locality failover by priority (P0 same region+zone, P1 same region, P2 the rest); on when node.locality.zone is set unless disabled. */
export interface LocalityLbConfig {
  enabled?: boolean;
  /** percent; Envoy's default 140 (1.4) */
  overprovisioningFactor?: number;
}

/** An access log: Envoy's default line or `textFormat` (format text), Istio's JSON or `jsonFormat` (format json). */
export interface AccessLogConfig {
  format?: 'text' | 'json';
  path?: string;
  textFormat?: string;
  jsonFormat?: Record<string, string>;
}

export interface CircuitBreakersConfig {
  maxConnections?: number;
  maxPendingRequests?: number;
  maxRequests?: number;
  maxRetries?: number;
}

export interface HealthCheckConfig {
  path: string;
  /** `grpc.health.v1.Health/Check` over HTTP/2 instead of `GET path` (Envoy's grpc_health_check). */
  grpc?: { serviceName?: string };
  intervalMs?: number;
  timeoutMs?: number;
  healthyThreshold?: number;
  unhealthyThreshold?: number;
  /** extra random delay in [0, jitterMs] added to each interval */
  jitterMs?: number;
}

export interface OutlierDetectionConfig {
  consecutive5xx?: number;
  consecutiveGatewayFailure?: number;
  intervalMs?: number;
  baseEjectionTimeMs?: number;
  maxEjectionPercent?: number;
}

export interface ClusterConfig {
  name: string;
  lbPolicy?: LbPolicy;
  hashHeader?: string;
  connectTimeoutMs?: number;
  /** Upstream protocol (Envoy's http2_protocol_options for `http2`); default http1. */
  protocol?: 'http1' | 'http2';
  endpoints?: EndpointConfig[];
  /** Endpoints come from the registry (the agent's 'registry' message): service name to follow. */
  service?: string;
  circuitBreakers?: CircuitBreakersConfig;
  healthCheck?: HealthCheckConfig;
  outlierDetection?: OutlierDetectionConfig;
  panicThresholdPercent?: number;
  /** Outbound mTLS to endpoints whose `metadata.identity` is set (issue 13). */
  tls?: { secret: string; sni?: string };
  localityLb?: LocalityLbConfig;
}

export interface HeaderMatchConfig {
  /** `:method`, `:authority` and `:path` match the request method, Host and path (Envoy's pseudo-headers). */
  name: string;
  exact?: string;
  regex?: string;
  prefix?: string;
  present?: boolean;
  /** Negates the match (Envoy's invert_match). */
  invert?: boolean;
}

/** Envoy's query_parameters: the value is compared URL-decoded. */
export interface QueryParameterMatchConfig {
  name: string;
  exact?: string;
  regex?: string;
  present?: boolean;
}

export interface RouteMatchConfig {
  prefix?: string;
  path?: string;
  regex?: string;
  headers?: HeaderMatchConfig[];
  queryParameters?: QueryParameterMatchConfig[];
}

/** Envoy's HeaderValueOption: `append` true (default) adds a value, false replaces the existing ones. */
export interface HeaderValueOptionConfig {
  name: string;
  value: string;
  append?: boolean;
}

/** Envoy's local_ratelimit token bucket. */
export interface TokenBucketConfig {
  maxTokens: number;
  /** Default 1. */
  tokensPerFill?: number;
  fillIntervalMs: number;
}

/** Envoy's RedirectAction. */
export interface RedirectConfig {
  schemeRedirect?: 'http' | 'https';
  hostRedirect?: string;
  portRedirect?: number;
  pathRedirect?: string;
  prefixRewrite?: string;
  /** Default 301. */
  responseCode?: 301 | 302 | 303 | 307 | 308;
  stripQuery?: boolean;
}

/** Envoy's HTTP fault filter for one route: delay first, then abort. */
export interface FaultConfig {
  delay?: { fixedDelayMs: number; percent: number };
  abort?: { httpStatus?: number; grpcStatus?: number; percent: number };
}

export interface RetryPolicyConfig {
  retryOn?: string;
  numRetries?: number;
  /** Measured until the upstream's response headers arrive (Envoy's semantics). */
  perTryTimeoutMs?: number;
  retriableStatusCodes?: number[];
  /** Retry POST, PATCH, ... too (the service tolerates duplicates). */
  retryNonIdempotent?: boolean;
}

export interface RouteActionConfig {
  cluster?: string;
  weightedClusters?: { name: string; weight: number; requestHeadersToAdd?: HeaderValueOptionConfig[] }[];
  timeoutMs?: number;
  retryPolicy?: RetryPolicyConfig;
  /** The matched prefix (or path) replaced; the original goes up as x-envoy-original-path. */
  prefixRewrite?: string;
  /** The Host sent upstream (Envoy's host_rewrite_literal). */
  hostRewrite?: string;
  /** Fire-and-forget copies (Envoy's shadowing); percent 0..100, default 100. */
  requestMirrorPolicies?: { cluster: string; percent?: number }[];
}

/** A route has exactly one of route, redirect, directResponse. */
export interface RouteConfig {
  name?: string;
  match: RouteMatchConfig;
  route?: RouteActionConfig;
  redirect?: RedirectConfig;
  directResponse?: { status: number; body?: string };
  requestHeadersToAdd?: HeaderValueOptionConfig[];
  requestHeadersToRemove?: string[];
  responseHeadersToAdd?: HeaderValueOptionConfig[];
  responseHeadersToRemove?: string[];
  fault?: FaultConfig;
  rateLimit?: TokenBucketConfig;
  /** Opaque labels (the agent's `rule`, `service`), shown in /config_dump and x-mesh-route. */
  metadata?: Record<string, string>;
}

export interface VirtualHostConfig {
  name: string;
  domains: string[];
  routes: RouteConfig[];
  /** One token bucket for the whole virtual host, checked before a route's own. */
  rateLimit?: TokenBucketConfig;
}

/** Issue 16: propagation always; spans exported over OTLP/HTTP when `otlp` is set. */
export interface TracingConfig {
  serviceName?: string;
  samplingPercent?: number;
  otlp?: { endpoint: string; timeoutMs?: number; headers?: Record<string, string> };
  maxQueueSize?: number;
  maxExportBatchSize?: number;
  scheduledDelayMs?: number;
}

export interface ProxyBootstrap {
  version?: string;
  node?: { id?: string; cluster?: string; metadata?: Record<string, unknown>; locality?: LocalityConfig };
  admin?: { address?: string; port?: number };
  listener?: { name?: string; address?: string; port?: number };
  localAddresses?: string[];
  /** Original destinations the capture rules send here as outbound: the mesh VIP, the VIP range, extra captured CIDRs (IPs or CIDRs). */
  outboundCidrs?: string[];
  /** `tls`: mTLS termination on the captured port; `rbac`: allowed callers (issue 13). */
  inbound?: {
    port: number; cluster: string;
    /** Issue 15: `tcp` = bytes at once (server-first works), `auto` = sniffed; default `http`. */
    protocol?: 'http' | 'tcp' | 'auto';
    tls?: { mode: 'strict' | 'permissive' | 'disable'; secret?: string };
    rbac?: { policies?: { name: string; principals?: string[]; methods?: string[]; paths?: string[] }[] };
  }[];
  /** Issue 15: a redirected connection to exactly address:port is piped as bytes to cluster (`auto`: unless sniffed as HTTP). */
  outboundTcp?: { address: string; port: number; cluster: string; protocol?: 'tcp' | 'auto'; domains?: string[] }[];
  /** TLS secrets (file paths) by name, watched and reloaded (issue 13). */
  secrets?: { name: string; certChain: string; privateKey: string; trustBundle: string }[];
  accessLog?: AccessLogConfig;
  /** More access logs, each for one direction (Envoy's access_log list); besides accessLog. */
  accessLogs?: (AccessLogConfig & { direction?: 'inbound' | 'outbound' | 'both' })[];
  clusters?: ClusterConfig[];
  routes?: { virtualHosts?: VirtualHostConfig[] };
  drainTimeMs?: number;
  tracing?: TracingConfig;
  /** Limits on the request head (defaults: 60 KiB like Envoy, 100 headers, 10 s). */
  limits?: { maxHeadersBytes?: number; maxHeadersCount?: number; headersTimeoutMs?: number; idleTimeoutMs?: number; streamIdleTimeoutMs?: number; http2MaxConcurrentStreams?: number; http2InitialStreamWindowBytes?: number; protocolDetectionTimeoutMs?: number; tcpIdleTimeoutMs?: number };
}
