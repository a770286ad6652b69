// The suite's network: one namespace per host, joined by a bridge that lives in its own "switch"
// namespace, so nothing is added to (or changed in) the machine's own namespace.
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { run, nsRun } from './exec.js';

export const NS_PREFIX = 'mae2e-';
export const SUBNET_PREFIX_LEN = 24;
export const GATEWAY = '198.18.0.1';

export interface HostSpec { role: string; address: string }
export interface Host extends HostSpec { ns: string }

export interface Topology {
  runId: string;
  switchNs: string;
  hosts: Record<string, Host>;
  /** removes every namespace and /etc/netns directory of this run; safe to call twice */
  destroy(): Promise<void>;
}

/** Namespaces are named `mae2e-<pid>-<role>`: leftovers of a dead run are recognisable and removable. */
export function nsName(runId: string, role: string): string {
  return `${NS_PREFIX}${runId}-${role}`;
}

/** Removes namespaces (and their /etc/netns files) left by an earlier run whose process is gone. */
export async function cleanLeftovers(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  const removed: string[] = [];
  for (const line of stdout.split('\n')) {
    const name = line.split(' ')[0];
    if (!name?.startsWith(NS_PREFIX)) continue;
    const pid = Number(name.slice(NS_PREFIX.length).split('-')[0]);
    if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) continue;
    await killNamespaceProcesses(name);
    await run('ip', ['netns', 'del', name], { allowFail: true });
    rmSync(`/etc/netns/${name}`, { recursive: true, force: true });
    removed.push(name);
  }
  if (existsSync('/etc/netns')) {
    for (const dir of readdirSync('/etc/netns')) {
      const pid = Number(dir.slice(NS_PREFIX.length).split('-')[0]);
      if (dir.startsWith(NS_PREFIX) && !(pid > 0 && processAlive(pid))) rmSync(`/etc/netns/${dir}`, { recursive: true, force: true });
    }
  }
  return removed;
}

function processAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM'; }
}

/** Kills every process still running inside a namespace (a leftover agent would keep it busy). */
export async function killNamespaceProcesses(ns: string): Promise<void> {
  const { stdout } = await run('ip', ['netns', 'pids', ns], { allowFail: true });
  for (const pid of stdout.split(/\s+/).filter(Boolean).map(Number)) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
  }
}

/**
 * Creates the switch namespace with bridge `br0` and one namespace per host, each with `eth0`
 * (a veth whose peer is on the bridge), `lo` up, its address in 198.18.0.0/24 and a default route
 * (connect() to the mesh VIP needs a route before the nat OUTPUT chain sees the packet).
 */
export async function createTopology(hostSpecs: HostSpec[], resolver: string): Promise<Topology> {
  const runId = String(process.pid);
  const switchNs = nsName(runId, 'sw');
  const hosts: Record<string, Host> = {};
  const created: string[] = [];
  const destroy = async () => {
    for (const ns of created.reverse()) {
      await killNamespaceProcesses(ns);
      await run('ip', ['netns', 'del', ns], { allowFail: true });
      rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
    }
    created.length = 0;
  };
  try {
    await run('ip', ['netns', 'add', switchNs]);
    created.push(switchNs);
    await nsRun(switchNs, 'ip', ['link', 'set', 'lo', 'up']);
    await nsRun(switchNs, 'ip', ['link', 'add', 'br0', 'type', 'bridge']);
    await nsRun(switchNs, 'ip', ['link', 'set', 'br0', 'up']);
    for (const [index, spec] of hostSpecs.entries()) {
      const ns = nsName(runId, spec.role);
      await run('ip', ['netns', 'add', ns]);
      created.push(ns);
      const port = `p${index}`;
      // The pair is created inside the switch namespace and one end moved: the host namespace never sees it.
      await nsRun(switchNs, 'ip', ['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      await nsRun(switchNs, 'ip', ['link', 'set', port, 'master', 'br0', 'up']);
      await nsRun(ns, 'ip', ['link', 'set', 'lo', 'up']);
      await nsRun(ns, 'ip', ['addr', 'add', `${spec.address}/${SUBNET_PREFIX_LEN}`, 'dev', 'eth0']);
      await nsRun(ns, 'ip', ['link', 'set', 'eth0', 'up']);
      if (spec.address !== GATEWAY) await nsRun(ns, 'ip', ['route', 'add', 'default', 'via', GATEWAY]);
      else await nsRun(ns, 'ip', ['route', 'add', 'default', 'dev', 'eth0']);
      // `ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf.
      mkdirSync(`/etc/netns/${ns}`, { recursive: true });
      writeFileSync(`/etc/netns/${ns}/resolv.conf`, `# written by the mesh-agent e2e suite\nnameserver ${resolver}\noptions timeout:1 attempts:2\n`);
      writeFileSync(`/etc/netns/${ns}/hosts`, `127.0.0.1 localhost\n${spec.address} ${spec.role}-host\n`);
      hosts[spec.role] = { ...spec, ns };
    }
  } catch (err) {
    await destroy();
    throw err;
  }
  return { runId, switchNs, hosts, destroy };
}
