import type { Counter, StatsStore } from '../stats/store';

/**
 * Stats of the per-route filters (issue 16), under the listener's HTTP scope `http.<listener>.` as
 * Envoy keeps its HTTP filters' stats (tag envoy_http_conn_manager_prefix):
 *   fault.delays_injected, fault.aborts_injected          Envoy's HTTP fault filter
 *   http_local_rate_limit.{enabled,ok,rate_limited,enforced}  Envoy's local_ratelimit (vhost and route buckets together)
 *   rq_redirect, rq_direct_response                        Envoy's router
 *   shadow.{sent,failed,skipped_body}                      request mirroring (this proxy's names; the mirror
 *                                                          cluster's own upstream_rq_* count the copies as Envoy's do)
 */
export interface RouteStats {
  delays_injected: Counter;
  aborts_injected: Counter;
  rate_limit_enabled: Counter;
  rate_limit_ok: Counter;
  rate_limited: Counter;
  rate_limit_enforced: Counter;
  rq_redirect: Counter;
  rq_direct_response: Counter;
  shadow_sent: Counter;
  shadow_failed: Counter;
  shadow_skipped_body: Counter;
}

export function createRouteStats(store: StatsStore, listenerName: string): RouteStats {
  const c = (leaf: string) => store.counter('http.', listenerName, leaf);
  return {
    delays_injected: c('fault.delays_injected'),
    aborts_injected: c('fault.aborts_injected'),
    rate_limit_enabled: c('http_local_rate_limit.enabled'),
    rate_limit_ok: c('http_local_rate_limit.ok'),
    rate_limited: c('http_local_rate_limit.rate_limited'),
    rate_limit_enforced: c('http_local_rate_limit.enforced'),
    rq_redirect: c('rq_redirect'),
    rq_direct_response: c('rq_direct_response'),
    shadow_sent: c('shadow.sent'),
    shadow_failed: c('shadow.failed'),
    shadow_skipped_body: c('shadow.skipped_body'),
  };
}
