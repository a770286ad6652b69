#!/usr/bin/env node
// The cost of mTLS between sidecars, beside nginx doing the same TLS, in the same run (issue 13).
// Two hosts in network namespaces joined by a veth pair; on host B the service ports are captured
// (PREROUTING REDIRECT to the proxy listener) as the agent captures them.
//   1. Keep-alive: wrk (host A) -> proxy A (outbound) -> proxy B (inbound) -> the tiny nginx
//      `return 200` upstream (host B), once in plaintext and once with A originating mTLS (cluster
//      tls + endpoint metadata.identity) and B terminating it (inbound tls mode strict). The same two
//      chains with nginx (A: proxy_pass https with a client certificate, verify on, session reuse,
//      keepalive upstream; B: listen ssl, ssl_verify_client on). CPU per request = CPU of A + B.
//   2. New connection per request: handshake-client.mjs (its own process, its CPU not counted) opens
//      a connection per request (full mTLS handshake, no resumption; or plain TCP) to B; the CPU of
//      the terminating side B only gives handshakes (connections) per CPU-second. A bare node:tls
//      server (floor-server.mjs, no proxying) beside them gives the Node.js floor.
// Proxies pinned to core 0, wrk, the client and the upstream to core 1 (taskset). Runs alternated
// over ROUNDS (default 2) so machine load hits every contender alike; BENCH_SECONDS (default 10)
// per run; the whole script has a deadline. Prints a table and one JSON line. Measures only.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { benchRun, canPin, cpuSeconds, have, parseWrk, pin, root, seconds, writeNginxConf } from '../proxy/common.mjs';
import { makeCertificates } from './certs.mjs';
import { captureInbound, createNsPair, netnsUnavailable } from './netns.mjs';

const here = path.dirname(new URL(import.meta.url).pathname);
const rounds = Number(process.env.ROUNDS ?? 2);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50);
const hsConcurrency = Number(process.env.BENCH_HANDSHAKE_CONCURRENCY ?? 16);
const SUBNET = 131;

// Ports. Host B: the upstream, our listener and the two captured service ports, nginx B's two ports.
const P = { upstream: 9000, listener: 15001, admin: 15000, svcTls: 8080, svcPlain: 8081, ngPlainB: 8101, ngTlsB: 8443, ngPlainA: 8001, ngTlsA: 8002, floorTls: 8445, floorPlain: 8446 };
const SNI = `outbound_.${P.svcTls}_._.server.default.svc.cluster.local`;

const { dir, start, cleanup: stopChildren } = benchRun('bench-tls-');
let ns;
/** wrk and client runs in flight, ended by cleanup() too. */
const running = new Set();
function cleanup() {
  for (const child of running) child.kill('SIGKILL');
  stopChildren();
  ns?.remove();
}

/** [cmd, args] running `cmd` inside namespace `name`, pinned to `core`. */
const inNsPinned = (name, core, cmd, args) => {
  const [c, a] = pin(core, cmd, args);
  return ['ip', ['netns', 'exec', name, c, ...a]];
};

const nginxConf = (name, body) => writeNginxConf(dir, name, body);

const proxyPass = (upstream) => `proxy_pass ${upstream}; proxy_http_version 1.1; proxy_set_header Connection "";`;

function meshConfigs(ipB, certs) {
  const a = {
    admin: { address: '127.0.0.1', port: P.admin },
    listener: { name: 'virtual', address: '127.0.0.1', port: P.listener },
    secrets: [{ name: 'client', certChain: certs.client.certChain, privateKey: certs.client.privateKey, trustBundle: certs.client.trustBundle }],
    clusters: [
      { name: `out#${P.svcPlain}#server-plain`, endpoints: [{ address: ipB, port: P.svcPlain }] },
      { name: `out#${P.svcTls}#server`, endpoints: [{ address: ipB, port: P.svcTls, metadata: { identity: certs.server.identity } }], tls: { secret: 'client', sni: SNI } },
    ],
    routes: {
      virtualHosts: [
        { name: 'plain', domains: ['plain'], routes: [{ match: { prefix: '/' }, route: { cluster: `out#${P.svcPlain}#server-plain` } }] },
        { name: 'mtls', domains: ['mtls'], routes: [{ match: { prefix: '/' }, route: { cluster: `out#${P.svcTls}#server` } }] },
      ],
    },
  };
  const upstream = [{ address: '127.0.0.1', port: P.upstream }];
  const b = {
    admin: { address: '127.0.0.1', port: P.admin },
    listener: { name: 'virtual', address: '0.0.0.0', port: P.listener },
    localAddresses: [ipB],
    secrets: [{ name: 'server', certChain: certs.server.certChain, privateKey: certs.server.privateKey, trustBundle: certs.server.trustBundle }],
    inbound: [
      { port: P.svcTls, cluster: `in#${P.svcTls}#server`, tls: { mode: 'strict', secret: 'server' } },
      { port: P.svcPlain, cluster: `in#${P.svcPlain}#server-plain` },
    ],
    clusters: [{ name: `in#${P.svcTls}#server`, endpoints: upstream }, { name: `in#${P.svcPlain}#server-plain`, endpoints: upstream }],
  };
  return { a, b };
}

/** `curl` from namespace `name`: the status code, or the error. */
function curl(name, args) {
  const res = spawnSync('ip', ['netns', 'exec', name, 'curl', '-s', '-m', '3', '-o', '/dev/null', '-w', '%{http_code}', ...args], { encoding: 'utf8', timeout: 10000 });
  return res.stdout?.trim() || `curl exit ${res.status}`;
}

/** The sum of `<prefix>...ssl.handshake` counters in the /stats of the proxy in namespace `name`. */
function sslHandshakes(name, prefix) {
  const out = spawnSync('ip', ['netns', 'exec', name, 'curl', '-s', '-m', '3', `http://127.0.0.1:${P.admin}/stats`], { encoding: 'utf8', timeout: 10000 }).stdout ?? '';
  return out.split('\n').filter((l) => l.startsWith(prefix) && /\.ssl\.handshake: \d+$/.test(l)).reduce((sum, l) => sum + Number(l.split(': ')[1]), 0);
}

/** Polls until `check()` returns 200 (bounded), returns the last answer. */
async function until200(check, deadlineMs = 15000) {
  const end = Date.now() + deadlineMs;
  let last;
  while (Date.now() < end) {
    last = check();
    if (last === '200') return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  return last;
}

/** Runs a command to its end (killed after `timeoutMs`) without blocking the event loop, so Ctrl-C still cleans up. */
function runAsync(cmd, args, timeoutMs) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => { clearTimeout(timer); running.delete(child); resolve({ stdout, stderr: stderr + err.message, status: null }); });
    child.on('close', (status) => { clearTimeout(timer); running.delete(child); resolve({ stdout, stderr, status }); });
  });
}

async function wrk(url, host) {
  const [cmd, args] = inNsPinned(ns.a, 1, 'wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', '-H', `Host: ${host}`, url]);
  const out = (await runAsync(cmd, args, (seconds + 30) * 1000)).stdout;
  return { ...parseWrk(out), sockErr: /Socket errors:[^\n]*/.exec(out)?.[0] ?? '' };
}

async function handshakes(port, withTls, certs, secs = seconds) {
  const tlsArgs = withTls ? ['--cert', certs.client.certChain, '--key', certs.client.privateKey, '--ca', certs.client.trustBundle, '--servername', SNI] : [];
  const [cmd, args] = inNsPinned(ns.a, 1, process.execPath, [path.join(here, 'handshake-client.mjs'), '--host', ns.ipB, '--port', String(port),
    '--seconds', String(secs), '--concurrency', String(hsConcurrency), ...tlsArgs]);
  const res = await runAsync(cmd, args, (secs + 30) * 1000);
  try {
    return JSON.parse(res.stdout.trim().split('\n').pop());
  } catch {
    return { ok: 0, failed: 0, errors: { [`client failed: ${res.stderr?.trim() || res.status}`]: 1 } };
  }
}

/** Sums runs of one contender: CPU seconds and requests (or connections). */
function total(runs) {
  const cpu = runs.reduce((s, r) => s + r.cpu, 0);
  const n = runs.reduce((s, r) => s + r.n, 0);
  return { cpu, n, failed: runs.reduce((s, r) => s + r.failed, 0), cpuUsPer: n > 0 ? (cpu * 1e6) / n : NaN, perCore: cpu > 0 ? n / cpu : NaN, rate: runs.reduce((s, r) => s + r.rate, 0) / runs.length };
}

async function main() {
  const why = netnsUnavailable();
  if (why) { console.log(`bench/tls: ${why}; skipped`); return; }
  for (const cmd of ['wrk', 'nginx', 'openssl', 'curl']) if (!have(cmd)) { console.log(`bench/tls: ${cmd} not installed; skipped (scripts/install-test-deps.sh installs it)`); return; }
  if (!fs.existsSync(path.join(root, 'packages/proxy/dist/cli.js'))) { console.log('bench/tls: build the proxy first (pnpm --filter @mesh-agent/proxy build)'); process.exitCode = 1; return; }

  const certs = makeCertificates(path.join(dir, 'certs'), ['client', 'server']);
  ns = createNsPair('tls', SUBNET);
  const { a, b, ipB } = ns;
  captureInbound(b, ipB, P.svcTls, P.listener);
  captureInbound(b, ipB, P.svcPlain, P.listener);

  const upConf = nginxConf('upstream', `server { listen 127.0.0.1:${P.upstream}; location / { return 200 "ok\\n"; } }`);
  start(...inNsPinned(b, 1, 'nginx', ['-c', upConf, '-g', 'daemon off;']), 'upstream nginx');
  const ngBConf = nginxConf('nginx-b', `upstream app { server 127.0.0.1:${P.upstream}; keepalive 128; }
  server { listen ${ipB}:${P.ngPlainB}; location / { ${proxyPass('http://app')} } }
  server {
    listen ${ipB}:${P.ngTlsB} ssl;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate ${certs.server.certChain}; ssl_certificate_key ${certs.server.privateKey};
    ssl_client_certificate ${certs.server.trustBundle}; ssl_verify_client on; ssl_verify_depth 2;
    location / { ${proxyPass('http://app')} }
  }`);
  const ngB = start(...inNsPinned(b, 0, 'nginx', ['-c', ngBConf, '-g', 'daemon off;']), 'nginx B');
  const ngAConf = nginxConf('nginx-a', `upstream plain { server ${ipB}:${P.ngPlainB}; keepalive 128; }
  upstream mtls { server ${ipB}:${P.ngTlsB}; keepalive 128; }
  server { listen 127.0.0.1:${P.ngPlainA}; location / { ${proxyPass('http://plain')} } }
  server {
    listen 127.0.0.1:${P.ngTlsA};
    location / {
      ${proxyPass('https://mtls')}
      proxy_ssl_protocols TLSv1.2 TLSv1.3;
      proxy_ssl_certificate ${certs.client.certChain}; proxy_ssl_certificate_key ${certs.client.privateKey};
      proxy_ssl_trusted_certificate ${certs.client.trustBundle}; proxy_ssl_verify on; proxy_ssl_verify_depth 2;
      proxy_ssl_name ${certs.server.cn}; proxy_ssl_server_name on; proxy_ssl_session_reuse on;
    }
  }`);
  const ngA = start(...inNsPinned(a, 0, 'nginx', ['-c', ngAConf, '-g', 'daemon off;']), 'nginx A');

  const floor = start(...inNsPinned(b, 0, process.execPath, [path.join(here, 'floor-server.mjs'), '--address', ipB, '--tls-port', String(P.floorTls), '--plain-port', String(P.floorPlain),
    '--cert', certs.server.certChain, '--key', certs.server.privateKey, '--ca', certs.server.trustBundle]), 'node:tls floor server');

  const mesh = meshConfigs(ipB, certs);
  const meshProxy = (name, cfg, nsName) => {
    const file = path.join(dir, `mesh-${name}.json`);
    fs.writeFileSync(file, JSON.stringify(cfg));
    return start(...inNsPinned(nsName, 0, process.execPath, [path.join(root, 'packages/proxy/bin/mesh-proxy.js'), '--config', file]), `mesh-proxy ${name}`);
  };
  const meshB = meshProxy('b', mesh.b, b);
  const meshA = meshProxy('a', mesh.a, a);

  // Every chain answers 200 before anything is measured; a chain that does not is reported, not measured.
  const chains = [
    { key: 'mesh-plain', label: 'mesh-proxy plaintext', url: `http://127.0.0.1:${P.listener}/`, host: 'plain', pids: [meshA.pid, meshB.pid] },
    { key: 'mesh-mtls', label: 'mesh-proxy mTLS', url: `http://127.0.0.1:${P.listener}/`, host: 'mtls', pids: [meshA.pid, meshB.pid] },
    { key: 'nginx-plain', label: 'nginx plaintext', url: `http://127.0.0.1:${P.ngPlainA}/`, host: 'server', pids: [ngA.pid, ngB.pid] },
    { key: 'nginx-mtls', label: 'nginx mTLS', url: `http://127.0.0.1:${P.ngTlsA}/`, host: 'server', pids: [ngA.pid, ngB.pid] },
  ];
  for (const c of chains) {
    c.check = await until200(() => curl(a, ['-H', `Host: ${c.host}`, c.url]));
    c.works = c.check === '200';
    // A 200 alone could be plaintext end to end: the mTLS chain counts only with handshakes on both sides.
    if (c.works && c.key === 'mesh-mtls') {
      const hs = { a: sslHandshakes(a, `cluster.out#${P.svcTls}#server.`), b: sslHandshakes(b, 'listener.') };
      if (!(hs.a > 0 && hs.b > 0)) { c.works = false; c.check = `200 but no TLS handshake counted (A cluster ssl.handshake ${hs.a}, B listener ssl.handshake ${hs.b})`; }
    }
    if (!c.works) console.log(`bench/tls: chain "${c.label}" does not answer 200 (got ${c.check}); not measured`);
  }
  const targets = [
    { key: 'mesh-tls', label: 'mesh-proxy B mTLS', port: P.svcTls, tls: true, pid: meshB.pid },
    { key: 'mesh-tcp', label: 'mesh-proxy B plaintext', port: P.svcPlain, tls: false, pid: meshB.pid },
    { key: 'nginx-tls', label: 'nginx B mTLS', port: P.ngTlsB, tls: true, pid: ngB.pid },
    { key: 'nginx-tcp', label: 'nginx B plaintext', port: P.ngPlainB, tls: false, pid: ngB.pid },
    { key: 'floor-tls', label: 'node:tls floor mTLS', port: P.floorTls, tls: true, pid: floor.pid },
    { key: 'floor-tcp', label: 'node:net floor plain', port: P.floorPlain, tls: false, pid: floor.pid },
  ];
  for (const t of targets) {
    const probe = await handshakes(t.port, t.tls, certs, 1);
    t.works = probe.ok > 0 && probe.failed === 0;
    if (!t.works) console.log(`bench/tls: new-connection target "${t.label}" fails (${JSON.stringify(probe)}); not measured`);
  }

  // Warm-up (JIT, pools, upstream connections), short and bounded.
  for (const c of chains.filter((x) => x.works)) await runAsync(...inNsPinned(a, 1, 'wrk', ['-t1', '-c10', '-d2s', '-H', `Host: ${c.host}`, c.url]), 20000);

  console.log(`bench/tls: ${rounds} round(s) x ${seconds}s per run, alternated; keep-alive: wrk -t1 -c${connections}; new connection: ${hsConcurrency} client loops; ` +
    `proxies pinned to core 0: ${canPin ? 'yes' : 'no (taskset unavailable)'}; ${os.cpus().length} cores; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  const runs = Object.fromEntries([...chains, ...targets].map((x) => [x.key, []]));
  for (let r = 0; r < rounds; r++) {
    for (const c of chains.filter((x) => x.works)) {
      const before = c.pids.reduce((s, p) => s + cpuSeconds(p), 0);
      const w = await wrk(c.url, c.host);
      const cpu = c.pids.reduce((s, p) => s + cpuSeconds(p), 0) - before;
      runs[c.key].push({ cpu, n: w.requests - w.non2xx, failed: w.non2xx, rate: w.rps, p99: w.p99, sockErr: w.sockErr });
    }
    for (const t of targets.filter((x) => x.works)) {
      const before = cpuSeconds(t.pid);
      const h = await handshakes(t.port, t.tls, certs);
      const cpu = cpuSeconds(t.pid) - before;
      runs[t.key].push({ cpu, n: h.ok, failed: h.failed, rate: h.ok / seconds, errors: h.errors });
    }
  }

  // Keep-alive means few handshakes: A's pooled connections to B are reused (Envoy's cluster stat).
  const poolHandshakes = chains.find((c) => c.key === 'mesh-mtls').works ? sslHandshakes(a, `cluster.out#${P.svcTls}#server.`) : NaN;
  const sums = Object.fromEntries(Object.entries(runs).filter(([, v]) => v.length > 0).map(([k, v]) => [k, total(v)]));
  const ratio = (x, y) => (sums[x] && sums[y] ? sums[x].cpuUsPer / sums[y].cpuUsPer : NaN);
  const perCoreRatio = (x, y) => (sums[x] && sums[y] ? sums[x].perCore / sums[y].perCore : NaN);
  const f = (v, d = 0) => (Number.isFinite(v) ? v.toFixed(d) : 'n/a');
  console.log('\nkeep-alive, wrk -> A -> B -> upstream (CPU = proxy A + proxy B)');
  console.log(`${'chain'.padEnd(22)} ${'req/s'.padStart(8)} ${'CPU us/req'.padStart(11)} ${'req/s per core'.padStart(15)} ${'non-2xx'.padStart(8)}`);
  for (const c of chains) {
    const s = sums[c.key];
    console.log(`${c.label.padEnd(22)} ${f(s?.rate).padStart(8)} ${f(s?.cpuUsPer, 1).padStart(11)} ${f(s?.perCore).padStart(15)} ${String(s?.failed ?? 'n/a').padStart(8)}${c.works ? '' : `   not measured: ${c.check}`}`);
  }
  if (Number.isFinite(poolHandshakes)) console.log(`mesh-proxy A -> B mTLS handshakes in the whole run (pooled, reused): ${poolHandshakes} for ${sums['mesh-mtls']?.n ?? 0} requests`);
  console.log('\nnew connection per request, client -> B -> upstream (CPU = proxy B only)');
  console.log(`${'target'.padEnd(22)} ${'conn/s'.padStart(8)} ${'CPU us/conn'.padStart(11)} ${'conn/s per core'.padStart(15)} ${'failed'.padStart(8)}`);
  for (const t of targets) {
    const s = sums[t.key];
    console.log(`${t.label.padEnd(22)} ${f(s?.rate).padStart(8)} ${f(s?.cpuUsPer, 1).padStart(11)} ${f(s?.perCore).padStart(15)} ${String(s?.failed ?? 'n/a').padStart(8)}${t.works ? '' : '   not measured'}`);
  }
  const ratios = {
    keepAlive: { meshMtlsOverPlain: ratio('mesh-mtls', 'mesh-plain'), nginxMtlsOverPlain: ratio('nginx-mtls', 'nginx-plain'), meshOverNginxMtls: ratio('mesh-mtls', 'nginx-mtls'), meshOverNginxPlain: ratio('mesh-plain', 'nginx-plain') },
    newConnection: {
      meshMtlsOverPlain: ratio('mesh-tls', 'mesh-tcp'), nginxMtlsOverPlain: ratio('nginx-tls', 'nginx-tcp'),
      meshOverNginxHandshakesPerCore: perCoreRatio('mesh-tls', 'nginx-tls'), meshOverNodeFloorHandshakesPerCore: perCoreRatio('mesh-tls', 'floor-tls'),
    },
  };
  console.log('\nratios of CPU per request (> 1 = costs more):');
  console.log(`  keep-alive:     mesh mTLS / mesh plaintext ${f(ratios.keepAlive.meshMtlsOverPlain, 2)}   nginx mTLS / nginx plaintext ${f(ratios.keepAlive.nginxMtlsOverPlain, 2)}   mesh / nginx: mTLS ${f(ratios.keepAlive.meshOverNginxMtls, 2)}, plaintext ${f(ratios.keepAlive.meshOverNginxPlain, 2)}`);
  console.log(`  new connection: mesh mTLS / mesh plaintext ${f(ratios.newConnection.meshMtlsOverPlain, 2)}   nginx mTLS / nginx plaintext ${f(ratios.newConnection.nginxMtlsOverPlain, 2)}`);
  console.log(`  mTLS handshakes per core (terminating side): mesh-proxy ${f(sums['mesh-tls']?.perCore)}, nginx ${f(sums['nginx-tls']?.perCore)}, mesh / nginx ${f(ratios.newConnection.meshOverNginxHandshakesPerCore, 2)}; ` +
    `bare node:tls server (no proxying) ${f(sums['floor-tls']?.perCore)}, mesh / that floor ${f(ratios.newConnection.meshOverNodeFloorHandshakesPerCore, 2)}`);
  const round = (o) => JSON.parse(JSON.stringify(o, (k, v) => (typeof v === 'number' ? (Number.isFinite(v) ? Math.round(v * 1000) / 1000 : null) : v)));
  console.log(JSON.stringify(round({
    bench: 'tls', date: new Date().toISOString(), cores: os.cpus().length, loadavg: os.loadavg(), seconds, rounds, connections, hsConcurrency,
    keepAlive: Object.fromEntries(chains.map((c) => [c.key, sums[c.key] ?? { notMeasured: c.check }])),
    newConnection: Object.fromEntries(targets.map((t) => [t.key, sums[t.key] ?? { notMeasured: true }])),
    ratios,
    poolHandshakes,
    runs,
  })));
}

// Ctrl-C or a kill: the namespaces and children go too (they would outlive the script otherwise).
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => { cleanup(); process.exit(130); });
const guard = setTimeout(() => { console.error('bench/tls: time bound reached'); cleanup(); process.exit(1); }, (seconds * 10 * rounds + 150) * 1000);
main().catch((err) => { console.error(err.message ?? err); process.exitCode = 1; }).finally(() => { clearTimeout(guard); cleanup(); });
