// The contracts between the layers of the HTTP data plane (issue 14), after Envoy's source/common/http:
//
//   acceptor (proxy.ts) ─> downstream codec ──(DownstreamStreamCallbacks)──> ActiveStream ─> RouterFilter
//     http1-server-codec.ts / http2-server-codec.ts      conn-manager/active-stream.ts      router/router-filter.ts
//   RouterFilter ──(UpstreamCodec)──> http1-upstream-codec.ts / http2-upstream-codec.ts ──(UpstreamCallbacks)──> RouterFilter
//   ActiveStream / RouterFilter ──(DownstreamStream)──> the downstream codec (encodes the response)
//
// One ActiveStream (and its RouterFilter) is one request. The HTTP/1 codec serves one request at a time
// and reuses one ActiveStream for all requests of its connection (no allocation per request on the hot
// path); the HTTP/2 codec makes one per stream. Everything here is callback-driven: no promises, no
// closures per request. Every method is called from inside a socket/timer callback that the caller
// guards; an implementation never throws on bad network input, it answers (local reply) or resets.
import type net from 'node:net';
import type { Cluster } from '../../cluster/cluster';
import type { Host } from '../../cluster/host';
import type { ConnectionOrigin } from '../connection-origin';
import type { BodyKind, ParsedHeaders, RequestHead } from '../head-parser';
import type { DownstreamTransport } from '../../tls/inbound-tls';

export type HttpProtocol = 'HTTP/1.0' | 'HTTP/1.1' | 'HTTP/2';

/**
 * The request as the connection manager and the router see it: the HTTP/1 head parser's shape
 * (`RequestHead`, which carries `protocol`) whatever the downstream protocol.
 *
 * An HTTP/2 codec maps a HEADERS frame to it: `:method` -> method, `:path` -> target (origin-form),
 * `:authority` (or `host` when absent) -> host, pseudo-headers NOT in names/lower/values (regular headers
 * only, lower-case names, `cookie` crumbs joined with "; "), minor 1, protocol 'HTTP/2', close false,
 * connectionTokens undefined, upgrade undefined (never an Upgrade, the `h2c` token included),
 * expectContinue from `expect: 100-continue`, bodyKind 'none' when HEADERS carried END_STREAM, otherwise
 * 'stream' with contentLength = the content-length header's value when present and valid, else -1.
 */
export type StreamRequestHead = RequestHead;

/**
 * Body framing of the bytes that cross the layers (request: onRequestData -> sendData; response:
 * onUpstreamData -> encodeData), told by the head's `bodyKind`:
 *   - 'none'    no body: no data call follows (the head ended the stream);
 *   - 'length'  `contentLength` payload bytes;
 *   - 'chunked' HTTP/1.1 chunked-framed WIRE bytes (size lines, chunk data, last chunk, trailer section)
 *               passed through unchanged. Only between HTTP/1 ends: a chunked request from an HTTP/1.1
 *               client reaches an HTTP/1 upstream as is; an HTTP/2 upstream codec de-chunks it (a
 *               BodyFramer with the `onData` callback gives the payload ranges without copying). A
 *               chunked response of an HTTP/1 upstream is passed on framed only to an HTTP/1.1 request;
 *               for an HTTP/1.0 or HTTP/2 request the HTTP/1 upstream codec de-chunks and says 'stream';
 *   - 'close'   payload until the upstream closes (HTTP/1 upstream without a length);
 *   - 'stream'  payload of unknown length ended by `endStream` (HTTP/2, or de-chunked). The HTTP/1.1
 *               server codec sends it chunked (close-delimited to an HTTP/1.0 client).
 */
export type StreamBodyKind = BodyKind;

/** The response head as the router hands it to the downstream codec (the HTTP/1 parser's ResponseHead fits). */
export interface StreamResponseHead extends ParsedHeaders {
  status: number;
  /** reason phrase; an HTTP/2 upstream gives reasonPhrase(status) (hop-by-hop.ts) */
  reason: string;
  bodyKind: StreamBodyKind;
  /** payload length for 'length' (0 for none), -1 when unknown */
  contentLength: number;
  /** HTTP/1 upstream said `connection: close` (the downstream decides its own keep-alive; informative) */
  close: boolean;
  /** lower-case tokens of the upstream's Connection header: the hop-by-hop names a codec must not forward */
  connectionTokens: string[] | undefined;
  /** set on the proxy's own local replies (HTTP/1: an HTTP/1.0 keep-alive client keeps its connection after one) */
  local?: boolean;
}

/**
 * Headers the proxy adds to a response, as flat pairs [name, value, name, value, ...] with lower-case
 * names (`x-envoy-upstream-service-time`, `x-mesh-upstream-transport`, local replies' `content-type`,
 * `server`, `x-envoy-immediate-health-check-fail`). The array is owned by the caller and reused: read it
 * during the call, never keep it.
 */
export type ExtraHeaders = readonly string[];

/**
 * The codec's side of one request: what the ActiveStream and the RouterFilter call to answer.
 * Implemented by the HTTP/1 server codec (one per connection, reused) and by the HTTP/2 server codec
 * (one per stream).
 *
 * Order of the encode calls for one response: [encode100Continue] encodeHeaders [encodeData...]
 * [encodeTrailers]; `endStream` true on exactly one of encodeHeaders/encodeData, or encodeTrailers
 * (which always ends). After the end (the codec then calls DownstreamStreamCallbacks.onResponseComplete()),
 * or after reset(), no encode call follows and the codec no longer calls the callbacks of this request
 * (except that an HTTP/1 codec then goes on with the next request on the same ActiveStream).
 */
export interface DownstreamStream {
  readonly protocol: HttpProtocol;
  /** the client's address, IPv4-mapped prefix removed (x-forwarded-for) */
  readonly peer: string;
  /** decided once per connection by the acceptor (connection-origin.ts) */
  readonly origin: ConnectionOrigin;
  /** plaintext, or TLS terminated by the acceptor with the caller's identity (issue 13) */
  readonly transport: DownstreamTransport;
  /** request bytes received (head and body as on the wire, HTTP/1; payload, HTTP/2): the access log's %BYTES_RECEIVED% */
  readonly bytesReceived: number;
  /** response bytes sent: %BYTES_SENT% */
  readonly bytesSent: number;

  /**
   * Sends the response head. `res.names/values` are forwarded minus hop-by-hop headers (hop-by-hop.ts,
   * and the names in `res.connectionTokens`); `extra` pairs are appended. The codec owns the framing
   * and keep-alive headers: HTTP/1 writes `connection: close` when it will close, frames a 'stream' body
   * as chunked; HTTP/2 drops connection-specific headers. `firstBody` (optional) is sent with the head
   * in one write where the codec can (the HTTP/1 fast path: head + small body = one syscall).
   * `endStream` true: the response is complete (no encodeData follows).
   */
  encodeHeaders(res: StreamResponseHead, extra: ExtraHeaders, firstBody: Buffer | undefined, endStream: boolean): void;
  /**
   * Sends response body bytes (framed as `res.bodyKind` says). Returns false when the downstream is
   * backed up: the router then pauses the upstream (UpstreamCodec.pauseResponse) until the codec calls
   * DownstreamStreamCallbacks.onDownstreamDrain(). `endStream` true (chunk may be empty): complete.
   */
  encodeData(chunk: Buffer, endStream: boolean): boolean;
  /** Sends trailers and ends the response (gRPC's grpc-status). HTTP/1.1: in the last chunk of a 'stream' body, else dropped. */
  encodeTrailers(names: readonly string[], values: readonly string[]): void;
  /** `100 Continue` to a client that sent `expect: 100-continue` (an HTTP/1.0 client never gets one). */
  encode100Continue(): void;
  /**
   * The response cannot be completed (started response truncated, timeout or protocol error after the
   * head went out). HTTP/1: the connection is destroyed; HTTP/2: RST_STREAM (INTERNAL_ERROR, or CANCEL
   * for a timeout). `flag` is the response flag already recorded by the caller (informative).
   * The ActiveStream has finished the request (stats, access log) before it calls this.
   */
  reset(flag: string): void;
  /** The connection must end after this response (HTTP/1: `connection: close`; HTTP/2: no-op, the stream ends alone). */
  closeAfterResponse(): void;
  /** Stop reading request body (upstream backed up, or the try waits for a connection). */
  pauseRequest(): void;
  resumeRequest(): void;
  /**
   * HTTP/1 only: hand the socket to the WebSocket forwarder (head.upgrade set). An HTTP/2 codec never sets
   * head.upgrade, so this is never called on it.
   */
  handOverUpgrade(head: RequestHead, target: string, cluster: Cluster, host: Host): void;
  /**
   * HTTP/1 only: an HTTP/1.1 CONNECT to a mesh TCP service (Envoy's CONNECT termination): the socket goes to the TCP
   * proxy, which answers 200 once `cluster`'s upstream is connected. The HTTP/2 codec never gets a CONNECT routed here.
   */
  handOverTcp(cluster: string): void;
}

/**
 * What a downstream codec calls on the ActiveStream of one request (Envoy's RequestDecoder +
 * stream callbacks). Calls come in this order: onRequestHeaders, then [onRequestData...] unless
 * bodyKind is 'none', ending with `end` true, or with onRequestTrailers (which ends the request);
 * onDownstreamReset / onStreamIdleTimeout may come at any time before the response is complete.
 */
export interface DownstreamStreamCallbacks {
  /**
   * A complete request head. The ActiveStream routes it at once (RBAC, route, cluster, local replies,
   * router) and may answer before the body arrives. Body bytes that came with the head follow in an
   * onRequestData call made by the codec right after this one returns (unless the request is over).
   */
  onRequestHeaders(head: StreamRequestHead): void;
  /** Request body bytes (framed as head.bodyKind says); `end`: the request is complete. */
  onRequestData(chunk: Buffer, end: boolean): void;
  /** HTTP/2 request trailers; they end the request. */
  onRequestTrailers(names: readonly string[], values: readonly string[]): void;
  /**
   * The client went away or reset the stream before the response was complete: flag
   * `DC` (HTTP/1 connection closed) or `DR` (HTTP/2 RST_STREAM from the client). The router aborts the
   * upstream try; the request is finished (stats, access log) with that flag; no encode call follows.
   */
  onDownstreamReset(flag: string): void;
  /** The downstream can take more response bytes again (after encodeData returned false). */
  onDownstreamDrain(): void;
  /**
   * The codec wrote the end of the response (the encode call with endStream, or encodeTrailers) and calls
   * this before that encode call returns: the ActiveStream finishes the request (router clean-up, stats,
   * access log with the final byte counts). Not called after reset(). An HTTP/1 codec goes on with the
   * next (pipelined) request only after this returned, since it reuses the ActiveStream.
   */
  onResponseComplete(): void;
  /**
   * No byte of the request body or the response moved for limits.streamIdleTimeoutMs (the codec's sweep
   * watches bytesReceived + bytesSent): 408 before the response started, otherwise reset; flag SI.
   */
  onStreamIdleTimeout(): void;
  /** A bug in a callback of this request: 500 when no response started, else reset. Never throws. */
  onInternalError(err: unknown, where: string): void;
}

/**
 * One downstream connection as the proxy's accept path, sweep and drain see it (HTTP/1: the server
 * codec itself; HTTP/2: the session wrapper). proxy.ts keeps a set of these.
 */
export interface DownstreamConnectionHandle {
  readonly socket: net.Socket;
  /** no request in flight and none half-received */
  readonly idle: boolean;
  /** responses completed: a draining proxy never closes a connection that served nothing yet before its deadline */
  readonly responsesServed: number;
  /** Date.now() of the last byte read or response completed */
  readonly lastActivity: number;
  /** once a second: headers timeout, keep-alive idle timeout, stream idle timeouts */
  sweep(now: number): void;
  /**
   * The proxy starts draining (rt.draining is already true). HTTP/1: an idle connection that served a
   * request and was idle for DRAIN_IDLE_GRACE_MS is closed, the others close after their next response;
   * HTTP/2: GOAWAY (streams in flight finish, new ones are refused).
   */
  startDrain(now: number): void;
}

/**
 * The request as an upstream codec forwards it, owned by the ActiveStream and built once per request
 * (reused for retries and the transparent re-send of a stale connection).
 */
export interface ForwardedRequest {
  readonly head: StreamRequestHead;
  /** origin-form path and query (absolute-form already reduced) */
  readonly path: string;
  /** the authority the request was routed by (absolute-form target's, else Host/:authority) */
  readonly authority: string | undefined;
  /** the path sent upstream (`:path`): `path`, or the route's prefixRewrite of it */
  readonly upstreamPath: string;
  /** the authority sent upstream (`:authority`, Host): `authority`, or the route's hostRewrite */
  readonly upstreamAuthority: string | undefined;
  /** 'https' when the downstream came over TLS */
  readonly scheme: 'http' | 'https';
  /** 1-based try number when the route has a retry policy (x-envoy-attempt-count), 0 otherwise */
  readonly attempt: number;
  /**
   * The HTTP/1.1 request head to write: request line, forwarded headers (hop-by-hop removed,
   * x-forwarded-for/-proto, x-request-id, x-forwarded-client-cert), `x-envoy-attempt-count` when attempt
   * > 0, final CRLF. Built once; a 'stream' body is announced as `transfer-encoding: chunked` by the codec.
   */
  h1Head(): string;
  /**
   * The same forwarded headers as a list for HTTP/2 (lower-case names, no pseudo-headers: the codec adds
   * :method, :scheme, :authority, :path; no host, connection-specific or transfer-encoding headers; `te`
   * only as `trailers`). Built on first use, then cached for the request.
   */
  headerList(): { readonly names: readonly string[]; readonly values: readonly string[] };
}

/** Why an upstream try ended before a complete response. */
export type UpstreamResetKind =
  /** no connection (refused, connect timeout, TLS handshake or identity check failed): flag UF, retry-on connect-failure */
  | 'connect-failure'
  /** the connection or stream was reset/closed (HTTP/2 RST_STREAM other than REFUSED_STREAM): UC before the head, UR/UC after */
  | 'reset'
  /** the upstream provably did not process the request (HTTP/1: a reused keep-alive connection closed before any
   * response byte of a body-less request; HTTP/2: REFUSED_STREAM, or GOAWAY below this stream): the router
   * re-sends it on another connection, transparently, up to 3 times, then treats it as 'reset' */
  | 'refused'
  /** unparsable response, bytes after the response, HTTP/2 protocol error: 502 UPE */
  | 'protocol-error';

/**
 * What the RouterFilter calls for one try (Envoy's UpstreamRequest + codec client). The HTTP/1 codec is one
 * object per router, reused across tries and requests; an HTTP/2 codec may be one per try.
 *
 * Life of a try: attach() -> ('queued' -> callbacks.onUpstreamReady()) -> sendHeaders -> [sendData...]
 * [sendTrailers]; meanwhile the codec reports onUpstreamHeaders -> [onUpstreamData...] [onUpstreamTrailers],
 * or onUpstreamReset. abort() ends a try at any point (retry, timeout, client gone) and silences its callbacks.
 * After the response is complete the codec returns its connection to the pool (HTTP/1: when both directions
 * were complete and the upstream did not say close; otherwise it discards it) on its own.
 */
export interface UpstreamCodec {
  readonly protocol: 'http1' | 'http2';
  /**
   * Takes a connection (or a stream on one) to `host` of `cluster`. 'ready': send now. 'queued': the cluster
   * is at max_connections and the try waits in the pending queue; callbacks.onUpstreamReady() follows (the
   * host may then differ: read `host`). 'overflow': the pending queue is full too: the router answers 503 UO.
   */
  attach(cluster: Cluster, host: Host, callbacks: UpstreamCallbacks): 'ready' | 'queued' | 'overflow';
  /** The host of the current try (after attach or onUpstreamReady). */
  readonly host: Host | undefined;
  /** For x-mesh-upstream-transport: `plaintext` or `tls <version> peer=<id>`. */
  readonly transport: string;
  /**
   * Sends the request head (`req.h1Head()` or `req.headerList()`); `endStream` when there is no body.
   * Upstream writes are buffered until the connection is up (nothing to wait for). Also arms nothing:
   * timers belong to the router.
   */
  sendHeaders(req: ForwardedRequest, endStream: boolean): void;
  /** Request body bytes (framed as req.head.bodyKind). False: the upstream is backed up; the router pauses the downstream until onUpstreamDrain. */
  sendData(chunk: Buffer, end: boolean): boolean;
  /** HTTP/2 request trailers (ends the request). HTTP/1: dropped unless the body is chunked-framed already. */
  sendTrailers(names: readonly string[], values: readonly string[]): void;
  /** Stop / go on reading the response (downstream back-pressure). */
  pauseResponse(): void;
  resumeResponse(): void;
  /** Ends the try now: the connection is discarded (HTTP/1) or the stream reset with CANCEL (HTTP/2); no callback follows. */
  abort(): void;
}

/** The RouterFilter's side of a try: what an upstream codec calls (never after abort()). */
export interface UpstreamCallbacks {
  /** A 'queued' attach got its connection: the router now sends the head and the body kept meanwhile. */
  onUpstreamReady(): void;
  /** `100 Continue` from the upstream (other 1xx are dropped by the codec). */
  onUpstream100Continue(): void;
  /**
   * The final response head. `firstBody`: body bytes that came with it (framed as res.bodyKind), so the
   * downstream can send head and body in one write; `endStream`: the response is complete already
   * (also for bodyKind 'none' or a trailers-only HTTP/2 response, where trailers follow at once).
   * The router may drop the response to retry it (abort()) before relaying anything.
   */
  onUpstreamHeaders(res: StreamResponseHead, firstBody: Buffer | undefined, endStream: boolean): void;
  onUpstreamData(chunk: Buffer, endStream: boolean): void;
  /** HTTP/2 response trailers: the response is complete. */
  onUpstreamTrailers(names: readonly string[], values: readonly string[]): void;
  /**
   * The try failed. Before the response head: the router counts it (outlier detection), re-sends a
   * 'refused' one, retries per policy or answers locally (503 UF/UC, 502 UPE). After the head went
   * downstream: the request ends with flag UC (HTTP/1) or UR (HTTP/2 RST_STREAM) / UPE and the downstream
   * stream is reset. `reason`: for connect-failure the TLS failure reason
   * (%UPSTREAM_TRANSPORT_FAILURE_REASON%) when there is one, for protocol-error the parse error.
   */
  onUpstreamReset(kind: UpstreamResetKind, reason: string | undefined): void;
  /** The upstream takes request bytes again (after sendData returned false). */
  onUpstreamDrain(): void;
}

// Local replies: ActiveStream.sendLocalReply(status, body, flag, extra?) is the only place the proxy
// answers by itself (no route, RBAC, no healthy upstream, timeouts, overflow, protocol errors). It builds a
// StreamResponseHead with `content-length` and, with a body, `content-type: text/plain`, plus `server: envoy`,
// and calls encodeHeaders(head, extra, body, true). A gRPC request (content-type application/grpc*) gets a
// trailers-only gRPC error instead (HTTP 200, grpc-status mapped from the HTTP status: http/grpc.ts).
