import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { DEFAULT_DNS_TTL, DEFAULT_MESH_VIP, DEFAULT_PORTS, EXIT_CODES, MeshError, loadConfigFile, registrySnapshotSchema } from '@mesh-agent/shared-config';
import { createLogger, type MeshLogger } from '@mesh-agent/admin-kit';
import dnsPacket from 'dns-packet';
import { AnswerCache } from './answer-cache';
import { watchFile } from './file-watch';
import { forwardQuery, queryUdp, UpstreamAttemptError, UpstreamsFailedError, type InFlightIds } from './forwarder';
import { DnsMetrics } from './metrics';
import { ANSWER_SLOT, BatchedUdp, describeSockaddr, errnoError, type NativeUdpStats } from './native-udp';
import { buildNameTable, type MeshService, type NameTable } from './name-table';
import { serveTcpConnection } from './tcp-connection';
import { failureHint, UpstreamHealthBook } from './upstream-health';
import { formatUpstream, isSelf, parseResolvConf, parseUpstream, refuseSelfUpstreams, type Upstream } from './upstreams';
import {
  buildErrorAnswer,
  buildLocalAnswer,
  CLASS_IN,
  parseQuery,
  RCODE_FORMERR,
  RCODE_NOTIMP,
  RCODE_SERVFAIL,
  layoutAnswer,
  TYPE_A,
  queryKey,
  writeLocalAnswer,
  type ParsedQuery,
} from './wire';

export const LOG_SCOPES = ['admin', 'default', 'healthz', 'model'];
/** one local answer in this many is timed for the latency histogram (a power of two) */
export const LOCAL_TIMING_SAMPLE = 16;

export interface ListenOptions {
  address?: string;
  port?: number;
}

/** Everything createMeshDns takes; the fields of DnsConfig (docs/package-apis.md) plus embedding knobs. */
export interface MeshDnsOptions {
  /** UDP and TCP listen address; default 127.0.0.1:55354. IPv6 addresses work too. */
  listen?: ListenOptions;
  meshVip?: string;
  /** extra mesh suffixes besides name, name.ns, name.ns.svc; default [svc.cluster.local] */
  suffixes?: string[];
  /** TTL of mesh answers, seconds; default 30 */
  ttl?: number;
  /** the name table; replace it later with updateNames() */
  services?: MeshService[];
  /** a RegistrySnapshot file (YAML/JSON) whose services are the name table, re-read when it changes */
  namesFile?: string;
  /** 'IP' or 'IP:PORT'; empty or absent: the nameservers of resolvConf, re-read when it changes */
  upstreams?: string[];
  resolvConf?: string;
  /** per upstream attempt; each upstream is tried once, in order */
  upstreamTimeoutMs?: number;
  cacheMaxEntries?: number;
  /** how often resolvConf is polled when inotify misses a change; default 2000 */
  resolvConfPollMs?: number;
  tcpIdleTimeoutMs?: number;
  tcpMaxConnections?: number;
  tcpMaxInFlightPerConnection?: number;
  /** upstream queries pending at once; beyond that new outside queries get SERVFAIL at once */
  maxForwardsInFlight?: number;
  /** listening sockets handed over by a parent (the agent owns the sockets); used instead of binding */
  handles?: { udp?: dgram.Socket; tcp?: net.Server };
  /**
   * Read and answer UDP in batches with recvmmsg/sendmmsg (the native addon) when it is built;
   * default true. false, or the addon missing: Node's dgram, one datagram per call.
   */
  nativeUdp?: boolean;
  logger?: MeshLogger;
}

export interface MeshDnsAddresses {
  udp: { address: string; port: number };
  tcp: { address: string; port: number };
}

/** The newest error, for /latest_error: what happened and, when known, what to do. */
export interface MeshDnsLatestError {
  time: string;
  message: string;
  code?: string;
  hint?: string;
}

export type MeshDnsState = 'INIT' | 'SERVING' | 'DRAINING' | 'CLOSED';

/** How UDP is read and answered: batched by the addon, or by dgram (and why). */
export interface MeshDnsUdpPath {
  path: 'recvmmsg' | 'dgram';
  /** why not recvmmsg */
  reason?: string;
  stats?: NativeUdpStats;
}

const LOOPBACK_LOOKUP = (host: string, _opts: unknown, cb: (err: null, address: string, family: number) => void): void => {
  // Clients' addresses are already IP literals: skip dns.lookup's extra tick on every send.
  cb(null, host, host.includes(':') ? 6 : 4);
};

/**
 * The mesh DNS server: answers mesh names from an atomically swapped table and forwards the rest.
 */
export class MeshDns {
  readonly metrics: DnsMetrics;
  readonly logger: MeshLogger;
  private table: NameTable;
  private readonly cache: AnswerCache;
  private upstreams: Upstream[] = [];
  private upstreamSource: string;
  private configuredUpstreams: Upstream[];
  private readonly upstreamHealth = new UpstreamHealthBook();
  private readonly listen: { address: string; port: number };
  private udp?: dgram.Socket;
  /** the UDP socket's reader and writer when the recvmmsg/sendmmsg addon serves it */
  private batched?: BatchedUdp;
  private dgramReason = 'not started';
  private tcp?: net.Server;
  private readonly tcpSockets = new Set<net.Socket>();
  private stopWatch?: () => void;
  private stopNamesWatch?: () => void;
  private forwardsInFlight = 0;
  /** `ID|name|type` of our upstream queries in flight -> how many (IDs are random: two may collide) */
  private readonly ownQueries = new Map<string, number>();
  private state: MeshDnsState = 'INIT';
  private lastError?: MeshDnsLatestError;
  private tableVersion = 0;
  private tableUpdatedAt = new Date().toISOString();

  constructor(private readonly options: MeshDnsOptions = {}) {
    this.logger = options.logger ?? createLogger({ component: 'mesh-dns', scopes: LOG_SCOPES, level: 'info' });
    this.listen = { address: options.listen?.address ?? '127.0.0.1', port: options.listen?.port ?? DEFAULT_PORTS.dns };
    if (net.isIP(this.listen.address) === 0) {
      throw new MeshError('MESH_DNS_LISTEN_INVALID', `listen.address: "${this.listen.address}" is not an IP address`, { exitCode: EXIT_CODES.usage, hint: 'use e.g. 127.0.0.1 or ::1' });
    }
    this.table = buildNameTable(options.services ?? [], {
      meshVip: options.meshVip ?? DEFAULT_MESH_VIP,
      ttl: options.ttl ?? DEFAULT_DNS_TTL,
      suffixes: options.suffixes ?? ['svc.cluster.local'],
    });
    this.configuredUpstreams = (options.upstreams ?? []).map((text, i) => parseUpstream(text, `upstreams[${i}]`));
    // Refuse a loop as early as possible; with port 0 the check waits until the port is known.
    if (this.listen.port !== 0) refuseSelfUpstreams(this.configuredUpstreams, this.listen, 'upstreams');
    this.upstreamSource = this.configuredUpstreams.length > 0 ? 'config' : `resolv.conf ${this.resolvConfPath}`;
    this.cache = new AnswerCache(options.cacheMaxEntries ?? 10000);
    this.metrics = new DnsMetrics(() => this.cache.stats().entries, () => this.upstreamHealthReport());
  }

  private get resolvConfPath(): string {
    return this.options.resolvConf ?? '/etc/resolv.conf';
  }

  private get timeoutMs(): number {
    return this.options.upstreamTimeoutMs ?? 2000;
  }

  /** Binds (or adopts the handed-over sockets), reads the upstreams, starts serving. */
  async start(): Promise<MeshDnsAddresses> {
    if (this.state !== 'INIT') throw new MeshError('MESH_DNS_ALREADY_STARTED', 'mesh-dns was already started');
    const handles = this.options.handles ?? {};
    const namesFile = this.options.namesFile;
    if (namesFile !== undefined) {
      this.loadNamesFile(namesFile); // a bad file at start is the operator's to fix: throw
      this.stopNamesWatch = watchFile(namesFile, this.options.resolvConfPollMs ?? 2000, () => {
        try {
          this.loadNamesFile(namesFile);
        } catch (err) {
          this.recordError(err, `namesFile ${namesFile} (the previous name table stays)`);
        }
      });
    }
    // The loop check needs the real port: with port 0 it is known only once bound.
    this.udp = handles.udp ?? (await this.bindUdp(this.listen.port));
    const udpAddr = this.udp.address();
    this.listen.port = udpAddr.port;
    try {
      this.useUpstreams(this.configuredUpstreams);
    } catch (err) {
      if (!handles.udp) this.udp.close();
      throw err;
    }
    if (handles.tcp) this.tcp = handles.tcp;
    else {
      // With port 0 the kernel picked the UDP port; TCP may hold it already: pick again a few times.
      for (let attempt = 0; ; attempt++) {
        try {
          this.tcp = await this.bindTcp(this.listen.port);
          break;
        } catch (err) {
          if (handles.udp) throw err;
          this.udp.close();
          if (this.options.listen?.port !== 0 || attempt >= 5) throw err;
          this.udp = await this.bindUdp(0);
          this.listen.port = this.udp.address().port;
        }
      }
    }
    this.tcp.maxConnections = this.options.tcpMaxConnections ?? 512;
    // With the addon dgram no longer reads; this listener still answers what the socket hand-over held.
    this.udp.on('message', (msg, rinfo) => this.onUdpMessage(msg, rinfo));
    this.udp.on('error', (err) => this.recordError(err, 'udp'));
    if (this.options.nativeUdp === false) this.dgramReason = 'nativeUdp: false';
    else {
      const batched = BatchedUdp.attach(this.udp, this.onUdpBatch, (err) => this.recordError(err, 'udp'));
      if (typeof batched === 'string') this.dgramReason = batched;
      else this.batched = batched;
    }
    this.tcp.on('connection', (socket) => this.onTcpConnection(socket));
    this.tcp.on('error', (err) => this.recordError(err, 'tcp'));
    this.state = 'SERVING';
    const { path: udpPath, reason } = this.udpPath;
    this.logger.scope('default').info({ udp: this.addresses?.udp, tcp: this.addresses?.tcp, udpPath, ...(reason ? { udpPathReason: reason } : {}), upstreams: this.upstreams.map(formatUpstream) }, 'mesh-dns serving');
    return this.addresses!;
  }

  private bindUdp(port: number): Promise<dgram.Socket> {
    const type = net.isIPv6(this.listen.address) ? 'udp6' : 'udp4';
    // '::' serves IPv4 clients too (dual stack); any other IPv6 address only IPv6.
    const socket = dgram.createSocket({ type, lookup: LOOPBACK_LOOKUP as never, ipv6Only: type === 'udp6' && this.listen.address !== '::' });
    return new Promise((resolve, reject) => {
      socket.once('error', (err: NodeJS.ErrnoException) => reject(listenError(err, 'UDP', this.listen.address, port)));
      socket.bind(port, this.listen.address, () => {
        socket.removeAllListeners('error');
        resolve(socket);
      });
    });
  }

  private bindTcp(port: number): Promise<net.Server> {
    const server = net.createServer();
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => reject(listenError(err, 'TCP', this.listen.address, port)));
      server.listen({ host: this.listen.address, port, ipv6Only: net.isIPv6(this.listen.address) && this.listen.address !== '::' }, () => {
        server.removeAllListeners('error');
        resolve(server);
      });
    });
  }

  get addresses(): MeshDnsAddresses | undefined {
    if (!this.udp || !this.tcp) return undefined;
    const u = this.udp.address();
    const t = this.tcp.address() as net.AddressInfo;
    return { udp: { address: u.address, port: u.port }, tcp: { address: t.address, port: t.port } };
  }

  get status(): MeshDnsState {
    return this.state;
  }

  get udpPath(): MeshDnsUdpPath {
    return this.batched ? { path: 'recvmmsg', stats: this.batched.stats() } : { path: 'dgram', reason: this.dgramReason };
  }

  /** Replaces the whole name table at once: built aside, then one reference swapped. Throws (and keeps the old table) on bad input. */
  updateNames(services: MeshService[], changes: { meshVip?: string; ttl?: number; suffixes?: string[] } = {}): void {
    const next = buildNameTable(services, {
      meshVip: changes.meshVip ?? this.table.options.meshVip,
      ttl: changes.ttl ?? this.table.options.ttl,
      suffixes: changes.suffixes ?? this.table.options.suffixes,
    });
    this.table = next;
    this.tableVersion++;
    this.tableUpdatedAt = new Date().toISOString();
    this.logger.scope('model').info({ services: next.services.length, names: next.names.size, version: this.tableVersion }, 'name table replaced');
  }

  private loadNamesFile(file: string): void {
    const snapshot = loadConfigFile(registrySnapshotSchema, file, { env: {} });
    this.updateNames(snapshot.services.map(({ name, namespace, vip }) => ({ name, namespace, vip })));
  }

  /** The current table (immutable). */
  get names(): NameTable {
    return this.table;
  }

  get currentUpstreams(): readonly Upstream[] {
    return this.upstreams;
  }

  /**
   * Replaces the upstreams: the given ones, or (empty list) the nameservers of resolvConf, watched.
   * Refuses (MESH_DNS_UPSTREAM_LOOP) an upstream that is this mesh-dns itself, keeping the old list.
   */
  updateUpstreams(texts: string[]): void {
    this.useUpstreams(texts.map((text, i) => parseUpstream(text, `upstreams[${i}]`)));
  }

  private useUpstreams(configured: Upstream[]): void {
    refuseSelfUpstreams(configured, this.listen, 'upstreams');
    this.configuredUpstreams = configured;
    if (configured.length > 0) {
      this.stopWatch?.();
      this.stopWatch = undefined;
      this.upstreamSource = 'config';
      this.upstreams = configured;
      this.cache.clear();
    } else {
      this.upstreamSource = `resolv.conf ${this.resolvConfPath}`;
      this.reloadResolvConf();
      this.stopWatch ??= watchFile(this.resolvConfPath, this.options.resolvConfPollMs ?? 2000, () => this.reloadResolvConf());
    }
  }

  private reloadResolvConf(): void {
    let text: string;
    try {
      text = fs.readFileSync(this.resolvConfPath, 'utf8');
    } catch (err) {
      this.recordError(new MeshError('MESH_DNS_RESOLV_CONF_UNREADABLE', `cannot read ${this.resolvConfPath}: ${(err as Error).message}`), 'resolv.conf');
      return;
    }
    const all = parseResolvConf(text);
    const next = all.filter((u) => !isSelf(u, this.listen));
    if (next.length !== all.length) {
      this.logger.scope('default').warn({ file: this.resolvConfPath }, 'resolv.conf names this mesh-dns itself as a nameserver; that entry is skipped (it would loop)');
    }
    const before = this.upstreams.map(formatUpstream).join(',');
    const after = next.map(formatUpstream).join(',');
    if (before !== after) {
      this.upstreams = next;
      this.cache.clear();
      this.logger.scope('default').info({ upstreams: next.map(formatUpstream), file: this.resolvConfPath }, 'upstreams read from resolv.conf');
    }
  }

  // ---- queries -------------------------------------------------------------------------------

  /**
   * Local answers are timed 1 in LOCAL_TIMING_SAMPLE: a clock read costs about as much as the rest
   * of the hot path on some virtual machines. Forwarded queries are always timed.
   */
  private timingSeq = 0;

  private startClock(): number {
    return (++this.timingSeq & (LOCAL_TIMING_SAMPLE - 1)) === 0 ? performance.now() : -1;
  }

  private onUdpMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const started = this.startClock();
    if (rinfo.port === 0) {
      // Source port 0 means "no reply expected" (RFC 768), and dgram's send throws on port 0.
      this.metrics.droppedPackets++;
      return;
    }
    const q = parseQuery(msg);
    if (typeof q === 'string') {
      const answer = this.problemAnswer(msg, q);
      if (answer !== undefined) this.replyUdp(answer, rinfo);
      return;
    }
    const local = this.answerLocally(msg, q);
    if (local !== undefined) {
      this.replyUdp(local, rinfo);
      if (started >= 0) this.metrics.observe('local', (performance.now() - started) / 1000);
      return;
    }
    this.answerFromOutside(msg, q, 'udp', started >= 0 ? started : performance.now()).then(
      (answer) => this.replyUdp(answer, rinfo),
      (err) => this.recordError(err, 'udp'),
    );
  }

  /**
   * Sends one UDP answer; never throws. An upstream answer may arrive after close() (the socket is
   * gone: dropped), and a send error goes to the callback instead of the socket's 'error' event.
   */
  private replyUdp(answer: Buffer, rinfo: dgram.RemoteInfo): void {
    const udp = this.udp;
    if (udp === undefined || this.state === 'CLOSED') return;
    try {
      udp.send(answer, rinfo.port, rinfo.address, this.onUdpSent);
    } catch (err) {
      this.recordError(err, `udp answer to ${rinfo.address}:${rinfo.port}`);
    }
  }

  private readonly onUdpSent = (err: Error | null): void => {
    if (err) this.recordError(err, 'udp answer');
  };

  /** A batch from the addon: query i is answered into answer slot i, sent when this returns. Never throws. */
  private readonly onUdpBatch = (count: number): void => {
    const batched = this.batched;
    if (batched === undefined) return;
    for (let i = 0; i < count; i++) {
      let length = 0;
      try {
        length = this.answerBatched(batched, i);
      } catch (err) {
        this.recordError(err, 'udp');
      }
      batched.setAnswerLength(i, length);
    }
  };

  /** onUdpMessage for query i of a batch; returns the length of the answer written into its slot (0: none now). */
  private answerBatched(batched: BatchedUdp, i: number): number {
    const started = this.startClock();
    if (batched.sourcePort(i) === 0) {
      this.metrics.droppedPackets++;
      return 0;
    }
    const slot = batched.queries[i];
    const length = batched.queryLength(i);
    const q = parseQuery(slot, length);
    if (typeof q === 'string') return this.putBatchedAnswer(batched, i, this.problemAnswer(slot.subarray(0, length), q));
    const record = this.localRecord(slot, q);
    if (record !== undefined) {
      const n = writeLocalAnswer(slot, q, record ?? undefined, batched.answers[i]);
      if (started >= 0) this.metrics.observe('local', (performance.now() - started) / 1000);
      return n;
    }
    // Answered later: the query leaves its slot (the next batch reuses it), the answer goes alone.
    const msg = Buffer.from(slot.subarray(0, length));
    const peer = batched.peer(i);
    this.answerFromOutside(msg, q, 'udp', started >= 0 ? started : performance.now()).then(
      (answer) => this.replyBatched(answer, peer),
      (err) => this.recordError(err, 'udp'),
    );
    return 0;
  }

  private putBatchedAnswer(batched: BatchedUdp, i: number, answer: Buffer | undefined): number {
    if (answer === undefined) return 0;
    if (answer.length <= ANSWER_SLOT) return answer.copy(batched.answers[i]);
    this.replyBatched(answer, batched.peer(i));
    return 0;
  }

  /** replyUdp for the batched path: drops the answer once closed; a send error is recorded, never thrown. */
  private replyBatched(answer: Buffer, peer: Buffer): void {
    const batched = this.batched;
    if (batched === undefined || !batched.open || this.state === 'CLOSED') return;
    const rc = batched.sendTo(answer, peer);
    if (rc < 0) this.recordError(errnoError(rc, 'sendto'), `udp answer to ${describeSockaddr(peer)}`);
  }

  private onTcpConnection(socket: net.Socket): void {
    if (this.state !== 'SERVING') {
      socket.destroy();
      return;
    }
    this.tcpSockets.add(socket);
    socket.on('close', () => this.tcpSockets.delete(socket));
    serveTcpConnection(
      socket,
      { idleTimeoutMs: this.options.tcpIdleTimeoutMs ?? 10_000, maxInFlight: this.options.tcpMaxInFlightPerConnection ?? 32 },
      (msg) => this.answerTcp(msg),
    );
  }

  private answerTcp(msg: Buffer): Buffer | undefined | Promise<Buffer> {
    const started = this.startClock();
    const q = parseQuery(msg);
    if (typeof q === 'string') return this.problemAnswer(msg, q);
    const local = this.answerLocally(msg, q);
    if (local !== undefined) {
      if (started >= 0) this.metrics.observe('local', (performance.now() - started) / 1000);
      return local;
    }
    return this.answerFromOutside(msg, q, 'tcp', started >= 0 ? started : performance.now());
  }

  private problemAnswer(msg: Buffer, problem: 'drop' | 'formerr' | 'notimp'): Buffer | undefined {
    if (problem === 'drop') {
      this.metrics.droppedPackets++;
      return undefined;
    }
    this.metrics.query(0, problem);
    return buildErrorAnswer(msg, problem === 'formerr' ? RCODE_FORMERR : RCODE_NOTIMP);
  }

  /** The hot path: a mesh name gets its precomputed record (A) or an empty NOERROR (any other type). */
  private answerLocally(msg: Buffer, q: ParsedQuery): Buffer | undefined {
    const record = this.localRecord(msg, q);
    return record === undefined ? undefined : buildLocalAnswer(msg, q, record ?? undefined);
  }

  /** A mesh name's answer record (A, ANY), null for its empty NOERROR (other types), undefined for other names; counted. */
  private localRecord(msg: Buffer, q: ParsedQuery): Buffer | null | undefined {
    if (!q.plainName || q.qclass !== CLASS_IN) return undefined;
    const entry = this.table.lookup(msg, q);
    if (entry === undefined) return undefined;
    this.metrics.answeredLocally++;
    if (q.qtype === TYPE_A || q.qtype === 255) {
      this.metrics.query(q.qtype, 'local');
      return entry.record;
    }
    this.metrics.query(q.qtype, 'local_nodata');
    return null;
  }

  private cacheKey(msg: Buffer, q: ParsedQuery): string | undefined {
    if (!q.plainName) return undefined;
    // RD and CD change what a resolver answers; EDNS and DO change the records included.
    return `${queryKey(msg, q)}|${q.qtype}|${q.qclass}|${msg[2] & 0x01}${msg[3] & 0x10 ? 1 : 0}${q.edns ? 1 : 0}${q.dnssecOk ? 1 : 0}`;
  }

  /** Outside names: the cache, else the upstreams in turn; SERVFAIL when every one fails. Never rejects. */
  private async answerFromOutside(msg: Buffer, q: ParsedQuery, transport: 'udp' | 'tcp', started: number): Promise<Buffer> {
    const key = this.cacheKey(msg, q);
    if (key !== undefined) {
      const cached = this.cache.get(key);
      if (cached !== undefined && (transport === 'tcp' || cached.length <= q.udpSize)) {
        cached[0] = msg[0];
        cached[1] = msg[1];
        msg.copy(cached, 12, 12, q.questionEnd); // echo the question exactly as this client asked it
        this.metrics.cacheHits++;
        this.metrics.query(q.qtype, 'cache_hit');
        this.metrics.observe('cache', (performance.now() - started) / 1000);
        return cached;
      }
    }
    const question = `${queryKey(msg, q)}|${q.qtype}`;
    if (this.ownQueries.has(`${q.id}|${question}`)) {
      // Our own upstream query came back to us: DNS capture without the UID exemption. Break the loop now.
      this.metrics.query(q.qtype, 'servfail');
      this.recordError(
        new MeshError('MESH_DNS_CAPTURE_LOOP', `an upstream query of this mesh-dns came back to it (uid ${process.getuid?.() ?? '?'}): DNS capture loops`, {
          hint: 'run mesh-dns as the UID exempted by the DNS_OUTPUT rule (meshDns.uid in the agent config, default 1000)',
        }),
        'forward',
      );
      return buildErrorAnswer(msg, RCODE_SERVFAIL, q.questionEnd);
    }
    const upstreams = this.upstreams;
    if (upstreams.length === 0 || this.forwardsInFlight >= (this.options.maxForwardsInFlight ?? 2048) || this.state !== 'SERVING') {
      this.metrics.query(q.qtype, 'servfail');
      this.metrics.observe('error', (performance.now() - started) / 1000);
      if (upstreams.length === 0) this.recordError(new MeshError('MESH_DNS_NO_UPSTREAMS', `no upstream resolvers (${this.upstreamSource}): cannot answer ${queryKey(msg, q) || '.'}`), 'forward');
      return buildErrorAnswer(msg, RCODE_SERVFAIL, q.questionEnd);
    }
    this.forwardsInFlight++;
    this.metrics.forwarded++;
    try {
      const { answer, upstream } = await forwardQuery(upstreams, msg, q.questionEnd, transport, this.timeoutMs, (err) => this.upstreamFailed(err), this.trackOwn(question));
      this.upstreamOk(upstream);
      answer[0] = msg[0];
      answer[1] = msg[1];
      // the question as this client asked it (an upstream may change its case, e.g. 0x20 resolvers)
      msg.copy(answer, 12, 12, q.questionEnd);
      if (key !== undefined) {
        const layout = layoutAnswer(answer);
        if (layout?.cacheTtl !== undefined) this.cache.set(key, answer, layout.ttlOffsets, layout.cacheTtl);
      }
      this.metrics.query(q.qtype, 'forwarded');
      this.metrics.observe('upstream', (performance.now() - started) / 1000);
      if (transport === 'udp' && answer.length > q.udpSize) {
        // The upstream ignored the client's size: send the header and question with TC so it retries over TCP.
        const truncated = buildErrorAnswer(answer, answer[3] & 0x0f, q.questionEnd);
        truncated[2] |= 0x02;
        return truncated;
      }
      return answer;
    } catch (err) {
      this.metrics.query(q.qtype, 'servfail');
      this.metrics.observe('error', (performance.now() - started) / 1000);
      const failures = err instanceof UpstreamsFailedError ? err.failures : [];
      this.recordError(
        new MeshError('MESH_DNS_UPSTREAMS_FAILED', `every upstream failed for ${queryKey(msg, q) || '.'} (type ${q.qtype}): ${(err as Error).message}`, {
          cause: err,
          hint: failureHint(failures, this.timeoutMs),
        }),
        'forward',
      );
      return buildErrorAnswer(msg, RCODE_SERVFAIL, q.questionEnd);
    } finally {
      this.forwardsInFlight--;
    }
  }

  /** Remembers the IDs our upstream queries for `question` carry while they are in flight. */
  private trackOwn(question: string): InFlightIds {
    return {
      add: (id) => {
        const key = `${id}|${question}`;
        this.ownQueries.set(key, (this.ownQueries.get(key) ?? 0) + 1);
      },
      delete: (id) => {
        const key = `${id}|${question}`;
        const n = (this.ownQueries.get(key) ?? 1) - 1;
        if (n <= 0) this.ownQueries.delete(key);
        else this.ownQueries.set(key, n);
      },
    };
  }

  private upstreamFailed(err: UpstreamAttemptError): void {
    const name = formatUpstream(err.upstream);
    this.metrics.upstreamFailure(name);
    this.upstreamHealth.failed(err);
    const kind = `upstream ${name}`;
    if (this.logLimiter.allow(kind)) this.logger.scope('default').warn({ upstream: name, reason: err.reason, errno: err.errno, suppressed: this.logLimiter.suppressed(kind) }, err.message);
  }

  private upstreamOk(upstream: Upstream): void {
    this.upstreamHealth.answered(upstream);
  }

  /** upstream -> healthy, for the current upstreams (the mesh_dns_upstream_healthy gauge). */
  private upstreamHealthReport(): Record<string, boolean> {
    return Object.fromEntries(Object.entries(this.upstreamHealth.report(this.upstreams)).map(([name, h]) => [name, h.healthy]));
  }

  recordError(err: unknown, where: string): void {
    const message = err instanceof Error ? err.message : String(err);
    const code = typeof (err as MeshError)?.code === 'string' ? (err as MeshError).code : undefined;
    const hint = typeof (err as MeshError)?.hint === 'string' ? (err as MeshError).hint : undefined;
    this.lastError = { time: new Date().toISOString(), message: `${where}: ${message}`, ...(code ? { code } : {}), ...(hint ? { hint } : {}) };
    if (this.logLimiter.allow(code ?? where)) this.logger.scope('default').error({ where, code, hint, suppressed: this.logLimiter.suppressed(code ?? where) }, message);
  }

  /** At most one log line per second per kind: a dead upstream under load must not flood the log (counters keep the totals). */
  private readonly logLimiter = (() => {
    const last = new Map<string, { at: number; suppressed: number }>();
    return {
      allow(kind: string): boolean {
        const now = Date.now();
        const seen = last.get(kind);
        if (seen && now - seen.at < 1000) {
          seen.suppressed++;
          return false;
        }
        last.set(kind, { at: now, suppressed: seen?.suppressed ?? 0 });
        return true;
      },
      /** how many lines of this kind were dropped since the last one written (then reset) */
      suppressed(kind: string): number {
        const seen = last.get(kind);
        const n = seen?.suppressed ?? 0;
        if (seen) seen.suppressed = 0;
        return n;
      },
    };
  })();

  get latestError(): MeshDnsLatestError | undefined {
    return this.lastError;
  }

  // ---- reports -------------------------------------------------------------------------------

  /**
   * Asks every upstream for the root NS over UDP (bounded by the upstream timeout, at most 1 s); the
   * outcome counts for its health like a forwarded query's.
   */
  async probeUpstreams(): Promise<{ upstream: string; reachable: boolean; error?: string }[]> {
    const probe = Buffer.from([0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1]);
    const timeout = Math.min(this.timeoutMs, 1000);
    return Promise.all(
      this.upstreams.map(async (u) => {
        try {
          await queryUdp(u, probe, 17, timeout);
          this.upstreamOk(u);
          return { upstream: formatUpstream(u), reachable: true };
        } catch (err) {
          if (err instanceof UpstreamAttemptError) this.upstreamFailed(err);
          return { upstream: formatUpstream(u), reachable: false, error: (err as Error).message };
        }
      }),
    );
  }

  async health(): Promise<{ healthy: boolean; state: MeshDnsState; listeners: unknown; upstreams: unknown }> {
    const addresses = this.addresses;
    const probes = await this.probeUpstreams();
    return {
      // Mesh names are answered whatever the upstreams do: health is about our own listeners.
      healthy: this.state === 'SERVING' && addresses !== undefined,
      state: this.state,
      listeners: addresses
        ? { udp: `${addresses.udp.address}:${addresses.udp.port}`, tcp: `${addresses.tcp.address}:${addresses.tcp.port}` }
        : null,
      upstreams: probes.map((p) => ({ ...p, ...this.upstreamHealth.get(p.upstream) })),
    };
  }

  configDump(): Record<string, unknown> {
    const table = this.table;
    const hostedNames = [...table.names.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([name, entry]) => ({ name: `${name}.`, answer: `A ${entry.vip}`, ttl: table.options.ttl, service: entry.service, namespace: entry.namespace }));
    const addresses = this.addresses;
    return {
      state: this.state,
      listeners: addresses ? { udp: `${addresses.udp.address}:${addresses.udp.port}`, tcp: `${addresses.tcp.address}:${addresses.tcp.port}` } : null,
      udp: this.udpPath,
      meshVip: table.options.meshVip,
      ttl: table.options.ttl,
      suffixes: table.options.suffixes,
      nameTable: { version: this.tableVersion, updatedAt: this.tableUpdatedAt, services: table.services.length, names: table.names.size },
      services: table.services,
      hostedNames,
      upstreams: {
        source: this.upstreamSource,
        servers: this.upstreams.map(formatUpstream),
        timeoutMs: this.timeoutMs,
        health: this.upstreamHealth.report(this.upstreams),
      },
      cache: { ...this.cache.stats(), entriesSample: this.cache.list(100).map(({ key, ttlRemaining, bytes }) => ({ key, ttlRemaining, ...describeAnswer(bytes) })) },
      stats: this.metrics.snapshot(),
    };
  }

  // ---- shutdown ------------------------------------------------------------------------------

  /** Stops taking new work, lets in-flight upstream queries finish (up to `drainTimeMs`), then closes. */
  async drain(drainTimeMs: number): Promise<void> {
    if (this.state === 'CLOSED') return;
    this.state = 'DRAINING';
    this.tcp?.close();
    const deadline = Date.now() + drainTimeMs;
    while (this.forwardsInFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await this.close();
  }

  async close(): Promise<void> {
    if (this.state === 'CLOSED') return;
    this.state = 'CLOSED';
    this.stopWatch?.();
    this.stopNamesWatch?.();
    for (const socket of this.tcpSockets) socket.destroy();
    // the addon's duplicate of the fd first: no batch after this, then dgram closes the socket itself
    this.batched?.close();
    await Promise.all([
      new Promise<void>((resolve) => {
        if (!this.udp) return resolve();
        try {
          this.udp.close(() => resolve());
        } catch {
          resolve();
        }
      }),
      new Promise<void>((resolve) => (this.tcp && this.tcp.listening ? this.tcp.close(() => resolve()) : resolve())),
    ]);
  }
}

/** An upstream answer in words for /config_dump (slow path: dns-packet decodes it). */
function describeAnswer(bytes: Buffer): { rcode: string; answers: string[] } {
  try {
    const packet = dnsPacket.decode(bytes) as dnsPacket.DecodedPacket & { rcode?: string };
    const answers = (packet.answers ?? []).map((a) => {
      const data = 'data' in a ? a.data : undefined;
      const text = Buffer.isBuffer(data) ? data.toString('hex') : Array.isArray(data) ? data.map(String).join(' ') : typeof data === 'object' ? JSON.stringify(data) : String(data);
      return `${a.name}. ${'ttl' in a ? a.ttl : ''} ${a.type} ${text}`;
    });
    return { rcode: packet.rcode ?? 'NOERROR', answers };
  } catch (err) {
    return { rcode: 'UNDECODABLE', answers: [(err as Error).message] };
  }
}

function listenError(err: NodeJS.ErrnoException, proto: string, address: string, port: number): MeshError {
  const hint =
    err.code === 'EADDRINUSE'
      ? `another process holds ${proto} ${address}:${port}; stop it or choose another port (--listen ADDR:PORT, listen.port)`
      : err.code === 'EACCES'
        ? 'ports below 1024 need root or CAP_NET_BIND_SERVICE'
        : err.code === 'EADDRNOTAVAIL'
          ? `${address} is not an address of this machine`
          : undefined;
  return new MeshError('MESH_DNS_LISTEN_FAILED', `cannot listen on ${proto} ${address}:${port}: ${err.code ?? err.message}`, {
    exitCode: err.code === 'EACCES' ? EXIT_CODES.permission : EXIT_CODES.failure,
    hint,
    cause: err,
  });
}

export function createMeshDns(options: MeshDnsOptions = {}): MeshDns {
  return new MeshDns(options);
}
