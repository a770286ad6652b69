import { z } from 'zod';
import { healthCheckPath, serviceName, servicePort } from './common';

/** TSF's `spec.yaml`: the services the local application offers (reference: tsf-mesh-notes.md). */

/**
 * What a port speaks: TSF's `http` and `dubbo`, and Istio's protocol names. Every port is captured:
 * `http` (HTTP/1.x), `http2` and `grpc` (HTTP/2, spoken to the application in h2c) go through the
 * proxy's HTTP path; `tcp`, `dubbo`, `redis`, `mysql`, `mongo`, `tls` and `https` (TLS passed
 * through) through its TCP proxy as bytes; `auto` is sniffed (HTTP/1.x, HTTP/2, TLS or else TCP), and so
 * is a port that declares no protocol (Istio's protocol sniffing of an unnamed port).
 */
export const SERVICE_PROTOCOLS = ['http', 'http2', 'https', 'grpc', 'tcp', 'tls', 'dubbo', 'redis', 'mysql', 'mongo', 'auto'] as const;

export const servicePortSchema = z.strictObject({
  targetPort: servicePort.describe('Port the local application listens on'),
  protocol: z
    .enum(SERVICE_PROTOCOLS, { error: `expected one of ${SERVICE_PROTOCOLS.join(', ')}` })
    .optional()
    .describe('What the port speaks; `http`, `http2` and `grpc` (HTTP/2 to the app) are proxied as HTTP, `tcp`, `dubbo`, `redis`, `mysql`, `mongo`, `tls` and `https` as bytes (TCP proxy), `auto` is sniffed; absent = `auto` (sniffed, as Istio does for an unnamed port)'),
});

export const serviceSpecSchema = z.strictObject({
  name: serviceName.describe('Service name other services call'),
  ports: z.array(servicePortSchema).min(1, { error: 'a service needs at least one port' }).describe('Ports of the service; each is captured inbound'),
  healthCheck: z
    .strictObject({
      path: healthCheckPath
        .describe('HTTP path probed periodically by the sidecar'),
    })
    .optional()
    .describe('Health check; absent = the instance is always healthy'),
});

export const servicesSpecSchema = z.strictObject({
  apiVersion: z.literal('v1', { error: 'expected apiVersion: v1' }).default('v1').describe('Always `v1`'),
  kind: z.literal('Application', { error: 'expected kind: Application' }).default('Application').describe('Always `Application`'),
  spec: z
    .strictObject({
      services: z.array(serviceSpecSchema).min(1, { error: 'spec.yaml declares at least one service' }).describe('At least one service'),
    })
    .superRefine((spec, ctx) => {
      const names = new Map<string, number>();
      const ports = new Map<number, string>();
      spec.services.forEach((service, index) => {
        const first = names.get(service.name);
        if (first !== undefined) ctx.addIssue({ code: 'custom', path: ['services', index, 'name'], message: `service "${service.name}" is declared twice (first at services[${first}])` });
        else names.set(service.name, index);
        service.ports.forEach((port, p) => {
          const owner = ports.get(port.targetPort);
          if (owner !== undefined && owner !== service.name) {
            ctx.addIssue({ code: 'custom', path: ['services', index, 'ports', p, 'targetPort'], message: `port ${port.targetPort} is already declared by service "${owner}"` });
          } else ports.set(port.targetPort, service.name);
        });
      });
    })
    .describe('The services this application offers'),
});

export type ServicePort = z.infer<typeof servicePortSchema>;
export type ServiceSpec = z.infer<typeof serviceSpecSchema>;
export type ServicesSpec = z.infer<typeof servicesSpecSchema>;
