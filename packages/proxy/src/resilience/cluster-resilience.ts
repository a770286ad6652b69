import type { Cluster, CircuitBreakersSlot, HealthCheckerSlot, OutlierDetectorSlot, UpstreamOutcome } from '../cluster/cluster';
import type { Host } from '../cluster/host';
import { CircuitBreakers, type Release } from './circuit-breakers';
import { ActiveHealthChecker } from './health-checker';
import { OutlierDetector } from './outlier-detector';
import type { ClusterStatScope } from './types';

/**
 * Fills a cluster's resilience slots from its config: circuit breakers, the
 * outlier detector and the active health checker. Call after the cluster is
 * created and after each reconfigure: parts whose config did not change are
 * kept (with their state), changed ones are replaced, removed ones stopped and
 * their health flags cleared.
 */

/** The cluster's `cluster.NAME.` stats scope in the proxy's StatsStore. */
export function clusterStatScope(cluster: Cluster): ClusterStatScope {
  return {
    counter: (leaf) => cluster.statsStore.counter('cluster.', cluster.name, leaf),
    gauge: (leaf) => cluster.statsStore.gauge('cluster.', cluster.name, leaf),
  };
}

const scopes = new WeakMap<Cluster, ClusterStatScope>();
/** clusterStatScope, made once per cluster (the request path asks for it). */
export function statScopeOf(cluster: Cluster): ClusterStatScope {
  let s = scopes.get(cluster);
  if (!s) {
    s = clusterStatScope(cluster);
    scopes.set(cluster, s);
  }
  return s;
}

/** CircuitBreakers behind the data plane's slot (the data plane counts request and connection overflows itself). */
export class ClusterCircuitBreakers implements CircuitBreakersSlot {
  private readonly requestReleases: Release[] = [];
  private readonly retryReleases: Release[] = [];

  constructor(readonly breakers: CircuitBreakers, private readonly cluster: Cluster, readonly configKey: string) {}

  tryAcquireRequest(isRetry: boolean): boolean {
    const release = isRetry ? this.breakers.tryRetry() : this.breakers.tryRequest('default', false);
    if (!release) return false;
    (isRetry ? this.retryReleases : this.requestReleases).push(release);
    return true;
  }

  releaseRequest(isRetry: boolean): void {
    (isRetry ? this.retryReleases : this.requestReleases).pop()?.();
  }

  /** max_pending_requests: a place in the pool's pending queue. */
  tryAcquirePending(): Release | null {
    return this.breakers.tryPending();
  }

  /** max_connections, against the pool's live connection count for the cluster. */
  canOpenConnection(): boolean {
    return this.cluster.stats.upstream_cx_active.value < this.breakers.thresholds().maxConnections;
  }
}

export class ClusterOutlierDetector implements OutlierDetectorSlot {
  constructor(readonly detector: OutlierDetector<Host>, readonly configKey: string) {}
  reportOutcome(host: Host, outcome: UpstreamOutcome): void { this.detector.recordOutcome(host, outcome); }
  successRateAverage(): number { return this.detector.successRateAverage; }
  successRateEjectionThreshold(): number { return this.detector.successRateEjectionThreshold; }
  hostSuccessRate(host: Host): number { return this.detector.hostSuccessRate(host); }
  close(): void { this.detector.stop(); }
}

export class ClusterHealthChecker implements HealthCheckerSlot {
  constructor(readonly checker: ActiveHealthChecker<Host>, readonly configKey: string) {}
  close(): void { this.checker.stop(); }
}

export function attachResilience(cluster: Cluster): void {
  const config = cluster.config;
  const stats = clusterStatScope(cluster);
  const refresh = () => cluster.refreshMembership();

  const cbKey = JSON.stringify(config.circuitBreakers ?? {});
  const cb = cluster.circuitBreakers;
  if (!(cb instanceof ClusterCircuitBreakers) || cb.configKey !== cbKey) {
    cluster.circuitBreakers = new ClusterCircuitBreakers(new CircuitBreakers(config.circuitBreakers ?? {}, stats), cluster, cbKey);
  }

  const od = cluster.outlierDetector;
  if (config.outlierDetection) {
    const key = JSON.stringify(config.outlierDetection);
    if (!(od instanceof ClusterOutlierDetector) || od.configKey !== key) {
      if (od instanceof ClusterOutlierDetector) od.detector.stop(true);
      const detector = new OutlierDetector<Host>({ config: config.outlierDetection, hosts: () => cluster.hosts, stats, onChange: refresh }).start();
      cluster.outlierDetector = new ClusterOutlierDetector(detector, key);
    }
  } else if (od) {
    if (od instanceof ClusterOutlierDetector) od.detector.stop(true);
    else od.close?.();
    cluster.outlierDetector = undefined;
    refresh();
  }

  const hc = cluster.healthChecker;
  if (config.healthCheck) {
    const key = JSON.stringify(config.healthCheck);
    if (!(hc instanceof ClusterHealthChecker) || hc.configKey !== key) {
      if (hc instanceof ClusterHealthChecker) hc.checker.stop(true);
      const checker = new ActiveHealthChecker<Host>({ clusterName: cluster.name, config: config.healthCheck, hosts: () => cluster.hosts, stats, onChange: refresh }).start();
      cluster.healthChecker = new ClusterHealthChecker(checker, key);
    } else {
      hc.checker.sync();
    }
  } else if (hc) {
    if (hc instanceof ClusterHealthChecker) hc.checker.stop(true);
    else hc.close?.();
    cluster.healthChecker = undefined;
  }
  refresh();
}
