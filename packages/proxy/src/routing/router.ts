import type { FaultConfig, HeaderMatchConfig, RedirectConfig, RouteConfig, VirtualHostConfig } from '../config/types';
import type { RequestHead } from '../http/head-parser';
import { compileHeaderMutation, mergeHeaderMutations, type HeaderMutation } from './header-mutation';
import { queryParams } from './query-params';
import { TokenBucket } from './token-bucket';

/** What a route sends a request to: the cluster and, for a weighted cluster, its own request headers merged with the route's. */
export interface ClusterChoice {
  readonly name: string;
  readonly requestHeaders: HeaderMutation | undefined;
}

/** The request as route matching sees it (fields of the ActiveStream: no object per request). */
export interface RouteRequest {
  /** path without the query */
  readonly path: string;
  /** origin-form path with the query (`:path`) */
  readonly target: string;
  /** Host or absolute-form authority (`:authority`) */
  readonly authority: string;
  readonly head: RequestHead;
}

/** A compiled route: what to match and what to do. */
export interface CompiledRoute {
  readonly config: RouteConfig;
  readonly virtualHost: string;
  /** the route's name, or its index in the virtual host (x-mesh-route) */
  readonly label: string;
  /** the route's metadata as x-mesh-route pairs (`; rule=..; service=..`), made once; '' without metadata */
  readonly debugMetadata: string;
  /** how many leading characters of the path a match covers (prefix or exact path; 0 for a regex): prefixRewrite replaces them */
  readonly matchedLength: number;
  /**
   * True when the route only matches and forwards (no fault, rate limit, mirror, redirect, rewrite or
   * header mutation): the request path checks this one flag and skips the rest.
   */
  readonly plain: boolean;
  readonly redirect: RedirectConfig | undefined;
  readonly fault: FaultConfig | undefined;
  /** the virtual host's bucket (shared by its routes), then the route's own */
  readonly vhostRateLimit: TokenBucket | undefined;
  readonly rateLimit: TokenBucket | undefined;
  readonly mirrors: readonly { readonly cluster: string; readonly percent: number }[] | undefined;
  readonly prefixRewrite: string | undefined;
  readonly hostRewrite: string | undefined;
  readonly responseHeaders: HeaderMutation | undefined;
  matches(req: RouteRequest): boolean;
  /** The cluster for one request (weighted clusters pick by weight). */
  pickCluster(): ClusterChoice | undefined;
}

export type RouteResult =
  | { kind: 'route'; route: CompiledRoute }
  | { kind: 'no-vhost' }
  | { kind: 'no-route'; virtualHost: string };

/** The keys of x-mesh-route itself (route metadata cannot take them). */
const DEBUG_KEYS = new Set(['vhost', 'route', 'cluster', 'fault', 'mirror', 'ratelimit']);

/** Where a header matcher reads its value: a request header, or one of Envoy's pseudo-headers. */
const enum Source { Header, Method, Authority, Path, Scheme }

interface HeaderMatcher { name: string; source: Source; test: (value: string | undefined) => boolean }
interface QueryMatcher { name: string; test: (value: string | null) => boolean }

function valueTest(m: { exact?: string; regex?: string; prefix?: string; present?: boolean }): (value: string | undefined) => boolean {
  if (m.exact !== undefined) { const exact = m.exact; return (v) => v === exact; }
  if (m.regex !== undefined) { const re = new RegExp(`^(?:${m.regex})$`); return (v) => v !== undefined && re.test(v); }
  if (m.prefix !== undefined) { const prefix = m.prefix; return (v) => v !== undefined && v.startsWith(prefix); }
  const present = m.present ?? true;
  return (v) => (v !== undefined) === present;
}

/**
 * Envoy's HeaderMatcher, invert_match included. As Envoy: an absent header fails every match except
 * `present: false` (and `present: true` inverted), whatever `invert` says.
 */
function compileHeader(h: HeaderMatchConfig): HeaderMatcher {
  const name = h.name.toLowerCase();
  const source = name === ':method' ? Source.Method : name === ':authority' || name === 'host' ? Source.Authority : name === ':path' ? Source.Path : name === ':scheme' ? Source.Scheme : Source.Header;
  const test = valueTest(h);
  if (!h.invert) return { name, source, test };
  const presentMatch = h.exact === undefined && h.regex === undefined && h.prefix === undefined;
  const wantsPresent = h.present ?? true;
  return { name, source, test: (v) => (v === undefined ? presentMatch && wantsPresent : !test(v)) };
}

function compileQuery(q: { name: string; exact?: string; regex?: string; present?: boolean }): QueryMatcher {
  const test = valueTest(q);
  return { name: q.name, test: (v) => test(v ?? undefined) };
}

function headerValue(headers: RequestHead, lowerName: string): string | undefined {
  let out: string | undefined;
  for (let i = 0; i < headers.lower.length; i++) {
    if (headers.lower[i] === lowerName) out = out === undefined ? headers.values[i] : `${out},${headers.values[i]!}`;
  }
  return out;
}

function pseudoValue(source: Source, name: string, req: RouteRequest): string | undefined {
  switch (source) {
    case Source.Method: return req.head.method;
    case Source.Authority: return req.authority;
    case Source.Path: return req.target;
    case Source.Scheme: return undefined; // not known here; no configured route matches on it today
    default: return headerValue(req.head, name);
  }
}

/** Token buckets outlive a snapshot when their route and settings are unchanged (an endpoint update must not refill them). */
export type BucketCarry = Map<string, TokenBucket>;

function bucketFor(key: string, cfg: RouteConfig['rateLimit'], previous: BucketCarry | undefined, next: BucketCarry): TokenBucket | undefined {
  if (!cfg) return undefined;
  const full = `${key}\0${cfg.maxTokens}/${cfg.tokensPerFill ?? 1}/${cfg.fillIntervalMs}`;
  const bucket = next.get(full) ?? previous?.get(full) ?? new TokenBucket(cfg);
  next.set(full, bucket);
  return bucket;
}

function compileRoute(cfg: RouteConfig, index: number, vh: VirtualHostConfig, vhostBucket: TokenBucket | undefined, previous: BucketCarry | undefined, next: BucketCarry): CompiledRoute {
  const { prefix, path: exact, regex } = cfg.match;
  const re = regex !== undefined ? new RegExp(regex) : undefined;
  const headerMatchers = (cfg.match.headers ?? []).map(compileHeader);
  const queryMatchers = (cfg.match.queryParameters ?? []).map(compileQuery);
  const pathMatch = exact !== undefined ? (p: string) => p === exact
    : re !== undefined ? (p: string) => re.test(p)
    : prefix !== undefined ? (p: string) => p.startsWith(prefix)
    : () => true;
  const action = cfg.route;
  // a client's own x-envoy-original-path never reaches the upstream of a rewriting route (the proxy sets it)
  const requestHeaders = compileHeaderMutation(cfg.requestHeadersToAdd,
    action?.prefixRewrite !== undefined ? [...(cfg.requestHeadersToRemove ?? []), 'x-envoy-original-path'] : cfg.requestHeadersToRemove);
  const responseHeaders = compileHeaderMutation(cfg.responseHeadersToAdd, cfg.responseHeadersToRemove);
  const weighted = action?.weightedClusters?.map((w): ClusterChoice & { weight: number } => ({
    name: w.name, weight: w.weight, requestHeaders: mergeHeaderMutations(compileHeaderMutation(w.requestHeadersToAdd, undefined), requestHeaders),
  }));
  const totalWeight = weighted ? weighted.reduce((a, w) => a + w.weight, 0) : 0;
  const single: ClusterChoice | undefined = action?.cluster !== undefined ? { name: action.cluster, requestHeaders } : undefined;
  const label = cfg.name ?? String(index);
  // metadata keys that would shadow x-mesh-route's own are left out; ';' and ',' in values would split the pairs
  const debugMetadata = Object.entries(cfg.metadata ?? {}).filter(([k]) => !DEBUG_KEYS.has(k) && /^[\w.-]+$/.test(k))
    .map(([k, v]) => `; ${k}=${v.replace(/[;,\s]+/g, '_')}`).join('');
  const rateLimit = bucketFor(`${vh.name}\0${index}\0${label}`, cfg.rateLimit, previous, next);
  const mirrors = action?.requestMirrorPolicies?.map((m) => ({ cluster: m.cluster, percent: m.percent ?? 100 }));
  const plain = vhostBucket === undefined && rateLimit === undefined && cfg.fault === undefined && cfg.redirect === undefined
    && mirrors === undefined && action?.prefixRewrite === undefined && action?.hostRewrite === undefined
    && requestHeaders === undefined && responseHeaders === undefined && !(weighted?.some((w) => w.requestHeaders !== undefined) ?? false);
  return {
    config: cfg,
    virtualHost: vh.name,
    label,
    debugMetadata,
    matchedLength: exact !== undefined ? exact.length : prefix !== undefined ? prefix.length : 0,
    plain,
    redirect: cfg.redirect,
    fault: cfg.fault,
    vhostRateLimit: vhostBucket,
    rateLimit,
    mirrors,
    prefixRewrite: action?.prefixRewrite,
    hostRewrite: action?.hostRewrite,
    responseHeaders,
    matches(req) {
      if (!pathMatch(req.path)) return false;
      for (const h of headerMatchers) if (!h.test(pseudoValue(h.source, h.name, req))) return false;
      if (queryMatchers.length > 0) {
        // parsed only here: a route without query matchers never looks at the query
        const params = queryParams(req.target);
        for (const q of queryMatchers) if (!q.test(params.get(q.name))) return false;
      }
      return true;
    },
    pickCluster() {
      if (!weighted || totalWeight <= 0) return single;
      let r = Math.random() * totalWeight;
      for (const w of weighted) {
        r -= w.weight;
        if (r < 0) return w;
      }
      return weighted[weighted.length - 1]!;
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
  /** the rate limit buckets of this table, by route and settings (handed to the next table) */
  readonly buckets: BucketCarry = new Map();

  /** `previous`: the table this one replaces; its token buckets carry over where route and settings are unchanged. */
  constructor(readonly virtualHosts: VirtualHostConfig[], previous?: RouteTable) {
    for (const vh of virtualHosts) {
      const vhostBucket = bucketFor(`${vh.name}\0vhost`, vh.rateLimit, previous?.buckets, this.buckets);
      const compiled: CompiledVhost = { name: vh.name, routes: vh.routes.map((r, i) => compileRoute(r, i, vh, vhostBucket, previous?.buckets, this.buckets)) };
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

  /** `req.authority` as received (Host header or absolute-form target); `req.path` without the query. */
  match(req: RouteRequest): RouteResult {
    const host = req.authority.toLowerCase();
    let vhost = this.findVhost(host);
    if (!vhost) {
      const colon = host.lastIndexOf(':');
      if (colon > 0 && host.indexOf(']', colon) < 0) vhost = this.findVhost(host.slice(0, colon));
    }
    vhost ??= this.catchAll;
    if (!vhost) return { kind: 'no-vhost' };
    for (const r of vhost.routes) if (r.matches(req)) return { kind: 'route', route: r };
    return { kind: 'no-route', virtualHost: vhost.name };
  }
}
