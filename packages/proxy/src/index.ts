export const PACKAGE_NAME = '@mesh-agent/proxy';
export { createHost, hostKey, isHealthy, healthFlagsText, newHostStats } from './cluster/host';
export type { Host, HostInit, HostStats, HealthFlag } from './cluster/host';
export { Cluster, DEFAULT_PANIC_THRESHOLD_PERCENT } from './cluster/cluster';
export type { CircuitBreakersSlot, OutlierDetectorSlot, HealthCheckerSlot, UpstreamOutcome, ClusterStats, HostPick } from './cluster/cluster';
export { createLoadBalancer, RoundRobinLb, LeastRequestLb, RandomLb, RingHashLb } from './cluster/load-balancer';
export type { LbPolicy, LbContext, LoadBalancer } from './cluster/load-balancer';
export { StatsStore, Counter, Gauge, Histogram } from './stats/store';
export type * from './config/types';
