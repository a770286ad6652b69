import http from 'node:http';
import http2 from 'node:http2';
import type { HealthCheckConfig as ClusterHealthCheckConfig } from '../config/types';
import { hostAddress, type ClusterStatScope, type ResilienceHost } from './types';

/**
 * Envoy's active HTTP health checker for one cluster. Each host is probed with
 * `GET path` every interval (+ a random jitter); a probe times out after
 * `timeoutMs`. Only 200 passes. `unhealthyThreshold` failures in a row set
 * `failed_active_hc`, `healthyThreshold` passes in a row clear it. As in Envoy,
 * a host starts with `failed_active_hc` and is probed at once, and one pass is
 * enough the first time. A response carrying `x-envoy-immediate-health-check-fail`
 * (a proxy told to fail by /healthcheck/fail) fails the host at once.
 *
 * With `grpc` set (Envoy's grpc_health_check) the probe is `grpc.health.v1.Health/Check` over HTTP/2
 * (h2c, one connection per probe as the HTTP probe's `connection: close`): it passes when the answer is
 * grpc-status 0 with status SERVING; NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN or any gRPC error fail it.
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
  inFlight: { destroy(): void } | undefined;
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
  readonly config: Required<Omit<HealthCheckConfig, 'host' | 'grpc'>> & { host: string; grpc: HealthCheckConfig['grpc'] };
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
      grpc: c.grpc,
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
      s.inFlight?.destroy(); // a gRPC probe's connection
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
    if (this.config.grpc) {
      s.inFlight = this.grpcProbe(s.host, this.config.grpc.serviceName ?? '', settle);
      return;
    }
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

  /** One `grpc.health.v1.Health/Check` on a fresh h2c connection; `settle` gets the verdict once (the timeout is the caller's). */
  private grpcProbe(host: H, service: string, settle: (r: ProbeResult) => void): { destroy(): void } {
    let session: http2.ClientHttp2Session | undefined;
    const done = (r: ProbeResult) => {
      settle(r);
      session?.destroy();
    };
    try {
      session = http2.connect(`http://${hostAddress(host)}`, { maxSessionMemory: 1 });
      session.on('error', () => done('network_failure'));
      session.on('goaway', () => { /* in-flight probe still completes; 'close' settles otherwise */ });
      session.on('close', () => done('network_failure'));
      const req = session.request({
        // the cluster name as Envoy sends it, unless it cannot be an authority (out#9000#greeter: nghttp2 refuses the stream)
        ':method': 'POST', ':path': GRPC_HEALTH_CHECK_PATH, ':authority': AUTHORITY.test(this.config.host) ? this.config.host : hostAddress(host),
        'content-type': 'application/grpc', te: 'trailers', 'user-agent': 'Envoy/HC',
      });
      let headersStatus: number | undefined;
      let grpcStatus: string | undefined;
      const chunks: Buffer[] = [];
      let bytes = 0;
      req.on('response', (headers) => {
        headersStatus = Number(headers[':status']);
        if (headers['grpc-status'] !== undefined) grpcStatus = String(headers['grpc-status']);
      });
      req.on('trailers', (trailers) => { if (trailers['grpc-status'] !== undefined) grpcStatus = String(trailers['grpc-status']); });
      req.on('data', (c: Buffer) => {
        bytes += c.length;
        // a health answer is a few bytes: anything large is not one (bounded memory)
        if (bytes > MAX_GRPC_HC_RESPONSE_BYTES) { req.close(http2.constants.NGHTTP2_CANCEL); done('failure'); return; }
        chunks.push(c);
      });
      req.on('error', () => done('network_failure'));
      req.on('end', () => {
        if (headersStatus !== 200 || grpcStatus !== '0') { done('failure'); return; }
        done(decodeHealthCheckResponse(Buffer.concat(chunks)) === GRPC_SERVING ? 'success' : 'failure');
      });
      req.end(encodeHealthCheckRequest(service));
    } catch {
      // http2.connect throws synchronously on what it cannot use; this runs in a timer, where a throw ends the process
      done('network_failure');
    }
    return { destroy: () => session?.destroy() };
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

export const GRPC_HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check';
/** grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING */
export const GRPC_SERVING = 1;
const MAX_GRPC_HC_RESPONSE_BYTES = 4096;
/** RFC 3986 authority characters (reg-name, IP literal, port). */
const AUTHORITY = /^[A-Za-z0-9\-._~!$&'()*+,;=:%[\]]+$/;

/** One gRPC message frame (uncompressed) carrying HealthCheckRequest { string service = 1; }, encoded by hand. */
export function encodeHealthCheckRequest(service: string): Buffer {
  const name = Buffer.from(service, 'utf8');
  const msg = name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a]), varint(name.length), name]);
  const frame = Buffer.alloc(5 + msg.length);
  frame.writeUInt32BE(msg.length, 1);
  msg.copy(frame, 5);
  return frame;
}

/** The `status` (field 1, enum) of the HealthCheckResponse in a gRPC message frame; undefined when malformed or compressed. */
export function decodeHealthCheckResponse(frame: Buffer): number | undefined {
  if (frame.length < 5 || frame[0] !== 0) return undefined;
  const len = frame.readUInt32BE(1);
  if (frame.length < 5 + len) return undefined;
  const msg = frame.subarray(5, 5 + len);
  let status = 0; // proto3: an absent enum is its zero value (UNKNOWN)
  for (let i = 0; i < msg.length;) {
    const key = readVarint(msg, i);
    if (!key) return undefined;
    i = key.next;
    const field = key.value >>> 3;
    const wire = key.value & 7;
    if (wire === 0) {
      const v = readVarint(msg, i);
      if (!v) return undefined;
      i = v.next;
      if (field === 1) status = v.value;
    } else if (wire === 2) {
      const l = readVarint(msg, i);
      if (!l || l.next + l.value > msg.length) return undefined;
      i = l.next + l.value;
    } else if (wire === 5) i += 4;
    else if (wire === 1) i += 8;
    else return undefined;
  }
  return status;
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) { out.push((n & 0x7f) | 0x80); n >>>= 7; }
  out.push(n);
  return Buffer.from(out);
}

function readVarint(buf: Buffer, at: number): { value: number; next: number } | undefined {
  let value = 0;
  for (let i = at, shift = 0; i < buf.length && shift < 35; i++, shift += 7) {
    value |= (buf[i]! & 0x7f) << shift;
    if ((buf[i]! & 0x80) === 0) return { value: value >>> 0, next: i + 1 };
  }
  return undefined;
}
