// fork() runs `node BIN` and never reads the bin's shebang: the Node flags it asks for
// (mesh-dns: --max-semi-space-size=4, a smaller young generation) must reach the child as execArgv.
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { childNodeFlags, DEFAULT_CHILD_NODE_FLAGS, meshDnsBin, nodeFlagsOf, proxyBin } from '../src/children';
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

  it('takes the configured flags as given, else the defaults with the bin\'s own flags winning by name', () => {
    expect(childNodeFlags('envoy', proxyBin(), ['--max-old-space-size=256'])).toEqual(['--max-old-space-size=256']);
    expect(childNodeFlags('envoy', proxyBin(), [])).toEqual([]);
    expect(childNodeFlags('envoy', proxyBin())).toEqual([...DEFAULT_CHILD_NODE_FLAGS.envoy, ...nodeFlagsOf(proxyBin())]);
    // mesh-dns' shebang sets --max-semi-space-size itself: no second value of the same flag
    const dns = childNodeFlags('mesh-dns', meshDnsBin());
    expect(dns.filter((f) => f.startsWith('--max-semi-space-size'))).toEqual(['--max-semi-space-size=4']);
  });

  it('forks the real proxy with the flags it is given (proxy.nodeOptions)', async () => {
    const listener: OwnedSocket = bindTcp('listener', '127.0.0.1', 0);
    cleanups.push(() => listener.close());
    const admin: OwnedSocket = bindTcp('admin', '127.0.0.1', 0);
    cleanups.push(() => admin.close());
    const flags = ['--max-semi-space-size=1', '--max-old-space-size=300'];
    const supervisor = new ChildSupervisor({
      component: 'envoy',
      modulePath: proxyBin(),
      execArgv: flags,
      sockets: [listener, admin],
      config: () => ({
        admin: { address: '127.0.0.1', port: admin.port },
        listener: { name: 'virtual', address: '127.0.0.1', port: listener.port },
        clusters: [],
        routes: { virtualHosts: [] },
      }),
      drainTimeMs: () => 200,
      readyTimeoutMs: 30_000,
      stdio: 'ignore',
      logger: quiet,
      onError: () => undefined,
    });
    cleanups.push(() => supervisor.stop());
    await supervisor.start();
    const argv = fs.readFileSync(`/proc/${supervisor.pid}/cmdline`, 'utf8').split('\0');
    expect(argv.slice(1, 4)).toEqual([...flags, proxyBin()]);
    // and it serves: its admin answers on the handed-over socket
    const res = await fetch(`http://127.0.0.1:${admin.port}/ready`);
    expect(res.status).toBe(200);
  }, 60_000);
});
