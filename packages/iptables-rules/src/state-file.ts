import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { DEFAULT_IPTABLES_STATE_FILE, EXIT_CODES, MeshError, processRunning } from '@mesh-agent/shared-config';
import type { IpFamily } from './addresses';

/** One default for the agent and the CLI (shared-config's): a reboot clears rules and record together. */
export const DEFAULT_STATE_FILE = DEFAULT_IPTABLES_STATE_FILE;

/** What one address family got, recorded as the exact lines that were applied. */
export interface AppliedFamily {
  family: IpFamily;
  table: 'nat';
  chains: string[];
  /** `-A CHAIN spec` lines, jumps included */
  rules: string[];
}

/** The record `clean` works from, so it removes what was applied even after the config changed. */
export interface AppliedState {
  version: 1;
  appliedAt: string;
  backend: string;
  families: AppliedFamily[];
}

export function readState(file: string): AppliedState | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new MeshError('MESH_IPT_STATE_UNREADABLE', `cannot read the state file ${file}: ${(err as Error).message}`, {
      exitCode: EXIT_CODES.permission,
      hint: 'run as root, or point --state-file at a readable file',
    });
  }
  try {
    const state = JSON.parse(text) as AppliedState;
    if (state.version !== 1 || !Array.isArray(state.families)) throw new Error('unknown format');
    for (const fam of state.families) {
      if ((fam.family !== 4 && fam.family !== 6) || !Array.isArray(fam.chains) || !Array.isArray(fam.rules)) throw new Error('unknown format');
    }
    return state;
  } catch (err) {
    throw new MeshError('MESH_IPT_STATE_INVALID', `the state file ${file} is not a mesh-iptables state record: ${(err as Error).message}`, {
      exitCode: EXIT_CODES.failure,
      hint: 'remove it and run `mesh-iptables clean --force` to remove the mesh chains by name',
    });
  }
}

/** Written whole to a temporary file and renamed over the old one: never half a record. */
export function writeState(file: string, state: AppliedState): void {
  try {
    mkdirSync(dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o644 });
    renameSync(tmp, file);
  } catch (err) {
    throw new MeshError('MESH_IPT_STATE_UNWRITABLE', `cannot write the state file ${file}: ${(err as Error).message}`, {
      exitCode: EXIT_CODES.permission,
      hint: 'run as root, or point --state-file at a writable path',
    });
  }
}

export function removeState(file: string): void {
  rmSync(file, { force: true });
}

/**
 * Runs `fn` holding `STATE_FILE.lock`, so two runs against the same record (an agent restarting
 * while the old one cleans up, two operators) never plan from the same stale read: without it both
 * would see no jump and both add one. A lock left by a dead process is taken over.
 */
export async function withStateLock<T>(stateFile: string, fn: () => Promise<T>, opts: { timeoutMs?: number } = {}): Promise<T> {
  const lock = `${stateFile}.lock`;
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  try {
    mkdirSync(dirname(lock), { recursive: true });
  } catch (err) {
    throw new MeshError('MESH_IPT_STATE_UNWRITABLE', `cannot create the directory of ${lock}: ${(err as Error).message}`, {
      exitCode: EXIT_CODES.permission,
      hint: 'run as root, or point --state-file at a writable path',
    });
  }
  for (;;) {
    try {
      const fd = openSync(lock, 'wx', 0o644);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new MeshError('MESH_IPT_STATE_UNWRITABLE', `cannot create the lock ${lock}: ${(err as Error).message}`, {
          exitCode: EXIT_CODES.permission,
          hint: 'run as root, or point --state-file at a writable path',
        });
      }
      let holder = 0;
      try {
        holder = Number(readFileSync(lock, 'utf8').trim());
      } catch {
        continue; // released meanwhile
      }
      if (!Number.isInteger(holder) || holder <= 0 || !processRunning(holder)) {
        rmSync(lock, { force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new MeshError('MESH_IPT_LOCKED', `another mesh-iptables run (pid ${holder}) holds ${lock}`, {
          exitCode: EXIT_CODES.unavailable,
          hint: `wait for it to finish; if pid ${holder} is not mesh-iptables or the agent, remove ${lock}`,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, 25 + Math.floor(Math.random() * 50)));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { force: true });
  }
}
