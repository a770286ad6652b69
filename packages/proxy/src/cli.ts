import fs from 'node:fs';
import type net from 'node:net';
import { adoptedBy, EXIT_CODES, holdConnections, isParentToChild, loadConfigFile, MeshError, proxyBootstrapSchema, registrySnapshotSchema, parseConfig, runMain, type HeldConnections, type ParentToChild, type RegistrySnapshot } from '@mesh-agent/shared-config';
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

/** How long a proxy whose agent went away lets in-flight requests finish. */
const ORPHAN_DRAIN_MS = 1000;

/**
 * Child of the agent. Each handed-over socket is held from the moment it arrives (it accepts at
 * once); the proxy starts as soon as the config and both sockets (listener, admin) are in, or on
 * 'start' with what was sent, and the held connections are served then. 'start' answers 'ready'.
 * When the agent goes away (the IPC channel disconnects) nobody will send 'drain': drain briefly
 * and exit, so the next agent can bind the ports.
 */
async function runUnderAgent(): Promise<void> {
  const handles: Partial<Record<'listener' | 'admin', net.Server>> = {};
  const held: Partial<Record<'listener' | 'admin', HeldConnections>> = {};
  let proxy: MeshProxy | undefined;
  let starting: Promise<MeshProxy> | undefined;
  let pendingConfig: unknown;
  let pendingRegistry: RegistrySnapshot | undefined;
  let restartEpoch = Number(process.env.MESH_AGENT_EPOCH) || 0;
  let finishing = false;
  // with a callback a send that races the agent's exit is no 'error' event (which would end the process); 'disconnect' handles it
  const send = (m: object) => { if (process.connected) process.send?.(m, undefined, undefined, () => {}); };
  const fail = (err: unknown) => {
    const e = err as MeshError;
    send({ type: 'error', code: e.code ?? 'MESH_PROXY_FAILED', message: e.message });
  };
  const holdOptions = {
    onGiveUp: (count: number, why: string) => process.stderr.write(`mesh-proxy: reset ${count} connection(s) that arrived before the proxy served: ${why}\n`),
    onError: (err: Error) => process.stderr.write(`mesh-proxy: a handed-over socket failed before the proxy served: ${err.message}\n`),
  };

  const startServing = (): Promise<MeshProxy> => {
    starting ??= (async () => {
      const config = pendingConfig;
      const registry = pendingRegistry;
      const next = createProxy(config ?? {}, { listenerHandle: handles.listener, adminHandle: handles.admin, restartEpoch, onQuit: () => process.exit(0) });
      // endpoints before start(): it adopts the listener, and a request accepted meanwhile must not see empty clusters (503 UH)
      if (registry) next.updateRegistry(registry);
      await next.start();
      // a config or registry that came while it started (proxy was still unset) is not lost
      if (pendingConfig !== config) next.update(pendingConfig);
      if (pendingRegistry && pendingRegistry !== registry) next.updateRegistry(pendingRegistry);
      proxy = next;
      // the proxy's listener and admin server adopted the sockets: the held connections go to them
      for (const name of ['listener', 'admin'] as const) {
        const handle = handles[name];
        const owner = handle && adoptedBy(handle);
        held[name]?.release((socket) => (owner ? owner.emit('connection', socket) : socket.destroy()));
      }
      return next;
    })();
    return starting;
  };
  const serveIfComplete = async (): Promise<void> => {
    if (pendingConfig !== undefined && handles.listener && handles.admin) await startServing();
  };
  const finish = async (drainTimeMs: number): Promise<void> => {
    if (finishing) return;
    finishing = true;
    held.listener?.giveUp('the proxy is stopping');
    held.admin?.giveUp('the proxy is stopping');
    const running = await starting?.catch(() => undefined);
    if (running) { await running.drain(drainTimeMs); await running.close(); }
    process.exit(0);
  };

  process.on('message', (raw: unknown, handle: unknown) => {
    if (!isParentToChild(raw) || finishing) return;
    const msg = raw as ParentToChild;
    void (async () => {
      try {
        switch (msg.type) {
          case 'handle':
            if (msg.name === 'listener' || msg.name === 'admin') {
              handles[msg.name] = handle as net.Server;
              held[msg.name] = holdConnections(handle as net.Server, holdOptions);
              await serveIfComplete();
            }
            break;
          case 'config':
            if (proxy) proxy.update(msg.config);
            else parseConfig(proxyBootstrapSchema, msg.config, { source: 'config from the agent' }); // refused whole, now
            if (!proxy) pendingConfig = msg.config;
            send({ type: 'config-applied', version: proxy?.configVersion ?? (msg.config as { version?: string }).version ?? '1' });
            await serveIfComplete();
            break;
          case 'registry': {
            const snapshot = parseConfig(registrySnapshotSchema, msg.snapshot, { source: 'registry' });
            if (proxy) proxy.updateRegistry(snapshot);
            else pendingRegistry = snapshot;
            send({ type: 'config-applied', version: String(snapshot.revision ?? Date.now()) });
            break;
          }
          case 'start':
            restartEpoch = msg.epoch;
            // it may serve already (started when the sockets came, with MESH_AGENT_EPOCH): 'start' has the last word
            (await startServing() as { restartEpoch: number }).restartEpoch = msg.epoch;
            send({ type: 'ready', epoch: msg.epoch, pid: process.pid });
            break;
          case 'drain':
            await finish(msg.drainTimeMs);
        }
      } catch (err) {
        fail(err);
      }
    })();
  });
  // The agent went away (killed, crashed): nobody will send 'drain', and a proxy that lingers
  // holds the ports the next agent needs (Envoy exits with its pilot-agent too).
  process.once('disconnect', () => void finish(ORPHAN_DRAIN_MS));
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
