import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

/*
 * Real network namespaces for the tests: created by the test, removed in afterAll (also on
 * failure). Nothing here touches the machine's own namespace.
 */

export interface Prereqs {
  ok: boolean;
  reason?: string;
}

/** Root, `ip netns`, iptables and dig are needed; say exactly what is missing otherwise. */
export function checkPrereqs(): Prereqs {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'needs root (creates network namespaces and runs iptables in them)' };
  for (const [bin, args] of [
    ['ip', ['netns', 'list']],
    ['iptables', ['-V']],
    ['ip6tables', ['-V']],
    ['dig', ['-v']],
    ['setpriv', ['--version']],
  ] as const) {
    const r = spawnSync(bin, args, { encoding: 'utf8', env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` } });
    if (r.error || r.status !== 0) return { ok: false, reason: `\`${bin} ${args.join(' ')}\` does not work here: ${r.error?.message ?? r.stderr}` };
  }
  return { ok: true };
}

export function sh(argv: string[], opts: { input?: string; allowFail?: boolean } = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(argv[0], argv.slice(1), {
    encoding: 'utf8',
    input: opts.input,
    env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` },
    timeout: 60_000,
  });
  const out = { code: r.status ?? 1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  if (!opts.allowFail && out.code !== 0) throw new Error(`\`${argv.join(' ')}\` failed (${out.code}): ${out.stderr}`);
  return out;
}

export function nsExec(ns: string, argv: string[], opts: { input?: string; allowFail?: boolean; uid?: number } = {}) {
  const asUser = opts.uid === undefined ? [] : ['setpriv', `--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups'];
  return sh(['ip', 'netns', 'exec', ns, ...asUser, ...argv], opts);
}

/** A unique prefix per test run so parallel runs by other engineers never collide. */
export function nsName(suffix: string): string {
  return `mipt-${process.pid}-${suffix}`;
}

export interface Pair {
  a: string;
  b: string;
  addrA: string;
  addrB: string;
  /** with v6: fd00:198:18::1 and ::2 */
  addr6A: string;
  addr6B: string;
}

/**
 * Two namespaces joined by a veth pair (198.18.0.0/15 addresses), each with a default route
 * through the other: connect() to the mesh VIP needs a route before it reaches nat OUTPUT.
 */
export function createPair(tag: string, opts: { peerExtraAddress?: string; peerExtraAddress6?: string; v6?: boolean } = {}): Pair {
  const a = nsName(`${tag}a`);
  const b = nsName(`${tag}b`);
  const addrA = '198.18.10.1';
  const addrB = '198.18.10.2';
  sh(['ip', 'netns', 'add', a]);
  sh(['ip', 'netns', 'add', b]);
  const vethA = `va${process.pid % 100000}${tag}`.slice(0, 15);
  const vethB = `vb${process.pid % 100000}${tag}`.slice(0, 15);
  sh(['ip', 'link', 'add', vethA, 'netns', a, 'type', 'veth', 'peer', 'name', vethB, 'netns', b]);
  for (const [ns, dev, addr, peer] of [
    [a, vethA, addrA, addrB],
    [b, vethB, addrB, addrA],
  ]) {
    nsExec(ns, ['ip', 'link', 'set', 'lo', 'up']);
    nsExec(ns, ['ip', 'addr', 'add', `${addr}/24`, 'dev', dev]);
    if (opts.v6) nsExec(ns, ['ip', '-6', 'addr', 'add', `fd00:198:18::${addr === addrA ? 1 : 2}/64`, 'dev', dev, 'nodad']);
    nsExec(ns, ['ip', 'link', 'set', dev, 'up']);
    nsExec(ns, ['ip', 'route', 'add', 'default', 'via', peer]);
    if (opts.v6) nsExec(ns, ['ip', '-6', 'route', 'add', 'default', 'via', `fd00:198:18::${addr === addrA ? 2 : 1}`]);
  }
  if (opts.peerExtraAddress) nsExec(b, ['ip', 'addr', 'add', `${opts.peerExtraAddress}/32`, 'dev', vethB]);
  if (opts.peerExtraAddress6) nsExec(b, ['ip', '-6', 'addr', 'add', `${opts.peerExtraAddress6}/128`, 'dev', vethB, 'nodad']);
  return { a, b, addrA, addrB, addr6A: 'fd00:198:18::1', addr6B: 'fd00:198:18::2' };
}

export function deleteNs(...names: string[]): void {
  for (const name of names) sh(['ip', 'netns', 'del', name], { allowFail: true });
}

/** iptables-save output without the timestamp comments and counters, for before/after comparisons. */
export function saveAll(ns: string, bin: 'iptables-save' | 'ip6tables-save' | 'iptables-legacy-save' = 'iptables-save', table?: string): string {
  const out = nsExec(ns, [bin, ...(table ? ['-t', table] : [])]).stdout;
  return out
    .split('\n')
    .filter((line) => !line.startsWith('#'))
    .map((line) => line.replace(/\[\d+:\d+\]/, '[0:0]'))
    .join('\n');
}

export interface ServerSpec {
  /** TCP listeners answering their tag and closing */
  tcp?: { host: string; port: number; tag: string }[];
  /** DNS servers (UDP and TCP on the same port) answering every A query with `answer` */
  dns?: { host: string; port: number; answer: string }[];
}

// Runs inside the namespace: plain listeners that say who they are.
const SERVER_CODE = `
const net = require('net'), dgram = require('dgram');
const spec = JSON.parse(process.argv[1]);
function answer(q, ip) {
  let i = 12; while (q[i] !== 0) i += q[i] + 1; i += 5;
  const h = Buffer.alloc(12); q.copy(h, 0, 0, 2);
  h.writeUInt16BE(0x8180 | (q.readUInt16BE(2) & 0x0100), 2); h.writeUInt16BE(1, 4); h.writeUInt16BE(1, 6);
  const rr = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, ...ip.split('.').map(Number)]);
  return Buffer.concat([h, q.subarray(12, i), rr]);
}
let pending = 0; const done = () => { if (--pending === 0) process.stdout.write('ready\\n'); };
for (const t of spec.tcp || []) { pending++;
  net.createServer((s) => { s.on('error', () => {}); s.end(t.tag + '\\n'); }).listen(t.port, t.host, done); }
for (const d of spec.dns || []) { pending += 2;
  const u = dgram.createSocket(d.host.includes(':') ? 'udp6' : 'udp4');
  u.on('message', (m, r) => u.send(answer(m, d.answer), r.port, r.address)); u.bind(d.port, d.host, done);
  net.createServer((s) => { let buf = Buffer.alloc(0); s.on('error', () => {});
    s.on('data', (c) => { buf = Buffer.concat([buf, c]); if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
      const a = answer(buf.subarray(2, 2 + buf.readUInt16BE(0)), d.answer); const l = Buffer.alloc(2); l.writeUInt16BE(a.length); s.end(Buffer.concat([l, a])); } });
  }).listen(d.port, d.host, done); }
if (pending === 0) process.stdout.write('ready\\n');
process.on('SIGTERM', () => process.exit(0));
`;

/** Starts listeners inside a namespace; resolves once every socket listens. */
export function startServers(ns: string, spec: ServerSpec): Promise<ChildProcess> {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', SERVER_CODE, JSON.stringify(spec)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` },
  });
  return new Promise((resolve, reject) => {
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`servers in ${ns} did not start within 30 s: ${stderr}`));
    }, 30_000);
    child.stderr!.on('data', (c) => (stderr += c));
    child.stdout!.on('data', (c: Buffer) => {
      if (c.toString().includes('ready')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`servers in ${ns} exited (${code}): ${stderr}`));
    });
  });
}

export function stopServer(child: ChildProcess | undefined): void {
  if (child && child.exitCode === null && child.pid) child.kill('SIGKILL');
}

// A TCP client: prints what the server said, or the error.
const CLIENT_CODE = `
const net = require('net');
const [host, port] = [process.argv[1], Number(process.argv[2])];
const s = net.connect({ host, port }); let data = '';
const t = setTimeout(() => { console.log('timeout'); process.exit(0); }, 10000);
s.on('data', (c) => data += c); s.on('end', () => { clearTimeout(t); console.log(data.trim()); });
s.on('error', (e) => { clearTimeout(t); console.log('error:' + e.code); });
`;

/** Connects from inside `ns` (as `uid`) and returns the tag of whichever listener answered. */
export function tcpHello(ns: string, host: string, port: number, uid?: number): string {
  return nsExec(ns, [process.execPath, '-e', CLIENT_CODE, host, String(port)], { uid }).stdout.trim();
}

/** A real `dig` A query from inside `ns` (as `uid`); returns the answer address (or dig's complaint). */
export function digA(ns: string, server: string, opts: { uid?: number; tcp?: boolean; port?: number } = {}): string {
  const args = ['dig', '+short', '+noedns', '+tries=2', '+time=5', `@${server}`, '-p', String(opts.port ?? 53), 'order.mesh.test', 'A'];
  if (opts.tcp) args.splice(1, 0, '+tcp');
  const r = nsExec(ns, args, { uid: opts.uid, allowFail: true });
  return (r.stdout.trim() || r.stderr.trim() || `dig exited ${r.code}`).split('\n').pop()!;
}
