import fs from 'node:fs';
import { Session } from 'node:inspector';
import os from 'node:os';
import path from 'node:path';

/** A real CPU profile of this process through the inspector (Chrome .cpuprofile format). */
export class CpuProfiler {
  private session: Session | undefined;

  get running(): boolean { return this.session !== undefined; }

  private post<T>(method: string, params?: object): Promise<T> {
    return new Promise((resolve, reject) => this.session!.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res as T))));
  }

  async start(): Promise<void> {
    if (this.session) return;
    this.session = new Session();
    this.session.connect();
    await this.post('Profiler.enable');
    await this.post('Profiler.start');
  }

  /** Stops and writes the profile; returns the file path. */
  async stop(dir = os.tmpdir()): Promise<string | undefined> {
    if (!this.session) return undefined;
    const { profile } = await this.post<{ profile: object }>('Profiler.stop');
    this.session.disconnect();
    this.session = undefined;
    const file = path.join(dir, `mesh-proxy-${process.pid}-${Date.now()}.cpuprofile`);
    fs.writeFileSync(file, JSON.stringify(profile));
    return file;
  }
}
