import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cluster, curl, request, startProxy, startUpstream, vhost, waitFor, type StartedProxy, type TestUpstream } from './support/proxy-harness';

// Every admin endpoint of the source document's `curl 127.0.0.1:15000/help`, read with real curl,
// in Envoy's formats; Prometheus output checked by Debian's promtool.
const SOURCE_HELP = `admin commands are:
  /: Admin home page
  /certs: print certs on machine
  /clusters: upstream cluster status
  /config_dump: dump current Envoy configs (experimental)
  /cpuprofiler: enable/disable the CPU profiler
  /healthcheck/fail: cause the server to fail health checks
  /healthcheck/ok: cause the server to pass health checks
  /help: print out list of admin commands
  /hot_restart_version: print the hot restart compatibility version
  /listeners: print listener addresses
  /logging: query/change logging levels
  /quitquitquit: exit the server
  /reset_counters: reset all counters to zero
  /runtime: print runtime values
  /runtime_modify: modify runtime values
  /server_info: print server version/status information
  /stats: print server stats
  /stats/prometheus: print server stats in prometheus format
`;

function promtool(text: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = execFile('promtool', ['check', 'metrics'], (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }));
    child.stdin!.end(text);
  });
}

describe('admin interface', () => {
  let up: TestUpstream;
  let p: StartedProxy;
  let base: string;
  const get = async (path: string) => (await curl(['-s', `${base}${path}`])).stdout;
  const post = async (path: string) => (await curl(['-s', '-X', 'POST', `${base}${path}`])).stdout;

  beforeAll(async () => {
    up = await startUpstream('up');
    p = await startProxy({
      version: 'v42',
      node: { id: 'sidecar~198.18.0.2~user-1', cluster: 'user', metadata: { app: 'user' } },
      inbound: [{ port: 8089, cluster: 'in#8089#user' }],
      clusters: [
        cluster('in#8089#user', [up]),
        cluster('out#80#order', [up], { outlierDetection: { consecutive5xx: 5 } }),
      ],
      routes: { virtualHosts: [vhost('order', ['order'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#order' } }])] },
    });
    base = `http://127.0.0.1:${p.admin}`;
    for (let i = 0; i < 3; i++) await request(p.port, { host: 'order', path: '/warm' });
  });
  afterAll(async () => {
    await p?.proxy.close();
    await up?.close();
  });

  it('/help lists exactly the source document\'s endpoints', async () => {
    expect(await get('/help')).toBe(SOURCE_HELP);
  });

  it('/ is an HTML page linking every endpoint', async () => {
    const html = await get('/');
    expect(html).toContain('<html');
    for (const line of SOURCE_HELP.split('\n').slice(1, -1)) {
      const path = line.trim().split(':')[0]!;
      if (path !== '/') expect(html).toContain(path);
    }
  });

  it('/clusters text: grep "in#" shows the local instances; per-host Envoy lines', async () => {
    const text = await get('/clusters');
    const inbound = text.split('\n').filter((l) => l.includes('in#'));
    expect(inbound).toContain(`in#8089#user::127.0.0.1:${up.port}::health_flags::healthy`);
    expect(text).toContain('out#80#order::default_priority::max_connections::1024');
    expect(text).toContain('out#80#order::high_priority::max_retries::3');
    expect(text).toContain('out#80#order::outlier::success_rate_average::-1');
    expect(text).toContain('out#80#order::added_via_api::false');
    expect(text).toContain(`out#80#order::127.0.0.1:${up.port}::rq_total::3`);
    expect(text).toContain(`out#80#order::127.0.0.1:${up.port}::rq_success::3`);
    for (const line of text.trim().split('\n')) expect(line.split('::').length).toBeGreaterThanOrEqual(3);
  });

  it('/clusters?format=json has cluster_statuses with host_statuses', async () => {
    const j = JSON.parse(await get('/clusters?format=json'));
    const order = j.cluster_statuses.find((c: { name: string }) => c.name === 'out#80#order');
    expect(order.added_via_api).toBe(false);
    expect(order.circuit_breakers.thresholds[0].max_connections).toBe(1024);
    expect(order.host_statuses[0].address.socket_address).toEqual({ address: '127.0.0.1', port_value: up.port });
    expect(order.host_statuses[0].stats.find((s: { name: string }) => s.name === 'rq_total').value).toBe('3');
  });

  it('/config_dump has Envoy\'s configs array with @types in order; ?resource and ?name_regex filter', async () => {
    const j = JSON.parse(await get('/config_dump'));
    expect(j.configs.map((c: { '@type': string }) => c['@type'])).toEqual([
      'type.googleapis.com/envoy.admin.v3.BootstrapConfigDump',
      'type.googleapis.com/envoy.admin.v3.ClustersConfigDump',
      'type.googleapis.com/envoy.admin.v3.ListenersConfigDump',
      'type.googleapis.com/envoy.admin.v3.RoutesConfigDump',
      'type.googleapis.com/envoy.admin.v3.SecretsConfigDump',
    ]);
    expect(j.configs[0].bootstrap.node.id).toBe('sidecar~198.18.0.2~user-1');
    expect(j.configs[1].version_info).toBe('v42');
    expect(j.configs[1].static_clusters.map((c: { cluster: { name: string } }) => c.cluster.name)).toEqual(['in#8089#user', 'out#80#order']);
    expect(j.configs[3].static_route_configs[0].route_config.virtual_hosts[0].domains).toEqual(['order']);
    const only = JSON.parse(await get('/config_dump?resource=static_clusters&name_regex=in%23'));
    expect(only.configs).toHaveLength(1);
    expect(only.configs[0]['@type']).toBe('type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster');
    expect(only.configs[0].cluster.name).toBe('in#8089#user');
  });

  it('/certs, /hot_restart_version, /listeners (text and json), /server_info, /runtime', async () => {
    expect(JSON.parse(await get('/certs'))).toEqual({ certificates: [] });
    expect(await get('/hot_restart_version')).toMatch(/^\S+\n$/);
    expect(await get('/listeners')).toBe(`virtual::127.0.0.1:${p.port}\n`);
    expect(JSON.parse(await get('/listeners?format=json')).listener_statuses[0].local_address.socket_address.port_value).toBe(p.port);
    const info = JSON.parse(await get('/server_info'));
    expect(info.state).toBe('LIVE');
    expect(info.command_line_options).toMatchObject({ restart_epoch: 0, drain_time: '5s', concurrency: 1 });
    expect(info.node).toEqual({ id: 'sidecar~198.18.0.2~user-1', cluster: 'user', metadata: { app: 'user' } });
    expect(info.uptime_current_epoch).toMatch(/^\d+s$/);
    expect(JSON.parse(await get('/runtime'))).toEqual({ layers: ['admin'], entries: {} });
  });

  it('/runtime_modify sets and removes keys (POST only)', async () => {
    expect((await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', `${base}/runtime_modify?a=1`])).stdout).toBe('405');
    expect(await post('/runtime_modify?feature.x=on&b=2')).toBe('OK\n');
    const r = JSON.parse(await get('/runtime'));
    expect(r.entries['feature.x']).toEqual({ layer_values: ['on'], final_value: 'on' });
    await post('/runtime_modify?feature.x=');
    expect(JSON.parse(await get('/runtime')).entries['feature.x']).toBeUndefined();
  });

  it('/stats text, filter, usedonly, json; /reset_counters zeroes counters but not gauges', async () => {
    const text = await get('/stats');
    const lines = text.trim().split('\n');
    expect(lines).toContain('cluster.out#80#order.upstream_rq_total: 3');
    expect(lines).toContain('cluster.out#80#order.upstream_rq_2xx: 3');
    expect(lines).toContain('http.virtual.downstream_rq_total: 3');
    expect(lines).toContain(`listener.127.0.0.1_${p.port}.downstream_cx_total: 3`);
    expect(lines.some((l) => /^server\.uptime: \d+$/.test(l))).toBe(true);
    expect(lines.some((l) => l.startsWith('cluster.out#80#order.upstream_rq_time: P0('))).toBe(true);
    const filtered = (await get('/stats?filter=upstream_rq_2xx')).trim().split('\n');
    // BlackHoleCluster is always there (as in Istio's Envoy): where refused connections are counted
    expect(filtered).toEqual(['cluster.BlackHoleCluster.upstream_rq_2xx: 0', 'cluster.in#8089#user.upstream_rq_2xx: 0', 'cluster.out#80#order.upstream_rq_2xx: 3']);
    const used = await get('/stats?usedonly&filter=in%23');
    expect(used).not.toContain('in#8089#user.upstream_rq_2xx');
    const j = JSON.parse(await get('/stats?format=json&filter=upstream_rq_total'));
    expect(j.stats).toContainEqual({ name: 'cluster.out#80#order.upstream_rq_total', value: 3 });
    expect((await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', `${base}/reset_counters`])).stdout).toBe('405');
    expect(await post('/reset_counters')).toBe('OK\n');
    const after = await get('/stats?filter=out%23');
    expect(after).toContain('cluster.out#80#order.upstream_rq_total: 0');
    expect(after).toContain('cluster.out#80#order.membership_total: 1');
  });

  it('/stats/prometheus passes promtool check metrics and uses Envoy names and labels', async () => {
    await request(p.port, { host: 'order', path: '/again' });
    const text = await get('/stats/prometheus');
    expect(text).toContain('envoy_cluster_upstream_rq_total{envoy_cluster_name="out#80#order"} 1');
    expect(text).toMatch(/envoy_cluster_upstream_rq_xx_total\{envoy_cluster_name="out#80#order",envoy_response_code_class="2"\} 1/);
    expect(text).toContain('# TYPE envoy_cluster_upstream_rq_time histogram');
    const r = await promtool(text);
    expect(r.out).toBe('');
    expect(r.code).toBe(0);
    expect(await promtool(await get('/stats?format=prometheus'))).toEqual({ code: 0, out: '' });
  });

  it('/logging lists levels (GET) and changes them (POST only)', async () => {
    expect(await get('/logging')).toMatch(/^active loggers:\n( {2}\w+: \w+\n)+$/);
    expect((await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', `${base}/logging?level=debug`])).stdout).toBe('200'); // GET only lists
    expect(await get('/logging')).toContain('  http: info');
    expect(await post('/logging?http=debug')).toContain('  http: debug');
    expect(await post('/logging?level=warning')).toContain('  admin: warning');
    expect(await post('/logging?paths=http:error,upstream:trace')).toMatch(/http: error[\s\S]*upstream: debug/);
    const bad = await curl(['-s', '-w', '%{http_code}', '-X', 'POST', `${base}/logging?nope=debug`]);
    expect(bad.stdout).toMatch(/unknown logger "nope"[\s\S]*400$/);
  });

  it('/healthcheck/fail and /healthcheck/ok flip the health state (POST only)', async () => {
    expect((await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', `${base}/healthcheck/fail`])).stdout).toBe('405');
    expect(p.proxy.healthCheckFailed).toBe(false);
    expect(await post('/healthcheck/fail')).toBe('OK\n');
    expect(p.proxy.healthCheckFailed).toBe(true);
    expect(await post('/healthcheck/ok')).toBe('OK\n');
    expect(p.proxy.healthCheckFailed).toBe(false);
  });

  it('/cpuprofiler writes a real V8 CPU profile and prints its path (POST only)', async () => {
    expect((await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', `${base}/cpuprofiler?enable=y`])).stdout).toBe('405');
    expect(await post('/cpuprofiler?enable=y')).toContain('Starting CPU profiler');
    for (let i = 0; i < 20; i++) await request(p.port, { host: 'order', path: `/p${i}` });
    const out = await post('/cpuprofiler?enable=n');
    const file = /written to (\S+)/.exec(out)![1]!;
    const profile = JSON.parse(fs.readFileSync(file, 'utf8'));
    expect(profile.nodes.length).toBeGreaterThan(1);
    expect(profile.startTime).toBeLessThan(profile.endTime);
    fs.rmSync(file);
  });

  it('/ready (hidden from /help) is 200 while LIVE; unknown paths give 404 with the help text', async () => {
    expect(await get('/ready')).toBe('LIVE\n');
    const r = await curl(['-s', '-w', '%{http_code}', `${base}/nope`]);
    expect(r.stdout).toContain('admin commands are:');
    expect(r.stdout.endsWith('404')).toBe(true);
  });

  it('/quitquitquit (POST only) drains and closes the proxy', async () => {
    const q = await startProxy({ clusters: [cluster('out#80#order', [up])], routes: { virtualHosts: [] } });
    const qb = `http://127.0.0.1:${q.admin}`;
    expect((await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', `${qb}/quitquitquit`])).stdout).toBe('405');
    expect((await curl(['-s', '-X', 'POST', `${qb}/quitquitquit`])).stdout).toBe('OK\n');
    await waitFor(async () => (await curl(['-s', `http://127.0.0.1:${q.port}/`])).code !== 0, 'the listener to close');
    await q.proxy.close();
  });
});
