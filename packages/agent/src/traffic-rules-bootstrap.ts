// Translates the operator's traffic rules (docs/traffic-rules.md) into the proxy's routes, on the
// calling side as Istio's sidecars do: a subset is its own cluster out#PORT#SERVICE#SUBSET holding
// the instances whose metadata has every label of the subset; each http rule becomes one route per
// match (Istio's match list is an OR), named after the rule, with metadata { rule, service }; the
// service's default route (prefix / to every instance) stays last.
import { tokenBucketOf, type Cluster, type HttpRule, type RegistryService, type RuleMatch, type ServiceTrafficRule, type StringMatch, type ValueMatch, type VirtualHost } from '@mesh-agent/shared-config';

type Route = VirtualHost['routes'][number];
type RouteInput = Omit<Route, 'match' | 'route'> & { match: Partial<Route['match']>; route?: Partial<NonNullable<Route['route']>> };

/** The default-policy values a rule's route inherits (the global mesh config's, per service). */
export interface RoutePolicy {
  timeoutMs: number;
  retries: { retryOn: string; numRetries: number; perTryTimeoutMs: number };
}

/** The cluster of a subset: the service's cluster name with `#SUBSET`. */
export function subsetClusterName(serviceCluster: string, subset: string): string {
  return `${serviceCluster}#${subset}`;
}

/** Whether an instance belongs to a subset: its metadata has every label (TSF tags). */
export function inSubset(instance: RegistryService['instances'][number], labels: Record<string, string>): boolean {
  return Object.entries(labels).every(([key, value]) => instance.metadata[key] === value);
}

/**
 * One cluster per subset, built by `clusterOf` (the same settings as the service's cluster) from
 * the service with only the subset's instances.
 */
export function subsetClusters(service: RegistryService, rule: ServiceTrafficRule, serviceCluster: string, clusterOf: (instances: RegistryService) => Cluster): Cluster[] {
  return rule.subsets.map((subset) => ({
    ...clusterOf({ ...service, instances: service.instances.filter((i) => inSubset(i, subset.labels)) }),
    name: subsetClusterName(serviceCluster, subset.name),
  }));
}

/** The name a rule's route carries: the rule's name, else SERVICE-INDEX. */
export function ruleRouteName(service: string, rule: HttpRule, index: number): string {
  return rule.name ?? `${service}-${index}`;
}

/** The rule routes of one virtual host, in rule order, before the default route. */
export function ruleRoutes(qualified: string, rule: ServiceTrafficRule, serviceCluster: string, policy: RoutePolicy): Route[] {
  const routes: RouteInput[] = [];
  rule.http.forEach((http, index) => {
    const name = ruleRouteName(qualified, http, index);
    for (const match of http.match ?? [{}]) routes.push(routeOf(http, name, qualified, match, serviceCluster, policy));
  });
  return routes as Route[];
}

/** The virtual host's token bucket, from the service rule's rateLimit. */
export function serviceRateLimit(rule: ServiceTrafficRule | undefined): Pick<VirtualHost, 'rateLimit'> {
  return rule?.rateLimit ? { rateLimit: tokenBucketOf(rule.rateLimit) } : {};
}

function routeOf(http: HttpRule, name: string, service: string, match: RuleMatch, serviceCluster: string, policy: RoutePolicy): RouteInput {
  const clusterOf = (subset: string | undefined) => (subset === undefined ? serviceCluster : subsetClusterName(serviceCluster, subset));
  const route: RouteInput = { name, match: matchOf(match), metadata: { rule: name, service } };
  if (http.redirect) {
    const r = http.redirect;
    route.redirect = {
      ...(r.scheme ? { schemeRedirect: r.scheme } : {}),
      ...(r.authority ? { hostRedirect: r.authority } : {}),
      ...(r.port ? { portRedirect: r.port } : {}),
      ...(r.uri ? { pathRedirect: r.uri } : {}),
      responseCode: r.redirectCode ?? 301,
      stripQuery: r.stripQuery ?? false,
    } as Route['redirect'];
  } else if (http.directResponse) {
    route.directResponse = { status: http.directResponse.status, body: http.directResponse.body ?? '' };
  } else {
    const destinations = http.route ?? [{}];
    const retries = http.retries;
    route.route = {
      ...(destinations.length === 1 ? { cluster: clusterOf(destinations[0].subset) } : { weightedClusters: destinations.map((d) => ({ name: clusterOf(d.subset), weight: d.weight ?? 0 })) }),
      timeoutMs: http.timeoutMs ?? policy.timeoutMs,
      retryPolicy: {
        retryOn: retries?.retryOn ?? policy.retries.retryOn,
        numRetries: retries ? retries.attempts : policy.retries.numRetries,
        perTryTimeoutMs: retries?.perTryTimeoutMs ?? policy.retries.perTryTimeoutMs,
        retriableStatusCodes: [],
        retryNonIdempotent: false,
      },
      ...(http.rewrite?.uri ? { prefixRewrite: http.rewrite.uri } : {}),
      ...(http.rewrite?.authority ? { hostRewrite: http.rewrite.authority } : {}),
      ...(http.mirror ? { requestMirrorPolicies: [{ cluster: clusterOf(http.mirror.subset), percent: http.mirror.percent ?? 100 }] } : {}),
    };
  }
  const request = http.headers?.request;
  const response = http.headers?.response;
  const toAdd = (ops: typeof request) => [
    ...Object.entries(ops?.set ?? {}).map(([n, value]) => ({ name: n, value, append: false })),
    ...Object.entries(ops?.add ?? {}).map(([n, value]) => ({ name: n, value, append: true })),
  ];
  if (toAdd(request).length > 0) route.requestHeadersToAdd = toAdd(request);
  if (request?.remove?.length) route.requestHeadersToRemove = request.remove;
  if (toAdd(response).length > 0) route.responseHeadersToAdd = toAdd(response);
  if (response?.remove?.length) route.responseHeadersToRemove = response.remove;
  if (http.fault) route.fault = http.fault as Route['fault'];
  if (http.rateLimit) route.rateLimit = tokenBucketOf(http.rateLimit);
  return route;
}

/** Istio's HTTPMatchRequest as Envoy's RouteMatch: uri as prefix/path/regex, method and authority as pseudo-header matches. */
function matchOf(match: RuleMatch): Partial<Route['match']> {
  const uri = match.uri;
  const path = uri?.exact !== undefined ? { path: uri.exact } : uri?.regex !== undefined ? { regex: uri.regex } : { prefix: uri?.prefix ?? '/' };
  const headers = [
    ...Object.entries(match.headers ?? {}).map(([name, m]) => headerMatch(name, m, false)),
    ...Object.entries(match.withoutHeaders ?? {}).map(([name, m]) => headerMatch(name, m, true)),
    ...(match.method ? [headerMatch(':method', match.method, false)] : []),
    ...(match.authority ? [headerMatch(':authority', match.authority, false)] : []),
  ];
  const queryParameters = Object.entries(match.queryParams ?? {}).map(([name, m]) => ({ name, ...valueOf(m) }));
  return { ...path, headers, queryParameters } as Partial<Route['match']>;
}

function headerMatch(name: string, match: ValueMatch | StringMatch, invert: boolean): Route['match']['headers'][number] {
  return { name: name.toLowerCase(), ...valueOf(match), invert } as Route['match']['headers'][number];
}

function valueOf(match: ValueMatch | StringMatch): { exact?: string; prefix?: string; regex?: string; present?: boolean } {
  if (match.exact !== undefined) return { exact: match.exact };
  if (match.prefix !== undefined) return { prefix: match.prefix };
  if (match.regex !== undefined) return { regex: match.regex };
  // present: false is "absent": Envoy's present_match false, i.e. present inverted
  return { present: (match as ValueMatch).present ?? true };
}
