// The local application's health check against real sockets.
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { AppHealthChecker, probeOnce } from '../src/app-health';
import { freePort } from './etcd-server';

const servers: Array<http.Server | net.Server> = [];
afterAll(() => servers.forEach((s) => s.close()));

async function listen<T extends http.Server | net.Server>(server: T): Promise<number> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return (server.address() as AddressInfo).port;
}

describe('app health check', () => {
  it('passes on 2xx/3xx and names the failure otherwise', async () => {
    let code = 200;
    const port = await listen(http.createServer((_req, res) => res.writeHead(code).end()));
    expect(await probeOnce({ host: '127.0.0.1', port, path: '/health', timeoutMs: 2000 })).toBeNull();
    code = 503;
    expect(await probeOnce({ host: '127.0.0.1', port, path: '/health', timeoutMs: 2000 })).toBe('HTTP 503');
    const closed = await freePort();
    expect(await probeOnce({ host: '127.0.0.1', port: closed, path: '/health', timeoutMs: 2000 })).toMatch(/^ECONNREFUSED/);
  });

  it('checks a service without a health-check path (e.g. dubbo) by connecting', async () => {
    const port = await listen(net.createServer((s) => s.end()));
    expect(await probeOnce({ host: '127.0.0.1', port, timeoutMs: 2000 })).toBeNull();
    expect(await probeOnce({ host: '127.0.0.1', port: await freePort(), timeoutMs: 2000 })).toMatch(/^ECONNREFUSED/);
  });

  it('flips to unhealthy only after unhealthyThreshold failures in a row', async () => {
    let code = 200;
    let failedProbes = 0;
    const port = await listen(
      http.createServer((_req, res) => {
        if (code !== 200) failedProbes += 1;
        res.writeHead(code).end();
      }),
    );
    const checker = new AppHealthChecker({ service: 'user', host: '127.0.0.1', port, path: '/h', intervalMs: 20, timeoutMs: 1000, healthyThreshold: 1, unhealthyThreshold: 3 });
    const changes: Array<boolean | null> = [];
    checker.on('change', (s) => changes.push(s.healthy));
    checker.start();
    await new Promise<void>((resolve) => checker.once('change', () => resolve()));
    code = 500;
    const failedAtFlip = await new Promise<number>((resolve) => checker.once('change', () => resolve(failedProbes)));
    checker.stop();
    expect(failedAtFlip).toBe(3);
    expect(changes).toEqual([true, false]);
    expect(checker.state().detail).toBe(`GET http://127.0.0.1:${port}/h failed: HTTP 500`);
  });
});
