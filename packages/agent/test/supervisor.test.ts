// The supervisor with real processes and real sockets. The child here is a small stand-in speaking
// the control protocol (test/fixtures/stand-in-child.mjs) because these tests make a child fail on
// purpose; the real proxy and mesh-dns are supervised in agent.test.ts.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { bindTcp, type OwnedSocket } from '../src/sockets';
import { ChildSupervisor } from '../src/supervisor';
import type { MeshError } from '@mesh-agent/shared-config';
import { eventually, httpGet, steadyLoad } from './helpers';

const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'stand-in-child.mjs');
const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function setup(env: NodeJS.ProcessEnv = {}) {
  const listener: OwnedSocket = bindTcp('listener', '127.0.0.1', 0);
  const errors: MeshError[] = [];
  const supervisor = new ChildSupervisor({
    component: 'envoy',
    modulePath: fixture,
    env,
    sockets: [listener],
    config: () => ({ version: '1' }),
    drainTimeMs: () => 200,
    readyTimeoutMs: 20_000,
    backoff: { initialMs: 50, maxMs: 500 },
    stdio: 'ignore',
    logger: quiet,
    onError: (e) => errors.push(e),
  });
  cleanups.push(async () => {
    await supervisor.stop();
    listener.close();
  });
  const url = `http://127.0.0.1:${listener.port}/`;
  return { supervisor, listener, errors, url };
}

describe('ChildSupervisor', () => {
  it('serves on the agent-owned socket from epoch 0', async () => {
    const { supervisor, url } = setup();
    await supervisor.start();
    expect(supervisor.epoch).toBe(0);
    const res = await httpGet(url);
    expect(res.body).toMatch(/^epoch 0 pid \d+/);
    expect(supervisor.state().state).toBe('serving');
  });

  it('restarts a child killed with SIGKILL as epoch + 1 and reports the cause', async () => {
    const { supervisor, url, errors } = setup();
    await supervisor.start();
    const pid = supervisor.pid!;
    process.kill(pid, 'SIGKILL');
    await eventually(() => supervisor.epoch === 1 && supervisor.healthy, 'epoch 1 to serve');
    expect(supervisor.pid).not.toBe(pid);
    expect((await httpGet(url)).body).toMatch(/^epoch 1 /);
    expect(errors.map((e) => e.message).join('\n')).toMatch(/envoy epoch 0 \(pid \d+\) died \(killed by SIGKILL\); restarting it as epoch 1/);
    expect(supervisor.state().lastExit).toMatchObject({ epoch: 0, signal: 'SIGKILL' });
  });

  it('hot-restarts under steady load with zero failed requests', async () => {
    const { supervisor, url } = setup();
    await supervisor.start();
    const seen = new Set<string>();
    const load = steadyLoad(
      async () => {
        const res = await httpGet(url);
        if (res.status !== 200) throw new Error(`status ${res.status}`);
        seen.add(res.body.split(' pid')[0]);
      },
      { workers: 4, maxCount: 20_000, maxMs: 60_000 },
    );
    await eventually(() => load.count > 50, 'load to run');
    const first = await supervisor.hotRestart();
    expect(first).toMatchObject({ epoch: 1, previousEpoch: 0 });
    await eventually(() => load.count > first.epoch * 200 + 100, 'load on epoch 1');
    const second = await supervisor.hotRestart();
    expect(second).toMatchObject({ epoch: 2, previousEpoch: 1 });
    await eventually(() => seen.has('epoch 2'), 'epoch 2 to answer');
    const result = await load.stop();
    expect(result.failures).toEqual([]);
    expect(result.count).toBeGreaterThan(100);
    expect([...seen].sort()).toEqual(['epoch 0', 'epoch 1', 'epoch 2']);
    // the old epochs drained and exited
    await eventually(() => supervisor.state().draining.length === 0, 'old epochs to exit');
  });

  it('reports a failed epoch, keeps the old one serving and reuses the number', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sup-test-'));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const failFile = path.join(dir, 'fail-once');
    const { supervisor, url, errors } = setup({ STAND_IN_FAIL_ONCE_FILE: failFile });
    await supervisor.start();
    fs.writeFileSync(failFile, '');
    await expect(supervisor.hotRestart()).rejects.toThrow(/envoy epoch 1: epoch 1 fails on purpose/);
    expect(errors.at(-1)?.code).toBe('STAND_IN_FAILED');
    expect(supervisor.epoch).toBe(0);
    expect((await httpGet(url)).body).toMatch(/^epoch 0 /);
    const next = await supervisor.hotRestart();
    expect(next.epoch).toBe(1);
    expect((await eventually(async () => ((await httpGet(url)).body.startsWith('epoch 1') ? 'ok' : undefined), 'epoch 1'))).toBe('ok');
  });

  it('treats a clean exit nobody asked for as a quit request, not a crash', async () => {
    const { supervisor, listener } = setup();
    const adminSocket = bindTcp('admin', '127.0.0.1', 0);
    cleanups.push(() => adminSocket.close());
    // the stand-in exits 0 on /quitquitquit of its admin socket, like the proxy
    (supervisor as unknown as { opts: { sockets: OwnedSocket[] } }).opts.sockets = [listener, adminSocket];
    await supervisor.start();
    const quit = new Promise<number>((resolve) => supervisor.once('quit', resolve));
    await httpGet(`http://127.0.0.1:${adminSocket.port}/quitquitquit`);
    expect(await quit).toBe(0);
    expect(supervisor.epoch).toBeNull();
  });
});
