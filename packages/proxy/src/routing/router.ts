import type { RouteConfig, VirtualHostConfig } from '../config/types';
import type { ParsedHeaders } from '../http/head-parser';

/** A compiled route: what to match and what to do. */
export interface CompiledRoute {
  readonly config: RouteConfig;
  readonly virtualHost: string;
  matches(path: string, headers: ParsedHeaders): boolean;
  /** The cluster for one request (weighted clusters pick by weight). */
  pickCluster(): string | undefined;
}

export type RouteResult =
  | { kind: 'route'; route: CompiledRoute }
  | { kind: 'no-vhost' }
  | { kind: 'no-route'; virtualHost: string };

interface HeaderMatcher { name: string; test: (value: string | undefined) => boolean }

function compileHeaders(cfg: RouteConfig): HeaderMatcher[] {
  return (cfg.match.headers ?? []).map((h) => {
    const name = h.name.toLowerCase();
    if (h.exact !== undefined) { const exact = h.exact; return { name, test: (v) => v === exact }; }
    if (h.regex !== undefined) { const re = new RegExp(`^(?:${h.regex})$`); return { name, test: (v) => v !== undefined && re.test(v) }; }
    const present = h.present ?? true;
    return { name, test: (v) => (v !== undefined) === present };
  });
}

function headerValue(headers: ParsedHeaders, lowerName: string): string | undefined {
  let out: string | undefined;
  for (let i = 0; i < headers.lower.length; i++) {
    if (headers.lower[i] === lowerName) out = out === undefined ? headers.values[i] : `${out},${headers.values[i]!}`;
  }
  return out;
}

function compileRoute(cfg: RouteConfig, virtualHost: string): CompiledRoute {
  const { prefix, path: exact, regex } = cfg.match;
  const re = regex !== undefined ? new RegExp(regex) : undefined;
  const headerMatchers = compileHeaders(cfg);
  const pathMatch = exact !== undefined ? (p: string) => p === exact
    : re !== undefined ? (p: string) => re.test(p)
    : prefix !== undefined ? (p: string) => p.startsWith(prefix)
    : () => true;
  const weighted = cfg.route?.weightedClusters;
  const totalWeight = weighted ? weighted.reduce((a, w) => a + w.weight, 0) : 0;
  const single = cfg.route?.cluster;
  return {
    config: cfg,
    virtualHost,
    matches(path, headers) {
      if (!pathMatch(path)) return false;
      for (const h of headerMatchers) if (!h.test(headerValue(headers, h.name))) return false;
      return true;
    },
    pickCluster() {
      if (!weighted || totalWeight <= 0) return single;
      let r = Math.random() * totalWeight;
      for (const w of weighted) {
        r -= w.weight;
        if (r < 0) return w.name;
      }
      return weighted[weighted.length - 1]!.name;
    },
  };
}

interface CompiledVhost { name: string; routes: CompiledRoute[] }

/**
 * Virtual hosts by domain, Envoy's order: exact domain, then suffix wildcards
 * (`*.example.com`, longest first), then prefix wildcards (`foo.*`), then `*`.
 * A Host with a port that matches no domain is tried again without the port.
 */
export class RouteTable {
  private readonly exact = new Map<string, CompiledVhost>();
  private readonly suffixes: { suffix: string; vhost: CompiledVhost }[] = [];
  private readonly prefixes: { prefix: string; vhost: CompiledVhost }[] = [];
  private catchAll: CompiledVhost | undefined;

  constructor(readonly virtualHosts: VirtualHostConfig[]) {
    for (const vh of virtualHosts) {
      const compiled: CompiledVhost = { name: vh.name, routes: vh.routes.map((r) => compileRoute(r, vh.name)) };
      for (const raw of vh.domains) {
        const d = raw.toLowerCase();
        if (d === '*') this.catchAll ??= compiled;
        else if (d.startsWith('*')) this.suffixes.push({ suffix: d.slice(1), vhost: compiled });
        else if (d.endsWith('*')) this.prefixes.push({ prefix: d.slice(0, -1), vhost: compiled });
        else if (!this.exact.has(d)) this.exact.set(d, compiled);
      }
    }
    this.suffixes.sort((a, b) => b.suffix.length - a.suffix.length);
    this.prefixes.sort((a, b) => b.prefix.length - a.prefix.length);
  }

  private findVhost(host: string): CompiledVhost | undefined {
    const exact = this.exact.get(host);
    if (exact) return exact;
    for (const s of this.suffixes) if (host.length > s.suffix.length && host.endsWith(s.suffix)) return s.vhost;
    for (const p of this.prefixes) if (host.length > p.prefix.length && host.startsWith(p.prefix)) return p.vhost;
    return undefined;
  }

  /** `authority` as received (Host header or absolute-form target); `path` without the query. */
  match(authority: string, path: string, headers: ParsedHeaders): RouteResult {
    const host = authority.toLowerCase();
    let vhost = this.findVhost(host);
    if (!vhost) {
      const colon = host.lastIndexOf(':');
      if (colon > 0 && host.indexOf(']', colon) < 0) vhost = this.findVhost(host.slice(0, colon));
    }
    vhost ??= this.catchAll;
    if (!vhost) return { kind: 'no-vhost' };
    for (const r of vhost.routes) if (r.matches(path, headers)) return { kind: 'route', route: r };
    return { kind: 'no-route', virtualHost: vhost.name };
  }
}
