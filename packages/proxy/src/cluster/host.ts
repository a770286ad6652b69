/**
 * The upstream host model shared by the data plane and the resilience modules
 * (health checking, outlier detection, circuit breakers). Envoy's names are kept
 * so /clusters and /stats can print them unchanged.
 */

import type { LocalityConfig } from '../config/types';

export type HealthFlag = 'failed_active_hc' | 'failed_outlier_check' | 'failed_eds_health';

export interface HostStats {
  cx_active: number;
  cx_connect_fail: number;
  cx_total: number;
  rq_active: number;
  rq_error: number;
  rq_success: number;
  rq_timeout: number;
  rq_total: number;
}

export interface Host {
  readonly address: string;
  readonly port: number;
  weight: number;
  metadata: Record<string, unknown>;
  /**
   * The peer's SPIFFE ID (`metadata.identity`, registered by its agent): with the cluster's `tls` the host
   * is reached over mTLS and must present it. Fixed for the host's life: a changed identity is a new host.
   */
  readonly identity: string | undefined;
  /** Any flag present makes the host unhealthy (Envoy's semantics). */
  healthFlags: Set<HealthFlag>;
  stats: HostStats;
  /** Where the endpoint runs (Envoy's locality; /clusters region, zone, sub_zone). */
  locality: LocalityConfig | undefined;
  /** Envoy's priority level, set by the cluster from the localities (0 without locality load balancing). */
  priority: number;
}

export interface HostInit {
  address: string;
  port: number;
  weight?: number;
  healthy?: boolean;
  metadata?: Record<string, unknown>;
  locality?: LocalityConfig;
}

export function newHostStats(): HostStats {
  return { cx_active: 0, cx_connect_fail: 0, cx_total: 0, rq_active: 0, rq_error: 0, rq_success: 0, rq_timeout: 0, rq_total: 0 };
}

export function createHost(init: HostInit): Host {
  const healthFlags = new Set<HealthFlag>();
  if (init.healthy === false) healthFlags.add('failed_eds_health');
  return {
    address: init.address,
    port: init.port,
    weight: init.weight ?? 1,
    metadata: init.metadata ?? {},
    identity: identityOf(init.metadata),
    healthFlags,
    stats: newHostStats(),
    locality: init.locality,
    priority: 0,
  };
}

/** `metadata.identity` when it is a non-empty string. */
export function identityOf(metadata: Record<string, unknown> | undefined): string | undefined {
  const id = metadata?.identity;
  return typeof id === 'string' && id.length > 0 ? id : undefined;
}

export function hostKey(host: { address: string; port: number }): string {
  return host.address.includes(':') ? `[${host.address}]:${host.port}` : `${host.address}:${host.port}`;
}

export function isHealthy(host: Host): boolean {
  return host.healthFlags.size === 0;
}

/** Envoy's /clusters `health_flags` column: `healthy`, or each flag prefixed by `/` (`/failed_active_hc/failed_outlier_check`). */
export function healthFlagsText(host: Host): string {
  if (host.healthFlags.size === 0) return 'healthy';
  return [...host.healthFlags].map((f) => `/${f}`).join('');
}
