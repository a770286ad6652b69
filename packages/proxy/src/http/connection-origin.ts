import net from 'node:net';
import type { ConfigSnapshot, OriginalDestination } from '../runtime';

/**
 * What a connection on the one listener is, decided once when it is accepted (issue 12, item 4):
 *   - `inbound`: the capture rules redirected it from a local address and a registered service port:
 *     it goes to that inbound cluster (the local application), whatever its Host says;
 *   - `outbound`: redirected from a mesh VIP (`outboundCidrs`): routed by Host. Only local processes
 *     reach the VIP through the nat OUTPUT chain, so nothing from another host arrives this way;
 *   - `local`: not redirected, from this host (an explicit proxy client, `curl -x 127.0.0.1:15001`):
 *     routed by Host;
 *   - `refused`: anything else, e.g. another host connecting to port 15001 itself: Envoy's
 *     BlackHoleCluster (502, flag NR). An open relay into the mesh otherwise.
 */
export type ConnectionOrigin =
  | { kind: 'inbound'; cluster: string; port: number }
  | { kind: 'outbound' }
  | { kind: 'local' }
  /** `direct`: another host connected to the listener itself (the only refused kind mTLS can still serve, issue 13). */
  | { kind: 'refused'; reason: string; direct?: boolean };

const OUTBOUND: ConnectionOrigin = Object.freeze({ kind: 'outbound' });
const LOCAL: ConnectionOrigin = Object.freeze({ kind: 'local' });

export function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1' || address.startsWith('::ffff:127.');
}

export function stripV4Mapped(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

/** One of this host's addresses: loopback or a configured `localAddresses` entry. */
function isOwnAddress(address: string, snap: ConfigSnapshot): boolean {
  return isLoopback(address) || snap.localAddresses.has(address);
}

/** An address inside one of the `outboundCidrs` (BlockList: IPv4 and IPv6 prefixes). */
export function isOutboundDestination(address: string, snap: ConfigSnapshot): boolean {
  const family = net.isIPv6(address) ? 'ipv6' : net.isIPv4(address) ? 'ipv4' : undefined;
  return family !== undefined && snap.outboundDestinations.check(address, family);
}

/** Builds the BlockList of `outboundCidrs` (a bare IP is one host: /32 or /128). */
export function outboundDestinationList(entries: readonly string[]): net.BlockList {
  const list = new net.BlockList();
  for (const entry of entries) {
    const slash = entry.indexOf('/');
    const address = slash < 0 ? entry : entry.slice(0, slash);
    const family = net.isIPv6(address) ? 'ipv6' : 'ipv4';
    if (slash < 0) list.addAddress(address, family);
    else list.addSubnet(address, Number(entry.slice(slash + 1)), family);
  }
  return list;
}

/**
 * `peer` is the client's address (IPv4-mapped prefix removed), `accepted` the local address the
 * connection was accepted on. A direct connection whose peer is the very address it connected to
 * comes from this host too: Linux drops packets from outside that carry one of its own addresses as
 * source (`accept_local` is off by default), so such a peer is a local process.
 */
export function classifyConnection(dst: OriginalDestination, peer: string, accepted: string, snap: ConfigSnapshot): ConnectionOrigin {
  if (dst.kind === 'redirected') {
    // A local address first, even inside an outbound CIDR: inbound traffic from other hosts arrives
    // this way, and it must reach the local application only, never be routed into the mesh.
    if (isOwnAddress(dst.address, snap)) {
      const cluster = snap.inboundByPort.get(dst.port);
      if (cluster !== undefined) return { kind: 'inbound', cluster, port: dst.port };
      return { kind: 'refused', reason: `original destination ${dst.address}:${dst.port} is a local address but port ${dst.port} is no registered inbound port` };
    }
    if (isOutboundDestination(dst.address, snap)) return OUTBOUND;
    return { kind: 'refused', reason: `original destination ${dst.address}:${dst.port} is neither in outboundCidrs (the mesh VIPs) nor a local service address` };
  }
  if (isOwnAddress(peer, snap) || (peer !== '' && peer === accepted)) return LOCAL;
  if (dst.kind === 'unknown') return { kind: 'refused', direct: true, reason: `${dst.reason}: a connection from another host (${peer}) cannot be told apart from a direct one to the listener` };
  return { kind: 'refused', direct: true, reason: `direct connection to the listener from another host (${peer}); only captured traffic and explicit-proxy requests from this host are served` };
}
