import http from 'node:http';
import type { HealthCheckConfig as ClusterHealthCheckConfig } from '../config/types';
import type { ClusterStatScope, ResilienceHost } from './types';

/**
 * Envoy's active HTTP health checker for one cluster. Each host is probed with
 * `GET path` every interval (+ a random jitter); a probe times out after
 * `timeoutMs`. Only 200 passes. `unhealthyThreshold` failures in a row set
 * `failed_active_hc`, `healthyThreshold` passes in a row clear it. As in Envoy,
 * a host starts with `failed_active_hc` and is probed at once, and one pass is
 * enough the first time. A response carrying `x-envoy-immediate-health-check-fail`
 * (a proxy told to fail by /healthcheck/fail) fails the host at once.
 */

/** The cluster's health check as configured, plus the Host header the probes send. */
export interface HealthCheckConfig extends ClusterHealthCheckConfig {
  /** Host header; Envoy sends the cluster name by default */
  host?: string;
}

export const DEFAULT_HEALTH_CHECK = Object.freeze({ intervalMs: 5000, timeoutMs: 1000, healthyThreshold: 1, unhealthyThreshold: 3, jitterMs: 0 });

export const IMMEDIATE_HC_FAIL_HEADER = 'x-envoy-immediate-health-check-fail';

export type ProbeResult = 'success' | 'failure' | 'network_failure' | 'immediate_failure';

interface Session<H> {
  host: H;
  timer: NodeJS.Timeout | undefined;
  inFlight: http.ClientRequest | undefined;
  consecutiveSuccess: number;
  consecutiveFailure: number;
  /** no probe has passed yet: one pass is enough */
  firstCheck: boolean;
}

export interface ActiveHealthCheckerOptions<H> {
  clusterName: string;
  config: HealthCheckConfig;
  hosts: () => readonly H[];
  stats?: ClusterStatScope;
  random?: () => number;
  /** called when a host's failed_active_hc flag is set or cleared */
  onChange?: (host: H, healthy: boolean) => void;
  /** called with every probe's verdict, before it is applied (tests and logs) */
  onProbe?: (host: H, result: ProbeResult) => void;
}

export class ActiveHealthChecker<H extends ResilienceHost> {
  readonly config: Required<Omit<HealthCheckConfig, 'host'>> & { host: string };
  private readonly sessions = new Map<H, Session<H>>();
  private running = false;
  private readonly random: () => number;

  constructor(private readonly opts: ActiveHealthCheckerOptions<H>) {
    const c = opts.config;
    if (!c.path.startsWith('/')) throw new RangeError(`healthCheck.path must start with "/", got "${c.path}"`);
    // the schema checks the same: a space or control character would make http.request throw in a timer
    if (!/^\/[\x21-\x7e]*$/.test(c.path)) throw new RangeError(`healthCheck.path must be visible ASCII characters (no spaces; percent-encode others), got ${JSON.stringify(c.path)}`);
    this.config = {
      path: c.path,
      intervalMs: c.intervalMs ?? DEFAULT_HEALTH_CHECK.intervalMs,
      timeoutMs: c.timeoutMs ?? DEFAULT_HEALTH_CHECK.timeoutMs,
      healthyThreshold: Math.max(1, c.healthyThreshold ?? DEFAULT_HEALTH_CHECK.healthyThreshold),
      unhealthyThreshold: Math.max(1, c.unhealthyThreshold ?? DEFAULT_HEALTH_CHECK.unhealthyThreshold),
      jitterMs: c.jitterMs ?? DEFAULT_HEALTH_CHECK.jitterMs,
      host: c.host ?? opts.clusterName,
    };
    this.random = opts.random ?? Math.random;
  }

  /** Starts probing; the host list is re-read every interval too, so endpoint updates are picked up without a call to sync(). */
  start(): this {
    this.running = true;
    this.sync();
    if (!this.syncTimer) {
      this.syncTimer = setInterval(() => this.sync(), this.config.intervalMs);
      this.syncTimer.unref();
    }
    return this;
  }
  private syncTimer: NodeJS.Timeout | undefined;

  /** Whether a probe session exists for `host` (it is health checked). */
  isChecking(host: H): boolean { return this.sessions.has(host); }

  /** Picks up added and removed hosts; call after an endpoint update (start() does it once). */
  sync(): void {
    if (!this.running) return;
    const hosts = this.opts.hosts();
    const present = new Set(hosts);
    for (const [h, s] of this.sessions) {
      if (!present.has(h)) {
        this.endSession(s);
        this.sessions.delete(h);
      }
    }
    for (const h of hosts) {
      if (this.sessions.has(h)) continue;
      const s: Session<H> = { host: h, timer: undefined, inFlight: undefined, consecutiveSuccess: 0, consecutiveFailure: 0, firstCheck: true };
      h.healthFlags.add('failed_active_hc');
      this.sessions.set(h, s);
      this.probe(s);
    }
    this.publishHealthy();
  }

  /** Stops probing. `clearFlags` also removes failed_active_hc from the hosts (health checking was turned off). */
  stop(clearFlags = false): void {
    this.running = false;
    if (this.syncTimer) clearInterval(this.syncTimer);
    this.syncTimer = undefined;
    if (clearFlags) for (const h of this.sessions.keys()) h.healthFlags.delete('failed_active_hc');
    for (const s of this.sessions.values()) this.endSession(s);
    this.sessions.clear();
  }

  private endSession(s: Session<H>): void {
    if (s.timer) clearTimeout(s.timer);
    s.timer = undefined;
    s.inFlight?.destroy();
    s.inFlight = undefined;
  }

  private schedule(s: Session<H>): void {
    if (!this.running || this.sessions.get(s.host) !== s) return;
    const delay = this.config.intervalMs + (this.config.jitterMs > 0 ? Math.floor(this.random() * (this.config.jitterMs + 1)) : 0);
    s.timer = setTimeout(() => this.probe(s), delay);
    s.timer.unref();
  }

  private probe(s: Session<H>): void {
    s.timer = undefined;
    this.counter('attempt').inc();
    let settled = false;
    let req: http.ClientRequest | undefined;
    const timeout = setTimeout(() => {
      req?.destroy();
      settle('network_failure');
    }, this.config.timeoutMs);
    timeout.unref();
    const settle = (result: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timeout);
      s.inFlight = undefined;
      if (this.sessions.get(s.host) !== s) return;
      this.opts.onProbe?.(s.host, result);
      this.apply(s, result);
      this.schedule(s);
    };
    try {
      req = http.request({
        host: s.host.address,
        port: s.host.port,
        method: 'GET',
        path: this.config.path,
        agent: false,
        headers: { host: this.config.host, 'user-agent': 'Envoy/HC', connection: 'close' },
      }, (res) => {
        const immediate = res.headers[IMMEDIATE_HC_FAIL_HEADER] !== undefined;
        const status = res.statusCode ?? 0;
        res.resume();
        res.on('error', () => settle('network_failure'));
        // the verdict is given on the headers; the body is drained and dropped
        settle(immediate ? 'immediate_failure' : status === 200 ? 'success' : 'failure');
      });
    } catch {
      // http.request throws synchronously on what it cannot send; this runs in a timer, where a throw ends the process
      settle('network_failure');
      return;
    }
    s.inFlight = req;
    req.on('error', () => settle('network_failure'));
    req.end();
  }

  private apply(s: Session<H>, result: ProbeResult): void {
    const h = s.host;
    if (result === 'success') {
      this.counter('success').inc();
      s.consecutiveFailure = 0;
      s.consecutiveSuccess++;
      if (h.healthFlags.has('failed_active_hc') && (s.firstCheck || s.consecutiveSuccess >= this.config.healthyThreshold)) {
        h.healthFlags.delete('failed_active_hc');
        this.opts.onChange?.(h, true);
      }
      s.firstCheck = false;
    } else {
      this.counter('failure').inc();
      if (result === 'network_failure') this.counter('network_failure').inc();
      s.consecutiveSuccess = 0;
      s.consecutiveFailure++;
      if (!h.healthFlags.has('failed_active_hc') && (result === 'immediate_failure' || s.consecutiveFailure >= this.config.unhealthyThreshold)) {
        h.healthFlags.add('failed_active_hc');
        this.opts.onChange?.(h, false);
      }
    }
    this.publishHealthy();
  }

  private publishHealthy(): void {
    let healthy = 0;
    for (const h of this.sessions.keys()) if (!h.healthFlags.has('failed_active_hc')) healthy++;
    this.opts.stats?.gauge('health_check.healthy').set(healthy);
  }

  private counter(leaf: string) { return this.opts.stats?.counter(`health_check.${leaf}`) ?? NOOP; }
}

const NOOP = { inc() {}, value: 0 };
