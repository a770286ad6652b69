import type { ClusterConfig, EndpointConfig, LocalityConfig } from '../config/types';
import type { Counter, Gauge, Histogram, StatsStore } from '../stats/store';
import { createHost, hostKey, identityOf, isHealthy, type Host } from './host';
import { createLoadBalancer, type LbContext, type LoadBalancer } from './load-balancer';
import { DEFAULT_PANIC_THRESHOLD_PERCENT, HealthyHostSelector } from '../resilience/host-selection';
import { DEFAULT_OVERPROVISIONING_FACTOR, choosePriority, priorityLevels } from './locality';

/**
 * Hook points for the resilience modules (issue 6). The data plane calls these
 * where noted in src/router/router-filter.ts; each slot is optional.
 */
export interface CircuitBreakersSlot {
  /** Called before a request is sent; false => 503 with flag UO, `upstream_rq_pending_overflow`. */
  tryAcquireRequest(isRetry: boolean): boolean;
  /** Called once per acquired request when it finishes (success or not). */
  releaseRequest(isRetry: boolean): void;
  /** Called before a new upstream connection is opened; false => UO, `upstream_cx_overflow`. */
  canOpenConnection?(): boolean;
  /** A place in the pending queue (max_pending_requests); null => 503 UO, `upstream_rq_pending_overflow` counted. */
  tryAcquirePending?(): (() => void) | null;
  close?(): void;
}

export type UpstreamOutcome =
  | { kind: 'response'; status: number }
  | { kind: 'connect-failure' }
  | { kind: 'reset' }
  | { kind: 'timeout' };

export interface OutlierDetectorSlot {
  /** Every attempt's outcome against a host. */
  reportOutcome(host: Host, outcome: UpstreamOutcome): void;
  close?(): void;
}

export interface HealthCheckerSlot {
  close?(): void;
}

export interface ClusterStats {
  upstream_rq_total: Counter;
  upstream_rq_2xx: Counter;
  upstream_rq_3xx: Counter;
  upstream_rq_4xx: Counter;
  upstream_rq_5xx: Counter;
  upstream_rq_completed: Counter;
  upstream_rq_active: Gauge;
  upstream_rq_timeout: Counter;
  upstream_rq_retry: Counter;
  upstream_rq_pending_overflow: Counter;
  upstream_rq_pending_total: Counter;
  upstream_rq_pending_active: Gauge;
  upstream_cx_total: Counter;
  upstream_cx_active: Gauge;
  upstream_cx_connect_fail: Counter;
  upstream_cx_destroy: Counter;
  upstream_cx_overflow: Counter;
  upstream_rq_time: Histogram;
  upstream_cx_none_healthy: Counter;
  lb_healthy_panic: Counter;
  membership_total: Gauge;
  membership_healthy: Gauge;
  membership_change: Counter;
  update_success: Counter;
}

const CLUSTER_COUNTERS = ['upstream_rq_total', 'upstream_rq_2xx', 'upstream_rq_3xx', 'upstream_rq_4xx', 'upstream_rq_5xx', 'upstream_rq_completed',
  'upstream_rq_timeout', 'upstream_rq_retry', 'upstream_rq_pending_overflow', 'upstream_rq_pending_total', 'upstream_cx_total', 'upstream_cx_connect_fail', 'upstream_cx_destroy',
  'upstream_cx_overflow', 'upstream_cx_none_healthy', 'lb_healthy_panic', 'membership_change', 'update_success'] as const;
const CLUSTER_GAUGES = ['upstream_rq_active', 'upstream_rq_pending_active', 'upstream_cx_active', 'membership_total', 'membership_healthy'] as const;

function createClusterStats(store: StatsStore, name: string): ClusterStats {
  const s: Record<string, unknown> = {};
  for (const c of CLUSTER_COUNTERS) s[c] = store.counter('cluster.', name, c);
  for (const g of CLUSTER_GAUGES) s[g] = store.gauge('cluster.', name, g);
  s.upstream_rq_time = store.histogram('cluster.', name, 'upstream_rq_time');
  return s as unknown as ClusterStats;
}

export { DEFAULT_PANIC_THRESHOLD_PERCENT };
export const DEFAULT_CONNECT_TIMEOUT_MS = 1000;

/** The result of a host pick: the host, or why there is none (flag UH). */
export interface HostPick { host: Host | undefined; panic: boolean }

const NO_HOST: HostPick = Object.freeze({ host: undefined, panic: false });

/** A cluster at run time: hosts, the load balancer and the resilience slots. */
export class Cluster {
  hosts: Host[] = [];
  lb: LoadBalancer;
  config: ClusterConfig;
  readonly stats: ClusterStats;
  /** Set by the resilience modules (issue 6). */
  circuitBreakers?: CircuitBreakersSlot;
  outlierDetector?: OutlierDetectorSlot;
  healthChecker?: HealthCheckerSlot;
  /** True when endpoints are pushed at run time (registry), false for static ones. */
  addedViaApi = false;
  /** Lower-cased hash header for ring_hash. */
  hashHeader: string | undefined;
  /**
   * Outbound mTLS of the cluster (`tls`), or undefined. A new object whenever the setting changes, so the
   * pool tells connections opened under another setting by reference (no work per request).
   */
  upstreamTls: { readonly secret: string; readonly sni: string | undefined } | undefined;

  /** Healthy hosts with Envoy's panic threshold (the resilience module's one implementation). */
  private selector: HealthyHostSelector;
  /** This node's locality (bootstrap node.locality): with a zone, hosts are balanced by priority level. */
  private localLocality: LocalityConfig | undefined;
  /** Hosts by priority level (locality failover), or undefined: one level, every host (the fast path). */
  private levels: Host[][] | undefined;
  /** One load balancer per level (Envoy keeps one per priority): round robin state and ring_hash rings stay per level. */
  private levelLbs: LoadBalancer[] = [];

  constructor(config: ClusterConfig, readonly statsStore: StatsStore, localLocality?: LocalityConfig) {
    this.config = config;
    this.localLocality = localLocality;
    this.lb = createLoadBalancer(config.lbPolicy ?? 'round_robin');
    this.hashHeader = config.hashHeader?.toLowerCase();
    this.upstreamTls = config.tls ? { secret: config.tls.secret, sni: config.tls.sni } : undefined;
    this.stats = createClusterStats(statsStore, config.name);
    this.selector = this.makeSelector();
    this.setEndpoints(config.endpoints ?? []);
  }

  get name(): string { return this.config.name; }
  get connectTimeoutMs(): number { return this.config.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS; }
  /** The protocol spoken to the endpoints: `http2` for ports declared http2/grpc (the pool and router pick the codec by it). */
  get protocol(): 'http1' | 'http2' { return this.config.protocol ?? 'http1'; }

  /** Replaces the config in place (same name); keeps hosts that stay, with their stats and flags. */
  reconfigure(config: ClusterConfig, localLocality?: LocalityConfig): void {
    this.localLocality = localLocality;
    const policyChanged = (config.lbPolicy ?? 'round_robin') !== (this.config.lbPolicy ?? 'round_robin');
    this.config = config;
    this.hashHeader = config.hashHeader?.toLowerCase();
    if (config.tls?.secret !== this.upstreamTls?.secret || config.tls?.sni !== this.upstreamTls?.sni) {
      this.upstreamTls = config.tls ? { secret: config.tls.secret, sni: config.tls.sni } : undefined;
    }
    if (policyChanged) {
      this.lb = createLoadBalancer(config.lbPolicy ?? 'round_robin');
      this.levelLbs = [];
    }
    if ((config.panicThresholdPercent ?? DEFAULT_PANIC_THRESHOLD_PERCENT) !== this.selector.panicThresholdPercent) this.selector = this.makeSelector();
    if (config.endpoints) this.setEndpoints(config.endpoints);
    else this.assignPriorities();
  }

  /**
   * Replaces the host set atomically. A host that stays keeps its object (stats,
   * active/outlier flags); its EDS health comes from the new endpoint. An endpoint whose identity
   * changed is a new host: its pooled connections verified the old identity and must not serve it.
   */
  setEndpoints(endpoints: EndpointConfig[]): void {
    const keyOf = (h: { address: string; port: number }, identity: string | undefined) => (identity === undefined ? hostKey(h) : `${hostKey(h)} ${identity}`);
    const old = new Map(this.hosts.map((h) => [keyOf(h, h.identity), h]));
    const next: Host[] = [];
    for (const ep of endpoints) {
      const key = keyOf(ep, identityOf(ep.metadata));
      let host = old.get(key);
      if (host) {
        old.delete(key);
        host.weight = ep.weight ?? 1;
        host.metadata = ep.metadata ?? {};
        host.locality = ep.locality;
        if (ep.healthy === false) host.healthFlags.add('failed_eds_health');
        else host.healthFlags.delete('failed_eds_health');
      } else {
        host = createHost(ep);
      }
      if (!next.some((h) => h === host)) next.push(host);
    }
    const changed = old.size > 0 || next.length !== this.hosts.length || next.some((h, i) => h !== this.hosts[i]);
    this.hosts = next;
    this.assignPriorities();
    this.removedHosts(old.size > 0 ? [...old.values()] : []);
    if (changed) this.stats.membership_change.inc();
    this.refreshMembership();
  }

  /** Priority levels from the localities (after any change of hosts, their localities, or this node's). */
  private assignPriorities(): void {
    this.levels = priorityLevels(this.hosts, this.localLocality, this.config.localityLb?.enabled !== false);
    const count = this.levels?.length ?? 0;
    while (this.levelLbs.length < count) this.levelLbs.push(createLoadBalancer(this.config.lbPolicy ?? 'round_robin'));
    this.levelLbs.length = count;
  }

  /** Hook: hosts dropped by an update (the upstream pool closes their idle connections). */
  onHostsRemoved: ((hosts: Host[]) => void) | undefined;
  private removedHosts(hosts: Host[]): void {
    if (hosts.length > 0) this.onHostsRemoved?.(hosts);
  }

  /** Call after changing any host's healthFlags (health checker, outlier detector). */
  refreshMembership(): void {
    let healthy = 0;
    for (const h of this.hosts) if (isHealthy(h)) healthy++;
    this.stats.membership_total.set(this.hosts.length);
    this.stats.membership_healthy.set(healthy);
  }

  private makeSelector(): HealthyHostSelector {
    const panic = this.stats.lb_healthy_panic;
    return new HealthyHostSelector(this.config.panicThresholdPercent ?? DEFAULT_PANIC_THRESHOLD_PERCENT, { counter: () => panic, gauge: (leaf) => this.statsStore.gauge('cluster.', this.name, leaf) });
  }

  /**
   * Picks a host among the healthy ones. Envoy's panic threshold: when the healthy
   * share falls below `panicThresholdPercent` (default 50), balance across all hosts;
   * a threshold of 0 disables panic mode (no healthy host: no host, 503 UH).
   */
  pickHost(ctx: LbContext): HostPick {
    if (this.hosts.length === 0) return NO_HOST;
    if (this.levels) return this.pickByPriority(this.levels, ctx);
    const candidates = this.selector.candidates(this.hosts);
    if (candidates.length === 0) return NO_HOST;
    return { host: this.lb.pick(candidates, ctx), panic: this.selector.lastPanic };
  }

  /**
   * Locality failover: a level by Envoy's priority load (overprovisioning factor), then the load balancer
   * within it; the panic threshold applies per level (src/cluster/locality.ts).
   */
  private pickByPriority(levels: Host[][], ctx: LbContext): HostPick {
    const choice = choosePriority(levels, this.config.localityLb?.overprovisioningFactor ?? DEFAULT_OVERPROVISIONING_FACTOR,
      this.selector.panicThresholdPercent, Math.random());
    const level = levels[choice.level]!;
    const lb = this.levelLbs[choice.level]!;
    if (choice.panic) {
      this.stats.lb_healthy_panic.inc();
      return { host: lb.pick(level, ctx), panic: true };
    }
    let healthy = 0;
    for (const h of level) if (h.healthFlags.size === 0) healthy++;
    if (healthy === 0) return NO_HOST;
    return { host: lb.pick(healthy === level.length ? level : level.filter(isHealthy), ctx), panic: false };
  }

  close(): void {
    this.circuitBreakers?.close?.();
    this.outlierDetector?.close?.();
    this.healthChecker?.close?.();
  }
}
