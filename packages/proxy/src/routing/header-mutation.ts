import type { HeaderValueOptionConfig } from '../config/types';

/**
 * Envoy's request/response_headers_to_add and _to_remove, compiled once per route: the removals run
 * first, then the additions (Envoy's HeaderParser order). `append: false` replaces: every received
 * value of that name is dropped and the configured one added. Values are literal strings.
 */
export interface HeaderMutation {
  /** lower-case names whose received values are not forwarded (removed, or replaced by an `append: false` entry) */
  readonly drop: ReadonlySet<string>;
  /** pairs added after the forwarded headers: [name, value, name, value, ...], lower-case names */
  readonly add: readonly string[];
}

export function compileHeaderMutation(add: readonly HeaderValueOptionConfig[] | undefined, remove: readonly string[] | undefined): HeaderMutation | undefined {
  if ((add === undefined || add.length === 0) && (remove === undefined || remove.length === 0)) return undefined;
  const drop = new Set<string>((remove ?? []).map((n) => n.toLowerCase()));
  const pairs: string[] = [];
  for (const h of add ?? []) {
    const name = h.name.toLowerCase();
    if (h.append === false) {
      drop.add(name);
      // a later `append: false` of the same name replaces an earlier one
      for (let i = pairs.length - 2; i >= 0; i -= 2) if (pairs[i] === name) pairs.splice(i, 2);
    }
    pairs.push(name, h.value);
  }
  return { drop, add: pairs };
}

/** The route's mutation and a weighted cluster's own additions (Envoy applies both; the more specific one's pairs come first). */
export function mergeHeaderMutations(specific: HeaderMutation | undefined, general: HeaderMutation | undefined): HeaderMutation | undefined {
  if (specific === undefined) return general;
  if (general === undefined) return specific;
  return { drop: new Set([...specific.drop, ...general.drop]), add: [...specific.add, ...general.add] };
}

/** A response head's headers with the mutation's drops applied (new arrays; the received ones are left alone). */
export function withoutDropped(names: readonly string[], lower: readonly string[], values: readonly string[], drop: ReadonlySet<string>): { names: string[]; lower: string[]; values: string[] } {
  const out = { names: [] as string[], lower: [] as string[], values: [] as string[] };
  for (let i = 0; i < lower.length; i++) {
    if (drop.has(lower[i]!)) continue;
    out.names.push(names[i]!);
    out.lower.push(lower[i]!);
    out.values.push(values[i]!);
  }
  return out;
}

/** Flat [name, value, ...] pairs with the drops applied and the additions appended. */
export function mutatePairs(pairs: readonly string[], m: HeaderMutation): string[] {
  const out: string[] = [];
  for (let i = 0; i < pairs.length; i += 2) if (!m.drop.has(pairs[i]!)) out.push(pairs[i]!, pairs[i + 1]!);
  out.push(...m.add);
  return out;
}
