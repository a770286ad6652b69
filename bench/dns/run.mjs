#!/usr/bin/env node
// mesh-dns vs dnsmasq answering the same mesh names, side by side in one run, measured with dnsperf.
// Each server is pinned to one core (taskset) and dnsperf to another when the machine has two.
// Prints queries/s (dnsperf, many in flight), p50/p99 latency (one query in flight, latency-client.mjs),
// RSS, and the ratios.
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
const SERVICES = 50;
const DEADLINE = Date.now() + 5 * 60_000;
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

/** CPU seconds (user + system) the process has used so far. */
function cpuSeconds(pid) {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  const ticks = Number(spawnSync('getconf', ['CLK_TCK']).stdout.toString()) || 100;
  return (Number(fields[11]) + Number(fields[12])) / ticks;
}

/**
 * Queries/s as dnsperf saw them, and the server's CPU time per answered query: on a shared machine
 * the first depends on what else runs, the second much less; 1e6 / (µs per query) is the capacity
 * of one fully available core.
 */
function throughput(port, pid) {
  const before = cpuSeconds(pid);
  const out = dnsperf(port, ['-l', String(SECONDS), '-c', '4', '-q', '200']);
  const used = cpuSeconds(pid) - before;
  const qps = Number(/Queries per second:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const lost = /Queries lost:\s+(\d+)/.exec(out)?.[1];
  const completed = Number(/Queries completed:\s+(\d+)/.exec(out)?.[1]);
  const cpuUsPerQuery = (used * 1e6) / completed;
  return { qps, lost: Number(lost), completed, cpuUsPerQuery, capacity: 1e6 / cpuUsPerQuery };
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

async function measure(label, start) {
  const port = await freePort();
  const child = start(port);
  children.push(child);
  await waitAnswer(port);
  // warm up (JIT, caches), then measure
  dnsperf(port, ['-l', '2', '-c', '4', '-q', '200']);
  const t = throughput(port, child.pid);
  const l = latency(port);
  const mem = rssMiB(child.pid);
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  console.log(
    `${label.padEnd(9)} ${t.qps.toFixed(0).padStart(8)} q/s  (lost ${t.lost} of ${t.completed + t.lost})  ` +
      `CPU ${t.cpuUsPerQuery.toFixed(1)} µs/query = ${t.capacity.toFixed(0)} q/s per core   ` +
      `p50 ${l.p50?.toFixed(0)} µs  p99 ${l.p99?.toFixed(0)} µs (n=${l.n}, 1 in flight)   RSS ${mem.rss.toFixed(1)} MiB (peak ${mem.peak.toFixed(1)})`,
  );
  return { ...t, ...l, ...mem };
}

console.log(`bench/dns: ${SERVICES} mesh names, dnsperf ${SECONDS}s per run; server on core ${serverCore}, dnsperf on core ${clientCore}${hasTaskset ? '' : ' (taskset missing: not pinned)'}`);

const dnsmasq = await measure('dnsmasq', (port) => {
  const [cmd, args] = pinned(serverCore, 'dnsmasq', [
    '--no-daemon', `--port=${port}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts',
    '--conf-file=/dev/null', `--pid-file=${path.join(dir, 'dnsmasq.pid')}`, '--user=root', '--local-ttl=30',
    ...names.map((n) => `--address=/${n}/240.240.0.1`),
  ]);
  return spawn(cmd, args, { stdio: 'ignore' });
});

const meshDns = await measure('mesh-dns', (port) => {
  const deadUpstream = '127.0.0.1:9';
  // run the bin itself (its shebang sets the V8 flags it is deployed with)
  const [cmd, args] = pinned(serverCore, bin, [
    '--listen', `127.0.0.1:${port}`, '--no-admin', '--log-level', 'warn', '--upstream', deadUpstream,
    ...Array.from({ length: SERVICES }, (_, i) => ['--service', `svc-${i}`]).flat(),
  ]);
  return spawn(cmd, args, { stdio: 'ignore' });
});

// The floor of any Node.js UDP server on this machine: a dgram socket that echoes each query back.
const echo = await measure('node-echo', (port) => {
  const code = `const s=require('dgram').createSocket({type:'udp4',lookup:(h,o,cb)=>cb(null,h,4)});` +
    `const a=Buffer.from([0xc0,0x0c,0,1,0,1,0,0,0,30,0,4,240,240,0,1]);` +
    `s.on('message',(m,r)=>{m[2]|=0x84;m[7]=1;m[11]=0;s.send(Buffer.concat([m,a]),r.port,r.address)});s.bind(${port},'127.0.0.1')`;
  const [cmd, args] = pinned(serverCore, process.execPath, ['--max-semi-space-size=4', '-e', code]);
  return spawn(cmd, args, { stdio: 'ignore' });
});

console.log(
  `ratio     mesh-dns/dnsmasq: throughput ${(meshDns.qps / dnsmasq.qps).toFixed(2)}x, capacity per core ${(meshDns.capacity / dnsmasq.capacity).toFixed(2)}x, ` +
    `p99 ${(meshDns.p99 / dnsmasq.p99).toFixed(2)}x, RSS ${(meshDns.rss / dnsmasq.rss).toFixed(1)}x`,
);
console.log(`ratio     mesh-dns/node-echo (the Node.js dgram floor): capacity per core ${(meshDns.capacity / echo.capacity).toFixed(2)}x`);
console.log(`target    mesh-dns >= 65000 q/s per core, p99 < 100 µs, RSS < 80 MiB`);
