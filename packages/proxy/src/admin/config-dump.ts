import type { Cluster } from '../cluster/cluster';
import type { ClusterConfig, FaultConfig, HeaderValueOptionConfig, ProxyBootstrap, RouteConfig, TokenBucketConfig, VirtualHostConfig } from '../config/types';
import type { LoadedSecret } from '../tls/secret-store';
import { upstreamAlpn } from '../tls/upstream-tls';

const T = 'type.googleapis.com/envoy.admin.v3.';
const V3 = 'type.googleapis.com/envoy.config.';

const seconds = (ms: number | undefined): string => `${((ms ?? 0) / 1000).toString()}s`;

export interface ConfigDumpInput {
  config: ProxyBootstrap;
  clusters: ReadonlyMap<string, Cluster>;
  version: string;
  lastUpdated: Date;
  listener: { address: string; port: number } | undefined;
  /** The loaded TLS secrets: their files and versions are dumped, never their bytes. */
  secrets?: readonly LoadedSecret[];
}

/** Envoy's SecretsConfigDump.DynamicSecret for a file-sourced secret: file names only (the key never leaves its file). */
function secretResource(s: LoadedSecret): object {
  return {
    name: s.name,
    version_info: String(s.version),
    last_updated: s.loadedAt.toISOString(),
    secret: {
      '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret',
      name: s.name,
      tls_certificate: { certificate_chain: { filename: s.config.certChain }, private_key: { filename: s.config.privateKey } },
    },
  };
}

/**
 * Istio's auto mTLS as Envoy dumps it: endpoints labelled `tlsMode: istio` (those with a registered
 * identity) get the TLS transport socket presenting the secret; the rest stay raw (plaintext).
 */
function transportSocketMatches(c: Cluster, tls: NonNullable<ClusterConfig['tls']>): object[] {
  const identities = [...new Set(c.hosts.map((h) => h.identity).filter((id): id is string => id !== undefined))];
  return [
    {
      name: 'tlsMode-istio', match: { tlsMode: 'istio' },
      transport_socket: {
        name: 'envoy.transport_sockets.tls',
        typed_config: {
          '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
          common_tls_context: {
            tls_params: { tls_minimum_protocol_version: 'TLSv1_2', tls_maximum_protocol_version: 'TLSv1_3' },
            alpn_protocols: upstreamAlpn(c.protocol),
            tls_certificate_sds_secret_configs: [{ name: tls.secret }],
            // each endpoint must present its own registered identity (stricter than any of the list)
            combined_validation_context: { default_validation_context: { match_subject_alt_names: identities.map((exact) => ({ exact })) }, validation_context_sds_secret_config: { name: tls.secret } },
          },
          ...(tls.sni ? { sni: tls.sni } : {}),
        },
      },
    },
    { name: 'tlsMode-disabled', match: {}, transport_socket: { name: 'envoy.transport_sockets.raw_buffer', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer' } } },
  ];
}

function clusterResource(c: Cluster, cc: ClusterConfig): object {
  return {
    '@type': `${V3}cluster.v3.Cluster`,
    name: cc.name,
    type: c.addedViaApi ? 'EDS' : 'STATIC',
    connect_timeout: seconds(cc.connectTimeoutMs ?? 1000),
    lb_policy: (cc.lbPolicy ?? 'round_robin').toUpperCase(),
    ...(cc.hashHeader ? { ring_hash_lb_config: {}, hash_policy: [{ header: { header_name: cc.hashHeader } }] } : {}),
    ...(cc.circuitBreakers ? { circuit_breakers: { thresholds: [{ max_connections: cc.circuitBreakers.maxConnections, max_pending_requests: cc.circuitBreakers.maxPendingRequests, max_requests: cc.circuitBreakers.maxRequests, max_retries: cc.circuitBreakers.maxRetries }] } } : {}),
    // Envoy's HttpProtocolOptions extension: explicit HTTP/2 (h2c, or ALPN h2 over mTLS) or HTTP/1.1 to the endpoints
    typed_extension_protocol_options: {
      'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
        '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
        explicit_http_config: c.protocol === 'http2' ? { http2_protocol_options: {} } : { http_protocol_options: {} },
      },
    },
    ...(cc.healthCheck ? { health_checks: [{ timeout: seconds(cc.healthCheck.timeoutMs), interval: seconds(cc.healthCheck.intervalMs), interval_jitter: seconds(cc.healthCheck.jitterMs), healthy_threshold: cc.healthCheck.healthyThreshold, unhealthy_threshold: cc.healthCheck.unhealthyThreshold,
      ...(cc.healthCheck.grpc ? { grpc_health_check: { service_name: cc.healthCheck.grpc.serviceName ?? '' } } : { http_health_check: { path: cc.healthCheck.path } }) }] } : {}),
    ...(cc.outlierDetection ? { outlier_detection: { consecutive_5xx: cc.outlierDetection.consecutive5xx, consecutive_gateway_failure: cc.outlierDetection.consecutiveGatewayFailure, interval: seconds(cc.outlierDetection.intervalMs), base_ejection_time: seconds(cc.outlierDetection.baseEjectionTimeMs), max_ejection_percent: cc.outlierDetection.maxEjectionPercent } } : {}),
    common_lb_config: { healthy_panic_threshold: { value: cc.panicThresholdPercent ?? 50 } },
    ...(cc.tls ? { transport_socket_matches: transportSocketMatches(c, cc.tls) } : {}),
    load_assignment: {
      cluster_name: cc.name,
      endpoints: [{
        lb_endpoints: c.hosts.map((h) => ({
          endpoint: { address: { socket_address: { address: h.address, port_value: h.port } } },
          health_status: h.healthFlags.has('failed_eds_health') ? 'UNHEALTHY' : 'HEALTHY',
          load_balancing_weight: h.weight,
          ...(cc.tls && h.identity !== undefined ? { metadata: { filter_metadata: { 'envoy.transport_socket_match': { tlsMode: 'istio' }, 'mesh-agent': { identity: h.identity } } } } : {}),
        })),
      }],
    },
  };
}

/** Envoy's StringMatcher fields of a header or query parameter match. */
function stringMatch(m: { exact?: string; regex?: string; prefix?: string }): object {
  if (m.exact !== undefined) return { string_match: { exact: m.exact } };
  if (m.regex !== undefined) return { string_match: { safe_regex: { regex: m.regex } } };
  if (m.prefix !== undefined) return { string_match: { prefix: m.prefix } };
  return {};
}

/** Envoy's HeaderValueOption list (append_action: APPEND_IF_EXISTS_OR_ADD / OVERWRITE_IF_EXISTS_OR_ADD). */
function headerOptions(list: HeaderValueOptionConfig[] | undefined): object[] | undefined {
  return list?.map((h) => ({ header: { key: h.name, value: h.value }, append_action: h.append === false ? 'OVERWRITE_IF_EXISTS_OR_ADD' : 'APPEND_IF_EXISTS_OR_ADD' }));
}

/** A percentage as Envoy's FractionalPercent (per million keeps fractional percents exact). */
function fractionalPercent(percent: number): object {
  return Number.isInteger(percent) ? { numerator: percent, denominator: 'HUNDRED' } : { numerator: Math.round(percent * 10000), denominator: 'MILLION' };
}

/** Envoy's local_ratelimit token bucket. */
function tokenBucket(b: TokenBucketConfig): object {
  return { max_tokens: b.maxTokens, tokens_per_fill: b.tokensPerFill ?? 1, fill_interval: seconds(b.fillIntervalMs) };
}

/** Per-route filter configs, as Envoy's typed_per_filter_config (fault, local_ratelimit). */
function perFilterConfig(r: { fault?: FaultConfig; rateLimit?: TokenBucketConfig }): Record<string, object> | undefined {
  const out: Record<string, object> = {};
  if (r.fault) {
    out['envoy.filters.http.fault'] = {
      '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault',
      ...(r.fault.delay ? { delay: { fixed_delay: seconds(r.fault.delay.fixedDelayMs), percentage: fractionalPercent(r.fault.delay.percent) } } : {}),
      ...(r.fault.abort ? { abort: { ...(r.fault.abort.grpcStatus !== undefined ? { grpc_status: r.fault.abort.grpcStatus } : { http_status: r.fault.abort.httpStatus }), percentage: fractionalPercent(r.fault.abort.percent) } } : {}),
    };
  }
  if (r.rateLimit) {
    out['envoy.filters.http.local_ratelimit'] = {
      '@type': 'type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit',
      stat_prefix: 'http_local_rate_limit', token_bucket: tokenBucket(r.rateLimit),
    };
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

function routeResource(r: RouteConfig): object {
  const match: Record<string, unknown> = {};
  if (r.match.prefix !== undefined) match.prefix = r.match.prefix;
  if (r.match.path !== undefined) match.path = r.match.path;
  if (r.match.regex !== undefined) match.safe_regex = { regex: r.match.regex };
  if (r.match.headers && r.match.headers.length > 0) {
    match.headers = r.match.headers.map((h) => ({
      name: h.name,
      ...stringMatch(h),
      ...(h.present !== undefined ? { present_match: h.present } : {}),
      ...(h.invert ? { invert_match: true } : {}),
    }));
  }
  if (r.match.queryParameters && r.match.queryParameters.length > 0) {
    match.query_parameters = r.match.queryParameters.map((q) => ({ name: q.name, ...stringMatch(q), ...(q.present !== undefined ? { present_match: q.present } : {}) }));
  }
  const out: Record<string, unknown> = { ...(r.name ? { name: r.name } : {}), match };
  if (r.directResponse) out.direct_response = { status: r.directResponse.status, body: { inline_string: r.directResponse.body ?? '' } };
  if (r.redirect) {
    const d = r.redirect;
    const codes: Record<number, string> = { 301: 'MOVED_PERMANENTLY', 302: 'FOUND', 303: 'SEE_OTHER', 307: 'TEMPORARY_REDIRECT', 308: 'PERMANENT_REDIRECT' };
    out.redirect = {
      ...(d.schemeRedirect !== undefined ? { scheme_redirect: d.schemeRedirect } : {}),
      ...(d.hostRedirect !== undefined ? { host_redirect: d.hostRedirect } : {}),
      ...(d.portRedirect !== undefined ? { port_redirect: d.portRedirect } : {}),
      ...(d.pathRedirect !== undefined ? { path_redirect: d.pathRedirect } : {}),
      ...(d.prefixRewrite !== undefined ? { prefix_rewrite: d.prefixRewrite } : {}),
      response_code: codes[d.responseCode ?? 301],
      ...(d.stripQuery ? { strip_query: true } : {}),
    };
  }
  if (r.route) {
    const a = r.route;
    out.route = {
      ...(a.cluster !== undefined ? { cluster: a.cluster } : {}),
      ...(a.weightedClusters ? { weighted_clusters: { clusters: a.weightedClusters.map((w) => ({ name: w.name, weight: w.weight, ...(w.requestHeadersToAdd ? { request_headers_to_add: headerOptions(w.requestHeadersToAdd) } : {}) })) } } : {}),
      timeout: seconds(a.timeoutMs ?? 15000),
      ...(a.retryPolicy ? { retry_policy: { retry_on: a.retryPolicy.retryOn, num_retries: a.retryPolicy.numRetries, per_try_timeout: seconds(a.retryPolicy.perTryTimeoutMs) } } : {}),
      ...(a.prefixRewrite !== undefined ? { prefix_rewrite: a.prefixRewrite } : {}),
      ...(a.hostRewrite !== undefined ? { host_rewrite_literal: a.hostRewrite } : {}),
      ...(a.requestMirrorPolicies ? { request_mirror_policies: a.requestMirrorPolicies.map((m) => ({ cluster: m.cluster, runtime_fraction: { default_value: fractionalPercent(m.percent ?? 100) } })) } : {}),
    };
  }
  if (r.metadata) out.metadata = { filter_metadata: { 'mesh-agent': r.metadata } };
  const add = headerOptions(r.requestHeadersToAdd);
  if (add) out.request_headers_to_add = add;
  if (r.requestHeadersToRemove) out.request_headers_to_remove = r.requestHeadersToRemove;
  const resAdd = headerOptions(r.responseHeadersToAdd);
  if (resAdd) out.response_headers_to_add = resAdd;
  if (r.responseHeadersToRemove) out.response_headers_to_remove = r.responseHeadersToRemove;
  const filters = perFilterConfig(r);
  if (filters) out.typed_per_filter_config = filters;
  return out;
}

/** A virtual host as Envoy dumps it; a virtual host's rate limit is its typed_per_filter_config. */
function virtualHostResource(vh: VirtualHostConfig): object {
  const filters = perFilterConfig({ rateLimit: vh.rateLimit });
  return { name: vh.name, domains: vh.domains, routes: vh.routes.map(routeResource), ...(filters ? { typed_per_filter_config: filters } : {}) };
}

/** Issue 15: Envoy's tcp_proxy filter chains, one per outboundTcp VIP:port and per inbound port not served as plain HTTP. */
/**
 * Issue 16: Envoy's bootstrap `tracing` (the OpenTelemetry tracer over an HTTP service) and the connection
 * manager's random_sampling. Export header values are not shown (they may carry a collector's API key).
 */
function tracingDump(config: ProxyBootstrap): object {
  const t = config.tracing!;
  return {
    http: {
      name: 'envoy.tracers.opentelemetry',
      typed_config: {
        '@type': `${V3}trace.v3.OpenTelemetryConfig`,
        service_name: t.serviceName || config.node?.cluster || 'mesh-proxy',
        ...(t.otlp ? { http_service: { http_uri: { uri: t.otlp.endpoint, timeout: `${(t.otlp.timeoutMs ?? 10000) / 1000}s` }, request_headers_to_add: Object.keys(t.otlp.headers ?? {}).map((key) => ({ header: { key, value: '[redacted]' } })) } } : {}),
        max_queue_size: t.maxQueueSize ?? 2048, max_export_batch_size: t.maxExportBatchSize ?? 512, scheduled_delay: `${(t.scheduledDelayMs ?? 1000) / 1000}s`,
      },
    },
    random_sampling: { value: t.samplingPercent ?? 100 },
  };
}

function tcpFilterChains(config: ProxyBootstrap): object[] {
  const tcpProxy = (cluster: string) => ({ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: cluster, cluster } });
  return [
    ...(config.outboundTcp ?? []).map((t) => ({ name: `${t.address}_${t.port}`, filter_chain_match: { prefix_ranges: [{ address_prefix: t.address, prefix_len: t.address.includes(':') ? 128 : 32 }], destination_port: t.port }, filters: [tcpProxy(t.cluster)] })),
    ...(config.inbound ?? []).filter((i) => (i.protocol ?? 'http') !== 'http').map((i) => ({
      name: `inbound_${i.port}`, filter_chain_match: { destination_port: i.port }, filters: [tcpProxy(i.cluster)],
      // Istio's http_inspector: `auto` sniffs HTTP first (a bounded wait), the rest is TCP
      ...(i.protocol === 'auto' ? { listener_filters: ['envoy.filters.listener.http_inspector', 'envoy.filters.listener.tls_inspector'] } : {}),
    })),
  ];
}

interface DumpSection { type: string; resource: string; itemType: string; items: { name: string; item: Record<string, unknown> }[]; extra: Record<string, unknown> }

function sections(input: ConfigDumpInput): DumpSection[] {
  const { config, clusters, version } = input;
  const lastUpdated = input.lastUpdated.toISOString();
  const clusterItems = (config.clusters ?? []).map((cc) => {
    const c = clusters.get(cc.name);
    return { name: cc.name, dynamic: c?.addedViaApi ?? false, item: { version_info: version, cluster: c ? clusterResource(c, cc) : { name: cc.name }, last_updated: lastUpdated } };
  });
  const listenerName = config.listener?.name ?? 'virtual';
  const addr = input.listener ?? { address: config.listener?.address ?? '0.0.0.0', port: config.listener?.port ?? 15001 };
  return [
    {
      type: `${T}BootstrapConfigDump`, resource: 'bootstrap', itemType: '', items: [],
      extra: {
        bootstrap: {
          node: { id: config.node?.id ?? '', cluster: config.node?.cluster ?? '', metadata: config.node?.metadata ?? {}, user_agent_name: 'mesh-proxy' },
          admin: { address: { socket_address: { address: config.admin?.address ?? '127.0.0.1', port_value: config.admin?.port ?? 15000 } } },
          static_resources: {},
          ...(config.tracing ? { tracing: tracingDump(config) } : {}),
        },
        last_updated: lastUpdated,
      },
    },
    {
      type: `${T}ClustersConfigDump`, resource: 'clusters', itemType: '', items: [],
      extra: {
        version_info: version,
        static_clusters: clusterItems.filter((c) => !c.dynamic).map((c) => c.item),
        dynamic_active_clusters: clusterItems.filter((c) => c.dynamic).map((c) => c.item),
      },
    },
    {
      type: `${T}ListenersConfigDump`, resource: 'listeners', itemType: '', items: [],
      extra: {
        version_info: version,
        static_listeners: [{ listener: { '@type': `${V3}listener.v3.Listener`, name: listenerName, address: { socket_address: { address: addr.address, port_value: addr.port } }, use_original_dst: true,
          ...(tcpFilterChains(config).length > 0 ? { filter_chains: tcpFilterChains(config) } : {}) }, last_updated: lastUpdated }],
      },
    },
    {
      type: `${T}RoutesConfigDump`, resource: 'routes', itemType: '', items: [],
      extra: {
        static_route_configs: [{
          version_info: version,
          route_config: {
            '@type': `${V3}route.v3.RouteConfiguration`,
            name: listenerName,
            virtual_hosts: (config.routes?.virtualHosts ?? []).map(virtualHostResource),
          },
          last_updated: lastUpdated,
        }],
      },
    },
    { type: `${T}SecretsConfigDump`, resource: 'secrets', itemType: '', items: [], extra: (input.secrets ?? []).length > 0 ? { dynamic_active_secrets: (input.secrets ?? []).map(secretResource) } : {} },
  ];
}

const RESOURCE_TYPES: Record<string, string> = {
  static_clusters: `${T}ClustersConfigDump.StaticCluster`,
  dynamic_active_clusters: `${T}ClustersConfigDump.DynamicCluster`,
  static_listeners: `${T}ListenersConfigDump.StaticListener`,
  static_route_configs: `${T}RoutesConfigDump.StaticRouteConfig`,
  dynamic_active_secrets: `${T}SecretsConfigDump.DynamicSecret`,
};

function resourceName(item: Record<string, unknown>): string {
  const inner = (item.cluster ?? item.listener ?? item.route_config ?? item.secret) as { name?: string } | undefined;
  return inner?.name ?? '';
}

/** Envoy's /config_dump: `{"configs":[...]}` in Envoy's order; `?resource=` returns only that field's entries; `?name_regex=` filters them. */
export function renderConfigDump(input: ConfigDumpInput, query: { resource?: string; nameRegex?: RegExp }): { status: number; body: object | string } {
  const all = sections(input);
  if (query.resource) {
    const type = RESOURCE_TYPES[query.resource];
    if (!type) return { status: 404, body: `unknown resource "${query.resource}"; known: ${Object.keys(RESOURCE_TYPES).join(', ')}\n` };
    const items: object[] = [];
    for (const s of all) {
      const list = s.extra[query.resource] as Record<string, unknown>[] | undefined;
      if (!list) continue;
      for (const item of list) if (!query.nameRegex || query.nameRegex.test(resourceName(item))) items.push({ '@type': type, ...item });
    }
    return { status: 200, body: { configs: items } };
  }
  const configs = all.map((s) => {
    const extra: Record<string, unknown> = { ...s.extra };
    if (query.nameRegex) {
      for (const key of Object.keys(RESOURCE_TYPES)) {
        const list = extra[key] as Record<string, unknown>[] | undefined;
        if (list) extra[key] = list.filter((item) => query.nameRegex!.test(resourceName(item)));
      }
    }
    return { '@type': s.type, ...extra };
  });
  return { status: 200, body: { configs } };
}
