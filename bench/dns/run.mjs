#!/usr/bin/env node
// mesh-dns vs dnsmasq answering the same mesh names, side by side in one run, measured with dnsperf.
// Each server is pinned to one core (taskset) and dnsperf to another when the machine has two.
// Rows: dnsmasq (the reference), mesh-dns (UDP through the recvmmsg/sendmmsg addon when built),
// mesh-dns-dgram (the same bin with MESH_DNS_NO_NATIVE_UDP=1: Node's dgram, the fallback), node-echo
// (the floor of any Node.js dgram server). BENCH_ROUNDS rounds (default 3) alternate the servers, so
// a change in the machine's load hits all of them; each figure is the median over the rounds.
// Prints queries/s (dnsperf, many in flight), the server's CPU per query (user and system), p50/p99
// latency (one query in flight, latency-client.mjs, first round), RSS, and the ratios.
// BENCH_DNS_PROFILE=1 adds one run of each mesh-dns row under `node --cpu-prof` and prints where the
// user-space time goes (the profiles stay in bench/results/dns-profile/).
// Bounded: each dnsperf run has a time limit and the whole script a deadline. It measures; it never fails on a figure.
import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const here = path.dirname(new URL(import.meta.url).pathname);
const bin = path.resolve(here, '../../packages/mesh-dns/bin/mesh-dns.js');
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const LATENCY_SECONDS = Number(process.env.BENCH_LATENCY_SECONDS ?? 3);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const PROFILE = process.env.BENCH_DNS_PROFILE === '1';
const SERVICES = 50;
const DEADLINE = Date.now() + 10 * 60_000;
setTimeout(() => {
  console.error('bench/dns: deadline reached, stopping');
  cleanup();
  process.exit(1);
}, DEADLINE - Date.now()).unref();

for (const tool of ['dnsperf', 'dnsmasq']) {
  if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) {
    console.error(`bench/dns: ${tool} is not installed (apt-get install -y ${tool}); skipping`);
    process.exit(0);
  }
}
if (!fs.existsSync(path.resolve(here, '../../packages/mesh-dns/dist/cli.js'))) {
  console.error('bench/dns: build mesh-dns first (pnpm --filter @mesh-agent/mesh-dns build)');
  process.exit(1);
}

const cpus = os.cpus().length;
const hasTaskset = spawnSync('sh', ['-c', 'command -v taskset']).status === 0;
const serverCore = cpus > 1 ? 1 : 0;
const clientCore = 0;
const pinned = (core, cmd, args) => (hasTaskset ? ['taskset', ['-c', String(core), cmd, ...args]] : [cmd, args]);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-dns-'));
fs.chmodSync(dir, 0o755);
const names = Array.from({ length: SERVICES }, (_, i) => `svc-${i}.default.svc.cluster.local`);
const queryFile = path.join(dir, 'queries.txt');
fs.writeFileSync(queryFile, names.map((n) => `${n} A`).join('\n') + '\n', { mode: 0o644 });

const children = [];
function cleanup() {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
}
process.on('exit', cleanup);

async function freePort() {
  const s = dgram.createSocket('udp4');
  await new Promise((r) => s.bind(0, '127.0.0.1', r));
  const port = s.address().port;
  s.close();
  return port;
}

async function waitAnswer(port) {
  for (let i = 0; i < 200; i++) {
    const r = spawnSync('dig', [`@127.0.0.1`, '-p', String(port), names[0], '+short', '+noedns', '+tries=1', '+timeout=1']);
    if (r.stdout?.toString().trim() === '240.240.0.1') return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`no answer on port ${port}`);
}

function rssMiB(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

function dnsperf(port, extra) {
  const [cmd, args] = pinned(clientCore, 'dnsperf', ['-s', '127.0.0.1', '-p', String(port), '-d', queryFile, ...extra]);
  const r = spawnSync(cmd, args, { maxBuffer: 512 * 1024 * 1024, timeout: (SECONDS + 30) * 1000 });
  return r.stdout.toString();
}

const TICKS = Number(spawnSync('getconf', ['CLK_TCK']).stdout.toString()) || 100;
/** CPU seconds in user space and in the kernel the process has used so far. */
function cpuSeconds(pid) {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return { user: Number(fields[11]) / TICKS, system: Number(fields[12]) / TICKS };
}

/**
 * Queries/s as dnsperf saw them, and the server's CPU time per answered query: on a shared machine
 * the first depends on what else runs, the second much less; 1e6 / (µs per query) is the capacity
 * of one fully available core.
 */
function throughput(port, pid) {
  const before = cpuSeconds(pid);
  const out = dnsperf(port, ['-l', String(SECONDS), '-c', '4', '-q', '200']);
  const after = cpuSeconds(pid);
  const qps = Number(/Queries per second:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const lost = /Queries lost:\s+(\d+)/.exec(out)?.[1];
  const completed = Number(/Queries completed:\s+(\d+)/.exec(out)?.[1]);
  const userUs = ((after.user - before.user) * 1e6) / completed;
  const systemUs = ((after.system - before.system) * 1e6) / completed;
  const cpuUsPerQuery = userUs + systemUs;
  return { qps, lost: Number(lost), completed, userUs, systemUs, cpuUsPerQuery, capacity: 1e6 / cpuUsPerQuery };
}

/** One query in flight, measured by a small client pinned to the client core (dnsperf has no percentiles). */
function latency(port) {
  const [cmd, args] = pinned(clientCore, process.execPath, [path.join(here, 'latency-client.mjs'), String(port), String(LATENCY_SECONDS), names[1]]);
  const r = spawnSync(cmd, args, { timeout: (LATENCY_SECONDS + 30) * 1000 });
  try {
    return JSON.parse(r.stdout.toString());
  } catch {
    return { n: 0, p50: NaN, p99: NaN };
  }
}

/** One round of one server: start it, wait for an answer, warm up, measure, stop it. */
async function measureOnce(start, withLatency) {
  const port = await freePort();
  const child = start(port);
  children.push(child);
  await waitAnswer(port);
  // warm up (JIT, caches), then measure
  dnsperf(port, ['-l', '2', '-c', '4', '-q', '200']);
  const t = throughput(port, child.pid);
  const l = withLatency ? latency(port) : {};
  const mem = rssMiB(child.pid);
  child.kill('SIGTERM');
  await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
  return { ...t, ...l, ...mem, udpPath: child.udpPath };
}

const median = (values) => {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
};

function summarise(label, runs) {
  const m = (key) => median(runs.map((r) => r[key]));
  const first = runs[0];
  const cpuUsPerQuery = m('cpuUsPerQuery');
  const s = {
    qps: m('qps'), lost: runs.reduce((a, r) => a + r.lost, 0), completed: runs.reduce((a, r) => a + r.completed, 0),
    userUs: m('userUs'), systemUs: m('systemUs'), cpuUsPerQuery, capacity: 1e6 / cpuUsPerQuery,
    p50: first.p50, p99: first.p99, n: first.n, rss: m('rss'), peak: m('peak'), udpPath: first.udpPath,
    capacities: runs.map((r) => Math.round(r.capacity)),
  };
  console.log(
    `${label.padEnd(14)} ${s.qps.toFixed(0).padStart(8)} q/s  (lost ${s.lost} of ${s.completed + s.lost})  ` +
      `CPU ${s.cpuUsPerQuery.toFixed(1)} µs/query (user ${s.userUs.toFixed(1)}, system ${s.systemUs.toFixed(1)}) = ${s.capacity.toFixed(0)} q per CPU-second ` +
      `[rounds: ${s.capacities.join(', ')}]   p50 ${s.p50?.toFixed(0)} µs  p99 ${s.p99?.toFixed(0)} µs (n=${s.n}, 1 in flight)   RSS ${s.rss.toFixed(1)} MiB (peak ${s.peak.toFixed(1)})`,
  );
  return s;
}

console.log(
  `bench/dns: ${SERVICES} mesh names, dnsperf ${SECONDS}s per run, ${ROUNDS} round(s) alternating the servers, medians; ` +
    `server on core ${serverCore}, dnsperf on core ${clientCore}${hasTaskset ? '' : ' (taskset missing: not pinned)'}; load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`,
);

const startDnsmasq = (port) => {
  const [cmd, args] = pinned(serverCore, 'dnsmasq', [
    '--no-daemon', `--port=${port}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts',
    '--conf-file=/dev/null', `--pid-file=${path.join(dir, 'dnsmasq.pid')}`, '--user=root', '--local-ttl=30',
    ...names.map((n) => `--address=/${n}/240.240.0.1`),
  ]);
  return spawn(cmd, args, { stdio: 'ignore' });
};

/**
 * mesh-dns from its bin (its shebang sets the V8 flags it is deployed with), or under `node
 * nodeFlags... bin` to profile it. Its 'mesh-dns serving' log line says which UDP path it took.
 */
const startMeshDns = (env, nodeFlags) => (port) => {
  const deadUpstream = '127.0.0.1:9';
  const meshArgs = [
    '--listen', `127.0.0.1:${port}`, '--no-admin', '--log-level', 'info', '--upstream', deadUpstream,
    ...Array.from({ length: SERVICES }, (_, i) => ['--service', `svc-${i}`]).flat(),
  ];
  const [cmd, args] = nodeFlags
    ? pinned(serverCore, process.execPath, ['--max-semi-space-size=4', ...nodeFlags, bin, ...meshArgs])
    : pinned(serverCore, bin, meshArgs);
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, ...env } });
  let buffered = '';
  child.stdout.on('data', (chunk) => {
    buffered += chunk;
    const line = buffered.split('\n').find((l) => l.includes('"mesh-dns serving"'));
    if (line && child.udpPath === undefined) {
      try {
        const entry = JSON.parse(line);
        child.udpPath = entry.udpPath + (entry.udpPathReason ? ` (${entry.udpPathReason})` : '');
      } catch {
        child.udpPath = 'unknown';
      }
    }
    if (buffered.length > 65536) buffered = buffered.slice(-4096);
  });
  return child;
};

// The floor of any Node.js UDP server on this machine: a dgram socket that echoes each query back.
const startEcho = (port) => {
  const code = `const s=require('dgram').createSocket({type:'udp4',lookup:(h,o,cb)=>cb(null,h,4)});` +
    `const a=Buffer.from([0xc0,0x0c,0,1,0,1,0,0,0,30,0,4,240,240,0,1]);` +
    `s.on('message',(m,r)=>{m[2]|=0x84;m[7]=1;m[11]=0;s.send(Buffer.concat([m,a]),r.port,r.address)});s.bind(${port},'127.0.0.1')`;
  const [cmd, args] = pinned(serverCore, process.execPath, ['--max-semi-space-size=4', '-e', code]);
  return spawn(cmd, args, { stdio: 'ignore' });
};

const servers = [
  ['dnsmasq', startDnsmasq],
  ['mesh-dns', startMeshDns({})],
  ['mesh-dns-dgram', startMeshDns({ MESH_DNS_NO_NATIVE_UDP: '1' })],
  ['node-echo', startEcho],
];
const runs = new Map(servers.map(([label]) => [label, []]));
for (let round = 0; round < ROUNDS; round++) {
  for (const [label, start] of servers) runs.get(label).push(await measureOnce(start, round === 0));
}
const results = Object.fromEntries(servers.map(([label]) => [label, summarise(label, runs.get(label))]));
const { dnsmasq, 'mesh-dns': meshDns, 'mesh-dns-dgram': dgramDns, 'node-echo': echo } = results;
console.log(`udp path  mesh-dns: ${meshDns.udpPath ?? 'unknown'}; mesh-dns-dgram: ${dgramDns.udpPath ?? 'unknown'}`);
console.log(
  `ratio     mesh-dns/dnsmasq: throughput ${(meshDns.qps / dnsmasq.qps).toFixed(2)}x, per CPU-second ${(meshDns.capacity / dnsmasq.capacity).toFixed(2)}x, ` +
    `p99 ${(meshDns.p99 / dnsmasq.p99).toFixed(2)}x, RSS ${(meshDns.rss / dnsmasq.rss).toFixed(1)}x`,
);
console.log(
  `ratio     mesh-dns-dgram/dnsmasq per CPU-second ${(dgramDns.capacity / dnsmasq.capacity).toFixed(2)}x; ` +
    `mesh-dns/mesh-dns-dgram (what the addon buys) ${(meshDns.capacity / dgramDns.capacity).toFixed(2)}x; ` +
    `mesh-dns-dgram/node-echo (the Node.js dgram floor) ${(dgramDns.capacity / echo.capacity).toFixed(2)}x`,
);
console.log(`target    mesh-dns >= 100000 queries per CPU-second and >= 0.8x dnsmasq (issue 17); p99 < 100 µs, RSS < 80 MiB (issue 3)`);

if (PROFILE) {
  const profileDir = path.resolve(here, '../results/dns-profile');
  fs.mkdirSync(profileDir, { recursive: true });
  for (const [label, env] of [['mesh-dns', {}], ['mesh-dns-dgram', { MESH_DNS_NO_NATIVE_UDP: '1' }]]) {
    const before = new Set(fs.readdirSync(profileDir));
    const r = await measureOnce(startMeshDns(env, ['--cpu-prof', `--cpu-prof-dir=${profileDir}`]), false);
    // the profile is written at exit
    let file;
    for (let i = 0; i < 50 && !file; i++) {
      file = fs.readdirSync(profileDir).find((f) => !before.has(f) && f.endsWith('.cpuprofile'));
      if (!file) await new Promise((res) => setTimeout(res, 100));
    }
    console.log(`profile   ${label} (under --cpu-prof: ${r.capacity.toFixed(0)} q per CPU-second, user ${r.userUs.toFixed(1)} µs + system ${r.systemUs.toFixed(1)} µs per query): ${file ? path.join(profileDir, file) : 'not written'}`);
    if (file) for (const line of summariseProfile(path.join(profileDir, file))) console.log(`          ${line}`);
  }
}

/**
 * Self time by function over the busy samples from the first query on (startup's module loading
 * left out; idle = the event loop waiting or in libuv and addon code outside JS), top 12.
 */
function summariseProfile(file) {
  const p = JSON.parse(fs.readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const hot = new Set(['onUdpBatch', 'answerBatched', 'onUdpMessage', 'parseQuery']);
  const from = Math.max(0, p.samples.findIndex((id) => hot.has(byId.get(id).callFrame.functionName)));
  const self = new Map();
  let busy = 0;
  let all = 0;
  for (let i = from; i < p.samples.length; i++) {
    const node = byId.get(p.samples[i]);
    const dt = p.timeDeltas[i] ?? 0;
    all += dt;
    const name = node.callFrame.functionName || '(anonymous)';
    if (name === '(idle)') continue;
    const where = node.callFrame.url ? ` ${node.callFrame.url.split('/').slice(-2).join('/')}:${node.callFrame.lineNumber + 1}` : '';
    const key = `${name}${where}`;
    busy += dt;
    self.set(key, (self.get(key) ?? 0) + dt);
  }
  return [
    `busy (JS, GC, V8) ${((100 * busy) / all).toFixed(1)} % of the samples since the first query; of that:`,
    ...[...self].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([key, t]) => `${((100 * t) / busy).toFixed(1).padStart(5)} %  ${key}`),
  ];
}
