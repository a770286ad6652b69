import { EXIT_CODES, MeshError } from '@mesh-agent/shared-config';
import type { IpFamily } from './addresses';
import type { Executor, ExecResult } from './executor';

/** Which iptables binaries to use: the system default (`iptables`), or an explicit backend. */
export type BackendChoice = 'auto' | 'nft' | 'legacy';

export interface BackendInfo {
  /** what `iptables -V` said the backend is */
  backend: 'nf_tables' | 'legacy' | 'unknown';
  version: string;
  /** the `iptables -V` line */
  text: string;
}

export interface Binaries {
  iptables: string;
  save: string;
  restore: string;
}

export function binariesFor(family: IpFamily, choice: BackendChoice = 'auto'): Binaries {
  const base = family === 4 ? 'iptables' : 'ip6tables';
  const suffix = choice === 'auto' ? '' : `-${choice}`;
  return { iptables: `${base}${suffix}`, save: `${base}${suffix}-save`, restore: `${base}${suffix}-restore` };
}

/** `iptables v1.8.9 (nf_tables)` -> nf_tables; `(legacy)` or no suffix (before 1.8) -> legacy. */
export function parseBackend(versionText: string): BackendInfo {
  const line = versionText.trim().split('\n')[0] ?? '';
  const m = /v(\d+(?:\.\d+)*)\s*(?:\(([^)]+)\))?/.exec(line);
  const version = m?.[1] ?? 'unknown';
  const mode = m?.[2];
  const backend = mode === 'nf_tables' ? 'nf_tables' : mode === 'legacy' || (m && !mode) ? 'legacy' : 'unknown';
  return { backend, version, text: line };
}

/** Turns a failed iptables command into an error that says what is needed. */
export function commandFailure(what: string, command: string, result: ExecResult, opts: { input?: string } = {}): MeshError {
  const stderr = result.stderr.trim();
  if (/Permission denied|Operation not permitted|must be root/i.test(stderr)) {
    return new MeshError('MESH_IPT_PERMISSION', `${what}: ${command} was refused: ${stderr}`, {
      exitCode: EXIT_CODES.permission,
      hint: 'run as root (or with CAP_NET_ADMIN and CAP_NET_RAW), e.g. sudo mesh-iptables ...',
    });
  }
  if (/Cannot open network namespace/.test(stderr)) {
    return new MeshError('MESH_IPT_NETNS_MISSING', `${what}: ${stderr}`, {
      exitCode: EXIT_CODES.usage,
      hint: 'check the name given to --netns (ip netns list), or create it with ip netns add NAME',
    });
  }
  const lineMatch = /line:?\s*(\d+)/i.exec(stderr);
  let offending = '';
  if (lineMatch && opts.input) {
    const line = opts.input.split('\n')[Number(lineMatch[1]) - 1];
    if (line) offending = `\n  restore input line ${lineMatch[1]}: ${line}`;
  }
  const busy = /(?:CHAIN_DEL|CHAIN_USER_DEL|DELETE_CHAIN)[^\n]*(?:busy|Too many links)[^\n]*?chain\s+(\S+)/i.exec(stderr) ?? (/busy/i.test(stderr) ? /-X (\S+)/.exec(offending) : null);
  const hint = busy
    ? `nothing was changed (each restore is one transaction): a rule that is not ours still jumps to ${busy[1]} (find it with: iptables-save -t nat | grep -- '-j ${busy[1]}'); remove it and run again`
    : /No chain|does not exist|Couldn't load|unknown option|Extension .* not found|No such file/i.test(stderr)
      ? 'nothing was changed (each restore is one transaction); the kernel may lack the nat table or a match (modprobe iptable_nat / nft_nat, xt_owner); the failing input line is shown above'
      : 'nothing was changed (each restore is one transaction); the failing input line is shown above';
  return new MeshError('MESH_IPT_RESTORE_FAILED', `${what}: ${command} exited with status ${result.code}: ${stderr.replace(/\s*\n\s*/g, ' ') || '(no message)'}${offending}`, {
    exitCode: EXIT_CODES.failure,
    hint,
  });
}

export async function detectBackend(executor: Executor, family: IpFamily = 4, choice: BackendChoice = 'auto'): Promise<BackendInfo> {
  const bin = binariesFor(family, choice).iptables;
  const result = await executor.run({ command: bin, args: ['-V'], mutates: false });
  if (result.code !== 0) throw commandFailure('detecting the iptables backend', `${bin} -V`, result);
  return parseBackend(result.stdout || result.stderr);
}
