// Which of the application's ports the sidecar takes over: the proxy speaks HTTP/1.1 only, so a
// port declared with any other protocol in spec.yaml is left out of the inbound capture (captured,
// its clients would time out waiting for an HTTP answer). Absent protocol means http (Istio sniffs
// an unlabelled port; there is no sniffing here).
import type { ServicesSpec } from '@mesh-agent/shared-config';

/** Protocols the proxy serves. */
export const PROXIED_PROTOCOLS: readonly string[] = ['http'];

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

/** Why a port is left to the application, as /health and doctor say it. */
export function notCapturedReason(service: string, port: number, protocol: string): string {
  const why = ['http2', 'grpc'].includes(protocol) ? 'the proxy speaks HTTP/1.1 only (no HTTP/2)' : 'the proxy speaks HTTP only until the TCP proxy exists';
  return `port ${port} of ${service} is not captured: protocol ${protocol}: ${why}; traffic to port ${port} goes to the app directly, unmeshed`;
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
