import type { RedirectConfig } from '../config/types';

const DEFAULT_PORTS: Record<string, string> = { http: '80', https: '443' };

/** The request as a redirect sees it. */
export interface RedirectRequest {
  /** `http` or `https`, as the downstream came */
  scheme: string;
  /** Host header or absolute-form authority, with its port when it had one */
  authority: string;
  /** origin-form path with its query */
  target: string;
  /** how many leading characters of the path the route matched (prefix or exact path), for prefixRewrite */
  matchedLength: number;
}

/** Splits `host[:port]` (and `[v6]:port`). */
function splitAuthority(authority: string): { host: string; port: string | undefined } {
  const colon = authority.lastIndexOf(':');
  if (colon > 0 && authority.indexOf(']', colon) < 0 && /^\d+$/.test(authority.slice(colon + 1))) {
    return { host: authority.slice(0, colon), port: authority.slice(colon + 1) };
  }
  return { host: authority, port: undefined };
}

/**
 * Envoy's RedirectAction: the Location is the request's URL with the configured parts swapped.
 * host_redirect replaces the host (and drops the request's port), port_redirect the port; a port that
 * is the default of the final scheme is left out (`http://a:80` -> https gives `https://a`).
 * path_redirect replaces the path (a `?query` in it replaces the query), prefix_rewrite the matched
 * prefix; strip_query drops the request's query.
 */
export function redirectLocation(cfg: RedirectConfig, req: RedirectRequest): string {
  const scheme = cfg.schemeRedirect ?? req.scheme;
  const original = splitAuthority(req.authority);
  const host = cfg.hostRedirect ?? original.host;
  let port = cfg.portRedirect !== undefined ? String(cfg.portRedirect) : cfg.hostRedirect !== undefined ? undefined : original.port;
  if (port !== undefined && (port === DEFAULT_PORTS[scheme] || (cfg.schemeRedirect !== undefined && cfg.portRedirect === undefined && port === DEFAULT_PORTS[req.scheme]))) port = undefined;

  const q = req.target.indexOf('?');
  const path = q < 0 ? req.target : req.target.slice(0, q);
  let query = q < 0 ? '' : req.target.slice(q);
  let finalPath = path;
  if (cfg.pathRedirect !== undefined) {
    const pq = cfg.pathRedirect.indexOf('?');
    if (pq >= 0) { finalPath = cfg.pathRedirect.slice(0, pq); query = cfg.pathRedirect.slice(pq); }
    else finalPath = cfg.pathRedirect;
  } else if (cfg.prefixRewrite !== undefined) {
    finalPath = cfg.prefixRewrite + path.slice(req.matchedLength);
  }
  if (cfg.stripQuery === true && (cfg.pathRedirect === undefined || !cfg.pathRedirect.includes('?'))) query = '';
  return `${scheme}://${host}${port !== undefined ? `:${port}` : ''}${finalPath}${query}`;
}
