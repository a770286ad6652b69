import { isIP } from 'node:net';
import { MeshError, EXIT_CODES } from '@mesh-agent/shared-config';

export interface Upstream {
  address: string;
  port: number;
  family: 4 | 6;
}

export function formatUpstream(u: Upstream): string {
  return u.family === 6 ? `[${u.address}]:${u.port}` : `${u.address}:${u.port}`;
}

/** Parses 'IP', 'IP:PORT', '[IPv6]:PORT' or a bare IPv6 address. */
export function parseUpstream(text: string, where: string): Upstream {
  const raw = text.trim();
  let address = raw;
  let port = 53;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(raw);
  if (bracketed) {
    address = bracketed[1];
    if (bracketed[2] !== undefined) port = Number(bracketed[2]);
  } else if (isIP(raw) === 0) {
    const colon = raw.lastIndexOf(':');
    if (colon > 0 && isIP(raw.slice(0, colon)) === 4) {
      address = raw.slice(0, colon);
      port = Number(raw.slice(colon + 1));
    }
  }
  address = address.replace(/%.*$/, ''); // drop an IPv6 zone id: dgram wants plain addresses
  const family = isIP(address);
  if (family === 0 || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new MeshError('MESH_DNS_UPSTREAM_INVALID', `${where}: "${text}" is not an upstream address ('IP', 'IP:PORT' or '[IPv6]:PORT')`, {
      exitCode: EXIT_CODES.usage,
      hint: 'give resolver addresses as IP literals, e.g. 10.0.0.2 or 10.0.0.2:5353',
    });
  }
  return { address, port, family: family as 4 | 6 };
}

/** The `nameserver` lines of a resolv.conf, in order. Other lines and bad addresses are skipped. */
export function parseResolvConf(text: string): Upstream[] {
  const out: Upstream[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    try {
      out.push(parseUpstream(m[1], 'resolv.conf'));
    } catch {
      // a malformed line in a system file must not stop DNS: the rest still works
    }
  }
  return out;
}

const LOOPBACK_V4 = /^127\./;
const ANY = new Set(['0.0.0.0', '::', '::0']);

/**
 * True when `u` is this mesh-dns: its own listen address and port, any loopback address on its port
 * when it listens on loopback or on every address, or its own address on a wildcard listener.
 */
export function isSelf(u: Upstream, listen: { address: string; port: number }): boolean {
  if (u.port !== listen.port) return false;
  if (u.address === listen.address) return true;
  const listenAny = ANY.has(listen.address);
  const listenLoopback = LOOPBACK_V4.test(listen.address) || listen.address === '::1';
  const upLoopback = LOOPBACK_V4.test(u.address) || u.address === '::1';
  if (upLoopback && (listenAny || listenLoopback)) return true;
  return listenAny && ANY.has(u.address);
}

/** Throws MESH_DNS_UPSTREAM_LOOP when a configured upstream is this mesh-dns itself. */
export function refuseSelfUpstreams(upstreams: Upstream[], listen: { address: string; port: number }, source: string): void {
  for (const u of upstreams) {
    if (isSelf(u, listen)) {
      throw new MeshError(
        'MESH_DNS_UPSTREAM_LOOP',
        `${source}: upstream ${formatUpstream(u)} is this mesh-dns itself (it listens on ${listen.address}:${listen.port}); forwarding there would loop`,
        { exitCode: EXIT_CODES.usage, hint: 'configure the real resolvers (e.g. from /etc/resolv.conf of the host) as upstreams, not mesh-dns own listen address' },
      );
    }
  }
}
