import type { TryOutcome } from './retry-policy';
import type { ClusterStatScope, ResilienceHost } from './types';

/**
 * Envoy's outlier detection (passive health checking) for one cluster.
 *
 * - consecutive 5xx: N 5xx responses in a row (connect failures, resets and
 *   timeouts count as 503/504, Envoy's default without split local-origin
 *   errors) eject the host at once;
 * - consecutive gateway failures: N 502/503/504 in a row;
 * - success rate: every interval, hosts with at least `successRateRequestVolume`
 *   requests, when at least `successRateMinimumHosts` have them, are ejected if
 *   their success rate is below mean − (stdev_factor / 1000) × stdev.
 *
 * An ejected host carries `failed_outlier_check` for base ejection time × the
 * number of times it was ejected (capped at maxEjectionTimeMs); each interval it
 * stays in service lowers that multiplier by one. Never more than
 * maxEjectionPercent of the cluster is ejected, but at least one host may be.
 */

export interface OutlierDetectionConfig {
  consecutive5xx?: number;
  consecutiveGatewayFailure?: number;
  intervalMs?: number;
  baseEjectionTimeMs?: number;
  maxEjectionTimeMs?: number;
  maxEjectionPercent?: number;
  /** % chance an ejection detected by each rule is enforced (Envoy: 100, 100, 100; gateway failure 0 in Envoy, 100 here since it is configured explicitly) */
  enforcingConsecutive5xx?: number;
  enforcingConsecutiveGatewayFailure?: number;
  enforcingSuccessRate?: number;
  successRateMinimumHosts?: number;
  successRateRequestVolume?: number;
  successRateStdevFactor?: number;
}

export type ResolvedOutlierConfig = Required<OutlierDetectionConfig>;

export const DEFAULT_OUTLIER_DETECTION: Readonly<ResolvedOutlierConfig> = Object.freeze({
  consecutive5xx: 5,
  consecutiveGatewayFailure: 5,
  intervalMs: 10_000,
  baseEjectionTimeMs: 30_000,
  maxEjectionTimeMs: 300_000,
  maxEjectionPercent: 10,
  enforcingConsecutive5xx: 100,
  enforcingConsecutiveGatewayFailure: 100,
  enforcingSuccessRate: 100,
  successRateMinimumHosts: 5,
  successRateRequestVolume: 100,
  successRateStdevFactor: 1900,
});

export type EjectionType = 'consecutive_5xx' | 'consecutive_gateway_failure' | 'success_rate';

interface HostState {
  consecutive5xx: number;
  consecutiveGateway: number;
  /** times ejected, lowered by one per interval in service: the ejection time multiplier */
  ejections: number;
  ejectedAt: number | undefined;
  /** current interval's counts */
  success: number;
  total: number;
  /** success rate of the last interval, -1 without enough requests */
  successRate: number;
}

export interface OutlierDetectorOptions<H> {
  config?: OutlierDetectionConfig;
  /** the cluster's current hosts (endpoints may change at run time) */
  hosts: () => readonly H[];
  stats?: ClusterStatScope;
  now?: () => number;
  random?: () => number;
  /** called after a host is ejected or returned to service */
  onChange?: (host: H, ejected: boolean, type?: EjectionType) => void;
}

export class OutlierDetector<H extends ResilienceHost> {
  readonly config: ResolvedOutlierConfig;
  private readonly states = new Map<H, HostState>();
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  private readonly random: () => number;
  private average = -1;
  private threshold = -1;

  constructor(private readonly opts: OutlierDetectorOptions<H>) {
    this.config = { ...DEFAULT_OUTLIER_DETECTION, ...stripUndefined(opts.config ?? {}) };
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.gauge('ejections_active').set(0);
  }

  /** Starts the interval sweep (un-ejection, success rate). */
  start(): this {
    if (!this.timer) {
      this.timer = setInterval(() => this.sweep(), this.config.intervalMs);
      this.timer.unref();
    }
    return this;
  }

  /** Stops the sweeps. `clearFlags` returns every ejected host to service (outlier detection was turned off). */
  stop(clearFlags = false): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (clearFlags) {
      for (const [h, s] of this.states) if (s.ejectedAt !== undefined) { s.ejectedAt = undefined; h.healthFlags.delete('failed_outlier_check'); }
      this.gauge('ejections_active').set(0);
    }
  }

  /** Feeds the result of one try to `host`. */
  recordOutcome(host: H, outcome: TryOutcome): void {
    const status = outcome.kind === 'response' ? outcome.status : outcome.kind === 'timeout' ? 504 : 503;
    this.recordStatus(host, status);
  }

  recordStatus(host: H, status: number): void {
    const s = this.state(host);
    s.total++;
    if (status >= 500) {
      s.consecutive5xx++;
    } else {
      s.success++;
      s.consecutive5xx = 0;
    }
    if (status === 502 || status === 503 || status === 504) s.consecutiveGateway++;
    else s.consecutiveGateway = 0;
    if (s.ejectedAt !== undefined) return;
    const c = this.config;
    if (c.consecutive5xx > 0 && s.consecutive5xx >= c.consecutive5xx) {
      this.detected(host, s, 'consecutive_5xx', c.enforcingConsecutive5xx);
    } else if (c.consecutiveGatewayFailure > 0 && s.consecutiveGateway >= c.consecutiveGatewayFailure) {
      this.detected(host, s, 'consecutive_gateway_failure', c.enforcingConsecutiveGatewayFailure);
    }
  }

  /** One interval: return hosts whose time is up, lower multipliers, run the success-rate rule. */
  sweep(): void {
    const now = this.now();
    const hosts = this.opts.hosts();
    const present = new Set(hosts);
    for (const h of [...this.states.keys()]) if (!present.has(h)) this.states.delete(h);
    for (const h of hosts) {
      const s = this.state(h);
      if (s.ejectedAt !== undefined) {
        const duration = Math.min(this.config.baseEjectionTimeMs * s.ejections, Math.max(this.config.maxEjectionTimeMs, this.config.baseEjectionTimeMs));
        if (now - s.ejectedAt >= duration) this.uneject(h, s);
      } else if (s.ejections > 0) {
        s.ejections--;
      }
    }
    this.successRateSweep(hosts);
    for (const h of hosts) {
      const s = this.state(h);
      s.success = 0;
      s.total = 0;
    }
    this.gauge('ejections_active').set(this.ejectedCount(hosts));
  }

  private successRateSweep(hosts: readonly H[]): void {
    const c = this.config;
    const rates: { host: H; rate: number }[] = [];
    for (const h of hosts) {
      const s = this.state(h);
      s.successRate = s.total >= c.successRateRequestVolume && s.total > 0 ? (100 * s.success) / s.total : -1;
      if (s.successRate >= 0 && s.ejectedAt === undefined) rates.push({ host: h, rate: s.successRate });
    }
    if (rates.length < c.successRateMinimumHosts || rates.length === 0) {
      this.average = -1;
      this.threshold = -1;
      return;
    }
    const mean = rates.reduce((a, r) => a + r.rate, 0) / rates.length;
    const variance = rates.reduce((a, r) => a + (r.rate - mean) ** 2, 0) / rates.length;
    this.average = mean;
    this.threshold = mean - (c.successRateStdevFactor / 1000) * Math.sqrt(variance);
    for (const r of rates) if (r.rate < this.threshold) this.detected(r.host, this.state(r.host), 'success_rate', c.enforcingSuccessRate);
  }

  /** success_rate_average for /clusters (`NAME::outlier::success_rate_average::X`), -1 without enough data. */
  get successRateAverage(): number { return this.average; }
  get successRateEjectionThreshold(): number { return this.threshold; }

  /** The host's success rate of the last interval, -1 without enough data. */
  hostSuccessRate(host: H): number { return this.states.get(host)?.successRate ?? -1; }
  isEjected(host: H): boolean { return this.states.get(host)?.ejectedAt !== undefined; }
  ejectionCount(host: H): number { return this.states.get(host)?.ejections ?? 0; }

  /** Envoy's /clusters outlier lines for the cluster. */
  clustersLines(clusterName: string): string[] {
    return [
      `${clusterName}::outlier::success_rate_average::${this.average}`,
      `${clusterName}::outlier::success_rate_ejection_threshold::${this.threshold}`,
    ];
  }

  private detected(host: H, s: HostState, type: EjectionType, enforcingPercent: number): void {
    this.counter(`ejections_detected_${type}`).inc();
    if (!(this.random() * 100 < enforcingPercent)) return;
    const hosts = this.opts.hosts();
    const ejected = this.ejectedCount(hosts);
    const total = Math.max(hosts.length, 1);
    // Envoy lets one host go even when the percentage would forbid it.
    if (ejected > 0 && (100 * (ejected + 1)) / total > this.config.maxEjectionPercent) {
      this.counter('ejections_overflow').inc();
      return;
    }
    s.ejections++;
    s.ejectedAt = this.now();
    s.consecutive5xx = 0;
    s.consecutiveGateway = 0;
    host.healthFlags.add('failed_outlier_check');
    this.counter('ejections_enforced_total').inc();
    this.counter(`ejections_enforced_${type}`).inc();
    this.counter('ejections_total').inc();
    if (type === 'consecutive_5xx') this.counter('ejections_consecutive_5xx').inc();
    this.gauge('ejections_active').set(ejected + 1);
    this.opts.onChange?.(host, true, type);
  }

  private uneject(host: H, s: HostState): void {
    s.ejectedAt = undefined;
    s.consecutive5xx = 0;
    s.consecutiveGateway = 0;
    host.healthFlags.delete('failed_outlier_check');
    this.opts.onChange?.(host, false);
  }

  private ejectedCount(hosts: readonly H[]): number {
    let n = 0;
    for (const h of hosts) if (this.states.get(h)?.ejectedAt !== undefined) n++;
    return n;
  }

  private state(host: H): HostState {
    let s = this.states.get(host);
    if (!s) {
      s = { consecutive5xx: 0, consecutiveGateway: 0, ejections: 0, ejectedAt: undefined, success: 0, total: 0, successRate: -1 };
      this.states.set(host, s);
    }
    return s;
  }

  private counter(leaf: string) { return this.opts.stats?.counter(`outlier_detection.${leaf}`) ?? NOOP; }
  private gauge(leaf: string) { return this.opts.stats?.gauge(`outlier_detection.${leaf}`) ?? NOOP; }
}

const NOOP = { inc() {}, dec() {}, set() {}, value: 0 };

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
