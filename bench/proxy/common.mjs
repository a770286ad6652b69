// What the proxy benchmarks (run.mjs, resilience.mjs) share: paths, the time bound, pinning to a core,
// free ports, readiness by polling, wrk's figures, and the child processes they start and clean up.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const here = path.dirname(new URL(import.meta.url).pathname);
export const root = path.resolve(here, '../..');
/** Seconds per wrk run: BENCH_SECONDS (default 10). */
export const seconds = Number(process.env.BENCH_SECONDS ?? 10);

export function have(cmd) { return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0; }
export const canPin = have('taskset') && spawnSync('taskset', ['-c', '0', 'true']).status === 0 && os.cpus().length > 1;
/** [cmd, args] that run `cmd` on `core` where taskset works, as is otherwise. */
export const pin = (core, cmd, args) => (canPin ? ['taskset', ['-c', String(core), cmd, ...args]] : [cmd, args]);

export async function freePort() {
  return new Promise((resolve) => { const s = net.createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); }); });
}

export async function waitPort(port, deadlineMs = 15000) {
  const end = Date.now() + deadlineMs;
  while (Date.now() < end) {
    const ok = await new Promise((resolve) => { const s = net.connect(port, '127.0.0.1'); s.on('connect', () => { s.destroy(); resolve(true); }); s.on('error', () => resolve(false)); });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`port ${port} did not open`);
}

/** req/s, p99 in ms, the request count and the non-2xx/3xx count from wrk --latency output. */
export function parseWrk(out) {
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const p99raw = /99%\s+([\d.]+)(us|ms|s)/.exec(out);
  const p99 = p99raw ? Number(p99raw[1]) * (p99raw[2] === 'us' ? 0.001 : p99raw[2] === 's' ? 1000 : 1) : NaN;
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  return { rps, p99, requests, non2xx };
}

/** CPU seconds (user + system) of a process and its direct children (nginx's worker). */
export function cpuSeconds(pid) {
  const tick = 100; // USER_HZ on Linux
  const one = (p) => {
    try {
      const f = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
      return (Number(fields[11]) + Number(fields[12])) / tick;
    } catch { return 0; }
  };
  let kids = [];
  try { kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean); } catch { /* none */ }
  return one(pid) + kids.reduce((a, k) => a + one(k), 0);
}

/** A temporary directory (prefix `tmpPrefix`), and the child processes started with start(); cleanup() ends both. */
export function benchRun(tmpPrefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), tmpPrefix));
  const children = [];
  function start(cmd, args, name) {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => { err += d; });
    child.on('exit', (code) => { if (code && !child.killedByUs) console.error(`${name} exited ${code}: ${err}`); });
    children.push(child);
    return child;
  }
  function cleanup() {
    for (const c of children) { c.killedByUs = true; try { c.kill('SIGTERM'); } catch { /* gone */ } }
    try { fs.rmSync(dir, { recursive: true, force: true }); } catch { /* ignore */ }
  }
  return { dir, start, cleanup };
}

/**
 * Writes `<dir>/<name>/nginx.conf`: one worker, no access log, temp paths and pid inside the
 * directory (no root-owned defaults), keep-alive without a request limit; `httpBody` goes inside `http {}`.
 */
export function writeNginxConf(dir, name, httpBody) {
  const p = path.join(dir, name);
  fs.mkdirSync(p, { recursive: true });
  fs.writeFileSync(path.join(p, 'nginx.conf'), `worker_processes 1;
pid ${p}/nginx.pid;
error_log ${p}/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${p}; proxy_temp_path ${p}; fastcgi_temp_path ${p}; uwsgi_temp_path ${p}; scgi_temp_path ${p};
  keepalive_requests 1000000;
  ${httpBody}
}
`);
  return path.join(p, 'nginx.conf');
}
