import { z } from 'zod';
import { millis, nonNegativeInt, overrideOf, percent, positiveInt, serviceName } from './common';
import { circuitBreakersSchema, healthCheckSchema, lbPolicySchema, outlierDetectionSchema } from './proxy-bootstrap';

export const timeoutsSchema = z.strictObject({
  connectMs: positiveInt.default(1000),
  /** Whole request, all retries included; 0 = none. */
  requestMs: millis.default(15000),
  /** Idle connection timeout. */
  idleMs: millis.default(300000),
});

export const retriesSchema = z.strictObject({
  numRetries: nonNegativeInt.default(2),
  retryOn: z.string().default('5xx,connect-failure,reset'),
  /** 0 = the request timeout applies to each try. */
  perTryTimeoutMs: millis.default(0),
});

export const loadBalancingSchema = z
  .strictObject({
    policy: lbPolicySchema.default('round_robin'),
    /** ring_hash only. */
    hashHeader: z.string().min(1).optional(),
  })
  .superRefine((lb, ctx) => {
    if (lb.policy === 'ring_hash' && !lb.hashHeader) ctx.addIssue({ code: 'custom', path: ['hashHeader'], message: 'policy ring_hash needs hashHeader' });
  });

export const outlierDetectionSettingsSchema = outlierDetectionSchema.extend({ enabled: z.boolean().default(true) });

/** Traffic policy: the mesh-wide defaults, and the shape of a per-service override (every field optional there). */
const policyShape = {
  timeouts: timeoutsSchema.prefault({}),
  retries: retriesSchema.prefault({}),
  loadBalancing: loadBalancingSchema.prefault({}),
  healthCheck: healthCheckSchema.omit({ path: true }).prefault({}),
  outlierDetection: outlierDetectionSettingsSchema.prefault({}),
  circuitBreakers: circuitBreakersSchema.prefault({}),
  panicThresholdPercent: percent.default(50),
};

export const serviceTrafficPolicySchema = z.strictObject({
  timeouts: overrideOf(timeoutsSchema).optional(),
  retries: overrideOf(retriesSchema).optional(),
  /** Replaces the mesh-wide load balancing as a whole (policy and hashHeader belong together). */
  loadBalancing: loadBalancingSchema.optional(),
  healthCheck: overrideOf(healthCheckSchema.omit({ path: true })).optional(),
  outlierDetection: overrideOf(outlierDetectionSettingsSchema).optional(),
  circuitBreakers: overrideOf(circuitBreakersSchema).optional(),
  panicThresholdPercent: percent.optional(),
});

/** The global mesh config: timeouts, retries, load balancing, health checking, outlier detection, circuit breakers. */
export const globalMeshConfigSchema = z.strictObject({
  ...policyShape,
  /** Per-service overrides keyed by service name; unset fields inherit the defaults above. */
  services: z.record(serviceName, serviceTrafficPolicySchema).default({}),
});

export type Timeouts = z.infer<typeof timeoutsSchema>;
export type Retries = z.infer<typeof retriesSchema>;
export type LoadBalancing = z.infer<typeof loadBalancingSchema>;
export type ServiceTrafficPolicy = z.infer<typeof serviceTrafficPolicySchema>;
export type GlobalMeshConfig = z.infer<typeof globalMeshConfigSchema>;
export type GlobalMeshConfigInput = z.input<typeof globalMeshConfigSchema>;
