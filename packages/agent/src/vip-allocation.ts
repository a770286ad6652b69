// Per-service VIPs without a control plane: each service's preferred slot in mesh.vipCidr is the
// FNV-1a hash of `<namespace>/<name>`, a taken slot moves to the next one (linear probing). The etcd
// backend claims the result once with a compare-and-swap (every host then reads the same claim);
// the file backend computes it in a deterministic order (stable while no two services collide).
import { MeshError, EXIT_CODES } from '@mesh-agent/shared-config';

export interface VipSettings {
  /** Range the VIPs come from (IPv4 CIDR). */
  vipCidr: string;
  /** The shared mesh VIP: never handed to a service. */
  meshVip: string;
}

export interface VipService {
  name: string;
  namespace: string;
  vip?: string;
}

export class VipRangeExhaustedError extends MeshError {
  constructor(settings: VipSettings, service: string, usable: number) {
    super('MESH_AGENT_VIP_RANGE_EXHAUSTED', `no free VIP for service ${service}: all ${usable} usable addresses of mesh.vipCidr ${settings.vipCidr} are taken`, {
      exitCode: EXIT_CODES.usage,
      hint: 'give mesh.vipCidr a larger range (the default is 240.240.0.0/16), or remove services that no longer exist; existing services keep their VIPs',
    });
  }
}

export function fnv1a32(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

function ipToInt(ip: string): number {
  return ip.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
}

function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/**
 * The usable addresses of a range as an indexable list: every address but the network and the
 * broadcast address and the mesh VIP. Computed, not materialised (a /8 has 16 M addresses).
 */
export class VipRange {
  readonly size: number;
  private readonly first: number;
  private readonly skip: number | undefined;

  constructor(readonly settings: VipSettings) {
    const [base, bits] = settings.vipCidr.split('/');
    const prefix = bits === undefined ? 32 : Number(bits);
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(base) || !(prefix >= 0 && prefix <= 32)) {
      throw new MeshError('MESH_AGENT_VIP_CIDR_INVALID', `mesh.vipCidr ${settings.vipCidr} is not an IPv4 range: per-service VIPs are IPv4`, {
        exitCode: EXIT_CODES.usage,
        hint: 'set mesh.vipCidr to an IPv4 CIDR such as 240.240.0.0/16, or mesh.perServiceVips: false',
      });
    }
    const total = 2 ** (32 - prefix);
    const network = Math.floor(ipToInt(base) / total) * total;
    // a /31 or /32 has no network and broadcast address to leave out
    this.first = total > 2 ? network + 1 : network;
    const count = total > 2 ? total - 2 : total;
    const vip = ipToInt(settings.meshVip);
    this.skip = vip >= this.first && vip < this.first + count ? vip - this.first : undefined;
    this.size = this.skip === undefined ? count : count - 1;
  }

  address(index: number): string {
    const offset = this.skip !== undefined && index >= this.skip ? index + 1 : index;
    return intToIp(this.first + offset);
  }

  contains(ip: string): boolean {
    const n = ipToInt(ip) - this.first;
    return n >= 0 && n < this.size + (this.skip === undefined ? 0 : 1) && n !== this.skip;
  }

  /** Where a service's probe sequence starts. */
  slotOf(service: { name: string; namespace: string }): number {
    return fnv1a32(`${service.namespace}/${service.name}`) % this.size;
  }

  /**
   * The candidates of a service in probe order (preferred slot first), at most `size` of them: the
   * loop over a full range ends.
   */
  *candidates(service: { name: string; namespace: string }): Generator<string> {
    const start = this.slotOf(service);
    for (let i = 0; i < this.size; i += 1) yield this.address((start + i) % this.size);
  }
}

const keyOf = (s: { name: string; namespace: string }) => `${s.namespace}/${s.name}`;

/**
 * The file backend's allocation: a `vip` already given wins; the others take their hash slot with
 * linear probing, in the order (slot, namespace/name) so that every host reading the same registry
 * computes the same result. Returns the services with `vip` filled in, and the ones left without
 * (range exhausted) as errors; these fall back to the shared mesh VIP.
 */
export function allocateVips<T extends VipService>(services: T[], settings: VipSettings): { services: T[]; errors: VipRangeExhaustedError[] } {
  const range = new VipRange(settings);
  const taken = new Set<string>();
  for (const s of services) if (s.vip) taken.add(s.vip);
  const pending = services
    .filter((s) => !s.vip)
    .map((s) => ({ key: keyOf(s), slot: range.slotOf(s), service: s }))
    .sort((a, b) => a.slot - b.slot || a.key.localeCompare(b.key));
  const assigned = new Map<string, string>();
  const errors: VipRangeExhaustedError[] = [];
  for (const p of pending) {
    let found: string | undefined;
    for (const candidate of range.candidates(p.service)) {
      if (!taken.has(candidate)) {
        found = candidate;
        break;
      }
    }
    if (!found) {
      errors.push(new VipRangeExhaustedError(settings, p.key, range.size));
      continue;
    }
    taken.add(found);
    assigned.set(p.key, found);
  }
  return { services: services.map((s) => (assigned.has(keyOf(s)) ? { ...s, vip: assigned.get(keyOf(s)) } : s)), errors };
}

/** Two services given the same VIP in a registry file: a clear error naming both. */
export function duplicateVips(services: VipService[]): string[] {
  const owner = new Map<string, string>();
  const problems: string[] = [];
  for (const s of services) {
    if (!s.vip) continue;
    const first = owner.get(s.vip);
    if (first) problems.push(`services ${first} and ${keyOf(s)} both have vip ${s.vip}`);
    else owner.set(s.vip, keyOf(s));
  }
  return problems;
}

/** A service's preferred VIP (its hash slot): its VIP unless another service took that slot first. */
export function preferredVip(service: { name: string; namespace: string }, settings: VipSettings): string {
  const range = new VipRange(settings);
  return range.address(range.slotOf(service));
}
