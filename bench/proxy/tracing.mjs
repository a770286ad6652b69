#!/usr/bin/env node
// Tracing cost (issue 16): the same mesh-proxy config, in the same run, in three modes:
//   none     no `tracing` section: propagation only (W3C + B3 headers made per request), no SDK loaded;
//   export   tracing.otlp to a local OTLP/HTTP sink, every trace sampled (a span per request exported);
//   unsampled tracing.otlp with samplingPercent 0: the SDK loaded, no span made.
// wrk -t1 -c50 against each in turn (rounds alternate), proxies pinned to core 0, wrk, the upstream
// (nginx `return 200`) and the sink on core 1. Prints req/s, CPU microseconds per request and the
// ratio to `none`, the proxies' RSS, and the export stats; first, propagation alone per request beside
// randomUUID() (what the x-request-id already costs), in this process. Bounded: BENCH_SECONDS (default 10) per run,
// ROUNDS (default 2). Measures only; never fails on a speed.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { benchRun, canPin, cpuSeconds, freePort, have, parseWrk, pin, root, seconds, waitPort, writeNginxConf } from './common.mjs';

const rounds = Number(process.env.ROUNDS ?? 2);
const { dir, start, cleanup } = benchRun('bench-tracing-');

function measured(port, pid) {
  const before = cpuSeconds(pid);
  const [cmd, args] = pin(1, 'wrk', ['-t1', '-c50', `-d${seconds}s`, '--latency', '-H', 'Host: bench', `http://127.0.0.1:${port}/`]);
  const out = spawnSync(cmd, args, { encoding: 'utf8', timeout: (seconds + 30) * 1000 }).stdout ?? '';
  const r = parseWrk(out);
  const cpu = cpuSeconds(pid) - before;
  return { ...r, cpuUsPerRq: r.requests > 0 ? (cpu * 1e6) / r.requests : NaN };
}

function rssMiB(pid) {
  try { return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024; } catch { return NaN; }
}

async function stats(adminPort) {
  try {
    const text = await (await fetch(`http://127.0.0.1:${adminPort}/stats?filter=tracing`)).text();
    return Object.fromEntries(text.trim().split('\n').filter(Boolean).map((l) => l.split(': ')));
  } catch { return {}; }
}

/**
 * Propagation alone, in this process, against the built package: extract + the upstream header lines per
 * request, beside randomUUID() (the x-request-id every request without one already pays), best of 3.
 */
async function propagationCost() {
  const { HopTrace } = await import(path.join(root, 'packages/proxy/dist/index.js'));
  const { randomUUID } = await import('node:crypto');
  const lower = ['host', 'user-agent', 'accept', 'content-type', 'x-forwarded-proto', 'x-custom-a', 'x-custom-b'];
  const values = ['bench', 'wrk', '*/*', 'application/json', 'http', '1', '2'];
  const withTp = { lower: [...lower, 'traceparent', 'tracestate'], values: [...values, '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', 'a=b'] };
  const t = new HopTrace();
  const time = (fn, n = 1_000_000) => {
    for (let i = 0; i < 100_000; i++) fn();
    const s = process.hrtime.bigint();
    let sink = 0;
    for (let i = 0; i < n; i++) sink += fn().length;
    return sink > 0 ? Number(process.hrtime.bigint() - s) / n : NaN;
  };
  const best = { uuid: Infinity, fresh: Infinity, continued: Infinity };
  for (let r = 0; r < 3; r++) {
    best.uuid = Math.min(best.uuid, time(() => randomUUID()));
    best.fresh = Math.min(best.fresh, time(() => { t.extract(lower, values, 100); return t.h1Headers(); }));
    best.continued = Math.min(best.continued, time(() => { t.extract(withTp.lower, withTp.values, 100); return t.h1Headers(); }));
  }
  console.log(`propagation per request (ns, best of 3): randomUUID ${best.uuid.toFixed(0)}; new trace ${best.fresh.toFixed(0)} (${(best.fresh / best.uuid).toFixed(2)}x); continuing a traceparent ${best.continued.toFixed(0)} (${(best.continued / best.uuid).toFixed(2)}x)`);
  return best;
}

async function main() {
  const propagation = await propagationCost();
  for (const cmd of ['wrk', 'nginx']) if (!have(cmd)) { console.log(`bench/proxy/tracing: ${cmd} not installed; skipped (scripts/install-test-deps.sh installs it)`); return; }
  const upstreamPort = await freePort();
  const sinkPort = await freePort();
  const [ucmd, uargs] = pin(1, 'nginx', ['-c', writeNginxConf(dir, 'upstream', `server { listen 127.0.0.1:${upstreamPort}; location / { return 200 "ok\\n"; } }`), '-g', 'daemon off;']);
  start(ucmd, uargs, 'upstream nginx');
  // An OTLP/HTTP sink: reads each export and answers 200 with an empty ExportTraceServiceResponse (zero bytes is a valid one).
  const sink = `const http=require('node:http');let n=0,bytes=0;http.createServer((q,s)=>{q.on('data',(c)=>{bytes+=c.length});q.on('end',()=>{n++;s.writeHead(200,{'content-type':'application/x-protobuf','content-length':0});s.end();});}).listen(${sinkPort},'127.0.0.1');`;
  const [scmd, sargs] = pin(1, process.execPath, ['-e', sink]);
  start(scmd, sargs, 'otlp sink');

  const modes = {
    none: undefined,
    export: { otlp: { endpoint: `http://127.0.0.1:${sinkPort}/v1/traces` } },
    unsampled: { otlp: { endpoint: `http://127.0.0.1:${sinkPort}/v1/traces` }, samplingPercent: 0 },
  };
  const proxies = {};
  for (const [mode, tracing] of Object.entries(modes)) {
    const port = await freePort();
    const adminPort = await freePort();
    const cfg = path.join(dir, `mesh-proxy-${mode}.json`);
    fs.writeFileSync(cfg, JSON.stringify({
      admin: { address: '127.0.0.1', port: adminPort },
      listener: { name: 'virtual', address: '127.0.0.1', port },
      node: { id: `bench-${mode}`, cluster: 'bench' },
      clusters: [{ name: 'out#80#bench', endpoints: [{ address: '127.0.0.1', port: upstreamPort }] }],
      routes: { virtualHosts: [{ name: 'bench', domains: ['bench', '*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#80#bench' } }] }] },
      ...(tracing ? { tracing } : {}),
    }));
    const [mcmd, margs] = pin(0, process.execPath, [path.join(root, 'packages/proxy/bin/mesh-proxy.js'), '--config', cfg]);
    proxies[mode] = { port, adminPort, child: start(mcmd, margs, `mesh-proxy ${mode}`), runs: [] };
  }
  await Promise.all([waitPort(upstreamPort), waitPort(sinkPort), ...Object.values(proxies).map((p) => waitPort(p.port))]);
  console.log(`wrk -t1 -c50 -d${seconds}s x ${rounds} rounds per mode, tiny responses, keep-alive; proxies pinned to core 0: ${canPin ? 'yes' : 'no (taskset unavailable)'}; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  for (const p of Object.values(proxies)) spawnSync('wrk', ['-t1', '-c10', '-d2s', '-H', 'Host: bench', `http://127.0.0.1:${p.port}/`], { timeout: 20000 });
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? Object.keys(proxies) : Object.keys(proxies).reverse();
    for (const mode of order) proxies[mode].runs.push(measured(proxies[mode].port, proxies[mode].child.pid));
  }
  await new Promise((res) => setTimeout(res, 1500)); // the last batch leaves
  const best = (runs, key, pick) => pick(...runs.map((x) => x[key]));
  const base = proxies.none;
  const baseRps = best(base.runs, 'rps', Math.max);
  const baseCpu = best(base.runs, 'cpuUsPerRq', Math.min);
  const rows = [];
  for (const [mode, p] of Object.entries(proxies)) {
    const rps = best(p.runs, 'rps', Math.max);
    const cpu = best(p.runs, 'cpuUsPerRq', Math.min);
    const errors = p.runs.reduce((a, x) => a + x.non2xx, 0);
    rows.push({ mode, rps: Math.round(rps), cpuUsPerRq: Number(cpu.toFixed(1)), rpsRatio: Number((rps / baseRps).toFixed(3)), cpuRatio: Number((cpu / baseCpu).toFixed(3)), errors, rssMiB: Number(rssMiB(p.child.pid).toFixed(1)), stats: await stats(p.adminPort) });
  }
  console.log('mode       req/s   CPU us/rq  req/s vs none  CPU vs none  non-2xx  RSS MiB  tracing stats');
  for (const x of rows) console.log(`${x.mode.padEnd(9)} ${String(x.rps).padStart(7)} ${String(x.cpuUsPerRq).padStart(10)} ${String(x.rpsRatio).padStart(14)} ${String(x.cpuRatio).padStart(12)} ${String(x.errors).padStart(8)} ${String(x.rssMiB).padStart(8)}  ${Object.entries(x.stats).map(([k, v]) => `${k.replace('tracing.opentelemetry.', '')}=${v}`).join(' ') || '-'}`);
  console.log(JSON.stringify({ bench: 'proxy-tracing', seconds, rounds, propagationNs: propagation, rows }));
}

main().catch((err) => { console.error(err); process.exitCode = 1; }).finally(cleanup);
