// bench/tcp (issue 15): mesh-proxy's TCP proxy against HAProxy in `mode tcp`, in the same run, on the
// same machine. Two hosts as network namespaces (bench/tls/netns.mjs); host B captures its service
// ports with a PREROUTING REDIRECT to the proxy listener, as the agent does, so mesh-proxy reads
// SO_ORIGINAL_DST and takes its inbound `protocol: tcp` path. HAProxy listens on other ports of B in
// front of the same upstreams. Proxies on core 0, everything else on core 1. Two measures:
//   1. redis-benchmark (host A, -c 50, ping/set/get) -> proxy -> redis-server: requests per CPU-second
//      of the proxy (its user + system time over the requests of the run).
//   2. bulk: a sink on A reads BULK_MB MiB that a source on B writes through the proxy (back-pressure
//      on both sides): MiB per CPU-second of the proxy.
// A path that does not answer first (PONG, the whole byte count) is reported as not measured.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { benchRun, cpuSeconds, have, pin, root } from '../proxy/common.mjs';
import { captureInbound, createNsPair, netnsUnavailable } from '../tls/netns.mjs';

const SUBNET = 141;
const requests = Number(process.env.BENCH_REQUESTS ?? 200000);
const bulkMb = Number(process.env.BULK_MB ?? 2048);
const rounds = Number(process.env.ROUNDS ?? 2);
const P = { listener: 15001, admin: 15000, redisSvc: 6379, redis: 6380, haRedis: 6390, bulkSvc: 9100, bulkSrc: 9101, haBulk: 9190 };

const { dir, start, cleanup: stopChildren } = benchRun('bench-tcp-');
let ns;
function cleanup() {
  stopChildren();
  ns?.remove();
}
const inNsPinned = (name, core, cmd, args) => {
  const [c, a] = pin(core, cmd, args);
  return ['ip', ['netns', 'exec', name, c, ...a]];
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// the bulk source (B) and sink (A): bounded in bytes, and each waits for 'drain' (memory stays flat)
const SOURCE = `
import net from 'node:net';
const [host, port, mb] = process.argv.slice(2);
const chunk = Buffer.alloc(64 * 1024, 120);
net.createServer((s) => {
  s.on('error', () => s.destroy());
  let left = Number(mb) * 16;
  const pump = () => { while (left > 0) { left--; if (!s.write(chunk)) { s.once('drain', pump); return; } } s.end(); };
  pump();
}).listen(Number(port), host, () => console.log('listening'));
`;
const SINK = `
import net from 'node:net';
const [host, port] = process.argv.slice(2);
const t0 = process.hrtime.bigint();
let bytes = 0;
const s = net.connect({ host, port: Number(port) });
s.on('data', (d) => { bytes += d.length; });
s.on('end', () => { console.log(JSON.stringify({ bytes, seconds: Number(process.hrtime.bigint() - t0) / 1e9 })); process.exit(0); });
s.on('error', (e) => { console.log(JSON.stringify({ bytes, error: e.message })); process.exit(1); });
setTimeout(() => { console.log(JSON.stringify({ bytes, error: 'timeout after 120 s' })); process.exit(1); }, 120000).unref();
`;

function runIn(name, core, cmd, args, timeoutMs = 300000) {
  const [c, a] = inNsPinned(name, core, cmd, args);
  const res = spawnSync(c, a, { encoding: 'utf8', timeout: timeoutMs });
  return { code: res.status, out: `${res.stdout ?? ''}${res.stderr ?? ''}` };
}

/** redis-benchmark -q output: total requests per second over the tests, and whether any line says error. */
function redisBench(a, host, port) {
  const res = runIn(a, 1, 'redis-benchmark', ['-h', host, '-p', String(port), '-c', '50', '-n', String(requests), '-q', '-t', 'ping,set,get']);
  const lines = res.out.split(/[\r\n]+/).filter((l) => /requests per second/.test(l));
  const errors = res.code !== 0 || /error/i.test(res.out) || lines.length !== 4;
  return { errors, total: requests * lines.length, out: res.out };
}

async function measure(label, pid, fn) {
  const before = cpuSeconds(pid);
  const result = await fn();
  return { label, cpu: cpuSeconds(pid) - before, ...result };
}

async function main() {
  const why = netnsUnavailable();
  if (why) { console.log(`bench/tcp: ${why}; skipped`); return; }
  for (const cmd of ['redis-server', 'redis-benchmark', 'redis-cli', 'haproxy']) if (!have(cmd)) { console.log(`bench/tcp: ${cmd} not installed; skipped (scripts/install-test-deps.sh installs it)`); return; }
  if (!fs.existsSync(path.join(root, 'packages/proxy/dist/cli.js'))) { console.log('bench/tcp: build the proxy first (pnpm --filter @mesh-agent/proxy build)'); process.exitCode = 1; return; }

  ns = createNsPair('tcp', SUBNET);
  const { a, b, ipB } = ns;
  captureInbound(b, ipB, P.redisSvc, P.listener);
  captureInbound(b, ipB, P.bulkSvc, P.listener);

  start(...inNsPinned(b, 1, 'redis-server', ['--port', String(P.redis), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no']), 'redis-server');
  const source = path.join(dir, 'source.mjs');
  const sink = path.join(dir, 'sink.mjs');
  fs.writeFileSync(source, SOURCE);
  fs.writeFileSync(sink, SINK);
  start(...inNsPinned(b, 1, process.execPath, [source, '127.0.0.1', String(P.bulkSrc), String(bulkMb)]), 'bulk source');

  const bootstrap = {
    admin: { address: '127.0.0.1', port: P.admin },
    listener: { name: 'virtual', address: '0.0.0.0', port: P.listener },
    localAddresses: [ipB],
    inbound: [{ port: P.redisSvc, cluster: `in#${P.redisSvc}#redis`, protocol: 'tcp' }, { port: P.bulkSvc, cluster: `in#${P.bulkSvc}#bulk`, protocol: 'tcp' }],
    clusters: [
      { name: `in#${P.redisSvc}#redis`, endpoints: [{ address: '127.0.0.1', port: P.redis }] },
      { name: `in#${P.bulkSvc}#bulk`, endpoints: [{ address: '127.0.0.1', port: P.bulkSrc }] },
    ],
  };
  const bootFile = path.join(dir, 'mesh.json');
  fs.writeFileSync(bootFile, JSON.stringify(bootstrap));
  const mesh = start(...inNsPinned(b, 0, process.execPath, [path.join(root, 'packages/proxy/bin/mesh-proxy.js'), '--config', bootFile]), 'mesh-proxy');

  const haConf = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(haConf, [
    'global', '  nbthread 1', '  maxconn 4096',
    'defaults', '  mode tcp', '  timeout connect 5s', '  timeout client 1h', '  timeout server 1h',
    `frontend redis`, `  bind ${ipB}:${P.haRedis}`, '  default_backend redis',
    `backend redis`, `  server r1 127.0.0.1:${P.redis}`,
    `frontend bulk`, `  bind ${ipB}:${P.haBulk}`, '  default_backend bulk',
    `backend bulk`, `  server s1 127.0.0.1:${P.bulkSrc}`, '',
  ].join('\n'));
  const ha = start(...inNsPinned(b, 0, 'haproxy', ['-db', '-f', haConf]), 'haproxy');

  const pong = (port) => runIn(a, 1, 'redis-cli', ['-h', ipB, '-p', String(port), 'PING'], 5000).out.trim() === 'PONG';
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline && !(pong(P.redisSvc) && pong(P.haRedis))) await sleep(300);
  const paths = [
    { name: 'mesh-proxy', pid: mesh.pid, redis: P.redisSvc, bulk: P.bulkSvc, ok: pong(P.redisSvc) },
    { name: 'haproxy', pid: ha.pid, redis: P.haRedis, bulk: P.haBulk, ok: pong(P.haRedis) },
  ];
  const results = {};
  for (const p of paths) results[p.name] = { rq: 0, rqCpu: 0, bytes: 0, bulkCpu: 0, errors: p.ok ? [] : ['no PONG through it first'] };
  for (let round = 0; round < rounds; round++) {
    for (const p of paths.filter((x) => x.ok)) {
      const r = results[p.name];
      const rb = await measure('redis', p.pid, async () => redisBench(a, ipB, p.redis));
      if (rb.errors) r.errors.push(`redis-benchmark: ${rb.out.slice(-300)}`);
      else { r.rq += rb.total; r.rqCpu += rb.cpu; }
      const bulk = await measure('bulk', p.pid, async () => JSON.parse(runIn(a, 1, process.execPath, [sink, ipB, String(p.bulk)], 150000).out.trim().split('\n').pop() || '{}'));
      if (bulk.error || bulk.bytes !== bulkMb * 1024 * 1024) r.errors.push(`bulk: ${bulk.bytes} bytes${bulk.error ? `, ${bulk.error}` : ''}`);
      else { r.bytes += bulk.bytes; r.bulkCpu += bulk.cpu; }
    }
  }
  // the mesh path really was the TCP proxy: its tcp_proxy stats counted the sessions
  const stats = spawnSync('ip', ['netns', 'exec', b, 'curl', '-s', `127.0.0.1:${P.admin}/stats`], { encoding: 'utf8' }).stdout ?? '';
  const meshSessions = Number(new RegExp(`^tcp\\.in#${P.redisSvc}#redis\\.downstream_cx_total: (\\d+)`, 'm').exec(stats)?.[1] ?? 0);
  if (meshSessions === 0) results['mesh-proxy'].errors.push('tcp.in#6379#redis.downstream_cx_total is 0: not the TCP proxy path');

  const row = (name) => {
    const r = results[name];
    return { name, rqPerCpuSecond: r.rqCpu > 0 ? r.rq / r.rqCpu : NaN, mibPerCpuSecond: r.bulkCpu > 0 ? r.bytes / 1048576 / r.bulkCpu : NaN, errors: r.errors };
  };
  const m = row('mesh-proxy');
  const h = row('haproxy');
  console.log(`bench/tcp: ${rounds} round(s), redis-benchmark -c 50 -n ${requests} -t ping,set,get, bulk ${bulkMb} MiB; proxies on core 0`);
  console.log('proxy        requests/CPU-s   MiB/CPU-s   errors');
  for (const r of [m, h]) console.log(`${r.name.padEnd(12)} ${r.rqPerCpuSecond.toFixed(0).padStart(14)} ${r.mibPerCpuSecond.toFixed(0).padStart(11)}   ${r.errors.length ? r.errors.join('; ') : 'none'}`);
  const ratios = { requests: m.rqPerCpuSecond / h.rqPerCpuSecond, bulk: m.mibPerCpuSecond / h.mibPerCpuSecond };
  console.log(`mesh-proxy / haproxy: requests per CPU-second ${ratios.requests.toFixed(2)}, bulk per CPU-second ${ratios.bulk.toFixed(2)} (target: at least 0.5)`);
  console.log(JSON.stringify({ bench: 'tcp', rounds, requests, bulkMb, mesh: m, haproxy: h, ratios, meshSessions }));
}

process.on('SIGINT', () => { cleanup(); process.exit(130); });
main().catch((err) => { console.error(err); process.exitCode = 1; }).finally(cleanup);
