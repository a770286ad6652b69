import { spawn } from 'node:child_process';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { OriginalDestination } from '../src/runtime';
import { scanProtocol } from '../src/tcp/protocol-sniffer';
import { deadPort, startProxy, startUpstream, waitFor, type StartedProxy } from './support/proxy-harness';

// Envoy's tcp_proxy (issue 15) with real sockets on loopback. The original destination the capture
// rules would give is set on the runtime (the netns test, tcp-capture.test.ts, gets it from real iptables).

const VIP = '240.240.3.9';
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c(); });

interface TcpServer { port: number; sockets: net.Socket[]; server: net.Server }

async function tcpServer(onConn: (s: net.Socket) => void, opts: net.ServerOpts = {}): Promise<TcpServer> {
  const sockets: net.Socket[] = [];
  const server = net.createServer(opts, (s) => { sockets.push(s); s.on('error', () => {}); onConn(s); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }));
  return { port: (server.address() as net.AddressInfo).port, sockets, server };
}

const echo = (name: string) => (s: net.Socket) => s.on('data', (d) => s.write(`${name}:${d.toString()}`));

async function proxyWith(config: Record<string, unknown>, dst: OriginalDestination): Promise<StartedProxy> {
  const p = await startProxy({ accessLog: { format: 'json', path: '/dev/null' }, ...config });
  p.proxy.runtime.originalDst = () => dst;
  cleanups.push(() => p.proxy.close());
  return p;
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => resolve(s));
    s.on('error', reject);
    cleanups.push(() => { s.destroy(); });
  });
}

/** Reads until `n` bytes (or the end) arrived. */
function readText(s: net.Socket, until: (text: string) => boolean, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`read timed out; got ${JSON.stringify(text)}`)), timeoutMs);
    const onData = (d: Buffer) => { text += d.toString(); if (until(text)) { done(); resolve(text); } };
    const onEnd = () => { done(); resolve(text); };
    const done = () => { clearTimeout(timer); s.off('data', onData); s.off('end', onEnd); };
    s.on('data', onData);
    s.on('end', onEnd);
  });
}

const closed = (s: net.Socket) => new Promise<void>((r) => (s.destroyed ? r() : s.once('close', () => r())));
/** The proxy closed its side: our half-open client sees the end (or a reset). */
const ended = (s: net.Socket) => new Promise<void>((r) => { if (s.destroyed || s.readableEnded) r(); else { s.once('end', () => r()); s.once('close', () => r()); } });
const stat = (p: StartedProxy, name: string): number => {
  const found = p.proxy.stats.all().find((s) => s.name === name);
  return found !== undefined && 'value' in found ? found.value : 0;
};
const outbound = (port = 6379): OriginalDestination => ({ kind: 'redirected', address: VIP, port });
const tcpCluster = (name: string, ports: number[], extra: Record<string, unknown> = {}) => ({ name, endpoints: ports.map((port) => ({ address: '127.0.0.1', port })), ...extra });
const outboundConfig = (ports: number[], extra: Record<string, unknown> = {}, top: Record<string, unknown> = {}) => ({
  clusters: [tcpCluster('out#6379#redis', ports, extra)], outboundTcp: [{ address: VIP, port: 6379, cluster: 'out#6379#redis' }], ...top,
});

describe('TCP proxy: outbound VIP:port (outboundTcp)', () => {
  it('pipes bytes both ways to both endpoints (round robin), with Envoy tcp_proxy stats and one access log line per connection', async () => {
    const a = await tcpServer(echo('a'));
    const b = await tcpServer(echo('b'));
    const p = await proxyWith(outboundConfig([a.port, b.port]), outbound());
    const seen: string[] = [];
    for (let i = 0; i < 4; i++) {
      const s = await connect(p.port);
      s.write(`ping${i}`);
      const text = await readText(s, (t) => t.endsWith(`ping${i}`));
      seen.push(text.split(':')[0]!);
      s.end();
      await closed(s);
    }
    expect(seen.sort()).toEqual(['a', 'a', 'b', 'b']);
    await waitFor(() => p.log.length >= 4, 'four access log lines');
    const line = JSON.parse(p.log[0]!);
    expect(line).toMatchObject({ method: '-', protocol: 'TCP', bytes_received: 5, bytes_sent: 7, upstream_cluster: 'out#6379#redis' });
    expect(line.upstream_host).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(stat(p, 'tcp.out#6379#redis.downstream_cx_total')).toBe(4);
    expect(stat(p, 'tcp.out#6379#redis.downstream_cx_rx_bytes_total')).toBe(20);
    expect(stat(p, 'tcp.out#6379#redis.downstream_cx_tx_bytes_total')).toBe(28);
    expect(stat(p, 'cluster.out#6379#redis.upstream_cx_total')).toBe(4);
    expect(stat(p, 'cluster.out#6379#redis.upstream_cx_tx_bytes_total')).toBe(20);
    expect(stat(p, 'cluster.out#6379#redis.upstream_cx_rx_bytes_total')).toBe(28);
    await waitFor(() => stat(p, 'cluster.out#6379#redis.upstream_cx_active') === 0, 'upstream connections closed');
    // /clusters shows the TCP route
    const clusters = await (await fetch(`http://127.0.0.1:${p.admin}/clusters`)).text();
    expect(clusters).toContain(`out#6379#redis::tcp_route::${VIP}:6379`);
    const dump = await (await fetch(`http://127.0.0.1:${p.admin}/config_dump`)).text();
    expect(dump).toContain('envoy.filters.network.tcp_proxy');
  });

  it('half-close: the client ends its side, the server still answers and the answer arrives', async () => {
    const server = await tcpServer((s) => {
      let got = '';
      s.on('data', (d) => { got += d.toString(); });
      s.on('end', () => { s.end(`got ${got} then your FIN`); });
    }, { allowHalfOpen: true });
    const p = await proxyWith(outboundConfig([server.port]), outbound());
    const s = await connect(p.port);
    s.end('question');
    expect(await readText(s, () => false)).toBe('got question then your FIN');
    await closed(s);
  });

  it('half-close the other way: the server ends first, the client still sends and the server gets it', async () => {
    let got = '';
    let serverSawEnd!: () => void;
    const ended = new Promise<void>((resolve) => { serverSawEnd = resolve; });
    const server = await tcpServer((s) => { s.end('bye\n'); s.on('data', (d) => { got += d.toString(); }); s.on('end', () => serverSawEnd()); }, { allowHalfOpen: true });
    const p = await proxyWith(outboundConfig([server.port]), outbound());
    const c = await connect(p.port);
    expect(await readText(c, () => false)).toBe('bye\n'); // the end arrived; our write side is still open
    c.end('after your FIN');
    await ended;
    expect(got).toBe('after your FIN');
  });

  it('back-pressure both ways: a client that does not read stops the server writing; 64 MiB arrive intact once it reads', async () => {
    const SIZE = 64 * 1024 * 1024;
    const chunk = Buffer.alloc(1024 * 1024, 7);
    let written = 0;
    let stalled = false;
    const server = await tcpServer((s) => {
      const pump = () => {
        while (written < SIZE) {
          written += chunk.length;
          if (!s.write(chunk)) { stalled = true; s.once('drain', pump); return; }
        }
        s.end();
      };
      pump();
    });
    const p = await proxyWith(outboundConfig([server.port]), outbound());
    const s = await connect(p.port);
    s.pause();
    await waitFor(() => stalled, 'the server to see back-pressure');
    await new Promise((r) => setTimeout(r, 500));
    // the proxy keeps at most its socket buffers: without back-pressure the server would have written everything into it
    expect(written).toBeLessThan(SIZE / 4);
    let received = 0;
    let intact = true;
    s.on('data', (d: Buffer) => { received += d.length; if (d[0] !== 7 || d[d.length - 1] !== 7) intact = false; });
    s.resume();
    await new Promise<void>((r) => s.once('end', () => r()));
    expect(received).toBe(SIZE);
    expect(intact).toBe(true);
    expect(stat(p, 'tcp.out#6379#redis.downstream_cx_tx_bytes_total')).toBe(SIZE);

    // the other way: a server that does not read stops the client's writes, and the proxy counts the paused reads
    let serverSocket: net.Socket | undefined;
    const sink = await tcpServer((x) => { serverSocket = x; x.pause(); });
    p.proxy.update(outboundConfig([sink.port]));
    const c = await connect(p.port);
    let sent = 0;
    const push = () => { while (sent < SIZE) { sent += chunk.length; if (!c.write(chunk)) { c.once('drain', push); return; } } };
    push();
    await waitFor(() => stat(p, 'tcp.out#6379#redis.downstream_flow_control_paused_reading_total') > 0, 'the proxy to pause reading the client');
    await new Promise((r) => setTimeout(r, 500));
    expect(sent).toBeLessThan(SIZE / 4); // the client is held back: the proxy does not buffer what the server does not read
    let got = 0;
    await waitFor(() => serverSocket !== undefined, 'the upstream connection');
    serverSocket!.on('data', (d: Buffer) => { got += d.length; });
    serverSocket!.resume();
    await waitFor(() => got === SIZE, 'every byte to reach the server', 60_000);
    expect(stat(p, 'tcp.out#6379#redis.downstream_flow_control_resumed_reading_total')).toBeGreaterThan(0);
  });

  it('an endpoint dying mid-connection closes the client and is logged UC', async () => {
    const server = await tcpServer((s) => { s.write('hello'); s.once('data', () => s.resetAndDestroy()); });
    const p = await proxyWith(outboundConfig([server.port]), outbound());
    const s = await connect(p.port);
    s.on('error', () => {});
    await readText(s, (t) => t === 'hello');
    s.write('die');
    await closed(s);
    await waitFor(() => p.log.length === 1, 'the access log line');
    expect(JSON.parse(p.log[0]!).response_flags).toContain('UC');
    expect(stat(p, 'cluster.out#6379#redis.upstream_cx_active')).toBe(0);
  });

  it('a connect failure closes the client (UF), is counted upstream_cx_connect_fail and ejects the host by outlier detection', async () => {
    const good = await tcpServer(echo('good'));
    const dead = await deadPort();
    const p = await proxyWith(outboundConfig([dead, good.port], { outlierDetection: { consecutiveGatewayFailure: 1, consecutive5xx: 1 } }), outbound());
    const answers: string[] = [];
    for (let i = 0; i < 4; i++) {
      const s = await connect(p.port);
      s.on('error', () => {});
      s.write('x');
      answers.push(await readText(s, (t) => t.length > 0));
      s.destroy();
    }
    expect(answers.filter((a) => a === '').length).toBe(1); // one connect attempt per connection; then the dead host is ejected
    expect(answers.filter((a) => a === 'good:x').length).toBe(3);
    expect(stat(p, 'cluster.out#6379#redis.upstream_cx_connect_fail')).toBe(1);
    await waitFor(() => p.log.some((l) => JSON.parse(l).response_flags.includes('UF')), 'a UF access log line');
  });

  it('max_connections: a connection over the limit is closed and counted upstream_cx_overflow', async () => {
    const server = await tcpServer(echo('s'));
    const p = await proxyWith(outboundConfig([server.port], { circuitBreakers: { maxConnections: 1 } }), outbound());
    const first = await connect(p.port);
    first.write('1');
    expect(await readText(first, (t) => t === 's:1')).toBe('s:1');
    const second = await connect(p.port);
    second.on('error', () => {});
    second.write('2');
    expect(await readText(second, () => false)).toBe('');
    expect(stat(p, 'cluster.out#6379#redis.upstream_cx_overflow')).toBe(1);
    first.write('3');
    expect(await readText(first, (t) => t === 's:3')).toBe('s:3');
  });

  it('idle timeout: a session with no byte either way is closed and counted', async () => {
    const server = await tcpServer(echo('s'));
    const p = await proxyWith(outboundConfig([server.port], {}, { limits: { tcpIdleTimeoutMs: 300 } }), outbound());
    const s = await connect(p.port);
    s.write('1');
    await readText(s, (t) => t === 's:1');
    await ended(s);
    expect(stat(p, 'tcp.out#6379#redis.idle_timeout')).toBe(1);
  });

  it('drain: a long-lived session keeps working until the drain time, then is closed', async () => {
    const server = await tcpServer(echo('s'));
    const p = await proxyWith(outboundConfig([server.port]), outbound());
    const s = await connect(p.port);
    s.write('before');
    await readText(s, (t) => t === 's:before');
    const drained = p.proxy.drain(1500);
    await new Promise((r) => setTimeout(r, 700));
    s.write('during');
    expect(await readText(s, (t) => t === 's:during')).toBe('s:during');
    expect(s.destroyed).toBe(false);
    await drained;
    await ended(s);
  });

  it('drain: ends as soon as the last TCP session ends (not at the drain time); the drained listener takes no new connection', async () => {
    const server = await tcpServer(echo('s'));
    const p = await proxyWith(outboundConfig([server.port]), outbound());
    const s = await connect(p.port);
    s.write('x');
    await readText(s, (t) => t === 's:x');
    const started = Date.now();
    let drainedAt = 0;
    const drained = p.proxy.drain(20_000).then(() => { drainedAt = Date.now(); });
    await new Promise((r) => setTimeout(r, 300));
    expect(drainedAt).toBe(0);
    await expect(connect(p.port)).rejects.toThrow(/ECONNREFUSED/);
    s.end();
    await drained;
    expect(drainedAt - started).toBeLessThan(10_000);
  });
});

describe('TCP proxy: inbound ports declared tcp or auto', () => {
  const inbound = (port: number): OriginalDestination => ({ kind: 'redirected', address: '127.0.0.1', port });

  it('tcp: a server-first protocol greets a client that sends nothing', async () => {
    const greeter = await tcpServer((s) => s.write('220 greeter ready\r\n'));
    const p = await proxyWith({ clusters: [tcpCluster('in#3306#db', [greeter.port])], inbound: [{ port: 3306, cluster: 'in#3306#db', protocol: 'tcp' }] }, inbound(3306));
    const s = await connect(p.port);
    expect(await readText(s, (t) => t.endsWith('\r\n'), 2000)).toBe('220 greeter ready\r\n');
  });

  it('auto: a silent client gets the server-first greeting after the bounded wait; an HTTP request takes the HTTP path', async () => {
    const greeter = await tcpServer((s) => { s.write('220 greeter ready\r\n'); s.on('data', (d) => s.write(`echo:${d.toString()}`)); });
    const web = await startUpstream('web');
    cleanups.push(() => web.close());
    const p = await proxyWith({
      clusters: [tcpCluster('in#3306#db', [greeter.port]), tcpCluster('in#8080#web', [web.port])],
      inbound: [{ port: 3306, cluster: 'in#3306#db', protocol: 'auto' }, { port: 8080, cluster: 'in#8080#web', protocol: 'auto' }],
    }, inbound(3306));
    const s = await connect(p.port);
    expect(await readText(s, (t) => t.endsWith('\r\n'), 2000)).toBe('220 greeter ready\r\n');
    p.proxy.runtime.originalDst = () => inbound(8080);
    const h = await connect(p.port);
    h.write('GET /hello HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n');
    const res = await readText(h, () => false);
    expect(res).toMatch(/^HTTP\/1\.1 200/);
    expect(res).toContain('web GET /hello 0');
    // a non-HTTP first message is TCP at once (no wait): the greeter gets the bytes as they were sent
    p.proxy.runtime.originalDst = () => inbound(3306);
    const t = await connect(p.port);
    t.write('*1\r\n$4\r\nPING\r\n');
    expect(await readText(t, (x) => x.includes('PING'))).toBe('220 greeter ready\r\necho:*1\r\n$4\r\nPING\r\n');
  });
});

describe('TCP proxy: outbound VIP:port declared auto (a service port with no protocol)', () => {
  it('an HTTP request on the VIP:port takes the HTTP route (by Host); other bytes are piped to the cluster; a silent client gets the server-first greeting', async () => {
    const greeter = await tcpServer((s) => { s.write('220 kv ready\r\n'); s.on('data', (d) => s.write(`echo:${d.toString()}`)); });
    const web = await startUpstream('kv-http');
    cleanups.push(() => web.close());
    const p = await proxyWith({
      clusters: [tcpCluster('out#6380#kv', [greeter.port]), tcpCluster('out#80#web', [web.port])],
      outboundTcp: [{ address: VIP, port: 6380, cluster: 'out#6380#kv', protocol: 'auto' }],
      routes: { virtualHosts: [{ name: 'web', domains: ['web'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#80#web' } }] }] },
    }, outbound(6380));
    const h = await connect(p.port);
    h.write('GET /sniffed HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n');
    const res = await readText(h, () => false);
    expect(res).toMatch(/^HTTP\/1\.1 200/);
    expect(res).toContain('kv-http GET /sniffed 0');
    expect(stat(p, 'cluster.out#6380#kv.upstream_cx_total')).toBe(0);
    const t = await connect(p.port);
    t.write('*1\r\n$4\r\nPING\r\n');
    expect(await readText(t, (x) => x.includes('PING'))).toBe('220 kv ready\r\necho:*1\r\n$4\r\nPING\r\n');
    const silent = await connect(p.port);
    expect(await readText(silent, (x) => x.endsWith('\r\n'), 2000)).toBe('220 kv ready\r\n');
    expect(stat(p, 'cluster.out#6380#kv.upstream_cx_total')).toBe(2);
    // /clusters names the sniffed route
    const clusters = await fetch(`http://127.0.0.1:${p.admin}/clusters`).then((r) => r.text());
    expect(clusters).toContain(`out#6380#kv::tcp_route::${VIP}:6380:auto`);
  });
});

describe('CONNECT termination: an application of this host tunnels to a mesh TCP service by NAME:PORT (outboundTcp domains)', () => {
  const config = (ports: number[]) => ({
    clusters: [tcpCluster('out#7000#clock', ports)],
    outboundTcp: [{ address: VIP, port: 7000, cluster: 'out#7000#clock', domains: ['clock:7000', 'Clock.default:7000'] }],
  });

  it('200 once the upstream is connected, then bytes both ways (a server-first greeting too); a 503 when no endpoint answers; 405 for an unknown name', async () => {
    const clock = await tcpServer((s) => { s.write('clock says hi\r\n'); s.on('data', (d) => s.write(`echo:${d.toString()}`)); });
    const p = await proxyWith(config([clock.port]), { kind: 'direct' });
    const s = await connect(p.port);
    s.write('CONNECT clock.default:7000 HTTP/1.1\r\nhost: clock.default:7000\r\n\r\nearly bytes');
    expect(await readText(s, (t) => t.includes('echo:early bytes'))).toBe('HTTP/1.1 200 Connection established\r\n\r\nclock says hi\r\necho:early bytes');
    s.end();
    await closed(s);
    expect(stat(p, 'cluster.out#7000#clock.upstream_cx_total')).toBe(1);
    // curl's own tunnel (-p) through the listener, as the demo prints it
    // (spawned, not spawnSync: the proxy runs in this process's event loop)
    const curlOut = await new Promise<string>((resolve) => {
      const c = spawn('curl', ['-s', '--max-time', '3', '-p', '-x', `127.0.0.1:${p.port}`, 'telnet://clock:7000']);
      let out = '';
      c.stdout.on('data', (d) => { out += d; });
      c.on('close', () => resolve(out));
      c.stdin.end('from curl\n');
    });
    expect(curlOut).toContain('clock says hi');
    // no endpoint answers: 503 with the flag, not a hang
    const dead = await proxyWith(config([await deadPort()]), { kind: 'direct' });
    const d = await connect(dead.port);
    d.write('CONNECT clock:7000 HTTP/1.1\r\nhost: clock:7000\r\n\r\n');
    expect(await readText(d, () => false)).toMatch(/^HTTP\/1\.1 503 Service Unavailable\r\n[\s\S]*x-envoy-response-flags: UF\r\n/);
    // a name that is no TCP service: 405 as before
    const u = await connect(p.port);
    u.write('CONNECT other:7000 HTTP/1.1\r\nhost: other:7000\r\n\r\n');
    expect(await readText(u, () => false)).toMatch(/^HTTP\/1\.1 405/);
  });

  it('a CONNECT that arrives on a captured inbound port is not tunnelled (a peer must not tunnel out through this host)', async () => {
    const clock = await tcpServer((s) => s.write('clock says hi\r\n'));
    const web = await startUpstream('web');
    cleanups.push(() => web.close());
    const p = await proxyWith({ ...config([clock.port]), clusters: [tcpCluster('out#7000#clock', [clock.port]), tcpCluster('in#8080#web', [web.port])], inbound: [{ port: 8080, cluster: 'in#8080#web' }] },
      { kind: 'redirected', address: '127.0.0.1', port: 8080 });
    const s = await connect(p.port);
    s.write('CONNECT clock:7000 HTTP/1.1\r\nhost: clock:7000\r\n\r\n');
    expect(await readText(s, () => false)).toMatch(/^HTTP\/1\.1 405/);
    expect(stat(p, 'cluster.out#7000#clock.upstream_cx_total')).toBe(0);
  });
});

describe('protocol sniffing (auto): what the first bytes say', () => {
  it('HTTP/1 request lines, the h2 preface and a TLS ClientHello are HTTP; their prefixes wait; anything else is TCP', () => {
    expect(scanProtocol(Buffer.from('GET / HTTP/1.1\r\n'))).toBe('http');
    expect(scanProtocol(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'))).toBe('http');
    expect(scanProtocol(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]))).toBe('http');
    expect(scanProtocol(Buffer.from('PO'))).toBe('more');
    expect(scanProtocol(Buffer.from([0x16]))).toBe('more');
    expect(scanProtocol(Buffer.from('*1\r\n$4\r\nPING\r\n'))).toBe('tcp');
    expect(scanProtocol(Buffer.from('GETX'))).toBe('tcp');
    expect(scanProtocol(Buffer.from([0x16, 0x01]))).toBe('tcp');
  });
});
