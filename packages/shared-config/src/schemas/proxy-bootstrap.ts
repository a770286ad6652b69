import { z } from 'zod';
import { ADMIN_HOST, DEFAULT_MESH_VIP, DEFAULT_PORTS, DEFAULT_VIP_CIDR } from '../defaults';
import { cidr, filePath, healthCheckPath, ipAddress, listenAddress, listenPort, metadata, millis, nonEmptyString, nonNegativeInt, percent, positiveInt, servicePort } from './common';

export const LB_POLICIES = ['round_robin', 'least_request', 'random', 'ring_hash'] as const;
export const lbPolicySchema = z.enum(LB_POLICIES, { error: `expected one of ${LB_POLICIES.join(', ')}` });

export const endpointSchema = z.strictObject({
  address: ipAddress,
  port: servicePort,
  weight: nonNegativeInt.default(1),
  healthy: z.boolean().default(true),
  metadata: metadata.default({}),
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
  })
  .superRefine((cluster, ctx) => {
    if (cluster.healthCheck?.grpc && cluster.protocol !== 'http2') {
      ctx.addIssue({ code: 'custom', path: ['healthCheck', 'grpc'], message: 'a gRPC health check needs protocol http2 (gRPC runs over HTTP/2): set protocol: http2 or use path' });
    }
    if (cluster.lbPolicy === 'ring_hash' && !cluster.hashHeader) {
      ctx.addIssue({ code: 'custom', path: ['hashHeader'], message: 'lbPolicy ring_hash needs hashHeader (the header to hash on)' });
    }
  });

export const headerMatchSchema = z
  .strictObject({
    name: nonEmptyString,
    exact: z.string().optional(),
    regex: z.string().optional(),
    present: z.boolean().optional(),
  })
  .superRefine((header, ctx) => {
    const kinds = [header.exact, header.regex, header.present].filter((v) => v !== undefined).length;
    if (kinds !== 1) ctx.addIssue({ code: 'custom', path: [], message: 'a header match has exactly one of exact, regex, present' });
    if (header.regex !== undefined) checkRegex(header.regex, ['regex'], ctx);
  });

export const routeMatchSchema = z
  .strictObject({
    prefix: z.string().startsWith('/', { error: 'a prefix starts with "/"' }).optional(),
    path: z.string().startsWith('/', { error: 'a path starts with "/"' }).optional(),
    regex: z.string().optional(),
    headers: z.array(headerMatchSchema).default([]),
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

export const weightedClusterSchema = z.strictObject({ name: nonEmptyString, weight: nonNegativeInt });

export const routeActionSchema = z
  .strictObject({
    cluster: nonEmptyString.optional(),
    weightedClusters: z.array(weightedClusterSchema).min(1).optional(),
    /** 0 = no timeout. */
    timeoutMs: millis.default(15000),
    retryPolicy: retryPolicySchema.optional(),
  })
  .superRefine((action, ctx) => {
    if ((action.cluster === undefined) === (action.weightedClusters === undefined)) {
      ctx.addIssue({ code: 'custom', path: [], message: 'a route has exactly one of cluster, weightedClusters' });
    }
  });

export const directResponseSchema = z.strictObject({
  status: z.number().int().min(100).max(599),
  body: z.string().default(''),
});

export const routeSchema = z
  .strictObject({
    name: z.string().optional(),
    match: routeMatchSchema,
    route: routeActionSchema.optional(),
    directResponse: directResponseSchema.optional(),
  })
  .superRefine((route, ctx) => {
    if ((route.route === undefined) === (route.directResponse === undefined)) {
      ctx.addIssue({ code: 'custom', path: [], message: 'a route has exactly one of route, directResponse' });
    }
  });

export const virtualHostSchema = z.strictObject({
  name: nonEmptyString,
  /** Host header values (with or without :port); '*' matches any. */
  domains: z.array(nonEmptyString).min(1, { error: 'a virtual host needs at least one domain' }),
  routes: z.array(routeSchema).default([]),
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

/** A redirected outbound connection whose original destination is exactly address:port is proxied as bytes to `cluster` (Envoy's tcp_proxy; no sniff). */
export const outboundTcpSchema = z.strictObject({
  address: ipAddress,
  port: servicePort,
  cluster: nonEmptyString,
});

export const accessLogSchema = z.strictObject({
  format: z.enum(['text', 'json']).default('text'),
  path: z.string().min(1).default('/dev/stdout'),
});

/** The proxy's startup config, written by the agent to a file (docs/package-apis.md, "ProxyBootstrap"). */
export const proxyBootstrapSchema = z
  .strictObject({
    /** Shown in /config_dump as version_info. */
    version: z.string().default('1'),
    node: z
      .strictObject({ id: z.string().default('mesh-proxy'), cluster: z.string().default(''), metadata: metadata.default({}) })
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
    accessLog: accessLogSchema.optional(),
    clusters: z.array(clusterSchema).default([]),
    routes: z.strictObject({ virtualHosts: z.array(virtualHostSchema).default([]) }).prefault({}),
    drainTimeMs: millis.default(5000),
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
export type CircuitBreakers = z.infer<typeof circuitBreakersSchema>;
export type HealthCheck = z.infer<typeof healthCheckSchema>;
export type GrpcHealthCheck = z.infer<typeof grpcHealthCheckSchema>;
export type ClusterProtocol = z.infer<typeof clusterProtocolSchema>;
export type OutlierDetection = z.infer<typeof outlierDetectionSchema>;
export type Cluster = z.infer<typeof clusterSchema>;
export type HeaderMatch = z.infer<typeof headerMatchSchema>;
export type RouteMatch = z.infer<typeof routeMatchSchema>;
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
export type ProxyBootstrap = z.infer<typeof proxyBootstrapSchema>;
export type ProxyBootstrapInput = z.input<typeof proxyBootstrapSchema>;
