// Whether a pid still runs. `kill(pid, 0)` also succeeds for a zombie (exited, not yet reaped by
// its parent or by init, which can take seconds on some machines): a zombie holds no socket and no
// lock and runs nothing, so it counts as gone.
import { readFileSync } from 'node:fs';

/** The state letter of /proc/PID/stat (R, S, D, Z, X, ...), undefined when there is no such process or no /proc. */
function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "PID (COMM) STATE ...": COMM may hold spaces and parentheses, so look after the last ')'
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

/** True while `pid` is a running (not zombie) process, also one owned by another user. */
export function processRunning(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const state = procState(pid);
  return state !== 'Z' && state !== 'X';
}
