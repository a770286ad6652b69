import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

// Two network namespaces joined by a veth pair, as test/proxy-original-dst.test.ts builds them: the
// sidecar's (A: the proxy, its iptables REDIRECT rules, the local application) and a peer host's (B).
// Nothing touches the machine's own namespace; names carry the test's pid.

export const PATH = `${process.env.PATH}:/usr/sbin:/sbin`;
export const pkgDir = path.resolve(__dirname, '..', '..');
export const addonFile = path.join(pkgDir, 'native', 'build', 'Release', 'original_dst.node');
export const proxyBin = path.join(pkgDir, 'bin', 'mesh-proxy.js');

export interface ShResult { code: number; stdout: string; stderr: string }

export function sh(argv: string[], opts: { allowFail?: boolean; input?: string; timeoutMs?: number } = {}): ShResult {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', env: { ...process.env, PATH }, timeout: opts.timeoutMs ?? 60_000, input: opts.input });
  const out = { code: r.status ?? 1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  if (!opts.allowFail && out.code !== 0) throw new Error(`\`${argv.join(' ')}\` failed (${out.code}): ${out.stderr}`);
  return out;
}

/** Why these tests cannot run here (undefined: they can); CI turns a reason into a failure. */
export function labUnavailable(tools: string[][] = []): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, iptables)';
  for (const argv of [['ip', 'netns', 'list'], ['iptables', '-V'], ['curl', '--version'], ...tools]) if (sh(argv, { allowFail: true }).code !== 0) return `${argv.join(' ')} unavailable`;
  if (!fs.existsSync(addonFile)) return `the addon is not built (${addonFile}); run pnpm --filter @mesh-agent/proxy build`;
  if (!fs.existsSync(path.join(pkgDir, 'dist', 'cli.js'))) return 'the proxy is not built; run pnpm --filter @mesh-agent/proxy build';
  return undefined;
}

export class NetnsLab {
  readonly a: string;
  readonly b: string;
  private readonly children: ChildProcess[] = [];

  /** `subnet`: the third octet of 198.18.<subnet>.0/24 (A is .1, B is .2). */
  constructor(readonly tag: string, readonly subnet: number) {
    this.a = `${tag}a`;
    this.b = `${tag}b`;
  }

  get ipA(): string { return `198.18.${this.subnet}.1`; }
  get ipB(): string { return `198.18.${this.subnet}.2`; }

  create(): void {
    sh(['ip', 'netns', 'add', this.a]);
    sh(['ip', 'netns', 'add', this.b]);
    sh(['ip', 'link', 'add', `${this.tag}va`, 'netns', this.a, 'type', 'veth', 'peer', 'name', `${this.tag}vb`, 'netns', this.b]);
    for (const [ns, dev, addr, peer] of [[this.a, `${this.tag}va`, this.ipA, this.ipB], [this.b, `${this.tag}vb`, this.ipB, this.ipA]] as const) {
      this.inNs(ns, ['ip', 'link', 'set', 'lo', 'up']);
      this.inNs(ns, ['ip', 'addr', 'add', `${addr}/24`, 'dev', dev]);
      this.inNs(ns, ['ip', 'link', 'set', dev, 'up']);
      this.inNs(ns, ['ip', 'route', 'add', 'default', 'via', peer]);
    }
  }

  inNs(ns: string, argv: string[], opts: { allowFail?: boolean; input?: string; timeoutMs?: number } = {}): ShResult {
    return sh(['ip', 'netns', 'exec', ns, ...argv], opts);
  }

  /** A long-running process inside `ns`; its stdout and stderr are collected. Killed by remove(). */
  start(ns: string, argv: string[], env: Record<string, string> = {}): { child: ChildProcess; out: () => string } {
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], { env: { ...process.env, PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    child.stdout!.on('data', (d: Buffer) => { text += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { text += d.toString(); });
    this.children.push(child);
    return { child, out: () => text };
  }

  async waitHttp(ns: string, url: string): Promise<void> {
    const end = Date.now() + 30_000;
    while (Date.now() < end) {
      if (this.inNs(ns, ['curl', '-s', '-o', '/dev/null', '--max-time', '2', url], { allowFail: true }).code === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${url} in ${ns} did not answer`);
  }

  /** One stat of the proxy's admin in namespace A (exact name); NaN when it does not exist. */
  stat(adminPort: number, name: string): number {
    const line = this.inNs(this.a, ['curl', '-s', `http://127.0.0.1:${adminPort}/stats?filter=${encodeURIComponent(`^${name.replace(/[.#[\]]/g, (c) => `\\${c}`)}$`)}`]).stdout.trim();
    return Number(line.split(': ')[1] ?? NaN);
  }

  remove(): void {
    for (const c of this.children) c.kill('SIGKILL');
    sh(['ip', 'netns', 'del', this.a], { allowFail: true });
    sh(['ip', 'netns', 'del', this.b], { allowFail: true });
  }
}
