// Backend `file`: a YAML or JSON RegistrySnapshot, re-read whenever it changes.
// The local instance is overlaid in memory (never written to the file): the file is the
// static view of the peers, shared read-only between agents.
import fs from 'node:fs';
import path from 'node:path';
import { parseDocument } from 'yaml';
import { ConfigError, loadConfigFile, nameTrafficRulePath, registrySnapshotSchema, type RegistrySnapshot } from '@mesh-agent/shared-config';
import type { SourcedTrafficRule } from '../traffic-rules';
import { allocateVips, duplicateVips, type VipSettings } from '../vip-allocation';
import { mergeInstances, RegistryChangeFeed, type LocalRegistration, type RegistryBackend } from './types';

export interface FileRegistryOptions {
  file: string;
  /** Reports a file that became invalid (the last valid content stays in force). */
  onError?: (err: Error) => void;
  pollIntervalMs?: number;
  /** Per-service VIPs: given = every service without a `vip` in the file gets one (absent = none, as before). */
  vips?: VipSettings;
}

export class FileRegistry extends RegistryChangeFeed implements RegistryBackend {
  readonly kind = 'file' as const;
  private base: RegistrySnapshot = { services: [] };
  private local = new Map<string, LocalRegistration>();
  private watcher: fs.FSWatcher | undefined;
  private poll: NodeJS.Timeout | undefined;
  private lastText = '';
  private lastError: string | undefined;
  private lastVipError: string | undefined;

  constructor(private readonly opts: FileRegistryOptions) {
    super();
  }

  async start(): Promise<void> {
    this.load(true);
    const dir = path.dirname(this.opts.file);
    try {
      // watch the directory: editors and atomic writers replace the file
      this.watcher = fs.watch(dir, { persistent: false }, (_event, name) => {
        if (!name || name === path.basename(this.opts.file)) this.reload();
      });
      this.watcher.on('error', () => undefined);
    } catch {
      // no inotify: the poll below still picks changes up
    }
    this.poll = setInterval(() => this.reload(), this.opts.pollIntervalMs ?? 1000);
    this.poll.unref();
  }

  private reload(): void {
    try {
      this.load(false);
      this.lastError = undefined;
    } catch (err) {
      const message = (err as Error).message;
      if (message !== this.lastError) {
        this.lastError = message;
        this.opts.onError?.(err as Error);
      }
    }
  }

  /** Reads the file; the first load must succeed, later failures keep the last good content. */
  private load(first: boolean): void {
    let text: string;
    try {
      text = fs.readFileSync(this.opts.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && first) {
        throw new ConfigError([{ file: this.opts.file, path: '', message: 'the registry file does not exist' }], {
          hint: 'create it (services: [] is a valid empty registry) or set registry.file.path in the agent config',
        });
      }
      throw err;
    }
    if (!first && text === this.lastText) return;
    const snapshot = loadRegistryFile(this.opts.file, text);
    const duplicates = duplicateVips(snapshot.services);
    if (duplicates.length > 0) {
      throw new ConfigError(duplicates.map((message) => ({ file: this.opts.file, path: 'services', message })), {
        hint: 'give each service its own vip, or remove the vip fields and let the agent allocate them from mesh.vipCidr',
      });
    }
    if (this.opts.vips) {
      // the file alone must fit the range; the first load fails, a later one keeps the last good content
      const exhausted = allocateVips(snapshot.services, this.opts.vips).errors[0];
      if (exhausted) throw exhausted;
    }
    this.lastText = text;
    this.base = snapshot;
    if (!first) this.emit();
  }

  snapshot(): RegistrySnapshot {
    const merged = mergeInstances(this.base, [...this.local.values()]);
    if (!this.opts.vips) return { ...merged, revision: this.revision };
    const { services, errors } = allocateVips(merged.services, this.opts.vips);
    // a local service that does not fit keeps the shared VIP; reported once, not per push
    const message = errors[0]?.message;
    if (message && message !== this.lastVipError) this.opts.onError?.(errors[0]);
    this.lastVipError = message;
    return { ...merged, services, revision: this.revision };
  }

  async register(registration: LocalRegistration): Promise<void> {
    const key = `${registration.namespace}/${registration.service}/${registration.instance.id}`;
    const before = JSON.stringify(this.local.get(key));
    this.local.set(key, registration);
    if (before !== JSON.stringify(registration)) this.emit();
  }

  async deregister(reg: { service: string; namespace: string; id: string }): Promise<void> {
    if (this.local.delete(`${reg.namespace}/${reg.service}/${reg.id}`)) this.emit();
  }

  reachable(): { ok: boolean; detail: string } {
    return this.lastError ? { ok: false, detail: `${this.opts.file}: ${this.lastError}` } : { ok: true, detail: `file ${this.opts.file}` };
  }

  trafficRules(): SourcedTrafficRule[] {
    return (this.base.trafficRules ?? []).map((rule) => ({ rule, source: `file registry ${this.opts.file}` }));
  }

  describe(): Record<string, unknown> {
    return { backend: 'file', file: this.opts.file, lastError: this.lastError ?? null };
  }

  async close(): Promise<void> {
    this.watcher?.close();
    if (this.poll) clearInterval(this.poll);
    this.stopFeed();
  }
}

/** Loads the registry file; a bad traffic rule is named by service and rule (`trafficRules[order].http[beta].route[1].subset`). */
function loadRegistryFile(file: string, text: string): RegistrySnapshot {
  try {
    return loadConfigFile(registrySnapshotSchema, file);
  } catch (err) {
    if (!(err instanceof ConfigError) || !err.issues.some((i) => i.path.startsWith('trafficRules['))) throw err;
    let raw: unknown;
    try {
      raw = (parseDocument(text, { logLevel: 'error' }).toJS({ maxAliasCount: 100 }) as { trafficRules?: unknown } | null)?.trafficRules;
    } catch {
      throw err;
    }
    throw new ConfigError(err.issues.map((i) => ({ ...i, path: nameTrafficRulePath(i.path, raw) })), { code: err.code, hint: err.hint, source: file });
  }
}
