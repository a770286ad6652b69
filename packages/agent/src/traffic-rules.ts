// Where the traffic rules in force come from (docs/traffic-rules.md): the agent config's
// mesh.trafficRules, the file mesh.trafficRulesFile (re-read on change), and the registry (the file
// registry's trafficRules, etcd keys <prefix>rules/<namespace>/<service>). Per service the later one
// wins: agent config < rules file < registry, so every host applies the registry's rule.
import fs from 'node:fs';
import path from 'node:path';
import { parseTrafficRulesText, type AgentConfig, type RegistrySnapshot, type ServiceTrafficRule } from '@mesh-agent/shared-config';

/** A rule and where it came from: `agent config`, `file PATH`, `file registry PATH`, `etcd KEY`. */
export interface SourcedTrafficRule {
  rule: ServiceTrafficRule;
  source: string;
}

export const ruleKey = (rule: { namespace: string; service: string }): string => `${rule.namespace}/${rule.service}`;

/** The rules in force: one per service, a later list's rule replacing an earlier one's. */
export function resolveTrafficRules(...lists: SourcedTrafficRule[][]): SourcedTrafficRule[] {
  const byService = new Map<string, SourcedTrafficRule>();
  for (const list of lists) for (const entry of list) byService.set(ruleKey(entry.rule), entry);
  return [...byService.values()].sort((a, b) => ruleKey(a.rule).localeCompare(ruleKey(b.rule)));
}

/**
 * The agent config's rules and the rules file. The file's first load must succeed (a bad file stops
 * the start, as a bad global config does); a later bad version is reported and the last good one kept.
 */
export class ConfigTrafficRules {
  private fileRules: SourcedTrafficRule[] = [];
  private lastText: string | undefined;
  private lastError: string | undefined;
  private poll: NodeJS.Timeout | undefined;
  readonly file: string | undefined;

  constructor(
    private readonly config: AgentConfig,
    private readonly opts: { onError: (err: Error) => void; onChange: () => void; pollIntervalMs?: number },
  ) {
    this.file = config.mesh.trafficRulesFile ? path.resolve(config.mesh.trafficRulesFile) : undefined;
  }

  start(): void {
    if (!this.file) return;
    this.load();
    this.poll = setInterval(() => {
      try {
        if (this.load()) this.opts.onChange();
        this.lastError = undefined;
      } catch (err) {
        const message = (err as Error).message;
        if (message !== this.lastError) this.opts.onError(err as Error);
        this.lastError = message;
      }
    }, this.opts.pollIntervalMs ?? 1000);
    this.poll.unref();
  }

  /** Reads the file; true when its rules changed. */
  private load(): boolean {
    const text = fs.readFileSync(this.file!, 'utf8');
    if (text === this.lastText) return false;
    const rules = parseTrafficRulesText(text, this.file);
    this.lastText = text;
    this.fileRules = rules.map((rule) => ({ rule, source: `file ${this.file}` }));
    return true;
  }

  rules(): SourcedTrafficRule[] {
    const inline = (this.config.mesh.trafficRules ?? []).map((rule) => ({ rule, source: 'agent config mesh.trafficRules' }));
    return resolveTrafficRules(inline, this.fileRules);
  }

  close(): void {
    if (this.poll) clearInterval(this.poll);
  }
}

/** One subset's instances in the registry now: how many carry its labels, how many of those are healthy. */
export interface SubsetState {
  name: string;
  labels: Record<string, string>;
  instances: number;
  healthy: number;
}

/** What GET /rules answers: every rule in force, where it came from, and its subsets' instances. */
export interface RuleInForce {
  service: string;
  namespace: string;
  source: string;
  subsets: SubsetState[];
  rule: ServiceTrafficRule;
}

export function rulesInForce(rules: SourcedTrafficRule[], registry: RegistrySnapshot): RuleInForce[] {
  return rules.map(({ rule, source }) => {
    const instances = registry.services.find((s) => s.name === rule.service && s.namespace === rule.namespace)?.instances ?? [];
    const subsets = rule.subsets.map((subset) => {
      const members = instances.filter((i) => Object.entries(subset.labels).every(([k, v]) => i.metadata[k] === v));
      return { name: subset.name, labels: subset.labels, instances: members.length, healthy: members.filter((i) => i.healthy).length };
    });
    return { service: rule.service, namespace: rule.namespace, source, subsets, rule };
  });
}

/** One line per rule: `beta-users: match uri prefix /api -> v2 90%, v1 10%; fault abort 5%`, for the CLI, doctor and the home page. */
export function describeHttpRule(rule: ServiceTrafficRule, index: number): string {
  const http = rule.http[index];
  const name = http.name ?? `${rule.service}-${index}`;
  const parts: string[] = [];
  const matches = (http.match ?? []).map((m) => {
    const bits: string[] = [];
    if (m.uri) bits.push(`uri ${Object.entries(m.uri).map(([k, v]) => `${k} ${v}`).join('')}`);
    if (m.method) bits.push(`method ${Object.values(m.method)[0]}`);
    if (m.authority) bits.push(`authority ${Object.entries(m.authority).map(([k, v]) => `${k} ${v}`).join('')}`);
    for (const [h, v] of Object.entries(m.headers ?? {})) bits.push(`header ${h} ${Object.entries(v).map(([k, x]) => `${k} ${x}`).join('')}`);
    for (const [h, v] of Object.entries(m.withoutHeaders ?? {})) bits.push(`without header ${h} ${Object.entries(v).map(([k, x]) => `${k} ${x}`).join('')}`);
    for (const [q, v] of Object.entries(m.queryParams ?? {})) bits.push(`query ${q} ${Object.entries(v).map(([k, x]) => `${k} ${x}`).join('')}`);
    return bits.join(' and ') || 'any';
  });
  parts.push(matches.length > 0 ? `match ${matches.join(' or ')}` : 'every request');
  if (http.redirect) parts.push(`redirect ${http.redirect.redirectCode ?? 301}${http.redirect.authority ? ` ${http.redirect.authority}` : ''}${http.redirect.uri ?? ''}`);
  else if (http.directResponse) parts.push(`answer ${http.directResponse.status}`);
  else parts.push(`-> ${(http.route ?? [{}]).map((d) => `${d.subset ?? rule.service}${d.weight !== undefined ? ` ${d.weight}%` : ''}`).join(', ')}`);
  const policies: string[] = [];
  if (http.rewrite) policies.push(`rewrite${http.rewrite.uri ? ` uri ${http.rewrite.uri}` : ''}${http.rewrite.authority ? ` authority ${http.rewrite.authority}` : ''}`);
  if (http.mirror) policies.push(`mirror ${http.mirror.subset ?? rule.service} ${http.mirror.percent ?? 100}%`);
  if (http.fault?.delay) policies.push(`delay ${http.fault.delay.fixedDelayMs} ms ${http.fault.delay.percent}%`);
  if (http.fault?.abort) policies.push(`abort ${http.fault.abort.httpStatus ?? `grpc ${http.fault.abort.grpcStatus}`} ${http.fault.abort.percent}%`);
  if (http.rateLimit) policies.push(`rate limit ${http.rateLimit.requestsPerSecond}/s`);
  if (http.timeoutMs !== undefined) policies.push(`timeout ${http.timeoutMs} ms`);
  if (http.retries) policies.push(`retries ${http.retries.attempts}`);
  if (http.headers) policies.push('header edits');
  return `${name}: ${parts.join(' ')}${policies.length > 0 ? `; ${policies.join(', ')}` : ''}`;
}
