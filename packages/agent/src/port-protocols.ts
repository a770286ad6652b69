// Which of the application's ports the sidecar takes over, and how: `http`, `http2` and `grpc` ports
// go through the proxy's HTTP path (HTTP/1.x, h2c, h2 over mTLS); `tcp`, `dubbo`, `redis`, `mysql`,
// `mongo` and the TLS passthrough ports `tls` and `https` through its TCP proxy (bytes, no wait for
// client bytes: server-first protocols work); `auto` is sniffed by the proxy (Istio's protocol
// sniffing), and so is a port that declares none (Istio sniffs an unnamed port): HTTP clients work on it
// as before, and so does any other protocol. A registry instance without `metadata.protocol` (a hand-written
// registry) is HTTP to its callers, as before issue 15.
import type { ServicesSpec } from '@mesh-agent/shared-config';

/** Protocols the proxy's HTTP path serves. */
const HTTP_PROTOCOLS: readonly string[] = ['http', 'http2', 'grpc'];

/** Protocols the proxy carries as bytes (its TCP proxy): any non-HTTP protocol, and TLS passed through. */
export const TCP_PROTOCOLS: readonly string[] = ['tcp', 'tls', 'https', 'dubbo', 'redis', 'mysql', 'mongo'];

/** Protocols the proxy serves: every one spec.yaml knows. */
export const PROXIED_PROTOCOLS: readonly string[] = [...HTTP_PROTOCOLS, ...TCP_PROTOCOLS, 'auto'];

/** Protocols the proxy speaks to the application (or a peer) over HTTP/2: Envoy's http2_protocol_options. */
const HTTP2_PROTOCOLS: readonly string[] = ['http2', 'grpc'];

export interface UncapturedPort {
  service: string;
  port: number;
  protocol: string;
  /** One line an operator reads in /health and doctor. */
  reason: string;
}

export function isProxiedProtocol(protocol: string | undefined): boolean {
  return PROXIED_PROTOCOLS.includes(protocol ?? 'http');
}

/** Whether the proxy carries the port as bytes (its TCP proxy), never parsing HTTP. */
export function isTcpProtocol(protocol: string | undefined): boolean {
  return TCP_PROTOCOLS.includes(protocol ?? 'http');
}

/** A spec.yaml port's protocol as the agent registers it (`metadata.protocol`): undeclared is `auto`. */
export function declaredProtocolOf(protocol: string | undefined): string {
  return protocol ?? 'auto';
}

/** The bootstrap's inbound[].protocol for a spec.yaml port: tcp (bytes at once), auto (sniffed; also an undeclared port) or http. */
export function inboundProtocolOf(protocol: string | undefined): 'http' | 'tcp' | 'auto' {
  if (isTcpProtocol(protocol)) return 'tcp';
  return declaredProtocolOf(protocol) === 'auto' ? 'auto' : 'http';
}

/** Whether a port speaks HTTP/2 (gRPC is HTTP/2): its cluster gets `protocol: http2`. */
export function isHttp2Protocol(protocol: string | undefined): boolean {
  return HTTP2_PROTOCOLS.includes(protocol ?? 'http');
}

/** Whether the application answers an HTTP/1.1 GET on the port (the agent's health probe of spec.yaml's healthCheck.path). */
export function isHttp1Protocol(protocol: string | undefined): boolean {
  return (protocol ?? 'http') === 'http';
}

/** The bootstrap cluster protocol for a port declared `protocol` in spec.yaml or the registry. */
export function clusterProtocolOf(protocol: string | undefined): 'http1' | 'http2' {
  return isHttp2Protocol(protocol) ? 'http2' : 'http1';
}

/** Why a port is left to the application, as /health and doctor say it. */
export function notCapturedReason(service: string, port: number, protocol: string): string {
  return `port ${port} of ${service} is not captured: protocol ${protocol}: the proxy does not know this protocol; traffic to port ${port} goes to the app directly, unmeshed`;
}

/** The ports of spec.yaml the proxy serves inbound, each with its service. */
export function proxiedPorts(spec: ServicesSpec): Array<{ service: string; port: number }> {
  return spec.spec.services.flatMap((s) => s.ports.filter((p) => isProxiedProtocol(p.protocol)).map((p) => ({ service: s.name, port: p.targetPort })));
}

/** The ports of spec.yaml left to the application, and why. */
export function uncapturedPorts(spec: ServicesSpec): UncapturedPort[] {
  return spec.spec.services.flatMap((s) =>
    s.ports
      .filter((p) => !isProxiedProtocol(p.protocol))
      .map((p) => ({
        service: s.name,
        port: p.targetPort,
        protocol: declaredProtocolOf(p.protocol),
        reason: notCapturedReason(s.name, p.targetPort, declaredProtocolOf(p.protocol)),
      })),
  );
}
