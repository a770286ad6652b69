import net from 'node:net';
import { createAdminServer, createLogger, type AdminServer, type MeshLogger } from '@mesh-agent/admin-kit';
import { BLACKHOLE_CLUSTER, ConfigError, MeshError, parseConfig, proxyBootstrapSchema, type RegistrySnapshot } from '@mesh-agent/shared-config';
import { Cluster } from './cluster/cluster';
import { localityOfMetadata } from './cluster/locality';
import type { Host } from './cluster/host';
import type { ClusterConfig, ProxyBootstrap } from './config/types';
import { classifyConnection, outboundDestinationList, stripV4Mapped, type ConnectionOrigin } from './http/connection-origin';
import { Http1ServerCodec } from './http/codec/http1-server-codec';
import { PrefaceSniffer } from './http/codec/http2-preface';
import { Http2ServerConnection } from './http/codec/http2-server-codec';
import { ActiveStream } from './http/conn-manager/active-stream';
import type { DownstreamConnectionHandle } from './http/codec/types';
import type { RequestHead } from './http/head-parser';
import { CompiledRbac } from './http/rbac';
import { LogLimiter } from './observability/log-limiter';
import { InboundAcceptor, listenerTlsStats, PLAINTEXT, type DownstreamTransport } from './tls/inbound-tls';
import { refreshCertGauges } from './admin/certs';
import { registerAdminRoutes } from './admin/register';
import { AccessLogger, AccessLogOpenError } from './observability/access-log';
import { ProxyTracing, resolveTracing } from './observability/tracing';
import { originalDestination, originalDstStatus } from './original-dst';
import { createRouteStats } from './routing/route-stats';
import { RouteTable } from './routing/router';
import type { ConfigSnapshot, HttpConnManagerStats, InboundPortState, ProxyRuntime, ResolvedLimits } from './runtime';
import { StatsStore, type Gauge } from './stats/store';
import { SecretStore } from './tls/secret-store';
import { UpstreamPool } from './upstream/pool';
import { UpgradeForwarder } from './upstream/upgrade';
import { attachResilience } from './resilience/cluster-resilience';
import { TcpProxy } from './tcp/tcp-proxy';
import { sniffProtocol } from './tcp/protocol-sniffer';

export type ServerState = 'LIVE' | 'DRAINING' | 'PRE_INITIALIZING' | 'INITIALIZING';

export interface ProxyOptions {
  /** Listening sockets handed over by a parent (the agent); otherwise the proxy binds its own. */
  listenerHandle?: net.Server;
  adminHandle?: net.Server;
  /** false: no admin server (embedding without it). */
  admin?: boolean;
  logger?: MeshLogger;
  /** Where access log lines go instead of `accessLog.path` (tests). */
  accessLogStream?: NodeJS.WritableStream;
  restartEpoch?: number;
  /** Called by POST /quitquitquit after the drain (the CLI exits the process). */
  onQuit?: () => void;
}

export interface ListenAddress { address: string; port: number }

const DEFAULT_LIMITS: ResolvedLimits = { maxHeadersBytes: 60 * 1024, maxHeadersCount: 100, headersTimeoutMs: 10_000, idleTimeoutMs: 300_000, streamIdleTimeoutMs: 300_000,
  http2MaxConcurrentStreams: 100, http2InitialStreamWindowBytes: 65_535, protocolDetectionTimeoutMs: 100, tcpIdleTimeoutMs: 3_600_000 };

export const PROXY_VERSION = '0.1.0';

/** Refused connections are logged at most this often (with the count since the last line): a scan must not flood the log. */
export const REFUSED_LOG_INTERVAL_MS = 10_000;

function parseClusterName(name: string): { direction: 'in' | 'out'; port: number; service: string } | undefined {
  const m = /^(in|out)#(\d+)#(.+)$/.exec(name);
  return m ? { direction: m[1] as 'in' | 'out', port: Number(m[2]), service: m[3]! } : undefined;
}

/**
 * The data plane: one listener (inbound and outbound), the route table, the
 * clusters and their upstream pools, and Envoy's admin interface.
 */
export class MeshProxy {
  readonly stats = new StatsStore();
  readonly logger: MeshLogger;
  readonly pool = new UpstreamPool();
  /** TLS secrets of the bootstrap (file-sourced SDS, issue 13): inbound termination and outbound mTLS read them at handshake time. */
  readonly secrets: SecretStore;
  config: ProxyBootstrap;
  state: ServerState = 'PRE_INITIALIZING';
  /** POST /healthcheck/fail sets it; the data plane reads it from the runtime. */
  get healthCheckFailed(): boolean { return this.runtime.healthCheckFailed; }
  set healthCheckFailed(failed: boolean) { this.runtime.healthCheckFailed = failed; }
  readonly startedAt = Date.now();
  readonly runtime: ProxyRuntime;
  /** Runtime layer of /runtime and /runtime_modify. */
  readonly runtimeValues = new Map<string, string>();
  readonly restartEpoch: number;
  registry: RegistrySnapshot | undefined;
  configVersion: string;
  lastUpdated = new Date();

  private readonly clusters = new Map<string, Cluster>();
  /** Downstream connections by codec (HTTP/1: Http1ServerCodec); swept, drained and cut through DownstreamConnectionHandle. */
  private readonly connections = new Set<DownstreamConnectionHandle>();
  private readonly upgraded = new Set<net.Socket>();
  /** Connections whose first bytes are awaited: HTTP/1, or HTTP/2 with prior knowledge (h2c)? */
  private readonly sniffer = new PrefaceSniffer((err, where) => this.runtime.onInternalError(err, where));
  private readonly upgrades = new UpgradeForwarder();
  private server: net.Server | undefined;
  private admin: AdminServer | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  private listenerAddress: ListenAddress | undefined;
  private readonly uptime: Gauge;
  private closed = false;
  /** Envoy's (and Istio's) BlackHoleCluster: no endpoints; counts what the listener refuses (502 NR). */
  readonly blackhole: Cluster;
  private refusedSinceLog = 0;
  private readonly rbacLog = new LogLimiter(REFUSED_LOG_INTERVAL_MS);
  private readonly http2ErrorLog = new LogLimiter(REFUSED_LOG_INTERVAL_MS);
  /** mTLS on inbound ports and the direct path (issue 13); made in start() once the listener's stat scope is known. */
  private inboundAcceptor: InboundAcceptor | undefined;
  private lastRefusedLog = 0;
  /** Envoy's tcp_proxy sessions (issue 15): outboundTcp VIP:ports and inbound ports declared tcp (or sniffed as not HTTP). */
  readonly tcp: TcpProxy;
  /** Inbound `auto` connections whose first bytes are awaited (bounded by protocolDetectionTimeoutMs). */
  private readonly sniffing = new Map<net.Socket, { cancel(): void }>();

  constructor(config: unknown, readonly opts: ProxyOptions = {}) {
    this.config = MeshProxy.validate(config);
    this.configVersion = this.config.version ?? '1';
    this.restartEpoch = opts.restartEpoch ?? 0;
    this.logger = opts.logger ?? createLogger({ component: 'envoy', scopes: ['admin', 'config', 'connection', 'http', 'upstream', 'main'], level: 'info', destination: process.stderr });
    this.uptime = this.stats.gauge('server.', undefined, 'uptime');
    this.secrets = new SecretStore(this.stats, {
      onUpdated: (secret) => this.logger.scope('config').info({ secret: secret.name, version: secret.version, identity: secret.identity, serial: secret.chain[0]?.serialNumber, notAfter: secret.chain[0]?.expirationTime }, 'secret reloaded from its files; new handshakes use it'),
      onRejected: (err) => {
        this.logger.scope('config').error({ secret: err.secret, field: err.field, path: err.path, err: err.message }, 'secret files changed but cannot be used; the previous certificate stays in use');
        this.admin?.recordError(err, `secrets.${err.secret}`);
      },
    });
    // before anything else: an unusable secret is a config error at start-up
    this.secrets.configure(this.config.secrets ?? []);
    this.pool.secrets = this.secrets;
    this.upgrades.secrets = this.secrets;
    const listenerName = this.config.listener?.name ?? 'virtual';
    const http = {} as Record<string, unknown>;
    for (const leaf of ['downstream_cx_total', 'downstream_cx_destroy', 'downstream_cx_protocol_error', 'downstream_rq_total', 'downstream_rq_completed',
      'downstream_rq_1xx', 'downstream_rq_2xx', 'downstream_rq_3xx', 'downstream_rq_4xx', 'downstream_rq_5xx', 'downstream_rq_timeout', 'downstream_rq_idle_timeout',
      'downstream_rq_ws_on_non_ws_route', 'downstream_cx_upgrades_total', 'downstream_rq_non_relative_path', 'no_route', 'no_cluster',
      'downstream_cx_http1_total', 'downstream_cx_http2_total', 'downstream_rq_http1_total', 'downstream_rq_http2_total']) http[leaf] = this.stats.counter('http.', listenerName, leaf);
    for (const leaf of ['downstream_cx_active', 'downstream_rq_active', 'downstream_cx_http2_active']) http[leaf] = this.stats.gauge('http.', listenerName, leaf);
    const limits = { ...DEFAULT_LIMITS, ...((this.config as { limits?: Partial<ResolvedLimits> }).limits ?? {}) };
    this.blackhole = new Cluster({ name: BLACKHOLE_CLUSTER, endpoints: [] }, this.stats);
    this.runtime = {
      snapshot: this.buildSnapshot(this.config),
      pool: this.pool,
      secrets: this.secrets,
      limits,
      accessLog: this.makeAccessLog(this.config),
      tracing: new ProxyTracing(resolveTracing(this.config.tracing, this.config.node), this.stats, this.logger),
      http: http as unknown as HttpConnManagerStats,
      routeStats: createRouteStats(this.stats, listenerName),
      // Replaced in start() once the listener's address is known.
      listenerStats: { downstream_cx_total: this.stats.counter('listener.', 'pending', 'downstream_cx_total'), downstream_cx_active: this.stats.gauge('listener.', 'pending', 'downstream_cx_active') },
      originalDst: originalDestination,
      blackhole: this.blackhole,
      onRefused: (peer, reason) => this.noteRefused(peer, reason),
      onHttp2SessionError: (peer, err) => this.noteHttp2SessionError(peer, err),
      onRbacDenied: (d) => this.noteRbacDenied(d),
      onInternalError: (err, where) => this.logger.scope('connection').error({ err, where }, 'internal error in a connection callback; the connection was closed'),
      handleUpgrade: (head, path, socket, rest, cluster, host) => this.forwardUpgrade(head, path, socket, rest, cluster, host),
      handleConnect: (socket, rest, cluster) => this.tunnelConnect(socket, rest, cluster),
      draining: false,
      healthCheckFailed: false,
    };
    this.stats.removeScope('listener.', 'pending');
    this.tcp = new TcpProxy({
      stats: this.stats,
      accessLog: () => this.runtime.accessLog,
      idleTimeoutMs: () => this.runtime.limits.tcpIdleTimeoutMs,
      onInternalError: (err, where) => this.runtime.onInternalError(err, where),
    });
  }

  static validate(config: unknown): ProxyBootstrap {
    return parseConfig(proxyBootstrapSchema, config, { source: 'proxy bootstrap' }) as unknown as ProxyBootstrap;
  }

  /**
   * Opens the access logs (accessLog for every request, accessLogs by direction); a path that cannot be
   * opened is a config error naming it (nothing applied), never a crash later. Format strings are compiled here, once.
   */
  private makeAccessLog(config: ProxyBootstrap): AccessLogger | undefined {
    const logs = [...(config.accessLog ? [config.accessLog] : []), ...(config.accessLogs ?? [])];
    if (logs.length === 0) return undefined;
    const pathOf = (index: number) => (config.accessLog ? (index === 0 ? 'accessLog.path' : `accessLogs[${index - 1}].path`) : `accessLogs[${index}].path`);
    try {
      return new AccessLogger({
        logs, stream: this.opts.accessLogStream,
        onError: (err, path) => this.logger.scope('main').error({ err: err.message, path }, 'access log write failed; access logging stops until the config changes'),
      });
    } catch (err) {
      if (!(err instanceof AccessLogOpenError)) throw err;
      throw new ConfigError([{ path: pathOf(err.index), message: `cannot open ${JSON.stringify(err.path)} for appending: ${err.cause.message}` }],
        { source: 'proxy bootstrap', hint: 'choose a path in an existing directory that the proxy user can write, or /dev/stdout' });
    }
  }

  /** Clusters are kept by name across updates so host state (stats, health flags, pools) survives. */
  private buildSnapshot(config: ProxyBootstrap): ConfigSnapshot {
    const next = new Map<string, Cluster>();
    for (const cc of config.clusters ?? []) {
      const withEndpoints = this.endpointsFromRegistry(cc);
      let cluster = this.clusters.get(cc.name);
      if (cluster) cluster.reconfigure(withEndpoints, config.node?.locality);
      else {
        cluster = new Cluster(withEndpoints, this.stats, config.node?.locality);
        cluster.onHostsRemoved = (hosts) => this.pool.closeHosts(hosts);
      }
      cluster.addedViaApi = (cc.endpoints ?? []).length === 0 && this.registry !== undefined;
      attachResilience(cluster); // breakers, outlier detection, active health checks (issue 6)
      next.set(cc.name, cluster);
    }
    for (const [name, old] of this.clusters) {
      if (!next.has(name)) {
        old.close();
        this.pool.closeHosts(old.hosts);
        this.stats.removeScope('cluster.', name);
      }
    }
    this.clusters.clear();
    for (const [k, v] of next) this.clusters.set(k, v);
    // RBAC policies compiled once per snapshot (issue 13)
    const inboundPorts = new Map<number, InboundPortState>((config.inbound ?? []).map((i) => [i.port, {
      port: i.port, cluster: i.cluster, protocol: i.protocol ?? 'http', service: parseClusterName(i.cluster)?.service, tls: i.tls,
      rbac: i.rbac ? new CompiledRbac(i.port, i.rbac.policies ?? [], this.stats) : undefined,
    }]));
    return {
      version: config.version ?? '1',
      // the previous table's rate limit buckets carry over (an endpoint update must not refill them)
      routes: new RouteTable(config.routes?.virtualHosts ?? [], (this.runtime as ProxyRuntime | undefined)?.snapshot.routes),
      clusters: next,
      inboundByPort: new Map((config.inbound ?? []).map((i) => [i.port, i.cluster])),
      inboundPorts,
      inboundTlsPorts: [...inboundPorts.values()].filter((i) => i.tls !== undefined && i.tls.mode !== 'disable').length,
      localAddresses: new Set(config.localAddresses ?? []),
      outboundDestinations: outboundDestinationList(config.outboundCidrs ?? []),
      outboundTcp: new Map((config.outboundTcp ?? []).map((t) => [`${t.address}:${t.port}`, { cluster: t.cluster, protocol: t.protocol ?? 'tcp' }])),
      connectTargets: new Map((config.outboundTcp ?? []).flatMap((t) => (t.domains ?? []).map((d) => [d.toLowerCase(), t.cluster] as const))),
    };
  }

  /** A refused connection (BlackHoleCluster): one warning per REFUSED_LOG_INTERVAL_MS, with how many since the last one. */
  private noteRefused(peer: string, reason: string): void {
    this.refusedSinceLog++;
    const now = Date.now();
    if (now - this.lastRefusedLog < REFUSED_LOG_INTERVAL_MS) return;
    this.logger.scope('connection').warn({ peer, reason, refused: this.refusedSinceLog, cluster: BLACKHOLE_CLUSTER },
      'refused a connection the capture rules did not bring (502 NR); see docs/troubleshooting.md, "502 NR from 15001"');
    this.refusedSinceLog = 0;
    this.lastRefusedLog = now;
  }

  /** An HTTP/2 session ended by the codec (GOAWAY sent): one warning per REFUSED_LOG_INTERVAL_MS naming the last peer and nghttp2's reason, with the count since the last line. */
  private noteHttp2SessionError(peer: string, err: Error): void {
    const ended = this.http2ErrorLog.note();
    if (ended === undefined) return;
    this.logger.scope('connection').warn({ peer, code: (err as NodeJS.ErrnoException).code, reason: err.message, ended },
      'HTTP/2 session ended by a protocol error or a flood limit (GOAWAY sent; http.<listener>.downstream_cx_protocol_error counts them)');
  }

  /** A request denied by RBAC: one warning per REFUSED_LOG_INTERVAL_MS naming the last caller, with the count since the last line. */
  private noteRbacDenied(d: { port: number; principal: string | undefined; method: string; path: string; peer: string }): void {
    const denied = this.rbacLog.note();
    if (denied === undefined) return;
    this.logger.scope('http').warn({ identity: d.principal ?? '(plaintext: no identity)', method: d.method, path: d.path, port: d.port, peer: d.peer, denied },
      'RBAC denied a request (403 RBAC: access denied); see docs/troubleshooting.md, "403 RBAC: access denied"');
  }

  /** A cluster without static endpoints takes the registry's instances of the service in its name (`out#PORT#SERVICE`). */
  private endpointsFromRegistry(cc: ClusterConfig): ClusterConfig {
    if ((cc.endpoints ?? []).length > 0 || !this.registry) return cc;
    const parsed = parseClusterName(cc.name);
    if (!parsed) return cc;
    const service = this.registry.services.find((s) => s.name === parsed.service);
    if (!service) return { ...cc, endpoints: [] };
    const all = service.instances;
    const onPort = all.filter((i) => i.port === parsed.port);
    const chosen = onPort.length > 0 ? onPort : all;
    return { ...cc, endpoints: chosen.map((i) => ({ address: i.address, port: i.port, weight: i.weight ?? 1, healthy: i.healthy !== false, metadata: i.metadata, locality: localityOfMetadata(i.metadata) })) };
  }

  /** Replaces routes, clusters and endpoints atomically; requests in flight finish on the snapshot they started with. */
  update(config: unknown): void {
    const valid = MeshProxy.validate(config);
    const oldLog = this.runtime.accessLog;
    const logChanged = JSON.stringify([valid.accessLog ?? null, valid.accessLogs ?? []]) !== JSON.stringify([this.config.accessLog ?? null, this.config.accessLogs ?? []]);
    // opened before anything changes: a bad path rejects the whole update
    const nextLog = logChanged ? this.makeAccessLog(valid) : oldLog;
    const tracing = resolveTracing(valid.tracing, valid.node);
    const nextTracing = this.runtime.tracing.sameAs(tracing) ? this.runtime.tracing : new ProxyTracing(tracing, this.stats, this.logger);
    try {
      // all or nothing, before routes and clusters change: a bad secret rejects the whole update
      this.secrets.configure(valid.secrets ?? []);
    } catch (err) {
      if (nextLog !== oldLog) void nextLog?.close();
      if (nextTracing !== this.runtime.tracing) void nextTracing.shutdown();
      throw err;
    }
    this.config = valid;
    // a changed tracing section gets a new exporter (made before anything else changed); the old one flushes what it holds
    if (nextTracing !== this.runtime.tracing) {
      void this.runtime.tracing.shutdown();
      this.runtime.tracing = nextTracing;
    }
    this.runtime.snapshot = this.buildSnapshot(valid);
    this.configVersion = valid.version ?? '1';
    this.lastUpdated = new Date();
    if (logChanged) {
      this.runtime.accessLog = nextLog;
      void oldLog?.close();
    }
    for (const c of this.clusters.values()) c.stats.update_success.inc();
  }

  /** Endpoints pushed by the agent from the registry. */
  updateRegistry(snapshot: RegistrySnapshot): void {
    this.registry = snapshot;
    this.runtime.snapshot = this.buildSnapshot(this.config);
    this.lastUpdated = new Date();
  }

  get clusterMap(): ReadonlyMap<string, Cluster> { return this.clusters; }
  /** What /clusters lists: the configured clusters, then BlackHoleCluster (as Istio's Envoy does). */
  get adminClusters(): Cluster[] { return [...this.clusters.values(), this.blackhole]; }
  get listener(): ListenAddress | undefined { return this.listenerAddress; }
  /** What /clusters shows per cluster piped as bytes: outboundTcp VIP:ports and inbound tcp/auto ports. */
  get tcpRoutes(): Map<string, string[]> {
    const routes = new Map<string, string[]>();
    const add = (cluster: string, what: string) => routes.set(cluster, [...(routes.get(cluster) ?? []), what]);
    for (const t of this.config.outboundTcp ?? []) add(t.cluster, (t.protocol ?? 'tcp') === 'auto' ? `${t.address}:${t.port}:auto` : `${t.address}:${t.port}`);
    for (const i of this.config.inbound ?? []) if ((i.protocol ?? 'http') !== 'http') add(i.cluster, `inbound:${i.port}:${i.protocol}`);
    return routes;
  }
  get adminAddress(): ListenAddress | undefined { return this.admin?.address; }
  get activeConnections(): number { return this.connections.size + this.upgraded.size + this.sniffer.size + this.tcp.size + this.sniffing.size; }
  /** Whether an upgraded (WebSocket) connection is still open. */
  get upgradedOpen(): boolean { return this.upgraded.size > 0; }

  refreshServerStats(): void {
    this.uptime.set(Math.floor((Date.now() - this.startedAt) / 1000));
    this.stats.gauge('server.', undefined, 'live').set(this.state === 'LIVE' ? 1 : 0);
    this.stats.gauge('server.', undefined, 'state').set(this.state === 'LIVE' ? 0 : this.state === 'DRAINING' ? 1 : 2);
    this.stats.gauge('server.', undefined, 'memory_allocated').set(process.memoryUsage().heapUsed);
    this.stats.gauge('server.', undefined, 'memory_heap_size').set(process.memoryUsage().heapTotal);
    // Envoy's physical size; here the RSS, which also counts socket Buffers (what a TCP slow reader would grow)
    this.stats.gauge('server.', undefined, 'memory_physical_size').set(process.memoryUsage().rss);
    this.stats.gauge('server.', undefined, 'total_connections').set(this.activeConnections);
    this.stats.gauge('server.', undefined, 'concurrency').set(1);
    this.stats.gauge('server.', undefined, 'hot_restart_epoch').set(this.restartEpoch);
    refreshCertGauges(this.stats, this.secrets.all());
  }

  async start(): Promise<{ listener: ListenAddress; admin: ListenAddress | undefined }> {
    this.state = 'INITIALIZING';
    const server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    server.on('error', (err) => this.logger.scope('main').error({ err }, 'listener error'));
    this.server = server;
    const lc = this.config.listener ?? {};
    try {
      if (this.opts.listenerHandle) {
        await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(this.opts.listenerHandle, () => { server.off('error', reject); resolve(); }); });
      } else {
        await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(lc.port ?? 15001, lc.address ?? '0.0.0.0', () => { server.off('error', reject); resolve(); }); });
      }
    } catch (err) {
      throw new MeshError('MESH_PROXY_LISTEN_FAILED', `cannot listen on ${lc.address ?? '0.0.0.0'}:${lc.port ?? 15001}: ${(err as Error).message}`, { hint: 'choose a free port in listener.port, or stop the process that holds it', cause: err });
    }
    const addr = server.address() as net.AddressInfo;
    this.listenerAddress = { address: addr.address, port: addr.port };
    const listenerScope = `${addr.address}_${addr.port}`;
    (this.runtime as { listenerStats: ProxyRuntime['listenerStats'] }).listenerStats = {
      downstream_cx_total: this.stats.counter('listener.', listenerScope, 'downstream_cx_total'),
      downstream_cx_active: this.stats.gauge('listener.', listenerScope, 'downstream_cx_active'),
    };
    this.inboundAcceptor = new InboundAcceptor(this.runtime, listenerTlsStats(this.stats, listenerScope), this.logger, {
      serve: (socket, origin, transport) => this.serve(socket, origin, transport),
      closedUnserved: () => this.runtime.listenerStats.downstream_cx_active.dec(),
    });
    if (this.opts.admin !== false) {
      const admin = createAdminServer({ component: 'envoy', helpStyle: 'envoy', host: this.config.admin?.address ?? '127.0.0.1', port: this.config.admin?.port ?? 15000, logger: this.logger });
      registerAdminRoutes(admin, this);
      try {
        if (this.opts.adminHandle) await admin.listenOn(this.opts.adminHandle);
        else await admin.listen();
      } catch (err) {
        server.close();
        throw new MeshError('MESH_PROXY_ADMIN_LISTEN_FAILED', `cannot start the admin server on ${this.config.admin?.address ?? '127.0.0.1'}:${this.config.admin?.port ?? 15000}: ${(err as Error).message}`, { hint: 'choose a free admin.port', cause: err });
      }
      this.admin = admin;
    }
    this.sweeper = setInterval(() => this.sweep(), 1000);
    this.sweeper.unref();
    const odst = originalDstStatus();
    if (!odst.loaded) {
      this.logger.scope('main').warn({ reason: odst.error },
        'SO_ORIGINAL_DST is unavailable: captured connections cannot be told from direct ones, so only connections from this host are served; others get 502 NR (BlackHoleCluster). Build the addon: pnpm --filter @mesh-agent/proxy build');
    }
    this.state = 'LIVE';
    return { listener: this.listenerAddress, admin: this.admin?.address };
  }

  private accept(socket: net.Socket): void {
    const rt = this.runtime;
    rt.listenerStats.downstream_cx_total.inc();
    rt.listenerStats.downstream_cx_active.inc();
    try {
      const dst = rt.originalDst(socket);
      const origin = classifyConnection(dst, stripV4Mapped(socket.remoteAddress ?? ''), stripV4Mapped(socket.localAddress ?? ''), rt.snapshot);
      // TCP (issue 15): an outboundTcp VIP:port, or an inbound port declared tcp (at once: server-first protocols) or auto (sniffed)
      // (an outbound `auto` VIP:port, a service port declared with no protocol, is sniffed as inbound `auto` is)
      if (origin.kind === 'outbound' && dst.kind === 'redirected' && rt.snapshot.outboundTcp.size > 0) {
        const route = rt.snapshot.outboundTcp.get(`${dst.address}:${dst.port}`);
        if (route?.protocol === 'tcp') { this.startTcp(socket, route.cluster); return; }
        if (route?.protocol === 'auto') { this.sniff(socket, origin, route.cluster); return; }
      } else if (origin.kind === 'inbound') {
        const protocol = rt.snapshot.inboundPorts.get(origin.port)?.protocol;
        if (protocol === 'tcp') { this.startTcp(socket, origin.cluster); return; }
        if (protocol === 'auto') { this.sniff(socket, origin, origin.cluster); return; }
      }
      // a port with mTLS (or TLS to the listener itself): the acceptor reads the first bytes and terminates TLS
      if (this.inboundAcceptor?.take(socket, origin)) return;
      this.serve(socket, origin, PLAINTEXT);
    } catch (err) {
      // a 'connection' callback must never throw: that would end the process
      rt.onInternalError(err, 'accept');
      rt.listenerStats.downstream_cx_active.dec();
      socket.on('error', () => {});
      socket.destroy();
    }
  }

  private startTcp(socket: net.Socket, clusterName: string, initial?: Buffer): void {
    this.tcp.start(socket, this.runtime.snapshot.clusters.get(clusterName), clusterName, () => this.runtime.listenerStats.downstream_cx_active.dec(), initial);
  }

  /**
   * Protocol `auto` (Istio's sniffing), inbound or outbound: HTTP/1, the h2 preface or a TLS ClientHello take
   * today's path (bytes put back); anything else, or silence, is TCP to `tcpCluster`. On an inbound port in
   * strict mTLS, sniffed plaintext TCP goes to the TLS acceptor instead, which refuses it (NFCF): sniffing
   * must not open a plaintext way around strict mode.
   */
  private sniff(socket: net.Socket, origin: ConnectionOrigin, tcpCluster: string): void {
    const rt = this.runtime;
    const strict = origin.kind === 'inbound' && rt.snapshot.inboundPorts.get(origin.port)?.tls?.mode === 'strict';
    const sniff = sniffProtocol(socket, rt.limits.protocolDetectionTimeoutMs, (protocol, read) => {
      this.sniffing.delete(socket);
      if (protocol === 'tcp' && !strict) { this.startTcp(socket, tcpCluster, read); return; }
      if (read) socket.unshift(read);
      if (!this.inboundAcceptor?.take(socket, origin)) this.serve(socket, origin, PLAINTEXT);
      socket.resume();
    }, () => { this.sniffing.delete(socket); rt.listenerStats.downstream_cx_active.dec(); }, rt.onInternalError);
    this.sniffing.set(socket, sniff);
  }

  /** Hands a classified connection (plaintext, or after its TLS handshake) to the HTTP codec. */
  private serve(socket: net.Socket, origin: ConnectionOrigin, transport: DownstreamTransport): void {
    const rt = this.runtime;
    rt.http.downstream_cx_total.inc();
    rt.http.downstream_cx_active.inc();
    // h2 by ALPN goes straight to HTTP/2; otherwise the first bytes tell h2c (the preface) from HTTP/1
    if (transport.alpn === 'h2') { this.serveCodec(socket, origin, transport, 'http2'); return; }
    this.sniffer.take(socket, {
      // HTTP/1 reads the unshifted bytes once resumed; node:http2 takes them from the buffer itself
      detected: (protocol) => { if (this.serveCodec(socket, origin, transport, protocol) && protocol === 'http1') socket.resume(); },
      gone: () => {
        rt.listenerStats.downstream_cx_active.dec();
        rt.http.downstream_cx_active.dec();
        rt.http.downstream_cx_destroy.inc();
      },
    });
  }

  /** Hands a connection to its codec; false when that failed (the socket is destroyed, counted closed). */
  private serveCodec(socket: net.Socket, origin: ConnectionOrigin, transport: DownstreamTransport, protocol: 'http1' | 'http2'): boolean {
    const rt = this.runtime;
    const closed = (c: DownstreamConnectionHandle): void => {
      this.connections.delete(c);
      rt.listenerStats.downstream_cx_active.dec();
      rt.http.downstream_cx_active.dec();
      rt.http.downstream_cx_destroy.inc();
    };
    let conn: DownstreamConnectionHandle;
    try {
      if (protocol === 'http2') {
        conn = new Http2ServerConnection(socket, rt, origin, transport, (stream) => new ActiveStream(rt, stream), closed);
      } else {
        rt.http.downstream_cx_http1_total.inc();
        conn = new Http1ServerCodec(socket, rt, closed, origin, transport);
      }
    } catch (err) {
      rt.onInternalError(err, 'accept');
      rt.listenerStats.downstream_cx_active.dec();
      rt.http.downstream_cx_active.dec();
      socket.on('error', () => {});
      socket.destroy();
      return false;
    }
    this.connections.add(conn);
    return true;
  }

  private forwardUpgrade(head: RequestHead, path: string, socket: net.Socket, rest: Buffer, cluster: Cluster, host: Host): void {
    // The socket now belongs to http-proxy-3; the connection object is done with it.
    for (const c of this.connections) if (c.socket === socket) { this.connections.delete(c); break; }
    this.upgraded.add(socket);
    cluster.stats.upstream_rq_total.inc();
    host.stats.rq_total++;
    // the downstream connection's own 'close' handler still counts the close (downstream_cx_active): only forget it here
    this.upgrades.forward(head, path, socket, rest, host, () => { this.upgraded.delete(socket); }, host.identity === undefined ? undefined : cluster.upstreamTls);
  }

  /** CONNECT termination: the socket leaves its HTTP connection for a TCP session (the connection's own close handler still counts the close). */
  private tunnelConnect(socket: net.Socket, rest: Buffer, clusterName: string): void {
    for (const c of this.connections) if (c.socket === socket) { this.connections.delete(c); break; }
    this.tcp.start(socket, this.runtime.snapshot.clusters.get(clusterName), clusterName, () => {}, rest, true);
  }

  private sweep(): void {
    const now = Date.now();
    for (const c of this.connections) c.sweep(now);
    // silent like an idle HTTP/1 connection: the idle timeout; stuck inside the preface: the headers timeout
    this.sniffer.sweep(now, this.runtime.limits.idleTimeoutMs, this.runtime.limits.headersTimeoutMs);
  }

  /**
   * Stop accepting, let in-flight requests finish (keep-alive responses carry
   * `connection: close`), close idle connections; resolves when all are gone or
   * after `drainTimeMs`.
   */
  async drain(drainTimeMs = this.config.drainTimeMs ?? 5000): Promise<void> {
    this.state = 'DRAINING';
    this.runtime.draining = true;
    this.server?.close();
    // Idle connections that served a request go once idle for DRAIN_IDLE_GRACE_MS (the sweep), busy ones
    // after their next response, never-used ones after their first (or at the deadline).
    const now = Date.now();
    for (const c of this.connections) c.startDrain(now);
    const deadline = Date.now() + drainTimeMs;
    // a connection still in the preface sniff has not sent its first request yet: it is waited for too
    // TCP sessions are not cut by the drain (issue 15): they go on until they end or the drain time is up
    while ((this.connections.size > 0 || this.sniffer.size > 0 || this.tcp.size > 0 || this.sniffing.size > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    // The drain time is up: what is still open is cut (Envoy's drain manager does the same).
    const cut = [...this.connections].map((c) => new Promise<void>((resolve) => { c.socket.once('close', () => resolve()); c.socket.destroy(); }));
    for (const s of this.upgraded) s.destroy();
    this.sniffer.destroyAll();
    this.tcp.destroyAll();
    for (const s of this.sniffing.values()) s.cancel();
    await Promise.all(cut);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    this.inboundAcceptor?.destroyPending(); // before: server.close() waits for every socket
    this.sniffer.destroyAll();
    this.tcp.destroyAll();
    for (const s of [...this.sniffing.values()]) s.cancel();
    // first: server.close() waits for every connection, and an HTTP/2 client keeps its connection open
    for (const c of this.connections) c.socket.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    for (const s of this.upgraded) s.destroy();
    this.pool.close();
    this.secrets.close();
    this.upgrades.close();
    for (const c of this.clusters.values()) c.close();
    await this.admin?.close();
    await this.runtime.accessLog?.close();
    await this.runtime.tracing.shutdown();
  }
}

export function createProxy(config: unknown, opts?: ProxyOptions): MeshProxy {
  return new MeshProxy(config, opts);
}
