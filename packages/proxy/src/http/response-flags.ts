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
  UpstreamRequestTimeout: 'UT',
  DownstreamProtocolError: 'DPE',
  UpstreamProtocolError: 'UPE',
  StreamIdleTimeout: 'SI',
} as const;

export function addFlag(flags: string, flag: string): string {
  if (!flags) return flag;
  return flags.split(',').includes(flag) ? flags : `${flags},${flag}`;
}
