import { isIdempotentMethod, isRetriableOutcome, parseRetryPolicy, retryBackoffMs, type RetryPolicy, type RetryPolicyConfig, type TryOutcome } from './retry-policy';
import type { ClusterStatScope } from './types';

/**
 * The retry decision of one request for a callback-driven data plane (the
 * proxy's RouterFilter, src/router/router-filter.ts): after each failed try it says whether to try
 * again, after how long, and which flag to set when not (Envoy's router
 * retry state).
 */

/** The retry breaker as the cluster exposes it (CircuitBreakersSlot). */
export interface RetryBudget {
  tryAcquireRequest(isRetry: boolean): boolean;
  releaseRequest(isRetry: boolean): void;
}

export type RetryDecision =
  | { retry: true; backoffMs: number }
  /** flag: URX when the retries ran out, UO when the retry breaker was full */
  | { retry: false; flag?: 'URX' | 'UO' };

/** The schema's default for a retry policy without retryOn. */
export const DEFAULT_RETRY_ON = '5xx,connect-failure,reset';

const policyCache = new WeakMap<object, RetryPolicy | null>();

/**
 * The parsed policy of a route's config object, parsed once per config object.
 * An invalid policy (unknown retryOn token) disables retries for the route
 * rather than failing requests; `onInvalid` is told once.
 */
export function routeRetryPolicy(config: Partial<RetryPolicyConfig> | undefined, onInvalid?: (err: Error) => void): RetryPolicy | undefined {
  if (!config) return undefined;
  let p = policyCache.get(config);
  if (p === undefined) {
    try {
      p = parseRetryPolicy({ ...config, retryOn: config.retryOn ?? DEFAULT_RETRY_ON, numRetries: config.numRetries ?? 1 });
    } catch (err) {
      onInvalid?.(err as Error);
      p = null;
    }
    policyCache.set(config, p);
  }
  return p ?? undefined;
}

export class RequestRetryState {
  /** the try in progress, 1-based: the value of x-envoy-attempt-count */
  attempt = 1;
  private retryHeld = false;
  private mayRetry: boolean;

  constructor(
    readonly policy: RetryPolicy,
    method: string,
    /** the request has no body (or it is buffered): it can be sent again */
    replayable: boolean,
    private readonly budget: RetryBudget | undefined,
    private readonly stats: ClusterStatScope | undefined,
    private readonly random: () => number = Math.random,
  ) {
    this.mayRetry = policy.numRetries > 0 && replayable && (policy.retryNonIdempotent || isIdempotentMethod(method));
  }

  get perTryTimeoutMs(): number { return this.policy.perTryTimeoutMs; }

  /** The body outgrew what is kept for a re-send: no more retries for this request. */
  disableReplay(): void { this.mayRetry = false; }

  /** Called with each try's outcome (responses before their head is forwarded). */
  decide(outcome: TryOutcome): RetryDecision {
    this.releaseRetry();
    if (!isRetriableOutcome(this.policy, outcome)) {
      if (this.attempt > 1) this.stats?.counter('upstream_rq_retry_success').inc();
      return { retry: false };
    }
    if (!this.mayRetry) return { retry: false };
    if (this.attempt > this.policy.numRetries) {
      this.stats?.counter('upstream_rq_retry_limit_exceeded').inc();
      return { retry: false, flag: 'URX' };
    }
    if (this.budget) {
      if (!this.budget.tryAcquireRequest(true)) return { retry: false, flag: 'UO' };
      this.retryHeld = true;
    }
    this.stats?.counter('upstream_rq_retry').inc();
    this.stats?.counter('upstream_rq_retry_backoff_exponential').inc();
    const backoffMs = retryBackoffMs(this.policy, this.attempt, this.random);
    this.attempt++;
    return { retry: true, backoffMs };
  }

  /** The request is over: give back the retry slot it holds. */
  finish(): void { this.releaseRetry(); }

  private releaseRetry(): void {
    if (this.retryHeld) {
      this.retryHeld = false;
      this.budget?.releaseRequest(true);
    }
  }
}

/** Request bodies up to this size are kept so a retry can send them again (Envoy buffers for retries too). */
export const MAX_RETRY_BODY_BYTES = 64 * 1024;

const CLIENT_ATTEMPT_COUNT = /\r\nx-envoy-attempt-count:[^\r\n]*/gi;

/**
 * The upstream request head with `x-envoy-attempt-count: N` added (the head ends with an empty line);
 * a value the client sent is replaced, as Envoy does.
 */
export function withAttemptCountHeader(head: string, attempt: number): string {
  const base = /attempt-count:/i.test(head) ? head.replace(CLIENT_ATTEMPT_COUNT, '') : head;
  return `${base.slice(0, -2)}x-envoy-attempt-count: ${attempt}\r\n\r\n`;
}
