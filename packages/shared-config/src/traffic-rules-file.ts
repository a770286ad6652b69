import { ConfigError } from './errors';
import { parseConfig, parseConfigText } from './loader';
import { nameTrafficRulePath, trafficRulesFileSchema, type ServiceTrafficRule } from './schemas/traffic-rules';
import { parseDocument } from 'yaml';

/**
 * Parses a traffic rules document (`trafficRules: [...]`, or the bare list) from YAML or JSON text;
 * one ConfigError lists every problem, with paths that name the service and the rule
 * (`trafficRules[order].http[beta-users].route[1].subset`) and line numbers.
 */
export function parseTrafficRulesText(text: string, source?: string): ServiceTrafficRule[] {
  let raw: unknown;
  try {
    raw = parseDocument(text, { logLevel: 'error' }).toJS({ maxAliasCount: 100 });
  } catch {
    raw = undefined;
  }
  if (Array.isArray(raw)) return parseTrafficRules(raw, { source, text });
  try {
    return parseConfigText(trafficRulesFileSchema, text, { source }).trafficRules;
  } catch (err) {
    throw namedPaths(err, (raw as { trafficRules?: unknown } | undefined)?.trafficRules);
  }
}

/** Validates an in-memory rule list (an etcd value, a parsed file); paths as parseTrafficRulesText's. */
export function parseTrafficRules(value: unknown, opts: { source?: string; text?: string } = {}): ServiceTrafficRule[] {
  try {
    return parseConfig(trafficRulesFileSchema, { trafficRules: value }, opts).trafficRules;
  } catch (err) {
    throw namedPaths(err, value);
  }
}

function namedPaths(err: unknown, raw: unknown): unknown {
  if (!(err instanceof ConfigError)) return err;
  const issues = err.issues.map((issue) => ({ ...issue, path: nameTrafficRulePath(issue.path, raw) }));
  return new ConfigError(issues, { code: err.code, hint: err.hint, source: issues[0]?.file });
}
