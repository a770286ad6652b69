import http from 'node:http';
import net from 'node:net';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { waitFor } from './resilience-upstreams';
import { admin, CLUSTER, closeProxies, flagsOf, startProxy, stat } from './support/resilience-proxy';

// Envoy's stream idle timeout (limits.streamIdleTimeoutMs) with a short value, through the real proxy:
// a client whose request body stalls, and a real upstream whose response body stalls.
let stalling: http.Server | undefined;
afterEach(closeProxies);
afterAll(async () => { stalling?.closeAllConnections(); await new Promise<void>((r) => (stalling ? stalling.close(() => r()) : r())); });

async function stallingUpstream(): Promise<number> {
  stalling = http.createServer((req, res) => {
    req.resume();
    // a PUT is answered once its body is in; otherwise headers and the first bytes of a 1000-byte body, then nothing more
    if (req.method === 'PUT') { req.on('end', () => res.end('stored')); return; }
    res.writeHead(200, { 'content-length': '1000' });
    res.write('first bytes');
  });
  await new Promise<void>((r) => stalling!.listen(0, '127.0.0.1', r));
  return (stalling.address() as net.AddressInfo).port;
}

function rawRequest(port: number, text: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(text));
    let got = '';
    s.on('data', (c: Buffer) => { got += c.toString('latin1'); });
    s.on('error', () => {});
    s.on('close', () => resolve(got));
  });
}

describe('stream idle timeout', () => {
  it('a request body that stalls gets 408 "stream timeout" (flag SI), the connection closes', async () => {
    const port = await stallingUpstream();
    const p = await startProxy([{ name: CLUSTER, endpoints: [{ address: '127.0.0.1', port }] }], { cluster: CLUSTER, timeoutMs: 0 }, { limits: { streamIdleTimeoutMs: 300 } });
    const answer = await rawRequest(p.port, 'PUT http://order/ HTTP/1.1\r\nhost: order\r\ncontent-length: 100\r\n\r\nonly-some');
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(answer).toContain('stream timeout');
    await waitFor('log line', () => p.log.length === 1);
    expect(flagsOf(p.log[0]!)).toBe('SI');
    expect(stat(await admin(p.admin, '/stats'), 'http.virtual.downstream_rq_idle_timeout')).toBe(1);
  });

  it('a response body that stalls is cut after the timeout (flag SI): the client sees a truncated response', async () => {
    const port = await stallingUpstream();
    const p = await startProxy([{ name: CLUSTER, endpoints: [{ address: '127.0.0.1', port }] }], { cluster: CLUSTER, timeoutMs: 0 }, { limits: { streamIdleTimeoutMs: 300 } });
    const answer = await rawRequest(p.port, 'GET http://order/ HTTP/1.1\r\nhost: order\r\n\r\n');
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    expect(answer.endsWith('first bytes')).toBe(true);
    await waitFor('log line', () => p.log.length === 1);
    expect(flagsOf(p.log[0]!)).toBe('SI');
  });

  it('the default is 5 minutes, and the value is validated', async () => {
    const p = await startProxy([{ name: CLUSTER, endpoints: [] }], { cluster: CLUSTER });
    expect(p.proxy.runtime.limits.streamIdleTimeoutMs).toBe(300_000);
    await expect(startProxy([{ name: CLUSTER, endpoints: [] }], { cluster: CLUSTER }, { limits: { streamIdleTimeoutMs: -1 } })).rejects.toThrow(/streamIdleTimeoutMs/);
  });
});
