import type { ClusterStatScope, CounterLike, ResilienceHost } from './types';

/**
 * Which hosts a load balancer may pick from, with Envoy's panic threshold: when
 * the share of healthy hosts falls below the threshold (default 50%), health is
 * ignored and traffic is balanced across all hosts, so a few survivors are not
 * crushed by the whole load (counted as `lb_healthy_panic`). A threshold of 0
 * disables panic mode: with no healthy host the request fails with 503 (UH).
 */

export const DEFAULT_PANIC_THRESHOLD_PERCENT = 50;

export interface HostSelection<H> {
  hosts: readonly H[];
  /** true when the cluster is in panic and `hosts` includes unhealthy ones */
  panic: boolean;
}

export function isHostHealthy(host: Pick<ResilienceHost, 'healthFlags'>): boolean {
  return host.healthFlags.size === 0;
}

/** Healthy share of `hosts` in percent (0 for an empty cluster). */
export function healthyPercent(hosts: readonly Pick<ResilienceHost, 'healthFlags'>[]): number {
  if (hosts.length === 0) return 0;
  let healthy = 0;
  for (const h of hosts) if (h.healthFlags.size === 0) healthy++;
  return (100 * healthy) / hosts.length;
}

export class HealthyHostSelector {
  private readonly panicCounter: CounterLike | undefined;

  constructor(readonly panicThresholdPercent = DEFAULT_PANIC_THRESHOLD_PERCENT, stats?: ClusterStatScope) {
    if (!(panicThresholdPercent >= 0 && panicThresholdPercent <= 100)) throw new RangeError(`panicThresholdPercent must be within 0..100, got ${panicThresholdPercent}`);
    this.panicCounter = stats?.counter('lb_healthy_panic');
  }

  /** Called once per load-balancing decision (each try); counts lb_healthy_panic when in panic. */
  select<H extends Pick<ResilienceHost, 'healthFlags'>>(hosts: readonly H[]): HostSelection<H> {
    const chosen = this.candidates(hosts);
    return { hosts: chosen, panic: this.lastPanic };
  }

  /** true when the last `candidates` call found the cluster in panic */
  lastPanic = false;

  /**
   * The hosts to balance across, without allocating when every host is healthy (the hot path): all of
   * them, the healthy ones, all of them in panic, or none (threshold 0 and no healthy host).
   */
  candidates<H extends Pick<ResilienceHost, 'healthFlags'>>(hosts: readonly H[]): readonly H[] {
    let healthyCount = 0;
    for (let i = 0; i < hosts.length; i++) if (hosts[i]!.healthFlags.size === 0) healthyCount++;
    this.lastPanic = false;
    if (healthyCount === hosts.length) return hosts;
    if (this.panicThresholdPercent > 0 && (100 * healthyCount) / hosts.length < this.panicThresholdPercent) {
      this.lastPanic = true;
      this.panicCounter?.inc();
      return hosts;
    }
    return hosts.filter((h) => h.healthFlags.size === 0);
  }
}
