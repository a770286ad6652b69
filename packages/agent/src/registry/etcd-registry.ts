// Backend `etcd` (etcd v3 through `etcd3`): each instance is a key
// `<prefix>services/<namespace>/<service>/<instance id>` holding the instance as JSON,
// written under a lease the agent keeps alive (a crashed agent's entry expires with its lease).
// A watch on the prefix keeps the snapshot current and pushes every change at once.
import { Etcd3, type Lease, type Watcher } from 'etcd3';
import { ConfigError, EXIT_CODES, MeshError, parseTrafficRules, serviceInstanceSchema, type RegistrySnapshot, type ServiceInstance } from '@mesh-agent/shared-config';
import type { SourcedTrafficRule } from '../traffic-rules';
import { VipRange, VipRangeExhaustedError, type VipSettings } from '../vip-allocation';
import { mergeInstances, RegistryChangeFeed, type LocalRegistration, type RegistryBackend } from './types';

export interface EtcdRegistryOptions {
  endpoints: string[];
  prefix: string;
  leaseTtlSeconds: number;
  dialTimeoutMs: number;
  onError?: (err: Error) => void;
  /** Per-service VIPs: given = every service is claimed a VIP (CAS under `<prefix>vips/`); absent = none. */
  vips?: VipSettings;
}

interface Entry {
  service: string;
  namespace: string;
  instance: ServiceInstance;
}

export function instanceKey(prefix: string, namespace: string, service: string, id: string): string {
  return `${prefix.endsWith('/') ? prefix : prefix + '/'}services/${namespace}/${service}/${id}`;
}

/** Where a service's traffic rule lives: `<prefix>rules/<namespace>/<service>`, one JSON service rule. */
export function trafficRuleKey(prefix: string, namespace: string, service: string): string {
  return `${prefix.endsWith('/') ? prefix : prefix + '/'}rules/${namespace}/${service}`;
}

/**
 * Parses the value of a rules key: one service rule, for the namespace and service the key names.
 * Throws a ConfigError naming the key, rule and field.
 */
export function parseRuleValue(key: string, prefix: string, value: string): SourcedTrafficRule {
  const rulesPrefix = trafficRuleKey(prefix, '', '').slice(0, -1);
  const rest = key.slice(rulesPrefix.length).split('/');
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch (err) {
    throw new MeshError('MESH_AGENT_TRAFFIC_RULE_INVALID', `etcd key ${key}: not JSON (${(err as Error).message})`, { exitCode: EXIT_CODES.usage });
  }
  const [rule] = parseTrafficRules([json], { source: `etcd key ${key}` });
  if (rest.length !== 2 || rest[0] !== rule.namespace || rest[1] !== rule.service) {
    throw new MeshError('MESH_AGENT_TRAFFIC_RULE_INVALID', `etcd key ${key} holds the rule of service ${rule.namespace}/${rule.service}; it belongs under ${trafficRuleKey(prefix, rule.namespace, rule.service)}`, { exitCode: EXIT_CODES.usage });
  }
  return { rule, source: `etcd ${key}` };
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
  /** `<namespace>/<name>` -> VIP, from `<prefix>vip-of/` (every host's claims). */
  private readonly claims = new Map<string, string>();
  private vipWatcher: Watcher | undefined;
  private claiming: Promise<void> | undefined;
  /** etcd key -> the last valid rule found there (a bad new value is refused and this one kept). */
  private readonly rules = new Map<string, SourcedTrafficRule>();
  private rulesWatcher: Watcher | undefined;
  private claimAgain = false;

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

  private get rootPrefix(): string {
    return this.opts.prefix.endsWith('/') ? this.opts.prefix : this.opts.prefix + '/';
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
    await this.watchRules();
    if (this.opts.vips) await this.watchClaims();
  }

  /** Reads the traffic rules under `<prefix>rules/` and follows them. */
  private async watchRules(): Promise<void> {
    const prefix = `${this.rootPrefix}rules/`;
    const range = await this.client.getAll().prefix(prefix).exec();
    const present = new Set(range.kvs.map((kv) => kv.key.toString()));
    for (const key of [...this.rules.keys()]) if (!present.has(key)) this.rules.delete(key);
    for (const kv of range.kvs) this.applyRule(kv.key.toString(), kv.value.toString());
    await this.rulesWatcher?.cancel().catch(() => undefined);
    this.rulesWatcher = await this.client.watch().prefix(prefix).startRevision(String(Number(range.header.revision) + 1)).create();
    this.rulesWatcher.on('put', (kv) => {
      if (this.applyRule(kv.key.toString(), kv.value.toString())) this.emit();
    });
    this.rulesWatcher.on('delete', (kv) => {
      if (this.rules.delete(kv.key.toString())) this.emit();
    });
    this.rulesWatcher.on('error', (err) => this.noteError(err));
  }

  /** Takes a rule into force; a bad one is refused by key, rule and field, and the service keeps its previous rule. */
  private applyRule(key: string, value: string): boolean {
    try {
      const entry = parseRuleValue(key, this.opts.prefix, value);
      if (JSON.stringify(this.rules.get(key)) === JSON.stringify(entry)) return false;
      this.rules.set(key, entry);
      return true;
    } catch (err) {
      const keeps = this.rules.has(key) ? 'the service keeps its previous rule' : 'the service has no rule from etcd';
      const why = err instanceof ConfigError ? err.issues.map((i) => `${i.path}: ${i.message}`).join('; ') : (err as Error).message;
      this.noteError(
        new MeshError('MESH_AGENT_TRAFFIC_RULE_INVALID', `refusing the traffic rule in etcd key ${key} (${keeps}): ${why}`, {
          hint: 'fix the rule and write it again, e.g. with `mesh-agent rules apply FILE --etcd URL` (it validates before writing)',
          cause: err,
        }),
      );
      return false;
    }
  }

  trafficRules(): SourcedTrafficRule[] {
    return [...this.rules.values()];
  }

  /** Reads every host's VIP claims and follows new ones; then claims VIPs for services still without. */
  private async watchClaims(): Promise<void> {
    const prefix = `${this.rootPrefix}vip-of/`;
    const range = await this.client.getAll().prefix(prefix).exec();
    this.claims.clear();
    for (const kv of range.kvs) this.claims.set(kv.key.toString().slice(prefix.length), kv.value.toString());
    await this.vipWatcher?.cancel().catch(() => undefined);
    this.vipWatcher = await this.client.watch().prefix(prefix).startRevision(String(Number(range.header.revision) + 1)).create();
    // a claim is never deleted by the agent; a deleted key (by hand) only stops being used
    this.vipWatcher.on('put', (kv) => {
      this.claims.set(kv.key.toString().slice(prefix.length), kv.value.toString());
      this.emit();
    });
    this.vipWatcher.on('delete', (kv) => {
      this.claims.delete(kv.key.toString().slice(prefix.length));
      this.emit();
      this.claimMissing();
    });
    this.vipWatcher.on('error', (err) => this.noteError(err));
    this.claimMissing();
  }

  /** Runs one claim pass at a time; a change during a pass runs another after it. */
  private claimMissing(): void {
    if (!this.opts.vips || this.closed) return;
    if (this.claiming) {
      this.claimAgain = true;
      return;
    }
    this.claiming = this.claimPass()
      .catch((err) => this.noteError(err as Error))
      .finally(() => {
        this.claiming = undefined;
        if (this.claimAgain) {
          this.claimAgain = false;
          this.claimMissing();
        }
      });
  }

  private async claimPass(): Promise<void> {
    const services = new Map<string, { name: string; namespace: string }>();
    for (const e of this.entries.values()) services.set(`${e.namespace}/${e.service}`, { name: e.service, namespace: e.namespace });
    for (const r of this.local.values()) services.set(`${r.namespace}/${r.service}`, { name: r.service, namespace: r.namespace });
    for (const [key, service] of services) {
      if (this.closed || !this.connected) return;
      // one service that does not fit is reported; the others are still claimed
      if (!this.claims.has(key)) await this.claim(key, service).catch((err) => this.noteError(err as Error));
    }
  }

  /**
   * Claims the first free address of the service's probe sequence with a transaction: put
   * `vips/<ip>` and `vip-of/<ns>/<name>` only if neither exists. Losing the race on the name means
   * another host claimed it first: its claim is read back and used; losing on the address probes on.
   */
  private async claim(key: string, service: { name: string; namespace: string }): Promise<void> {
    const range = new VipRange(this.opts.vips!);
    const takenLocally = new Set(this.claims.values());
    const ofKey = `${this.rootPrefix}vip-of/${key}`;
    for (const ip of range.candidates(service)) {
      if (takenLocally.has(ip)) continue;
      const ipKey = `${this.rootPrefix}vips/${ip}`;
      const result = await this.client
        .if(ofKey, 'Create', '==', 0)
        .and(ipKey, 'Create', '==', 0)
        .then(this.client.put(ipKey).value(key), this.client.put(ofKey).value(ip))
        .else(this.client.get(ofKey))
        .commit();
      if (result.succeeded) {
        this.setClaim(key, ip);
        return;
      }
      const existing = result.responses[0]?.response_range?.kvs?.[0]?.value?.toString();
      if (existing) {
        this.setClaim(key, existing);
        return;
      }
    }
    throw new VipRangeExhaustedError(this.opts.vips!, key, range.size);
  }

  private setClaim(key: string, ip: string): void {
    if (this.claims.get(key) === ip) return;
    this.claims.set(key, ip);
    this.emit();
  }

  private apply(key: string, value: string): void {
    const rest = key.slice(this.servicesPrefix.length).split('/');
    if (rest.length !== 3) return;
    const [namespace, service] = rest;
    try {
      const instance = serviceInstanceSchema.parse(JSON.parse(value));
      const isNew = !this.claims.has(`${namespace}/${service}`);
      this.entries.set(key, { namespace, service, instance });
      if (isNew && this.vipWatcher) this.claimMissing();
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
    const merged = mergeInstances({ services: [] }, registrations);
    // a service not claimed yet answers the shared VIP until its claim lands (a moment)
    const services = merged.services.map((s) => {
      const vip = this.claims.get(`${s.namespace}/${s.name}`);
      return vip ? { ...s, vip } : s;
    });
    return { ...merged, services, revision: this.revision };
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
    await this.vipWatcher?.cancel().catch(() => undefined);
    await this.rulesWatcher?.cancel().catch(() => undefined);
    await this.claiming?.catch(() => undefined);
    // revoking the lease deletes every key written under it
    await this.lease?.revoke().catch(() => undefined);
    this.client.close();
  }
}
