// Envoy's RBAC HTTP filter, ALLOW action, per inbound port (issue 13): compiled once per config
// snapshot, checked at the start of every request on an inbound connection.
import { matchesIstioPattern, type RbacPolicy } from '@mesh-agent/shared-config';
import type { Counter, StatsStore } from '../stats/store';

/** Envoy's exact local reply body for a denied request. */
export const RBAC_DENIED_BODY = 'RBAC: access denied';

export interface RbacRequest {
  /** The caller's SPIFFE ID from its client certificate; undefined on plaintext. */
  principal: string | undefined;
  method: string;
  /** The path without the query. */
  path: string;
}

export type RbacDecision = { allowed: true; policy: string } | { allowed: false };

/** One port's policies: a request is allowed when any policy matches it; no policy = deny everyone. */
export class CompiledRbac {
  readonly allowed: Counter;
  readonly denied: Counter;

  constructor(readonly port: number, private readonly policies: readonly RbacPolicy[], stats: StatsStore) {
    // Istio's inbound HCM stat prefix, so dashboards built for Istio read these.
    const scope = inboundHttpStatPrefix(port);
    this.allowed = stats.counter('http.', scope, 'rbac.allowed');
    this.denied = stats.counter('http.', scope, 'rbac.denied');
  }

  check(req: RbacRequest): RbacDecision {
    for (const p of this.policies) {
      if (p.principals && !p.principals.some((pattern) => matchesIstioPattern(req.principal, pattern))) continue;
      if (p.methods && !p.methods.includes(req.method)) continue;
      if (p.paths && !p.paths.some((pattern) => matchesIstioPattern(req.path, pattern))) continue;
      this.allowed.inc();
      return { allowed: true, policy: p.name };
    }
    this.denied.inc();
    return { allowed: false };
  }
}

export function inboundHttpStatPrefix(port: number): string {
  return `inbound_0.0.0.0_${port}`;
}
