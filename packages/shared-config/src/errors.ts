/** Exit codes every mesh-agent bin uses; `runMain` is the one place errors become these. */
export const EXIT_CODES = {
  ok: 0,
  failure: 1,
  /** bad command-line arguments or configuration */
  usage: 2,
  /** needs root, a capability or a missing system tool */
  permission: 3,
  /** `verify` found rules that differ from what should be there */
  verifyMismatch: 4,
  /** a component or dependency could not be reached */
  unavailable: 5,
} as const;

export interface MeshErrorOptions {
  hint?: string;
  exitCode?: number;
  cause?: unknown;
  details?: unknown;
}

/** An error a user can meet: a stable `code` to search for, a message saying what and where, a hint saying what to do. */
export class MeshError extends Error {
  readonly code: string;
  readonly exitCode: number;
  readonly hint?: string;
  readonly details?: unknown;

  constructor(code: string, message: string, opts: MeshErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'MeshError';
    this.code = code;
    this.exitCode = opts.exitCode ?? EXIT_CODES.failure;
    this.hint = opts.hint;
    this.details = opts.details;
  }
}

/** One problem found in a configuration: where (file, line, field path) and why. */
export interface ConfigIssue {
  file?: string;
  line?: number;
  /** dotted field path, e.g. `ports.dns` or `spec.services[0].name`; empty for the whole document */
  path: string;
  message: string;
}

export function formatConfigIssue(issue: ConfigIssue): string {
  const where = issue.file !== undefined ? [issue.file, issue.line].filter((part) => part !== undefined).join(':') : issue.line !== undefined ? `line ${issue.line}` : '';
  const field = issue.path === '' ? '(document)' : issue.path;
  return `${where ? `${where}: ` : ''}${field}: ${issue.message}`;
}

/** Every problem of one configuration at once, so a user fixes them in one pass. */
export class ConfigError extends MeshError {
  readonly issues: ConfigIssue[];

  /** `code` defaults to MESH_CONFIG_INVALID; the loader also uses MESH_CONFIG_UNREADABLE and MESH_CONFIG_SYNTAX. */
  constructor(issues: ConfigIssue[], opts: { source?: string; hint?: string; code?: string } = {}) {
    const head = `invalid configuration${opts.source ? ` in ${opts.source}` : ''}: ${issues.length} problem${issues.length === 1 ? '' : 's'}`;
    super(opts.code ?? 'MESH_CONFIG_INVALID', [head, ...issues.map((i) => `  - ${formatConfigIssue(i)}`)].join('\n'), {
      exitCode: EXIT_CODES.usage,
      hint: opts.hint ?? 'fix the fields listed above; the JSON Schemas in @mesh-agent/shared-config/schemas describe every field',
      details: issues,
    });
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

export function isMeshError(err: unknown): err is MeshError {
  return err instanceof MeshError || (typeof err === 'object' && err !== null && typeof (err as MeshError).code === 'string' && typeof (err as MeshError).exitCode === 'number');
}
