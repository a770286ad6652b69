import type { Cluster } from '../cluster/cluster';
import { healthFlagsText, type Host } from '../cluster/host';

const HOST_STATS = ['cx_active', 'cx_connect_fail', 'cx_total', 'rq_active', 'rq_error', 'rq_success', 'rq_timeout', 'rq_total'] as const;

function thresholds(c: Cluster): { maxConnections: number; maxPendingRequests: number; maxRequests: number; maxRetries: number } {
  const cb = c.config.circuitBreakers ?? {};
  return { maxConnections: cb.maxConnections ?? 1024, maxPendingRequests: cb.maxPendingRequests ?? 1024, maxRequests: cb.maxRequests ?? 1024, maxRetries: cb.maxRetries ?? 3 };
}

function hostAddr(h: Host): string {
  return h.address.includes(':') ? `[${h.address}]:${h.port}` : `${h.address}:${h.port}`;
}

/** Outlier success-rate lines come from the detector when there is one (issue 6). */
interface SuccessRateSource { successRateAverage?(): number; successRateEjectionThreshold?(): number; hostSuccessRate?(h: Host): number }

/** Envoy's /clusters text: every line `::`-separated, starting with the cluster name. */
/** `tcpRoutes`: per cluster, what is piped to it as bytes (issue 15): `240.240.3.9:6379`, `inbound:3306:tcp`. */
export function renderClustersText(clusters: Iterable<Cluster>, tcpRoutes: ReadonlyMap<string, string[]> = new Map()): string {
  const out: string[] = [];
  for (const c of clusters) {
    const n = c.name;
    const t = thresholds(c);
    for (const prio of ['default_priority', 'high_priority']) {
      out.push(`${n}::${prio}::max_connections::${t.maxConnections}`);
      out.push(`${n}::${prio}::max_pending_requests::${t.maxPendingRequests}`);
      out.push(`${n}::${prio}::max_requests::${t.maxRequests}`);
      out.push(`${n}::${prio}::max_retries::${t.maxRetries}`);
    }
    const od = c.outlierDetector as SuccessRateSource | undefined;
    if (c.config.outlierDetection) {
      out.push(`${n}::outlier::success_rate_average::${od?.successRateAverage?.() ?? -1}`);
      out.push(`${n}::outlier::success_rate_ejection_threshold::${od?.successRateEjectionThreshold?.() ?? -1}`);
    }
    out.push(`${n}::added_via_api::${c.addedViaApi}`);
    // not in Envoy's text (it prints no protocol); grep "::protocol::http2" finds the HTTP/2 clusters
    out.push(`${n}::protocol::${c.protocol}`);
    for (const r of tcpRoutes.get(n) ?? []) out.push(`${n}::tcp_route::${r}`);
    for (const h of c.hosts) {
      const a = `${n}::${hostAddr(h)}`;
      for (const s of HOST_STATS) out.push(`${a}::${s}::${h.stats[s]}`);
      out.push(`${a}::hostname::`);
      out.push(`${a}::health_flags::${healthFlagsText(h)}`);
      out.push(`${a}::weight::${h.weight}`);
      out.push(`${a}::region::${h.locality?.region ?? ''}`);
      out.push(`${a}::zone::${h.locality?.zone ?? ''}`);
      out.push(`${a}::sub_zone::${h.locality?.subZone ?? ''}`);
      out.push(`${a}::canary::false`);
      out.push(`${a}::priority::${h.priority}`);
      out.push(`${a}::success_rate::${od?.hostSuccessRate?.(h) ?? -1}`);
      out.push(`${a}::local_origin_success_rate::-1`);
    }
  }
  return out.length > 0 ? `${out.join('\n')}\n` : '';
}

export function renderClustersJson(clusters: Iterable<Cluster>): object {
  const statuses: object[] = [];
  for (const c of clusters) {
    const t = thresholds(c);
    const threshold = (priority: string) => ({ priority, max_connections: t.maxConnections, max_pending_requests: t.maxPendingRequests, max_requests: t.maxRequests, max_retries: t.maxRetries });
    statuses.push({
      name: c.name,
      added_via_api: c.addedViaApi,
      protocol: c.protocol,
      circuit_breakers: { thresholds: [threshold('DEFAULT'), threshold('HIGH')] },
      observability_name: c.name,
      host_statuses: c.hosts.map((h) => ({
        address: { socket_address: { address: h.address, port_value: h.port } },
        stats: HOST_STATS.map((s) => ({ name: s, value: String(h.stats[s]), type: s === 'cx_active' || s === 'rq_active' ? 'GAUGE' : 'COUNTER' })),
        health_status: {
          eds_health_status: h.healthFlags.has('failed_eds_health') ? 'UNHEALTHY' : 'HEALTHY',
          ...(h.healthFlags.has('failed_active_hc') ? { failed_active_health_check: true } : {}),
          ...(h.healthFlags.has('failed_outlier_check') ? { failed_outlier_check: true } : {}),
        },
        weight: h.weight,
        priority: h.priority,
        // Envoy's proto JSON: only the fields that are set
        locality: {
          ...(h.locality?.region !== undefined ? { region: h.locality.region } : {}),
          ...(h.locality?.zone !== undefined ? { zone: h.locality.zone } : {}),
          ...(h.locality?.subZone !== undefined ? { sub_zone: h.locality.subZone } : {}),
        },
      })),
    });
  }
  return { cluster_statuses: statuses };
}
