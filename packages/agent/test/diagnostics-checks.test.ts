// The doctor's per-hop logic on a snapshot. Every other fault is made for real in e2e/test/diagnostics.test.ts;
// "a route missing while mesh-dns serves the name" cannot be produced with a real agent (it always builds a
// route for each registry service, with an empty cluster rather than none), so this state is built by hand here.
import { describe, expect, it } from 'vitest';
import { checkCluster, checkRoute, checkVipRoute, meshServices, vipTargets, type CheckContext } from '../src/diagnostics/checks';
import { firstHostOf, routeGet } from '../src/diagnostics/vip-route';
import { renderDoctor } from '../src/diagnostics/doctor';
import { parseClustersText } from '../src/diagnostics/envoy-formats';
import type { SidecarSnapshot } from '../src/diagnostics/sidecar';
import type { HttpAnswer } from '../src/diagnostics/http-get';

const ok = (url: string, body = ''): HttpAnswer => ({ url, status: 200, headers: {}, body, ms: 1 });

function snapshot(overrides: Partial<SidecarSnapshot>): SidecarSnapshot {
  return {
    agentAdminUrl: 'http://127.0.0.1:15020', adminHost: '127.0.0.1',
    ports: { agentAdmin: 15020, dnsAdmin: 15021, proxyAdmin: 15000, proxyListener: 15001, dns: 55354 },
    meshVip: '240.240.0.1',
    agent: { status: ok('s', '<SERVICE_REGISTERED>'), health: ok('h'), latestError: ok('e'), config: ok('c'), services: ok('sv') },
    dns: { health: ok('dh'), dump: ok('dd'), dumpJson: { services: [{ name: 'order' }, { name: 'pay' }] } },
    proxy: { listeners: ok('l'), clusters: ok('c'), stats: ok('st'), dump: ok('d'), serverInfo: ok('si') },
    localServices: [{ name: 'user', port: 8089, healthPath: '/health', ports: [{ port: 8089, protocol: 'http' }] }],
    clusterStatus: parseClustersText('out#8089#order::198.18.0.3:8089::health_flags::healthy\n'),
    virtualHosts: [{ name: 'order', domains: ['order', 'order:80'], clusters: ['out#8089#order'], directResponse: false }],
    stats: new Map(),
    listeners: [{ name: 'virtual', address: '0.0.0.0:15001' }],
    ...overrides,
  };
}

describe('doctor checks on a snapshot', () => {
  it('a name mesh-dns serves without a route in the proxy: route FAILs with a fix, its cluster is not blamed', () => {
    const snap = snapshot({});
    const ctx: CheckContext = { snap, nat: { rules: [] } };
    expect(meshServices(snap)).toEqual(['order', 'pay']);
    const route = checkRoute(ctx, 'pay');
    expect(route.status).toBe('FAIL');
    expect(route.evidence).toContain('no virtual host for "pay"');
    expect(route.fix).toMatch(/config_dump/);
    expect(checkRoute(ctx, 'order').status).toBe('OK');
    expect(checkCluster(ctx, 'pay', 'route:pay')).toMatchObject({ status: 'WARN', evidence: 'not checked: route:pay failed' });
  });

  it('a tripped circuit breaker FAILs the cluster', () => {
    const snap = snapshot({ stats: new Map([['cluster.out#8089#order.circuit_breakers.default.rq_open', 1]]) });
    const result = checkCluster({ snap, nat: { rules: [] } }, 'order');
    expect(result.status).toBe('FAIL');
    expect(result.evidence).toContain('circuit breaker open (rq_open)');
  });

  it('renders one line per hop, the fix under a broken one, and names the first broken hop', () => {
    const text = renderDoctor({ ok: false, time: 'T', agentAdminUrl: 'http://127.0.0.1:15020', checks: [
      { hop: 'agent', status: 'OK', evidence: 'status <SERVICE_REGISTERED>' },
      { hop: 'route:pay', status: 'FAIL', evidence: 'no virtual host', fix: 'add it' },
    ] });
    expect(text).toBe([
      'mesh-agent doctor: http://127.0.0.1:15020 at T',
      'OK    agent      status <SERVICE_REGISTERED>',
      'FAIL  route:pay  no virtual host',
      '                 fix: add it',
      '1 OK, 0 WARN, 1 FAIL; first broken hop: route:pay',
      '',
    ].join('\n'));
  });

  it('vip-route checks the mesh VIP, each per-service VIP and the VIP range once each', () => {
    const snap = snapshot({});
    snap.agent.configJson = { mesh: { vip: '240.240.0.1', vipCidr: '240.240.0.0/16' } };
    snap.agent.servicesJson = { registry: { services: [{ name: 'pay', namespace: 'shop', vip: '240.240.0.7' }, { name: 'order', namespace: 'default' }] } };
    expect(vipTargets(snap)).toEqual([
      { address: '240.240.0.1', label: 'the mesh VIP 240.240.0.1' },
      { address: '240.240.0.7', label: 'the VIP 240.240.0.7 of pay.shop' },
    ]);
    snap.agent.configJson.mesh.vipCidr = '198.19.0.0/16';
    expect(vipTargets(snap).map((t) => t.label)).toContain('the VIP range 198.19.0.0/16 (198.19.0.1)');
    expect([firstHostOf('240.240.0.0/16'), firstHostOf('240.240.3.9/24'), firstHostOf('198.18.0.5/32'), firstHostOf('fd00::/8')]).toEqual(['240.240.0.1', '240.240.3.1', '198.18.0.5', undefined]);
  });

  it('vip-route with a VIP per service shows a route shared by all of them once (real ip route get, read-only)', async (ctx) => {
    const shared = await routeGet('240.240.0.1');
    if (!shared.ok) return ctx.skip(); // this host has no route into 240.240.0.0/16 to look up
    const snap = snapshot({});
    snap.agent.configJson = { mesh: { vip: '240.240.0.1', vipCidr: '240.240.0.0/16' } };
    snap.agent.servicesJson = { registry: { services: ['a', 'b', 'c'].map((name, i) => ({ name, namespace: 'default', vip: `240.240.${i + 2}.9` })) } };
    const result = await checkVipRoute({ snap } as CheckContext);
    expect(result.status).toBe('OK');
    // one line, the mesh VIP's, not one per service VIP (the operator reads the route, not the list)
    expect(result.evidence.split('; ')).toHaveLength(1);
    expect(result.evidence.startsWith('240.240.0.1 ')).toBe(true);
  });
});
