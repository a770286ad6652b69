import { z } from 'zod';
import { millis, percent, serviceName } from './common';
import { RETRY_ON_WORDS } from './proxy-bootstrap';

/**
 * The operator's traffic rules (docs/traffic-rules.md): Istio's VirtualService `http` routes and
 * DestinationRule subsets in one document per service. The agent translates them into the proxy's
 * routes (weighted clusters, mirrors, faults, rate limits, header edits, rewrites, redirects,
 * direct responses) on the calling side, as Istio's sidecars do.
 */

/** Istio's StringMatch: exactly one of exact, prefix, regex. */
export const stringMatchSchema = z
  .strictObject({
    exact: z.string().optional().describe('The value equals this'),
    prefix: z.string().optional().describe('The value starts with this'),
    regex: z.string().optional().describe('The whole value matches this regular expression (ECMAScript syntax, anchored)'),
  })
  .superRefine((match, ctx) => {
    const kinds = [match.exact, match.prefix, match.regex].filter((v) => v !== undefined).length;
    if (kinds !== 1) ctx.addIssue({ code: 'custom', path: [], message: `give exactly one of exact, prefix, regex (got ${kinds === 0 ? 'none' : 'several'})` });
    if (match.regex !== undefined) checkRegex(match.regex, ['regex'], ctx);
  });

/** A header or query parameter match: a StringMatch, or `present: true|false`. */
export const valueMatchSchema = z
  .strictObject({
    exact: z.string().optional().describe('The value equals this'),
    prefix: z.string().min(1, { error: 'a prefix match needs a non-empty prefix (use present: true for any value)' }).optional().describe('The value starts with this'),
    regex: z.string().optional().describe('The whole value matches this regular expression'),
    present: z.boolean().optional().describe('true: present with any value; false: absent'),
  })
  .superRefine((match, ctx) => {
    const kinds = [match.exact, match.prefix, match.regex, match.present].filter((v) => v !== undefined).length;
    if (kinds !== 1) ctx.addIssue({ code: 'custom', path: [], message: `give exactly one of exact, prefix, regex, present (got ${kinds === 0 ? 'none' : 'several'})` });
    if (match.regex !== undefined) checkRegex(match.regex, ['regex'], ctx);
  });

/** A query parameter match: exact, regex or present (Istio has no prefix for query parameters). */
export const queryMatchSchema = z
  .strictObject({
    exact: z.string().optional().describe('The value (URL-decoded) equals this'),
    regex: z.string().optional().describe('The whole value (URL-decoded) matches this regular expression'),
    present: z.boolean().optional().describe('true: present with any value; false: absent'),
  })
  .superRefine((match, ctx) => {
    const kinds = [match.exact, match.regex, match.present].filter((v) => v !== undefined).length;
    if (kinds !== 1) ctx.addIssue({ code: 'custom', path: [], message: `give exactly one of exact, regex, present (got ${kinds === 0 ? 'none' : 'several'}; query parameters have no prefix match)` });
    if (match.regex !== undefined) checkRegex(match.regex, ['regex'], ctx);
  });

const headerName = z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, { error: 'a header name is a token (letters, digits and !#$%&\'*+.^_`|~-), e.g. x-user' });

/** One way a request may match; every field given must match (Istio's HTTPMatchRequest). */
export const ruleMatchSchema = z.strictObject({
  name: z.string().min(1).optional().describe('A name for this match, shown nowhere but in the rule'),
  uri: stringMatchSchema.optional().describe('The path (without the query); absent = any path'),
  headers: z.record(headerName, valueMatchSchema).optional().describe('Request headers, by name (case-insensitive); all must match'),
  withoutHeaders: z.record(headerName, valueMatchSchema).optional().describe('Request headers that must NOT match'),
  queryParams: z
    .record(z.string().min(1), queryMatchSchema)
    .optional()
    .describe('Query parameters, by name; values compared URL-decoded; all must match'),
  method: stringMatchSchema.optional().describe('The request method, e.g. { exact: GET }'),
  authority: stringMatchSchema.optional().describe('The Host header (with :port if the caller sent one)'),
});

export const subsetNameSchema = z
  .string({ error: 'expected a subset name such as v1' })
  .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, { error: 'a subset name is lower-case letters, digits and "-" (it becomes part of a cluster name)' });

export const subsetSchema = z.strictObject({
  name: subsetNameSchema.describe('Subset name, referred to by route, mirror; its cluster is out#PORT#SERVICE#NAME'),
  labels: z
    .record(z.string().min(1), z.string())
    .refine((labels) => Object.keys(labels).length > 0, { error: 'give at least one label (a subset without labels is the whole service: leave subset out instead)' })
    .describe("The instances whose registry metadata has all of these key/value pairs (e.g. { version: v2 }); TSF's tags"),
});

export const routeDestinationSchema = z.strictObject({
  subset: subsetNameSchema.optional().describe('The subset to send to; absent = every instance of the service'),
  weight: z
    .number({ error: 'expected a weight (0..100)' })
    .int({ error: 'a weight is a whole number' })
    .min(0, { error: 'a weight is 0..100' })
    .max(100, { error: 'a weight is 0..100' })
    .optional()
    .describe('Share of the requests in percent; the weights of a rule sum to 100 (may be left out with one destination)'),
});

/** A header a rule may set, add or remove: what the proxy's route accepts (no Host, content-length or hop-by-hop header). */
const editableHeader = headerName.refine((name) => !['host', 'connection', 'keep-alive', 'transfer-encoding', 'te', 'upgrade', 'proxy-connection', 'content-length'].includes(name.toLowerCase()), {
  error: 'host, content-length and hop-by-hop headers cannot be edited (use rewrite.authority for the Host)',
});
const headerValues = z.record(editableHeader, z.string().refine((v) => !/[\r\n\0]/.test(v), { error: 'a header value cannot contain CR, LF or NUL' }));
export const headerOperationsSchema = z.strictObject({
  set: headerValues.optional().describe('Headers set, replacing any value'),
  add: headerValues.optional().describe('Headers appended (any value already there stays)'),
  remove: z.array(editableHeader).optional().describe('Headers removed'),
});

export const rateLimitRuleSchema = z.strictObject({
  requestsPerSecond: z.number({ error: 'expected a rate in requests per second' }).positive({ error: 'requestsPerSecond must be above 0' }).max(1_000_000, { error: 'requestsPerSecond is at most 1000000' }).describe('Sustained rate (a token bucket refilled at this rate; may be fractional, e.g. 0.5)'),
  burst: z.number().int({ error: 'burst is a whole number of requests' }).min(1, { error: 'burst is at least 1' }).optional().describe('Bucket size: requests allowed at once after a quiet time; default requestsPerSecond rounded up'),
});

export const REDIRECT_CODES = [301, 302, 303, 307, 308] as const;

export const httpRuleSchema = z
  .strictObject({
    name: z
      .string()
      .regex(/^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$/, { error: 'a rule name is letters, digits, ".", "_" and "-" (it becomes the route name)' })
      .optional()
      .describe('Rule name: the route name in /config_dump, x-mesh-route and access logs (default the service name and the index)'),
    match: z.array(ruleMatchSchema).min(1, { error: 'give at least one match, or leave match out (every request)' }).optional().describe('The rule applies when ANY of these matches; absent = every request'),
    route: z.array(routeDestinationSchema).min(1, { error: 'give at least one destination' }).optional().describe('Where matching requests go: subsets with weights; absent (and no redirect or directResponse) = the whole service'),
    rewrite: z
      .strictObject({
        uri: z.string().startsWith('/', { error: 'a rewrite uri starts with "/"' }).optional().describe('Replaces the matched path prefix (uri.prefix), the whole path (uri.exact) or, with no uri match, the leading "/"'),
        authority: z.string().regex(/^[^\s/?#@]+$/, { error: 'an authority is a host name or host:port (no spaces, "/", "?", "#", "@")' }).optional().describe('Replaces the Host header sent upstream'),
      })
      .refine((r) => r.uri !== undefined || r.authority !== undefined, { error: 'give uri, authority or both' })
      .optional()
      .describe('Rewrites before forwarding'),
    redirect: z
      .strictObject({
        uri: z.string().startsWith('/', { error: 'a redirect uri is a path starting with "/"' }).optional().describe('The path of the Location'),
        authority: z.string().regex(/^[^\s/?#@]+$/, { error: 'an authority is a host name (no spaces, "/", "?", "#", "@"; set the port with port)' }).optional().describe('The host of the Location'),
        port: z.number().int().min(1).max(65535).optional().describe('The port of the Location'),
        scheme: z.enum(['http', 'https'], { error: 'expected http or https' }).optional().describe('The scheme of the Location'),
        redirectCode: z
          .union(REDIRECT_CODES.map((c) => z.literal(c)) as unknown as [z.ZodLiteral<301>, z.ZodLiteral<302>], { error: `expected one of ${REDIRECT_CODES.join(', ')}` })
          .optional()
          .describe('Status of the redirect; default 301'),
        stripQuery: z.boolean().optional().describe('Drop the query string from the Location'),
      })
      .optional()
      .describe('Answer with a redirect instead of forwarding'),
    directResponse: z
      .strictObject({
        status: z.number().int({ error: 'a status is a whole number' }).min(100, { error: 'a status is 100..599' }).max(599, { error: 'a status is 100..599' }).describe('HTTP status'),
        body: z.string().optional().describe('Response body (text)'),
      })
      .optional()
      .describe('Answer locally instead of forwarding'),
    headers: z
      .strictObject({
        request: headerOperationsSchema.optional().describe('Edits of the request sent upstream'),
        response: headerOperationsSchema.optional().describe('Edits of the response sent back'),
      })
      .optional()
      .describe('Header edits'),
    timeoutMs: millis.optional().describe('Whole-request timeout (0 = none); default the global mesh config\'s timeouts.requestMs'),
    retries: z
      .strictObject({
        attempts: z.number().int({ error: 'attempts is a whole number' }).min(0, { error: 'attempts cannot be negative' }).max(10, { error: 'at most 10 retries' }).describe('Retries after the first try (0 = none)'),
        perTryTimeoutMs: millis.optional().describe('Timeout of each try until the response headers (0 = the route timeout)'),
        retryOn: z.string().optional().describe(`Envoy retry_on words, comma-separated: ${RETRY_ON_WORDS.join(', ')}; default the global mesh config's`),
      })
      .optional()
      .describe('Retry policy'),
    mirror: z
      .strictObject({
        subset: subsetNameSchema.optional().describe('The subset copies go to; absent = the whole service'),
        percent: percent.optional().describe('Share of the requests copied (may be fractional); default 100'),
      })
      .optional()
      .describe('Send a copy of the requests (answer discarded, Host gets -shadow, as Envoy)'),
    fault: z
      .strictObject({
        delay: z
          .strictObject({
            fixedDelayMs: z.number().int({ error: 'fixedDelayMs is whole milliseconds' }).min(1, { error: 'fixedDelayMs is at least 1' }).describe('Delay before forwarding'),
            percent: percent.describe('Share of the requests delayed'),
          })
          .optional()
          .describe('Delay a share of the requests'),
        abort: z
          .strictObject({
            httpStatus: z.number().int().min(200, { error: 'an abort status is 200..599' }).max(599, { error: 'an abort status is 200..599' }).optional().describe('Status answered'),
            grpcStatus: z.number().int().min(0, { error: 'a gRPC status is 0..16' }).max(16, { error: 'a gRPC status is 0..16' }).optional().describe('gRPC status answered (grpc-status trailer)'),
            percent: percent.describe('Share of the requests aborted'),
          })
          .superRefine((abort, ctx) => {
            if ((abort.httpStatus === undefined) === (abort.grpcStatus === undefined)) ctx.addIssue({ code: 'custom', path: [], message: 'give exactly one of httpStatus, grpcStatus' });
          })
          .optional()
          .describe('Answer a share of the requests with an error, without forwarding'),
      })
      .refine((f) => f.delay !== undefined || f.abort !== undefined, { error: 'give delay, abort or both' })
      .optional()
      .describe("Fault injection (Envoy's fault filter): delay first, then abort"),
    rateLimit: rateLimitRuleSchema.optional().describe('Local token bucket for this rule (per calling host): over it = 429 local_rate_limited, flag RL'),
  })
  .superRefine((rule, ctx) => {
    const actions = (['route', 'redirect', 'directResponse'] as const).filter((k) => rule[k] !== undefined);
    if (actions.length > 1) ctx.addIssue({ code: 'custom', path: [actions[1]], message: `a rule has at most one of route, redirect, directResponse (this one has ${actions.join(' and ')})` });
    if (rule.redirect !== undefined || rule.directResponse !== undefined) {
      const answered = rule.redirect !== undefined ? 'redirect' : 'directResponse';
      for (const forwardOnly of ['rewrite', 'mirror', 'retries', 'timeoutMs'] as const) {
        if (rule[forwardOnly] !== undefined) ctx.addIssue({ code: 'custom', path: [forwardOnly], message: `${forwardOnly} applies to forwarded requests; a ${answered} rule answers without forwarding: remove ${forwardOnly} or the ${answered}` });
      }
    }
    if (rule.route && rule.route.length > 1) {
      rule.route.forEach((destination, index) => {
        if (destination.weight === undefined) ctx.addIssue({ code: 'custom', path: ['route', index, 'weight'], message: 'with several destinations every one needs a weight (they sum to 100)' });
      });
    }
    if (rule.route && rule.route.every((d) => d.weight !== undefined) && (rule.route.length > 1 || rule.route[0].weight !== undefined)) {
      const sum = rule.route.reduce((n, d) => n + (d.weight ?? 0), 0);
      if (sum !== 100) ctx.addIssue({ code: 'custom', path: ['route'], message: `the weights sum to ${sum}; they must sum to 100 (${rule.route.map((d) => `${d.subset ?? '(service)'} ${d.weight}`).join(', ')})` });
    }
    if (rule.retries?.retryOn !== undefined) {
      const words = rule.retries.retryOn.split(',').map((w) => w.trim()).filter((w) => w.length > 0);
      const unknown = words.filter((w) => !(RETRY_ON_WORDS as readonly string[]).includes(w));
      if (unknown.length > 0) ctx.addIssue({ code: 'custom', path: ['retries', 'retryOn'], message: `unknown retryOn word${unknown.length > 1 ? 's' : ''} ${unknown.map((w) => `"${w}"`).join(', ')}; valid words: ${RETRY_ON_WORDS.join(', ')}` });
      if (words.includes('retriable-status-codes')) ctx.addIssue({ code: 'custom', path: ['retries', 'retryOn'], message: '"retriable-status-codes" needs a list of statuses, which rules do not carry; use 5xx or gateway-error' });
    }
    if (rule.rewrite?.uri !== undefined && rule.match?.some((m) => m.uri?.regex !== undefined)) {
      ctx.addIssue({ code: 'custom', path: ['rewrite', 'uri'], message: 'rewrite.uri replaces the matched prefix or path; a uri.regex match has none: match with uri.prefix or uri.exact' });
    }
  });

export const serviceTrafficRuleSchema = z
  .strictObject({
    service: serviceName.describe('The service the rules are for (as registered)'),
    namespace: serviceName.default('default').describe('Its namespace'),
    subsets: z.array(subsetSchema).default([]).describe('Named groups of instances by registry metadata (Istio DestinationRule subsets)'),
    rateLimit: rateLimitRuleSchema.optional().describe('One token bucket for every call to the service from this host'),
    http: z.array(httpRuleSchema).default([]).describe('Rules in order: the first that matches a request applies; a request no rule matches goes to the whole service'),
  })
  .superRefine((service, ctx) => {
    const subsets = new Map<string, number>();
    service.subsets.forEach((subset, index) => {
      if (subsets.has(subset.name)) ctx.addIssue({ code: 'custom', path: ['subsets', index, 'name'], message: `subset "${subset.name}" is defined twice` });
      subsets.set(subset.name, index);
    });
    const defined = service.subsets.length > 0 ? `defined: ${service.subsets.map((s) => s.name).join(', ')}` : 'no subsets are defined: add them under subsets';
    const names = new Set<string>();
    service.http.forEach((rule, r) => {
      if (rule.name !== undefined) {
        if (names.has(rule.name)) ctx.addIssue({ code: 'custom', path: ['http', r, 'name'], message: `rule "${rule.name}" is defined twice in service ${service.service}` });
        names.add(rule.name);
      }
      rule.route?.forEach((destination, d) => {
        if (destination.subset !== undefined && !subsets.has(destination.subset)) ctx.addIssue({ code: 'custom', path: ['http', r, 'route', d, 'subset'], message: `unknown subset "${destination.subset}" (${defined})` });
      });
      if (rule.mirror?.subset !== undefined && !subsets.has(rule.mirror.subset)) ctx.addIssue({ code: 'custom', path: ['http', r, 'mirror', 'subset'], message: `unknown subset "${rule.mirror.subset}" (${defined})` });
    });
  });

/** A list of service rules: each service (namespace/name) at most once. */
export const trafficRulesSchema = z.array(serviceTrafficRuleSchema).superRefine((rules, ctx) => {
  const seen = new Map<string, number>();
  rules.forEach((rule, index) => {
    const key = `${rule.namespace}/${rule.service}`;
    if (seen.has(key)) ctx.addIssue({ code: 'custom', path: [index, 'service'], message: `service ${key} has rules twice (first at [${seen.get(key)}]): merge them into one entry` });
    else seen.set(key, index);
  });
});

/** A traffic rules file (mesh.trafficRulesFile, `mesh-agent rules validate|apply FILE`): `trafficRules: [...]`. */
export const trafficRulesFileSchema = z.strictObject({
  trafficRules: trafficRulesSchema.default([]).describe('Rules per service'),
});

function checkRegex(source: string, path: (string | number)[], ctx: z.RefinementCtx): void {
  try {
    new RegExp(source);
  } catch (err) {
    ctx.addIssue({ code: 'custom', path, message: `invalid regular expression: ${(err as Error).message}` });
  }
}

/**
 * Field paths that name what they point at: `trafficRules[0].http[1].route[1].subset` becomes
 * `trafficRules[order].http[beta-users].route[1].subset` (a service outside `default` is
 * `order.prod`, a rule without a name keeps its index; a subset is named too). `raw` is the
 * document's rule list before validation; `prefix` is the path of that list in the document.
 */
export function nameTrafficRulePath(path: string, raw: unknown, prefix = 'trafficRules'): string {
  if (!Array.isArray(raw) || !path.startsWith(`${prefix}[`)) return path;
  const head = new RegExp(`^${prefix.replace(/[.[\]]/g, '\\$&')}\\[(\\d+)\\]`).exec(path);
  if (!head) return path;
  const service = raw[Number(head[1])] as Record<string, unknown> | undefined;
  if (!service || typeof service !== 'object' || typeof service.service !== 'string') return path;
  const label = typeof service.namespace === 'string' && service.namespace !== 'default' ? `${service.service}.${service.namespace}` : service.service;
  let rest = path.slice(head[0].length);
  const named = (list: unknown, index: string, key: string): string => {
    const item = Array.isArray(list) ? (list[Number(index)] as Record<string, unknown> | undefined) : undefined;
    return item && typeof item === 'object' && typeof item[key] === 'string' && /^[\w.-]+$/.test(item[key] as string) ? (item[key] as string) : index;
  };
  rest = rest.replace(/^\.http\[(\d+)\]/, (_m, i: string) => `.http[${named(service.http, i, 'name')}]`);
  rest = rest.replace(/^\.subsets\[(\d+)\]/, (_m, i: string) => `.subsets[${named(service.subsets, i, 'name')}]`);
  return `${prefix}[${label}]${rest}`;
}

/** A token bucket as Envoy's local_ratelimit takes it: whole tokens per fill interval. */
export function tokenBucketOf(limit: { requestsPerSecond: number; burst?: number }): { maxTokens: number; tokensPerFill: number; fillIntervalMs: number } {
  const rps = limit.requestsPerSecond;
  const maxTokens = limit.burst ?? Math.max(1, Math.ceil(rps));
  // the shortest interval (50 ms at least, Envoy's minimum) that refills a whole number of tokens;
  // a slow rate refills one token every 1000/rps ms
  if (rps <= 20) return { maxTokens, tokensPerFill: 1, fillIntervalMs: Math.max(50, Math.round(1000 / rps)) };
  for (const interval of [50, 100, 200, 250, 500]) {
    const tokens = (rps * interval) / 1000;
    if (Number.isInteger(tokens)) return { maxTokens, tokensPerFill: tokens, fillIntervalMs: interval };
  }
  return { maxTokens, tokensPerFill: Math.round(rps), fillIntervalMs: 1000 };
}

export type StringMatch = z.infer<typeof stringMatchSchema>;
export type ValueMatch = z.infer<typeof valueMatchSchema>;
export type RuleMatch = z.infer<typeof ruleMatchSchema>;
export type Subset = z.infer<typeof subsetSchema>;
export type RouteDestination = z.infer<typeof routeDestinationSchema>;
export type HeaderOperations = z.infer<typeof headerOperationsSchema>;
export type RateLimitRule = z.infer<typeof rateLimitRuleSchema>;
export type HttpRule = z.infer<typeof httpRuleSchema>;
export type ServiceTrafficRule = z.infer<typeof serviceTrafficRuleSchema>;
export type ServiceTrafficRuleInput = z.input<typeof serviceTrafficRuleSchema>;
export type TrafficRulesFile = z.infer<typeof trafficRulesFileSchema>;
