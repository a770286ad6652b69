// Issue 15: any TCP service in the mesh, with real peers and the real capture path. B and B2 run
// Debian's redis-server as service `cache` (port declared `redis`), B a server-first greeter as
// `greeter` (port declared `tcp`: it speaks before the client does). A's application calls them by
// name: mesh-dns answers each with its own VIP, the VIP:port is DNATed to A's proxy, which pipes
// the bytes (outboundTcp) to B's or B2's captured port, whose proxy pipes them to the local app.
// redis-cli and redis-benchmark through the mesh, the greeter, and a redis killed mid-connection.
// B also runs a second redis as service `kv` on a port declared with NO protocol: both proxies sniff
// it (Istio's unnamed port), find no HTTP, and pipe it as TCP.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { preflight, IN_CI } from './support/preflight.js';
import { nsArgv, nsRun, waitFor, withLog, type Managed } from './support/exec.js';
import { createWorld, hostRules, type World } from './support/world.js';
import { APP_USER } from './support/infra.js';
import { admin, clusterStat, REPO_ROOT, startSidecar, statSum, type Role } from './support/mesh.js';

const TCP_TOOLS = ['redis-server', 'redis-cli', 'redis-benchmark'] as const;
const pre = preflight(TCP_TOOLS);
if (!pre.ok && !IN_CI) console.warn(`e2e TCP lab skipped: ${pre.reason}`);

const REDIS_PORT = 6379;
const KV_PORT = 6380;
const KV_OUT = `out#${KV_PORT}#kv`;
const GREETER_PORT = 2525;
const CACHE_OUT = `out#${REDIS_PORT}#cache`;
const GREETER_OUT = `out#${GREETER_PORT}#greeter`;
const GREETER = join(REPO_ROOT, 'packages/agent/test/fixtures/greeter.mjs');
const TCP_CLIENT = join(REPO_ROOT, 'packages/agent/test/fixtures/tcp-client.mjs');

// Long-lived redis connections: N of them PING every 200 ms for DURATION_MS; prints one JSON line
// with how many stayed alive (answered to the end) and how many were closed by the other side.
const LONG_CONNECTIONS = `
import net from 'node:net';
const [host, port, n, durationMs] = process.argv.slice(2);
const conns = [];
for (let i = 0; i < Number(n); i++) {
  const c = { pongs: 0, closed: false, lastPong: Date.now(), maxGapMs: 0 };
  const s = net.connect({ host, port: Number(port) });
  s.setEncoding('utf8');
  s.on('data', (d) => { const k = (d.match(/\\+PONG/g) || []).length; if (k) { const now = Date.now(); c.maxGapMs = Math.max(c.maxGapMs, now - c.lastPong); c.lastPong = now; c.pongs += k; } });
  s.on('error', () => { c.closed = true; });
  s.on('close', () => { c.closed = true; });
  c.timer = setInterval(() => { if (!c.closed) s.write('PING\\r\\n'); }, 200);
  c.socket = s;
  conns.push(c);
}
console.log('started');
setTimeout(() => {
  for (const c of conns) { clearInterval(c.timer); c.socket.destroy(); }
  const alive = conns.filter((c) => !c.closed && c.pongs > 0);
  console.log(JSON.stringify({ alive: alive.length, closed: conns.filter((c) => c.closed).length, maxGapMs: Math.max(0, ...alive.map((c) => c.maxGapMs)) }));
  process.exit(0);
}, Number(durationMs));
`;

describe.runIf(IN_CI)('e2e TCP lab preconditions', () => {
  it('CI has root, namespaces, redis-server and redis-tools', () => {
    expect(pre.reason ?? 'ok', `the TCP lab cannot run in CI: ${pre.reason}`).toBe('ok');
  });
});

describe.skipIf(!pre.ok)('e2e: TCP services through the sidecars (issue 15)', () => {
  let world: World;
  const redis: Partial<Record<Role, Managed>> = {};
  const a = () => world.host('a').ns;
  const redisCli = (args: string[], ns = a(), host = 'cache', port = REDIS_PORT) => nsRun(ns, 'redis-cli', ['-h', host, '-p', String(port), ...args], { as: APP_USER, allowFail: true, timeoutMs: 20_000 });
  const redisStats = async (role: Role) => {
    const { stdout } = await redisCli(['INFO', 'stats'], world.host(role).ns, '127.0.0.1');
    const field = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(stdout)?.[1] ?? NaN);
    return { connections: field('total_connections_received'), commands: field('total_commands_processed') };
  };

  const startRedis = async (role: Role, port = REDIS_PORT) => {
    const dir = join(world.dir, `redis-${role}-${port}`);
    mkdirSync(dir, { recursive: true, mode: 0o777 });
    const args = ['--port', String(port), '--bind', '0.0.0.0', '--protected-mode', 'no', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no'];
    const proc = world.procs.start(`redis-${role}-${port}`, nsArgv(world.host(role).ns, 'redis-server', args, APP_USER));
    await waitFor(`redis-server on ${role}:${port}`, async () => (await redisCli(['PING'], world.host(role).ns, '127.0.0.1', port)).stdout.trim() === 'PONG', { timeoutMs: 15_000 })
      .catch((err) => { throw withLog(err, proc); });
    if (port === REDIS_PORT) redis[role] = proc;
  };

  beforeAll(async () => {
    world = await createWorld();
    await startRedis('b');
    await startRedis('b2');
    await startRedis('b', KV_PORT);
    const greeter = world.procs.start('greeter-b', nsArgv(world.host('b').ns, process.execPath, [GREETER, 'greeter-on-b', String(GREETER_PORT)], APP_USER));
    await waitFor('the greeter on B', async () => greeter.lines.some((l) => l.includes('listening')), { timeoutMs: 15_000 }).catch((err) => { throw withLog(err, greeter); });
    const cache = { name: 'cache', ports: [{ targetPort: REDIS_PORT, protocol: 'redis' }] };
    await startSidecar(world, 'b', { extraServices: [cache, { name: 'greeter', ports: [{ targetPort: GREETER_PORT, protocol: 'tcp' }] }, { name: 'kv', ports: [{ targetPort: KV_PORT }] }] });
    await startSidecar(world, 'b2', { extraServices: [cache] });
    await startSidecar(world, 'a');
    await waitFor('A to route cache (B, B2) and greeter as TCP', async () => {
      const { stdout } = await admin(a(), 15000, '/clusters');
      return [`${CACHE_OUT}::${world.host('b').address}:${REDIS_PORT}::`, `${CACHE_OUT}::${world.host('b2').address}:${REDIS_PORT}::`, `${GREETER_OUT}::${world.host('b').address}:${GREETER_PORT}::`,
        `${KV_OUT}::tcp_route::`].every((s) => stdout.includes(s));
    }, { timeoutMs: 30_000 });
  }, 300_000);

  afterAll(async () => {
    await world?.teardown();
    if (world) expect(await hostRules()).toBe(world.hostRulesBefore);
  }, 120_000);

  it('mesh-dns answers cache and greeter with two distinct per-service VIPs (not the shared one)', async () => {
    const vipOf = async (name: string) => (await nsRun(a(), 'dig', ['+short', name], { allowFail: true })).stdout.trim();
    const [cacheVip, greeterVip] = [await vipOf('cache'), await vipOf('greeter')];
    expect(cacheVip).toMatch(/^240\.240\.\d+\.\d+$/);
    expect(greeterVip).toMatch(/^240\.240\.\d+\.\d+$/);
    expect(cacheVip).not.toBe(greeterVip);
    expect([cacheVip, greeterVip]).not.toContain('240.240.0.1');
  });

  it('redis-cli by name through the capture path: SET/GET round-trip, counted by A\'s out# cluster and B\'s or B2\'s in# cluster', async () => {
    expect((await redisCli(['SET', 'mesh-key', 'through the mesh'])).stdout.trim()).toBe('OK');
    const before = await statSum(a(), clusterStat(CACHE_OUT, 'upstream_cx_total'));
    expect((await redisCli(['PING'])).stdout.trim()).toBe('PONG');
    expect(await statSum(a(), clusterStat(CACHE_OUT, 'upstream_cx_total'))).toBeGreaterThan(before);
    const inbound = (await statSum(world.host('b').ns, clusterStat(`in#${REDIS_PORT}#cache`, 'upstream_cx_total'))) + (await statSum(world.host('b2').ns, clusterStat(`in#${REDIS_PORT}#cache`, 'upstream_cx_total')));
    expect(inbound).toBeGreaterThanOrEqual(2);
  });

  it('redis-benchmark -n 20000 from A by name: zero errors, and both redis servers served connections and commands', async () => {
    const before = { b: await redisStats('b'), b2: await redisStats('b2') };
    const res = await nsRun(a(), 'redis-benchmark', ['-h', 'cache', '-p', String(REDIS_PORT), '-n', '20000', '-q', '-t', 'ping,set,get'], { as: APP_USER, allowFail: true, timeoutMs: 180_000 });
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expect(res.stdout + res.stderr).not.toMatch(/error/i);
    const lines = res.stdout.split(/[\r\n]+/).filter((l) => /requests per second/.test(l));
    expect(lines.map((l) => l.split(':')[0].trim()), res.stdout).toEqual(['PING_INLINE', 'PING_MBULK', 'SET', 'GET']);
    const after = { b: await redisStats('b'), b2: await redisStats('b2') };
    // 50 clients per test, round robin over two endpoints: each got some of them and their commands
    for (const role of ['b', 'b2'] as const) {
      expect(after[role].connections - before[role].connections, `connections on ${role}`).toBeGreaterThan(10);
      expect(after[role].commands - before[role].commands, `commands on ${role}`).toBeGreaterThan(10_000);
    }
    expect(after.b.commands - before.b.commands + after.b2.commands - before.b2.commands).toBeGreaterThanOrEqual(80_000);
    expect(await statSum(a(), clusterStat(CACHE_OUT, 'upstream_cx_connect_fail'))).toBe(0);
  }, 200_000);

  it('a port declared with no protocol (kv, redis on B): both proxies sniff it, see no HTTP and pipe it as TCP: redis-cli by name round-trips', async () => {
    const before = { out: await statSum(a(), clusterStat(KV_OUT, 'upstream_cx_total')), in: await statSum(world.host('b').ns, clusterStat(`in#${KV_PORT}#kv`, 'upstream_cx_total')) };
    expect((await redisCli(['SET', 'sniffed', 'as tcp'], a(), 'kv', KV_PORT)).stdout.trim()).toBe('OK');
    expect((await redisCli(['GET', 'sniffed'], a(), 'kv', KV_PORT)).stdout.trim()).toBe('as tcp');
    expect(await statSum(a(), clusterStat(KV_OUT, 'upstream_cx_total'))).toBeGreaterThanOrEqual(before.out + 2);
    expect(await statSum(world.host('b').ns, clusterStat(`in#${KV_PORT}#kv`, 'upstream_cx_total'))).toBeGreaterThanOrEqual(before.in + 2);
    // A's /clusters names the sniffed route (VIP:port:auto)
    const { stdout } = await admin(a(), 15000, '/clusters');
    expect(stdout).toMatch(new RegExp(`${KV_OUT}::tcp_route::240\\.240\\.\\d+\\.\\d+:${KV_PORT}:auto`));
  });

  it('a server-first service: the greeter speaks first to a client that sends nothing, through both proxies', async () => {
    const res = await nsRun(a(), process.execPath, [TCP_CLIENT, 'greeter', String(GREETER_PORT), '', '5000'], { as: APP_USER, allowFail: true });
    expect(res.stdout).toBe('220 greeter-on-b ready\n');
    const echoed = await nsRun(a(), process.execPath, [TCP_CLIENT, 'greeter', String(GREETER_PORT), 'hello greeter\n', '5000'], { as: APP_USER, allowFail: true });
    expect(echoed.stdout).toContain('220 greeter-on-b ready\n');
    expect(await statSum(a(), clusterStat(GREETER_OUT, 'upstream_cx_total'))).toBeGreaterThanOrEqual(2);
  });

  it('redis on B killed mid-connection: its connections are closed (not left hanging), those on B2 go on answering, and new calls reach B2', async () => {
    const script = join(world.dir, 'long-connections.mjs');
    writeFileSync(script, LONG_CONNECTIONS, { mode: 0o644 });
    const client = world.procs.start('long-connections', nsArgv(a(), process.execPath, [script, 'cache', String(REDIS_PORT), '6', '8000'], APP_USER));
    await waitFor('the long connections', async () => client.lines.includes('started'), { timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 2000));
    process.kill(-redis.b!.pid, 'SIGKILL');
    await client.exited;
    const result = JSON.parse(client.lines.find((l) => l.startsWith('{')) ?? '{}');
    // round robin: three connections on each endpoint
    expect(result, client.lines.join('\n')).toMatchObject({ alive: 3, closed: 3 });
    expect(result.maxGapMs).toBeLessThan(2000);
    // new connections: after B's health check fails (a TCP connect, about 2 s), every call reaches B2
    await waitFor('B out of A\'s healthy endpoints (B\'s agent TCP-checks redis, the registry says unhealthy)', async () => {
      const { stdout } = await admin(a(), 15000, '/clusters');
      const flags = stdout.split('\n').find((l) => l.startsWith(`${CACHE_OUT}::${world.host('b').address}:${REDIS_PORT}::health_flags::`));
      return !flags || !flags.endsWith('::healthy');
    }, { timeoutMs: 30_000 });
    for (let i = 0; i < 20; i++) expect((await redisCli(['PING'])).stdout.trim()).toBe('PONG');
  }, 60_000);
});
