import type { AttemptReason, UpstreamAttemptError } from './forwarder';
import { formatUpstream, type Upstream } from './upstreams';

/** What /config_dump and /health show per upstream. */
export interface UpstreamHealth {
  /** false after a failed attempt, true again after an answer; true for one not tried yet */
  healthy: boolean;
  failures: number;
  consecutiveFailures: number;
  lastSuccess?: string;
  lastFailure?: string;
  lastError?: string;
  /** the errno of the last failure (ENETUNREACH, ECONNREFUSED, ...) when the kernel gave one */
  lastErrno?: string;
  lastReason?: AttemptReason;
}

/**
 * The health of each upstream as seen by real queries and probes: one failure marks it unhealthy,
 * one answer healthy again (a resolver has no readiness of its own to wait for).
 */
export class UpstreamHealthBook {
  private readonly byName = new Map<string, UpstreamHealth>();

  failed(err: UpstreamAttemptError): UpstreamHealth {
    const health = this.of(formatUpstream(err.upstream));
    health.healthy = false;
    health.failures++;
    health.consecutiveFailures++;
    health.lastFailure = new Date().toISOString();
    health.lastError = err.message;
    health.lastReason = err.reason;
    health.lastErrno = err.errno;
    return health;
  }

  answered(upstream: Upstream): void {
    const health = this.of(formatUpstream(upstream));
    health.healthy = true;
    health.consecutiveFailures = 0;
    health.lastSuccess = new Date().toISOString();
  }

  get(name: string): UpstreamHealth {
    return { ...(this.byName.get(name) ?? { healthy: true, failures: 0, consecutiveFailures: 0 }) };
  }

  /** The health of each of `servers`, by name (ones not tried yet count as healthy). */
  report(servers: readonly Upstream[]): Record<string, UpstreamHealth> {
    return Object.fromEntries(servers.map((u) => [formatUpstream(u), this.get(formatUpstream(u))]));
  }

  private of(name: string): UpstreamHealth {
    let health = this.byName.get(name);
    if (health === undefined) {
      health = { healthy: true, failures: 0, consecutiveFailures: 0 };
      this.byName.set(name, health);
    }
    return health;
  }
}

/** What an operator does about each way an upstream failed, for /latest_error and the log. */
export function failureHint(failures: readonly UpstreamAttemptError[], timeoutMs: number): string {
  const seen = new Set<string>();
  const steps: string[] = [];
  for (const f of failures) {
    const up = formatUpstream(f.upstream);
    const addr = f.upstream.address;
    const step = (() => {
      switch (f.reason) {
        case 'unreachable':
          return `no route to ${addr}: check \`ip route get ${addr}\` on this host, or configure a reachable resolver`;
        case 'refused':
          return `nothing serves DNS on ${up}: check the resolver runs there and listens on that port`;
        case 'timeout':
          return `${up} did not answer within ${timeoutMs} ms: check it is up and reachable (dig @${addr} -p ${f.upstream.port} NAME), or raise the upstream timeout`;
        case 'blocked':
          return `a firewall rule drops mesh-dns' packets to ${up}: check \`iptables -S OUTPUT\``;
        case 'reset':
        case 'closed':
          return `${up} closed the TCP connection before answering: check it serves DNS over TCP`;
        default:
          return `check the resolver ${up}`;
      }
    })();
    if (!seen.has(step)) {
      seen.add(step);
      steps.push(step);
    }
  }
  steps.push(
    'the upstreams are the nameservers of resolv.conf unless configured (--upstream, upstreams); mesh names are still answered; each upstream\'s health: /config_dump (upstreams.health) and /metrics (mesh_dns_upstream_healthy)',
  );
  return steps.join('; ');
}
