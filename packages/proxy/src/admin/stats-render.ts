import { createRequire } from 'node:module';
import type { Histogram, Stat } from '../stats/store';

export interface StatsQuery { filter?: RegExp; usedOnly: boolean }

function selected(stats: Stat[], q: StatsQuery): Stat[] {
  return stats.filter((s) => (!q.usedOnly || s.used) && (!q.filter || q.filter.test(s.name)));
}

/** Envoy's histogram summary line: `P0(nan,..) P25(...)`, shortened to the quantiles and the count. */
function histogramText(h: Histogram): string {
  if (h.count === 0) return 'No recorded values';
  const qs = [0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1];
  return qs.map((q) => `P${q * 100}(${h.quantile(q)},${h.quantile(q)})`).join(' ');
}

/** `/stats` text: `name: value`, sorted; histograms last with their quantiles (as Envoy prints them). */
export function renderStatsText(stats: Stat[], q: StatsQuery): string {
  const chosen = selected(stats, q);
  const lines: string[] = [];
  for (const s of chosen) if (s.kind !== 'histogram') lines.push(`${s.name}: ${s.value}`);
  for (const s of chosen) if (s.kind === 'histogram') lines.push(`${s.name}: ${histogramText(s)}`);
  return lines.length > 0 ? `${lines.join('\n')}\n` : '';
}

export function renderStatsJson(stats: Stat[], q: StatsQuery): object {
  const chosen = selected(stats, q);
  const out: object[] = [];
  for (const s of chosen) if (s.kind !== 'histogram') out.push({ name: s.name, value: s.value });
  const hs = chosen.filter((s): s is Histogram => s.kind === 'histogram');
  if (hs.length > 0) {
    out.push({
      histograms: {
        supported_quantiles: [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100],
        computed_quantiles: hs.map((h) => ({
          name: h.name,
          values: [0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1].map((x) => ({ interval: h.quantile(x) ?? null, cumulative: h.quantile(x) ?? null })),
        })),
      },
    });
  }
  return { stats: out };
}

/**
 * `envoy_` + the tag-extracted name with other characters as `_`. So that
 * `promtool check metrics` passes, a counter gets the `_total` suffix when it
 * lacks it and a gauge named `..._total` (membership_total) loses the suffix (`envoy_cluster_membership`).
 */
export function promName(tagExtractedName: string, kind: Stat['kind']): string {
  const base = `envoy_${tagExtractedName.replace(/[^a-zA-Z0-9_]/g, '_')}`;
  if (kind === 'counter') return base.endsWith('_total') ? base : `${base}_total`;
  if (base.endsWith('_total')) return base.slice(0, -'_total'.length);
  return base;
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function labelText(tags: Readonly<Record<string, string>>, extra?: string): string {
  const parts = Object.entries(tags).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  if (extra) parts.push(extra);
  return parts.length > 0 ? `{${parts.join(',')}}` : '';
}

/**
 * Prometheus text 0.0.4 with Envoy's naming (`envoy_` prefix, tags as labels).
 * Counters and gauges go through prom-client's registry; histograms keep their
 * own buckets (prom-client cannot take pre-aggregated bucket counts) and are
 * rendered here in the same format.
 */
/**
 * Left out of the Prometheus output only: promtool's lint refuses a unit other than the base one
 * ("days"), and `server.seconds_until_first_cert_expiring` carries the same figure in seconds.
 */
const NOT_IN_PROMETHEUS = new Set(['server.days_until_first_cert_expiring']);

export async function renderPrometheus(stats: Stat[], q: StatsQuery): Promise<string> {
  const chosen = selected(stats, q).filter((s) => !NOT_IN_PROMETHEUS.has(s.name));
  // Loaded on the first scrape: prom-client costs memory a proxy that is never scraped does not need.
  const { Counter: PromCounter, Gauge: PromGauge, Registry } = createRequire(import.meta.url ?? __filename)('prom-client') as typeof import('prom-client');
  const registry = new Registry();
  const families = new Map<string, { kind: Stat['kind']; stats: Stat[] }>();
  for (const s of chosen) {
    const name = promName(s.tagExtractedName, s.kind);
    let fam = families.get(name);
    if (!fam) { fam = { kind: s.kind, stats: [] }; families.set(name, fam); }
    if (fam.kind === s.kind) fam.stats.push(s);
  }
  let histogramText = '';
  for (const [name, fam] of [...families].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    const labelNames = [...new Set(fam.stats.flatMap((s) => Object.keys(s.tags)))];
    if (fam.kind === 'counter') {
      const c = new PromCounter({ name, help: fam.stats[0]!.tagExtractedName, labelNames, registers: [registry] });
      for (const s of fam.stats) c.inc({ ...s.tags }, (s as { value: number }).value);
    } else if (fam.kind === 'gauge') {
      const g = new PromGauge({ name, help: fam.stats[0]!.tagExtractedName, labelNames, registers: [registry] });
      for (const s of fam.stats) g.set({ ...s.tags }, (s as { value: number }).value);
    } else {
      histogramText += `# HELP ${name} ${fam.stats[0]!.tagExtractedName}\n# TYPE ${name} histogram\n`;
      for (const s of fam.stats as Histogram[]) {
        let acc = 0;
        for (let i = 0; i < s.buckets.length; i++) {
          acc += s.counts[i]!;
          histogramText += `${name}_bucket${labelText(s.tags, `le="${s.buckets[i]}"`)} ${acc}\n`;
        }
        histogramText += `${name}_bucket${labelText(s.tags, 'le="+Inf"')} ${s.count}\n`;
        histogramText += `${name}_sum${labelText(s.tags)} ${s.sum}\n`;
        histogramText += `${name}_count${labelText(s.tags)} ${s.count}\n`;
      }
    }
  }
  return (await registry.metrics()) + histogramText;
}
