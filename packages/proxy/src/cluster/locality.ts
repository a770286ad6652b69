import type { LocalityConfig } from '../config/types';
import type { Host } from './host';

/**
 * Locality failover (issue 16), as Istio programs Envoy: endpoints get a priority by where they run
 * relative to this node (P0 same region and zone, P1 same region, P2 the rest; levels without hosts
 * are dropped, as Istio does, so priorities stay contiguous), and Envoy's priority load spreads the
 * traffic: a level takes min(100, overprovisioning factor x its healthy share), what it cannot take
 * spills to the next level (with factor 1.4: 1 of 2 local hosts healthy = 70 % local, 30 % onwards).
 * The panic threshold applies per level and only once the levels together are short of healthy hosts
 * (normalized total health below 100 %), as Envoy's docs say.
 */

export const DEFAULT_OVERPROVISIONING_FACTOR = 140;

/** An endpoint's locality from the registry's instance metadata (`region`, `zone`, `subZone` as the agent registers them), or undefined. */
export function localityOfMetadata(metadata: Record<string, unknown> | undefined): LocalityConfig | undefined {
  if (!metadata) return undefined;
  const str = (v: unknown) => (typeof v === 'string' && v.length > 0 ? v : undefined);
  const region = str(metadata.region);
  const zone = str(metadata.zone);
  const subZone = str(metadata.subZone);
  if (region === undefined && zone === undefined && subZone === undefined) return undefined;
  return { ...(region !== undefined ? { region } : {}), ...(zone !== undefined ? { zone } : {}), ...(subZone !== undefined ? { subZone } : {}) };
}

/**
 * Raw priority of an endpoint for a node in `local` (which has a zone): 0, 1 or 2. A node without a
 * region matches on the zone alone (zone names are then taken as unique); an endpoint without a
 * locality is P2.
 */
export function localityPriority(local: LocalityConfig, endpoint: LocalityConfig | undefined): number {
  if (!endpoint) return 2;
  const sameRegion = local.region === undefined || endpoint.region === local.region;
  if (sameRegion && endpoint.zone === local.zone) return 0;
  if (local.region !== undefined && endpoint.region === local.region) return 1;
  return 2;
}

/**
 * Hosts by priority level (contiguous from 0), with each host's `priority` set; undefined when locality
 * load balancing does not apply (no node zone, disabled, or every host in one level): one level, all hosts.
 */
export function priorityLevels(hosts: readonly Host[], local: LocalityConfig | undefined, enabled: boolean): Host[][] | undefined {
  if (!enabled || local?.zone === undefined) {
    for (const h of hosts) h.priority = 0;
    return undefined;
  }
  const raw: Host[][] = [[], [], []];
  for (const h of hosts) raw[localityPriority(local, h.locality)]!.push(h);
  const levels = raw.filter((l) => l.length > 0);
  levels.forEach((level, p) => { for (const h of level) h.priority = p; });
  return levels.length > 1 ? levels : undefined;
}

/** Which level serves one request and whether that level is in panic (balanced across all its hosts). */
export interface PriorityChoice { level: number; panic: boolean }

/**
 * Envoy's priority load for one pick. `random` in [0, 1). Health of a level = min(100, factor x healthy %);
 * the normalized total health (at most 100) scales the levels' loads so they sum to 100. When every level
 * is in panic, the load follows the levels' host counts (Envoy's recalculatePerPriorityPanic).
 */
export function choosePriority(levels: readonly (readonly Host[])[], overprovisioningFactor: number, panicThresholdPercent: number, random: number): PriorityChoice {
  const n = levels.length;
  const health = new Array<number>(n);
  const healthyPct = new Array<number>(n);
  let totalHealth = 0;
  let hostCount = 0;
  for (let p = 0; p < n; p++) {
    const level = levels[p]!;
    let healthy = 0;
    for (let i = 0; i < level.length; i++) if (level[i]!.healthFlags.size === 0) healthy++;
    healthyPct[p] = (100 * healthy) / level.length;
    health[p] = Math.min(100, (overprovisioningFactor / 100) * healthyPct[p]!);
    totalHealth += health[p]!;
    hostCount += level.length;
  }
  const normalized = Math.min(100, totalHealth);
  const inPanic = (p: number) => normalized < 100 && panicThresholdPercent > 0 && healthyPct[p]! < panicThresholdPercent;
  let allPanic = normalized < 100 && panicThresholdPercent > 0;
  for (let p = 0; allPanic && p < n; p++) if (!inPanic(p)) allPanic = false;
  const r = random * 100;
  if (allPanic) {
    // no level has enough healthy hosts: spread by host count, each level across all its hosts
    let acc = 0;
    for (let p = 0; p < n; p++) {
      acc += (100 * levels[p]!.length) / hostCount;
      if (r < acc) return { level: p, panic: true };
    }
    return { level: n - 1, panic: true };
  }
  if (totalHealth === 0) return { level: 0, panic: false }; // threshold 0 and nothing healthy: no host (503 UH)
  let remaining = 100;
  let acc = 0;
  let last = 0;
  for (let p = 0; p < n; p++) {
    const load = Math.min(remaining, (health[p]! * 100) / normalized);
    if (load <= 0) continue;
    remaining -= load;
    acc += load;
    last = p;
    if (r < acc) return { level: p, panic: inPanic(p) };
  }
  return { level: last, panic: inPanic(last) };
}
