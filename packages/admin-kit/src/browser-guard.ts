import { isIP } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http';

/**
 * Why a request that a browser may have sent on someone else's behalf is refused, or undefined.
 * curl, scripts and the agent never trip these; a web page on another origin does:
 * - DNS rebinding: a page's own name resolved to 127.0.0.1 reaches the port with `Host: evil.example`.
 *   A loopback-only admin port answers only requests addressed to an IP literal or localhost.
 * - Cross-site requests: a page may POST to 127.0.0.1 without a preflight. A state-changing route
 *   refuses a request whose `Origin` is not the admin port itself.
 */
export function browserRefusal(headers: IncomingHttpHeaders, opts: { checkHost: boolean; mutatesState: boolean; method: string }): string | undefined {
  const host = headers.host;
  if (opts.checkHost && host !== undefined) {
    const name = hostName(host);
    if (!isIP(name) && name !== 'localhost' && !name.endsWith('.localhost')) {
      return `host "${name}" is not allowed: this loopback admin port answers only requests addressed to an IP address or localhost (protection against DNS rebinding)`;
    }
  }
  const origin = headers.origin;
  if (opts.mutatesState && origin !== undefined && originHost(origin) !== host?.toLowerCase()) {
    return `cross-origin ${opts.method} from ${origin} refused: state-changing admin endpoints accept requests from the admin port itself, curl or scripts only`;
  }
  return undefined;
}

function hostName(host: string): string {
  const lower = host.toLowerCase();
  if (lower.startsWith('[')) return lower.slice(1, lower.indexOf(']'));
  const colon = lower.lastIndexOf(':');
  return colon >= 0 ? lower.slice(0, colon) : lower;
}

function originHost(origin: string): string | undefined {
  try {
    return new URL(origin).host.toLowerCase();
  } catch {
    return undefined; // "null" or garbage: never the admin port itself
  }
}
