import net from 'node:net';
import type { Cluster } from '../cluster/cluster';
import type { Host } from '../cluster/host';
import { addFlag, ResponseFlag } from '../http/response-flags';
import type { AccessLogger } from '../observability/access-log';
import type { Counter, StatsStore } from '../stats/store';

/**
 * Envoy's tcp_proxy (issue 15): a downstream connection is piped as bytes to one host of a cluster.
 * One connect attempt (max_connect_attempts 1), the cluster's connect timeout and max_connections,
 * connect failures reported to outlier detection, half-close both ways, back-pressure both ways (the
 * reading side pauses while the other side's write buffer is full), a reset on one side resets the
 * other, an idle timeout, and one access log line per connection.
 */

const TCP_COUNTERS = ['downstream_cx_total', 'downstream_cx_no_route', 'downstream_cx_tx_bytes_total', 'downstream_cx_rx_bytes_total',
  'downstream_flow_control_paused_reading_total', 'downstream_flow_control_resumed_reading_total', 'idle_timeout', 'upstream_flush_total'] as const;
type TcpCounter = (typeof TCP_COUNTERS)[number];
export type TcpProxyStats = Record<TcpCounter, Counter>;

export interface TcpProxyDeps {
  readonly stats: StatsStore;
  accessLog(): AccessLogger | undefined;
  idleTimeoutMs(): number;
  /** A bug inside a socket callback: logged; the session is closed, the process lives on. */
  onInternalError(err: unknown, where: string): void;
}

/** What a finished session reports to its owner (the listener's active-connection gauge). */
export type SessionClosed = () => void;

export class TcpProxy {
  private readonly sessions = new Set<TcpSession>();
  private readonly statsByPrefix = new Map<string, TcpProxyStats>();

  constructor(private readonly deps: TcpProxyDeps) {}

  get size(): number { return this.sessions.size; }

  /** Envoy's `tcp.<stat_prefix>.*`; the stat prefix is the cluster's name. */
  statsFor(prefix: string): TcpProxyStats {
    let s = this.statsByPrefix.get(prefix);
    if (!s) {
      const made: Record<string, Counter> = {};
      for (const leaf of TCP_COUNTERS) made[leaf] = this.deps.stats.counter('tcp.', prefix, leaf);
      s = made as TcpProxyStats;
      this.statsByPrefix.set(prefix, s);
    }
    return s;
  }

  /**
   * Proxies `downstream` to a host of `cluster` (undefined: no route, the connection is closed). `initial`: bytes already
   * read (a sniff, or what followed a CONNECT head). `connect`: the session answers an HTTP/1.1 CONNECT (Envoy's CONNECT
   * termination): 200 once the upstream is connected, 503 (no healthy upstream, overflow, connect failure) otherwise.
   */
  start(downstream: net.Socket, cluster: Cluster | undefined, statPrefix: string, closed: SessionClosed, initial?: Buffer, connect = false): void {
    const session = new TcpSession(this.deps, this.statsFor(statPrefix), downstream, cluster, () => { this.sessions.delete(session); closed(); }, connect);
    this.sessions.add(session);
    session.begin(initial);
  }

  destroyAll(): void {
    for (const s of [...this.sessions]) s.destroy();
  }
}

class TcpSession {
  private upstream: net.Socket | undefined;
  private host: Host | undefined;
  private flags = '';
  private readonly startTime = Date.now();
  private readonly startMs = performance.now();
  private rx = 0;
  private tx = 0;
  private connected = false;
  private done = false;
  private downstreamClosed = false;
  private upstreamClosed = true;
  private downstreamEnded = false;
  private upstreamEnded = false;
  private lastActivity = Date.now();
  private idleTimer: NodeJS.Timeout | undefined;
  private connectTimer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: TcpProxyDeps, private readonly stats: TcpProxyStats, private readonly downstream: net.Socket,
    private readonly cluster: Cluster | undefined, private readonly closed: () => void, private readonly connectTunnel: boolean) {}

  /** No upstream for this session: a CONNECT is answered 503 (the client learns why), a plain TCP session closed. */
  private refuse(): void {
    if (this.connectTunnel && !this.downstream.destroyed) {
      this.downstream.end(`HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nx-envoy-response-flags: ${this.flags}\r\nconnection: close\r\n\r\n`);
      this.downstream.resume(); // read and drop whatever the client sent after the head, so the close completes
      return;
    }
    this.downstream.destroy();
  }

  begin(initial: Buffer | undefined): void {
    const down = this.downstream;
    this.stats.downstream_cx_total.inc();
    // half-close: the client's FIN must not end our write side (the server may still answer)
    down.allowHalfOpen = true;
    down.pause();
    if (initial && initial.length > 0) down.unshift(initial);
    down.on('error', () => { this.flags = addFlag(this.flags, ResponseFlag.DownstreamConnectionTermination); this.upstream?.resetAndDestroy(); });
    down.on('close', () => { this.downstreamClosed = true; if (!this.upstreamClosed) this.upstream?.destroy(); this.maybeFinish(); });
    const cluster = this.cluster;
    if (!cluster) { this.stats.downstream_cx_no_route.inc(); this.flags = addFlag(this.flags, ResponseFlag.NoRouteFound); this.refuse(); return; }
    const pick = cluster.pickHost({ hashKey: undefined });
    if (!pick.host) {
      cluster.stats.upstream_cx_none_healthy.inc();
      this.flags = addFlag(this.flags, ResponseFlag.NoHealthyUpstream);
      this.refuse();
      return;
    }
    // max_connections: the breaker counts the cluster's live connections (HTTP pool and TCP sessions alike)
    if (cluster.circuitBreakers?.canOpenConnection && !cluster.circuitBreakers.canOpenConnection()) {
      cluster.stats.upstream_cx_overflow.inc();
      this.flags = addFlag(this.flags, ResponseFlag.UpstreamOverflow);
      this.refuse();
      return;
    }
    this.connect(cluster, pick.host);
  }

  private connect(cluster: Cluster, host: Host): void {
    this.host = host;
    const up = net.connect({ host: host.address, port: host.port, allowHalfOpen: true, noDelay: true });
    this.upstream = up;
    this.upstreamClosed = false;
    host.stats.cx_total++;
    host.stats.cx_active++;
    cluster.stats.upstream_cx_total.inc();
    cluster.stats.upstream_cx_active.inc();
    this.connectTimer = setTimeout(() => { this.connectTimer = undefined; if (!this.connected) up.destroy(new Error(`connect timeout after ${cluster.connectTimeoutMs} ms`)); }, cluster.connectTimeoutMs);
    up.on('connect', () => {
      clearTimeout(this.connectTimer);
      this.connectTimer = undefined;
      this.connected = true;
      cluster.outlierDetector?.reportOutcome(host, { kind: 'response', status: 200 });
      if (this.downstreamClosed) { up.destroy(); return; }
      if (this.connectTunnel) this.downstream.write('HTTP/1.1 200 Connection established\r\n\r\n');
      this.pipe();
    });
    up.on('error', () => {
      if (!this.connected) return; // counted as a connect failure on close
      this.flags = addFlag(this.flags, ResponseFlag.UpstreamConnectionTermination);
      this.downstream.resetAndDestroy();
    });
    up.on('close', () => {
      clearTimeout(this.connectTimer);
      this.upstreamClosed = true;
      host.stats.cx_active--;
      cluster.stats.upstream_cx_active.dec();
      cluster.stats.upstream_cx_destroy.inc();
      if (!this.connected) {
        host.stats.cx_connect_fail++;
        cluster.stats.upstream_cx_connect_fail.inc();
        cluster.outlierDetector?.reportOutcome(host, { kind: 'connect-failure' });
        this.flags = addFlag(this.flags, ResponseFlag.UpstreamConnectionFailure);
      } else if (!this.downstreamEnded) {
        cluster.statsStore.counter('cluster.', cluster.name, 'upstream_cx_destroy_remote').inc();
      }
      if (!this.downstreamClosed) {
        if (!this.connected) this.refuse();
        else this.downstream.destroy();
      }
      this.maybeFinish();
    });
  }

  /** Both directions: bytes counted, the reader paused while the writer is full, FIN passed on. */
  private pipe(): void {
    const down = this.downstream;
    const up = this.upstream!;
    const cluster = this.cluster!;
    // looked up once per session, not per chunk
    const upstreamTx = cluster.statsStore.counter('cluster.', cluster.name, 'upstream_cx_tx_bytes_total');
    const upstreamRx = cluster.statsStore.counter('cluster.', cluster.name, 'upstream_cx_rx_bytes_total');
    const guard = (where: string, fn: () => void) => { try { fn(); } catch (err) { this.deps.onInternalError(err, where); this.destroy(); } };
    down.on('data', (chunk: Buffer) => guard('tcp downstream data', () => {
      this.rx += chunk.length;
      this.lastActivity = Date.now();
      this.stats.downstream_cx_rx_bytes_total.inc(chunk.length);
      upstreamTx.inc(chunk.length);
      if (!up.write(chunk)) {
        down.pause();
        this.stats.downstream_flow_control_paused_reading_total.inc();
      }
    }));
    up.on('drain', () => guard('tcp upstream drain', () => {
      if (this.downstreamEnded || this.downstreamClosed) return;
      this.stats.downstream_flow_control_resumed_reading_total.inc();
      down.resume();
    }));
    up.on('data', (chunk: Buffer) => guard('tcp upstream data', () => {
      this.tx += chunk.length;
      this.lastActivity = Date.now();
      this.stats.downstream_cx_tx_bytes_total.inc(chunk.length);
      upstreamRx.inc(chunk.length);
      if (!down.write(chunk)) up.pause();
    }));
    down.on('drain', () => guard('tcp downstream drain', () => { if (!this.upstreamEnded) up.resume(); }));
    down.on('end', () => guard('tcp downstream end', () => { this.downstreamEnded = true; up.end(); }));
    up.on('end', () => guard('tcp upstream end', () => { this.upstreamEnded = true; this.stats.upstream_flush_total.inc(); down.end(); }));
    this.armIdle();
    down.resume();
  }

  private armIdle(): void {
    const idleMs = this.deps.idleTimeoutMs();
    const check = (): void => {
      const quiet = Date.now() - this.lastActivity;
      if (quiet >= idleMs) {
        this.stats.idle_timeout.inc();
        this.flags = addFlag(this.flags, ResponseFlag.StreamIdleTimeout);
        this.destroy();
        return;
      }
      this.idleTimer = setTimeout(check, idleMs - quiet);
      this.idleTimer.unref();
    };
    this.idleTimer = setTimeout(check, idleMs);
    this.idleTimer.unref();
  }

  destroy(): void {
    this.upstream?.destroy();
    this.downstream.destroy();
  }

  private maybeFinish(): void {
    if (this.done || !this.downstreamClosed || !this.upstreamClosed) return;
    this.done = true;
    clearTimeout(this.idleTimer);
    clearTimeout(this.connectTimer);
    this.closed();
    this.deps.accessLog()?.log({
      startTime: this.startTime, method: '-', path: '-', protocol: 'TCP', status: 0, flags: this.flags,
      bytesReceived: this.rx, bytesSent: this.tx, durationMs: Math.round(performance.now() - this.startMs), upstreamServiceTimeMs: undefined,
      forwardedFor: undefined, userAgent: undefined, requestId: undefined, authority: undefined,
      upstreamHost: this.host ? `${this.host.address}:${this.host.port}` : undefined, upstreamCluster: this.cluster?.name,
    });
  }
}
