// One sidecar per host: mesh-agent started as root inside the host's namespace with the proxy and
// mesh-dns under their own uid, the etcd registry and full iptables capture.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nsArgv, nsRun, waitFor, withLog, type Managed, type As, type RunResult } from './exec.js';
import { APP_USER, PROXY_USER } from './infra.js';
import { APP_PORT, type World } from './world.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const AGENT_BIN = join(REPO_ROOT, 'packages/agent/bin/mesh-agent.js');

export type Role = 'a' | 'b' | 'b2';
/** Host A runs service `user`; B and B2 are two instances of `order`. */
export const SERVICE_OF: Record<Role, string> = { a: 'user', b: 'order', b2: 'order' };

export interface Sidecar { role: Role; ns: string; dir: string; configFile: string; process: Managed }

/** Writes the agent config and the application's spec.yaml (TSF shape) for one host. */
export interface SidecarOptions {
  /** Extra top-level sections appended to agent.yaml (YAML lines), e.g. an `mtls:` block. */
  extraConfig?: string[];
  /** More services of spec.yaml beside the host's own, e.g. a gRPC service on another port (no health check path: TCP-checked). */
  extraServices?: Array<{ name: string; ports: Array<{ targetPort: number; protocol?: string }> }>;
  /** The proxy's drain time on hot restart (default 2 s); long-lived streams need more to finish on the old epoch. */
  drainTimeMs?: number;
  /** More lines of the agent's `proxy:` section, indented by two spaces, e.g. a `tracing:` block. */
  proxyConfig?: string[];
  /** More lines of the agent's `node:` section, indented by two spaces, e.g. `  labels: { version: v2 }`. */
  nodeConfig?: string[];
}

export function writeSidecarConfig(world: World, role: Role, opts: SidecarOptions = {}): { dir: string; configFile: string } {
  const dir = join(world.dir, `sidecar-${role}`);
  mkdirSync(join(dir, 'app'), { recursive: true });
  mkdirSync(join(dir, 'run'), { recursive: true });
  // The proxy and mesh-dns run as PROXY_USER and read their config files from run/.
  for (const d of [dir, join(dir, 'app'), join(dir, 'run')]) chmodSync(d, 0o755);
  const service = SERVICE_OF[role];
  writeFileSync(join(dir, 'app', 'spec.yaml'), [
    'apiVersion: v1',
    'kind: Application',
    'spec:',
    '  services:',
    `    - name: ${service}`,
    '      ports:',
    `        - targetPort: ${APP_PORT}`,
    '          protocol: http',
    '      healthCheck:',
    '        path: /health',
    ...(opts.extraServices ?? []).flatMap((extra) => [
      `    - name: ${extra.name}`,
      '      ports:',
      // a port without protocol is written without one (sniffed: auto)
      ...extra.ports.flatMap((p) => [`        - targetPort: ${p.targetPort}`, ...(p.protocol ? [`          protocol: ${p.protocol}`] : [])]),
    ]),
    '',
  ].join('\n'));
  // Test timings: probes every second and short ejections, so a fault and its repair show within
  // seconds instead of the production defaults' tens of seconds.
  const globalFile = join(dir, 'global.yaml');
  writeFileSync(globalFile, [
    'healthCheck: { intervalMs: 1000, timeoutMs: 1000, healthyThreshold: 1, unhealthyThreshold: 2 }',
    'outlierDetection: { intervalMs: 1000, baseEjectionTimeMs: 2000 }',
    '',
  ].join('\n'));
  const host = world.host(role);
  const configFile = join(dir, 'agent.yaml');
  writeFileSync(configFile, [
    'node:',
    `  ip: ${host.address}`,
    `  id: ${service}-${role}`,
    ...(opts.nodeConfig ?? []),
    'app:',
    `  configDir: ${join(dir, 'app')}`,
    'proxy:',
    `  uid: ${PROXY_USER.uid}`,
    `  gid: ${PROXY_USER.gid}`,
    `  drainTimeMs: ${opts.drainTimeMs ?? 2000}`,
    ...(opts.proxyConfig ?? []),
    'mesh:',
    `  globalConfigFile: ${globalFile}`,
    'meshDns:',
    `  uid: ${PROXY_USER.uid}`,
    `  gid: ${PROXY_USER.gid}`,
    'registry:',
    '  backend: etcd',
    '  etcd:',
    `    endpoints: [${world.infra.etcdEndpoint}]`,
    '    prefix: /mesh-e2e/',
    '    leaseTtlSeconds: 5',
    'iptables:',
    `  stateFile: ${join(dir, 'run', 'iptables-state.json')}`,
    // the diagnostics faults edit the rules by hand: the agent must not re-apply them while doctor looks
    '  verifyIntervalMs: 0',
    'paths:',
    `  runDir: ${join(dir, 'run')}`,
    `  proxyBootstrap: ${join(dir, 'run', 'proxy-bootstrap.json')}`,
    `  dnsConfig: ${join(dir, 'run', 'mesh-dns.json')}`,
    ...(opts.extraConfig ?? []),
    '',
  ].join('\n'));
  return { dir, configFile };
}

export async function startSidecar(world: World, role: Role, opts: SidecarOptions & { until?: '<FLOW_TAKEOVER>' | '<SERVICE_REGISTERED>' } = {}): Promise<Sidecar> {
  const { dir, configFile } = writeSidecarConfig(world, role, opts);
  const ns = world.host(role).ns;
  const proc = world.procs.start(`mesh-agent-${role}`, nsArgv(ns, process.execPath, [AGENT_BIN, 'start', '--config', configFile]));
  const until = opts.until ?? '<SERVICE_REGISTERED>';
  await waitFor(`mesh-agent on ${role} to reach ${until}`, async () => {
    if (proc.child.exitCode !== null) throw new Error(`mesh-agent exited ${proc.child.exitCode}`);
    return (await admin(ns, 15020, '/status')).stdout.trim() === until || (until === '<FLOW_TAKEOVER>' && (await admin(ns, 15020, '/status')).stdout.trim() === '<SERVICE_REGISTERED>');
  }, { timeoutMs: 60_000, intervalMs: 300 }).catch((err) => { throw withLog(err, proc, 60); });
  return { role, ns, dir, configFile, process: proc };
}

/** GET (or another method) on an admin port inside a host's namespace. */
export function admin(ns: string, port: number, path: string, method = 'GET'): Promise<RunResult> {
  return nsRun(ns, 'curl', ['-s', '--max-time', '10', '-X', method, `http://127.0.0.1:${port}${path}`], { allowFail: true });
}

export async function adminJson<T = any>(ns: string, port: number, path: string): Promise<T> {
  const { stdout } = await admin(ns, port, path);
  try {
    return JSON.parse(stdout) as T;
  } catch {
    throw new Error(`GET 127.0.0.1:${port}${path} in ${ns} did not answer JSON: ${stdout.slice(0, 300)}`);
  }
}

/** curl as the application's user: a process that knows nothing of the mesh. */
export function appCurl(ns: string, url: string, extra: string[] = [], as: As = APP_USER): Promise<RunResult> {
  return nsRun(ns, 'curl', ['-s', '--max-time', '10', ...extra, url], { as, allowFail: true });
}

/** `curl -w` helper: status code and body (without its final newline) of one request by name. */
export async function appGet(ns: string, url: string): Promise<{ code: number; body: string }> {
  const { stdout } = await appCurl(ns, url, ['-w', '\n%{http_code}']);
  const cut = stdout.lastIndexOf('\n');
  return { code: Number(stdout.slice(cut + 1)) || 0, body: stdout.slice(0, cut).replace(/\n$/, '') };
}

export function mesh(world: World, role: Role, args: string[]): Promise<RunResult> {
  return nsRun(world.host(role).ns, process.execPath, [AGENT_BIN, ...args], { allowFail: true, timeoutMs: 60_000 });
}

/** With E2E_CAPTURE_DIR set, keeps a command's real output (docs/troubleshooting.md quotes it). */
export async function captureShell(name: string, ns: string, command: string): Promise<void> {
  const dir = process.env.E2E_CAPTURE_DIR;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  const res = await nsRun(ns, 'sh', ['-c', command], { allowFail: true });
  writeFileSync(join(dir, `${name}.txt`), `$ ${command}\n${res.stdout}${res.stderr}`);
}

/** Sum of every proxy stat (15000 /stats) whose name matches: listener stats carry the listener's address in their name. */
export async function statSum(ns: string, pattern: RegExp): Promise<number> {
  const { stdout } = await admin(ns, 15000, '/stats');
  let sum = 0;
  for (const line of stdout.split('\n')) {
    const cut = line.lastIndexOf(': ');
    if (cut > 0 && pattern.test(line.slice(0, cut))) sum += Number(line.slice(cut + 2)) || 0;
  }
  return sum;
}

/** A stat name as a literal in a RegExp (cluster names carry `#`, stat names `.`). */
export const escapeStat = (s: string) => s.replace(/[.*+?^${}()|[\]\\#]/g, '\\$&');
/** `cluster.<cluster>.<leaf>` exactly. */
export const clusterStat = (cluster: string, leaf: string) => new RegExp(`^cluster\\.${escapeStat(cluster)}\\.${escapeStat(leaf)}$`);
/** `<leaf>` of the listener, whatever its address. */
export const listenerStat = (leaf: string) => new RegExp(`^listener\\..*\\.${escapeStat(leaf)}$`);
