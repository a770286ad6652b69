// gRPC semantics the proxy applies to gRPC requests (issue 14): detection, `grpc-timeout`, Envoy's
// trailers-only local replies for proxy-made errors, and the per-method stats of Envoy's grpc_stats filter.
import type { StatsStore } from '../stats/store';
import { ResponseFlag } from './response-flags';

/** gRPC status codes the proxy produces or reads (grpc/doc/statuscodes.md). */
export const GrpcStatus = {
  Ok: 0,
  Cancelled: 1,
  Unknown: 2,
  DeadlineExceeded: 4,
  PermissionDenied: 7,
  ResourceExhausted: 8,
  Unimplemented: 12,
  Internal: 13,
  Unavailable: 14,
  Unauthenticated: 16,
} as const;

/** `content-type: application/grpc`, `application/grpc+proto`, `application/grpc;...` (not grpc-web). */
export function isGrpcContentType(value: string | undefined): boolean {
  if (value === undefined || value.length < 16) return false;
  const v = value.toLowerCase();
  if (!v.startsWith('application/grpc')) return false;
  const next = v.charCodeAt(16);
  return Number.isNaN(next) || next === 43 /* + */ || next === 59 /* ; */;
}

/** Whether a request (lower-cased header names and their values) is gRPC. */
export function isGrpcRequest(lower: readonly string[], values: readonly string[]): boolean {
  for (let i = 0; i < lower.length; i++) if (lower[i] === 'content-type') return isGrpcContentType(values[i]);
  return false;
}

const TIMEOUT_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/**
 * `grpc-timeout` (gRPC over HTTP/2: 1 to 8 digits and a unit H M S m u n) in milliseconds, rounded up
 * so a sub-millisecond deadline still expires. Undefined for a malformed value (ignored, as Envoy does)
 * and for 0 (no deadline).
 */
export function parseGrpcTimeout(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value.trim());
  if (!m) return undefined;
  const ms = Number(m[1]) * TIMEOUT_UNIT_MS[m[2]!]!;
  return ms === 0 ? undefined : Math.ceil(ms);
}

/**
 * The route timeout a gRPC request gets: Envoy's max_grpc_timeout semantics, the smaller of the
 * route's timeout and the client's deadline wins; 0 (either side) means none.
 */
export function grpcRouteTimeoutMs(routeTimeoutMs: number, grpcTimeout: string | undefined): number {
  const deadline = parseGrpcTimeout(grpcTimeout);
  if (deadline === undefined) return routeTimeoutMs;
  return routeTimeoutMs > 0 ? Math.min(routeTimeoutMs, deadline) : deadline;
}

/**
 * The gRPC status of a reply the proxy makes itself: by the response flag where it says more than the
 * HTTP status (a timeout is DEADLINE_EXCEEDED), otherwise Envoy's HTTP-to-gRPC mapping.
 */
export function grpcStatusForLocalReply(httpStatus: number, flags: string): number {
  if (flags.includes(ResponseFlag.UpstreamRequestTimeout) || flags.includes(ResponseFlag.StreamIdleTimeout)) return GrpcStatus.DeadlineExceeded;
  if (flags.includes(ResponseFlag.RbacAccessDenied)) return GrpcStatus.PermissionDenied;
  switch (httpStatus) {
    case 401: return GrpcStatus.Unauthenticated;
    case 403: return GrpcStatus.PermissionDenied;
    case 404: return GrpcStatus.Unimplemented;
    case 408: return GrpcStatus.DeadlineExceeded;
    case 429: case 502: case 503: return GrpcStatus.Unavailable;
    case 504: return GrpcStatus.DeadlineExceeded;
    default: return GrpcStatus.Internal;
  }
}

/** grpc-message is percent-encoded: bytes outside printable ASCII, and `%` itself (gRPC over HTTP/2). */
export function encodeGrpcMessage(message: string): string {
  const bytes = Buffer.from(message, 'utf8');
  let out = '';
  for (const b of bytes) out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  return out;
}

/** A trailers-only gRPC response: the headers of an HTTP 200 that ends the stream (no body). */
export interface GrpcLocalReply {
  status: 200;
  names: string[];
  values: string[];
  grpcStatus: number;
}

/**
 * Envoy's local reply for a gRPC request: HTTP 200, `content-type: application/grpc`, `grpc-status` and
 * `grpc-message` (the body text of the HTTP reply, without its newline), as one HEADERS frame with END_STREAM.
 */
export function grpcLocalReply(httpStatus: number, body: string, flags: string): GrpcLocalReply {
  const grpcStatus = grpcStatusForLocalReply(httpStatus, flags);
  const message = encodeGrpcMessage(body.replace(/\n+$/, ''));
  return { status: 200, names: ['content-type', 'grpc-status', 'grpc-message'], values: ['application/grpc', String(grpcStatus), message], grpcStatus };
}

/** The gRPC status of a response from its headers (trailers-only) or trailers; undefined when absent or not a number. */
export function grpcStatusOf(lower: readonly string[], values: readonly string[]): number | undefined {
  for (let i = 0; i < lower.length; i++) {
    if (lower[i] !== 'grpc-status') continue;
    const v = values[i]!;
    return /^\d{1,2}$/.test(v) ? Number(v) : undefined;
  }
  return undefined;
}

/** `/package.Service/Method` (a query, which gRPC never sends, ignored) -> service and method; undefined for any other path. */
export function grpcServiceMethod(path: string): { service: string; method: string } | undefined {
  const m = /^\/([^/?]+)\/([^/?]+)(?:\?|$)/.exec(path);
  return m ? { service: m[1]!, method: m[2]! } : undefined;
}

/**
 * Envoy's grpc_stats filter, per cluster: `cluster.NAME.grpc.SERVICE.METHOD.STATUS`, `.success`
 * (status 0), `.failure` and `.total`. `grpcStatus` undefined (no status at all) counts as a failure only.
 */
export function countGrpcCall(stats: StatsStore, cluster: string, path: string, grpcStatus: number | undefined): void {
  const sm = grpcServiceMethod(path);
  if (!sm) return;
  const base = `grpc.${sm.service}.${sm.method}`;
  if (grpcStatus !== undefined) stats.counter('cluster.', cluster, `${base}.${grpcStatus}`).inc();
  stats.counter('cluster.', cluster, `${base}.${grpcStatus === GrpcStatus.Ok ? 'success' : 'failure'}`).inc();
  stats.counter('cluster.', cluster, `${base}.total`).inc();
}
