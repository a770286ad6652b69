/**
 * The proxy's bootstrap config (contract: docs/package-apis.md, ProxyBootstrap).
 * Validated by the zod schema in @mesh-agent/shared-config (schemas/proxy-bootstrap.ts);
 * these are the resolved shapes the proxy works with.
 */
import type { LbPolicy } from '../cluster/load-balancer';

export interface EndpointConfig {
  address: string;
  port: number;
  weight?: number;
  healthy?: boolean;
  metadata?: Record<string, unknown>;
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
}

export interface HeaderMatchConfig {
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
  weightedClusters?: { name: string; weight: number }[];
  timeoutMs?: number;
  retryPolicy?: RetryPolicyConfig;
  prefixRewrite?: string;
}

export interface RouteConfig {
  name?: string;
  match: RouteMatchConfig;
  route?: RouteActionConfig;
  directResponse?: { status: number; body?: string };
}

export interface VirtualHostConfig {
  name: string;
  domains: string[];
  routes: RouteConfig[];
}

export interface ProxyBootstrap {
  version?: string;
  node?: { id?: string; cluster?: string; metadata?: Record<string, unknown> };
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
  /** Issue 15: a redirected connection to exactly address:port is piped as bytes to cluster. */
  outboundTcp?: { address: string; port: number; cluster: string }[];
  /** TLS secrets (file paths) by name, watched and reloaded (issue 13). */
  secrets?: { name: string; certChain: string; privateKey: string; trustBundle: string }[];
  accessLog?: { format?: 'text' | 'json'; path?: string };
  clusters?: ClusterConfig[];
  routes?: { virtualHosts?: VirtualHostConfig[] };
  drainTimeMs?: number;
  /** Limits on the request head (defaults: 60 KiB like Envoy, 100 headers, 10 s). */
  limits?: { maxHeadersBytes?: number; maxHeadersCount?: number; headersTimeoutMs?: number; idleTimeoutMs?: number; streamIdleTimeoutMs?: number; http2MaxConcurrentStreams?: number; http2InitialStreamWindowBytes?: number; protocolDetectionTimeoutMs?: number; tcpIdleTimeoutMs?: number };
}
