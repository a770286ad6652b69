import type { RegistrySnapshot, ServiceInstance } from '@mesh-agent/shared-config';
import type { SourcedTrafficRule } from '../traffic-rules';

/** The local instance as the agent registers it. */
export interface LocalRegistration {
  service: string;
  namespace: string;
  instance: ServiceInstance;
}

/** A registry backend: a live view of every service's instances, and the local instance's entry in it. */
export interface RegistryBackend {
  readonly kind: 'file' | 'etcd';
  /** Loads the first snapshot and starts watching. */
  start(): Promise<void>;
  snapshot(): RegistrySnapshot;
  /** Called with the whole new snapshot after every change. */
  onChange(listener: (snapshot: RegistrySnapshot) => void): void;
  /** Adds or updates the local instance (healthy or not). */
  register(registration: LocalRegistration): Promise<void>;
  /** Removes the local instance. */
  deregister(registration: Pick<LocalRegistration, 'service' | 'namespace'> & { id: string }): Promise<void>;
  /** Whether the backend is reachable now, and why not. */
  reachable(): { ok: boolean; detail: string };
  describe(): Record<string, unknown>;
  /** The registry's traffic rules (one per service), each with where it came from; they win over the agent config's. */
  trafficRules(): SourcedTrafficRule[];
  close(): Promise<void>;
}

/**
 * The change feed both backends share: a revision that grows with every change, and the
 * listeners given the whole new snapshot after each one.
 */
export abstract class RegistryChangeFeed {
  private listeners: Array<(snapshot: RegistrySnapshot) => void> = [];
  protected revision = 0;

  abstract snapshot(): RegistrySnapshot;

  onChange(listener: (snapshot: RegistrySnapshot) => void): void {
    this.listeners.push(listener);
  }

  protected emit(): void {
    this.revision += 1;
    const snapshot = this.snapshot();
    for (const listener of this.listeners) listener(snapshot);
  }

  protected stopFeed(): void {
    this.listeners = [];
  }
}

/** Adds or replaces instances into a snapshot, keeping services sorted for stable output. */
export function mergeInstances(base: RegistrySnapshot, extra: LocalRegistration[]): RegistrySnapshot {
  const services = base.services.map((s) => ({ ...s, instances: [...s.instances] }));
  for (const reg of extra) {
    let service = services.find((s) => s.name === reg.service && s.namespace === reg.namespace);
    if (!service) {
      service = { name: reg.service, namespace: reg.namespace, instances: [] };
      services.push(service);
    }
    service.instances = service.instances.filter((i) => i.id !== reg.instance.id);
    service.instances.push(reg.instance);
  }
  services.sort((a, b) => (a.namespace + '/' + a.name).localeCompare(b.namespace + '/' + b.name));
  return { ...base, services };
}
