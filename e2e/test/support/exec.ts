// Running commands, in the host namespace or inside a test namespace, with bounded time.
import { execFile, spawn, type ChildProcess } from 'node:child_process';

export interface RunResult { code: number; stdout: string; stderr: string }

export interface RunOptions { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv; allowFail?: boolean }

/** Runs a command to completion; rejects on a non-zero exit unless allowFail. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: opts.timeoutMs ?? 20_000, maxBuffer: 32 * 1024 * 1024, env: opts.env ?? process.env, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException & { code?: unknown }).code === 'number' ? Number((err as { code?: unknown }).code) : 1) : 0;
      const result = { code, stdout: String(stdout), stderr: String(stderr) };
      if (code !== 0 && !opts.allowFail) {
        reject(new Error(`${cmd} ${args.join(' ')} exited ${code}${err?.killed ? ' (killed after timeout)' : ''}\n${result.stderr || result.stdout}`));
      } else resolve(result);
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

/** Who a command runs as inside a namespace: root (default) or an unprivileged uid/gid. */
export interface As { uid: number; gid: number }

/** The argv that runs `cmd args` inside namespace `ns`, optionally as another user. */
export function nsArgv(ns: string, cmd: string, args: string[], as?: As): [string, ...string[]] {
  const user = as ? ['setpriv', `--reuid=${as.uid}`, `--regid=${as.gid}`, '--clear-groups', '--'] : [];
  return ['ip', 'netns', 'exec', ns, ...user, cmd, ...args];
}

export function nsRun(ns: string, cmd: string, args: string[], opts: RunOptions & { as?: As } = {}): Promise<RunResult> {
  const [ip, ...rest] = nsArgv(ns, cmd, args, opts.as);
  return run(ip, rest, opts);
}

/** Long-running processes the suite starts; every one is killed in teardown. */
export class ProcessGroup {
  private readonly running = new Set<Managed>();

  start(label: string, argv: [string, ...string[]], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Managed {
    const [cmd, ...args] = argv;
    // detached: its own process group, so teardown can kill the whole tree (ip netns exec -> node -> children).
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    const keep = (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(line);
      if (lines.length > 2000) lines.splice(0, lines.length - 2000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    child.on('error', (err) => lines.push(`spawn error: ${err.message}`));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))));
    const managed: Managed = { label, child, lines, exited, pid: child.pid ?? -1 };
    this.running.add(managed);
    void exited.then(() => this.running.delete(managed));
    return managed;
  }

  /** SIGTERM the process group, then SIGKILL what is left after graceMs. */
  async stop(m: Managed, graceMs = 8_000): Promise<void> {
    if (m.child.exitCode === null && m.child.signalCode === null) {
      killGroup(m.pid, 'SIGTERM');
      const done = await Promise.race([m.exited.then(() => true), delay(graceMs).then(() => false)]);
      if (done) return;
    }
    // The leader may be gone while others in its group live on (grandchildren): always sweep the group.
    killGroup(m.pid, 'SIGKILL');
    await Promise.race([m.exited, delay(2_000)]);
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.running].map((m) => this.stop(m)));
  }
}

export interface Managed { label: string; child: ChildProcess; lines: string[]; exited: Promise<number | null>; pid: number }

function killGroup(pid: number, signal: NodeJS.Signals): void {
  if (pid <= 0) return;
  try { process.kill(-pid, signal); } catch { try { process.kill(pid, signal); } catch { /* gone */ } }
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `probe` until it returns a truthy value or the deadline passes; the error names what was awaited. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | null | false>, opts: { timeoutMs?: number; intervalMs?: number } = {}): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (err) { last = err; }
    await delay(opts.intervalMs ?? 200);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last instanceof Error ? last.message : String(last)}` : ''}`);
}

/** Adds the last lines a process printed to an error, so a failed start says why. */
export function withLog(err: unknown, m: Managed, lines = 30): Error {
  const message = err instanceof Error ? err.message : String(err);
  const state = m.child.exitCode !== null || m.child.signalCode !== null ? ` (exited ${m.child.exitCode ?? m.child.signalCode})` : '';
  return new Error(`${message}\n--- last output of ${m.label}${state} ---\n${m.lines.slice(-lines).join('\n')}`);
}
