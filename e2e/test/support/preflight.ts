// Can this machine run the suite? Root, network namespaces, iptables inside a namespace and the
// Debian tools. In CI a missing piece fails the suite with the reason; elsewhere the suite skips.
import { execFileSync } from 'node:child_process';

export const REQUIRED_TOOLS = ['ip', 'iptables', 'iptables-save', 'setpriv', 'curl', 'dig', 'dnsmasq', 'etcd', 'openssl', 'tcpdump'] as const;

export interface Preflight { ok: boolean; reason?: string }

function has(tool: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore', env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` } });
    return true;
  } catch {
    return false;
  }
}

/** Synchronous so that `describe.skipIf` can use it at collection time. */
export function preflight(extraTools: readonly string[] = []): Preflight {
  if (process.platform !== 'linux') return { ok: false, reason: 'needs Linux network namespaces' };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'needs root (ip netns add, iptables); run as root, e.g. sudo pnpm --filter @mesh-agent/e2e test' };
  const missing = [...REQUIRED_TOOLS, ...extraTools].filter((tool) => !has(tool));
  if (missing.length) return { ok: false, reason: `missing tools: ${missing.join(', ')}; install them with: sudo bash scripts/install-test-deps.sh` };
  const probe = `mae2e-probe-${process.pid}`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' });
    execFileSync('ip', ['netns', 'exec', probe, 'iptables', '-t', 'nat', '-S'], { stdio: 'pipe', timeout: 10_000 });
  } catch (err) {
    const detail = (err as { stderr?: Buffer }).stderr?.toString().trim() || (err as Error).message;
    return { ok: false, reason: `network namespaces or iptables are not usable here (${detail}); the suite needs CAP_NET_ADMIN and the nf_tables/iptables kernel support` };
  } finally {
    try { execFileSync('ip', ['netns', 'del', probe], { stdio: 'ignore' }); } catch { /* was not created */ }
  }
  return { ok: true };
}

export const IN_CI = Boolean(process.env.CI);
