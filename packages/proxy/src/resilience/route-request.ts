import type { CircuitBreakers, Release, RoutingPriority } from './circuit-breakers';
import { isIdempotentMethod, isRetriableOutcome, retryBackoffMs, type RetryPolicy, type TryOutcome } from './retry-policy';
import type { ClusterStatScope, ResilienceHost } from './types';
import { unrefTimer } from './types';

/**
 * The router's upstream request with Envoy's resilience semantics: the request
 * (max_requests) breaker, the route timeout (504, flag UT), per-try timeouts,
 * retries with back-off on a different host where one exists (flag URX when the
 * retries run out), the retry breaker, and outlier detection fed with each try's
 * result. The data plane supplies how to pick a host and how to send one try.
 */

/** Envoy's response flags this module sets. */
export type ResilienceResponseFlag = 'UT' | 'URX' | 'UO' | 'UF' | 'UH' | 'UC' | 'UR';

/** The header Envoy adds to each try when `include_request_attempt_count` is on. */
export const ATTEMPT_COUNT_HEADER = 'x-envoy-attempt-count';

export interface UpstreamTry<H> {
  host: H;
  /** 1 for the first try; send it as `x-envoy-attempt-count` */
  attemptCount: number;
  /** aborted when this try is abandoned (per-try or route timeout): release its connection */
  signal: AbortSignal;
}

/** The result of one try as the data plane reports it. */
export type SendResult =
  | (TryOutcome & { /** frees a response the router will not forward (it is retried) */ discard?: () => void })
  /** the connection pool is full (max_connections and max_pending_requests): fail at once with UO */
  | { kind: 'overflow'; discard?: undefined };

export interface RouteRequestOptions<H extends ResilienceHost> {
  method: string;
  /** the request body can be sent again (empty or fully buffered); otherwise no retry */
  replayable: boolean;
  /** the route timeout; 0 = none */
  routeTimeoutMs: number;
  retryPolicy?: RetryPolicy;
  priority?: RoutingPriority;
  breakers?: CircuitBreakers;
  outlier?: { recordOutcome(host: H, outcome: TryOutcome): void };
  stats?: ClusterStatScope;
  /** the next host; `tried` lists hosts already used, to avoid where another exists. undefined = none (UH) */
  chooseHost(tried: readonly H[]): H | undefined;
  send(t: UpstreamTry<H>): Promise<SendResult>;
  /** for tests; defaults to Math.random */
  random?: () => number;
}

export interface RouteRequestResult<H> {
  /** 'response': forward the upstream response in `outcome`; 'local-reply': send `status` and `body` */
  kind: 'response' | 'local-reply';
  status: number;
  body?: string;
  host?: H;
  outcome?: SendResult;
  attempts: number;
  /** live: gains 'UT' if the route timeout fires while the response streams */
  responseFlags: ResilienceResponseFlag[];
  /** aborted when the route timeout fires after the response was handed over: reset the downstream */
  signal: AbortSignal;
  /** call when the response is complete (or abandoned): stops the route timer, releases the request breaker */
  finish(): void;
}

export const LOCAL_REPLY_BODY: Record<'UH' | 'UF' | 'UC' | 'UO' | 'UT' | 'UR', string> = {
  UH: 'no healthy upstream',
  UF: 'upstream connect error or disconnect/reset before headers. reset reason: connection failure',
  UC: 'upstream connect error or disconnect/reset before headers. reset reason: connection termination',
  UR: 'upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset',
  UO: 'upstream connect error or disconnect/reset before headers. reset reason: overflow',
  UT: 'upstream request timeout',
};

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted || ms <= 0) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

const NEVER = new Promise<never>(() => {});

export async function routeUpstreamRequest<H extends ResilienceHost>(opts: RouteRequestOptions<H>): Promise<RouteRequestResult<H>> {
  const { stats, breakers, retryPolicy: policy } = opts;
  const priority = opts.priority ?? 'default';
  const flags: ResilienceResponseFlag[] = [];
  const routeAbort = new AbortController();
  let committed = false;
  let routeTimer: NodeJS.Timeout | undefined;
  let finished = false;
  let releaseRequest: Release | null = null;

  const finish = () => {
    if (finished) return;
    finished = true;
    if (routeTimer) clearTimeout(routeTimer);
    releaseRequest?.();
  };
  const localReply = (flag: 'UH' | 'UF' | 'UC' | 'UO' | 'UT' | 'UR', attempts: number, host?: H): RouteRequestResult<H> => {
    finish();
    if (!flags.includes(flag)) flags.push(flag);
    return { kind: 'local-reply', status: flag === 'UT' ? 504 : 503, body: LOCAL_REPLY_BODY[flag], host, attempts, responseFlags: flags, signal: routeAbort.signal, finish };
  };

  if (breakers) {
    releaseRequest = breakers.tryRequest(priority);
    if (!releaseRequest) return localReply('UO', 0);
  }

  const routeTimedOut: Promise<'route-timeout'> = opts.routeTimeoutMs > 0
    ? new Promise((resolve) => {
      routeTimer = unrefTimer(() => {
        stats?.counter('upstream_rq_timeout').inc();
        if (committed && !flags.includes('UT')) flags.push('UT');
        routeAbort.abort();
        resolve('route-timeout');
      }, opts.routeTimeoutMs);
    })
    : NEVER;

  const mayRetry = policy !== undefined && policy.numRetries > 0 && opts.replayable && (policy.retryNonIdempotent || isIdempotentMethod(opts.method));
  const tried: H[] = [];
  let retryRelease: Release | null = null;

  for (let attempt = 1; ; attempt++) {
    const host = opts.chooseHost(tried);
    if (!host) {
      retryRelease?.();
      return localReply('UH', attempt - 1);
    }
    tried.push(host);
    const tryAbort = new AbortController();
    const onRouteAbort = () => tryAbort.abort();
    routeAbort.signal.addEventListener('abort', onRouteAbort, { once: true });
    let tryTimer: NodeJS.Timeout | undefined;
    const tryTimedOut: Promise<'try-timeout'> = policy && policy.perTryTimeoutMs > 0
      ? new Promise((resolve) => { tryTimer = unrefTimer(() => resolve('try-timeout'), policy.perTryTimeoutMs); })
      : NEVER;

    const sent = opts.send({ host, attemptCount: attempt, signal: tryAbort.signal });
    const raced = await Promise.race([sent.catch((): SendResult => ({ kind: 'reset' })), tryTimedOut, routeTimedOut]);
    if (tryTimer) clearTimeout(tryTimer);
    routeAbort.signal.removeEventListener('abort', onRouteAbort);
    retryRelease?.();
    retryRelease = null;

    const abandon = () => {
      tryAbort.abort();
      sent.then((late) => late.discard?.(), () => {});
    };
    if (raced === 'route-timeout') {
      abandon();
      host.stats.rq_timeout++;
      opts.outlier?.recordOutcome(host, { kind: 'timeout' });
      return localReply('UT', attempt, host);
    }
    let outcome: SendResult;
    if (raced === 'try-timeout') {
      abandon();
      stats?.counter('upstream_rq_per_try_timeout').inc();
      host.stats.rq_timeout++;
      outcome = { kind: 'timeout' };
    } else {
      outcome = raced;
    }
    if (outcome.kind === 'overflow') return localReply('UO', attempt, host);
    opts.outlier?.recordOutcome(host, outcome);

    const retriable = policy !== undefined && isRetriableOutcome(policy, outcome);
    if (retriable && mayRetry) {
      if (attempt > policy.numRetries) {
        stats?.counter('upstream_rq_retry_limit_exceeded').inc();
        flags.push('URX');
      } else {
        const rr = breakers ? breakers.tryRetry(priority) : () => {};
        if (!rr) {
          flags.push('UO');
        } else {
          retryRelease = rr;
          outcome.discard?.();
          stats?.counter('upstream_rq_retry').inc();
          stats?.counter('upstream_rq_retry_backoff_exponential').inc();
          await abortableSleep(retryBackoffMs(policy, attempt, opts.random), routeAbort.signal);
          if (routeAbort.signal.aborted) {
            retryRelease();
            return localReply('UT', attempt, host);
          }
          continue;
        }
      }
    } else if (attempt > 1) {
      stats?.counter('upstream_rq_retry_success').inc();
    }

    switch (outcome.kind) {
      case 'response':
        committed = true;
        return { kind: 'response', status: outcome.status, host, outcome, attempts: attempt, responseFlags: flags, signal: routeAbort.signal, finish };
      case 'connect-failure': return localReply('UF', attempt, host);
      case 'reset': return localReply('UC', attempt, host);
      case 'refused-stream': return localReply('UR', attempt, host);
      case 'timeout': return localReply('UT', attempt, host);
    }
  }
}
