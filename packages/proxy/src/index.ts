export const PACKAGE_NAME = '@mesh-agent/proxy';
export { createProxy, MeshProxy, PROXY_VERSION } from './proxy';
export type { ProxyOptions, ServerState, ListenAddress } from './proxy';
export { createHost, hostKey, isHealthy, healthFlagsText, newHostStats } from './cluster/host';
export type { Host, HostInit, HostStats, HealthFlag } from './cluster/host';
export { Cluster, DEFAULT_PANIC_THRESHOLD_PERCENT } from './cluster/cluster';
export type { CircuitBreakersSlot, OutlierDetectorSlot, HealthCheckerSlot, UpstreamOutcome, ClusterStats, HostPick } from './cluster/cluster';
export { createLoadBalancer, RoundRobinLb, LeastRequestLb, RandomLb, RingHashLb } from './cluster/load-balancer';
export type { LbPolicy, LbContext, LoadBalancer } from './cluster/load-balancer';
export { StatsStore, Counter, Gauge, Histogram } from './stats/store';
export { parseRequestHead, parseResponseHead, HttpParseError } from './http/head-parser';
export { BodyFramer } from './http/body-framer';
export { ResponseFlag } from './http/response-flags';
export { RouteTable } from './routing/router';
export { AccessLogger, AccessLogOpenError, accessLogFormatter, compileJsonFormat, compileTextFormat, formatTextLine, formatJsonLine } from './observability/access-log';
export type { AccessLogDirection, AccessLogEntry, AccessLogFormat, AccessLogSinkOptions } from './observability/access-log';
export { choosePriority, localityOfMetadata, localityPriority, priorityLevels } from './cluster/locality';
// Tracing (issue 16): W3C / B3 propagation for one hop, usable alone; the OTLP export stays internal (loaded on demand).
export { HopTrace, isTraceHeader, newSpanId, newTraceId, resolveTracing, TRACING_DEFAULTS } from './observability/tracing';
export type { TraceFormat, TracingSettings } from './observability/tracing';
export { originalDstStatus } from './original-dst';
export { HOT_RESTART_VERSION } from './admin/register';
export type * from './config/types';
// Resilience (issue 6): the parts, usable alone; the proxy attaches them per cluster and route.
export {
  CircuitBreakers, DEFAULT_BREAKER_THRESHOLDS, parseRetryPolicy, isIdempotentMethod, isRetriableOutcome, retryBackoffMs, RETRY_ON_CONDITIONS,
  HealthyHostSelector, healthyPercent, ActiveHealthChecker, IMMEDIATE_HC_FAIL_HEADER,
  OutlierDetector, DEFAULT_OUTLIER_DETECTION, RequestRetryState, routeRetryPolicy, withAttemptCountHeader,
  attachResilience, MemoryStatScope,
} from './resilience/index';
export type {
  RetryPolicy, TryOutcome, ProbeResult,
  OutlierDetectorOptions, ActiveHealthCheckerOptions, EjectionType, RetryDecision, ClusterStatScope, ResilienceHost,
} from './resilience/index';
