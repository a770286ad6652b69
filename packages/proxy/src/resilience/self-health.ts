import type { DrainManager } from './drain-manager';
import { IMMEDIATE_HC_FAIL_HEADER } from './health-checker';

/**
 * The proxy's own health, as Envoy's health check filter gives it: after
 * `POST /healthcheck/fail` (or while draining) an inbound request to the
 * service's health-check path is answered by the proxy with 503 and
 * `x-envoy-immediate-health-check-fail`, so the agent, the registry and other
 * proxies take the instance out and traffic drains away, until
 * `POST /healthcheck/ok`. Otherwise the request passes through to the service.
 */

export interface LocalReply {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export class ProxySelfHealth {
  private failed = false;
  private paths: Set<string>;

  constructor(healthCheckPaths: readonly string[] = [], private readonly drain?: DrainManager) {
    this.paths = new Set(healthCheckPaths);
  }

  /** /healthcheck/fail */
  fail(): void { this.failed = true; }
  /** /healthcheck/ok */
  ok(): void { this.failed = false; }

  /** true after /healthcheck/fail, or while draining */
  get failing(): boolean { return this.failed || (this.drain?.draining ?? false); }
  get manuallyFailed(): boolean { return this.failed; }

  setHealthCheckPaths(paths: readonly string[]): void { this.paths = new Set(paths); }

  isHealthCheckPath(path: string): boolean {
    const q = path.indexOf('?');
    return this.paths.has(q === -1 ? path : path.slice(0, q));
  }

  /** For an inbound request: the proxy's own 503 when it must fail its health check, otherwise undefined. */
  inboundReply(path: string): LocalReply | undefined {
    if (!this.failing || !this.isHealthCheckPath(path)) return undefined;
    return { status: 503, headers: { [IMMEDIATE_HC_FAIL_HEADER]: 'true', 'content-type': 'text/plain' }, body: this.failed ? 'health check failed: /healthcheck/fail was called' : 'health check failed: draining' };
  }
}
