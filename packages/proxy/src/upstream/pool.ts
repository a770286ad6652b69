import net from 'node:net';
import type tls from 'node:tls';
import type { Cluster } from '../cluster/cluster';
import type { Host } from '../cluster/host';
import { connectUpstreamTls, countHandshake, describeTls, PLAINTEXT_TRANSPORT, transportFailureReason, type SecretLookup, type UpstreamTlsSettings } from '../tls/upstream-tls';
import { Http2Pool } from './http2-pool';

/** Whoever currently uses an upstream connection receives its events. */
export interface UpstreamOwner {
  onUpstreamConnect(conn: UpstreamConnection): void;
  onUpstreamData(conn: UpstreamConnection, chunk: Buffer): void;
  /** The connection ended or failed; `connectFailed` when it never connected. */
  onUpstreamClose(conn: UpstreamConnection, connectFailed: boolean, error: Error | undefined): void;
  onUpstreamDrain(conn: UpstreamConnection): void;
  /** A request that waited in the pending queue got its connection (the host may differ from the one it asked for). */
  onPendingReady(conn: UpstreamConnection): void;
}

/** A request waiting for a connection (Envoy's pending request): max_connections was reached. */
export interface PendingRequest {
  readonly cluster: Cluster;
  readonly host: Host;
  readonly owner: UpstreamOwner;
  /** gives back the max_pending_requests slot */
  readonly release: () => void;
}

export { PLAINTEXT_TRANSPORT };

/** One TCP (or mTLS, `tls` set) connection to an upstream host, reused across requests (keep-alive). */
export class UpstreamConnection {
  owner: UpstreamOwner | undefined;
  /** For TLS: the handshake completed and the peer's identity was verified. */
  connected = false;
  closed = false;
  /** Number of requests sent on it; > 1 means reused (a stale keep-alive race is possible). */
  uses = 0;
  idleSince = 0;
  /** `plaintext`, or `tls <version> peer=<SPIFFE ID>` once the handshake is done (x-mesh-upstream-transport). */
  transport = PLAINTEXT_TRANSPORT;
  /** Why the TLS handshake failed (Envoy's %UPSTREAM_TRANSPORT_FAILURE_REASON%); undefined otherwise. */
  transportFailureReason: string | undefined;
  private error: Error | undefined;
  private tcpConnected = false;

  constructor(readonly socket: net.Socket, readonly host: Host, readonly cluster: Cluster, private readonly pool: UpstreamPool, readonly tls?: UpstreamTlsSettings) {
    socket.setNoDelay(true);
    if (tls) socket.once('connect', () => { this.tcpConnected = true; });
    // an mTLS connection is usable once the handshake and the identity check are done; the connect timeout covers both
    socket.on(tls ? 'secureConnect' : 'connect', () => {
      this.connected = true;
      socket.setTimeout(0);
      if (tls) this.onHandshake();
      this.owner?.onUpstreamConnect(this);
    });
    socket.on('data', (chunk: Buffer) => {
      if (this.owner) this.owner.onUpstreamData(this, chunk);
      else socket.destroy(); // unsolicited bytes on an idle connection: never reuse it
    });
    socket.on('drain', () => this.owner?.onUpstreamDrain(this));
    socket.on('timeout', () => socket.destroy(new Error('upstream connect timeout')));
    socket.on('error', (err) => { this.error = err; });
    socket.on('end', () => socket.destroy());
    socket.on('close', () => this.handleClose());
  }

  private onHandshake(): void {
    const { protocol, peer } = describeTls(this.socket as tls.TLSSocket);
    this.transport = `tls ${protocol} peer=${peer ?? '-'}`;
    countHandshake(this.cluster.statsStore, this.cluster.name, undefined, true);
  }

  private handleClose(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.tls && !this.connected && (this.tcpConnected || (this.error as NodeJS.ErrnoException | undefined)?.code === 'MESH_TLS_NO_SECRET')) {
      this.transportFailureReason = transportFailureReason(this.error);
      countHandshake(this.cluster.statsStore, this.cluster.name, this.error, false);
    }
    this.pool.forget(this);
    const owner = this.owner;
    this.owner = undefined;
    if (owner) this.host.stats.rq_active--;
    owner?.onUpstreamClose(this, !this.connected, this.error);
  }
}

/**
 * Per-host pools of idle upstream connections. Idle connections are closed by a
 * sweep after `idleTimeoutMs` (cheaper than a timer per request).
 */
export class UpstreamPool {
  private readonly idle = new Map<Host, UpstreamConnection[]>();
  private readonly pending = new Map<Cluster, PendingRequest[]>();
  private readonly sweeper: NodeJS.Timeout;
  private secretLookup: SecretLookup | undefined;
  /** The HTTP/2 sessions of `protocol: http2` clusters (issue 14): same idle timeout, secrets and host removals. */
  readonly http2: Http2Pool;

  constructor(private readonly idleTimeoutMs = 60_000) {
    this.sweeper = setInterval(() => this.sweep(), Math.min(5000, idleTimeoutMs));
    this.sweeper.unref();
    this.http2 = new Http2Pool(idleTimeoutMs);
  }

  /** The proxy's secrets: mTLS connections (HTTP/1 and HTTP/2) take the cluster's secret from here when they open. */
  get secrets(): SecretLookup | undefined { return this.secretLookup; }
  set secrets(s: SecretLookup | undefined) { this.secretLookup = s; this.http2.secrets = s; }

  /**
   * An idle connection to `host`, or a new one. Returns undefined when the
   * cluster's circuit breaker refuses a new connection (max_connections; counts
   * `upstream_cx_overflow`): the caller then queues the request with `enqueue`.
   */
  acquire(cluster: Cluster, host: Host, owner: UpstreamOwner): UpstreamConnection | undefined {
    const idle = this.takeIdle(host, owner);
    if (idle) return idle;
    // The breaker's max_connections.
    if (cluster.circuitBreakers?.canOpenConnection && !cluster.circuitBreakers.canOpenConnection()) {
      cluster.stats.upstream_cx_overflow.inc();
      return undefined;
    }
    return this.open(cluster, host, owner);
  }

  private takeIdle(host: Host, owner: UpstreamOwner): UpstreamConnection | undefined {
    const list = this.idle.get(host);
    while (list && list.length > 0) {
      const conn = list.pop()!;
      if (conn.closed || conn.socket.destroyed) continue;
      // never a plaintext connection for an mTLS host or the other way round (the cluster's tls changed)
      if (conn.tls !== (host.identity === undefined ? undefined : conn.cluster.upstreamTls)) { conn.socket.destroy(); continue; }
      conn.owner = owner;
      conn.uses++;
      host.stats.rq_active++;
      return conn;
    }
    return undefined;
  }

  private open(cluster: Cluster, host: Host, owner: UpstreamOwner): UpstreamConnection {
    // Istio's auto mTLS: TLS to an endpoint with a registered identity when the cluster originates it
    const tlsSettings = host.identity === undefined ? undefined : cluster.upstreamTls;
    const socket = tlsSettings ? connectUpstreamTls(host, tlsSettings, this.secretLookup) : net.connect({ host: host.address, port: host.port });
    socket.setTimeout(cluster.connectTimeoutMs);
    const conn = new UpstreamConnection(socket, host, cluster, this, tlsSettings);
    conn.owner = owner;
    conn.uses = 1;
    host.stats.cx_total++;
    host.stats.cx_active++;
    host.stats.rq_active++;
    cluster.stats.upstream_cx_total.inc();
    cluster.stats.upstream_cx_active.inc();
    // Envoy's per-protocol count beside upstream_cx_http2_total (http2-pool.ts); once per connection, not per request
    cluster.statsStore.counter('cluster.', cluster.name, 'upstream_cx_http1_total').inc();
    return conn;
  }

  /**
   * Envoy's pending queue: a request that found no connection (max_connections)
   * waits, bounded by max_pending_requests. Undefined = the queue is full
   * (`upstream_rq_pending_overflow` counted): answer 503 UO at once.
   */
  enqueue(cluster: Cluster, host: Host, owner: UpstreamOwner): PendingRequest | undefined {
    const release = cluster.circuitBreakers?.tryAcquirePending?.();
    if (!release) return undefined;
    const waiter: PendingRequest = { cluster, host, owner, release };
    let q = this.pending.get(cluster);
    if (!q) { q = []; this.pending.set(cluster, q); }
    q.push(waiter);
    cluster.stats.upstream_rq_pending_total.inc();
    cluster.stats.upstream_rq_pending_active.inc();
    return waiter;
  }

  /** The request left the queue without a connection (route timeout, client gone). */
  cancelPending(waiter: PendingRequest): void {
    const q = this.pending.get(waiter.cluster);
    const i = q ? q.indexOf(waiter) : -1;
    if (i < 0) return;
    q!.splice(i, 1);
    if (q!.length === 0) this.pending.delete(waiter.cluster);
    waiter.release();
    waiter.cluster.stats.upstream_rq_pending_active.dec();
  }

  /** A connection of `cluster` went idle or closed: hand queued requests a connection, in order. */
  private dispatch(cluster: Cluster): void {
    const q = this.pending.get(cluster);
    while (q && q.length > 0) {
      const w = q[0]!;
      let conn = this.takeIdle(w.host, w.owner);
      // an idle connection to another host of the cluster serves too: it would otherwise hold the slot
      for (let i = 0; !conn && i < cluster.hosts.length; i++) conn = this.takeIdle(cluster.hosts[i]!, w.owner);
      if (!conn) {
        if (cluster.circuitBreakers?.canOpenConnection && !cluster.circuitBreakers.canOpenConnection()) return;
        // the host it asked for may have left the cluster meanwhile; with no host at all it waits for its timeout
        const host = cluster.hosts.includes(w.host) ? w.host : cluster.hosts[0];
        if (!host) return;
        conn = this.open(cluster, host, w.owner);
      }
      q.shift();
      if (q.length === 0) this.pending.delete(cluster);
      w.release();
      cluster.stats.upstream_rq_pending_active.dec();
      w.owner.onPendingReady(conn);
    }
  }

  /** Hands a connection back after a complete exchange. */
  release(conn: UpstreamConnection): void {
    if (conn.owner === undefined) return;
    conn.owner = undefined;
    conn.host.stats.rq_active--;
    if (conn.closed) return;
    if (!conn.cluster.hosts.includes(conn.host)) { conn.socket.destroy(); return; }
    conn.idleSince = Date.now();
    let list = this.idle.get(conn.host);
    if (!list) { list = []; this.idle.set(conn.host, list); }
    list.push(conn);
    if (this.pending.size > 0) this.dispatch(conn.cluster);
  }

  /** Drops a connection that must not be reused. */
  discard(conn: UpstreamConnection): void {
    if (conn.owner) conn.host.stats.rq_active--;
    conn.owner = undefined;
    conn.socket.destroy();
  }

  /** Called by the connection itself when it closes. */
  forget(conn: UpstreamConnection): void {
    conn.host.stats.cx_active--;
    conn.cluster.stats.upstream_cx_active.dec();
    conn.cluster.stats.upstream_cx_destroy.inc();
    if (!conn.connected) {
      conn.host.stats.cx_connect_fail++;
      conn.cluster.stats.upstream_cx_connect_fail.inc();
    }
    const list = this.idle.get(conn.host);
    if (list) {
      const i = list.indexOf(conn);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.idle.delete(conn.host);
    }
    // a connection slot is free: a queued request may open one
    if (this.pending.size > 0) this.dispatch(conn.cluster);
  }

  /** Closes idle connections of hosts that left their cluster (HTTP/2 sessions once their last stream ends). */
  closeHosts(hosts: Host[]): void {
    this.http2.closeHosts(hosts);
    for (const h of hosts) {
      const list = this.idle.get(h);
      if (!list) continue;
      this.idle.delete(h);
      for (const c of list) c.socket.destroy();
    }
  }

  idleCount(): number {
    let n = 0;
    for (const l of this.idle.values()) n += l.length;
    return n;
  }

  private sweep(): void {
    const cutoff = Date.now() - this.idleTimeoutMs;
    for (const list of this.idle.values()) {
      for (const c of list.slice()) if (c.idleSince < cutoff) c.socket.destroy();
    }
  }

  close(): void {
    this.http2.close();
    clearInterval(this.sweeper);
    for (const list of this.idle.values()) for (const c of list) c.socket.destroy();
    this.idle.clear();
  }
}
