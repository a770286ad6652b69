// Upstream HTTP/2 connection pool (issue 14, Envoy's http2 conn pool): ClientHttp2Sessions per host,
// plaintext h2c or mTLS with ALPN h2; requests are streams spread over sessions (a session takes up to
// the peer's SETTINGS_MAX_CONCURRENT_STREAMS, then another one opens, up to the cluster's max_connections;
// past that requests wait in the pending queue, bounded by max_pending_requests).
import http2 from 'node:http2';
import net from 'node:net';
import type tls from 'node:tls';
import type { Cluster } from '../cluster/cluster';
import type { Host } from '../cluster/host';
import type { Counter } from '../stats/store';
import { connectUpstreamTls, countHandshake, describeTls, PLAINTEXT_TRANSPORT, transportFailureReason, UPSTREAM_ALPN_H2, type SecretLookup, type UpstreamTlsSettings } from '../tls/upstream-tls';

/** Streams a session takes before the peer's SETTINGS say how many it allows (nghttp2's initial value). */
export const INITIAL_STREAM_CAPACITY = 100;
/** Upper bound whatever the peer announces (its default is unlimited): a session's memory stays bounded. */
export const MAX_STREAMS_PER_SESSION = 1000;

/** The peer negotiated something other than h2 over TLS: the session cannot be used (a connect failure). */
export class AlpnMismatchError extends Error {
  readonly code = 'MESH_TLS_NO_H2';
  constructor(negotiated: string | false) {
    super(`the peer did not negotiate h2 by ALPN (got ${negotiated === false ? 'none' : negotiated}); an http2 cluster needs an HTTP/2 endpoint`);
  }
}

/** Who waits for a stream slot (the HTTP/2 upstream codec of one try). */
export interface Http2PoolWaiter {
  /** A slot on `session` is taken for the waiter (its host may differ from the one it asked for). */
  onSessionReady(session: Http2UpstreamSession): void;
}

interface Pending { cluster: Cluster; host: Host; waiter: Http2PoolWaiter; release: () => void }

/** One HTTP/2 connection to an upstream host; `active` streams share it. */
export class Http2UpstreamSession {
  readonly session: http2.ClientHttp2Session;
  /** the h2 connection is up (for TLS: handshake, identity check and ALPN h2 done) */
  connected = false;
  closed = false;
  /** GOAWAY received, or draining: no new stream goes on it */
  goingAway = false;
  active = 0;
  /** streams the peer allows at once (SETTINGS_MAX_CONCURRENT_STREAMS), capped */
  capacity = INITIAL_STREAM_CAPACITY;
  idleSince = Date.now();
  transport = PLAINTEXT_TRANSPORT;
  /** the first error the socket or session saw (the reason of a connect failure) */
  error: Error | undefined;
  private tcpConnected = false;

  constructor(readonly host: Host, readonly cluster: Cluster, private readonly pool: Http2Pool, readonly tls: UpstreamTlsSettings | undefined) {
    // until its SETTINGS arrive, a new session takes what the host's last session was allowed
    this.capacity = pool.learnedCapacity.get(host) ?? INITIAL_STREAM_CAPACITY;
    const socket = tls ? connectUpstreamTls(host, tls, pool.secrets, UPSTREAM_ALPN_H2) : net.connect({ host: host.address, port: host.port });
    socket.setNoDelay?.(true);
    socket.setTimeout(cluster.connectTimeoutMs);
    socket.on('timeout', () => { if (!this.connected) socket.destroy(new Error('upstream connect timeout')); });
    socket.on('error', (err) => { this.error ??= err; });
    socket.once('connect', () => { this.tcpConnected = true; });
    this.session = http2.connect(`http://${host.address.includes(':') ? `[${host.address}]` : host.address}:${host.port}`, {
      createConnection: () => socket,
      // our side's limits: bounded memory per session whatever the upstream sends
      maxSessionMemory: 32,
      maxHeaderListPairs: 256,
      settings: { enablePush: false },
    });
    const s = this.session;
    s.on('connect', () => {
      if (tls && s.alpnProtocol !== 'h2') {
        const err = new AlpnMismatchError((socket as tls.TLSSocket).alpnProtocol ?? false);
        this.error ??= err;
        s.destroy(err);
        return;
      }
      this.connected = true;
      socket.setTimeout(0);
      if (tls) {
        const { protocol, peer } = describeTls(socket as tls.TLSSocket);
        this.transport = `tls ${protocol} peer=${peer ?? '-'}`;
        countHandshake(cluster.statsStore, cluster.name, undefined, true);
      }
    });
    s.on('remoteSettings', (settings) => {
      const max = settings.maxConcurrentStreams;
      this.capacity = max === undefined ? MAX_STREAMS_PER_SESSION : Math.max(0, Math.min(max, MAX_STREAMS_PER_SESSION));
      pool.learnedCapacity.set(host, this.capacity);
      pool.dispatchCluster(cluster);
    });
    // the upstream drains (or restarts): streams above its last stream id are refused by nghttp2 (the router
    // re-sends them), the ones in flight finish; nothing new goes here, the next request opens a new session
    s.on('goaway', () => { this.goingAway = true; pool.sessionUnusable(this); });
    s.on('error', (err) => { this.error ??= err; });
    s.on('close', () => this.onClose());
  }

  get available(): boolean { return !this.closed && !this.goingAway && !this.session.destroyed && this.active < this.capacity; }

  /** Why it never connected (Envoy's %UPSTREAM_TRANSPORT_FAILURE_REASON% for TLS), for the router's 503 UF body. */
  get failureReason(): string | undefined {
    if (this.connected || !this.tls) return undefined;
    return transportFailureReason(this.error);
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.tls && !this.connected && (this.tcpConnected || (this.error as NodeJS.ErrnoException | undefined)?.code === 'MESH_TLS_NO_SECRET')) {
      countHandshake(this.cluster.statsStore, this.cluster.name, this.error, false);
    }
    this.pool.forget(this);
  }
}

/**
 * Per-host HTTP/2 sessions. A stream slot is taken with `acquire` (or `enqueue` when max_connections is
 * reached) and given back with `releaseStream`; sessions without streams for `idleTimeoutMs` are closed by
 * a sweep.
 */
export class Http2Pool {
  private readonly sessions = new Map<Host, Http2UpstreamSession[]>();
  private readonly pending = new Map<Cluster, Pending[]>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly http2Total = new WeakMap<Cluster, Counter>();
  /** SETTINGS_MAX_CONCURRENT_STREAMS each host announced last (a new session assumes it until its own SETTINGS arrive) */
  readonly learnedCapacity = new WeakMap<Host, number>();
  secrets: SecretLookup | undefined;

  constructor(private readonly idleTimeoutMs = 60_000) {
    this.sweeper = setInterval(() => this.sweep(), Math.min(5000, idleTimeoutMs));
    this.sweeper.unref();
  }

  /**
   * A stream slot on a session to `host` (an existing one with room, or a new one). Undefined when the
   * cluster's max_connections refuses a new session (`upstream_cx_overflow` counted): queue with `enqueue`.
   */
  acquire(cluster: Cluster, host: Host): Http2UpstreamSession | undefined {
    const s = this.withRoom(host, cluster);
    if (s) return this.take(s);
    if (cluster.circuitBreakers?.canOpenConnection && !cluster.circuitBreakers.canOpenConnection()) {
      cluster.stats.upstream_cx_overflow.inc();
      return undefined;
    }
    return this.take(this.open(cluster, host));
  }

  private withRoom(host: Host, cluster: Cluster): Http2UpstreamSession | undefined {
    const list = this.sessions.get(host);
    if (!list) return undefined;
    // never a plaintext session for an mTLS host or the other way round (the cluster's tls changed)
    const wanted = host.identity === undefined ? undefined : cluster.upstreamTls;
    for (const s of list) if (s.available && s.tls === wanted && s.cluster === cluster) return s;
    return undefined;
  }

  private take(s: Http2UpstreamSession): Http2UpstreamSession {
    s.active++;
    s.host.stats.rq_active++;
    return s;
  }

  private open(cluster: Cluster, host: Host): Http2UpstreamSession {
    // Istio's auto mTLS, as the HTTP/1 pool: TLS to an endpoint with a registered identity when the cluster originates it
    const tlsSettings = host.identity === undefined ? undefined : cluster.upstreamTls;
    const s = new Http2UpstreamSession(host, cluster, this, tlsSettings);
    let list = this.sessions.get(host);
    if (!list) { list = []; this.sessions.set(host, list); }
    list.push(s);
    host.stats.cx_total++;
    host.stats.cx_active++;
    cluster.stats.upstream_cx_total.inc();
    cluster.stats.upstream_cx_active.inc();
    let c = this.http2Total.get(cluster);
    if (!c) { c = cluster.statsStore.counter('cluster.', cluster.name, 'upstream_cx_http2_total'); this.http2Total.set(cluster, c); }
    c.inc();
    return s;
  }

  /** Envoy's pending queue (max_pending_requests); undefined = full (`upstream_rq_pending_overflow` is the caller's). */
  enqueue(cluster: Cluster, host: Host, waiter: Http2PoolWaiter): object | undefined {
    const release = cluster.circuitBreakers?.tryAcquirePending?.();
    if (!release) return undefined;
    const p: Pending = { cluster, host, waiter, release };
    let q = this.pending.get(cluster);
    if (!q) { q = []; this.pending.set(cluster, q); }
    q.push(p);
    cluster.stats.upstream_rq_pending_total.inc();
    cluster.stats.upstream_rq_pending_active.inc();
    return p;
  }

  /** The waiter gave up (route timeout, client gone). */
  cancelPending(cluster: Cluster, ticket: object): void {
    const q = this.pending.get(cluster);
    const i = q ? q.indexOf(ticket as Pending) : -1;
    if (i < 0) return;
    q!.splice(i, 1);
    if (q!.length === 0) this.pending.delete(cluster);
    (ticket as Pending).release();
    cluster.stats.upstream_rq_pending_active.dec();
  }

  /** A stream ended (complete, reset or aborted): its slot is free. */
  releaseStream(s: Http2UpstreamSession): void {
    s.active--;
    s.host.stats.rq_active--;
    if (s.active === 0) {
      s.idleSince = Date.now();
      // a session the upstream is draining, or of a host that left, closes with its last stream
      if (s.goingAway || !s.cluster.hosts.includes(s.host)) { s.session.close(); return; }
    }
    if (this.pending.size > 0) this.dispatchCluster(s.cluster);
  }

  /** Hands queued requests of `cluster` a slot, in order (a slot freed, a session closed, the peer raised its limit). */
  dispatchCluster(cluster: Cluster): void {
    const q = this.pending.get(cluster);
    while (q && q.length > 0) {
      const w = q[0]!;
      let s = this.withRoom(w.host, cluster);
      // a session to another host of the cluster serves too
      for (let i = 0; !s && i < cluster.hosts.length; i++) s = this.withRoom(cluster.hosts[i]!, cluster);
      if (!s) {
        if (cluster.circuitBreakers?.canOpenConnection && !cluster.circuitBreakers.canOpenConnection()) return;
        const host = cluster.hosts.includes(w.host) ? w.host : cluster.hosts[0];
        if (!host) return;
        s = this.open(cluster, host);
      }
      q.shift();
      if (q.length === 0) this.pending.delete(cluster);
      w.release();
      cluster.stats.upstream_rq_pending_active.dec();
      w.waiter.onSessionReady(this.take(s));
    }
  }

  /** GOAWAY: a session stops taking streams; it closes once its last stream ends. */
  sessionUnusable(s: Http2UpstreamSession): void {
    if (s.active === 0) s.session.close();
    if (this.pending.size > 0) this.dispatchCluster(s.cluster);
  }

  /** Called by the session itself when it closed. */
  forget(s: Http2UpstreamSession): void {
    s.host.stats.cx_active--;
    s.cluster.stats.upstream_cx_active.dec();
    s.cluster.stats.upstream_cx_destroy.inc();
    if (!s.connected) {
      s.host.stats.cx_connect_fail++;
      s.cluster.stats.upstream_cx_connect_fail.inc();
    }
    const list = this.sessions.get(s.host);
    if (list) {
      const i = list.indexOf(s);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.sessions.delete(s.host);
    }
    if (this.pending.size > 0) this.dispatchCluster(s.cluster);
  }

  /** Sessions of hosts that left their cluster: idle ones close now, busy ones after their last stream. */
  closeHosts(hosts: Host[]): void {
    for (const h of hosts) {
      for (const s of this.sessions.get(h) ?? []) {
        s.goingAway = true;
        if (s.active === 0) s.session.close();
      }
    }
  }

  /** Every session (for drain, tests and /clusters). */
  sessionCount(): number {
    let n = 0;
    for (const l of this.sessions.values()) n += l.length;
    return n;
  }

  private sweep(): void {
    const cutoff = Date.now() - this.idleTimeoutMs;
    for (const list of this.sessions.values()) {
      for (const s of list.slice()) if (s.active === 0 && s.idleSince < cutoff) s.session.close();
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    for (const list of this.sessions.values()) for (const s of list) s.session.destroy();
    this.sessions.clear();
  }
}
