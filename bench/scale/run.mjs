// How the sidecar behaves as the mesh grows (issue 17, item 5). A generated registry (default 10,000
// services x 10 endpoints = 100,000 endpoints, and a small one of 100 x 10 as the reference in the same
// run) is fed to a real mesh-agent with its proxy and mesh-dns (ephemeral ports, never the defaults),
// (a) through the file registry (the file rewritten whole, as a generator would) and (b) through a real
// etcd (one key per instance, as agents register). It measures:
//   - RSS of agent, proxy and mesh-dns with each registry, and per 1,000 endpoints (big minus small);
//   - time from one change (a new service; a new endpoint of an existing service) to the new answer in
//     mesh-dns (a UDP query loop) and on the proxy's data path (a request loop), and the agent's push
//     (its "config version N pushed" log line);
//   - the data plane during the swap: latency of requests through the proxy and of DNS queries in
//     flight while the change is applied (bounded loops: 4 HTTP keep-alive clients, 1 DNS client),
//     against the same loops before the change. The longest answer during the swap bounds the table
//     swap (the swap runs on the event loop, so a swap of X ms delays an answer by about X ms).
// Figures and targets are printed; nothing is asserted.
//
// Env: SCALE_SERVICES (10000), SCALE_ENDPOINTS_PER_SERVICE (10), SCALE_SMALL_SERVICES (100),
// SCALE_REGISTRIES (file,etcd), SCALE_SCOPE (a YAML flow list for mesh.scope.services, e.g.
// "[svc-0, scale-*]": runs the big registry once more with that scope), SCALE_CHANGES (3 per kind).
import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { benchRun, freePort, have, root, waitPort, writeNginxConf } from '../proxy/common.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const bigServices = Number(process.env.SCALE_SERVICES ?? 10_000);
const perService = Number(process.env.SCALE_ENDPOINTS_PER_SERVICE ?? 10);
const smallServices = Number(process.env.SCALE_SMALL_SERVICES ?? 100);
const registries = (process.env.SCALE_REGISTRIES ?? (have('etcd') ? 'file,etcd' : 'file')).split(',').filter(Boolean);
const scope = process.env.SCALE_SCOPE ?? '';
const changes = Number(process.env.SCALE_CHANGES ?? 3);
const TARGET_E2E_MS = 1000;
const TARGET_SWAP_MS = 50;
const agentBin = path.join(root, 'packages/agent/bin/mesh-agent.js');

const { dir, start, cleanup } = benchRun('bench-scale-');
fs.chmodSync(dir, 0o755); // the proxy and mesh-dns run as uid 1337 when this runs as root

// ---- the registry ----------------------------------------------------------------------------
/** 198.18.0.0/15 addresses: never connected to (no health check of outbound clusters, no traffic). */
const fakeAddress = (n) => `198.${18 + ((n >> 16) & 1)}.${(n >> 8) & 255}.${n & 255}`;

/** The generated services: svc-0 (the request loop's target, on the real upstream), svc-1..N-1 on fake addresses, scale-ep on upstream A. */
function generate(count, upstream) {
  const services = [{ name: 'svc-0', instances: [{ id: 'svc-0-0', address: '127.0.0.1', port: upstream.a }] }];
  let n = 0;
  for (let s = 1; s < count - 1; s++) {
    services.push({ name: `svc-${s}`, instances: Array.from({ length: perService }, (_, i) => ({ id: `svc-${s}-${i}`, address: fakeAddress(n++ % 131072), port: 8080 + (i % 4) })) });
  }
  services.push({ name: 'scale-ep', instances: [{ id: 'scale-ep-a', address: '127.0.0.1', port: upstream.a }] });
  return services;
}
const endpointsOf = (services) => services.reduce((a, s) => a + s.instances.length, 0);

/** The file registry, rewritten whole and renamed into place (what the agent's watch sees). */
function fileFeed(file) {
  let services = [];
  const write = () => {
    const tmp = `${file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ services }), { mode: 0o644 });
    fs.renameSync(tmp, file);
  };
  return {
    config: ['registry:', '  backend: file', '  file:', `    path: ${file}`],
    async load(all) { services = all; write(); },
    async addInstance(service, instance) {
      const existing = services.find((s) => s.name === service);
      services = existing ? services.map((s) => (s === existing ? { ...s, instances: [...s.instances, instance] } : s)) : [...services, { name: service, instances: [instance] }];
      write();
    },
  };
}

const b64 = (s) => Buffer.from(s).toString('base64');
async function etcdPost(endpoint, api, body) {
  const res = await fetch(`${endpoint}/v3/${api}`, { method: 'POST', body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`etcd ${api}: ${res.status} ${await res.text()}`);
  return res.json();
}

/** The etcd registry: one key per instance under its own prefix, loaded in transactions of 1,000 puts. */
function etcdFeed(endpoint, prefix) {
  const key = (service, id) => `${prefix}services/default/${service}/${id}`;
  return {
    config: ['registry:', '  backend: etcd', '  etcd:', `    endpoints: [${endpoint}]`, `    prefix: ${prefix}`],
    async load(all) {
      const puts = all.flatMap((s) => s.instances.map((i) => ({ requestPut: { key: b64(key(s.name, i.id)), value: b64(JSON.stringify(i)) } })));
      for (let i = 0; i < puts.length; i += 1000) await etcdPost(endpoint, 'kv/txn', { success: puts.slice(i, i + 1000) });
    },
    async addInstance(service, instance) { await etcdPost(endpoint, 'kv/put', { key: b64(key(service, instance.id)), value: b64(JSON.stringify(instance)) }); },
  };
}

async function startEtcd() {
  const client = await freePort();
  const peer = await freePort();
  start('etcd', ['--data-dir', path.join(dir, 'etcd'), '--listen-client-urls', `http://127.0.0.1:${client}`, '--advertise-client-urls', `http://127.0.0.1:${client}`,
    '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
    '--initial-cluster', `default=http://127.0.0.1:${peer}`, '--max-txn-ops', '1000', '--max-request-bytes', String(16 << 20),
    '--quota-backend-bytes', String(4 << 30), '--log-level', 'error'], 'etcd');
  await waitPort(client, 30_000);
  return `http://127.0.0.1:${client}`;
}

// ---- processes -------------------------------------------------------------------------------
const childrenOf = (pid) => { try { return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch { return []; } };
const cmdlineOf = (pid) => { try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0'); } catch { return []; } };
const rssOf = (pid) => { try { return Number(/^VmRSS:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024; } catch { return NaN; } };

/** Starts mesh-agent (log level info: its push lines carry the time) and waits until it registered. */
async function startSidecar(label, feed, upstream) {
  const base = path.join(dir, label);
  fs.mkdirSync(path.join(base, 'run'), { recursive: true, mode: 0o755 });
  const ports = { agentAdmin: await freePort(), proxyAdmin: await freePort(), proxyListener: await freePort(), dns: await freePort(), dnsAdmin: await freePort() };
  const write = (name, text) => { const f = path.join(base, name); fs.writeFileSync(f, text, { mode: 0o644 }); return f; };
  write('spec.yaml', JSON.stringify({ apiVersion: 'v1', kind: 'Application', spec: { services: [{ name: 'bench-app', ports: [{ targetPort: upstream.a, protocol: 'http' }], healthCheck: { path: '/health' } }] } }));
  const global = write('global.yaml', JSON.stringify({ healthCheck: { intervalMs: 5000, timeoutMs: 1000 }, outlierDetection: { enabled: false } }));
  const config = write('agent.yaml', [
    'node:', '  ip: 127.0.0.1', '  serviceName: bench-app',
    'app:', `  configDir: ${base}`, `  specFile: ${path.join(base, 'spec.yaml')}`,
    'ports:', ...Object.entries(ports).map(([k, v]) => `  ${k}: ${v}`),
    'mesh:', `  globalConfigFile: ${global}`, ...(label.includes('scoped') ? [`  scope: { services: ${scope} }`] : []),
    'dns:', '  upstreams: ["127.0.0.1:9"]', // names outside the mesh are never asked of the machine's resolver
    ...feed.config,
    'iptables:', '  enabled: false', `  stateFile: ${path.join(base, 'run', 'iptables-state.json')}`,
    'log:', '  level: info',
    'paths:', `  runDir: ${path.join(base, 'run')}`, `  proxyBootstrap: ${path.join(base, 'run', 'proxy-bootstrap.json')}`, `  dnsConfig: ${path.join(base, 'run', 'mesh-dns.json')}`,
    '',
  ].join('\n'));
  const agent = spawn(process.execPath, [agentBin, 'start', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  const pushes = [];
  let buffered = '';
  const onLog = (d) => {
    buffered += d;
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line.includes('pushed to envoy and mesh-dns')) pushes.push(Date.now());
    }
  };
  agent.stdout.on('data', onLog);
  agent.stderr.on('data', onLog);
  const started = Date.now();
  const wait = spawnSync(process.execPath, [agentBin, 'wait', '--registered', '--timeout', '300', '--admin', `http://127.0.0.1:${ports.agentAdmin}`], { encoding: 'utf8' });
  if (wait.status !== 0) { agent.kill('SIGKILL'); throw new Error(`mesh-agent (${label}) did not register: ${wait.stdout}${wait.stderr}`); }
  const pidOf = (bin) => childrenOf(agent.pid).find((p) => cmdlineOf(p).some((a) => a.endsWith(bin)));
  return { agent, ports, pushes, startupMs: Date.now() - started, pids: () => ({ agent: agent.pid, proxy: pidOf('mesh-proxy.js'), 'mesh-dns': pidOf('mesh-dns.js') }) };
}

async function stopAgent(agent) {
  if (agent.exitCode !== null) return;
  agent.kill('SIGTERM');
  await Promise.race([new Promise((r) => agent.once('exit', r)), sleep(20_000)]);
  if (agent.exitCode === null) agent.kill('SIGKILL');
}

// ---- probes ----------------------------------------------------------------------------------
const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 8 });
function get(port, host, reqPath = '/') {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: reqPath, headers: { host }, agent: keepAlive, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', () => resolve({ status: 0, body: '' }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ status: 0, body: '' }));
  });
}

/** A minimal DNS A query; resolves to the answer count (-1 on NXDOMAIN or no answer within 2 s). */
function dnsClient(port) {
  const socket = dgram.createSocket('udp4');
  const waiting = new Map();
  let nextId = 1;
  socket.on('message', (msg) => {
    const w = waiting.get(msg.readUInt16BE(0));
    if (!w) return;
    waiting.delete(msg.readUInt16BE(0));
    clearTimeout(w.timer);
    w.resolve((msg[3] & 15) === 0 ? msg.readUInt16BE(6) : -1);
  });
  socket.on('error', () => undefined);
  return {
    query(name) {
      const id = nextId = (nextId % 65535) + 1;
      const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
      const packet = Buffer.concat([Buffer.from([id >> 8, id & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), ...labels, Buffer.from([0, 0, 1, 0, 1])]);
      return new Promise((resolve) => {
        waiting.set(id, { resolve, timer: setTimeout(() => { waiting.delete(id); resolve(-1); }, 2000) });
        socket.send(packet, port, '127.0.0.1');
      });
    },
    close() { socket.close(); },
  };
}

/** Bounded loops through the proxy (4 keep-alive clients) and to mesh-dns (1 client): every answer's start time and latency. */
function dataPlaneLoops(ports) {
  const samples = { http: [], dns: [], errors: 0 };
  let running = true;
  const dns = dnsClient(ports.dns);
  const httpLoop = async () => {
    while (running) {
      const t = performance.now();
      const r = await get(ports.proxyListener, 'svc-0');
      if (r.status !== 200) samples.errors++;
      samples.http.push([t, performance.now() - t]);
    }
  };
  const dnsLoop = async () => {
    while (running) {
      const t = performance.now();
      await dns.query('svc-0.default.svc.cluster.local');
      samples.dns.push([t, performance.now() - t]);
      await sleep(1);
    }
  };
  const loops = [httpLoop(), httpLoop(), httpLoop(), httpLoop(), dnsLoop()];
  return { samples, async stop() { running = false; await Promise.all(loops); dns.close(); } };
}

const percentile = (values, p) => {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
};
/** Latencies of answers in flight during [from, to] (started before `to`, finished after `from`). */
const during = (list, from, to) => list.filter(([t, d]) => t <= to && t + d >= from).map(([, d]) => d);

/** One change: applies it, then polls the data path and mesh-dns until both show it. Times in ms from the change. */
async function timeChange(s, apply, dnsName, proxyCheck) {
  const dns = dnsClient(s.ports.dns);
  const pushesBefore = s.pushes.length;
  const t0 = performance.now();
  const wall0 = Date.now();
  await apply();
  const applied = performance.now() - t0;
  let dnsMs = dnsName ? undefined : NaN;
  let proxyMs;
  const deadline = t0 + 30_000;
  while ((dnsMs === undefined || proxyMs === undefined) && performance.now() < deadline) {
    const [answers, ok] = await Promise.all([dnsMs === undefined ? dns.query(dnsName) : 1, proxyMs === undefined ? proxyCheck() : true]);
    if (dnsMs === undefined && answers > 0) dnsMs = performance.now() - t0;
    if (proxyMs === undefined && ok) proxyMs = performance.now() - t0;
    if (dnsMs === undefined || proxyMs === undefined) await sleep(2);
  }
  dns.close();
  // the agent's push of this change (its log line), when it came
  for (let i = 0; i < 50 && s.pushes.length === pushesBefore; i++) await sleep(20);
  const pushMs = s.pushes.length > pushesBefore ? s.pushes[pushesBefore] - wall0 : NaN;
  return { t0, applied, dnsMs: dnsMs ?? NaN, proxyMs: proxyMs ?? NaN, pushMs, end: performance.now() };
}

const f0 = (n) => (Number.isFinite(n) ? n.toFixed(0) : '-');
const f1 = (n) => (Number.isFinite(n) ? n.toFixed(1) : '-');

async function measure(kind, label, services, feed, upstream) {
  const loadStart = Date.now();
  await feed.load(services);
  const loadMs = Date.now() - loadStart;
  const s = await startSidecar(label, feed, upstream);
  try {
    // the last generated service reached on both paths: the whole registry is in
    const last = services[services.length - 2].name;
    const dns = dnsClient(s.ports.dns);
    for (let i = 0; i < 600 && !((await dns.query(`${last}.default.svc.cluster.local`)) > 0 && (await get(s.ports.proxyListener, 'svc-0')).status === 200); i++) await sleep(100);
    dns.close();
    const readyMs = Date.now() - loadStart;
    await sleep(3000); // settle (the first push's garbage collected)
    const rss = Object.fromEntries(Object.entries(s.pids()).map(([k, pid]) => [k, rssOf(pid)]));
    const loops = dataPlaneLoops(s.ports);
    await sleep(1500);
    const results = [];
    for (let c = 0; c < changes; c++) {
      const name = `scale-new-${label}-${c}`;
      results.push({ kind: 'new service', ...(await timeChange(s, () => feed.addInstance(name, { id: `${name}-0`, address: '127.0.0.1', port: upstream.a }), `${name}.default.svc.cluster.local`, async () => (await get(s.ports.proxyListener, name)).status === 200)) });
      await sleep(1000);
      // a new endpoint of scale-ep on upstream B (it answers "b"): seen once a round-robin pick returns it
      const port = upstream.b[c % upstream.b.length];
      results.push({ kind: 'new endpoint', ...(await timeChange(s, () => feed.addInstance('scale-ep', { id: `scale-ep-b${c}`, address: '127.0.0.1', port }), undefined, async () => {
        for (let i = 0; i < 2 + c; i++) if ((await get(s.ports.proxyListener, 'scale-ep')).body === `b${c}\n`) return true;
        return false;
      })) });
      await sleep(1000);
    }
    const baselineEnd = results[0].t0;
    await loops.stop();
    const rssAfter = Object.fromEntries(Object.entries(s.pids()).map(([k, pid]) => [k, rssOf(pid)]));
    // the proxy's /clusters holds the new endpoints (one fetch: it lists every endpoint of the registry)
    const t = performance.now();
    const clusters = await new Promise((resolve) => http.get(`http://127.0.0.1:${s.ports.proxyAdmin}/clusters`, (res) => { let b = ''; res.on('data', (d) => { b += d; }); res.on('end', () => resolve(b)); }).on('error', () => resolve('')));
    const clustersFetchMs = performance.now() - t;
    const inClusters = upstream.b.slice(0, changes).every((p) => clusters.includes(`out#${upstream.a}#scale-ep::127.0.0.1:${p}::`) || clusters.includes(`::127.0.0.1:${p}::`));
    const swap = (list) => during(list, results[0].t0, results.at(-1).end);
    const base = (list) => list.filter(([t]) => t < baselineEnd).map(([, d]) => d);
    return {
      kind, label, services: services.length, endpoints: endpointsOf(services), loadMs, readyMs, startupMs: s.startupMs, rss, rssAfter, results,
      http: { base: base(loops.samples.http), swap: swap(loops.samples.http) }, dns: { base: base(loops.samples.dns), swap: swap(loops.samples.dns) }, errors: loops.samples.errors,
      clustersBytes: clusters.length, clustersFetchMs, inClusters,
    };
  } finally {
    await stopAgent(s.agent);
  }
}

function print(r) {
  console.log(`\n${r.kind} registry, ${r.label}: ${r.services} services, ${r.endpoints} endpoints; fed in ${f0(r.loadMs)} ms, all names answered ${f0(r.readyMs)} ms after the feed started (agent registered after ${f0(r.startupMs)} ms)`);
  console.log(`  RSS MiB        agent ${f1(r.rss.agent)}  proxy ${f1(r.rss.proxy)}  mesh-dns ${f1(r.rss['mesh-dns'])}  sum ${f1(r.rss.agent + r.rss.proxy + r.rss['mesh-dns'])}   (after the changes: ${f1(r.rssAfter.agent)} / ${f1(r.rssAfter.proxy)} / ${f1(r.rssAfter['mesh-dns'])})`);
  console.log(`  ${'change'.padEnd(13)} ${'written'.padStart(8)} ${'agent push'.padStart(11)} ${'mesh-dns'.padStart(9)} ${'proxy'.padStart(7)}  (ms after the change; target end to end < ${TARGET_E2E_MS})`);
  for (const c of r.results) console.log(`  ${c.kind.padEnd(13)} ${f0(c.applied).padStart(8)} ${f0(c.pushMs).padStart(11)} ${f0(c.dnsMs).padStart(9)} ${f0(c.proxyMs).padStart(7)}`);
  const row = (name, l) => `  ${name.padEnd(22)} n=${String(l.length).padStart(6)}  p50 ${f1(percentile(l, 50)).padStart(7)}  p99 ${f1(percentile(l, 99)).padStart(7)}  max ${f1(Math.max(...l)).padStart(7)} ms`;
  console.log(row('requests before', r.http.base));
  console.log(row('requests during swaps', r.http.swap));
  console.log(row('DNS before', r.dns.base));
  console.log(row('DNS during swaps', r.dns.swap));
  console.log(`  request errors: ${r.errors}; /clusters ${(r.clustersBytes / 1048576).toFixed(1)} MiB in ${f0(r.clustersFetchMs)} ms, new endpoints listed: ${r.inClusters ? 'yes' : 'NO'}`);
  console.log(`  table swap bound (longest answer during the swaps minus p50 before): proxy ${f0(Math.max(...r.http.swap) - percentile(r.http.base, 50))} ms, mesh-dns ${f0(Math.max(...r.dns.swap) - percentile(r.dns.base, 50))} ms (target < ${TARGET_SWAP_MS})`);
}

async function main() {
  for (const cmd of ['nginx']) if (!have(cmd)) { console.log(`bench/scale: ${cmd} not installed; skipped (scripts/install-test-deps.sh installs it)`); return; }
  if (!fs.existsSync(path.join(root, 'packages/agent/dist/cli.js'))) throw new Error('packages/agent is not built (pnpm build)');
  // upstream A answers "a"; each upstream B port answers "b<index>" (which endpoint a pick reached)
  const upstream = { a: await freePort(), b: [] };
  for (let i = 0; i < changes; i++) upstream.b.push(await freePort());
  const servers = [`server { listen 127.0.0.1:${upstream.a}; location / { return 200 "a\\n"; } }`, ...upstream.b.map((p, i) => `server { listen 127.0.0.1:${p}; location / { return 200 "b${i}\\n"; } }`)];
  start('nginx', ['-c', writeNginxConf(dir, 'upstream', servers.join('\n')), '-g', 'daemon off;'], 'upstream nginx');
  await waitPort(upstream.a);
  const etcd = registries.includes('etcd') ? await startEtcd() : undefined;
  console.log(`bench/scale: registries ${registries.join(', ')}; small ${smallServices} x ${perService} vs big ${bigServices} x ${perService} endpoints${scope ? `; big again with mesh.scope.services ${scope}` : ''}; ${changes} changes of each kind`);
  const all = [];
  for (const kind of registries) {
    const runs = [['small', smallServices], ['big', bigServices], ...(scope ? [['big-scoped', bigServices]] : [])];
    for (const [label, count] of runs) {
      const feed = kind === 'file' ? fileFeed(path.join(dir, `${kind}-${label}.json`)) : etcdFeed(etcd, `/scale-${label}/`);
      const r = await measure(kind, label, generate(count, upstream), feed, upstream);
      print(r);
      all.push(r);
    }
    const small = all.find((r) => r.kind === kind && r.label === 'small');
    const big = all.find((r) => r.kind === kind && r.label === 'big');
    if (small && big) {
      const per = (k) => ((big.rss[k] - small.rss[k]) / (big.endpoints - small.endpoints)) * 1000;
      console.log(`\n${kind}: RSS per 1,000 endpoints (big minus small): agent ${f1(per('agent'))} MiB, proxy ${f1(per('proxy'))} MiB, mesh-dns ${f1(per('mesh-dns'))} MiB`);
    }
  }
  const summary = all.map((r) => ({ kind: r.kind, label: r.label, endpoints: r.endpoints, rss: Object.fromEntries(Object.entries(r.rss).map(([k, v]) => [k, Number(v.toFixed(1))])),
    dnsMs: r.results.filter((c) => Number.isFinite(c.dnsMs)).map((c) => Math.round(c.dnsMs)), proxyMs: r.results.map((c) => Math.round(c.proxyMs)),
    httpP99Before: Number(percentile(r.http.base, 99).toFixed(1)), httpP99Swap: Number(percentile(r.http.swap, 99).toFixed(1)), httpMaxSwap: Number(Math.max(...r.http.swap).toFixed(1)), dnsMaxSwap: Number(Math.max(...r.dns.swap).toFixed(1)) }));
  console.log(`\n${JSON.stringify(summary)}`);
}

main().catch((err) => { console.error(err); process.exitCode = 1; }).finally(() => { keepAlive.destroy(); cleanup(); });
