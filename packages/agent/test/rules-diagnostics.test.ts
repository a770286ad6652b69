// The traffic rules in doctor, trace and the home page, from GET /rules and the proxy's x-mesh-route answer.
import { describe, expect, it } from 'vitest';
import { parseTrafficRules } from '@mesh-agent/shared-config';
import { checkTrafficRules, parseRouteHeader, ruleHop, rulesForHomePage } from '../src/diagnostics/rules-checks';
import { serviceOfCluster } from '../src/diagnostics/envoy-formats';
import { rulesInForce } from '../src/traffic-rules';
import type { CheckContext } from '../src/diagnostics/checks';

const [rule] = parseTrafficRules([
  {
    service: 'order',
    subsets: [{ name: 'v1', labels: { version: 'v1' } }, { name: 'v2', labels: { version: 'v2' } }],
    rateLimit: { requestsPerSecond: 50 },
    http: [
      { name: 'beta-users', match: [{ headers: { 'x-user': { exact: 'beta' } } }], route: [{ subset: 'v2' }], fault: { abort: { httpStatus: 503, percent: 5 } } },
      { name: 'canary', route: [{ subset: 'v1', weight: 90 }, { subset: 'v2', weight: 10 }], mirror: { subset: 'v2', percent: 10 } },
    ],
  },
]);
const instance = (id: string, version: string, healthy: boolean) => ({ id, address: '198.18.0.3', port: 8080, healthy, weight: 1, metadata: { version } });
const inForce = (v2Healthy: boolean) => rulesInForce([{ rule, source: 'etcd /mesh-agent/rules/default/order' }], { services: [{ name: 'order', namespace: 'default', instances: [instance('o1', 'v1', true), instance('o2', 'v2', v2Healthy)] }] });
const ctx = (rules: unknown) => ({ snap: { rules } }) as unknown as CheckContext;

describe('traffic rules in the diagnostics', () => {
  it('GET /rules counts each subset\'s instances and healthy ones', () => {
    expect(inForce(false)[0].subsets).toEqual([
      { name: 'v1', labels: { version: 'v1' }, instances: 1, healthy: 1 },
      { name: 'v2', labels: { version: 'v2' }, instances: 1, healthy: 0 },
    ]);
  });

  it('doctor lists the rules, and fails a subset a rule sends to with no healthy instance', () => {
    const ok = checkTrafficRules(ctx(inForce(true)));
    expect(ok.status).toBe('OK');
    expect(ok.evidence).toBe('1 service rule in force: order from etcd /mesh-agent/rules/default/order: beta-users: match header x-user exact beta -> v2; abort 503 5% | canary: every request -> v1 90%, v2 10%; mirror v2 10%');
    const bad = checkTrafficRules(ctx(inForce(false)));
    expect(bad.status).toBe('FAIL');
    expect(bad.evidence).toBe('order subset v2 (version=v2) has no healthy instance (0/1) but rule beta-users, canary sends to it');
    expect(checkTrafficRules(ctx([])).evidence).toMatch(/^no traffic rules/);
  });

  it('trace reads the proxy\'s x-mesh-route answer: rule, subset, policies; nothing for the default route', () => {
    expect(parseRouteHeader('vhost=order; route=canary; cluster=out#8080#order#v2; mirror=out#8080#order#v2')).toEqual({ vhost: 'order', route: 'canary', cluster: 'out#8080#order#v2', mirror: 'out#8080#order#v2' });
    expect(ruleHop('vhost=order; route=canary; cluster=out#8080#order#v2; mirror=out#8080#order#v2', inForce(true))).toEqual({
      hop: 'rule', ok: true,
      detail: 'rule canary: every request -> v1 90%, v2 10%; mirror v2 10% (from etcd /mesh-agent/rules/default/order); cluster out#8080#order#v2 (subset v2); mirrored to out#8080#order#v2',
    });
    expect(ruleHop('vhost=order; route=beta-users; cluster=-; fault=abort', inForce(true))?.detail).toMatch(/^rule beta-users: .*; cluster -; fault abort \(answered by the proxy, not the upstream\)$/);
    expect(ruleHop('vhost=order; route=2; cluster=out#8080#order', inForce(true))).toBeUndefined();
    expect(ruleHop(undefined, inForce(true))).toBeUndefined();
  });

  it('the home page rows, and subset clusters counted under their service', () => {
    expect(rulesForHomePage(inForce(true))).toEqual([
      {
        service: 'order', source: 'etcd /mesh-agent/rules/default/order',
        subsets: ['v1 (version=v1): 1/1 healthy', 'v2 (version=v2): 1/1 healthy'],
        lines: ['rate limit 50/s for the whole service', expect.stringMatching(/^beta-users: /), expect.stringMatching(/^canary: /)],
      },
    ]);
    expect(serviceOfCluster('out#8080#order#v2')).toEqual({ direction: 'out', port: 8080, service: 'order', subset: 'v2' });
    expect(serviceOfCluster('out#8080#order.shop')).toEqual({ direction: 'out', port: 8080, service: 'order.shop' });
  });
});
