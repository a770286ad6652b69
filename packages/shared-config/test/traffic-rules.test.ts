import { describe, expect, it } from 'vitest';
import { agentConfigSchema, parseConfig, parseTrafficRules, parseTrafficRulesText, registrySnapshotSchema, tokenBucketOf, toJsonSchema } from '../src/index';
import { expectConfigError } from './helpers';

const problems = (fn: () => unknown) => expectConfigError(fn).issues.map((i) => `${i.path}: ${i.message}`);

const order = {
  service: 'order',
  subsets: [
    { name: 'v1', labels: { version: 'v1' } },
    { name: 'v2', labels: { version: 'v2' } },
  ],
  rateLimit: { requestsPerSecond: 100, burst: 200 },
  http: [
    {
      name: 'beta-users',
      match: [{ uri: { prefix: '/api' }, headers: { 'x-user': { exact: 'beta' } }, queryParams: { debug: { exact: '1' } }, method: { exact: 'GET' } }],
      route: [{ subset: 'v2', weight: 90 }, { subset: 'v1', weight: 10 }],
      rewrite: { uri: '/v2/', authority: 'order-v2' },
      headers: { request: { set: { 'x-a': '1' }, add: { 'x-b': '2' }, remove: ['x-c'] }, response: { set: { 'x-d': '1' } } },
      timeoutMs: 2000,
      retries: { attempts: 3, perTryTimeoutMs: 500, retryOn: '5xx,reset' },
      mirror: { subset: 'v2', percent: 10 },
      fault: { delay: { fixedDelayMs: 100, percent: 10 }, abort: { httpStatus: 503, percent: 5 } },
      rateLimit: { requestsPerSecond: 10, burst: 10 },
    },
    { name: 'moved', match: [{ uri: { exact: '/old' } }], redirect: { uri: '/new', authority: 'x', redirectCode: 302 } },
    { name: 'maintenance', match: [{ uri: { prefix: '/admin' } }], directResponse: { status: 503, body: 'down for maintenance' } },
  ],
};

describe('traffic rules', () => {
  it('the example of docs/traffic-rules.md is valid, with defaults filled in', () => {
    const [rule] = parseTrafficRules([order]);
    expect(rule.namespace).toBe('default');
    expect(rule.http.map((r) => r.name)).toEqual(['beta-users', 'moved', 'maintenance']);
    expect(parseTrafficRulesText('trafficRules: []\n')).toEqual([]);
    expect(parseTrafficRulesText(JSON.stringify([order]))[0].subsets).toHaveLength(2);
  });

  it('errors name the service, the rule and the field', () => {
    const bad = structuredClone(order);
    bad.http[0].route = [{ subset: 'v2', weight: 90 }, { subset: 'v3', weight: 10 }];
    bad.http[0].fault!.abort!.percent = 150;
    expect(problems(() => parseTrafficRules([bad]))).toEqual([
      'trafficRules[order].http[beta-users].fault.abort.percent: a percentage is 0..100',
      'trafficRules[order].http[beta-users].route[1].subset: unknown subset "v3" (defined: v1, v2)',
    ]);
  });

  it('weights must sum to 100 and need a weight each when split', () => {
    const rule = (route: unknown) => [{ service: 'order', namespace: 'prod', subsets: order.subsets, http: [{ route }] }];
    expect(problems(() => parseTrafficRules(rule([{ subset: 'v1', weight: 80 }, { subset: 'v2', weight: 10 }])))).toEqual([
      'trafficRules[order.prod].http[0].route: the weights sum to 90; they must sum to 100 (v1 80, v2 10)',
    ]);
    expect(problems(() => parseTrafficRules(rule([{ subset: 'v1', weight: 100 }, { subset: 'v2' }])))).toEqual([
      'trafficRules[order.prod].http[0].route[1].weight: with several destinations every one needs a weight (they sum to 100)',
    ]);
    expect(parseTrafficRules(rule([{ subset: 'v1' }]))[0].http[0].route).toEqual([{ subset: 'v1' }]);
  });

  it('one action per rule; forwarding options only on forwarded rules', () => {
    const rules = [{ service: 'order', http: [{ name: 'two', route: [{}], directResponse: { status: 200 }, mirror: { percent: 5 } }] }];
    expect(problems(() => parseTrafficRules(rules))).toEqual([
      'trafficRules[order].http[two].directResponse: a rule has at most one of route, redirect, directResponse (this one has route and directResponse)',
      'trafficRules[order].http[two].mirror: mirror applies to forwarded requests; a directResponse rule answers without forwarding: remove mirror or the directResponse',
    ]);
  });

  it('bad regexes, unknown retry words, match kinds, duplicates and unknown fields are refused by name', () => {
    const rules = [
      { service: 'order', subsets: [{ name: 'v1', labels: { version: 'v1' } }, { name: 'v1', labels: { version: 'x' } }], http: [
        { name: 'r', match: [{ uri: { regex: '(' }, headers: { 'x-a': { exact: 'a', prefix: 'b' } } }], retries: { attempts: 1, retryOn: '5xx,sometimes' } },
        { name: 'r', mirorr: {} },
      ] },
      { service: 'order' },
    ];
    const found = problems(() => parseTrafficRules(rules));
    expect(found).toContain('trafficRules[order].subsets[v1].name: subset "v1" is defined twice');
    expect(found.some((p) => p.startsWith('trafficRules[order].http[r].match[0].uri.regex: invalid regular expression'))).toBe(true);
    expect(found).toContain('trafficRules[order].http[r].match[0].headers.x-a: give exactly one of exact, prefix, regex, present (got several)');
    expect(found.some((p) => p.startsWith('trafficRules[order].http[r].retries.retryOn: unknown retryOn word "sometimes"'))).toBe(true);
    expect(found.some((p) => p.startsWith('trafficRules[order].http[r].mirorr: unknown field (did you mean "mirror"?)'))).toBe(true);
    expect(found).toContain('trafficRules[order].service: service default/order has rules twice (first at [0]): merge them into one entry');
  });

  it('a rules file names its file and line', () => {
    const text = ['trafficRules:', '  - service: order', '    http:', '      - name: slow', '        fault: { delay: { fixedDelayMs: 0, percent: 10 } }', ''].join('\n');
    const err = expectConfigError(() => parseTrafficRulesText(text, 'rules.yaml'));
    expect(err.issues).toEqual([{ file: 'rules.yaml', line: 5, path: 'trafficRules[order].http[slow].fault.delay.fixedDelayMs', message: 'fixedDelayMs is at least 1' }]);
    expect(err.message).toContain('rules.yaml:5: trafficRules[order].http[slow].fault.delay.fixedDelayMs');
  });

  it('the agent config and the registry snapshot carry rules', () => {
    expect(parseConfig(agentConfigSchema, { mesh: { trafficRules: [order] } }).mesh.trafficRules?.[0].service).toBe('order');
    expect(parseConfig(registrySnapshotSchema, { trafficRules: [order] }).trafficRules?.[0].http).toHaveLength(3);
    expect(JSON.stringify(toJsonSchema('traffic-rules'))).toContain('requestsPerSecond');
  });

  it('a rate becomes a token bucket of whole tokens', () => {
    expect(tokenBucketOf({ requestsPerSecond: 100, burst: 200 })).toEqual({ maxTokens: 200, tokensPerFill: 5, fillIntervalMs: 50 });
    expect(tokenBucketOf({ requestsPerSecond: 10 })).toEqual({ maxTokens: 10, tokensPerFill: 1, fillIntervalMs: 100 });
    expect(tokenBucketOf({ requestsPerSecond: 0.5 })).toEqual({ maxTokens: 1, tokensPerFill: 1, fillIntervalMs: 2000 });
    expect(tokenBucketOf({ requestsPerSecond: 30, burst: 5 })).toEqual({ maxTokens: 5, tokensPerFill: 3, fillIntervalMs: 100 });
  });
});
