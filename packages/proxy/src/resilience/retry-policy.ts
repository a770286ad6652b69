import { MeshError, EXIT_CODES, RETRY_ON_WORDS } from '@mesh-agent/shared-config';

/**
 * Envoy's route retry policy: which failures are retried (`retry_on`), how many
 * times, the per-try timeout and the back-off between tries.
 */

/** The schema's list (shared-config validates the config with it): one list for both. */
export const RETRY_ON_CONDITIONS = RETRY_ON_WORDS;
export type RetryOnCondition = (typeof RETRY_ON_CONDITIONS)[number];

/** Envoy's gRPC retry_on words by the grpc-status they retry (x-envoy-retry-grpc-on). */
const GRPC_RETRY_ON: Partial<Record<number, RetryOnCondition>> = { 1: 'cancelled', 4: 'deadline-exceeded', 8: 'resource-exhausted', 13: 'internal', 14: 'unavailable' };

/** Envoy's back-off defaults: 25 ms base, capped at 10 × base. */
export const DEFAULT_RETRY_BASE_INTERVAL_MS = 25;

/** RFC 9110 idempotent methods: safe to send twice. */
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

export interface RetryPolicyConfig {
  /** Comma-separated Envoy conditions, e.g. `5xx,connect-failure,reset`. */
  retryOn: string;
  /** Retries after the first try (Envoy's default 1). */
  numRetries?: number;
  /** Timeout of each try; 0 = only the route timeout applies. */
  perTryTimeoutMs?: number;
  /** Back-off base interval (ms); jittered, exponential, capped at maxIntervalMs. */
  baseIntervalMs?: number;
  maxIntervalMs?: number;
  /** Retry also POST/PATCH/... (the route says the service tolerates duplicates). */
  retryNonIdempotent?: boolean;
  /** Statuses retried under `retriable-status-codes`. */
  retriableStatusCodes?: readonly number[];
}

export interface RetryPolicy {
  readonly retryOn: ReadonlySet<RetryOnCondition>;
  readonly numRetries: number;
  readonly perTryTimeoutMs: number;
  readonly baseIntervalMs: number;
  readonly maxIntervalMs: number;
  readonly retryNonIdempotent: boolean;
  readonly retriableStatusCodes: ReadonlySet<number>;
}

/** How one try ended, as the retry decision and the outlier detector see it. */
export type TryOutcome =
  /** `grpcStatus`: the grpc-status in the response headers (a trailers-only gRPC response), if any */
  | { kind: 'response'; status: number; grpcStatus?: number }
  | { kind: 'connect-failure' }
  /** connection closed or reset before the response headers */
  | { kind: 'reset' }
  /** the per-try timeout fired */
  | { kind: 'timeout' }
  /** HTTP/2 REFUSED_STREAM, or a reused keep-alive connection closed before any byte was sent back */
  | { kind: 'refused-stream' };

/** Parses and checks a route's retry policy; `where` names the config field for the error. */
export function parseRetryPolicy(config: RetryPolicyConfig, where = 'retryPolicy'): RetryPolicy {
  const tokens = config.retryOn.split(',').map((t) => t.trim()).filter((t) => t.length > 0);
  const unknown = tokens.filter((t) => !(RETRY_ON_CONDITIONS as readonly string[]).includes(t));
  if (unknown.length > 0) {
    throw new MeshError('MESH_PROXY_RETRY_POLICY_INVALID', `${where}.retryOn: unknown condition${unknown.length > 1 ? 's' : ''} ${unknown.map((u) => `"${u}"`).join(', ')}`, {
      exitCode: EXIT_CODES.usage,
      hint: `use a comma-separated list of: ${RETRY_ON_CONDITIONS.join(', ')}`,
    });
  }
  const numRetries = config.numRetries ?? 1;
  const perTryTimeoutMs = config.perTryTimeoutMs ?? 0;
  const baseIntervalMs = config.baseIntervalMs ?? DEFAULT_RETRY_BASE_INTERVAL_MS;
  const maxIntervalMs = config.maxIntervalMs ?? baseIntervalMs * 10;
  for (const [field, value] of [['numRetries', numRetries], ['perTryTimeoutMs', perTryTimeoutMs], ['baseIntervalMs', baseIntervalMs], ['maxIntervalMs', maxIntervalMs]] as const) {
    if (!Number.isInteger(value) || value < 0) {
      throw new MeshError('MESH_PROXY_RETRY_POLICY_INVALID', `${where}.${field}: must be a non-negative integer, got ${String(value)}`, { exitCode: EXIT_CODES.usage });
    }
  }
  if (maxIntervalMs < baseIntervalMs) {
    throw new MeshError('MESH_PROXY_RETRY_POLICY_INVALID', `${where}.maxIntervalMs (${maxIntervalMs}) is below baseIntervalMs (${baseIntervalMs})`, { exitCode: EXIT_CODES.usage, hint: 'raise maxIntervalMs or leave it out (default 10 × base)' });
  }
  return {
    retryOn: new Set(tokens as RetryOnCondition[]),
    numRetries,
    perTryTimeoutMs,
    baseIntervalMs,
    maxIntervalMs,
    retryNonIdempotent: config.retryNonIdempotent ?? false,
    retriableStatusCodes: new Set(config.retriableStatusCodes ?? []),
  };
}

export function isIdempotentMethod(method: string): boolean {
  return IDEMPOTENT_METHODS.has(method.toUpperCase());
}

/** Whether `outcome` is retriable under the policy's `retry_on` (Envoy's meanings). */
export function isRetriableOutcome(policy: RetryPolicy, outcome: TryOutcome): boolean {
  const on = policy.retryOn;
  switch (outcome.kind) {
    case 'response': {
      const s = outcome.status;
      if (on.has('5xx') && s >= 500 && s <= 599) return true;
      if (on.has('gateway-error') && (s === 502 || s === 503 || s === 504)) return true;
      if (on.has('retriable-4xx') && s === 409) return true;
      if (on.has('retriable-status-codes') && policy.retriableStatusCodes.has(s)) return true;
      const g = outcome.grpcStatus;
      if (g !== undefined) {
        const word = GRPC_RETRY_ON[g];
        if (word !== undefined && on.has(word)) return true;
      }
      return false;
    }
    // 5xx includes connect failures, resets and refused streams ("no response at all").
    case 'connect-failure': return on.has('5xx') || on.has('gateway-error') || on.has('connect-failure');
    case 'reset': return on.has('5xx') || on.has('reset');
    // A per-try timeout is answered as 504, so the 5xx-family conditions and reset cover it.
    case 'timeout': return on.has('5xx') || on.has('gateway-error') || on.has('reset');
    case 'refused-stream': return on.has('5xx') || on.has('refused-stream') || on.has('reset');
  }
}

/**
 * Envoy's fully jittered exponential back-off: before retry N (1-based) wait a
 * random time in [0, (2^N - 1) × base], capped at the max interval.
 */
export function retryBackoffMs(policy: Pick<RetryPolicy, 'baseIntervalMs' | 'maxIntervalMs'>, retryNumber: number, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxIntervalMs, (2 ** Math.min(retryNumber, 30) - 1) * policy.baseIntervalMs);
  return Math.floor(random() * (ceiling + 1));
}
