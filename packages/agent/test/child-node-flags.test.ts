// fork() runs `node BIN` and never reads the bin's shebang: the Node flags it asks for
// (mesh-dns: --max-semi-space-size=4, a smaller young generation) must reach the child as execArgv.
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { meshDnsBin, nodeFlagsOf, proxyBin } from '../src/children';
import { bindTcp, bindUdp, type OwnedSocket } from '../src/sockets';
import { ChildSupervisor } from '../src/supervisor';

const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('node flags of the children', () => {
  it('reads them from each bin shebang', () => {
    expect(nodeFlagsOf(meshDnsBin())).toEqual(['--max-semi-space-size=4']);
    expect(nodeFlagsOf(proxyBin())).toEqual([]);
  });

  it('starts the real mesh-dns with --max-semi-space-size=4 on its command line', async () => {
    const udp: OwnedSocket = await bindUdp('dns-udp', '127.0.0.1', 0);
    cleanups.push(() => udp.close());
    const tcp: OwnedSocket = bindTcp('dns-tcp', '127.0.0.1', udp.port);
    cleanups.push(() => tcp.close());
    const supervisor = new ChildSupervisor({
      component: 'mesh-dns',
      modulePath: meshDnsBin(),
      args: ['--log-level', 'none', '--no-admin'],
      sockets: [udp, tcp],
      // the upstream is never asked: nothing is queried
      config: () => ({ listen: { address: '127.0.0.1', port: udp.port }, upstreams: ['127.0.0.1:9'], services: [] }),
      drainTimeMs: () => 200,
      readyTimeoutMs: 30_000,
      stdio: 'ignore',
      logger: quiet,
      onError: () => undefined,
    });
    cleanups.push(() => supervisor.stop());
    await supervisor.start();
    const argv = fs.readFileSync(`/proc/${supervisor.pid}/cmdline`, 'utf8').split('\0');
    expect(argv.slice(1, 3)).toEqual(['--max-semi-space-size=4', meshDnsBin()]);
  }, 60_000);
});
