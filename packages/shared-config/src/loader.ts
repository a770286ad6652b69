import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument } from 'yaml';
import type { ZodType, core } from 'zod';
import { formatConfigPath } from './config-path';
import { applyEnvOverrides, envBindingsFor, type AppliedEnvOverride, type EnvBinding } from './env-overrides';
import { ConfigError, type ConfigIssue } from './errors';
import { closestKey, knownKeysAt } from './known-keys';
import { createLineLocator, type LineLocator } from './source-locations';

export interface ParseConfigOptions {
  /** Where the value came from (a file name), shown in every issue. */
  source?: string;
  /** The text the value was parsed from: issues then carry line numbers. */
  text?: string;
  /** Environment whose documented variables override fields; default none for parseConfig. */
  env?: NodeJS.ProcessEnv;
  /** The variables to honour; default those registered for the schema (AGENT_ENV_BINDINGS for agentConfigSchema). */
  envBindings?: readonly EnvBinding[];
  /** Where `value` sits inside the document of `text` (e.g. ['global']): issue paths and lines include it. */
  basePath?: readonly (string | number)[];
}

export interface LoadConfigOptions {
  /** Default `process.env`; pass `{}` to ignore the environment. */
  env?: NodeJS.ProcessEnv;
  envBindings?: readonly EnvBinding[];
  /** A missing file counts as an empty one (all defaults, env overrides still apply). */
  optional?: boolean;
}

/** Reads a YAML or JSON file, applies defaults and env overrides, validates; one ConfigError lists every problem. */
export function loadConfigFile<T>(schema: ZodType<T>, file: string, opts: LoadConfigOptions = {}): T {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && opts.optional) text = '';
    else {
      const reason = code === 'ENOENT' ? 'file not found' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory, not a file' : (err as Error).message;
      throw new ConfigError([{ file, path: '', message: `cannot read the configuration: ${reason}` }], {
        code: 'MESH_CONFIG_UNREADABLE',
        hint: 'check the path given with --config (or the default path) and its permissions',
      });
    }
  }
  return parseConfigText(schema, text, { source: file, env: opts.env ?? process.env, envBindings: opts.envBindings });
}

/** Parses YAML or JSON text (JSON is YAML), then validates it as `parseConfig` does. An empty text is `{}`. */
export function parseConfigText<T>(schema: ZodType<T>, text: string, opts: Omit<ParseConfigOptions, 'text'> = {}): T {
  const lineCounter = new LineCounter();
  // logLevel 'error': odd keys become issues of their own instead of process warnings
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true, logLevel: 'error' });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((error) => ({
        file: opts.source,
        line: error.linePos?.[0].line,
        path: '',
        message: `syntax error: ${describeSyntaxError(error.message)}`,
      })),
      { code: 'MESH_CONFIG_SYNTAX', source: opts.source, hint: 'the file must be valid YAML or JSON' },
    );
  }
  let value: unknown;
  try {
    // maxAliasCount bounds "billion laughs" documents
    value = doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (err) {
    throw new ConfigError([{ file: opts.source, path: '', message: `cannot resolve the document: ${(err as Error).message}` }], {
      code: 'MESH_CONFIG_SYNTAX',
      source: opts.source,
      hint: 'the file must be valid YAML or JSON; check its anchors (&name) and aliases (*name)',
    });
  }
  return validate(schema, value, opts, createLineLocator(doc, lineCounter));
}

/** Validates an in-memory value (defaults applied); with `text`, issues carry line numbers. */
export function parseConfig<T>(schema: ZodType<T>, value: unknown, opts: ParseConfigOptions = {}): T {
  let locator: LineLocator | undefined;
  if (opts.text !== undefined) {
    const lineCounter = new LineCounter();
    const doc = parseDocument(opts.text, { lineCounter });
    if (doc.errors.length === 0) locator = createLineLocator(doc, lineCounter);
  }
  return validate(schema, structuredCloneIfPossible(value), opts, locator);
}

function validate<T>(schema: ZodType<T>, input: unknown, opts: ParseConfigOptions, locator: LineLocator | undefined): T {
  const bindings = opts.envBindings ?? envBindingsFor(schema);
  const { value, applied } = opts.env ? applyEnvOverrides(input, bindings, opts.env) : { value: input, applied: [] };
  const result = schema.safeParse(value, { reportInput: true });
  if (result.success) return result.data;
  const issues = result.error.issues.flatMap((issue) => toConfigIssues(schema, issue, { file: opts.source, basePath: opts.basePath ?? [], locator, applied }));
  throw new ConfigError(dedupe(issues).sort(byLine), { source: opts.source });
}

interface IssueContext {
  file: string | undefined;
  /** where the validated value sits in the document */
  basePath: readonly PropertyKey[];
  locator: LineLocator | undefined;
  applied: AppliedEnvOverride[];
}

function toConfigIssues(schema: ZodType, issue: core.$ZodIssue, { file, basePath, locator, applied }: IssueContext): ConfigIssue[] {
  const at = (path: PropertyKey[], describe: (fromEnv: boolean) => string): ConfigIssue => {
    const fullPath = [...basePath, ...path];
    const fromEnv = applied.find((o) => o.binding.path.length <= path.length && o.binding.path.every((key, i) => key === path[i]));
    if (fromEnv) {
      const source = `(from environment variable ${fromEnv.binding.name}=${JSON.stringify(fromEnv.raw)})`;
      return { file, path: formatConfigPath(fullPath), message: `${describe(true)} ${source}` };
    }
    return { file, line: locator?.lineOf(fullPath), path: formatConfigPath(fullPath), message: describe(false) };
  };
  if (issue.code === 'unrecognized_keys') {
    const known = knownKeysAt(schema, issue.path);
    return issue.keys.map((key) => {
      const suggestion = closestKey(key, known);
      const expected = known.length > 0 && known.length <= 12 ? `; known fields: ${known.join(', ')}` : '';
      return at([...issue.path, key], () => `unknown field${suggestion ? ` (did you mean "${suggestion}"?)` : expected}`);
    });
  }
  return [at(issue.path, (fromEnv) => describeIssue(issue, fromEnv))];
}

/** The reason, in words; `fromEnv` leaves out the found value, as the variable's text is shown instead. */
function describeIssue(issue: core.$ZodIssue, fromEnv: boolean): string {
  const message = issue.message.replace(/^Invalid input: /, '');
  if (issue.code === 'invalid_type' && 'input' in issue) {
    if (issue.input === undefined) return 'required field is missing';
    // a custom message says what is expected; add what was found (e.g. a quoted number)
    return /received/.test(message) || fromEnv ? message : `${message}, got ${describeValue(issue.input)}`;
  }
  if (issue.code === 'invalid_key') {
    const inner = issue.issues.map((i) => i.message.replace(/^Invalid input: /, '')).join('; ');
    return `invalid key${'input' in issue ? ` ${JSON.stringify(issue.input)}` : ''}: ${inner}`;
  }
  return message;
}

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'string') return `the string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value)}`;
  if (typeof value === 'object') return 'a mapping';
  return `${typeof value} ${String(value)}`;
}

function dedupe(issues: ConfigIssue[]): ConfigIssue[] {
  const seen = new Set<string>();
  return issues.filter((issue) => {
    const key = `${issue.path}\u0000${issue.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** yaml's first message line without its trailing "at line N, column M:" (the line is reported apart). */
function describeSyntaxError(message: string): string {
  const first = message.split('\n')[0].trim();
  const match = /^(.*?)\s+at line \d+, column (\d+):?$/.exec(first);
  return match ? `${match[1]} (column ${match[2]})` : first;
}

/** File order: issues with a line first, by line; the rest (environment, whole document) after. */
function byLine(a: ConfigIssue, b: ConfigIssue): number {
  return (a.line ?? Number.MAX_SAFE_INTEGER) - (b.line ?? Number.MAX_SAFE_INTEGER);
}

/** Env overrides write into the value; never into the caller's object. */
function structuredCloneIfPossible(value: unknown): unknown {
  try {
    return structuredClone(value);
  } catch {
    return value;
  }
}
