import type dgram from 'node:dgram';
import type net from 'node:net';
import { parseArgs } from 'node:util';
import {
  EXIT_CODES,
  MeshError,
  adoptedBy,
  dnsConfigSchema,
  holdConnections,
  holdDatagrams,
  isMeshError,
  isParentToChild,
  loadConfigFile,
  parseConfig,
  registrySnapshotSchema,
  runMain,
  type ChildToParent,
  type DnsConfig,
  type HeldConnections,
  type HeldDatagrams,
  type ParentToChild,
} from '@mesh-agent/shared-config';
import { createLogger, isLogLevel, type AdminServer, type LogLevel } from '@mesh-agent/admin-kit';
import { startMeshDnsAdmin } from './admin';
import { watchFile } from './file-watch';
import { createMeshDns, LOG_SCOPES, type MeshDns, type MeshDnsOptions } from './server';
import { VERSION } from './version';

export const USAGE = `Usage: mesh-dns [options]

Local DNS server of the mesh: answers mesh service names with the mesh VIP (or a per-service VIP)
and forwards every other name to the upstream resolvers.

Options:
  -c, --config FILE         DnsConfig file (YAML or JSON), re-read when it changes
  -l, --listen ADDR:PORT    UDP and TCP listen address (default 127.0.0.1:55354; [::1]:PORT for IPv6)
      --admin ADDR:PORT     admin HTTP address (default 127.0.0.1:15021)
      --no-admin            do not start the admin HTTP server
      --mesh-vip IP         the address mesh names answer with (default 240.240.0.1)
      --service NAME[.NS][=VIP]
                            a mesh service (repeatable); adds to the config's services
      --names-file FILE     RegistrySnapshot file whose services are the name table (watched)
      --suffix SUFFIX       an extra mesh suffix (repeatable; default svc.cluster.local)
      --ttl SECONDS         TTL of mesh answers (default 30)
  -u, --upstream IP[:PORT]  upstream resolver (repeatable); default: the nameservers of --resolv-conf
      --resolv-conf FILE    where upstreams are read from (default /etc/resolv.conf), watched
      --upstream-timeout MS per-upstream timeout (default 2000)
      --cache-size N        upstream answers cached at most (default 10000)
      --log-level LEVEL     debug|info|warn|error|none for every scope (default info)
  -h, --help                print this help
  -V, --version             print the version

Started by mesh-agent (with an IPC channel), it takes its sockets and config from the agent.

Exit codes: 0 ok, 1 failure, 2 bad arguments or config, 3 permission (port < 1024 without root).`;

function usageError(message: string): MeshError {
  return new MeshError('MESH_DNS_USAGE', message, { exitCode: EXIT_CODES.usage, hint: 'run mesh-dns --help for the options' });
}

function parseHostPort(text: string, flag: string): { address: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]+):(\d+)$/.exec(text);
  if (!m) throw usageError(`${flag}: "${text}" is not ADDRESS:PORT (use [::1]:PORT for IPv6)`);
  const port = Number(m[2]);
  if (port > 65535) throw usageError(`${flag}: port ${port} is out of range 0..65535`);
  return { address: m[1], port };
}

function parseService(text: string): { name: string; namespace?: string; vip?: string } {
  const [namePart, vip] = text.split('=', 2);
  const dot = namePart.indexOf('.');
  const name = dot < 0 ? namePart : namePart.slice(0, dot);
  const namespace = dot < 0 ? undefined : namePart.slice(dot + 1);
  return { name, ...(namespace ? { namespace } : {}), ...(vip ? { vip } : {}) };
}

function parseNumber(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw usageError(`${flag}: "${text}" is not a whole non-negative number`);
  return n;
}

interface CliArgs {
  configFile?: string;
  overrides: Record<string, unknown>;
  extraServices: { name: string; namespace?: string; vip?: string }[];
  noAdmin: boolean;
  logLevel: LogLevel;
  help: boolean;
  version: boolean;
}

export function parseCliArgs(argv: string[]): CliArgs {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        config: { type: 'string', short: 'c' },
        listen: { type: 'string', short: 'l' },
        admin: { type: 'string' },
        'no-admin': { type: 'boolean' },
        'mesh-vip': { type: 'string' },
        service: { type: 'string', multiple: true },
        'names-file': { type: 'string' },
        suffix: { type: 'string', multiple: true },
        ttl: { type: 'string' },
        upstream: { type: 'string', short: 'u', multiple: true },
        'resolv-conf': { type: 'string' },
        'upstream-timeout': { type: 'string' },
        'cache-size': { type: 'string' },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'V' },
      },
    });
  } catch (err) {
    throw usageError((err as Error).message);
  }
  const v = parsed.values;
  const overrides: Record<string, unknown> = {};
  if (v.listen !== undefined) overrides.listen = parseHostPort(v.listen, '--listen');
  if (v.admin !== undefined) overrides.admin = parseHostPort(v.admin, '--admin');
  if (v['mesh-vip'] !== undefined) overrides.meshVip = v['mesh-vip'];
  if (v['names-file'] !== undefined) overrides.namesFile = v['names-file'];
  if (v.suffix !== undefined) overrides.suffixes = v.suffix;
  if (v.ttl !== undefined) overrides.ttl = parseNumber(v.ttl, '--ttl');
  if (v.upstream !== undefined) overrides.upstreams = v.upstream;
  if (v['resolv-conf'] !== undefined) overrides.resolvConf = v['resolv-conf'];
  if (v['upstream-timeout'] !== undefined) overrides.upstreamTimeoutMs = parseNumber(v['upstream-timeout'], '--upstream-timeout');
  if (v['cache-size'] !== undefined) overrides.cacheMaxEntries = parseNumber(v['cache-size'], '--cache-size');
  const logLevel = v['log-level'] ?? 'info';
  if (!isLogLevel(logLevel)) throw usageError(`--log-level: "${logLevel}" is not one of debug, info, warn, error, none`);
  return {
    configFile: v.config,
    overrides,
    extraServices: (v.service ?? []).map(parseService),
    noAdmin: v['no-admin'] ?? false,
    logLevel,
    help: v.help ?? false,
    version: v.version ?? false,
  };
}

/** The config file (if any) with the flags on top, validated by the DnsConfig schema. */
export function resolveConfig(args: CliArgs): DnsConfig {
  const base: Record<string, unknown> = args.configFile ? { ...loadConfigFile(dnsConfigSchema, args.configFile) } : {};
  const merged = { ...base, ...args.overrides };
  if (args.extraServices.length > 0) merged.services = [...((base.services as unknown[]) ?? []), ...args.extraServices];
  return parseConfig(dnsConfigSchema, merged, { source: args.configFile ? `${args.configFile} and command-line flags` : 'command-line flags' });
}

export function toServerOptions(config: DnsConfig): MeshDnsOptions {
  return {
    listen: config.listen,
    meshVip: config.meshVip,
    suffixes: config.suffixes,
    ttl: config.ttl,
    services: config.services,
    namesFile: config.namesFile,
    upstreams: config.upstreams,
    resolvConf: config.resolvConf,
    upstreamTimeoutMs: config.upstreamTimeoutMs,
    cacheMaxEntries: config.cacheMaxEntries,
  };
}

/** Applies a new config to a running server: names and upstreams at once; listen addresses need a restart. */
function applyConfig(dns: MeshDns, config: DnsConfig): void {
  if (!config.namesFile) dns.updateNames(config.services, { meshVip: config.meshVip, ttl: config.ttl, suffixes: config.suffixes });
  dns.updateUpstreams(config.upstreams);
}

async function runStandalone(args: CliArgs): Promise<number | void> {
  const config = resolveConfig(args);
  const logger = createLogger({ component: 'mesh-dns', scopes: LOG_SCOPES, level: args.logLevel });
  const dns = createMeshDns({ ...toServerOptions(config), logger });
  await dns.start();
  let admin: AdminServer | undefined;
  try {
    if (!args.noAdmin) admin = await startMeshDnsAdmin(dns, { host: config.admin.address, port: config.admin.port });
  } catch (err) {
    await dns.close();
    throw err;
  }
  let stopConfigWatch: (() => void) | undefined;
  if (args.configFile) {
    const file = args.configFile;
    stopConfigWatch = watchFile(file, 2000, () => {
      try {
        applyConfig(dns, resolveConfig(args));
        logger.scope('model').info({ file }, 'configuration reloaded');
      } catch (err) {
        dns.recordError(err, `reloading ${file} (the running configuration stays)`);
      }
    });
  }
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  stopConfigWatch?.();
  await admin?.close();
  await dns.close();
}

/**
 * Child of the agent. Each handed-over socket is held from the moment it arrives (it accepts and
 * receives at once); the server starts as soon as the config and both DNS sockets are in (or on
 * 'start', binding what was not handed over), and what was held is served then. 'start' answers
 * 'ready'; 'config' and 'registry' replace names and upstreams at once; 'drain' finishes and exits 0.
 * When the agent goes away (the IPC channel disconnects) nobody will send 'drain': drain briefly
 * and exit, so the next agent can bind the ports.
 */
function runAsChild(args: CliArgs): Promise<number | void> {
  const logger = createLogger({ component: 'mesh-dns', scopes: LOG_SCOPES, level: args.logLevel });
  const send = (msg: ChildToParent): void => {
    // With a callback a failed write (the agent died meanwhile: EPIPE) is reported here; without
    // one Node emits it as 'error' on process, which nothing handles.
    if (process.connected) process.send?.(msg, undefined, {}, (err) => {
      if (err) logger.scope('default').warn({ type: msg.type, err: err.message }, 'could not send to the agent');
    });
  };
  const handles: { udp?: dgram.Socket; tcp?: net.Server; admin?: net.Server } = {};
  const held: { udp?: HeldDatagrams; tcp?: HeldConnections; admin?: HeldConnections } = {};
  let config: DnsConfig | undefined;
  let dns: MeshDns | undefined;
  let admin: AdminServer | undefined;
  let starting: Promise<void> | undefined;
  let registryServices: DnsConfig['services'] | undefined;
  const holdOptions = {
    onGiveUp: (count: number, why: string) => logger.scope('default').warn({ count, why }, 'gave up connections or datagrams that arrived before mesh-dns served'),
    onError: (err: Error) => logger.scope('default').error({ err }, 'a handed-over socket failed before mesh-dns served'),
  };

  /** Starts the server (once), then the admin server; hands over what was held. */
  const startServing = (): Promise<void> => {
    starting ??= (async () => {
      const effective = config ?? resolveConfig(args);
      const options = toServerOptions(effective);
      if (registryServices) options.services = registryServices;
      const server = createMeshDns({ ...options, logger, handles: { udp: handles.udp, tcp: handles.tcp } });
      await server.start();
      dns = server;
      const { udp, tcp } = handles;
      held.udp?.release(({ msg, rinfo }) => udp?.emit('message', msg, rinfo));
      held.tcp?.release((socket) => tcp?.emit('connection', socket));
    })();
    return starting;
  };
  const startAdmin = async (): Promise<void> => {
    if (admin || !dns || !config) return;
    if (!handles.admin && args.noAdmin) return;
    const handle = handles.admin;
    admin = await startMeshDnsAdmin(dns, { host: config.admin.address, port: config.admin.port, handle });
    // admin-kit's HTTP server adopted the handle; the held connections go to it
    if (handle && held.admin) {
      const owner = adoptedBy(handle);
      held.admin.release((socket) => (owner ? owner.emit('connection', socket) : socket.destroy()));
    }
  };
  /** Serve as soon as everything needed is in: the config and both DNS sockets (the admin one if sent). */
  const serveIfComplete = async (): Promise<void> => {
    if (!config || !handles.udp || !handles.tcp) return;
    await startServing();
    if (handles.admin) await startAdmin();
  };

  return new Promise((resolve) => {
    const fail = (err: unknown): void => {
      const code = isMeshError(err) ? err.code : 'MESH_DNS_CHILD_FAILED';
      send({ type: 'error', code, message: err instanceof Error ? err.message : String(err) });
      dns?.recordError(err, 'control');
    };
    let finishing = false;
    const finish = async (drainTimeMs: number): Promise<void> => {
      if (finishing) return;
      finishing = true;
      for (const h of [held.udp, held.tcp, held.admin]) h?.giveUp('mesh-dns is stopping');
      await starting?.catch(() => {});
      await admin?.close();
      await dns?.drain(drainTimeMs);
      // sockets handed over but never served (no 'start' came) would keep the process alive
      if (!dns) {
        handles.udp?.close();
        handles.tcp?.close();
      }
      if (!admin) handles.admin?.close();
      process.off('message', onMessage);
      if (process.connected) process.disconnect();
      resolve(EXIT_CODES.ok);
      // whatever else might still hold the event loop: the child must not outlive this
      setTimeout(() => process.exit(EXIT_CODES.ok), 2000).unref();
    };
    const onMessage = async (raw: unknown, handle?: unknown): Promise<void> => {
      if (!isParentToChild(raw) || finishing) return;
      const msg = raw as ParentToChild;
      try {
        switch (msg.type) {
          case 'handle':
            if (msg.name === 'dns-udp') {
              handles.udp = handle as dgram.Socket;
              held.udp = holdDatagrams(handles.udp, holdOptions);
            } else if (msg.name === 'dns-tcp') {
              handles.tcp = handle as net.Server;
              held.tcp = holdConnections(handles.tcp, holdOptions);
            } else if (msg.name === 'admin') {
              handles.admin = handle as net.Server;
              held.admin = holdConnections(handles.admin, holdOptions);
            }
            await serveIfComplete();
            break;
          case 'config': {
            const next = parseConfig(dnsConfigSchema, msg.config, { source: 'config from the agent' });
            if (dns) applyConfig(dns, next);
            config = next;
            send({ type: 'config-applied', version: String(Date.now()) });
            await serveIfComplete();
            break;
          }
          case 'registry': {
            const snapshot = parseConfig(registrySnapshotSchema, msg.snapshot, { source: 'registry snapshot from the agent' });
            const services = snapshot.services.map(({ name, namespace, vip }) => ({ name, namespace, vip }));
            if (dns) dns.updateNames(services);
            else registryServices = services; // the names the server starts with
            send({ type: 'config-applied', version: String(snapshot.revision ?? Date.now()) });
            break;
          }
          case 'start': {
            await startServing();
            await startAdmin();
            send({ type: 'ready', epoch: msg.epoch, pid: process.pid });
            break;
          }
          case 'drain':
            await finish(msg.drainTimeMs);
            break;
        }
      } catch (err) {
        fail(err);
      }
    };
    process.on('message', onMessage);
    // The agent went away (killed, crashed): nobody will send 'drain', and a child that lingers
    // holds the ports the next agent needs. Finish what is in flight briefly, then exit.
    const finishSafely = (drainTimeMs: number): void => {
      finish(drainTimeMs).catch((err: unknown) => {
        logger.scope('default').error({ err: err instanceof Error ? err.message : String(err) }, 'stopping failed; exiting anyway');
        process.exit(EXIT_CODES.failure);
      });
    };
    process.once('disconnect', () => finishSafely(ORPHAN_DRAIN_MS));
    process.once('SIGTERM', () => finishSafely(0));
  });
}

/** How long a child whose agent went away lets in-flight upstream queries finish. */
const ORPHAN_DRAIN_MS = 1000;

export async function main(argv: string[]): Promise<number | void> {
  const args = parseCliArgs(argv);
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return EXIT_CODES.ok;
  }
  if (args.version) {
    process.stdout.write(`mesh-dns ${VERSION}\n`);
    return EXIT_CODES.ok;
  }
  if (typeof process.send === 'function') return runAsChild(args);
  return runStandalone(args);
}

export function runCli(argv: string[]): Promise<void> {
  return runMain('mesh-dns', () => main(argv));
}

