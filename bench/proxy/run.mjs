#!/usr/bin/env node
// Proxy benchmark: wrk -t1 -c50 against (1) mesh-proxy and (2) nginx as a reverse proxy, both in
// front of the same tiny upstream (nginx `return 200`), in the same run. Each proxy is pinned to
// core 0 with taskset where it works; wrk and the upstream share the other core. Prints req/s,
// p99, the ratio to nginx and mesh-proxy's peak RSS. Bounded: BENCH_SECONDS (default 10) per run.
// Measures only; never fails on a speed.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { benchRun, canPin, cpuSeconds, freePort, have, parseWrk, pin, root, seconds, waitPort, writeNginxConf } from './common.mjs';

const connections = Number(process.env.BENCH_CONNECTIONS ?? 50);
const { dir, start, cleanup } = benchRun('bench-proxy-');

const nginxConf = (name, port, body) => writeNginxConf(dir, name, body.replace('PORT', String(port)));

function wrk(port, host) {
  const [cmd, args] = pin(1, 'wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', '-H', `Host: ${host}`, `http://127.0.0.1:${port}/`]);
  const res = spawnSync(cmd, args, { encoding: 'utf8', timeout: (seconds + 30) * 1000 });
  const out = res.stdout ?? '';
  const { rps, p99, requests, non2xx } = parseWrk(out);
  const sockErr = /Socket errors:[^\n]*/.exec(out)?.[0] ?? '';
  return { rps, p99, errors: non2xx, sockErr, requests };
}

/** Runs wrk and measures the proxy's CPU time per request: req/s per fully available core = 1 / that. */
function measured(port, host, pid) {
  const before = cpuSeconds(pid);
  const r = wrk(port, host);
  const cpu = cpuSeconds(pid) - before;
  r.cpuUsPerRq = r.requests > 0 ? (cpu * 1e6) / r.requests : NaN;
  r.perCore = 1e6 / r.cpuUsPerRq;
  return r;
}

function peakRssMiB(pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/VmHWM:\s+(\d+)/.exec(status)[1]) / 1024;
  } catch { return NaN; }
}

async function main() {
  for (const cmd of ['wrk', 'nginx']) if (!have(cmd)) { console.log(`bench/proxy: ${cmd} not installed; skipped (scripts/install-test-deps.sh installs it)`); return; }
  const upstreamPort = await freePort();
  const ngProxyPort = await freePort();
  const meshPort = await freePort();
  const hp3Port = await freePort();
  const adminPort = await freePort();

  const [ucmd, uargs] = pin(1, 'nginx', ['-c', nginxConf('upstream', upstreamPort, `server { listen 127.0.0.1:PORT; location / { return 200 "ok\\n"; } }`), '-g', 'daemon off;']);
  start(ucmd, uargs, 'upstream nginx');
  const [ncmd, nargs] = pin(0, 'nginx', ['-c', nginxConf('proxy', ngProxyPort, `upstream up { server 127.0.0.1:${upstreamPort}; keepalive 128; }
  server { listen 127.0.0.1:PORT; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } }`), '-g', 'daemon off;']);
  const ngx = start(ncmd, nargs, 'nginx reverse proxy');

  const cfg = path.join(dir, 'mesh-proxy.json');
  fs.writeFileSync(cfg, JSON.stringify({
    admin: { address: '127.0.0.1', port: adminPort },
    listener: { name: 'virtual', address: '127.0.0.1', port: meshPort },
    clusters: [{ name: 'out#80#bench', endpoints: [{ address: '127.0.0.1', port: upstreamPort }] }],
    routes: { virtualHosts: [{ name: 'bench', domains: ['bench', '*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#80#bench' } }] }] },
  }));
  const [mcmd, margs] = pin(0, process.execPath, [path.join(root, 'packages/proxy/bin/mesh-proxy.js'), '--config', cfg]);
  const mesh = start(mcmd, margs, 'mesh-proxy');

  // http-proxy-3 on node:http with a keep-alive agent: the user's named dependency, for the design note.
  const hp3Script = `const http=require('node:http');const {createProxyServer}=require(${JSON.stringify(path.join(root, 'packages/proxy/node_modules/http-proxy-3'))});
const agent=new http.Agent({keepAlive:true,maxSockets:128});const proxy=createProxyServer({target:'http://127.0.0.1:${upstreamPort}',agent});
proxy.on('error',(e,q,s)=>{try{s.writeHead(502);s.end();}catch{}});http.createServer((q,s)=>proxy.web(q,s)).listen(${hp3Port},'127.0.0.1');`;
  const [hcmd, hargs] = pin(0, process.execPath, ['-e', hp3Script]);
  const hp3Child = start(hcmd, hargs, 'http-proxy-3');

  await Promise.all([waitPort(upstreamPort), waitPort(ngProxyPort), waitPort(meshPort), waitPort(hp3Port)]);
  console.log(`wrk -t1 -c${connections} -d${seconds}s, tiny responses, keep-alive; proxies pinned to core 0: ${canPin ? 'yes' : 'no (taskset unavailable)'}; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  // Warm-up (JIT, pools), short and bounded.
  spawnSync('wrk', ['-t1', '-c10', '-d2s', '-H', 'Host: bench', `http://127.0.0.1:${meshPort}/`], { timeout: 20000 });
  spawnSync('wrk', ['-t1', '-c10', '-d2s', `http://127.0.0.1:${ngProxyPort}/`], { timeout: 20000 });
  spawnSync('wrk', ['-t1', '-c10', '-d2s', `http://127.0.0.1:${hp3Port}/`], { timeout: 20000 });

  const direct = wrk(upstreamPort, 'bench');
  const ng = measured(ngProxyPort, 'bench', ngx.pid);
  const ours = measured(meshPort, 'bench', mesh.pid);
  const rss = peakRssMiB(mesh.pid);
  const hp3 = measured(hp3Port, 'bench', hp3Child.pid);
  const row = (name, r) => `${name.padEnd(24)} ${r.rps.toFixed(0).padStart(9)} req/s   p99 ${r.p99.toFixed(2).padStart(7)} ms` +
    (r.cpuUsPerRq ? `   CPU ${r.cpuUsPerRq.toFixed(1).padStart(6)} us/req => ${r.perCore.toFixed(0).padStart(6)} req/s per core` : '') + `   non-2xx ${r.errors} ${r.sockErr}`;
  console.log(row('upstream (direct)', direct));
  console.log(row('nginx reverse proxy', ng));
  console.log(row('mesh-proxy', ours));
  console.log(row('http-proxy-3 (node:http)', hp3));
  console.log(`ratio mesh-proxy / nginx: ${(ours.rps / ng.rps).toFixed(2)} by req/s in this run, ${(ours.perCore / ng.perCore).toFixed(2)} by CPU per request   (target: >= 22000 req/s per core, p99 < 3 ms, RSS < 100 MiB)`);
  console.log(`ratio mesh-proxy / http-proxy-3: ${(ours.rps / hp3.rps).toFixed(2)}`);
  console.log(`mesh-proxy peak RSS: ${rss.toFixed(1)} MiB`);
}

const guard = setTimeout(() => { console.error('bench/proxy: time bound reached'); cleanup(); process.exit(1); }, (seconds * 4 + 90) * 1000);
main().catch((err) => { console.error(err); process.exitCode = 1; }).finally(() => { clearTimeout(guard); cleanup(); });
