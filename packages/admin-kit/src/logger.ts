import pino from 'pino';
import { EXIT_CODES, MeshError } from '@mesh-agent/shared-config';

/** The levels every scope takes, as in pilot-agent's `/logging/{scope}/{level}`; `none` silences a scope. */
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'none'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LoggerOptions {
  /** written on every line as `component` */
  component: string;
  /** the scopes the component logs under, e.g. pilot-agent's healthz, admin, ads, default, model */
  scopes: string[];
  /** the starting level of every scope; default `info` */
  level?: LogLevel;
  /** a stream, a file path (appended to, created if missing) or a file descriptor; default stdout */
  destination?: NodeJS.WritableStream | string | number;
}

export interface MeshLogger {
  /** the pino logger of a scope; every line carries `scope` */
  scope(name: string): pino.Logger;
  /** changes a scope's level; the next log call already obeys it */
  setLevel(scope: string, level: LogLevel): void;
  levels(): Record<string, LogLevel>;
  readonly scopes: string[];
  readonly component: string;
  /** writes out anything buffered (file destinations are written synchronously; this is for streams) */
  flush(): void;
}

const PINO_LEVEL: Record<LogLevel, pino.LevelWithSilent> = {
  debug: 'debug',
  info: 'info',
  warn: 'warn',
  error: 'error',
  none: 'silent',
};

export function isLogLevel(value: string): value is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

/**
 * A structured (pino, JSON lines) logger whose scopes each have their own level. Each scope is a
 * pino child logger; a child's level is independent of its parent's, so a change applies at once
 * and to that scope only.
 */
export function createLogger(opts: LoggerOptions): MeshLogger {
  const scopes = [...opts.scopes];
  if (scopes.length === 0) {
    throw new MeshError('MESH_LOG_NO_SCOPES', `logger of ${opts.component} has no scopes`, {
      hint: 'pass at least one scope, e.g. scopes: ["default"]',
      exitCode: EXIT_CODES.usage,
    });
  }
  const initial = opts.level ?? 'info';
  assertLevel(initial);

  const root = pino(
    {
      level: 'debug',
      base: { component: opts.component },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    toDestination(opts.destination),
  );

  const children = new Map<string, pino.Logger>();
  const current = new Map<string, LogLevel>();
  for (const name of scopes) {
    const child = root.child({ scope: name });
    child.level = PINO_LEVEL[initial];
    children.set(name, child);
    current.set(name, initial);
  }

  function known(name: string): pino.Logger {
    const child = children.get(name);
    if (!child) {
      throw new MeshError('MESH_LOG_UNKNOWN_SCOPE', `unknown logging scope "${name}" of ${opts.component}: valid scopes are ${scopes.join(', ')}`, {
        hint: `use one of: ${scopes.join(', ')}`,
        exitCode: EXIT_CODES.usage,
      });
    }
    return child;
  }

  return {
    component: opts.component,
    get scopes() {
      return [...scopes];
    },
    scope: known,
    setLevel(name, level) {
      const child = known(name);
      assertLevel(level);
      child.level = PINO_LEVEL[level];
      current.set(name, level);
    },
    levels() {
      return Object.fromEntries(scopes.map((name) => [name, current.get(name) as LogLevel]));
    },
    flush() {
      root.flush();
    },
  };
}

function assertLevel(level: string): asserts level is LogLevel {
  if (!isLogLevel(level)) {
    throw new MeshError('MESH_LOG_UNKNOWN_LEVEL', `unknown logging level "${level}": valid levels are ${LOG_LEVELS.join(', ')}`, {
      hint: `use one of: ${LOG_LEVELS.join(', ')}`,
      exitCode: EXIT_CODES.usage,
    });
  }
}

function toDestination(destination: LoggerOptions['destination']): pino.DestinationStream {
  if (destination === undefined) return pino.destination({ dest: 1, sync: true });
  if (typeof destination === 'number') return pino.destination({ dest: destination, sync: true });
  if (typeof destination === 'string') return pino.destination({ dest: destination, sync: true, mkdir: true, append: true });
  return destination as unknown as pino.DestinationStream;
}
