import { z } from 'zod';
import { ADMIN_HOST, DEFAULT_MESH_VIP, DEFAULT_PORTS, DEFAULT_VIP_CIDR } from '../defaults';
import { AccessLogFormatError, parseAccessLogFormat } from '../access-log-format';
import { cidr, filePath, healthCheckPath, ipAddress, listenAddress, listenPort, metadata, millis, nonEmptyString, nonNegativeInt, percent, positiveInt, servicePort } from './common';

export const LB_POLICIES = ['round_robin', 'least_request', 'random', 'ring_hash'] as const;
export const lbPolicySchema = z.enum(LB_POLICIES, { error: `expected one of ${LB_POLICIES.join(', ')}` });

/** Envoy's Locality (node.locality, an endpoint's locality): where a host runs, for zone-aware load balancing. */
export const localitySchema = z.strictObject({
  region: nonEmptyString.optional(),
  zone: nonEmptyString.optional(),
  subZone: nonEmptyString.optional(),
});

export const endpointSchema = z.strictObject({
  address: ipAddress,
  port: servicePort,
  weight: nonNegativeInt.default(1),
  healthy: z.boolean().default(true),
  metadata: metadata.default({}),
  locality: localitySchema.optional(),
});

/**
 * Locality failover (Istio's, with Envoy's priority levels): with node.locality.zone set, endpoints in
 * the node's region and zone are priority 0, the rest of its region 1, everything else 2; a priority
 * takes min(100, overprovisioningFactor/100 x its healthy %) of the traffic, the rest spills to the next.
 */
export const localityLbSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /** Envoy's overprovisioning_factor in percent (140 = 1.4). */
  overprovisioningFactor: positiveInt.default(140),
});

export const circuitBreakersSchema = z.strictObject({
  maxConnections: positiveInt.default(1024),
  /** Requests waiting for a connection once maxConnections is reached; 0 = none wait (503 UO at once). */
  maxPendingRequests: nonNegativeInt.default(1024),
  maxRequests: positiveInt.default(1024),
  maxRetries: nonNegativeInt.default(3),
});

/** The name of the proxy's own cluster for refused connections (Envoy's and Istio's name); no configured cluster may take it. */
export const BLACKHOLE_CLUSTER = 'BlackHoleCluster';

/** Envoy's grpc_health_check: `grpc.health.v1.Health/Check` over HTTP/2 instead of `GET path`; SERVING passes. */
export const grpcHealthCheckSchema = z.strictObject({
  /** The service name asked about; absent = the server as a whole (""). */
  serviceName: z.string().optional(),
});

export const healthCheckSchema = z.strictObject({
  path: healthCheckPath.default('/health'),
  grpc: grpcHealthCheckSchema.optional(),
  intervalMs: positiveInt.default(5000),
  timeoutMs: positiveInt.default(1000),
  healthyThreshold: positiveInt.default(1),
  unhealthyThreshold: positiveInt.default(3),
  jitterMs: millis.default(0),
});

export const outlierDetectionSchema = z.strictObject({
  consecutive5xx: positiveInt.default(5),
  consecutiveGatewayFailure: positiveInt.default(5),
  intervalMs: positiveInt.default(10000),
  baseEjectionTimeMs: positiveInt.default(30000),
  maxEjectionPercent: percent.default(10),
});

/**
 * mTLS (issue 13). A secret is Envoy's file-sourced SDS secret: a certificate chain (leaf first), its
 * private key and the trust bundle (CA certificates) peers are verified against. The files are
 * watched; a replaced file is loaded on the fly, a broken one is rejected and the old secret kept.
 */
export const tlsSecretSchema = z.strictObject({
  name: nonEmptyString,
  certChain: filePath,
  privateKey: filePath,
  trustBundle: filePath,
});

/** Istio's PeerAuthentication modes: mTLS only, mTLS or plaintext (migration), plaintext only. */
export const TLS_MODES = ['strict', 'permissive', 'disable'] as const;
export const tlsModeSchema = z.enum(TLS_MODES, { error: `expected one of ${TLS_MODES.join(', ')}` });

/**
 * Outbound mTLS origination of a cluster: every endpoint whose `metadata.identity` is set (a SPIFFE
 * ID, registered by the peer's agent) is reached over TLS presenting `secret`, and its certificate
 * must chain to the secret's trust bundle and carry that identity as a URI SAN. Endpoints without
 * an identity are reached in plaintext (Istio's auto mTLS).
 */
export const upstreamTlsSchema = z.strictObject({
  secret: nonEmptyString,
  /** SNI sent to the peer (Istio's shape: outbound_.PORT_._.SERVICE.NAMESPACE.svc.cluster.local). */
  sni: z.string().min(1).optional(),
});

/** Envoy's upstream protocol: HTTP/1.1, or HTTP/2 (http2_protocol_options; h2c in plaintext, ALPN h2 over mTLS) for ports declared http2/grpc. */
export const CLUSTER_PROTOCOLS = ['http1', 'http2'] as const;
export const clusterProtocolSchema = z.enum(CLUSTER_PROTOCOLS, { error: `expected one of ${CLUSTER_PROTOCOLS.join(', ')}` });

export const clusterSchema = z
  .strictObject({
    /** Naming scheme: inbound `in#PORT#SERVICE`, outbound `out#PORT#SERVICE`. */
    name: nonEmptyString,
    lbPolicy: lbPolicySchema.default('round_robin'),
    /** ring_hash only: the request header whose value picks the endpoint. */
    hashHeader: z.string().min(1).optional(),
    connectTimeoutMs: positiveInt.default(1000),
    protocol: clusterProtocolSchema.default('http1'),
    endpoints: z.array(endpointSchema).default([]),
    circuitBreakers: circuitBreakersSchema.prefault({}),
    healthCheck: healthCheckSchema.optional(),
    outlierDetection: outlierDetectionSchema.optional(),
    panicThresholdPercent: percent.default(50),
    tls: upstreamTlsSchema.optional(),
    /** Absent = on whenever node.locality.zone is set; `enabled: false` balances across every locality alike. */
    localityLb: localityLbSchema.optional(),
  })
  .superRefine((cluster, ctx) => {
    if (cluster.healthCheck?.grpc && cluster.protocol !== 'http2') {
      ctx.addIssue({ code: 'custom', path: ['healthCheck', 'grpc'], message: 'a gRPC health check needs protocol http2 (gRPC runs over HTTP/2): set protocol: http2 or use path' });
    }
    if (cluster.lbPolicy === 'ring_hash' && !cluster.hashHeader) {
      ctx.addIssue({ code: 'custom', path: ['hashHeader'], message: 'lbPolicy ring_hash needs hashHeader (the header to hash on)' });
    }
  });

/**
 * Envoy's HeaderMatcher: exactly one of exact, regex (the whole value), prefix, present; `invert`
 * negates the result. The pseudo-header names `:method`, `:authority` and `:path` match the request
 * method, the Host and the path (with its query), as Envoy's do. Repeated headers are matched joined with ",".
 */
export const headerMatchSchema = z
  .strictObject({
    name: nonEmptyString,
    exact: z.string().optional(),
    regex: z.string().optional(),
    prefix: z.string().min(1, { error: 'a prefix match needs a non-empty prefix (use present: true for any value)' }).optional(),
    present: z.boolean().optional(),
    invert: z.boolean().default(false),
  })
  .superRefine((header, ctx) => {
    const kinds = [header.exact, header.regex, header.prefix, header.present].filter((v) => v !== undefined).length;
    if (kinds !== 1) ctx.addIssue({ code: 'custom', path: [], message: 'a header match has exactly one of exact, regex, prefix, present' });
    if (header.regex !== undefined) checkRegex(header.regex, ['regex'], ctx);
  });

/** Envoy's QueryParameterMatcher: the value is compared URL-decoded; exactly one of exact, regex (the whole value), present. */
export const queryParameterMatchSchema = z
  .strictObject({
    name: nonEmptyString,
    exact: z.string().optional(),
    regex: z.string().optional(),
    present: z.boolean().optional(),
  })
  .superRefine((query, ctx) => {
    const kinds = [query.exact, query.regex, query.present].filter((v) => v !== undefined).length;
    if (kinds !== 1) ctx.addIssue({ code: 'custom', path: [], message: 'a query parameter match has exactly one of exact, regex, present' });
    if (query.regex !== undefined) checkRegex(query.regex, ['regex'], ctx);
  });

export const routeMatchSchema = z
  .strictObject({
    prefix: z.string().startsWith('/', { error: 'a prefix starts with "/"' }).optional(),
    path: z.string().startsWith('/', { error: 'a path starts with "/"' }).optional(),
    regex: z.string().optional(),
    headers: z.array(headerMatchSchema).default([]),
    queryParameters: z.array(queryParameterMatchSchema).default([]),
  })
  .superRefine((match, ctx) => {
    const kinds = [match.prefix, match.path, match.regex].filter((v) => v !== undefined).length;
    if (kinds !== 1) ctx.addIssue({ code: 'custom', path: [], message: 'a route match has exactly one of prefix, path, regex' });
    if (match.regex !== undefined) checkRegex(match.regex, ['regex'], ctx);
  });

/** Envoy's `retry_on` words the proxy implements. */
export const RETRY_ON_WORDS = ['5xx', 'gateway-error', 'reset', 'connect-failure', 'retriable-4xx', 'refused-stream', 'retriable-status-codes',
  // gRPC (Envoy's x-envoy-retry-grpc-on): the grpc-status of a trailers-only response
  'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable'] as const;

export const retryPolicySchema = z
  .strictObject({
    /** Comma-separated Envoy retry_on words. */
    retryOn: z.string().default('5xx,connect-failure,reset'),
    numRetries: nonNegativeInt.default(2),
    /** 0 = the route's timeout applies to each try. Measured until the response headers arrive (Envoy's semantics). */
    perTryTimeoutMs: millis.default(0),
    /** Statuses retried under `retriable-status-codes`. */
    retriableStatusCodes: z.array(z.number().int().min(100).max(599)).default([]),
    /** Also retry non-idempotent methods (POST, PATCH, ...): the service tolerates duplicates. */
    retryNonIdempotent: z.boolean().default(false),
  })
  .superRefine((policy, ctx) => {
    const words = policy.retryOn.split(',').map((w) => w.trim()).filter((w) => w.length > 0);
    const unknown = words.filter((w) => !(RETRY_ON_WORDS as readonly string[]).includes(w));
    if (unknown.length > 0) {
      ctx.addIssue({
        code: 'custom', path: ['retryOn'],
        message: `unknown retryOn word${unknown.length > 1 ? 's' : ''} ${unknown.map((w) => `"${w}"`).join(', ')}; valid words: ${RETRY_ON_WORDS.join(', ')}`,
      });
    }
    if (words.includes('retriable-status-codes') && policy.retriableStatusCodes.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['retriableStatusCodes'], message: 'retryOn "retriable-status-codes" needs retriableStatusCodes (the statuses to retry)' });
    }
  });

/** A header name the proxy may add or set: not a pseudo-header, no hop-by-hop header, valid token characters. */
const headerName = z
  .string({ error: 'expected a header name' })
  .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, { error: 'a header name is token characters (letters, digits, "-", ...); pseudo-headers such as ":path" cannot be set' })
  .refine((name) => !['host', 'connection', 'keep-alive', 'transfer-encoding', 'te', 'upgrade', 'proxy-connection', 'content-length'].includes(name.toLowerCase()), {
    error: 'host, content-length and hop-by-hop headers cannot be set this way (use hostRewrite for the Host)',
  });

/** Envoy's HeaderValueOption: `append` true (default) adds a value, false replaces every existing value. */
export const headerValueOptionSchema = z.strictObject({
  name: headerName,
  value: z.string({ error: 'expected a header value' }).refine((v) => !/[\r\n\0]/.test(v), { error: 'a header value cannot contain CR, LF or NUL' }),
  append: z.boolean().default(true),
});

export const weightedClusterSchema = z.strictObject({
  name: nonEmptyString,
  weight: nonNegativeInt,
  /** Added to the upstream request when this cluster is picked (Envoy's weighted cluster request_headers_to_add). */
  requestHeadersToAdd: z.array(headerValueOptionSchema).optional(),
});

/**
 * Envoy's request_mirror_policies: a fire-and-forget copy of `percent` of the requests to `cluster`
 * (Host gets `-shadow`), its response discarded. Bodies up to 64 KiB are copied; a request with a
 * larger or unknown-length body is not mirrored (counted).
 */
export const requestMirrorPolicySchema = z.strictObject({
  cluster: nonEmptyString,
  percent: percent.default(100),
});

export const routeActionSchema = z
  .strictObject({
    cluster: nonEmptyString.optional(),
    weightedClusters: z.array(weightedClusterSchema).min(1).optional(),
    /** 0 = no timeout. */
    timeoutMs: millis.default(15000),
    retryPolicy: retryPolicySchema.optional(),
    /** Envoy's prefix_rewrite: the matched prefix (or path) is replaced; the original goes up as `x-envoy-original-path`. */
    prefixRewrite: z.string().startsWith('/', { error: 'a prefix rewrite starts with "/"' }).optional(),
    /** Envoy's host_rewrite_literal: the Host sent upstream. */
    hostRewrite: nonEmptyString.optional(),
    requestMirrorPolicies: z.array(requestMirrorPolicySchema).optional(),
  })
  .superRefine((action, ctx) => {
    if ((action.cluster === undefined) === (action.weightedClusters === undefined)) {
      ctx.addIssue({ code: 'custom', path: [], message: 'a route has exactly one of cluster, weightedClusters' });
    }
    if (action.hostRewrite !== undefined && /[\s/?#@]/.test(action.hostRewrite)) {
      ctx.addIssue({ code: 'custom', path: ['hostRewrite'], message: 'a host rewrite is a host name or host:port (no spaces, "/", "?", "#", "@")' });
    }
  });

export const directResponseSchema = z.strictObject({
  status: z.number().int().min(100).max(599),
  body: z.string().default(''),
});

export const REDIRECT_RESPONSE_CODES = [301, 302, 303, 307, 308] as const;

/** Envoy's RedirectAction: the Location is the request's URL with the given parts replaced. */
export const redirectSchema = z
  .strictObject({
    schemeRedirect: z.enum(['http', 'https'], { error: 'expected http or https' }).optional(),
    hostRedirect: nonEmptyString.optional(),
    portRedirect: servicePort.optional(),
    /** Replaces the whole path (a `?query` here replaces the query too, as Envoy's). */
    pathRedirect: z.string().startsWith('/', { error: 'a path redirect starts with "/"' }).optional(),
    /** Replaces the matched prefix of the path. */
    prefixRewrite: z.string().startsWith('/', { error: 'a prefix rewrite starts with "/"' }).optional(),
    responseCode: z.union(REDIRECT_RESPONSE_CODES.map((code) => z.literal(code)), { error: `expected one of ${REDIRECT_RESPONSE_CODES.join(', ')}` }).default(301),
    stripQuery: z.boolean().default(false),
  })
  .superRefine((redirect, ctx) => {
    if (redirect.pathRedirect !== undefined && redirect.prefixRewrite !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['prefixRewrite'], message: 'a redirect has at most one of pathRedirect, prefixRewrite' });
    }
    if (redirect.hostRedirect !== undefined && /[\s/?#@]/.test(redirect.hostRedirect)) {
      ctx.addIssue({ code: 'custom', path: ['hostRedirect'], message: 'a host redirect is a host name (no spaces, "/", "?", "#", "@"; set the port with portRedirect)' });
    }
  });

/**
 * Envoy's HTTP fault filter for one route: the delay first, then the abort, each for `percent` of the
 * requests (fractions allowed). An abort answers `httpStatus` (or, for gRPC, HTTP 200 with `grpcStatus`).
 */
export const faultSchema = z
  .strictObject({
    delay: z.strictObject({ fixedDelayMs: millis, percent }).optional(),
    abort: z
      .strictObject({
        httpStatus: z.number().int().min(200, { error: 'an abort status is 200..599' }).max(599, { error: 'an abort status is 200..599' }).optional(),
        grpcStatus: z.number().int().min(0, { error: 'a gRPC status is 0..16' }).max(16, { error: 'a gRPC status is 0..16' }).optional(),
        percent,
      })
      .superRefine((abort, ctx) => {
        if ((abort.httpStatus === undefined) === (abort.grpcStatus === undefined)) ctx.addIssue({ code: 'custom', path: [], message: 'an abort has exactly one of httpStatus, grpcStatus' });
      })
      .optional(),
  })
  .superRefine((fault, ctx) => {
    if (fault.delay === undefined && fault.abort === undefined) ctx.addIssue({ code: 'custom', path: [], message: 'a fault has a delay, an abort or both' });
  });

/**
 * Envoy's local_ratelimit token bucket: starts full with `maxTokens`, gains `tokensPerFill` every
 * `fillIntervalMs` (up to maxTokens); a request without a token gets 429 `local_rate_limited`.
 */
export const tokenBucketSchema = z.strictObject({
  maxTokens: positiveInt,
  tokensPerFill: positiveInt.default(1),
  fillIntervalMs: positiveInt,
});

/** Opaque string labels of a route (the agent puts `rule` and `service` there), shown in /config_dump and x-mesh-route. */
const routeMetadata = z.record(z.string(), z.string({ error: 'route metadata values are strings' }));

export const routeSchema = z
  .strictObject({
    name: z.string().optional(),
    match: routeMatchSchema,
    route: routeActionSchema.optional(),
    redirect: redirectSchema.optional(),
    directResponse: directResponseSchema.optional(),
    requestHeadersToAdd: z.array(headerValueOptionSchema).optional(),
    requestHeadersToRemove: z.array(headerName).optional(),
    responseHeadersToAdd: z.array(headerValueOptionSchema).optional(),
    responseHeadersToRemove: z.array(headerName).optional(),
    fault: faultSchema.optional(),
    rateLimit: tokenBucketSchema.optional(),
    metadata: routeMetadata.optional(),
  })
  .superRefine((route, ctx) => {
    const actions = [route.route, route.redirect, route.directResponse].filter((v) => v !== undefined).length;
    if (actions !== 1) ctx.addIssue({ code: 'custom', path: [], message: `a route has exactly one of route, redirect, directResponse${actions > 1 ? ' (this one has several)' : ''}` });
    if (route.match.regex !== undefined && route.route?.prefixRewrite !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['route', 'prefixRewrite'], message: 'prefixRewrite needs a prefix or path match (a regex match has no prefix to replace)' });
    }
    if (route.match.regex !== undefined && route.redirect?.prefixRewrite !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['redirect', 'prefixRewrite'], message: 'prefixRewrite needs a prefix or path match (a regex match has no prefix to replace)' });
    }
  });

export const virtualHostSchema = z.strictObject({
  name: nonEmptyString,
  /** Host header values (with or without :port); '*' matches any. */
  domains: z.array(nonEmptyString).min(1, { error: 'a virtual host needs at least one domain' }),
  routes: z.array(routeSchema).default([]),
  /** One token bucket for every request to this virtual host (checked before a route's own). */
  rateLimit: tokenBucketSchema.optional(),
});

/** Inbound TLS termination on a captured port: `secret` is the local service's certificate; client certificates are required. */
export const inboundTlsSchema = z
  .strictObject({ mode: tlsModeSchema.default('disable'), secret: nonEmptyString.optional() })
  .superRefine((tls, ctx) => {
    if (tls.mode !== 'disable' && tls.secret === undefined) ctx.addIssue({ code: 'custom', path: ['secret'], message: `mode ${tls.mode} needs secret (the local service's certificate)` });
  });

/**
 * Envoy's RBAC filter, ALLOW action, on one inbound port. With `rbac` present a request is denied
 * (403 "RBAC: access denied") unless some policy matches; absent = every caller is allowed.
 * Each list matches Istio's way: an exact value, `prefix*`, `*suffix` or `*` (anything present).
 * `principals` are peer identities (SPIFFE IDs from the client certificate); absent = any caller,
 * authenticated or not. `methods` and `paths` absent = any.
 */
export const rbacPolicySchema = z.strictObject({
  name: nonEmptyString,
  principals: z.array(nonEmptyString).min(1).optional(),
  methods: z.array(nonEmptyString).min(1).optional(),
  paths: z.array(nonEmptyString).min(1).optional(),
});
export const rbacSchema = z.strictObject({ policies: z.array(rbacPolicySchema).default([]) });

/**
 * How an inbound port is served (issue 15): `http` = today's HTTP path; `tcp` = bytes to the cluster at
 * once, no wait for client bytes (server-first protocols such as MySQL and SMTP work); `auto` = Istio's
 * protocol sniffing: an HTTP/1.x request line, the HTTP/2 preface or a TLS ClientHello take the HTTP
 * path, anything else (or nothing within limits.protocolDetectionTimeoutMs) is TCP.
 */
export const INBOUND_PROTOCOLS = ['http', 'tcp', 'auto'] as const;
export const inboundProtocolSchema = z.enum(INBOUND_PROTOCOLS, { error: `expected one of ${INBOUND_PROTOCOLS.join(', ')}` });

export const inboundPortSchema = z
  .strictObject({
    port: servicePort,
    cluster: nonEmptyString,
    protocol: inboundProtocolSchema.default('http'),
    tls: inboundTlsSchema.optional(),
    rbac: rbacSchema.optional(),
  })
  .superRefine((entry, ctx) => {
    if (entry.protocol === 'tcp' && entry.rbac !== undefined) ctx.addIssue({ code: 'custom', path: ['rbac'], message: 'rbac needs an HTTP port (it matches methods and paths): remove rbac or set protocol: http' });
    if (entry.protocol === 'tcp' && entry.tls !== undefined && entry.tls.mode !== 'disable') ctx.addIssue({ code: 'custom', path: ['tls'], message: 'inbound TLS termination is not implemented for protocol tcp: set tls.mode: disable or protocol: http' });
  });

/**
 * A redirected outbound connection whose original destination is exactly address:port is proxied as bytes
 * to `cluster` (Envoy's tcp_proxy): `tcp` at once (no sniff: server-first protocols work); `auto` (a service
 * port declared with no protocol) sniffed first, as inbound `auto`: HTTP takes the HTTP path (routed by Host),
 * anything else, or silence for limits.protocolDetectionTimeoutMs, is piped to `cluster`.
 */
export const OUTBOUND_TCP_PROTOCOLS = ['tcp', 'auto'] as const;
export const outboundTcpSchema = z.strictObject({
  address: ipAddress,
  port: servicePort,
  cluster: nonEmptyString,
  protocol: z.enum(OUTBOUND_TCP_PROTOCOLS, { error: `expected one of ${OUTBOUND_TCP_PROTOCOLS.join(', ')}` }).default('tcp'),
  /**
   * NAME:PORT authorities an HTTP/1.1 `CONNECT` to the listener may name to reach this cluster (Envoy's CONNECT
   * termination): how a client without capture (the demo, `curl -p -x 127.0.0.1:15001 telnet://clock:7000`)
   * reaches a mesh TCP service. The proxy answers 200 once the upstream is connected, then pipes bytes.
   */
  domains: z.array(nonEmptyString).default([]),
});

/** An Envoy format string: every command operator must be one the proxy knows (the error names it). */
export const accessLogFormatString = z.string().superRefine((format, ctx) => {
  try {
    parseAccessLogFormat(format);
  } catch (err) {
    if (!(err instanceof AccessLogFormatError)) throw err;
    ctx.addIssue({ code: 'custom', path: [], message: err.message });
  }
});

const accessLogFields = {
  /** `text` = Envoy's default line (or textFormat), `json` = Istio's JSON keys (or jsonFormat). */
  format: z.enum(['text', 'json']).default('text'),
  path: z.string().min(1).default('/dev/stdout'),
  /** Envoy's text_format: a format string; a newline is added when it does not end with one. */
  textFormat: accessLogFormatString.optional(),
  /** Envoy's json_format: key -> format string; a value that is one operator keeps its type (numbers stay numbers, absent = null). */
  jsonFormat: z.record(z.string(), accessLogFormatString).optional(),
};

function checkOneFormat(log: { textFormat?: string; jsonFormat?: Record<string, string> }, ctx: z.RefinementCtx): void {
  if (log.textFormat !== undefined && log.jsonFormat !== undefined) ctx.addIssue({ code: 'custom', path: ['jsonFormat'], message: 'an access log has at most one of textFormat, jsonFormat' });
}

export const accessLogSchema = z.strictObject(accessLogFields).superRefine(checkOneFormat);

export const ACCESS_LOG_DIRECTIONS = ['inbound', 'outbound', 'both'] as const;

/** One more access log (Envoy's access_log list on a listener): the requests of one direction, or both. */
export const accessLogEntrySchema = z
  .strictObject({ ...accessLogFields, direction: z.enum(ACCESS_LOG_DIRECTIONS, { error: `expected one of ${ACCESS_LOG_DIRECTIONS.join(', ')}` }).default('both') })
  .superRefine(checkOneFormat);

/**
 * Tracing (issue 16). Propagation is always on: W3C traceparent/tracestate or B3 in, a span per hop, both
 * formats out. Spans are exported (OTLP/HTTP protobuf, batched, bounded) only when `otlp` is set.
 */
export const tracingOtlpSchema = z.strictObject({
  /** The collector's OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces. */
  endpoint: z.url({ protocol: /^https?$/, error: 'expected an http(s) URL such as http://127.0.0.1:4318/v1/traces' }).describe("The collector's OTLP/HTTP traces URL (protobuf), e.g. http://127.0.0.1:4318/v1/traces"),
  /** One export's deadline, retries included; past it the batch is dropped (counted). */
  timeoutMs: positiveInt.default(10000).describe("One export's deadline, the exporter's retries included; past it the batch is dropped (counted)"),
  /** Extra request headers of each export (an API key, a tenant). */
  headers: z.record(z.string().min(1), z.string()).default({}).describe('Extra HTTP headers of each export request (an API key, a tenant)'),
});

export const tracingSchema = z
  .strictObject({
    /** The spans' resource `service.name`; default node.cluster. */
    serviceName: z.string().min(1).optional().describe("The spans' resource service.name; default node.cluster (the agent: the local service's name)"),
    /** Share of new traces (no sampling decision came with the request) that are sampled; the caller's decision is kept. */
    samplingPercent: percent.default(100).describe("Share of new traces that are sampled (0..100, fractions allowed); a caller's sampling decision (traceparent flags, x-b3-sampled) is kept"),
    otlp: tracingOtlpSchema.optional().describe('Where spans are exported (OTLP/HTTP protobuf, OpenTelemetry SDK); absent = propagation only, nothing exported'),
    /** Spans waiting or in flight at most; past it they are dropped (tracing.opentelemetry.spans_dropped). */
    maxQueueSize: positiveInt.default(2048).describe('Spans waiting or in flight at most; past it new spans are dropped and counted (tracing.opentelemetry.spans_dropped)'),
    maxExportBatchSize: positiveInt.default(512).describe('Spans per export request at most'),
    /** A batch goes at least this often. */
    scheduledDelayMs: positiveInt.default(1000).describe('A batch is sent at least this often (ms)'),
  })
  .superRefine((tracing, ctx) => {
    if (tracing.maxExportBatchSize > tracing.maxQueueSize) ctx.addIssue({ code: 'custom', path: ['maxExportBatchSize'], message: `maxExportBatchSize (${tracing.maxExportBatchSize}) is larger than maxQueueSize (${tracing.maxQueueSize}): a batch is taken from the queue` });
  });

/** The proxy's startup config, written by the agent to a file (docs/package-apis.md, "ProxyBootstrap"). */
export const proxyBootstrapSchema = z
  .strictObject({
    /** Shown in /config_dump as version_info. */
    version: z.string().default('1'),
    node: z
      .strictObject({ id: z.string().default('mesh-proxy'), cluster: z.string().default(''), metadata: metadata.default({}), locality: localitySchema.optional() })
      .prefault({}),
    admin: listenAddress(ADMIN_HOST, DEFAULT_PORTS.proxyAdmin),
    listener: z
      .strictObject({ name: z.string().default('virtual'), address: ipAddress.default('0.0.0.0'), port: listenPort.default(DEFAULT_PORTS.proxyListener) })
      .prefault({}),
    /** This host's addresses: a redirected connection whose original destination is one of these (or loopback) and an `inbound` port is inbound; a direct connection from one of them is local. */
    localAddresses: z.array(ipAddress).default([]),
    /** What the capture rules send to the listener as outbound (the mesh VIP, the VIP range, extra captured CIDRs): a redirected connection whose original destination is in one of these is outbound. */
    outboundCidrs: z.array(z.union([ipAddress, cidr], { error: 'expected an IP address or a CIDR such as 240.240.0.0/16' })).default([DEFAULT_MESH_VIP, DEFAULT_VIP_CIDR]),
    /** Original destination port -> inbound cluster. */
    inbound: z.array(inboundPortSchema).default([]),
    /** Outbound TCP routes by original destination VIP:port (a service port with a non-HTTP protocol). */
    outboundTcp: z.array(outboundTcpSchema).default([]),
    /** TLS secrets (certificate chain, key, trust bundle files) that inbound ports and clusters refer to by name. */
    secrets: z.array(tlsSecretSchema).default([]),
    /** Every request (both directions), as before issue 16. */
    accessLog: accessLogSchema.optional(),
    /** More access logs, each for inbound, outbound or both (Envoy's access_log list); written besides accessLog. */
    accessLogs: z.array(accessLogEntrySchema).default([]),
    clusters: z.array(clusterSchema).default([]),
    routes: z.strictObject({ virtualHosts: z.array(virtualHostSchema).default([]) }).prefault({}),
    drainTimeMs: millis.default(5000),
    /** Trace propagation and span export (issue 16); absent = propagation only. */
    tracing: tracingSchema.optional(),
    /** Request-head limits: Envoy's 60 KiB / 100 headers; slow heads are cut after headersTimeoutMs (408). */
    limits: z
      .strictObject({
        maxHeadersBytes: positiveInt.default(60 * 1024),
        maxHeadersCount: positiveInt.default(100),
        headersTimeoutMs: positiveInt.default(10000),
        idleTimeoutMs: positiveInt.default(300000),
        /** Envoy's stream idle timeout: a request whose body or response moves no byte for this long is cut (408 or reset, flag SI). */
        streamIdleTimeoutMs: positiveInt.default(300000),
        /** HTTP/2 downstream SETTINGS_MAX_CONCURRENT_STREAMS per connection (Envoy's is unlimited, which rapid-reset floods exploit). */
        http2MaxConcurrentStreams: positiveInt.max(2147483647, { error: 'at most 2147483647 (2^31-1, RFC 9113 6.5.2)' }).default(100),
        /** HTTP/2 downstream SETTINGS_INITIAL_WINDOW_SIZE: how much of a request body one stream may send ahead (memory per stream). */
        http2InitialStreamWindowBytes: positiveInt.min(65535, { error: 'at least 65535 (the HTTP/2 default window)' }).max(262144, { error: 'at most 262144 (256 KiB per stream bounds memory: 100 streams x 256 KiB per connection)' }).default(65535),
        /** Inbound protocol `auto`: how long to wait for the client's first bytes before treating the connection as TCP (Istio's 100 ms). */
        protocolDetectionTimeoutMs: positiveInt.default(100),
        /** A TCP session with no byte either way for this long is closed (Envoy's tcp_proxy idle_timeout, 1 h). */
        tcpIdleTimeoutMs: positiveInt.default(3600000),
      })
      .prefault({}),
  })
  .superRefine((bootstrap, ctx) => {
    const names = new Set<string>();
    bootstrap.clusters.forEach((cluster, index) => {
      if (names.has(cluster.name)) ctx.addIssue({ code: 'custom', path: ['clusters', index, 'name'], message: `cluster "${cluster.name}" is defined twice` });
      if (cluster.name === BLACKHOLE_CLUSTER) ctx.addIssue({ code: 'custom', path: ['clusters', index, 'name'], message: `the cluster name "${BLACKHOLE_CLUSTER}" is reserved (the proxy's cluster for refused connections); choose another name` });
      names.add(cluster.name);
    });
    const known = (name: string) => names.has(name);
    const secrets = new Set<string>();
    bootstrap.secrets.forEach((secret, index) => {
      if (secrets.has(secret.name)) ctx.addIssue({ code: 'custom', path: ['secrets', index, 'name'], message: `secret "${secret.name}" is defined twice` });
      secrets.add(secret.name);
    });
    const unknownSecret = (name: string) => `unknown secret "${name}" (define it under secrets: name, certChain, privateKey, trustBundle)`;
    bootstrap.inbound.forEach((entry, index) => {
      if (!known(entry.cluster)) ctx.addIssue({ code: 'custom', path: ['inbound', index, 'cluster'], message: `unknown cluster "${entry.cluster}"` });
      if (entry.tls?.secret !== undefined && !secrets.has(entry.tls.secret)) ctx.addIssue({ code: 'custom', path: ['inbound', index, 'tls', 'secret'], message: unknownSecret(entry.tls.secret) });
    });
    const tcpRoutes = new Set<string>();
    bootstrap.outboundTcp.forEach((entry, index) => {
      if (!known(entry.cluster)) ctx.addIssue({ code: 'custom', path: ['outboundTcp', index, 'cluster'], message: `unknown cluster "${entry.cluster}"` });
      const key = `${entry.address}:${entry.port}`;
      if (tcpRoutes.has(key)) ctx.addIssue({ code: 'custom', path: ['outboundTcp', index], message: `${key} is routed twice (one cluster per VIP and port)` });
      tcpRoutes.add(key);
    });
    bootstrap.clusters.forEach((cluster, index) => {
      if (cluster.tls && !secrets.has(cluster.tls.secret)) ctx.addIssue({ code: 'custom', path: ['clusters', index, 'tls', 'secret'], message: unknownSecret(cluster.tls.secret) });
    });
    bootstrap.routes.virtualHosts.forEach((host, h) => {
      host.routes.forEach((route, r) => {
        const base = ['routes', 'virtualHosts', h, 'routes', r, 'route'];
        if (route.route?.cluster !== undefined && !known(route.route.cluster)) {
          ctx.addIssue({ code: 'custom', path: [...base, 'cluster'], message: `unknown cluster "${route.route.cluster}"` });
        }
        route.route?.weightedClusters?.forEach((weighted, w) => {
          if (!known(weighted.name)) ctx.addIssue({ code: 'custom', path: [...base, 'weightedClusters', w, 'name'], message: `unknown cluster "${weighted.name}"` });
        });
        route.route?.requestMirrorPolicies?.forEach((mirror, m) => {
          if (!known(mirror.cluster)) ctx.addIssue({ code: 'custom', path: [...base, 'requestMirrorPolicies', m, 'cluster'], message: `unknown mirror cluster "${mirror.cluster}"` });
        });
      });
    });
  });

function checkRegex(source: string, path: (string | number)[], ctx: z.RefinementCtx): void {
  try {
    new RegExp(source);
  } catch (err) {
    ctx.addIssue({ code: 'custom', path, message: `invalid regular expression: ${(err as Error).message}` });
  }
}

export type LbPolicy = z.infer<typeof lbPolicySchema>;
export type Endpoint = z.infer<typeof endpointSchema>;
export type Locality = z.infer<typeof localitySchema>;
export type LocalityLb = z.infer<typeof localityLbSchema>;
export type AccessLog = z.infer<typeof accessLogSchema>;
export type AccessLogEntryConfig = z.infer<typeof accessLogEntrySchema>;
export type CircuitBreakers = z.infer<typeof circuitBreakersSchema>;
export type HealthCheck = z.infer<typeof healthCheckSchema>;
export type GrpcHealthCheck = z.infer<typeof grpcHealthCheckSchema>;
export type ClusterProtocol = z.infer<typeof clusterProtocolSchema>;
export type OutlierDetection = z.infer<typeof outlierDetectionSchema>;
export type Cluster = z.infer<typeof clusterSchema>;
export type HeaderMatch = z.infer<typeof headerMatchSchema>;
export type QueryParameterMatch = z.infer<typeof queryParameterMatchSchema>;
export type RouteMatch = z.infer<typeof routeMatchSchema>;
export type HeaderValueOption = z.infer<typeof headerValueOptionSchema>;
export type RequestMirrorPolicy = z.infer<typeof requestMirrorPolicySchema>;
export type Redirect = z.infer<typeof redirectSchema>;
export type Fault = z.infer<typeof faultSchema>;
export type TokenBucket = z.infer<typeof tokenBucketSchema>;
export type RetryPolicy = z.infer<typeof retryPolicySchema>;
export type RouteAction = z.infer<typeof routeActionSchema>;
export type Route = z.infer<typeof routeSchema>;
export type VirtualHost = z.infer<typeof virtualHostSchema>;
export type TlsSecret = z.infer<typeof tlsSecretSchema>;
export type TlsMode = z.infer<typeof tlsModeSchema>;
export type UpstreamTls = z.infer<typeof upstreamTlsSchema>;
export type InboundTls = z.infer<typeof inboundTlsSchema>;
export type RbacPolicy = z.infer<typeof rbacPolicySchema>;
export type InboundPort = z.infer<typeof inboundPortSchema>;
export type InboundProtocol = z.infer<typeof inboundProtocolSchema>;
export type OutboundTcp = z.infer<typeof outboundTcpSchema>;
export type Tracing = z.infer<typeof tracingSchema>;
export type ProxyBootstrap = z.infer<typeof proxyBootstrapSchema>;
export type ProxyBootstrapInput = z.input<typeof proxyBootstrapSchema>;
