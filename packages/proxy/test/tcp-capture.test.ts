import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from './support/proxy-harness';
import { labUnavailable, NetnsLab, proxyBin } from './support/netns-lab';

// The TCP proxy (issue 15) with real capture: namespace A is the sidecar (the proxy child, iptables
// REDIRECT of the VIP range's service ports in nat OUTPUT and of the inbound port 3306 in PREROUTING);
// namespace B holds two real redis-server endpoints, a bulk sender, and calls A's server-first greeter.
const missing = labUnavailable([['redis-server', '--version'], ['redis-benchmark', '--version'], ['redis-cli', '--version']]);
if (missing && process.env.CI) throw new Error(`tcp-capture: ${missing}`);

const VIP = '240.240.3.9';
const BULK_VIP = '240.240.3.10';
const MiB = 1024 * 1024;

describe.skipIf(missing !== undefined)('TCP proxy with real capture (iptables REDIRECT, SO_ORIGINAL_DST)', () => {
  const lab = new NetnsLab(`tcp${process.pid % 100000}`, 31);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'proxy-tcp-'));
  const stat = (name: string) => lab.stat(15000, name);

  beforeAll(async () => {
    lab.create();
    for (const [dst, port] of [[VIP, '6379'], [BULK_VIP, '7000']]) lab.inNs(lab.a, ['iptables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', dst!, '--dport', port!, '-j', 'REDIRECT', '--to-ports', '15001']);
    lab.inNs(lab.a, ['iptables', '-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '-d', lab.ipA, '--dport', '3306', '-j', 'REDIRECT', '--to-ports', '15001']);
    for (const port of [16379, 16380]) lab.start(lab.b, ['redis-server', '--port', String(port), '--bind', lab.ipB, '--save', '', '--appendonly', 'no', '--protected-mode', 'no']);
    // 64 MiB to whoever connects, as fast as the connection takes it
    lab.start(lab.b, [process.execPath, '-e', `const b=Buffer.alloc(1<<20,7);require('net').createServer(s=>{let n=0;s.on('error',()=>{});const p=()=>{while(n<64){n++;if(!s.write(b))return s.once('drain',p)}s.end()};p()}).listen(17000,'${lab.ipB}')`]);
    // a server-first greeter: speaks before the client sends anything (MySQL, SMTP)
    lab.start(lab.a, [process.execPath, '-e', `require('net').createServer(s=>{s.on('error',()=>{});s.write('220 greeter ready\\r\\n');s.on('data',d=>s.write('echo:'+d))}).listen(13306,'127.0.0.1')`]);
    const cfg = path.join(dir, 'proxy.json');
    fs.writeFileSync(cfg, JSON.stringify({
      admin: { address: '127.0.0.1', port: 15000 },
      listener: { name: 'virtual', address: '0.0.0.0', port: 15001 },
      localAddresses: [lab.ipA],
      inbound: [{ port: 3306, cluster: 'in#3306#greeter', protocol: 'tcp' }],
      outboundTcp: [{ address: VIP, port: 6379, cluster: 'out#6379#redis' }, { address: BULK_VIP, port: 7000, cluster: 'out#7000#bulk' }],
      accessLog: { format: 'json', path: path.join(dir, 'access.log') },
      clusters: [
        { name: 'out#6379#redis', endpoints: [{ address: lab.ipB, port: 16379 }, { address: lab.ipB, port: 16380 }] },
        { name: 'out#7000#bulk', endpoints: [{ address: lab.ipB, port: 17000 }] },
        { name: 'in#3306#greeter', endpoints: [{ address: '127.0.0.1', port: 13306 }] },
      ],
    }));
    lab.start(lab.a, [process.execPath, proxyBin, '--config', cfg]);
    await lab.waitHttp(lab.a, 'http://127.0.0.1:15000/ready');
    await waitFor(() => lab.inNs(lab.b, ['redis-cli', '-h', lab.ipB, '-p', '16380', 'ping'], { allowFail: true }).stdout.includes('PONG')
      && lab.inNs(lab.b, ['redis-cli', '-h', lab.ipB, '-p', '16379', 'ping'], { allowFail: true }).stdout.includes('PONG'), 'both redis servers');
  }, 90_000);

  afterAll(() => {
    lab.remove();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('redis-cli and redis-benchmark -n 20000 through the VIP: zero errors, both endpoints used', () => {
    expect(lab.inNs(lab.a, ['redis-cli', '-h', VIP, '-p', '6379', 'set', 'k', 'v']).stdout.trim()).toBe('OK');
    const bench = lab.inNs(lab.a, ['redis-benchmark', '-h', VIP, '-p', '6379', '-n', '20000', '-c', '20', '-t', 'set,get', '-q'], { timeoutMs: 120_000 });
    expect(bench.stdout).toMatch(/SET: [\d.]+ requests per second/);
    expect(bench.stdout).toMatch(/GET: [\d.]+ requests per second/);
    expect(bench.stderr).not.toMatch(/error/i);
    const perEndpoint = [16379, 16380].map((port) => Number(/total_commands_processed:(\d+)/.exec(lab.inNs(lab.b, ['redis-cli', '-h', lab.ipB, '-p', String(port), 'info', 'stats']).stdout)?.[1]));
    expect(perEndpoint[0]! + perEndpoint[1]!).toBeGreaterThanOrEqual(40_000);
    for (const n of perEndpoint) expect(n).toBeGreaterThan(5000);
    expect(stat('cluster.out#6379#redis.upstream_cx_connect_fail')).toBe(0);
    expect(stat('tcp.out#6379#redis.downstream_cx_total')).toBeGreaterThanOrEqual(41);
  }, 150_000);

  it('server-first: a caller from another host that sends nothing is greeted through the captured inbound port', () => {
    const r = lab.inNs(lab.b, ['timeout', '5', 'bash', '-c', `exec 3<>/dev/tcp/${lab.ipA}/3306; head -c 19 <&3`]);
    expect(r.stdout).toBe('220 greeter ready\r\n');
    expect(stat('tcp.in#3306#greeter.downstream_cx_total')).toBeGreaterThanOrEqual(1);
  });

  it('a client reading slowly: 64 MiB arrive intact and the proxy process stays small (server.memory_physical_size)', async () => {
    const before = stat('server.memory_physical_size');
    // reads 64 KiB every 20 ms for 1.5 s, then everything: the sender outruns it all the while
    const client = lab.start(lab.a, [process.execPath, '-e', `const s=require('net').connect(7000,'${BULK_VIP}');let n=0,ok=true;s.pause();
      const slow=setInterval(()=>{let c;while((c=s.read(65536))!==null){n+=c.length;if(c[0]!==7)ok=false;break}},20);
      setTimeout(()=>{clearInterval(slow);s.on('data',c=>{n+=c.length;if(c[0]!==7)ok=false});s.resume()},1500);
      s.on('end',()=>{console.log('received '+n+' '+ok);process.exit(0)})`]);
    let peak = before;
    const end = Date.now() + 1400;
    while (Date.now() < end) { peak = Math.max(peak, stat('server.memory_physical_size')); await new Promise((r) => setTimeout(r, 100)); }
    await waitFor(() => client.out().includes('received'), 'the slow client to finish', 60_000);
    expect(client.out().trim()).toBe(`received ${64 * MiB} true`);
    expect(peak - before).toBeLessThan(32 * MiB);
  }, 90_000);
});
