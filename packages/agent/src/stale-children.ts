// The agent records its children's pids in the run directory. After a crash of the agent, a child
// that outlived it still holds the listening sockets (the next agent could not bind them), so the
// next start ends such leftovers first: only pids whose command line is one of our child bins.
import fs from 'node:fs';
import path from 'node:path';
import { processRunning } from '@mesh-agent/shared-config';

export function childrenFile(runDir: string): string {
  return path.join(runDir, 'children.json');
}

export function recordChildren(runDir: string, pids: Record<string, number[]>): void {
  try {
    fs.mkdirSync(runDir, { recursive: true });
    fs.writeFileSync(childrenFile(runDir), JSON.stringify(pids) + '\n');
  } catch {
    // best effort: only used to clean up after a crash
  }
}

function commandLine(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return undefined;
  }
}

/** Kills recorded children that still run one of `bins`; resolves to what was ended. */
export async function endStaleChildren(runDir: string, bins: string[]): Promise<number[]> {
  let recorded: Record<string, number[]>;
  try {
    recorded = JSON.parse(fs.readFileSync(childrenFile(runDir), 'utf8')) as Record<string, number[]>;
  } catch {
    return [];
  }
  const ended: number[] = [];
  for (const pid of Object.values(recorded).flat()) {
    if (pid === process.pid || !Number.isInteger(pid)) continue;
    const cmd = commandLine(pid);
    if (!cmd || !bins.some((bin) => cmd.includes(bin))) continue;
    try {
      process.kill(pid, 'SIGKILL');
      ended.push(pid);
    } catch {
      // gone already
    }
  }
  // wait until the kernel released them (their sockets with them); a zombie already has
  const deadline = Date.now() + 5000;
  while (ended.some(processRunning) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  fs.rmSync(childrenFile(runDir), { force: true });
  return ended;
}
