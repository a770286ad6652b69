/** Envoy's %RESPONSE_FLAGS% short names used by this proxy. */
export const ResponseFlag = {
  NoHealthyUpstream: 'UH',
  UpstreamConnectionFailure: 'UF',
  UpstreamOverflow: 'UO',
  NoRouteFound: 'NR',
  UpstreamRetryLimitExceeded: 'URX',
  NoClusterFound: 'NC',
  DownstreamConnectionTermination: 'DC',
  UpstreamConnectionTermination: 'UC',
  UpstreamRemoteReset: 'UR',
  /** HTTP/2: the client reset the stream (RST_STREAM) before the response was complete. */
  DownstreamRemoteReset: 'DR',
  UpstreamRequestTimeout: 'UT',
  DownstreamProtocolError: 'DPE',
  UpstreamProtocolError: 'UPE',
  StreamIdleTimeout: 'SI',
  /** No filter chain matched the connection (plaintext on a strict mTLS port): closed, no request. */
  NoFilterChainFound: 'NFCF',
  /** Denied by the inbound RBAC policy: 403. */
  RbacAccessDenied: 'RBAC',
  /** Over the route's or virtual host's local rate limit: 429 (issue 16). */
  RateLimited: 'RL',
  /** The fault filter aborted the request (issue 16). */
  FaultInjected: 'FI',
  /** The fault filter delayed the request (issue 16). */
  DelayInjected: 'DI',
} as const;

export function addFlag(flags: string, flag: string): string {
  if (!flags) return flag;
  return flags.split(',').includes(flag) ? flags : `${flags},${flag}`;
}
