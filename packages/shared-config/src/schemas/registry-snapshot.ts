import { z } from 'zod';
import { ipAddress, metadata, nonEmptyString, nonNegativeInt, serviceName, servicePort } from './common';

/** One running copy of a service. */
export const serviceInstanceSchema = z.strictObject({
  id: nonEmptyString,
  address: ipAddress,
  port: servicePort,
  healthy: z.boolean().default(true),
  weight: nonNegativeInt.default(1),
  metadata: metadata.default({}),
});

export const registryServiceSchema = z.strictObject({
  name: serviceName,
  namespace: serviceName.default('default'),
  /** Per-service VIP; absent means the mesh VIP. */
  vip: ipAddress.optional(),
  instances: z.array(serviceInstanceSchema).default([]),
});

/** The file registry's content, and what the agent pushes to the proxy and mesh-dns. */
export const registrySnapshotSchema = z
  .strictObject({
    /** Increases with every change; lets children ignore stale pushes. */
    revision: nonNegativeInt.optional(),
    services: z.array(registryServiceSchema).default([]),
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
