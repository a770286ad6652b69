import { afterAll, describe, expect, it } from 'vitest';
import { curl, startProxy, waitFor, type StartedProxy } from './support/proxy-harness';
import { startH2Upstream, type H2Upstream } from './support/h2-upstream';

// Upstream HTTP/2 and gRPC (issue 14, part H2U): real node:http2 upstreams on loopback, the proxy on
// ephemeral ports, seen from outside with real curl (admin and requests).
const ups: H2Upstream[] = [];
const proxies: StartedProxy[] = [];
afterAll(async () => {
  for (const p of proxies) await p.proxy.close();
  await Promise.all(ups.map((u) => u.close()));
});

async function h2up(...args: Parameters<typeof startH2Upstream>): Promise<H2Upstream> {
  const u = await startH2Upstream(...args);
  ups.push(u);
  return u;
}
async function proxy(config: Record<string, unknown>): Promise<StartedProxy> {
  const p = await startProxy(config);
  proxies.push(p);
  return p;
}
const admin = async (p: StartedProxy, path: string) => (await curl(['-s', `http://127.0.0.1:${p.admin}${path}`])).stdout;
const endpoint = (u: H2Upstream) => ({ address: u.address, port: u.port });

describe('cluster protocol in the admin interface', () => {
  it('/clusters and /config_dump show which clusters speak HTTP/2 (Envoy\'s HttpProtocolOptions)', async () => {
    const up = await h2up();
    const p = await proxy({
      clusters: [
        { name: 'out#9000#greeter', protocol: 'http2', endpoints: [endpoint(up)] },
        { name: 'out#80#order', endpoints: [endpoint(up)] },
      ],
    });
    const text = await admin(p, '/clusters');
    expect(text).toContain('out#9000#greeter::protocol::http2');
    expect(text).toContain('out#80#order::protocol::http1');
    const json = JSON.parse(await admin(p, '/clusters?format=json')) as { cluster_statuses: { name: string; protocol: string }[] };
    expect(json.cluster_statuses.filter((c) => c.name !== 'BlackHoleCluster').map((c) => [c.name, c.protocol])).toEqual([['out#9000#greeter', 'http2'], ['out#80#order', 'http1']]);
    const dump = JSON.parse(await admin(p, '/config_dump?resource=static_clusters')) as { configs: { cluster: Record<string, any> }[] };
    const opts = (name: string) => dump.configs.find((c) => c.cluster.name === name)!.cluster.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'];
    expect(opts('out#9000#greeter').explicit_http_config).toEqual({ http2_protocol_options: {} });
    expect(opts('out#80#order').explicit_http_config).toEqual({ http_protocol_options: {} });
  });
});

describe('gRPC health checking (grpc.health.v1.Health/Check over HTTP/2)', () => {
  it('a host flips healthy / unhealthy / healthy with the upstream\'s SERVING / NOT_SERVING; the service name is asked for', async () => {
    const up = await h2up();
    const p = await proxy({
      clusters: [{
        name: 'out#9000#greeter', protocol: 'http2', endpoints: [endpoint(up)],
        healthCheck: { grpc: { serviceName: 'greeter.Greeter' }, intervalMs: 50, timeoutMs: 500, healthyThreshold: 1, unhealthyThreshold: 2 },
      }],
    });
    const flags = async () => /out#9000#greeter::127\.0\.0\.1:\d+::health_flags::(\S+)/.exec(await admin(p, '/clusters'))?.[1];
    await waitFor(async () => (await flags()) === 'healthy', 'healthy after the first SERVING answer');
    const check = up.streams.find((s) => s.path === '/grpc.health.v1.Health/Check')!;
    expect(check.headers['content-type']).toBe('application/grpc');
    expect(check.headers.te).toBe('trailers');
    expect(check.headers[':authority']).toBe(`127.0.0.1:${up.port}`); // the cluster name has '#', no authority
    up.healthStatus = 2; // NOT_SERVING
    await waitFor(async () => (await flags()) === '/failed_active_hc', 'unhealthy after NOT_SERVING');
    up.healthStatus = 1;
    await waitFor(async () => (await flags()) === 'healthy', 'healthy again');
    const stats = await admin(p, '/stats');
    expect(stats).toMatch(/cluster\.out#9000#greeter\.health_check\.success: [1-9]/);
    expect(stats).toMatch(/cluster\.out#9000#greeter\.health_check\.failure: [2-9]/);
    // what the probe asked: HealthCheckRequest { service: "greeter.Greeter" }
    const config = JSON.parse(await admin(p, '/config_dump?resource=static_clusters')) as { configs: { cluster: { health_checks: unknown[] } }[] };
    expect(config.configs[0]!.cluster.health_checks[0]).toMatchObject({ grpc_health_check: { service_name: 'greeter.Greeter' } });
  });

  it('a gRPC error answer, an HTTP/1-only upstream and a dead port all fail the check', async () => {
    const failing = await h2up({ handler: () => { /* unused: health checks are answered below */ } });
    failing.server.removeAllListeners('stream');
    failing.server.on('stream', (stream) => {
      stream.on('error', () => {});
      stream.resume();
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12', 'grpc-message': 'unimplemented' }, { endStream: true });
    });
    const h1 = await import('./support/proxy-harness').then((m) => m.startUpstream('h1-only'));
    const p = await proxy({
      clusters: [{
        name: 'out#9000#greeter', protocol: 'http2', endpoints: [endpoint(failing), { address: h1.address, port: h1.port }, { address: '127.0.0.1', port: 1 }],
        healthCheck: { grpc: {}, intervalMs: 50, timeoutMs: 300, unhealthyThreshold: 1 },
      }],
    });
    await waitFor(async () => /health_check\.failure: ([6-9]|\d\d)/.test(await admin(p, '/stats')), 'every host probed and failing');
    const text = await admin(p, '/clusters');
    expect(text.match(/::health_flags::\/failed_active_hc/g)).toHaveLength(3);
    expect(text).not.toContain('::health_flags::healthy');
    await h1.close();
  });
});
