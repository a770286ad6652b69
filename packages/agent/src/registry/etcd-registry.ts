// Backend `etcd` (etcd v3 through `etcd3`): each instance is a key
// `<prefix>services/<namespace>/<service>/<instance id>` holding the instance as JSON,
// written under a lease the agent keeps alive (a crashed agent's entry expires with its lease).
// A watch on the prefix keeps the snapshot current and pushes every change at once.
import { Etcd3, type Lease, type Watcher } from 'etcd3';
import { EXIT_CODES, MeshError, serviceInstanceSchema, type RegistrySnapshot, type ServiceInstance } from '@mesh-agent/shared-config';
import { mergeInstances, RegistryChangeFeed, type LocalRegistration, type RegistryBackend } from './types';

export interface EtcdRegistryOptions {
  endpoints: string[];
  prefix: string;
  leaseTtlSeconds: number;
  dialTimeoutMs: number;
  onError?: (err: Error) => void;
}

interface Entry {
  service: string;
  namespace: string;
  instance: ServiceInstance;
}

export function instanceKey(prefix: string, namespace: string, service: string, id: string): string {
  return `${prefix.endsWith('/') ? prefix : prefix + '/'}services/${namespace}/${service}/${id}`;
}

export class EtcdRegistry extends RegistryChangeFeed implements RegistryBackend {
  readonly kind = 'etcd' as const;
  private readonly client: Etcd3;
  private readonly entries = new Map<string, Entry>();
  private readonly local = new Map<string, LocalRegistration>();
  private watcher: Watcher | undefined;
  private lease: Lease | undefined;
  private connected = false;
  private lastError: string | undefined;
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: EtcdRegistryOptions) {
    super();
    this.client = new Etcd3({
      hosts: opts.endpoints,
      dialTimeout: opts.dialTimeoutMs,
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + opts.dialTimeoutMs }),
    });
  }

  private get servicesPrefix(): string {
    return `${this.opts.prefix.endsWith('/') ? this.opts.prefix : this.opts.prefix + '/'}services/`;
  }

  /**
   * Loads the instances and starts the watch. An etcd that cannot be reached is not fatal: the agent
   * runs on (reported by reachable() and /health) and this retries every 2 s, registering the local
   * instance once etcd answers.
   */
  async start(): Promise<void> {
    try {
      await this.connect();
    } catch (err) {
      this.noteError(
        new MeshError('MESH_AGENT_REGISTRY_UNREACHABLE', `cannot read the etcd registry at ${this.opts.endpoints.join(', ')}: ${(err as Error).message}; retrying every 2 s`, {
          exitCode: EXIT_CODES.unavailable,
          hint: 'check that etcd runs and registry.etcd.endpoints in the agent config points at it (try `etcdctl --endpoints=... endpoint health`)',
          cause: err,
        }),
      );
      this.scheduleReconnect();
    }
  }

  private scheduleReconnect(): void {
    if (this.closed) return;
    this.reconnectTimer = setTimeout(() => {
      this.connect()
        .then(() => {
          this.emit();
          return this.reregister();
        })
        .catch(() => this.scheduleReconnect());
    }, 2000);
  }

  private async connect(): Promise<void> {
    const prefix = this.servicesPrefix;
    const range = await this.client.getAll().prefix(prefix).exec();
    this.entries.clear();
    for (const kv of range.kvs) this.apply(kv.key.toString(), kv.value.toString());
    const startRevision = String(Number(range.header.revision) + 1);
    this.watcher = await this.client.watch().prefix(prefix).startRevision(startRevision).create();
    this.connected = true;
    this.lastError = undefined;
    this.watcher.on('put', (kv) => {
      this.apply(kv.key.toString(), kv.value.toString());
      this.emit();
    });
    this.watcher.on('delete', (kv) => {
      this.entries.delete(kv.key.toString());
      this.emit();
    });
    this.watcher.on('connected', () => {
      const wasDown = !this.connected;
      this.connected = true;
      this.lastError = undefined;
      if (wasDown) this.reregister().catch((e) => this.noteError(e as Error));
    });
    this.watcher.on('disconnected', (err) => {
      this.connected = false;
      this.noteError(new Error(`etcd watch disconnected: ${err.message}`));
    });
    this.watcher.on('error', (err) => this.noteError(err));
  }

  private apply(key: string, value: string): void {
    const rest = key.slice(this.servicesPrefix.length).split('/');
    if (rest.length !== 3) return;
    const [namespace, service] = rest;
    try {
      const instance = serviceInstanceSchema.parse(JSON.parse(value));
      this.entries.set(key, { namespace, service, instance });
    } catch (err) {
      this.entries.delete(key);
      this.noteError(new Error(`ignoring etcd key ${key}: not a valid instance (${(err as Error).message.split('\n')[0]})`));
    }
  }

  private noteError(err: Error): void {
    this.lastError = err.message;
    if (!this.closed) this.opts.onError?.(err);
  }

  snapshot(): RegistrySnapshot {
    const registrations: LocalRegistration[] = [...this.entries.values()].map((e) => ({ service: e.service, namespace: e.namespace, instance: e.instance }));
    return { ...mergeInstances({ services: [] }, registrations), revision: this.revision };
  }

  private grantLease(): Lease {
    const lease = this.client.lease(this.opts.leaseTtlSeconds);
    lease.on('lost', (err) => {
      if (this.closed || this.lease !== lease) return;
      this.lease = undefined;
      // with etcd unreachable, the watch's reconnect registers again (no tight retry loop here)
      if (!this.connected) return;
      this.noteError(new Error(`etcd lease lost (${err.message}); registering again under a new lease`));
      this.reregister().catch((e) => this.noteError(e as Error));
    });
    this.lease = lease;
    return lease;
  }

  private async reregister(): Promise<void> {
    for (const reg of this.local.values()) await this.put(reg);
  }

  private async put(reg: LocalRegistration): Promise<void> {
    const lease = this.lease ?? this.grantLease();
    await lease.put(instanceKey(this.opts.prefix, reg.namespace, reg.service, reg.instance.id)).value(JSON.stringify(reg.instance));
  }

  async register(registration: LocalRegistration): Promise<void> {
    this.local.set(`${registration.namespace}/${registration.service}/${registration.instance.id}`, registration);
    if (!this.connected) {
      throw new MeshError('MESH_AGENT_REGISTER_FAILED', `cannot register ${registration.service}/${registration.instance.id}: etcd at ${this.opts.endpoints.join(', ')} is unreachable${this.lastError ? ` (${this.lastError})` : ''}`, {
        exitCode: EXIT_CODES.unavailable,
        hint: 'the agent registers the instance as soon as etcd answers again; check etcd and registry.etcd.endpoints',
      });
    }
    try {
      await this.put(registration);
    } catch (err) {
      throw new MeshError('MESH_AGENT_REGISTER_FAILED', `cannot register ${registration.service}/${registration.instance.id} in etcd: ${(err as Error).message}`, {
        exitCode: EXIT_CODES.unavailable,
        hint: 'check that etcd is reachable at ' + this.opts.endpoints.join(', '),
        cause: err,
      });
    }
  }

  async deregister(reg: { service: string; namespace: string; id: string }): Promise<void> {
    this.local.delete(`${reg.namespace}/${reg.service}/${reg.id}`);
    await this.client.delete().key(instanceKey(this.opts.prefix, reg.namespace, reg.service, reg.id));
  }

  reachable(): { ok: boolean; detail: string } {
    if (!this.connected) return { ok: false, detail: `etcd ${this.opts.endpoints.join(', ')} unreachable${this.lastError ? `: ${this.lastError}` : ''}` };
    return { ok: true, detail: `etcd ${this.opts.endpoints.join(', ')} prefix ${this.opts.prefix}` };
  }

  describe(): Record<string, unknown> {
    return {
      backend: 'etcd',
      endpoints: this.opts.endpoints,
      prefix: this.opts.prefix,
      leaseTtlSeconds: this.opts.leaseTtlSeconds,
      connected: this.connected,
      lastError: this.lastError ?? null,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.stopFeed();
    await this.watcher?.cancel().catch(() => undefined);
    // revoking the lease deletes every key written under it
    await this.lease?.revoke().catch(() => undefined);
    this.client.close();
  }
}
