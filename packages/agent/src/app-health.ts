// Probes the local application's health-check path (spec.yaml `healthCheck.path`) periodically.
// The result decides whether the local instance is registered healthy or unhealthy.
import http from 'node:http';
import net from 'node:net';
import { EventEmitter } from 'node:events';

export interface AppHealthOptions {
  service: string;
  host: string;
  port: number;
  /** No path: the service declares no health check (e.g. dubbo); a TCP connect is the check then. */
  path?: string;
  intervalMs: number;
  timeoutMs: number;
  healthyThreshold: number;
  unhealthyThreshold: number;
}

export interface AppHealthState {
  service: string;
  target: string;
  healthy: boolean | null;
  detail: string;
  lastCheck: string | null;
}

/** One probe: resolves to null when healthy, otherwise to the reason it is not. */
export function probeOnce(opts: Pick<AppHealthOptions, 'host' | 'port' | 'path' | 'timeoutMs'>): Promise<string | null> {
  return opts.path ? probeHttp(opts as Pick<AppHealthOptions, 'host' | 'port' | 'timeoutMs'> & { path: string }) : probeTcp(opts);
}

function describeError(err: NodeJS.ErrnoException): string {
  return err.code ? `${err.code} ${err.message.replace(/^\S+ /, '')}` : err.message;
}

function probeHttp(opts: { host: string; port: number; path: string; timeoutMs: number }): Promise<string | null> {
  return new Promise((resolve) => {
    const req = http.get({ host: opts.host, port: opts.port, path: opts.path, timeout: opts.timeoutMs, agent: false }, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      resolve(status >= 200 && status < 400 ? null : `HTTP ${status}`);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${opts.timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => resolve(describeError(err)));
  });
}

function probeTcp(opts: { host: string; port: number; timeoutMs: number }): Promise<string | null> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: opts.host, port: opts.port });
    socket.setTimeout(opts.timeoutMs, () => socket.destroy(new Error(`no connection within ${opts.timeoutMs} ms`)));
    socket.once('connect', () => {
      socket.destroy();
      resolve(null);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(describeError(err)));
  });
}

export class AppHealthChecker extends EventEmitter {
  private timer: NodeJS.Timeout | undefined;
  private healthy: boolean | null = null;
  private streak = 0;
  private detail = 'not checked yet';
  private lastCheck: string | null = null;
  private stopped = false;

  constructor(private readonly opts: AppHealthOptions) {
    super();
  }

  get port(): number {
    return this.opts.port;
  }

  get target(): string {
    return this.opts.path ? `http://${this.opts.host}:${this.opts.port}${this.opts.path}` : `tcp://${this.opts.host}:${this.opts.port}`;
  }

  start(): void {
    this.stopped = false;
    void this.tick();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  state(): AppHealthState {
    return { service: this.opts.service, target: this.target, healthy: this.healthy, detail: this.detail, lastCheck: this.lastCheck };
  }

  private async tick(): Promise<void> {
    const failure = await probeOnce(this.opts);
    if (this.stopped) return;
    this.lastCheck = new Date().toISOString();
    const ok = failure === null;
    const what = this.opts.path ? `GET ${this.target}` : `connect ${this.target}`;
    this.detail = ok ? `${what} answered` : `${what} failed: ${failure}`;
    const previous = this.healthy;
    // a streak counts consecutive results that disagree with the current state
    if (this.healthy === null) {
      this.healthy = ok;
    } else if (ok !== this.healthy) {
      this.streak += 1;
      if (this.streak >= (ok ? this.opts.healthyThreshold : this.opts.unhealthyThreshold)) {
        this.healthy = ok;
        this.streak = 0;
      }
    } else {
      this.streak = 0;
    }
    if (previous !== this.healthy) this.emit('change', this.state());
    this.timer = setTimeout(() => void this.tick(), this.opts.intervalMs);
    this.timer.unref();
  }
}
