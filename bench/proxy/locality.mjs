#!/usr/bin/env node
// Locality and access log formats (issue 16): the same mesh-proxy cluster (three endpoints: nginx on
// 127.0.0.1, .2 and .3), in the same run, in four modes:
//   plain       no node locality, access log file in Envoy's default format (the reference);
//   locality    node.locality set, the endpoints in two zones (P0 has two, P1 one): every pick goes
//               through the priority levels;
//   textFormat  as plain, the access log an Envoy format string (17 operators);
//   jsonFormat  as plain, the access log Envoy json_format (the same operators as JSON fields).
// wrk -t1 -c50 against each in turn (rounds alternate), proxies pinned to core 0, wrk and nginx on
// core 1. Prints req/s and CPU microseconds per request with their ratios to `plain`. Bounded:
// BENCH_SECONDS (default 10) per run, ROUNDS (default 2). Measures only; never fails on a speed.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { benchRun, canPin, cpuSeconds, freePort, have, parseWrk, pin, root, seconds, waitPort, writeNginxConf } from './common.mjs';

const rounds = Number(process.env.ROUNDS ?? 2);
const { dir, start, cleanup } = benchRun('bench-locality-');

const TEXT = '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
  + '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% %ROUTE_NAME%';
const JSON_FORMAT = {
  start_time: '%START_TIME%', method: '%REQ(:METHOD)%', path: '%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%', protocol: '%PROTOCOL%', response_code: '%RESPONSE_CODE%',
  response_flags: '%RESPONSE_FLAGS%', bytes_received: '%BYTES_RECEIVED%', bytes_sent: '%BYTES_SENT%', duration: '%DURATION%',
  upstream_service_time: '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%', x_forwarded_for: '%REQ(X-FORWARDED-FOR)%', user_agent: '%REQ(USER-AGENT)%',
  request_id: '%REQ(X-REQUEST-ID)%', authority: '%REQ(:AUTHORITY)%', upstream_host: '%UPSTREAM_HOST%', upstream_cluster: '%UPSTREAM_CLUSTER%', route_name: '%ROUTE_NAME%',
};

function measured(port, pid) {
  const before = cpuSeconds(pid);
  const [cmd, args] = pin(1, 'wrk', ['-t1', '-c50', `-d${seconds}s`, '--latency', '-H', 'Host: bench', `http://127.0.0.1:${port}/`]);
  const out = spawnSync(cmd, args, { encoding: 'utf8', timeout: (seconds + 30) * 1000 }).stdout ?? '';
  const r = parseWrk(out);
  const cpu = cpuSeconds(pid) - before;
  return { ...r, cpuUsPerRq: r.requests > 0 ? (cpu * 1e6) / r.requests : NaN };
}

async function main() {
  for (const cmd of ['wrk', 'nginx']) if (!have(cmd)) { console.log(`bench/proxy/locality: ${cmd} not installed; skipped (scripts/install-test-deps.sh installs it)`); return; }
  const upstreamPort = await freePort();
  const hosts = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];
  const [ucmd, uargs] = pin(1, 'nginx', ['-c', writeNginxConf(dir, 'upstream', `server { ${hosts.map((h) => `listen ${h}:${upstreamPort};`).join(' ')} location / { return 200 "ok\\n"; } }`), '-g', 'daemon off;']);
  start(ucmd, uargs, 'upstream nginx');
  const zones = [{ region: 'eu', zone: 'eu-a' }, { region: 'eu', zone: 'eu-a' }, { region: 'eu', zone: 'eu-b' }];
  const modes = {
    plain: {},
    locality: { node: { locality: { region: 'eu', zone: 'eu-a' } }, withZones: true },
    textFormat: { accessLog: { textFormat: TEXT } },
    jsonFormat: { accessLog: { jsonFormat: JSON_FORMAT } },
  };
  const proxies = {};
  for (const [mode, m] of Object.entries(modes)) {
    const port = await freePort();
    const adminPort = await freePort();
    const cfg = path.join(dir, `mesh-proxy-${mode}.json`);
    fs.writeFileSync(cfg, JSON.stringify({
      admin: { address: '127.0.0.1', port: adminPort },
      listener: { name: 'virtual', address: '127.0.0.1', port },
      node: { id: `bench-${mode}`, cluster: 'bench', ...(m.node ?? {}) },
      accessLog: { path: path.join(dir, `access-${mode}.log`), ...(m.accessLog ?? {}) },
      clusters: [{ name: 'out#80#bench', endpoints: hosts.map((address, i) => ({ address, port: upstreamPort, ...(m.withZones ? { locality: zones[i] } : {}) })) }],
      routes: { virtualHosts: [{ name: 'bench', domains: ['bench', '*'], routes: [{ name: 'bench-all', match: { prefix: '/' }, route: { cluster: 'out#80#bench' } }] }] },
    }));
    const [mcmd, margs] = pin(0, process.execPath, [path.join(root, 'packages/proxy/bin/mesh-proxy.js'), '--config', cfg]);
    proxies[mode] = { port, child: start(mcmd, margs, `mesh-proxy ${mode}`), runs: [], log: path.join(dir, `access-${mode}.log`) };
  }
  await Promise.all([waitPort(upstreamPort), ...Object.values(proxies).map((p) => waitPort(p.port))]);
  console.log(`wrk -t1 -c50 -d${seconds}s x ${rounds} rounds per mode, tiny responses, keep-alive; proxies pinned to core 0: ${canPin ? 'yes' : 'no (taskset unavailable)'}; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  for (const p of Object.values(proxies)) spawnSync('wrk', ['-t1', '-c10', '-d2s', '-H', 'Host: bench', `http://127.0.0.1:${p.port}/`], { timeout: 20000 });
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? Object.keys(proxies) : Object.keys(proxies).reverse();
    for (const mode of order) proxies[mode].runs.push(measured(proxies[mode].port, proxies[mode].child.pid));
  }
  const best = (runs, key, pick) => pick(...runs.map((x) => x[key]));
  const base = proxies.plain;
  const baseRps = best(base.runs, 'rps', Math.max);
  const baseCpu = best(base.runs, 'cpuUsPerRq', Math.min);
  const rows = [];
  for (const [mode, p] of Object.entries(proxies)) {
    const rps = best(p.runs, 'rps', Math.max);
    const cpu = best(p.runs, 'cpuUsPerRq', Math.min);
    const errors = p.runs.reduce((a, x) => a + x.non2xx, 0);
    const sample = fs.existsSync(p.log) ? fs.readFileSync(p.log, 'utf8').split('\n', 1)[0].slice(0, 100) : '';
    rows.push({ mode, rps: Math.round(rps), cpuUsPerRq: Number(cpu.toFixed(1)), rpsRatio: Number((rps / baseRps).toFixed(3)), cpuRatio: Number((cpu / baseCpu).toFixed(3)), errors, sample });
  }
  console.log('mode         req/s   CPU us/rq  req/s vs plain  CPU vs plain  non-2xx  first log line');
  for (const x of rows) console.log(`${x.mode.padEnd(11)} ${String(x.rps).padStart(7)} ${String(x.cpuUsPerRq).padStart(10)} ${String(x.rpsRatio).padStart(15)} ${String(x.cpuRatio).padStart(13)} ${String(x.errors).padStart(8)}  ${x.sample}`);
  console.log(JSON.stringify({ bench: 'proxy-locality', seconds, rounds, rows }));
}

main().catch((err) => { console.error(err); process.exitCode = 1; }).finally(cleanup);
