import fs from 'node:fs';
import type net from 'node:net';
import { EXIT_CODES, isParentToChild, loadConfigFile, MeshError, proxyBootstrapSchema, registrySnapshotSchema, parseConfig, runMain, type ParentToChild } from '@mesh-agent/shared-config';
import { createProxy, type MeshProxy } from './proxy';

const USAGE = `usage: mesh-proxy --config FILE

Envoy-like HTTP sidecar proxy. Reads the ProxyBootstrap config (YAML or JSON)
from FILE and watches it: a change is applied atomically while traffic flows.
Started by the agent (an IPC channel exists), it follows the control protocol
instead: listening sockets, config and registry come as messages.

options:
  --config FILE   the ProxyBootstrap file (required when standalone)
  --help          this text

exit codes: 0 ok, 1 failure, 2 bad arguments or config, 5 a port is unavailable
`;

interface CliArgs { config?: string; help: boolean }

export function parseArgs(argv: string[]): CliArgs {
  const out: CliArgs = { help: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') out.help = true;
    else if (a === '--config' || a === '-c') {
      const v = argv[++i];
      if (!v) throw new MeshError('MESH_USAGE', '--config needs a file path', { exitCode: EXIT_CODES.usage, hint: USAGE });
      out.config = v;
    } else if (a.startsWith('--config=')) out.config = a.slice('--config='.length);
    else throw new MeshError('MESH_USAGE', `unknown argument "${a}"`, { exitCode: EXIT_CODES.usage, hint: 'run mesh-proxy --help' });
  }
  return out;
}

function watchConfig(file: string, proxy: MeshProxy): void {
  let timer: NodeJS.Timeout | undefined;
  let last = fs.readFileSync(file, 'utf8');
  const reload = () => {
    let text: string;
    try { text = fs.readFileSync(file, 'utf8'); } catch { return; }
    if (text === last) return;
    last = text;
    try {
      proxy.update(loadConfigFile(proxyBootstrapSchema, file));
      proxy.logger.scope('config').info({ file, version: proxy.configVersion }, 'config reloaded');
    } catch (err) {
      // A bad edit keeps the running config: nothing half-applied.
      proxy.logger.scope('config').error({ file, err: (err as Error).message }, 'config rejected; keeping the running config');
    }
  };
  fs.watchFile(file, { interval: 500 }, () => { clearTimeout(timer); timer = setTimeout(reload, 50); });
}

async function runUnderAgent(): Promise<void> {
  const handles: Partial<Record<'listener' | 'admin', net.Server>> = {};
  let proxy: MeshProxy | undefined;
  let pendingConfig: unknown;
  const send = (m: object) => process.send?.(m);
  const fail = (err: unknown) => {
    const e = err as MeshError;
    send({ type: 'error', code: e.code ?? 'MESH_PROXY_FAILED', message: e.message });
  };
  process.on('message', (raw: unknown, handle: unknown) => {
    if (!isParentToChild(raw)) return;
    const msg = raw as ParentToChild;
    void (async () => {
      try {
        switch (msg.type) {
          case 'handle':
            if (msg.name === 'listener' || msg.name === 'admin') handles[msg.name] = handle as net.Server;
            break;
          case 'config':
            if (proxy) proxy.update(msg.config);
            else pendingConfig = msg.config;
            send({ type: 'config-applied', version: (msg.config as { version?: string }).version ?? '1' });
            break;
          case 'registry':
            proxy?.updateRegistry(parseConfig(registrySnapshotSchema, msg.snapshot, { source: 'registry' }));
            break;
          case 'start':
            proxy = createProxy(pendingConfig ?? {}, { listenerHandle: handles.listener, adminHandle: handles.admin, restartEpoch: msg.epoch, onQuit: () => process.exit(0) });
            await proxy.start();
            send({ type: 'ready', epoch: msg.epoch, pid: process.pid });
            break;
          case 'drain':
            if (proxy) { await proxy.drain(msg.drainTimeMs); await proxy.close(); }
            process.exit(0);
        }
      } catch (err) {
        fail(err);
      }
    })();
  });
  await new Promise<void>(() => { /* lives until drained */ });
}

async function main(argv: string[]): Promise<number | void> {
  const args = parseArgs(argv);
  if (args.help) { process.stdout.write(USAGE); return EXIT_CODES.ok; }
  if (!args.config && typeof process.send === 'function') return runUnderAgent();
  if (!args.config) throw new MeshError('MESH_USAGE', 'missing --config FILE', { exitCode: EXIT_CODES.usage, hint: 'mesh-proxy --config /etc/mesh/proxy.yaml' });
  const config = loadConfigFile(proxyBootstrapSchema, args.config);
  const proxy = createProxy(config, { onQuit: () => process.exit(0) });
  let addrs;
  try {
    addrs = await proxy.start();
  } catch (err) {
    await proxy.close();
    if (err instanceof MeshError && !err.exitCode) throw err;
    throw new MeshError((err as MeshError).code ?? 'MESH_PROXY_LISTEN_FAILED', (err as Error).message, { exitCode: EXIT_CODES.unavailable, hint: (err as MeshError).hint });
  }
  process.stderr.write(`mesh-proxy: listening on ${addrs.listener.address}:${addrs.listener.port}, admin on ${addrs.admin ? `${addrs.admin.address}:${addrs.admin.port}` : 'off'}\n`);
  watchConfig(args.config, proxy);
  const stop = () => { void proxy.drain(1000).then(() => proxy.close()).then(() => process.exit(0)); };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  await new Promise<void>(() => { /* serve until a signal or /quitquitquit */ });
}

export function runCli(argv: string[]): void {
  void runMain('mesh-proxy', () => main(argv));
}
