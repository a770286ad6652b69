// `mesh-agent rules validate|apply|get`: the operator's traffic rules (docs/traffic-rules.md).
// apply validates the whole file first, then writes every service's rule under
// <prefix>rules/<namespace>/<service> in one etcd transaction: nothing is half-applied.
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { Etcd3 } from 'etcd3';
import { ConfigError, EXIT_CODES, MeshError, parseTrafficRulesText, type ServiceTrafficRule } from '@mesh-agent/shared-config';
import { trafficRuleKey } from './registry/etcd-registry';
import { describeHttpRule, type RuleInForce } from './traffic-rules';

export const RULES_USAGE = `Usage: mesh-agent rules validate FILE
       mesh-agent rules apply FILE --etcd URL[,URL...] [--prefix /mesh-agent/]
       mesh-agent rules get [--admin URL] [--json]

  validate   check a traffic rules file (trafficRules: [...]); exit 0 when valid, 2 naming every problem
  apply      validate, then write each service's rule to <prefix>rules/<namespace>/<service> in one
             etcd transaction; every agent watching that etcd applies them without a restart
  get        print the rules in force on this host (the agent's GET /rules) and where each came from`;

type Out = { write(text: string): unknown };

function usageError(message: string): MeshError {
  return new MeshError('MESH_AGENT_USAGE', message, { exitCode: EXIT_CODES.usage, hint: 'run mesh-agent rules --help' });
}

function parse(argv: string[], options: Record<string, { type: 'string' | 'boolean' }>): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (err) {
    throw usageError((err as Error).message);
  }
}

/** Reads and validates a rules file; every problem at once, naming the file, line, service, rule and field. */
export function readRulesFile(file: string): ServiceTrafficRule[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError([{ file, path: '', message: `cannot read the rules file: ${code === 'ENOENT' ? 'file not found' : (err as Error).message}` }], { code: 'MESH_CONFIG_UNREADABLE' });
  }
  return parseTrafficRulesText(text, file);
}

function summary(rules: ServiceTrafficRule[]): string[] {
  return rules.map((rule) => {
    const subsets = rule.subsets.length > 0 ? `subsets ${rule.subsets.map((s) => s.name).join(', ')}` : 'no subsets';
    return `  ${rule.namespace}/${rule.service}: ${rule.http.length} rule${rule.http.length === 1 ? '' : 's'}, ${subsets}${rule.rateLimit ? `, rate limit ${rule.rateLimit.requestsPerSecond}/s` : ''}`;
  });
}

/** Writes every rule in one transaction; resolves with the etcd revision. */
export async function applyRules(rules: ServiceTrafficRule[], opts: { endpoints: string[]; prefix: string; timeoutMs?: number }): Promise<{ revision: string; keys: string[] }> {
  const client = new Etcd3({ hosts: opts.endpoints, dialTimeout: opts.timeoutMs ?? 3000, defaultCallOptions: () => ({ deadline: Date.now() + (opts.timeoutMs ?? 3000) }) });
  const keys = rules.map((rule) => trafficRuleKey(opts.prefix, rule.namespace, rule.service));
  try {
    // one transaction without conditions: etcd applies every put or none
    const result = await client.kv.txn({ compare: [], success: rules.map((rule, i) => ({ request_put: { key: Buffer.from(keys[i]), value: Buffer.from(JSON.stringify(rule)) } })), failure: [] });
    return { revision: String(result.header.revision), keys };
  } catch (err) {
    throw new MeshError('MESH_AGENT_REGISTRY_UNREACHABLE', `cannot write the rules to etcd at ${opts.endpoints.join(', ')}: ${(err as Error).message}; nothing was written`, {
      exitCode: EXIT_CODES.unavailable,
      hint: 'check that etcd runs there (etcdctl --endpoints=... endpoint health)',
      cause: err,
    });
  } finally {
    client.close();
  }
}

export async function runRulesCommand(argv: string[], out: Out = process.stdout): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    out.write(`${RULES_USAGE}\n`);
    return sub === undefined ? EXIT_CODES.usage : EXIT_CODES.ok;
  }
  if (sub === 'validate') {
    const { positionals, values } = parse(rest, {});
    if (values.help) return out.write(`${RULES_USAGE}\n`), EXIT_CODES.ok;
    if (positionals.length !== 1) throw usageError('rules validate takes exactly one FILE');
    const rules = readRulesFile(positionals[0]);
    out.write([`${positionals[0]}: valid, ${rules.length} service${rules.length === 1 ? '' : 's'}`, ...summary(rules)].join('\n') + '\n');
    return EXIT_CODES.ok;
  }
  if (sub === 'apply') {
    const { positionals, values } = parse(rest, { etcd: { type: 'string' }, prefix: { type: 'string' } });
    if (values.help) return out.write(`${RULES_USAGE}\n`), EXIT_CODES.ok;
    if (positionals.length !== 1) throw usageError('rules apply takes exactly one FILE');
    if (!values.etcd) throw usageError('rules apply needs --etcd URL[,URL...] (the registry the agents watch)');
    const endpoints = String(values.etcd).split(',').map((u) => u.trim()).filter(Boolean);
    for (const url of endpoints) if (!/^https?:\/\/[^/]+/.test(url)) throw usageError(`--etcd: "${url}" is not an http(s) URL such as http://127.0.0.1:2379`);
    const prefix = (values.prefix as string | undefined) ?? '/mesh-agent/';
    if (!prefix.startsWith('/')) throw usageError('--prefix: an etcd key prefix starts with "/"');
    const rules = readRulesFile(positionals[0]);
    if (rules.length === 0) {
      out.write(`${positionals[0]}: no rules; nothing written\n`);
      return EXIT_CODES.ok;
    }
    const { revision, keys } = await applyRules(rules, { endpoints, prefix });
    out.write([`applied ${rules.length} service rule${rules.length === 1 ? '' : 's'} in one transaction (etcd revision ${revision}):`, ...keys.map((k) => `  ${k}`)].join('\n') + '\n');
    return EXIT_CODES.ok;
  }
  if (sub === 'get') {
    const { values } = parse(rest, { admin: { type: 'string' }, json: { type: 'boolean' } });
    if (values.help) return out.write(`${RULES_USAGE}\n`), EXIT_CODES.ok;
    const admin = (values.admin as string | undefined) ?? 'http://127.0.0.1:15020';
    let body: { rules: RuleInForce[] };
    try {
      const res = await fetch(`${admin}/rules`, { signal: AbortSignal.timeout(5000) });
      if (!res.ok) throw new Error(`HTTP ${res.status}: ${(await res.text()).trim()}`);
      body = (await res.json()) as { rules: RuleInForce[] };
    } catch (err) {
      throw new MeshError('MESH_AGENT_UNREACHABLE', `cannot read the rules from the agent at ${admin}/rules: ${(err as Error).message}`, { exitCode: EXIT_CODES.unavailable, hint: 'is the agent running? give its admin URL with --admin' });
    }
    if (values.json) {
      out.write(`${JSON.stringify(body, null, 2)}\n`);
      return EXIT_CODES.ok;
    }
    if (body.rules.length === 0) out.write('no traffic rules in force\n');
    for (const entry of body.rules) {
      out.write(`${entry.namespace}/${entry.service} (from ${entry.source})\n`);
      for (const s of entry.subsets) out.write(`  subset ${s.name} ${Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(',')}: ${s.healthy}/${s.instances} healthy\n`);
      if (entry.rule.rateLimit) out.write(`  rate limit ${entry.rule.rateLimit.requestsPerSecond}/s for the whole service\n`);
      entry.rule.http.forEach((_h, i) => out.write(`  ${describeHttpRule(entry.rule, i)}\n`));
    }
    return EXIT_CODES.ok;
  }
  throw usageError(`unknown rules command "${sub}": use validate, apply or get`);
}
