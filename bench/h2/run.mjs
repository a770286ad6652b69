#!/usr/bin/env node
// HTTP/2 benchmark (issue 14): h2load -t1 -c10 -m10 (100 concurrent streams on 10 connections),
// unary gRPC-sized requests (a 100-byte POST body, content-type application/grpc, a 100-byte
// answer) against (1) mesh-proxy and (2) nginx as an HTTP/2 reverse proxy (`listen ... http2`), both
// in front of the same upstream, in the same run. Two upstream protocols, the same for both proxies:
//   h1  the upstream is nginx `return 200` over HTTP/1.1 (nginx proxy_pass with keepalive; our
//       cluster protocol http1): h2 downstream, h1 upstream, as in Envoy;
//   h2  the upstream is nghttpd (h2c) serving the 100-byte answer as a file (nginx grpc_pass
//       grpc://, its only HTTP/2 upstream; our cluster protocol http2): HTTP/2 end to end, as gRPC
//       runs. Not nginx `return 200` over http2: it answers before reading the body, and nginx's
//       grpc_pass then fails whole connections ("upstream sent frame for unknown stream").
// Each proxy is pinned to core 0 with taskset where it works; h2load and the upstream share core 1.
// Figures: req/s in the run, the proxy's CPU per request (its user+system time / requests) and
// requests per CPU-second (= per fully available core), the ratio ours / nginx. A proxy that does not
// answer the check request with 200 over HTTP/2 is reported as not measured, never guessed.
// Beside them, the Node.js floor: a bare node:http2 proxy (node:http2 server + a node:http2 session or
// a node:http keep-alive agent to the same upstream, nothing else): no proxy on node:http2 costs less.
// Bounded: BENCH_SECONDS (default 10) per run, a global time guard. Measures only; never fails on a speed.
// BENCH_H2_UPSTREAM=h1|h2|both (default both).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { benchRun, canPin, cpuSeconds, freePort, have, pin, root, seconds, waitPort, writeNginxConf } from '../proxy/common.mjs';

const CLIENTS = 10;
const STREAMS = 10;
const BODY_BYTES = 100;
const modes = (process.env.BENCH_H2_UPSTREAM ?? 'both') === 'both' ? ['h1', 'h2'] : [process.env.BENCH_H2_UPSTREAM];
const { dir, start, cleanup } = benchRun('bench-h2-');

// a gRPC-shaped unary exchange: 100 bytes each way (the body is opaque to both proxies)
const requestBody = path.join(dir, 'request.bin');
fs.writeFileSync(requestBody, Buffer.alloc(BODY_BYTES, 0x61));
const answer = 'b'.repeat(BODY_BYTES);
const HEADERS = ['-H', 'content-type: application/grpc', '-H', 'te: trailers'];

/** h2load's figures: req/s, requests done and succeeded, failed/errored, from its summary lines. */
export function parseH2load(out) {
  const rps = Number(/finished in [\d.]+\w*, ([\d.]+) req\/s/.exec(out)?.[1] ?? NaN);
  const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
  const [done, succeeded, failed, errored] = m ? [Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])] : [0, 0, 0, 0];
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  return { rps, done, succeeded, failed, errored, non2xx: codes ? Number(codes[2]) + Number(codes[3]) + Number(codes[4]) : NaN };
}

function h2load(port, durationS, clients = CLIENTS) {
  const [cmd, args] = pin(1, 'h2load', ['-t1', `-c${clients}`, `-m${STREAMS}`, `-D${durationS}`, '-d', requestBody, ...HEADERS, `http://127.0.0.1:${port}/bench.Echo/Unary`]);
  const res = spawnSync(cmd, args, { encoding: 'utf8', timeout: (durationS + 30) * 1000 });
  return parseH2load(`${res.stdout ?? ''}${res.stderr ?? ''}`);
}

/** One h2load run with the proxy's CPU time per request. */
function measured(port, pid) {
  const before = cpuSeconds(pid);
  const r = h2load(port, seconds);
  const cpu = cpuSeconds(pid) - before;
  r.cpuUsPerRq = r.succeeded > 0 ? (cpu * 1e6) / r.succeeded : NaN;
  r.perCore = 1e6 / r.cpuUsPerRq;
  return r;
}

/** 200 over HTTP/2 with the upstream's answer, or why not. */
function check(port) {
  const res = spawnSync('curl', ['-s', '--max-time', '5', '--http2-prior-knowledge', '-o', '-', '-w', '\n%{http_code} %{http_version}', ...HEADERS, '--data-binary', `@${requestBody}`, `http://127.0.0.1:${port}/bench.Echo/Unary`], { encoding: 'utf8' });
  const out = res.stdout ?? '';
  const tail = out.slice(out.lastIndexOf('\n') + 1);
  if (tail === '200 2' && out.startsWith(answer)) return undefined;
  return `answered "${tail || 'nothing'}" (curl exit ${res.status})${out.startsWith(answer) ? '' : ', not the upstream\'s body'}`;
}

/**
 * A bare proxy on node:http2: each downstream stream's body goes to the upstream (a node:http2
 * session for h2, a node:http keep-alive agent for h1) and the answer comes back. No routing, no
 * stats, no access log: the floor of any proxy built on node:http2. With upstream 'self' it answers
 * itself (the downstream codec alone).
 */
function nodeFloorSource(port, upstream, upstreamPort) {
  return `const http2 = require('node:http2'); const http = require('node:http');
const answer = ${JSON.stringify(answer)};
const agent = new http.Agent({ keepAlive: true, maxSockets: 128 });
let session;
const up = () => { if (!session || session.destroyed || session.closed) { session = http2.connect('http://127.0.0.1:${upstreamPort}'); session.on('error', () => {}); } return session; };
const reply = (stream, status, body) => { if (stream.destroyed || stream.closed) return; try { stream.respond({ ':status': status }); stream.end(body); } catch {} };
const collect = (from, done) => { const parts = []; from.on('data', (c) => parts.push(c)); from.on('end', () => done(Buffer.concat(parts))); };
const server = http2.createServer();
server.on('stream', (stream, headers) => {
  stream.on('error', () => {});
  const chunks = [];
  stream.on('data', (c) => chunks.push(c));
  stream.on('end', () => {
    const body = Buffer.concat(chunks);
    if ('${upstream}' === 'self') { reply(stream, 200, answer); return; }
    if ('${upstream}' === 'h2') {
      const req = up().request({ ':method': headers[':method'], ':path': headers[':path'], 'content-type': headers['content-type'] || '' });
      req.on('error', () => reply(stream, 502));
      req.on('response', (h) => collect(req, (b) => reply(stream, h[':status'], b)));
      req.end(body);
      return;
    }
    const req = http.request({ host: '127.0.0.1', port: ${upstreamPort}, method: headers[':method'], path: headers[':path'], agent, headers: { 'content-length': body.length } }, (res) => {
      collect(res, (b) => reply(stream, res.statusCode, b));
    });
    req.on('error', () => reply(stream, 502));
    req.end(body);
  });
});
server.listen(${port}, '127.0.0.1');`;
}

async function runMode(mode) {
  const upstreamPort = await freePort();
  const ngPort = await freePort();
  const meshPort = await freePort();
  const adminPort = await freePort();
  const conf = (name, body) => writeNginxConf(dir, `${mode}-${name}`, body);
  const h2 = mode === 'h2';
  if (h2) {
    const www = path.join(dir, 'www');
    fs.mkdirSync(path.join(www, 'bench.Echo'), { recursive: true });
    fs.writeFileSync(path.join(www, 'bench.Echo', 'Unary'), answer);
    const [ucmd, uargs] = pin(1, 'nghttpd', ['--no-tls', '-d', www, String(upstreamPort)]);
    start(ucmd, uargs, 'upstream nghttpd (h2)');
  } else {
    const [ucmd, uargs] = pin(1, 'nginx', ['-c', conf('upstream', `server { listen 127.0.0.1:${upstreamPort}; location / { return 200 "${answer}"; } }`), '-g', 'daemon off;']);
    start(ucmd, uargs, 'upstream nginx (h1)');
  }
  const location = h2
    ? 'grpc_pass grpc://up;'
    : 'proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";';
  const [ncmd, nargs] = pin(0, 'nginx', ['-c', conf('proxy', `upstream up { server 127.0.0.1:${upstreamPort}; keepalive 128; }
  server { listen 127.0.0.1:${ngPort} http2; http2_max_concurrent_streams 128; location / { ${location} } }`), '-g', 'daemon off;']);
  const ngx = start(ncmd, nargs, `nginx h2 reverse proxy (${mode})`);

  const cfg = path.join(dir, `mesh-proxy-${mode}.json`);
  fs.writeFileSync(cfg, JSON.stringify({
    admin: { address: '127.0.0.1', port: adminPort },
    listener: { name: 'virtual', address: '127.0.0.1', port: meshPort },
    clusters: [{ name: 'out#80#bench', protocol: h2 ? 'http2' : 'http1', endpoints: [{ address: '127.0.0.1', port: upstreamPort }] }],
    routes: { virtualHosts: [{ name: 'bench', domains: ['bench', '*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#80#bench' } }] }] },
  }));
  const [mcmd, margs] = pin(0, process.execPath, [path.join(root, 'packages/proxy/bin/mesh-proxy.js'), '--config', cfg]);
  const mesh = start(mcmd, margs, `mesh-proxy (${mode})`);
  const floorPort = await freePort();
  const [fcmd, fargs] = pin(0, process.execPath, ['-e', nodeFloorSource(floorPort, h2 ? 'h2' : 'h1', upstreamPort)]);
  const floor = start(fcmd, fargs, `node:http2 proxy floor (${mode})`);
  await Promise.all([waitPort(upstreamPort), waitPort(ngPort), waitPort(meshPort), waitPort(floorPort)]);

  const results = {};
  for (const [name, port, pid] of [['nginx', ngPort, ngx.pid], ['mesh-proxy', meshPort, mesh.pid], ['node:http2 proxy', floorPort, floor.pid]]) {
    const why = check(port);
    if (why) { results[name] = { notMeasured: why }; continue; }
    h2load(port, 2, 2); // warm-up (JIT, pools), short and bounded
    results[name] = measured(port, pid);
  }
  // the upstream alone, for scale (HTTP/2 only: h2load's h1 mode measures something else)
  results.direct = h2 && !check(upstreamPort) ? h2load(upstreamPort, Math.min(seconds, 5)) : undefined;
  return results;
}

function row(name, r) {
  if (!r) return `${name.padEnd(26)} (not measured: an HTTP/1.1 upstream, h2load speaks HTTP/2)`;
  if (r.notMeasured) return `${name.padEnd(26)} not measured: ${r.notMeasured}`;
  return `${name.padEnd(26)} ${r.rps.toFixed(0).padStart(8)} req/s` +
    (r.cpuUsPerRq ? `   CPU ${r.cpuUsPerRq.toFixed(1).padStart(6)} us/req => ${r.perCore.toFixed(0).padStart(6)} req/s per core` : '') +
    `   ${r.succeeded} ok, ${r.failed} failed, ${r.errored} errored, non-2xx ${r.non2xx}`;
}

async function main() {
  for (const cmd of ['h2load', 'nghttpd', 'nginx', 'curl']) if (!have(cmd)) { console.log(`bench/h2: ${cmd} not installed; skipped (scripts/install-test-deps.sh installs it)`); return; }
  console.log(`h2load -t1 -c${CLIENTS} -m${STREAMS} -D${seconds} (${CLIENTS * STREAMS} concurrent streams), POST ${BODY_BYTES} B -> ${BODY_BYTES} B, content-type application/grpc; proxies pinned to core 0: ${canPin ? 'yes' : 'no (taskset unavailable)'}; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  const summary = {};
  for (const mode of modes) {
    const r = await runMode(mode);
    console.log(`\nupstream ${mode === 'h2' ? 'HTTP/2 (h2c; nginx grpc_pass, mesh-proxy cluster protocol http2)' : 'HTTP/1.1 (nginx proxy_pass keepalive, mesh-proxy cluster protocol http1)'}`);
    console.log(row('upstream (direct, h2load)', r.direct));
    console.log(row('nginx h2 reverse proxy', r.nginx));
    console.log(row('mesh-proxy', r['mesh-proxy']));
    console.log(row('node:http2 proxy (floor)', r['node:http2 proxy']));
    const ours = r['mesh-proxy'];
    const ng = r.nginx;
    if (ours?.perCore && ng?.perCore) {
      const ratio = ours.perCore / ng.perCore;
      console.log(`ratio mesh-proxy / nginx: ${(ours.rps / ng.rps).toFixed(2)} by req/s in this run, ${ratio.toFixed(2)} by requests per CPU-second (target: >= 0.5)`);
      const floor = r['node:http2 proxy'];
      if (floor?.perCore) console.log(`ratio mesh-proxy / bare node:http2 proxy: ${(ours.perCore / floor.perCore).toFixed(2)} by requests per CPU-second; bare node:http2 proxy / nginx: ${(floor.perCore / ng.perCore).toFixed(2)}`);
      summary[mode] = { oursPerCore: Math.round(ours.perCore), nginxPerCore: Math.round(ng.perCore), ratio: Number(ratio.toFixed(2)), ...(floor?.perCore ? { nodeFloorPerCore: Math.round(floor.perCore) } : {}) };
    } else summary[mode] = { notMeasured: ours?.notMeasured ?? ng?.notMeasured ?? 'no figures' };
  }
  console.log(`\n${JSON.stringify({ bench: 'h2', seconds, clients: CLIENTS, streams: STREAMS, bodyBytes: BODY_BYTES, results: summary })}`);
}

const guard = setTimeout(() => { console.error('bench/h2: time bound reached'); cleanup(); process.exit(1); }, (modes.length * (seconds * 2 + 20) + 90) * 1000);
main().catch((err) => { console.error(err); process.exitCode = 1; }).finally(() => { clearTimeout(guard); cleanup(); });
