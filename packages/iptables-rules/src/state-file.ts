import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { EXIT_CODES, MeshError } from '@mesh-agent/shared-config';
import type { IpFamily } from './addresses';

export const DEFAULT_STATE_FILE = '/var/run/mesh-agent/iptables-state.json';

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
