// Network namespaces for tests that need real iptables: the test creates them, runs the agent
// inside, and removes them afterwards. Nothing touches the machine's own namespace.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { processRunning } from '@mesh-agent/shared-config';
import { stringify } from 'yaml';

const exec = promisify(execFile);

/** Why namespace tests cannot run here, or undefined when they can. Synchronous for describe.skipIf. */
export function netnsUnavailable(): string | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'needs root (ip netns, iptables)';
  for (const tool of ['ip', 'iptables', 'iptables-save', 'curl', 'dig']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `needs ${tool} (scripts/install-test-deps.sh installs it)`;
    }
  }
  return undefined;
}

/** In CI a missing capability is a failure, elsewhere a skip with the reason. */
export function skipNetnsTests(): boolean {
  const why = netnsUnavailable();
  if (!why) return false;
  if (process.env.CI) throw new Error(`namespace tests cannot run: ${why}`);
  console.warn(`skipping namespace tests: ${why}`);
  return true;
}

export async function run(cmd: string, args: string[]): Promise<string> {
  const { stdout } = await exec(cmd, args, { maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

export async function inNs(ns: string, cmd: string, args: string[]): Promise<string> {
  return run('ip', ['netns', 'exec', ns, cmd, ...args]);
}

export interface NsPair {
  a: string;
  b: string;
  ipA: string;
  ipB: string;
  /** with `v6`: fd00:198:18:SUBNET::1 and ::2 (else empty) */
  ip6A: string;
  ip6B: string;
  remove(): Promise<void>;
}

/** Whether this kernel does IPv6 nat (it may boot with ipv6.disable=1), probed in a throwaway namespace. */
export function ipv6NatUnavailable(): string | undefined {
  try {
    execFileSync('unshare', ['-n', 'sh', '-c', 'ip link set lo up && ip -6 addr show dev lo | grep -q "::1" && ip6tables -t nat -L -n >/dev/null'], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    return `no IPv6 nat in this kernel: ${(err as { stderr?: Buffer }).stderr?.toString().trim() || (err as Error).message}`;
  }
}

/** Two namespaces joined by a veth pair, lo up, each with a default route through the other (IPv6 too with `v6`). */
export async function createNsPair(tag: string, subnet: number, opts: { v6?: boolean } = {}): Promise<NsPair> {
  const a = `ma-${tag}-a-${process.pid}`;
  const b = `ma-${tag}-b-${process.pid}`;
  const ipA = `198.18.${subnet}.1`;
  const ipB = `198.18.${subnet}.2`;
  const ip6A = opts.v6 ? `fd00:198:18:${subnet}::1` : '';
  const ip6B = opts.v6 ? `fd00:198:18:${subnet}::2` : '';
  const remove = async () => {
    for (const ns of [a, b]) await run('ip', ['netns', 'del', ns]).catch(() => undefined);
  };
  await remove();
  try {
    await run('ip', ['netns', 'add', a]);
    await run('ip', ['netns', 'add', b]);
    const va = `va${subnet}x${process.pid % 10000}`;
    const vb = `vb${subnet}x${process.pid % 10000}`;
    await run('ip', ['link', 'add', va, 'netns', a, 'type', 'veth', 'peer', 'name', vb, 'netns', b]);
    for (const [ns, dev, ip, peer, ip6, peer6] of [
      [a, va, ipA, ipB, ip6A, ip6B],
      [b, vb, ipB, ipA, ip6B, ip6A],
    ]) {
      await inNs(ns, 'ip', ['link', 'set', 'lo', 'up']);
      await inNs(ns, 'ip', ['addr', 'add', `${ip}/24`, 'dev', dev]);
      // nodad: usable at once, no duplicate address detection to wait for
      if (opts.v6) await inNs(ns, 'ip', ['-6', 'addr', 'add', `${ip6}/64`, 'dev', dev, 'nodad']);
      await inNs(ns, 'ip', ['link', 'set', dev, 'up']);
      await inNs(ns, 'ip', ['route', 'add', 'default', 'via', peer]);
      if (opts.v6) await inNs(ns, 'ip', ['-6', 'route', 'add', 'default', 'via', peer6]);
    }
  } catch (err) {
    await remove();
    throw err;
  }
  return { a, b, ipA, ipB, ip6A, ip6B, remove };
}

/** A process inside a namespace; killed (its whole group) by stop(). */
export interface NsProcess {
  child: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function spawnInNs(ns: string, cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; prefix?: string[] } = {}): NsProcess {
  const child = spawn('ip', ['netns', 'exec', ns, ...(opts.prefix ?? []), cmd, ...args], { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d) => (out += d));
  child.stderr?.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    child,
    output: () => out,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
}

/** `iptables-save -t nat` (or `ip6tables-save`) of a namespace without the comment and counter lines that change between runs. */
export async function natRules(ns: string, save: 'iptables-save' | 'ip6tables-save' = 'iptables-save'): Promise<string> {
  const text = await inNs(ns, save, ['-t', 'nat']);
  return text
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/, '[0:0]'))
    .join('\n');
}

/** Still running (a zombie waiting to be reaped counts as gone: it runs nothing and holds no socket). */
export const pidAlive = processRunning;

export interface NsAgentFiles {
  /** the agent config pointing at the files below; tests spread their own settings over it */
  config: Record<string, any>;
  runDir: string;
}

/**
 * What every namespace agent test writes into `dir`: spec.yaml with `services`, a file registry with
 * `registry`, a global config with quick health checks, and a run directory the proxy user can write
 * to (mode 0777); mesh-dns forwards to `dnsUpstream` (a peer namespace, never this machine's resolver).
 */
export function writeNsAgentFiles(dir: string, opts: { nodeIp: string; services: unknown[]; registry: unknown[]; dnsUpstream: string }): NsAgentFiles {
  const runDir = path.join(dir, 'run');
  fs.mkdirSync(runDir, { mode: 0o777 });
  fs.chmodSync(runDir, 0o777);
  fs.writeFileSync(path.join(dir, 'spec.yaml'), stringify({ apiVersion: 'v1', kind: 'Application', spec: { services: opts.services } }));
  fs.writeFileSync(path.join(dir, 'registry.yaml'), stringify({ services: opts.registry }));
  fs.writeFileSync(path.join(dir, 'global.yaml'), stringify({ healthCheck: { intervalMs: 300, timeoutMs: 1000 } }));
  const config = {
    node: { ip: opts.nodeIp, serviceName: 'user' },
    app: { configDir: dir },
    mesh: { globalConfigFile: path.join(dir, 'global.yaml') },
    registry: { backend: 'file', file: { path: path.join(dir, 'registry.yaml') } },
    dns: { upstreams: [opts.dnsUpstream] },
    iptables: { stateFile: path.join(runDir, 'iptables-state.json') },
    paths: { runDir, proxyBootstrap: path.join(runDir, 'proxy-bootstrap.json'), dnsConfig: path.join(runDir, 'mesh-dns.json') },
  };
  return { config, runDir };
}

/** curl from inside a namespace, and the agent's admin (127.0.0.1:15020) and /status there. */
export function nsAdminClient(ns: () => string) {
  const curlIn = (where: string, args: string[]) => inNs(where, 'curl', ['-s', '--max-time', '10', ...args]);
  const admin = (p: string) => curlIn(ns(), [`127.0.0.1:15020${p}`]);
  const status = async () => (await admin('/status').catch(() => '')).trim();
  return { curlIn, admin, status };
}
