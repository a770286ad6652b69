import type { IpFamily } from './addresses';
import { ruleSaveLine } from './render-save';
import { type RuleSet } from './rules';
import { jumpTarget, normalizeSpec, type SavedTable } from './save-parser';
import type { AppliedFamily } from './state-file';

/*
 * The restore documents apply and clean run. Each is one `iptables-restore --noflush` transaction,
 * computed against what `iptables-save` shows now, so applying twice leaves one copy and a changed
 * configuration replaces the old rules in one step.
 */

export function appliedFamilyOf(set: RuleSet): AppliedFamily {
  return { family: set.family, table: set.table, chains: [...set.chains], rules: set.rules.map(ruleSaveLine) };
}

function splitLine(line: string): { chain: string; spec: string } {
  const m = /^-A\s+(\S+)\s+(.*)$/.exec(line.trim());
  if (!m) throw new Error(`not a rule line: ${line}`);
  return { chain: m[1], spec: normalizeSpec(m[2]) };
}

/** Chains that hold policies are the built-in ones. */
function builtinChains(current: SavedTable): string[] {
  return [...current.chains.values()].filter((c) => c.policy !== '-').map((c) => c.name);
}

/** `-D` lines for every rule in a built-in chain that jumps into one of `chains` (each copy, so duplicates go too). */
function jumpDeletions(current: SavedTable, chains: Set<string>): string[] {
  const lines: string[] = [];
  for (const name of builtinChains(current)) {
    for (const spec of current.chains.get(name)!.rules) {
      const target = jumpTarget(spec);
      if (target !== undefined && chains.has(target)) lines.push(`-D ${name} ${spec}`);
    }
  }
  return lines;
}

export interface RestorePlan {
  family: IpFamily;
  /** the restore input, or undefined when there is nothing to do */
  input: string | undefined;
}

/**
 * Input that makes the table hold exactly `desired`: old jumps into our chains (the desired ones and
 * the ones recorded before) deleted, our chains declared (created or flushed), the rules appended,
 * and chains recorded before but no longer wanted removed.
 */
export function planApply(desired: AppliedFamily, current: SavedTable, previous?: AppliedFamily): RestorePlan {
  const wanted = new Set(desired.chains);
  const stale = (previous?.chains ?? []).filter((c) => !wanted.has(c) && current.chains.has(c));
  const managed = new Set([...desired.chains, ...(previous?.chains ?? [])]);
  const lines = [
    `*${desired.table}`,
    ...desired.chains.map((chain) => `:${chain} - [0:0]`),
    ...jumpDeletions(current, managed),
    ...desired.rules.map((line) => {
      const { chain, spec } = splitLine(line);
      return `-A ${chain} ${spec}`;
    }),
    ...stale.map((chain) => `-F ${chain}`),
    ...stale.map((chain) => `-X ${chain}`),
    'COMMIT',
    '',
  ];
  return { family: desired.family, input: lines.join('\n') };
}

/** Input that removes `chains` and every jump into them from the built-in chains; undefined when none of it is there. */
export function planClean(family: IpFamily, chains: readonly string[], current: SavedTable, table = 'nat'): RestorePlan {
  const present = chains.filter((c) => current.chains.has(c));
  const deletions = jumpDeletions(current, new Set(chains));
  if (present.length === 0 && deletions.length === 0) return { family, input: undefined };
  const lines = [`*${table}`, ...deletions, ...present.map((c) => `-F ${c}`), ...present.map((c) => `-X ${c}`), 'COMMIT', ''];
  return { family, input: lines.join('\n') };
}

export type DifferenceKind = 'missing' | 'extra' | 'changed';

export interface RuleDifference {
  kind: DifferenceKind;
  family: IpFamily;
  chain: string;
  /** the rule that should be there (`-A CHAIN spec`) */
  expected?: string;
  /** the rule that is there */
  actual?: string;
  /** for whole chains */
  note?: string;
}

/** Aligns two rule lists (longest common subsequence); unmatched rules between matches pair up as changed. */
function diffLists(family: IpFamily, chain: string, expected: string[], actual: string[]): RuleDifference[] {
  const n = expected.length;
  const m = actual.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = expected[i] === actual[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out: RuleDifference[] = [];
  let i = 0;
  let j = 0;
  let gapExpected: string[] = [];
  let gapActual: string[] = [];
  const flush = () => {
    const pairs = Math.min(gapExpected.length, gapActual.length);
    for (let k = 0; k < pairs; k++) out.push({ kind: 'changed', family, chain, expected: gapExpected[k], actual: gapActual[k] });
    for (const e of gapExpected.slice(pairs)) out.push({ kind: 'missing', family, chain, expected: e });
    for (const a of gapActual.slice(pairs)) out.push({ kind: 'extra', family, chain, actual: a });
    gapExpected = [];
    gapActual = [];
  };
  while (i < n || j < m) {
    if (i < n && j < m && expected[i] === actual[j]) {
      flush();
      i++;
      j++;
    } else if (j < m && (i >= n || lcs[i][j + 1] >= lcs[i + 1][j])) {
      gapActual.push(actual[j++]);
    } else {
      gapExpected.push(expected[i++]);
    }
  }
  flush();
  return out;
}

/**
 * Compares what should be there with what `iptables-save` shows: our chains rule by rule, and the
 * jumps into them from the built-in chains. `alsoManaged` names chains recorded earlier that should
 * now be gone (reported as extra when present).
 */
export function compareTable(desired: AppliedFamily, current: SavedTable, alsoManaged: readonly string[] = []): RuleDifference[] {
  const family = desired.family;
  const out: RuleDifference[] = [];
  const byChain = new Map<string, string[]>();
  for (const line of desired.rules) {
    const { chain, spec } = splitLine(line);
    byChain.set(chain, [...(byChain.get(chain) ?? []), `-A ${chain} ${spec}`]);
  }
  const ours = new Set([...desired.chains, ...alsoManaged]);
  for (const chain of desired.chains) {
    const saved = current.chains.get(chain);
    if (!saved) out.push({ kind: 'missing', family, chain, note: `chain ${chain} does not exist` });
    const actual = (saved?.rules ?? []).map((spec) => `-A ${chain} ${spec}`);
    out.push(...diffLists(family, chain, byChain.get(chain) ?? [], actual));
  }
  for (const chain of alsoManaged) {
    if (desired.chains.includes(chain)) continue;
    const saved = current.chains.get(chain);
    if (saved) out.push({ kind: 'extra', family, chain, note: `chain ${chain} should not exist (${saved.rules.length} rules)` });
  }
  const builtins = new Set([...builtinChains(current), ...[...byChain.keys()].filter((c) => !desired.chains.includes(c))]);
  for (const chain of builtins) {
    const expectedJumps = (byChain.get(chain) ?? []).filter((line) => ours.has(jumpTarget(line) ?? ''));
    const actualJumps = (current.chains.get(chain)?.rules ?? [])
      .filter((spec) => ours.has(jumpTarget(spec) ?? ''))
      .map((spec) => `-A ${chain} ${spec}`);
    out.push(...diffLists(family, chain, expectedJumps, actualJumps));
  }
  return out;
}

export function formatDifference(diff: RuleDifference): string {
  const fam = diff.family === 4 ? 'ipv4' : 'ipv6';
  if (diff.note) return `${diff.kind.padEnd(7)} ${fam} ${diff.note}`;
  if (diff.kind === 'changed') return `changed ${fam} ${diff.chain}: expected: ${diff.expected}\n        ${fam} ${diff.chain}: found:    ${diff.actual}`;
  return `${diff.kind.padEnd(7)} ${fam} ${diff.kind === 'missing' ? diff.expected : diff.actual}`;
}
