// Traffic rules in the diagnostics (docs/traffic-rules.md): doctor's `rules` check (the rules in
// force; a subset a rule sends to with no healthy instance fails), trace's `rule` hop (what the
// proxy's x-mesh-route debug answer says the request met), the home page's rules table.
import { describeHttpRule, type RuleInForce } from '../traffic-rules.js';
import type { CheckContext, CheckResult } from './checks.js';
import type { TraceHop } from './trace.js';

/** The proxy's answer to `x-mesh-debug-upstream: 1`: `vhost=..; route=..; cluster=..[; fault=..][; mirror=..][; ratelimit=..]`. */
export const ROUTE_HEADER = 'x-mesh-route';

export function parseRouteHeader(value: string | string[] | undefined): Record<string, string> | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text) return undefined;
  const out: Record<string, string> = {};
  for (const part of text.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return out;
}

/** The subsets a rule sends traffic to (route and mirror destinations). */
function usedSubsets(entry: RuleInForce): Map<string, string[]> {
  const used = new Map<string, string[]>();
  entry.rule.http.forEach((http, i) => {
    const name = http.name ?? `${entry.service}-${i}`;
    for (const subset of [...(http.route ?? []).map((d) => d.subset), http.mirror?.subset]) {
      if (subset === undefined) continue;
      if (!used.get(subset)?.includes(name)) used.set(subset, [...(used.get(subset) ?? []), name]);
    }
  });
  return used;
}

const label = (entry: RuleInForce) => (entry.namespace === 'default' ? entry.service : `${entry.service}.${entry.namespace}`);

export function checkTrafficRules(ctx: CheckContext): CheckResult {
  const rules = ctx.snap.rules;
  if (rules === undefined) return { hop: 'rules', status: 'OK', evidence: 'the agent does not report traffic rules (no GET /rules)' };
  if (rules.length === 0) return { hop: 'rules', status: 'OK', evidence: 'no traffic rules: every service is routed to all its instances' };
  const problems: string[] = [];
  const listed: string[] = [];
  for (const entry of rules) {
    const subsets = new Map(entry.subsets.map((s) => [s.name, s]));
    for (const [subset, users] of usedSubsets(entry)) {
      const state = subsets.get(subset);
      if (state && state.healthy === 0) problems.push(`${label(entry)} subset ${subset} (${Object.entries(state.labels).map(([k, v]) => `${k}=${v}`).join(',')}) has no healthy instance (${state.healthy}/${state.instances}) but rule ${users.join(', ')} sends to it`);
    }
    listed.push(`${label(entry)} from ${entry.source}: ${entry.rule.http.map((_h, i) => describeHttpRule(entry.rule, i)).join(' | ') || 'subsets only'}`);
  }
  if (problems.length > 0) {
    return {
      hop: 'rules', status: 'FAIL', evidence: problems.join('; '),
      fix: 'start instances registered with the subset\'s labels (node.labels in their agent config), or change the rule (mesh-agent rules apply FILE) so it does not send there',
    };
  }
  return { hop: 'rules', status: 'OK', evidence: `${rules.length} service rule${rules.length === 1 ? '' : 's'} in force: ${listed.join('; ')}` };
}

/** trace's `rule` hop: the route the proxy says it matched, the rule and subset behind it, the policies applied; undefined when no rule applied. */
export function ruleHop(header: string | string[] | undefined, rules: RuleInForce[] | undefined): TraceHop | undefined {
  const route = parseRouteHeader(header);
  if (!route) return undefined;
  const cluster = route.cluster ?? '-';
  const subset = /^out#\d+#[^#]+#([^#]+)$/.exec(cluster)?.[1];
  const applied = [route.fault ? `fault ${route.fault}` : '', route.mirror ? `mirrored to ${route.mirror}` : '', route.ratelimit ? `rate limit ${route.ratelimit}` : ''].filter(Boolean);
  const entry = rules?.find((r) => route.vhost === label(r) || route.vhost?.startsWith(`${label(r)}:`));
  const http = entry?.rule.http.findIndex((h, i) => (h.name ?? `${entry.service}-${i}`) === route.route);
  const matched = entry !== undefined && http !== undefined && http >= 0;
  // no rule and no policy: the service's default route, nothing to show beyond the route hop
  if (!matched && applied.length === 0) return undefined;
  const rule = matched ? `rule ${describeHttpRule(entry.rule, http)} (from ${entry.source})` : `route ${route.route ?? '?'} (no traffic rule: the service's default route)`;
  const limited = route.ratelimit === 'limited' || route.fault?.includes('abort');
  return {
    hop: 'rule', ok: true,
    detail: `${rule}; cluster ${cluster}${subset ? ` (subset ${subset})` : ''}${applied.length > 0 ? `; ${applied.join(', ')}` : ''}${limited ? ' (answered by the proxy, not the upstream)' : ''}`,
  };
}

/** The home page's rules table: one row per service, one line per rule. */
export function rulesForHomePage(rules: RuleInForce[] | undefined): Array<{ service: string; source: string; subsets: string[]; lines: string[] }> {
  return (rules ?? []).map((entry) => ({
    service: label(entry),
    source: entry.source,
    subsets: entry.subsets.map((s) => `${s.name} (${Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(',')}): ${s.healthy}/${s.instances} healthy`),
    lines: [...(entry.rule.rateLimit ? [`rate limit ${entry.rule.rateLimit.requestsPerSecond}/s for the whole service`] : []), ...entry.rule.http.map((_h, i) => describeHttpRule(entry.rule, i))],
  }));
}
