import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from './support/proxy-harness';

// Inbound vs outbound on the one listener, for real: two network namespaces joined by a veth pair
// (198.18.20.0/24), iptables REDIRECT rules inside the sidecar's namespace (OUTPUT for the VIP,
// PREROUTING for the service port), the proxy and a local service inside it, a remote service and
// a remote client in the peer namespace. Nothing touches the machine's own namespace.
const PATH = `${process.env.PATH}:/usr/sbin:/sbin`;
const tag = `mpx${process.pid % 100000}`;
const nsA = `${tag}a`;
const nsB = `${tag}b`;
const pkg = path.resolve(__dirname, '..');
const addonFile = path.join(pkg, 'native', 'build', 'Release', 'original_dst.node');

function sh(argv: string[], allowFail = false): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', env: { ...process.env, PATH }, timeout: 60_000 });
  const out = { code: r.status ?? 1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  if (!allowFail && out.code !== 0) throw new Error(`\`${argv.join(' ')}\` failed (${out.code}): ${out.stderr}`);
  return out;
}
const inNs = (ns: string, argv: string[], allowFail = false) => sh(['ip', 'netns', 'exec', ns, ...argv], allowFail);

function prereqs(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, iptables)';
  for (const argv of [['ip', 'netns', 'list'], ['iptables', '-V'], ['curl', '--version']]) if (sh(argv, true).code !== 0) return `${argv.join(' ')} unavailable`;
  if (!fs.existsSync(addonFile)) return `the addon is not built (${addonFile}); run pnpm --filter @mesh-agent/proxy build`;
  return undefined;
}
const missing = prereqs();
// CI runs as root with the addon built: there a missing prerequisite is a failure, not a skip.
if (missing && process.env.CI) throw new Error(`proxy-original-dst: ${missing}`);

describe.skipIf(missing !== undefined)('original destination (SO_ORIGINAL_DST) in network namespaces', () => {
  const children: ChildProcess[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'proxy-odst-'));
  const accessLogFile = path.join(dir, 'access.log');
  let proxyOut: () => string = () => '';
  /** The proxy's JSON access log lines so far. */
  const accessLog = (): Record<string, unknown>[] => (fs.existsSync(accessLogFile) ? fs.readFileSync(accessLogFile, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []);
  const stat = (ns: string, adminPort: number, name: string): number => {
    const line = inNs(ns, ['curl', '-s', `http://127.0.0.1:${adminPort}/stats?filter=${encodeURIComponent(`^${name.replace(/[.#]/g, (c) => `\\${c}`)}$`)}`]).stdout.trim();
    return Number(line.split(': ')[1] ?? NaN);
  };
  const httpCode = (r: { stdout: string }) => r.stdout.slice(-3);

  function startIn(ns: string, args: string[], env: Record<string, string> = {}): { child: ChildProcess; out: () => string } {
    const child = spawn('ip', ['netns', 'exec', ns, ...args], { env: { ...process.env, PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    child.stdout!.on('data', (d: Buffer) => { text += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { text += d.toString(); });
    children.push(child);
    return { child, out: () => text };
  }

  async function waitHttp(ns: string, url: string): Promise<void> {
    const end = Date.now() + 30_000;
    while (Date.now() < end) {
      if (inNs(ns, ['curl', '-s', '-o', '/dev/null', '--max-time', '2', url], true).code === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${url} in ${ns} did not answer`);
  }

  const server = (name: string, host: string, port: number) =>
    `require('http').createServer((q,s)=>s.end('${name} '+q.url+' '+(q.headers['x-forwarded-for']||'')+'\\n')).listen(${port},'${host}')`;

  beforeAll(async () => {
    sh(['ip', 'netns', 'add', nsA]);
    sh(['ip', 'netns', 'add', nsB]);
    sh(['ip', 'link', 'add', `${tag}va`, 'netns', nsA, 'type', 'veth', 'peer', 'name', `${tag}vb`, 'netns', nsB]);
    for (const [ns, dev, addr, peer] of [[nsA, `${tag}va`, '198.18.20.1', '198.18.20.2'], [nsB, `${tag}vb`, '198.18.20.2', '198.18.20.1']] as const) {
      inNs(ns, ['ip', 'link', 'set', 'lo', 'up']);
      inNs(ns, ['ip', 'addr', 'add', `${addr}/24`, 'dev', dev]);
      inNs(ns, ['ip', 'link', 'set', dev, 'up']);
      inNs(ns, ['ip', 'route', 'add', 'default', 'via', peer]);
    }
    // Sidecar capture inside nsA: outbound to the VIP and inbound to the service port go to 15001.
    inNs(nsA, ['iptables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', '240.240.0.9', '--dport', '80', '-j', 'REDIRECT', '--to-ports', '15001']);
    inNs(nsA, ['iptables', '-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '--dport', '8089', '-j', 'REDIRECT', '--to-ports', '15001']);
    // Captured outbound to a destination outside outboundCidrs (default: the mesh VIP and 240.240.0.0/16).
    inNs(nsA, ['iptables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', '198.19.7.7', '--dport', '80', '-j', 'REDIRECT', '--to-ports', '15001']);
    // A captured port no inbound entry names (a stale or too wide rule): its traffic must not be routed either.
    inNs(nsA, ['iptables', '-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '--dport', '8095', '-j', 'REDIRECT', '--to-ports', '15001']);

    startIn(nsA, [process.execPath, '-e', server('local-user', '127.0.0.1', 18089)]);
    startIn(nsB, [process.execPath, '-e', server('remote-order', '198.18.20.2', 8080)]);
    const cfg = path.join(dir, 'proxy.json');
    fs.writeFileSync(cfg, JSON.stringify({
      admin: { address: '127.0.0.1', port: 15000 },
      listener: { name: 'virtual', address: '0.0.0.0', port: 15001 },
      localAddresses: ['198.18.20.1'],
      inbound: [{ port: 8089, cluster: 'in#8089#user' }],
      accessLog: { format: 'json', path: accessLogFile },
      clusters: [
        { name: 'in#8089#user', endpoints: [{ address: '127.0.0.1', port: 18089 }] },
        { name: 'out#80#order', endpoints: [{ address: '198.18.20.2', port: 8080 }] },
      ],
      routes: { virtualHosts: [{ name: 'order', domains: ['order', 'order:80', '240.240.0.9'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#80#order' } }] }] },
    }));
    proxyOut = startIn(nsA, [process.execPath, path.join(pkg, 'bin', 'mesh-proxy.js'), '--config', cfg]).out;
    await waitHttp(nsA, 'http://127.0.0.1:15000/ready');
    await waitHttp(nsB, 'http://198.18.20.2:8080/');
    await waitHttp(nsA, 'http://127.0.0.1:18089/');
  }, 90_000);

  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
    sh(['ip', 'netns', 'del', nsA], true);
    sh(['ip', 'netns', 'del', nsB], true);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the addon reads the pre-NAT destination of a redirected connection', async () => {
    const script = `const net=require('net');const a=require(${JSON.stringify(addonFile)});
      const s=net.createServer(c=>{console.log(JSON.stringify(a.getOriginalDst(c._handle.fd)));c.destroy();s.close();}).listen(15002,'0.0.0.0',()=>{
      require('child_process').execFileSync('iptables',['-t','nat','-I','OUTPUT','-p','tcp','-d','240.240.0.77','--dport','81','-j','REDIRECT','--to-ports','15002']);
      net.connect(81,'240.240.0.77').on('error',()=>{});});`;
    const r = inNs(nsA, [process.execPath, '-e', script]);
    expect(JSON.parse(r.stdout.trim())).toEqual({ address: '240.240.0.77', port: 81 });
  });

  it('outbound: a connection to the VIP (REDIRECTed) reaches the remote cluster by Host', () => {
    const r = inNs(nsA, ['curl', '-s', '--max-time', '10', '-H', 'Host: order', 'http://240.240.0.9/hello']);
    expect(r.stdout).toBe('remote-order /hello 198.18.20.1\n');
  });

  it('inbound: a remote client\'s connection to the service port goes to the local in# cluster by original destination', () => {
    // Host names the order service, but the original destination (198.18.20.1:8089) says inbound.
    const r = inNs(nsB, ['curl', '-s', '--max-time', '10', '-H', 'Host: order', 'http://198.18.20.1:8089/who']);
    expect(r.stdout).toBe('local-user /who 198.18.20.2\n');
    const clusters = inNs(nsA, ['curl', '-s', 'http://127.0.0.1:15000/clusters']).stdout;
    expect(clusters.split('\n').filter((l) => l.includes('in#') && l.includes('::rq_total::'))).toEqual(['in#8089#user::127.0.0.1:18089::rq_total::1']);
  });

  // Issue 12, item 4: port 15001 is no open relay. Another host may neither use it as a proxy into the
  // mesh nor reach the local application through it; only what the capture rules brought is served.
  it('an explicit-proxy request from another host (curl -x A:15001) is refused: 502 NR, BlackHoleCluster, counted and logged', async () => {
    const routedBefore = stat(nsA, 15000, 'cluster.out#80#order.upstream_rq_total');
    const r = inNs(nsB, ['curl', '-s', '--max-time', '10', '-w', '%{http_code}', '-x', 'http://198.18.20.1:15001', 'http://order/relay']);
    expect(httpCode(r)).toBe('502');
    expect(r.stdout).toContain('BlackHoleCluster');
    expect(stat(nsA, 15000, 'cluster.out#80#order.upstream_rq_total')).toBe(routedBefore); // never routed into the mesh
    expect(stat(nsA, 15000, 'cluster.BlackHoleCluster.upstream_cx_total')).toBeGreaterThanOrEqual(1);
    expect(stat(nsA, 15000, 'cluster.BlackHoleCluster.upstream_rq_5xx')).toBeGreaterThanOrEqual(1);
    await waitFor(() => accessLog().some((l) => l.path === 'http://order/relay'), 'the access log line of the refused request');
    expect(accessLog().find((l) => l.path === 'http://order/relay')).toMatchObject({ response_code: 502, response_flags: 'NR', upstream_cluster: 'BlackHoleCluster', upstream_host: null });
    await waitFor(() => proxyOut().includes('refused a connection the capture rules did not bring'), 'the warning in the proxy log', 5000);
    const warning = proxyOut().split('\n').find((l) => l.includes('refused a connection the capture rules did not bring'));
    expect(warning).toBeDefined();
    expect(JSON.parse(warning!)).toMatchObject({ level: 'warn', peer: '198.18.20.2', cluster: 'BlackHoleCluster' });
    expect(inNs(nsA, ['curl', '-s', 'http://127.0.0.1:15000/clusters']).stdout).toContain('BlackHoleCluster::added_via_api::false');
  });

  it('a direct request from another host to A:15001 is refused too (502 NR): it never reaches the local application', () => {
    const inboundBefore = stat(nsA, 15000, 'cluster.in#8089#user.upstream_rq_total');
    const r = inNs(nsB, ['curl', '-s', '--max-time', '10', '-w', '%{http_code}', '-H', 'Host: 198.18.20.1:8089', 'http://198.18.20.1:15001/direct']);
    expect(httpCode(r)).toBe('502');
    expect(stat(nsA, 15000, 'cluster.in#8089#user.upstream_rq_total')).toBe(inboundBefore);
  });

  it('HTTP/2 is no way around it (issue 14): an h2c request from another host to A:15001 is refused the same way (502 NR)', () => {
    const inboundBefore = stat(nsA, 15000, 'cluster.in#8089#user.upstream_rq_total');
    const r = inNs(nsB, ['curl', '-s', '--http2-prior-knowledge', '--max-time', '10', '-w', ' %{http_version} %{http_code}', '-H', 'Host: 198.18.20.1:8089', 'http://198.18.20.1:15001/direct-h2']);
    expect(r.stdout).toMatch(/BlackHoleCluster[\s\S]* 2 502$/);
    expect(stat(nsA, 15000, 'cluster.in#8089#user.upstream_rq_total')).toBe(inboundBefore);
  });

  it('captured traffic to a local port that is no registered inbound port is refused (502 NR), whatever its Host', () => {
    const r = inNs(nsB, ['curl', '-s', '--max-time', '10', '-w', '%{http_code}', '-H', 'Host: order', 'http://198.18.20.1:8095/stale']);
    expect(httpCode(r)).toBe('502');
  });

  it('captured outbound to a destination outside outboundCidrs is refused (502 NR), even with a routable Host', () => {
    const r = inNs(nsA, ['curl', '-s', '--max-time', '10', '-w', '%{http_code}', '-H', 'Host: order', 'http://198.19.7.7/not-a-vip']);
    expect(httpCode(r)).toBe('502');
  });

  it('explicit-proxy requests from this host are served: from loopback and from its own address', () => {
    const lo = inNs(nsA, ['curl', '-s', '--max-time', '10', '-x', 'http://127.0.0.1:15001', 'http://order/from-lo']);
    expect(lo.stdout).toBe('remote-order /from-lo 127.0.0.1\n');
    const own = inNs(nsA, ['curl', '-s', '--max-time', '10', '-x', 'http://198.18.20.1:15001', 'http://order/from-own']);
    expect(own.stdout).toBe('remote-order /from-own 198.18.20.1\n');
  });

  it('without the addon only this host is served: another host\'s connection (captured or not) gets 502 NR, and the proxy says why', async () => {
    const cfg = path.join(dir, 'proxy.json');
    const fallbackCfg = path.join(dir, 'proxy-fallback.json');
    const c = JSON.parse(fs.readFileSync(cfg, 'utf8'));
    c.listener.port = 15011;
    c.admin.port = 15010;
    delete c.accessLog;
    fs.writeFileSync(fallbackCfg, JSON.stringify(c));
    inNs(nsA, ['iptables', '-t', 'nat', '-I', 'PREROUTING', '-p', 'tcp', '--dport', '8090', '-j', 'REDIRECT', '--to-ports', '15011']);
    const fallback = startIn(nsA, [process.execPath, path.join(pkg, 'bin', 'mesh-proxy.js'), '--config', fallbackCfg], { MESH_PROXY_NO_ORIGINAL_DST: '1' });
    await waitHttp(nsA, 'http://127.0.0.1:15010/ready');
    // the log line is written asynchronously: under load it can reach the pipe after /ready answers
    const warning = /SO_ORIGINAL_DST is unavailable.*only connections from this host are served/;
    await waitFor(() => warning.test(fallback.out()), 'the proxy to log that SO_ORIGINAL_DST is unavailable', 10_000).catch(() => {});
    expect(fallback.out()).toMatch(warning);
    // A captured connection from another host cannot be told from a direct one: refused, not guessed from Host.
    const r = inNs(nsB, ['curl', '-s', '--max-time', '10', '-w', '%{http_code}', '-H', 'Host: 198.18.20.1:8089', 'http://198.18.20.1:8090/fb']);
    expect(httpCode(r)).toBe('502');
    expect(stat(nsA, 15010, 'cluster.in#8089#user.upstream_rq_total')).toBe(0);
    // A local explicit-proxy client is routed by its Host.
    const out = inNs(nsA, ['curl', '-s', '--max-time', '10', '-x', '127.0.0.1:15011', 'http://order/fb2']);
    expect(out.stdout).toBe('remote-order /fb2 127.0.0.1\n');
  });
});
