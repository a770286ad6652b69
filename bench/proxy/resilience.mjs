#!/usr/bin/env node
// Resilience cost: mesh-proxy with resilience enabled (route retry policy with per-try timeout,
// active health checks, outlier detection, circuit breakers) against the same data plane without
// them (circuit breakers stay: the schema always gives a cluster its default thresholds), in front of
// the same nginx `return 200` upstream, in the same run. wrk -t1 -c50, the proxies pinned to core 0,
// runs alternated (plain, resilient, plain, resilient) so machine load hits both alike.
// Prints req/s, p99 and CPU per request for each, and the ratios. Target: resilience costs <= 10%.
// Measures only; never fails on a speed. Bounded: BENCH_SECONDS (default 10) per run, ROUNDS (default 2).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { benchRun, canPin, freePort, have, parseWrk, pin, root, seconds, waitPort } from './common.mjs';

const rounds = Number(process.env.ROUNDS ?? 2);
const { dir, start, cleanup } = benchRun('bench-resilience-');

function cpuSeconds(pid) {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch { return NaN; }
}

function wrk(port, pid) {
  const before = cpuSeconds(pid);
  const [cmd, args] = pin(1, 'wrk', ['-t1', '-c50', `-d${seconds}s`, '--latency', '-H', 'Host: bench', `http://127.0.0.1:${port}/`]);
  const out = spawnSync(cmd, args, { encoding: 'utf8', timeout: (seconds + 30) * 1000 }).stdout ?? '';
  const cpu = cpuSeconds(pid) - before;
  const { rps, p99, requests, non2xx } = parseWrk(out);
  return { rps, p99, cpuUsPerRq: requests > 0 ? (cpu * 1e6) / requests : NaN, non2xx };
}

function proxyConfig(name, port, adminPort, upstreamPort, resilient) {
  const cluster = { name: 'out#80#bench', endpoints: [{ address: '127.0.0.1', port: upstreamPort }] };
  const route = { cluster: 'out#80#bench' };
  if (resilient) {
    Object.assign(cluster, {
      circuitBreakers: { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3 },
      healthCheck: { path: '/', intervalMs: 1000, timeoutMs: 1000, healthyThreshold: 1, unhealthyThreshold: 3 },
      outlierDetection: { consecutive5xx: 5, consecutiveGatewayFailure: 5, intervalMs: 10000, baseEjectionTimeMs: 30000, maxEjectionPercent: 10 },
    });
    Object.assign(route, { timeoutMs: 15000, retryPolicy: { retryOn: '5xx,connect-failure,reset', numRetries: 2, perTryTimeoutMs: 5000 } });
  }
  const file = path.join(dir, `${name}.json`);
  fs.writeFileSync(file, JSON.stringify({
    admin: { address: '127.0.0.1', port: adminPort },
    listener: { name: 'virtual', address: '127.0.0.1', port },
    clusters: [cluster],
    routes: { virtualHosts: [{ name: 'bench', domains: ['bench'], routes: [{ match: { prefix: '/' }, route }] }] },
  }));
  return file;
}

async function main() {
  for (const cmd of ['wrk', 'nginx']) if (!have(cmd)) { console.log(`bench/proxy/resilience: ${cmd} not installed; skipped (scripts/install-test-deps.sh installs it)`); return; }
  if (!fs.existsSync(path.join(root, 'packages/proxy/dist/cli.js'))) { console.log('bench/proxy/resilience: build the proxy first (pnpm --filter @mesh-agent/proxy build)'); process.exitCode = 1; return; }
  const upstreamPort = await freePort();
  const conf = path.join(dir, 'nginx.conf');
  fs.writeFileSync(conf, `worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  keepalive_requests 1000000; server { listen 127.0.0.1:${upstreamPort}; location / { return 200 "ok\\n"; } } }
`);
  const [ucmd, uargs] = pin(1, 'nginx', ['-c', conf, '-g', 'daemon off;']);
  start(ucmd, uargs, 'upstream nginx');

  const variants = [];
  for (const [name, resilient] of [['plain', false], ['resilient', true]]) {
    const port = await freePort();
    const file = proxyConfig(name, port, await freePort(), upstreamPort, resilient);
    const [cmd, args] = pin(0, process.execPath, [path.join(root, 'packages/proxy/bin/mesh-proxy.js'), '--config', file]);
    variants.push({ name, port, child: start(cmd, args, `mesh-proxy ${name}`), runs: [] });
  }
  await Promise.all([waitPort(upstreamPort), ...variants.map((v) => waitPort(v.port))]);
  for (const v of variants) spawnSync('wrk', ['-t1', '-c10', '-d2s', '-H', 'Host: bench', `http://127.0.0.1:${v.port}/`], { timeout: 20000 });

  console.log(`wrk -t1 -c50 -d${seconds}s x ${rounds} rounds, alternated; proxies pinned to core 0: ${canPin ? 'yes' : 'no'}; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  for (let r = 0; r < rounds; r++) for (const v of variants) v.runs.push(wrk(v.port, v.child.pid));
  const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
  const summary = {};
  for (const v of variants) {
    const s = { rps: median(v.runs.map((x) => x.rps)), p99: median(v.runs.map((x) => x.p99)), cpu: median(v.runs.map((x) => x.cpuUsPerRq)), non2xx: v.runs.reduce((a, x) => a + x.non2xx, 0) };
    summary[v.name] = s;
    console.log(`${v.name.padEnd(10)} ${s.rps.toFixed(0).padStart(8)} req/s (runs: ${v.runs.map((x) => x.rps.toFixed(0)).join(', ')})   p99 ${s.p99.toFixed(2)} ms   CPU ${s.cpu.toFixed(1)} us/req   non-2xx ${s.non2xx}`);
  }
  const { plain, resilient } = summary;
  console.log(`ratio resilient / plain: ${(resilient.rps / plain.rps).toFixed(3)} by req/s, ${(plain.cpu / resilient.cpu).toFixed(3)} by CPU per request   (target: >= 0.90, resilience costs <= 10%; on a loaded machine CPU per request is the steadier figure)`);
}

const guard = setTimeout(() => { console.error('bench/proxy/resilience: time bound reached'); cleanup(); process.exit(1); }, (seconds * (rounds * 2 + 1) + 120) * 1000);
main().catch((err) => { console.error(err); process.exitCode = 1; }).finally(() => { clearTimeout(guard); cleanup(); });
