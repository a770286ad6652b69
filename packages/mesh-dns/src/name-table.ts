import { isIPv4 } from 'node:net';
import { MeshError, EXIT_CODES } from '@mesh-agent/shared-config';
import { buildARecord, hashWireName, nameEquals, toWireName, type ParsedQuery } from './wire';

/** A service the registry knows: it gets answers for its alias forms. */
export interface MeshService {
  name: string;
  namespace?: string;
  /** per-service VIP; otherwise the mesh VIP */
  vip?: string;
}

export interface NameTableOptions {
  meshVip: string;
  ttl: number;
  /** extra suffixes: each gives `name.<suffix>`, `name.<ns>.<suffix>` and, unless it starts with `svc.`, `name.<ns>.svc.<suffix>` */
  suffixes: string[];
}

/** One hosted name and the answer it gets. */
export interface NameEntry {
  service: string;
  namespace: string;
  vip: string;
  /** the precomputed answer record (name pointer, A, IN, TTL, VIP) */
  record: Buffer;
}

/** An immutable name table: built whole, then swapped in by replacing one reference. */
export interface NameTable {
  /** every hosted name (lower case, no trailing dot) and its entry */
  readonly names: ReadonlyMap<string, NameEntry>;
  readonly services: readonly Required<MeshService>[];
  readonly options: NameTableOptions;
  /** the hot-path lookup: straight from the query's bytes, no string made */
  lookup(buf: Buffer, q: ParsedQuery): NameEntry | undefined;
}

/**
 * Open addressing over the names' wire forms, keyed by the hash parseQuery already computed, so a
 * lookup is a few integer compares and one byte compare.
 */
function buildWireIndex(names: ReadonlyMap<string, NameEntry>): (buf: Buffer, q: ParsedQuery) => NameEntry | undefined {
  let size = 16;
  while (size < names.size * 2) size *= 2;
  const mask = size - 1;
  const slots = new Int32Array(size).fill(-1);
  const hashes: number[] = [];
  const wires: Buffer[] = [];
  const entries: NameEntry[] = [];
  for (const [name, entry] of names) {
    const wire = toWireName(name);
    const hash = hashWireName(wire);
    let idx = hash & mask;
    while (slots[idx] !== -1) idx = (idx + 1) & mask;
    slots[idx] = entries.length;
    hashes.push(hash);
    wires.push(wire);
    entries.push(entry);
  }
  return (buf, q) => {
    let idx = q.hash & mask;
    for (;;) {
      const e = slots[idx];
      if (e === -1) return undefined;
      if (hashes[e] === q.hash && nameEquals(buf, q, wires[e])) return entries[e];
      idx = (idx + 1) & mask;
    }
  };
}

const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

function normaliseName(raw: string, where: string): string {
  const name = raw.trim().toLowerCase().replace(/\.$/, '');
  const labels = name.split('.');
  if (name.length === 0 || name.length > 253 || labels.some((label) => !LABEL.test(label))) {
    throw new MeshError('MESH_DNS_NAME_INVALID', `${where}: "${raw}" is not a valid DNS name`, {
      exitCode: EXIT_CODES.usage,
      hint: 'use letters, digits and hyphens, labels of 1 to 63 characters, 253 characters at most',
    });
  }
  return name;
}

function checkVip(vip: string, where: string): string {
  if (!isIPv4(vip)) {
    throw new MeshError('MESH_DNS_VIP_INVALID', `${where}: "${vip}" is not an IPv4 address`, {
      exitCode: EXIT_CODES.usage,
      hint: 'mesh VIPs are IPv4 addresses, e.g. 240.240.0.1 (per-service VIPs come from 240.240.0.0/16)',
    });
  }
  return vip;
}

/**
 * Builds the whole table before anyone sees it. Alias forms of a service: `name`, `name.ns`,
 * `name.ns.svc`, and the suffix forms. When two services claim the same alias (a bare `name` in two
 * namespaces) the one in namespace `default` wins, then the first listed; longer forms never clash.
 */
export function buildNameTable(services: readonly MeshService[], options: NameTableOptions): NameTable {
  checkVip(options.meshVip, 'meshVip');
  if (!Number.isInteger(options.ttl) || options.ttl < 0 || options.ttl > 2147483647) {
    throw new MeshError('MESH_DNS_TTL_INVALID', `ttl: ${options.ttl} is not a whole number of seconds between 0 and 2147483647`, { exitCode: EXIT_CODES.usage });
  }
  const suffixes = options.suffixes.map((suffix, i) => normaliseName(suffix, `suffixes[${i}]`));
  const names = new Map<string, NameEntry>();
  const ranks = new Map<string, number>();
  const normalised: Required<MeshService>[] = [];
  const records = new Map<string, Buffer>();

  services.forEach((service, i) => {
    const name = normaliseName(service.name ?? '', `services[${i}].name`);
    const namespace = normaliseName(service.namespace ?? 'default', `services[${i}].namespace`);
    const vip = checkVip(service.vip ?? options.meshVip, `services[${i}].vip`);
    normalised.push({ name, namespace, vip });
    let record = records.get(vip);
    if (record === undefined) {
      record = buildARecord(vip, options.ttl);
      records.set(vip, record);
    }
    const entry: NameEntry = { service: name, namespace, vip, record };
    const rank = namespace === 'default' ? 0 : 1;
    const add = (alias: string, ambiguous: boolean): void => {
      const held = ranks.get(alias);
      if (held !== undefined && (!ambiguous || held <= rank)) return;
      names.set(alias, entry);
      ranks.set(alias, ambiguous ? rank : -1);
    };
    add(name, true);
    add(`${name}.${namespace}`, false);
    add(`${name}.${namespace}.svc`, false);
    for (const suffix of suffixes) {
      add(`${name}.${suffix}`, true);
      add(`${name}.${namespace}.${suffix}`, false);
      if (!suffix.startsWith('svc.')) add(`${name}.${namespace}.svc.${suffix}`, false);
    }
  });
  return { names, services: normalised, options: { ...options, suffixes }, lookup: buildWireIndex(names) };
}
