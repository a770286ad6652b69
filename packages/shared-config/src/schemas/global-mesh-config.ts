import { z } from 'zod';
import { millis, nonNegativeInt, overrideOf, percent, positiveInt, serviceName, withDescriptions } from './common';
import {
  circuitBreakersSchema as proxyCircuitBreakersSchema,
  healthCheckSchema as proxyHealthCheckSchema,
  lbPolicySchema,
  outlierDetectionSchema as proxyOutlierDetectionSchema,
} from './proxy-bootstrap';

// The same shapes as the proxy's cluster settings (the agent copies them into the bootstrap), described for users.
const healthCheckSchema = withDescriptions(proxyHealthCheckSchema, {
  intervalMs: 'Time between probes of one instance',
  timeoutMs: 'A probe slower than this fails',
  healthyThreshold: 'Successes in a row that mark an instance healthy',
  unhealthyThreshold: 'Failures in a row that mark an instance unhealthy',
  jitterMs: 'Random extra delay added to each interval',
});
const outlierDetectionSchema = withDescriptions(proxyOutlierDetectionSchema, {
  consecutive5xx: 'Consecutive 5xx answers that eject an endpoint',
  consecutiveGatewayFailure: 'Consecutive 502/503/504 or connect failures that eject an endpoint',
  intervalMs: 'How often ejections are reviewed',
  baseEjectionTimeMs: 'Ejection time; multiplied by the number of times the endpoint was ejected',
  maxEjectionPercent: 'At most this share of a cluster is ejected at once',
});
const circuitBreakersSchema = withDescriptions(proxyCircuitBreakersSchema, {
  maxConnections: 'Connections to a cluster at once',
  maxPendingRequests: 'Requests waiting for a connection',
  maxRequests: 'Requests in flight to a cluster',
  maxRetries: 'Retries in flight to a cluster',
});

export const timeoutsSchema = z.strictObject({
  connectMs: positiveInt.default(1000).describe('TCP connect timeout to an endpoint'),
  requestMs: millis.default(15000).describe('Whole request, retries included; 0 = none'),
  idleMs: millis.default(300000).describe('Idle connection timeout'),
});

export const retriesSchema = z.strictObject({
  numRetries: nonNegativeInt.default(2).describe('Retries after the first try'),
  retryOn: z.string().default('5xx,connect-failure,reset').describe("Envoy's retry_on conditions, comma-separated"),
  perTryTimeoutMs: millis.default(0).describe('0 = the request timeout applies to each try'),
});

export const loadBalancingSchema = z
  .strictObject({
    policy: lbPolicySchema.default('round_robin').describe('round_robin, least_request, random or ring_hash'),
    hashHeader: z.string().min(1).optional().describe('ring_hash only: the request header to hash on'),
  })
  .superRefine((lb, ctx) => {
    if (lb.policy === 'ring_hash' && !lb.hashHeader) ctx.addIssue({ code: 'custom', path: ['hashHeader'], message: 'policy ring_hash needs hashHeader' });
  });

export const outlierDetectionSettingsSchema = outlierDetectionSchema.extend({ enabled: z.boolean().default(true).describe('Eject failing endpoints') });

/** Traffic policy: the mesh-wide defaults, and the shape of a per-service override (every field optional there). */
const policyShape = {
  timeouts: timeoutsSchema.prefault({}).describe('Timeouts'),
  retries: retriesSchema.prefault({}).describe('Retry policy'),
  loadBalancing: loadBalancingSchema.prefault({}).describe('Load balancing'),
  healthCheck: healthCheckSchema.omit({ path: true, grpc: true }).prefault({}).describe("Active health checking of instances (the path comes from each service's spec.yaml)"),
  outlierDetection: outlierDetectionSettingsSchema.prefault({}).describe('Passive outlier detection'),
  circuitBreakers: circuitBreakersSchema.prefault({}).describe('Circuit breakers per cluster'),
  panicThresholdPercent: percent.default(50).describe('Below this share of healthy endpoints, balance over all of them'),
};

export const serviceTrafficPolicySchema = z.strictObject({
  timeouts: overrideOf(timeoutsSchema).optional(),
  retries: overrideOf(retriesSchema).optional(),
  /** Replaces the mesh-wide load balancing as a whole (policy and hashHeader belong together). */
  loadBalancing: loadBalancingSchema.optional(),
  healthCheck: overrideOf(healthCheckSchema.omit({ path: true, grpc: true })).optional(),
  outlierDetection: overrideOf(outlierDetectionSettingsSchema).optional(),
  circuitBreakers: overrideOf(circuitBreakersSchema).optional(),
  panicThresholdPercent: percent.optional(),
});

/** The global mesh config: timeouts, retries, load balancing, health checking, outlier detection, circuit breakers. */
export const globalMeshConfigSchema = z.strictObject({
  ...policyShape,
  services: z.record(serviceName, serviceTrafficPolicySchema).default({}).describe('Per-service overrides by service name; unset fields inherit the mesh-wide values'),
});

export type Timeouts = z.infer<typeof timeoutsSchema>;
export type Retries = z.infer<typeof retriesSchema>;
export type LoadBalancing = z.infer<typeof loadBalancingSchema>;
export type ServiceTrafficPolicy = z.infer<typeof serviceTrafficPolicySchema>;
export type GlobalMeshConfig = z.infer<typeof globalMeshConfigSchema>;
export type GlobalMeshConfigInput = z.input<typeof globalMeshConfigSchema>;
