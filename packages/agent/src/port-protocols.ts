// Which of the application's ports the sidecar takes over: the proxy speaks HTTP/1.x, HTTP/2 (h2c,
// h2 over mTLS) and gRPC, so `http`, `http2` and `grpc` ports are captured inbound; any other
// protocol is left out (captured, its clients would time out waiting for an HTTP answer). Absent
// protocol means http (Istio sniffs an unlabelled port; there is no sniffing here).
import type { ServicesSpec } from '@mesh-agent/shared-config';

/** Protocols the proxy serves. */
export const PROXIED_PROTOCOLS: readonly string[] = ['http', 'http2', 'grpc'];

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
  return `port ${port} of ${service} is not captured: protocol ${protocol}: the proxy speaks HTTP only until the TCP proxy exists; traffic to port ${port} goes to the app directly, unmeshed`;
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
        protocol: p.protocol,
        reason: notCapturedReason(s.name, p.targetPort, p.protocol),
      })),
  );
}
