// Supervises one child component (the proxy "envoy" or "mesh-dns") across epochs: forks it,
// hands it the agent-owned listening sockets, waits for `ready`, restarts it with back-off when
// it dies, and hot-restarts it (new epoch on the same sockets, then drain the old one).
import { fork, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { EXIT_CODES, isChildToParent, MeshError, type ChildToParent, type ParentToChild } from '@mesh-agent/shared-config';
import { nodeFlagsOf } from './children';
import type { OwnedSocket } from './sockets';

export type ComponentName = 'envoy' | 'mesh-dns';

export interface SupervisorLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface ChildSupervisorOptions {
  component: ComponentName;
  /** The child's dist/cli.js. */
  modulePath: string;
  args?: string[];
  /** The child's Node flags (execArgv); default: the flags its bin's shebang asks for. */
  execArgv?: string[];
  env?: NodeJS.ProcessEnv;
  /** Drop to this user/group (only applied when the agent runs as root). */
  uid?: number;
  gid?: number;
  sockets: OwnedSocket[];
  /** The config a new epoch starts with (the latest one pushed). */
  config: () => unknown;
  /** The registry snapshot a new epoch starts with, if the component takes one. */
  registry?: () => unknown;
  drainTimeMs: () => number;
  readyTimeoutMs?: number;
  configTimeoutMs?: number;
  backoff?: { initialMs: number; maxMs: number };
  /** A child living longer than this resets the back-off. */
  stableAfterMs?: number;
  /** The child's stdout/stderr: both inherited, both dropped, or stderr only. */
  stdio?: 'inherit' | 'ignore' | 'stderr';
  logger: SupervisorLogger;
  /** Reports a failure for /latest_error. */
  onError: (err: MeshError) => void;
}

interface EpochProcess {
  epoch: number;
  child: ChildProcess;
  pid: number;
  startedAt: number;
  state: 'starting' | 'serving' | 'draining' | 'exited';
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  configWaiters: Array<{ resolve: (version: string) => void; reject: (err: Error) => void }>;
}

export interface ComponentState {
  component: ComponentName;
  epoch: number | null;
  pid: number | null;
  state: 'stopped' | 'starting' | 'serving' | 'restarting' | 'stopping';
  restarts: number;
  startedAt: string | null;
  lastExit: { epoch: number; code: number | null; signal: string | null; time: string } | null;
  draining: number[];
}

export class ChildSupervisor extends EventEmitter {
  private current: EpochProcess | undefined;
  private readonly live = new Set<EpochProcess>();
  private busy = false;
  private stopping = false;
  private restartTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private restarts = 0;
  private lastExit: ComponentState['lastExit'] = null;
  private restartPending = false;

  constructor(private readonly opts: ChildSupervisorOptions) {
    super();
  }

  get component(): ComponentName {
    return this.opts.component;
  }

  /** The epoch that serves now; null before the first one is ready. */
  get epoch(): number | null {
    return this.current?.epoch ?? null;
  }

  get pid(): number | null {
    return this.current?.pid ?? null;
  }

  get healthy(): boolean {
    return this.current?.state === 'serving';
  }

  /** Every live process (serving, starting, draining). */
  pids(): number[] {
    return [...this.live].map((p) => p.pid);
  }

  state(): ComponentState {
    const state: ComponentState['state'] = this.stopping
      ? 'stopping'
      : this.restartPending
        ? 'restarting'
        : this.current
          ? this.current.state === 'serving'
            ? 'serving'
            : 'starting'
          : this.busy
            ? 'starting'
            : 'stopped';
    return {
      component: this.opts.component,
      epoch: this.epoch,
      pid: this.pid,
      state,
      restarts: this.restarts,
      startedAt: this.current ? new Date(this.current.startedAt).toISOString() : null,
      lastExit: this.lastExit,
      draining: [...this.live].filter((p) => p.state === 'draining').map((p) => p.epoch),
    };
  }

  /** Starts epoch 0 and resolves once it is ready. */
  async start(): Promise<void> {
    if (this.current || this.busy) throw new MeshError('MESH_AGENT_ALREADY_STARTED', `${this.opts.component} is already started`);
    this.busy = true;
    try {
      this.current = await this.launch(0);
    } finally {
      this.busy = false;
    }
  }

  /**
   * Starts the next epoch on the same sockets, waits until it is ready, then drains the old one.
   * A failed epoch is reported and its number reused; the old epoch keeps serving.
   */
  async hotRestart(): Promise<{ epoch: number; pid: number; previousEpoch: number | null }> {
    if (this.stopping) throw new MeshError('MESH_AGENT_STOPPING', `${this.opts.component} is stopping; no hot restart`, { exitCode: EXIT_CODES.unavailable });
    if (this.busy || this.restartPending) {
      throw new MeshError('MESH_AGENT_RESTART_IN_PROGRESS', `a start of ${this.opts.component} is already in progress`, {
        hint: 'wait until it finishes (GET /epoch/' + this.opts.component + '), then try again',
        exitCode: EXIT_CODES.unavailable,
      });
    }
    this.busy = true;
    const previous = this.current;
    try {
      const next = await this.launch(this.nextEpoch());
      this.current = next;
      this.restarts += 1;
      if (previous) this.drain(previous);
      this.emit('epoch', next.epoch);
      return { epoch: next.epoch, pid: next.pid, previousEpoch: previous?.epoch ?? null };
    } finally {
      this.busy = false;
    }
  }

  /** Sends a whole new config to every running epoch and waits until the serving one applied it. */
  async pushConfig(config: unknown): Promise<string | undefined> {
    const targets = [...this.live].filter((p) => p.state === 'starting' || p.state === 'serving');
    const waits = targets.map((p) => this.sendConfig(p, config));
    const results = await Promise.all(waits);
    return results[results.length - 1];
  }

  /** Sends a registry snapshot to every running epoch (fire and forget: it is resent whole on each change). */
  pushRegistry(snapshot: unknown): void {
    for (const p of this.live) {
      if (p.state === 'starting' || p.state === 'serving') this.send(p, { type: 'registry', snapshot } as ParentToChild);
    }
  }

  /** Drains every epoch and waits until all exited (killed after the drain time). */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    this.restartPending = false;
    const all = [...this.live];
    await Promise.all(all.map((p) => this.drain(p)));
    this.current = undefined;
  }

  private nextEpoch(): number {
    let newest = this.current?.epoch ?? -1;
    for (const p of this.live) newest = Math.max(newest, p.epoch);
    if (this.lastExit) newest = Math.max(newest, this.lastExit.epoch);
    return newest + 1;
  }

  private send(p: EpochProcess, message: ParentToChild, handle?: OwnedSocket['handle']): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!p.child.connected) {
        reject(new MeshError('MESH_AGENT_CHILD_GONE', `${this.opts.component} epoch ${p.epoch} (pid ${p.pid}) is not connected`));
        return;
      }
      const done = (err: Error | null) => (err ? reject(err) : resolve());
      if (handle) p.child.send(message, handle as never, {}, done);
      else p.child.send(message, done);
    });
  }

  private sendConfig(p: EpochProcess, config: unknown, timeoutMs = this.opts.configTimeoutMs ?? 10_000): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        remove();
        reject(new MeshError('MESH_AGENT_CONFIG_TIMEOUT', `${this.opts.component} epoch ${p.epoch} did not confirm the new config within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = {
        resolve: (version: string) => {
          clearTimeout(timer);
          resolve(version);
        },
        reject: (err: Error) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      const remove = () => {
        const i = p.configWaiters.indexOf(waiter);
        if (i >= 0) p.configWaiters.splice(i, 1);
      };
      p.configWaiters.push(waiter);
      this.send(p, { type: 'config', config } as ParentToChild).catch((err) => {
        remove();
        waiter.reject(err);
      });
    });
  }

  private launch(epoch: number): Promise<EpochProcess> {
    const { component, modulePath } = this.opts;
    const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
    const child = fork(modulePath, this.opts.args ?? [], {
      // the configured flags, else the bin's shebang flags (mesh-dns: --max-semi-space-size=4); never the agent's own
      execArgv: this.opts.execArgv ?? nodeFlagsOf(modulePath),
      env: { ...process.env, ...this.opts.env, MESH_AGENT_EPOCH: String(epoch) },
      stdio: this.opts.stdio === 'ignore' ? ['ignore', 'ignore', 'ignore', 'ipc'] : this.opts.stdio === 'stderr' ? ['ignore', 'ignore', 'inherit', 'ipc'] : ['ignore', 'inherit', 'inherit', 'ipc'],
      ...(asRoot && this.opts.uid !== undefined ? { uid: this.opts.uid } : {}),
      ...(asRoot && this.opts.gid !== undefined ? { gid: this.opts.gid } : {}),
    });
    let resolveExit!: (v: { code: number | null; signal: NodeJS.Signals | null }) => void;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => (resolveExit = r));
    const p: EpochProcess = { epoch, child, pid: child.pid ?? -1, startedAt: Date.now(), state: 'starting', exited, configWaiters: [] };
    this.live.add(p);
    this.emit('spawn', p.pid);

    return new Promise<EpochProcess>((resolve, reject) => {
      let settled = false;
      const readyTimeoutMs = this.opts.readyTimeoutMs ?? 30_000;
      const fail = (err: MeshError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        // forget it at once, so the failed epoch's number is reused by the next attempt
        this.live.delete(p);
        this.opts.onError(err);
        if (p.state !== 'exited') child.kill('SIGKILL');
        reject(err);
      };
      const keeps = this.current ? `; epoch ${this.current.epoch} keeps serving` : '';
      const timer = setTimeout(
        () => fail(new MeshError('MESH_AGENT_CHILD_NOT_READY', `${component} epoch ${epoch} (pid ${p.pid}) did not report ready within ${readyTimeoutMs} ms${keeps}`, { exitCode: EXIT_CODES.unavailable })),
        readyTimeoutMs,
      );

      child.on('message', (raw: unknown) => {
        if (!isChildToParent(raw)) return;
        const message = raw as ChildToParent;
        if (message.type === 'ready') {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          p.state = 'serving';
          if (message.pid) p.pid = message.pid;
          this.opts.logger.info({ component, epoch, pid: p.pid }, `${component} epoch ${epoch} is ready`);
          resolve(p);
        } else if (message.type === 'error') {
          const err = new MeshError(message.code || 'MESH_AGENT_CHILD_ERROR', `${component} epoch ${epoch}: ${message.message}`);
          const waiter = p.configWaiters.shift();
          if (waiter) waiter.reject(err);
          if (!settled) fail(err);
          else if (!waiter) this.opts.onError(err);
        } else if (message.type === 'config-applied') {
          p.configWaiters.shift()?.resolve(message.version);
        }
      });
      child.on('error', (err) => fail(new MeshError('MESH_AGENT_CHILD_SPAWN_FAILED', `cannot start ${component}: ${err.message}`, { cause: err })));
      child.on('exit', (code, signal) => {
        const wasServing = p.state === 'serving';
        p.state = 'exited';
        this.live.delete(p);
        resolveExit({ code, signal });
        for (const w of p.configWaiters.splice(0)) w.reject(new MeshError('MESH_AGENT_CHILD_GONE', `${component} epoch ${epoch} exited`));
        if (!settled) {
          fail(new MeshError('MESH_AGENT_CHILD_EXITED', `${component} epoch ${epoch} (pid ${p.pid}) exited before it was ready (${describeExit(code, signal)})${keeps}`, { hint: `run ${modulePath} --help to check the component starts at all; its own error is above` }));
          return;
        }
        if (wasServing && this.current === p) this.onCrash(p, code, signal);
      });

      // Config first, and only once the child confirmed it (its message handler is installed, its
      // code loaded) the sockets: Node starts accepting on a handed-over socket the moment it
      // arrives, so a child still loading would leave connections hanging. Then `start`.
      const setup = async () => {
        // a child still starting up (a loaded machine) gets the whole ready timeout for this first answer
        await this.sendConfig(p, this.opts.config(), readyTimeoutMs);
        const snapshot = this.opts.registry?.();
        if (snapshot !== undefined) await this.send(p, { type: 'registry', snapshot } as ParentToChild);
        for (const socket of this.opts.sockets) await this.send(p, { type: 'handle', name: socket.name }, socket.handle);
        await this.send(p, { type: 'start', epoch });
      };
      setup().catch((err) => fail(new MeshError('MESH_AGENT_CHILD_SETUP_FAILED', `cannot hand ${component} epoch ${epoch} its sockets and config: ${err.message}`, { cause: err })));
    });
  }

  private onCrash(p: EpochProcess, code: number | null, signal: NodeJS.Signals | null): void {
    const { component } = this.opts;
    this.current = undefined;
    this.lastExit = { epoch: p.epoch, code, signal, time: new Date().toISOString() };
    if (this.stopping) return;
    if (code === 0 && signal === null) {
      // a clean exit nobody asked for: the component was told to quit (the proxy's /quitquitquit)
      this.opts.logger.info({ component, epoch: p.epoch }, `${component} epoch ${p.epoch} exited on its own with code 0`);
      this.emit('quit', p.epoch);
      return;
    }
    const lived = Date.now() - p.startedAt;
    this.failures = lived >= (this.opts.stableAfterMs ?? 10_000) ? 0 : this.failures + 1;
    const err = new MeshError('MESH_AGENT_CHILD_DIED', `${component} epoch ${p.epoch} (pid ${p.pid}) died (${describeExit(code, signal)}); restarting it as epoch ${p.epoch + 1}`);
    this.opts.onError(err);
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    const { initialMs, maxMs } = this.opts.backoff ?? { initialMs: 100, maxMs: 10_000 };
    const delay = this.failures === 0 ? initialMs : Math.min(maxMs, initialMs * 2 ** this.failures);
    this.restartPending = true;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.stopping) return;
      this.busy = true;
      this.launch(this.nextEpoch())
        .then((next) => {
          this.busy = false;
          this.restartPending = false;
          this.current = next;
          this.restarts += 1;
          this.emit('epoch', next.epoch);
        })
        .catch(() => {
          this.busy = false;
          this.failures += 1;
          if (!this.stopping) this.scheduleRestart();
        });
    }, delay);
  }

  private async drain(p: EpochProcess): Promise<void> {
    if (p.state === 'exited') return;
    p.state = 'draining';
    const drainTimeMs = this.opts.drainTimeMs();
    this.send(p, { type: 'drain', drainTimeMs }).catch(() => p.child.kill('SIGTERM'));
    const grace = setTimeout(() => {
      this.opts.logger.warn({ component: this.opts.component, epoch: p.epoch }, `${this.opts.component} epoch ${p.epoch} did not exit after draining; killing it`);
      p.child.kill('SIGKILL');
    }, drainTimeMs + 5000);
    await p.exited;
    clearTimeout(grace);
  }
}

export function describeExit(code: number | null, signal: NodeJS.Signals | string | null): string {
  return signal ? `killed by ${signal}` : `exit code ${code}`;
}
