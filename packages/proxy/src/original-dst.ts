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
 * Loads packages/proxy/native (getsockopt SO_ORIGINAL_DST) when it was built;
 * without it the proxy falls back to the Host header and the peer address.
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

/** The pre-NAT destination of an accepted socket, or undefined (no addon, no conntrack entry, not redirected). */
export function originalDestination(socket: net.Socket): OriginalDestination | undefined {
  const a = loadOriginalDstAddon();
  if (!a) return undefined;
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return undefined;
  try {
    const dst = a.getOriginalDst(fd);
    if (!dst) return undefined;
    // Not redirected: the original destination is the listener itself.
    if (dst.port === socket.localPort && dst.address === socket.localAddress?.replace(/^::ffff:/, '')) return undefined;
    return dst;
  } catch {
    return undefined;
  }
}
