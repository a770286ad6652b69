import { createRequire } from 'node:module';
import type net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { OriginalDestination } from './runtime';

interface NativeAddon { getOriginalDst(fd: number): { address: string; port: number } | null | undefined }

let addon: NativeAddon | null | undefined;
let loadError: string | undefined;

function here(): string {
  try {
    return path.dirname(fileURLToPath(import.meta.url));
  } catch {
    return __dirname;
  }
}

/**
 * Loads packages/proxy/native (getsockopt SO_ORIGINAL_DST) when it was built; without it the
 * proxy cannot tell a captured connection from a direct one and serves only this host's peers.
 */
export function loadOriginalDstAddon(): NativeAddon | null {
  if (addon !== undefined) return addon;
  // Operators (and tests) can force the fallback path.
  if (process.env.MESH_PROXY_NO_ORIGINAL_DST === '1') { loadError = 'disabled by MESH_PROXY_NO_ORIGINAL_DST=1'; addon = null; return addon; }
  const req = createRequire(import.meta.url ?? __filename);
  const base = here();
  const candidates = [
    path.join(base, '..', 'native', 'build', 'Release', 'original_dst.node'),
    path.join(base, '..', '..', 'native', 'build', 'Release', 'original_dst.node'),
  ];
  for (const file of candidates) {
    try {
      addon = req(file) as NativeAddon;
      return addon;
    } catch (err) {
      loadError = (err as Error).message;
    }
  }
  addon = null;
  return addon;
}

export function originalDstStatus(): { loaded: boolean; error?: string } {
  const a = loadOriginalDstAddon();
  return a ? { loaded: true } : { loaded: false, error: loadError };
}

const DIRECT: OriginalDestination = Object.freeze({ kind: 'direct' });

/** The pre-NAT destination of an accepted socket: redirected (by the capture rules), direct, or unknown (no addon). */
export function originalDestination(socket: net.Socket): OriginalDestination {
  const a = loadOriginalDstAddon();
  if (!a) return { kind: 'unknown', reason: `the SO_ORIGINAL_DST addon is not loaded (${loadError ?? 'not built'})` };
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return { kind: 'unknown', reason: 'the accepted socket has no file descriptor' };
  let dst: { address: string; port: number } | null | undefined;
  try {
    dst = a.getOriginalDst(fd);
  } catch (err) {
    return { kind: 'unknown', reason: `getsockopt(SO_ORIGINAL_DST) failed: ${(err as Error).message}` };
  }
  // No conntrack entry means no NAT rule touched the connection: it came to the listener directly.
  if (!dst) return DIRECT;
  // Not redirected: the original destination is the listener itself.
  if (dst.port === socket.localPort && dst.address === socket.localAddress?.replace(/^::ffff:/, '')) return DIRECT;
  return { kind: 'redirected', address: dst.address, port: dst.port };
}
