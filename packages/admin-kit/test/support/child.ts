import { spawn, fork, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const CHILD_SCRIPT = fileURLToPath(new URL('../fixtures/child-admin.mjs', import.meta.url));
const DIST = fileURLToPath(new URL('../../dist/index.js', import.meta.url));

/** The child processes run the built package; say so clearly when it is missing. */
export function requireBuild(): void {
  if (!existsSync(DIST)) throw new Error(`${DIST} is missing: build the package first (pnpm exec tsup)`);
}

/** Resolves with the first stdout line that is JSON with the given key; rejects if the child exits first. */
export function waitForLine<T = unknown>(child: ChildProcess, key: string): Promise<T> {
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    const rl = createInterface({ input: child.stdout! });
    // 'close', not 'exit': 'exit' may come before the last stdout lines are read
    const onExit = (code: number | null, signal: string | null) => reject(new Error(`child exited (${code ?? signal}) before "${key}": ${stderr}`));
    child.once('close', onExit);
    rl.on('line', (line) => {
      try {
        const parsed = JSON.parse(line);
        if (parsed && key in parsed) {
          child.off('close', onExit);
          resolve(parsed[key] as T);
        }
      } catch {
        // not one of ours
      }
    });
  });
}

/** Resolves with the exit code; after `guardMs` the child is killed and the promise rejects (a hang, not a slow machine). */
export function waitForExit(child: ChildProcess, guardMs: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    const guard = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child ${child.pid} did not exit by itself within ${guardMs} ms: something kept it alive`));
    }, guardMs);
    child.once('exit', (code) => {
      clearTimeout(guard);
      resolve(code);
    });
  });
}

export function killQuietly(child: ChildProcess | undefined): void {
  if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

export { spawn, fork, execFileSync };
