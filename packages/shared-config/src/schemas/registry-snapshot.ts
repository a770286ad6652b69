import { z } from 'zod';
import { trafficRulesSchema } from './traffic-rules';
import { ipAddress, metadata, nonEmptyString, nonNegativeInt, serviceName, servicePort } from './common';

/** One running copy of a service. */
export const serviceInstanceSchema = z.strictObject({
  id: nonEmptyString.describe('Instance id, unique within the service'),
  address: ipAddress.describe('Address the instance is reached at'),
  port: servicePort.describe('Port the instance is reached at'),
  healthy: z.boolean().default(true).describe('Unhealthy instances receive no traffic'),
  weight: nonNegativeInt.default(1).describe('Load-balancing weight'),
  metadata: metadata.default({}).describe('Free-form labels'),
});

export const registryServiceSchema = z.strictObject({
  name: serviceName.describe('Service name'),
  namespace: serviceName.default('default').describe('Namespace'),
  vip: ipAddress.optional().describe('Per-service VIP; absent = the mesh VIP'),
  instances: z.array(serviceInstanceSchema).default([]).describe('Running copies of the service'),
});

/** The file registry's content, and what the agent pushes to the proxy and mesh-dns. */
export const registrySnapshotSchema = z
  .strictObject({
    revision: nonNegativeInt.optional().describe('Increases with every change; lets children ignore stale pushes'),
    services: z.array(registryServiceSchema).default([]).describe('Every known service'),
    trafficRules: trafficRulesSchema.optional().describe("Traffic rules per service (docs/traffic-rules.md); a service's rule here wins over the agent config's"),
  })
  .superRefine((snapshot, ctx) => {
    const seen = new Map<string, number>();
    snapshot.services.forEach((service, index) => {
      const key = `${service.name}.${service.namespace}`;
      const first = seen.get(key);
      if (first !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['services', index, 'name'], message: `service "${key}" is listed twice (first at services[${first}])` });
      } else seen.set(key, index);
    });
  });

export type ServiceInstance = z.infer<typeof serviceInstanceSchema>;
export type RegistryService = z.infer<typeof registryServiceSchema>;
export type RegistrySnapshot = z.infer<typeof registrySnapshotSchema>;
