// The whole test world: topology + infra + one plain application per host. Torn down in one call.
import { mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProcessGroup, run, type Managed } from './exec.js';
import { cleanLeftovers, createTopology, GATEWAY, type Host, type Topology } from './netns.js';
import { removeInfraFiles, startApp, startInfra, writeAppScript, type Infra } from './infra.js';

export const APP_PORT = 8089;

/** Host roles and addresses. B and B2 are two instances of service `order`; A runs service `user`. */
export const HOSTS = [
  { role: 'infra', address: GATEWAY },
  { role: 'a', address: '198.18.0.2' },
  { role: 'b', address: '198.18.0.3' },
  { role: 'b2', address: '198.18.0.4' },
] as const;

export interface World {
  topo: Topology;
  infra: Infra;
  procs: ProcessGroup;
  dir: string;
  appScript: string;
  apps: Record<string, Managed>;
  host(role: 'infra' | 'a' | 'b' | 'b2'): Host;
  hostRulesBefore: string;
  teardown(): Promise<void>;
}

/** The machine's own nat/filter rules, to prove the suite never touched them. */
export async function hostRules(): Promise<string> {
  const { stdout } = await run('iptables-save', []);
  return stdout.split('\n').filter((line) => !line.startsWith('#') && !/^:\S+ \S+ \[\d+:\d+\]$/.test(line)).join('\n');
}

export async function createWorld(opts: { apps?: Array<'a' | 'b' | 'b2'> } = {}): Promise<World> {
  await cleanLeftovers();
  const hostRulesBefore = await hostRules();
  const procs = new ProcessGroup();
  const dir = mkdtempSync(join(tmpdir(), 'mae2e-world-'));
  chmodSync(dir, 0o755);
  let topo: Topology | undefined;
  let infra: Infra | undefined;
  const teardown = async () => {
    await procs.stopAll();
    await topo?.destroy();
    removeInfraFiles(infra);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    topo = await createTopology([...HOSTS], GATEWAY);
    const host = (role: string) => topo!.hosts[role];
    infra = await startInfra(procs, host('infra').ns, GATEWAY);
    const appScript = writeAppScript(dir);
    const apps: Record<string, Managed> = {};
    for (const role of opts.apps ?? ['a', 'b', 'b2']) apps[role] = await startApp(procs, host(role).ns, appScript, `host-${role}`, APP_PORT);
    return { topo, infra, procs, dir, appScript, apps, host, hostRulesBefore, teardown };
  } catch (err) {
    await teardown();
    throw err;
  }
}
