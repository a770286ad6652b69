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
    let healthyCount = 0;
    for (const h of hosts) if (h.healthFlags.size === 0) healthyCount++;
    if (healthyCount === hosts.length) return { hosts, panic: false };
    const percent = hosts.length === 0 ? 0 : (100 * healthyCount) / hosts.length;
    if (this.panicThresholdPercent > 0 && percent < this.panicThresholdPercent && hosts.length > 0) {
      this.panicCounter?.inc();
      return { hosts, panic: true };
    }
    return { hosts: hosts.filter((h) => h.healthFlags.size === 0), panic: false };
  }
}
