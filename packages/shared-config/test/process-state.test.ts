// processRunning against real processes: one running, one exited but not yet reaped (a zombie), one gone.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { processRunning } from '../src/index';

describe('processRunning', () => {
  it('is true for a running process and this one, false for a zombie and for a pid that is gone', async () => {
    expect(processRunning(process.pid)).toBe(true);
    // a child that exits while we do not reap it yet: its pid stays a zombie until the event loop runs
    const child = spawn('sh', ['-c', 'exit 0'], { stdio: 'ignore' });
    const pid = child.pid!;
    const exited = new Promise((resolve) => child.on('exit', resolve));
    const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
    expect(processRunning(sleeper.pid!)).toBe(true);
    // wait (synchronously, so Node cannot reap it) until the kernel has made it a zombie
    const deadline = Date.now() + 5000;
    let state = '';
    while (Date.now() < deadline) {
      try {
        state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] ?? '';
      } catch {
        state = 'gone';
      }
      if (state === 'Z') break;
    }
    expect(state).toBe('Z');
    expect(processRunning(pid)).toBe(false);
    await exited;
    expect(processRunning(pid)).toBe(false);
    sleeper.kill('SIGKILL');
    await new Promise((resolve) => sleeper.on('exit', resolve));
    expect(processRunning(sleeper.pid!)).toBe(false);
    expect(processRunning(0)).toBe(false);
    expect(processRunning(-1)).toBe(false);
  });
});
