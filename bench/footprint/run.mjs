#!/usr/bin/env node
// The whole sidecar's memory (issue 17, item 4): starts mesh-agent as the e2e lab does
// (`mesh-agent start --config FILE`, the etcd registry when etcd is installed, the built-in mTLS
// issuer), on ephemeral ports only and with capture off (it never touches iptables nor the default
// ports), and prints each process's RSS (VmRSS) and PSS (smaps_rollup) idle and under a bounded load:
// wrk through the proxy listener (Host cycling over the registry's services) together with dnsperf
// against mesh-dns. In the same run, the same load against the native reference: nginx as the
// reverse proxy and dnsmasq answering the same names. Prints a table, the sums, the targets
// (150 MiB idle, 200 MiB loaded), the ratios ours / reference and one JSON line.
// FOOTPRINT_TREES=/a,/b measures the sidecar of several checkouts (each built) one after another in
// the same run, e.g. a commit before a change and the tree after it. Measures only; never fails on a figure.
import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import { benchRun, freePort, have, pin, root, waitPort, writeNginxConf } from '../proxy/common.mjs';

const idleSeconds = Number(process.env.FOOTPRINT_IDLE_SECONDS ?? 15);
const loadSeconds = Number(process.env.BENCH_SECONDS ?? 20);
const serviceCount = Number(process.env.FOOTPRINT_SERVICES ?? 50);
const registryKind = process.env.FOOTPRINT_REGISTRY ?? (have('etcd') ? 'etcd' : 'file');
const mtls = process.env.FOOTPRINT_MTLS !== '0';
const trees = (process.env.FOOTPRINT_TREES ?? root).split(',').filter(Boolean).map((t) => path.resolve(t));
/** Extra lines appended to the agent config (YAML), e.g. `proxy:\n  nodeOptions: [...]` to try flags. */
const extraConfig = process.env.FOOTPRINT_AGENT_CONFIG ?? '';
/** Node flags of the agent process itself (the bin is run as `node FLAGS bin`, as a unit file would). */
const agentFlags = (process.env.FOOTPRINT_AGENT_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean);
const TARGET_IDLE_MIB = 150;
const TARGET_LOADED_MIB = 200;

const { dir, start, cleanup } = benchRun('bench-footprint-');
fs.chmodSync(dir, 0o755); // the proxy and mesh-dns run as uid 1337 when this runs as root
const services = Array.from({ length: serviceCount }, (_, i) => `svc-${i}`);

/** VmRSS, VmHWM, RssAnon, RssFile (MiB) from /proc/PID/status and Pss (MiB) from smaps_rollup; null if gone. */
function memoryOf(pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (text, key) => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? NaN);
    let pss = NaN;
    try { pss = kb(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'), 'Pss') / 1024; } catch { /* older kernel */ }
    return { rss: kb(status, 'VmRSS') / 1024, hwm: kb(status, 'VmHWM') / 1024, anon: kb(status, 'RssAnon') / 1024, file: kb(status, 'RssFile') / 1024, pss };
  } catch { return null; }
}

const childrenOf = (pid) => {
  try { return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch { return []; }
};
const cmdlineOf = (pid) => { try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0'); } catch { return []; } };

/** Memory of a group of processes (nginx's master + worker): the sum of each field. */
function memoryOfGroup(pids) {
  const all = pids.map(memoryOf).filter(Boolean);
  if (all.length === 0) return null;
  const sum = (k) => all.reduce((a, m) => a + m[k], 0);
  return { rss: sum('rss'), hwm: sum('hwm'), anon: sum('anon'), file: sum('file'), pss: sum('pss') };
}

/** Samples `groups` ({ name: () => pids }) every 250 ms while `work` runs: the peak of each and of their sum at one instant. */
async function sampleWhile(groups, work) {
  const peak = Object.fromEntries(Object.keys(groups).map((k) => [k, { rss: 0, pss: 0 }]));
  let peakSum = { rss: 0, pss: 0 };
  const sample = () => {
    let rss = 0;
    let pss = 0;
    for (const [name, pids] of Object.entries(groups)) {
      const m = memoryOfGroup(pids());
      if (!m) continue;
      peak[name].rss = Math.max(peak[name].rss, m.rss);
      peak[name].pss = Math.max(peak[name].pss, m.pss);
      rss += m.rss;
      pss += m.pss;
    }
    peakSum = { rss: Math.max(peakSum.rss, rss), pss: Math.max(peakSum.pss, pss) };
  };
  const timer = setInterval(sample, 250);
  try {
    const result = await work();
    sample();
    return { result, peak, peakSum };
  } finally {
    clearInterval(timer);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Runs a command to its end without blocking the event loop (the sampler keeps running). */
function run(cmd, args, timeoutMs) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => { clearTimeout(timer); resolve({ code: -1, out: String(err) }); });
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, out }); });
  });
}

/** wrk through a proxy, one connection pool per service: the Lua script cycles the Host header. */
function writeWrkScript() {
  const file = path.join(dir, 'hosts.lua');
  fs.writeFileSync(file, `local hosts = { ${services.map((s) => `"${s}"`).join(', ')} }
local i = 0
request = function()
  i = i % #hosts + 1
  return wrk.format("GET", "/", { ["Host"] = hosts[i] })
end
`);
  return file;
}

function writeQueryFile() {
  const file = path.join(dir, 'queries.txt');
  fs.writeFileSync(file, services.map((s) => `${s}.default.svc.cluster.local A`).join('\n') + '\n', { mode: 0o644 });
  return file;
}

/** The bounded load: wrk (core 1) for loadSeconds through the proxy, and dnsperf (core 1) for as long against the DNS server. */
async function load(proxyPort, dnsPort, files) {
  const [wcmd, wargs] = pin(1, 'wrk', ['-t1', '-c50', `-d${loadSeconds}s`, '-s', files.wrk, `http://127.0.0.1:${proxyPort}/`]);
  const dnsLoad = have('dnsperf')
    ? (() => { const [c, a] = pin(1, 'dnsperf', ['-s', '127.0.0.1', '-p', String(dnsPort), '-d', files.queries, '-l', String(loadSeconds), '-c', '4', '-q', '100']); return run(c, a, (loadSeconds + 30) * 1000); })()
    : udpLoop(dnsPort, loadSeconds);
  const [w, d] = await Promise.all([run(wcmd, wargs, (loadSeconds + 30) * 1000), dnsLoad]);
  const requests = Number(/(\d+) requests in/.exec(w.out)?.[1] ?? 0);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(w.out)?.[1] ?? 0);
  const queries = Number(/Queries completed:\s+(\d+)/.exec(d.out)?.[1] ?? d.queries ?? 0);
  return { requests, non2xx, queries, wrkOut: w.out };
}

/** Without dnsperf: 100 queries in flight from a UDP socket in this process for `secs` seconds. */
async function udpLoop(port, secs) {
  const socket = dgram.createSocket('udp4');
  let answered = 0;
  const query = (id, name) => {
    const labels = `${name}.default.svc.cluster.local`.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
    return Buffer.concat([Buffer.from([id >> 8, id & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), ...labels, Buffer.from([0, 0, 1, 0, 1])]);
  };
  const end = Date.now() + secs * 1000;
  let id = 0;
  const send = () => { if (Date.now() < end) socket.send(query(id = (id + 1) & 0xffff, services[id % services.length]), port, '127.0.0.1'); };
  socket.on('message', () => { answered++; send(); });
  socket.on('error', () => undefined);
  await new Promise((r) => socket.bind(0, '127.0.0.1', r));
  for (let i = 0; i < 100; i++) send();
  await sleep(secs * 1000 + 200);
  socket.close();
  return { queries: answered, out: '' };
}

async function waitDns(port, name) {
  for (let i = 0; i < 300; i++) {
    const r = spawnSync('dig', ['@127.0.0.1', '-p', String(port), name, '+short', '+tries=1', '+timeout=1']);
    if (/^\d+\.\d+\.\d+\.\d+$/m.test(r.stdout?.toString() ?? '')) return;
    await sleep(100);
  }
  throw new Error(`no DNS answer for ${name} on port ${port}`);
}

async function waitHttp(port, host) {
  for (let i = 0; i < 300; i++) {
    const r = spawnSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', '-H', `Host: ${host}`, `http://127.0.0.1:${port}/`]);
    if (r.stdout?.toString() === '200') return;
    await sleep(100);
  }
  throw new Error(`no 200 for Host ${host} on port ${port}`);
}

async function startEtcd() {
  const client = await freePort();
  const peer = await freePort();
  const data = path.join(dir, 'etcd');
  start('etcd', ['--data-dir', data, '--listen-client-urls', `http://127.0.0.1:${client}`, '--advertise-client-urls', `http://127.0.0.1:${client}`,
    '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
    '--initial-cluster', `default=http://127.0.0.1:${peer}`, '--log-level', 'error'], 'etcd');
  await waitPort(client, 30_000);
  return `http://127.0.0.1:${client}`;
}

/** Writes a peer instance the way another host's agent registers it (no lease: it stays for the run). */
async function etcdPut(endpoint, key, value) {
  const b64 = (s) => Buffer.from(s).toString('base64');
  for (let i = 0; i < 50; i++) {
    try {
      const res = await fetch(`${endpoint}/v3/kv/put`, { method: 'POST', body: JSON.stringify({ key: b64(key), value: b64(value) }) });
      if (res.ok) return;
    } catch { /* not up yet */ }
    await sleep(200);
  }
  throw new Error(`cannot write ${key} to etcd at ${endpoint}`);
}

const instancesOf = (upstreamPorts, service) => upstreamPorts.map((port, i) => ({ id: `${service}-${i}`, address: '127.0.0.1', port }));

/** Starts one sidecar from `tree` and returns its ports and the pids of agent, proxy and mesh-dns. */
async function startSidecar(tree, label, upstreamPorts, appPort, etcdEndpoint) {
  const base = path.join(dir, label);
  fs.mkdirSync(path.join(base, 'run'), { recursive: true, mode: 0o755 });
  const agentBin = path.join(tree, 'packages/agent/bin/mesh-agent.js');
  for (const pkg of ['agent', 'proxy', 'mesh-dns']) {
    if (!fs.existsSync(path.join(tree, `packages/${pkg}/dist/cli.js`))) throw new Error(`${tree}: packages/${pkg} is not built (pnpm build)`);
  }
  const ports = { agentAdmin: await freePort(), proxyAdmin: await freePort(), proxyListener: await freePort(), dns: await freePort(), dnsAdmin: await freePort() };
  const write = (name, text) => { const f = path.join(base, name); fs.writeFileSync(f, text, { mode: 0o644 }); return f; };
  write('spec.yaml', JSON.stringify({ apiVersion: 'v1', kind: 'Application', spec: { services: [{ name: 'bench-app', ports: [{ targetPort: appPort, protocol: 'http' }], healthCheck: { path: '/health' } }] } }));
  const global = write('global.yaml', JSON.stringify({ healthCheck: { intervalMs: 1000, timeoutMs: 1000 }, outlierDetection: { enabled: false } }));
  let registry;
  if (registryKind === 'etcd') {
    const prefix = `/footprint-${label}/`;
    for (const s of services) for (const inst of instancesOf(upstreamPorts, s)) await etcdPut(etcdEndpoint, `${prefix}services/default/${s}/${inst.id}`, JSON.stringify(inst));
    registry = ['registry:', '  backend: etcd', '  etcd:', `    endpoints: [${etcdEndpoint}]`, `    prefix: ${prefix}`];
  } else {
    const file = write('registry.yaml', JSON.stringify({ services: services.map((s) => ({ name: s, instances: instancesOf(upstreamPorts, s) })) }));
    registry = ['registry:', '  backend: file', '  file:', `    path: ${file}`];
  }
  let mtlsLines = [];
  if (mtls) {
    const caDir = path.join(base, 'ca');
    const r = spawnSync(process.execPath, [agentBin, 'ca', 'init', '--dir', caDir, '--trust-domain', 'cluster.local'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`mesh-agent ca init failed: ${r.stderr}`);
    mtlsLines = ['mtls:', '  trustDomain: cluster.local', '  mode: permissive', `  ca: { dir: ${caDir} }`];
  }
  const config = write('agent.yaml', [
    'node:', '  ip: 127.0.0.1', '  serviceName: bench-app',
    'app:', `  configDir: ${base}`, `  specFile: ${path.join(base, 'spec.yaml')}`,
    'ports:', ...Object.entries(ports).map(([k, v]) => `  ${k}: ${v}`),
    'mesh:', `  globalConfigFile: ${global}`,
    // a dead upstream: names outside the mesh are never asked of the machine's resolver
    'dns:', '  upstreams: ["127.0.0.1:9"]',
    ...registry,
    'iptables:', '  enabled: false', `  stateFile: ${path.join(base, 'run', 'iptables-state.json')}`,
    'log:', '  level: warn',
    'paths:', `  runDir: ${path.join(base, 'run')}`, `  proxyBootstrap: ${path.join(base, 'run', 'proxy-bootstrap.json')}`, `  dnsConfig: ${path.join(base, 'run', 'mesh-dns.json')}`,
    ...mtlsLines,
    extraConfig,
    '',
  ].join('\n'));
  const agent = start(process.execPath, [...agentFlags, agentBin, 'start', '--config', config], `mesh-agent (${label})`);
  const wait = await run(process.execPath, [agentBin, 'wait', '--registered', '--timeout', '90', '--admin', `http://127.0.0.1:${ports.agentAdmin}`], 100_000);
  if (wait.code !== 0) throw new Error(`mesh-agent (${label}) did not reach <SERVICE_REGISTERED>: ${wait.out}`);
  const pidOf = (bin) => () => childrenOf(agent.pid).filter((p) => cmdlineOf(p).some((a) => a.endsWith(bin)));
  return { agent, ports, groups: { agent: () => [agent.pid], proxy: pidOf('mesh-proxy.js'), 'mesh-dns': pidOf('mesh-dns.js') } };
}

async function stopChild(child) {
  if (child.exitCode !== null) return;
  child.killedByUs = true;
  child.kill('SIGTERM');
  await Promise.race([new Promise((r) => child.once('exit', r)), sleep(15_000)]);
  if (child.exitCode === null) child.kill('SIGKILL');
}

/** Idle figures (after idleSeconds), the peaks under load and the figures after it, for one set of process groups. */
async function measure(groups, proxyPort, dnsPort, files) {
  await sleep(idleSeconds * 1000);
  const idle = Object.fromEntries(Object.entries(groups).map(([name, pids]) => [name, memoryOfGroup(pids())]));
  const { result, peak, peakSum } = await sampleWhile(groups, () => load(proxyPort, dnsPort, files));
  const hwm = Object.fromEntries(Object.entries(groups).map(([name, pids]) => [name, memoryOfGroup(pids())?.hwm ?? NaN]));
  return { idle, peak, peakSum, hwm, load: result };
}

const f1 = (n) => (Number.isFinite(n) ? n.toFixed(1) : '-');
const sumOf = (figures, key) => Object.values(figures).reduce((a, m) => a + (m?.[key] ?? 0), 0);

function printRows(label, r) {
  console.log(`\n${label}: ${r.load.requests} requests (${r.load.non2xx} non-2xx), ${r.load.queries} DNS queries in ${loadSeconds} s`);
  console.log(`  ${'process'.padEnd(10)} ${'idle RSS'.padStart(9)} ${'idle PSS'.padStart(9)} ${'anon'.padStart(7)} ${'file'.padStart(7)}   ${'load RSS'.padStart(9)} ${'load PSS'.padStart(9)} ${'VmHWM'.padStart(7)}  (MiB)`);
  for (const name of Object.keys(r.idle)) {
    const i = r.idle[name] ?? {};
    console.log(`  ${name.padEnd(10)} ${f1(i.rss).padStart(9)} ${f1(i.pss).padStart(9)} ${f1(i.anon).padStart(7)} ${f1(i.file).padStart(7)}   ${f1(r.peak[name].rss).padStart(9)} ${f1(r.peak[name].pss).padStart(9)} ${f1(r.hwm[name]).padStart(7)}`);
  }
  console.log(`  ${'sum'.padEnd(10)} ${f1(sumOf(r.idle, 'rss')).padStart(9)} ${f1(sumOf(r.idle, 'pss')).padStart(9)} ${f1(sumOf(r.idle, 'anon')).padStart(7)} ${f1(sumOf(r.idle, 'file')).padStart(7)}   ${f1(r.peakSum.rss).padStart(9)} ${f1(r.peakSum.pss).padStart(9)}`);
}

async function main() {
  for (const cmd of ['wrk', 'nginx', 'dig', 'curl']) if (!have(cmd)) { console.log(`bench/footprint: ${cmd} not installed; skipped (scripts/install-test-deps.sh installs it)`); return; }
  const files = { wrk: writeWrkScript(), queries: writeQueryFile() };
  // the application and the peers' instances: nginx `return 200` on two ports (core 1), shared by every run
  const upstreamPorts = [await freePort(), await freePort()];
  const [ucmd, uargs] = pin(1, 'nginx', ['-c', writeNginxConf(dir, 'upstream', `server { listen 127.0.0.1:${upstreamPorts[0]}; listen 127.0.0.1:${upstreamPorts[1]}; location / { return 200 "ok\\n"; } }`), '-g', 'daemon off;']);
  start(ucmd, uargs, 'upstream nginx');
  await Promise.all(upstreamPorts.map((p) => waitPort(p)));
  const etcdEndpoint = registryKind === 'etcd' ? await startEtcd() : undefined;

  console.log(`bench/footprint: ${serviceCount} services x 2 instances, registry ${registryKind}, mTLS ${mtls ? 'on (built-in issuer, permissive)' : 'off'}; idle ${idleSeconds} s, then ${loadSeconds} s of wrk -t1 -c50 (Host over every service) + ${have('dnsperf') ? 'dnsperf -c4 -q100' : 'a UDP query loop (100 in flight)'} at once`);
  const results = [];
  for (const [i, tree] of trees.entries()) {
    const label = trees.length > 1 ? `sidecar ${i + 1} (${tree})` : 'sidecar';
    const s = await startSidecar(tree, `t${i}`, upstreamPorts, upstreamPorts[0], etcdEndpoint);
    try {
      await waitHttp(s.ports.proxyListener, services[0]);
      await waitDns(s.ports.dns, `${services[0]}.default.svc.cluster.local`);
      const r = await measure(s.groups, s.ports.proxyListener, s.ports.dns, files);
      printRows(`${label}: agent + proxy + mesh-dns`, r);
      results.push({ label, tree, ...r });
    } finally {
      await stopChild(s.agent);
    }
  }

  // the native reference under the same load: nginx as the reverse proxy (one worker), dnsmasq for the same names (core 0, like ours)
  const ngPort = await freePort();
  const [ncmd, nargs] = pin(0, 'nginx', ['-c', writeNginxConf(dir, 'proxy', `upstream up { ${upstreamPorts.map((p) => `server 127.0.0.1:${p};`).join(' ')} keepalive 128; }
  server { listen 127.0.0.1:${ngPort}; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } }`), '-g', 'daemon off;']);
  const ngx = start(ncmd, nargs, 'nginx reverse proxy');
  let reference = null;
  if (have('dnsmasq')) {
    const dnsPort = await freePort();
    const [dcmd, dargs] = pin(0, 'dnsmasq', ['--no-daemon', `--port=${dnsPort}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts', '--conf-file=/dev/null',
      `--pid-file=${path.join(dir, 'dnsmasq.pid')}`, '--user=root', ...services.map((s, i) => `--address=/${s}.default.svc.cluster.local/240.240.${i >> 8}.${(i & 255) + 1}`)]);
    const dnsmasq = start(dcmd, dargs, 'dnsmasq');
    await waitPort(ngPort);
    await waitHttp(ngPort, services[0]);
    await waitDns(dnsPort, `${services[0]}.default.svc.cluster.local`);
    reference = await measure({ nginx: () => [ngx.pid, ...childrenOf(ngx.pid)], dnsmasq: () => [dnsmasq.pid] }, ngPort, dnsPort, files);
    printRows('reference: nginx (master + worker) + dnsmasq', reference);
  } else {
    console.log('\nreference: dnsmasq not installed; no reference measured');
  }

  console.log(`\ntargets: the sidecar <= ${TARGET_IDLE_MIB} MiB RSS idle, <= ${TARGET_LOADED_MIB} MiB under load`);
  for (const r of results) {
    const idle = sumOf(r.idle, 'rss');
    const loaded = r.peakSum.rss;
    const ratios = reference ? `; ours / reference: idle RSS ${(idle / sumOf(reference.idle, 'rss')).toFixed(1)}x, PSS ${(sumOf(r.idle, 'pss') / sumOf(reference.idle, 'pss')).toFixed(1)}x, loaded RSS ${(loaded / reference.peakSum.rss).toFixed(1)}x` : '';
    console.log(`  ${r.label}: idle ${f1(idle)} MiB (${idle <= TARGET_IDLE_MIB ? 'met' : 'NOT met'}), loaded ${f1(loaded)} MiB (${loaded <= TARGET_LOADED_MIB ? 'met' : 'NOT met'})${ratios}`);
  }
  const compact = (r) => ({ idle: Object.fromEntries(Object.entries(r.idle).map(([k, m]) => [k, { rss: +f1(m?.rss), pss: +f1(m?.pss) }])), loaded: Object.fromEntries(Object.entries(r.peak).map(([k, m]) => [k, { rss: +f1(m.rss), pss: +f1(m.pss) }])), idleSum: +f1(sumOf(r.idle, 'rss')), loadedSum: +f1(r.peakSum.rss), requests: r.load.requests, queries: r.load.queries });
  console.log(JSON.stringify({ bench: 'footprint', services: serviceCount, registry: registryKind, mtls, loadSeconds, sidecars: results.map((r) => ({ tree: r.tree, ...compact(r) })), reference: reference && compact(reference) }));
}

const guard = setTimeout(() => { console.error('bench/footprint: time bound reached'); cleanup(); process.exit(1); }, (trees.length + 1) * (idleSeconds + loadSeconds + 150) * 1000);
main().catch((err) => { console.error(err); process.exitCode = 1; }).finally(() => { clearTimeout(guard); cleanup(); });
