import type { MeshError } from '@mesh-agent/shared-config';
import type { IpFamily } from './addresses';
import { binariesFor, commandFailure, detectBackend, type BackendChoice, type BackendInfo } from './backend';
import type { Executor } from './executor';
import { appliedFamilyOf, compareTable, planApply, planClean, type RestorePlan, type RuleDifference } from './plan';
import { OUR_CHAINS, type RuleSet } from './rules';
import { parseSave, type SavedTable } from './save-parser';
import { DEFAULT_STATE_FILE, readState, removeState, withStateLock, writeState, type AppliedFamily, type AppliedState } from './state-file';

export interface RulesRuntimeOptions {
  executor: Executor;
  /** where `apply` records what it applied and `clean` reads it; default /var/run/mesh-agent/iptables-state.json */
  stateFile?: string;
  /** which iptables binaries: the system default, or iptables-nft-* / iptables-legacy-* */
  backend?: BackendChoice;
  /** progress lines (backend used, what was done) */
  log?: (line: string) => void;
}

const familyName = (family: IpFamily) => (family === 4 ? 'ipv4' : 'ipv6');

async function readTable(opts: RulesRuntimeOptions, family: IpFamily, table = 'nat'): Promise<SavedTable> {
  const bin = binariesFor(family, opts.backend).save;
  const result = await opts.executor.run({ command: bin, args: ['-t', table], mutates: false });
  if (result.code !== 0) throw commandFailure(`reading the ${table} table`, `${bin} -t ${table}`, result);
  return parseSave(result.stdout, table);
}

async function restore(opts: RulesRuntimeOptions, plan: RestorePlan, what: string, test: boolean, backend?: BackendInfo): Promise<void> {
  if (plan.input === undefined) return;
  const bin = binariesFor(plan.family, opts.backend).restore;
  const args = test ? ['--test', '--noflush'] : ['--noflush'];
  // the legacy backend serialises writers with the xtables lock: wait for it rather than fail
  if (backend?.backend === 'legacy') args.push('--wait=10');
  const result = await opts.executor.run({ command: bin, args, input: plan.input, mutates: !test });
  if (result.code !== 0) throw commandFailure(what, `${bin} ${args.join(' ')}`, result, { input: plan.input });
}

async function announceBackend(opts: RulesRuntimeOptions, family: IpFamily): Promise<BackendInfo> {
  const info = await detectBackend(opts.executor, family, opts.backend);
  opts.log?.(`using ${binariesFor(family, opts.backend).iptables} ${info.version} (backend: ${info.backend}) via ${opts.executor.description}`);
  return info;
}

export interface ApplyResult {
  backend: BackendInfo;
  families: AppliedFamily[];
  dryRun: boolean;
}

/**
 * Installs the rule sets, each family in one `iptables-restore --noflush` transaction. Every input is
 * checked with `--test` first; if a later family fails, the earlier ones are put back as they were.
 * What was applied is recorded in the state file (not in a dry run).
 */
export async function applyRules(sets: RuleSet[], opts: RulesRuntimeOptions): Promise<ApplyResult> {
  const stateFile = opts.stateFile ?? DEFAULT_STATE_FILE;
  const backend = await announceBackend(opts, 4);
  // reading the table first fails early without root, before the lock file is created
  await readTable(opts, 4);
  // a dry run writes nothing, so it needs no lock (and works without root)
  return opts.executor.dryRun ? applyLocked(sets, opts, stateFile, backend) : withStateLock(stateFile, () => applyLocked(sets, opts, stateFile, backend));
}

async function applyLocked(sets: RuleSet[], opts: RulesRuntimeOptions, stateFile: string, backend: BackendInfo): Promise<ApplyResult> {
  const previous = readState(stateFile);
  const prevOf = (family: IpFamily) => previous?.families.find((f) => f.family === family);
  const desired = sets.map(appliedFamilyOf);
  const families = [...new Set<IpFamily>([...desired.map((d) => d.family), ...(previous?.families ?? []).map((f) => f.family)])].sort();

  const planFor = (family: IpFamily, current: SavedTable): RestorePlan => {
    const want = desired.find((d) => d.family === family);
    // a family applied before but not wanted now (IPv6 turned off) is cleaned in the same run
    return want ? planApply(want, current, prevOf(family)) : planClean(family, prevOf(family)?.chains ?? [], current);
  };
  const plans: { family: IpFamily; plan: RestorePlan; current: SavedTable }[] = [];
  for (const family of families) {
    const current = await readTable(opts, family);
    plans.push({ family, plan: planFor(family, current), current });
  }
  for (const { family, plan } of plans) await restore(opts, plan, `checking the ${familyName(family)} rules`, true, backend);

  if (!opts.executor.dryRun) {
    // record the union first: a crash between the families still leaves clean knowing every chain
    const union: AppliedFamily[] = families.map((family) => {
      const want = desired.find((d) => d.family === family);
      const prev = prevOf(family);
      return {
        family,
        table: 'nat',
        chains: [...new Set([...(want?.chains ?? []), ...(prev?.chains ?? [])])],
        rules: want?.rules ?? prev?.rules ?? [],
      };
    });
    writeState(stateFile, { version: 1, appliedAt: new Date().toISOString(), backend: backend.backend, families: union });
  }

  const done: typeof plans = [];
  for (const entry of plans) {
    try {
      try {
        await restore(opts, entry.plan, `applying the ${familyName(entry.family)} rules`, false, backend);
      } catch (err) {
        // another writer may have changed the table since it was read (a jump to delete is gone):
        // plan again from a fresh read, once; a plan that comes out the same fails as before
        if ((err as MeshError).code !== 'MESH_IPT_RESTORE_FAILED' || opts.executor.dryRun) throw err;
        const fresh = planFor(entry.family, await readTable(opts, entry.family));
        if (fresh.input === entry.plan.input) throw err;
        opts.log?.(`the ${familyName(entry.family)} nat table changed while applying; applying again from a fresh read`);
        await restore(opts, fresh, `applying the ${familyName(entry.family)} rules`, false, backend);
      }
      done.push(entry);
    } catch (err) {
      await rollBack(done, prevOf, opts, backend);
      if (!opts.executor.dryRun) {
        if (previous) writeState(stateFile, previous);
      }
      throw err;
    }
  }
  const applied = desired.filter((d) => d.chains.length > 0 || d.rules.length > 0);
  if (!opts.executor.dryRun) {
    writeState(stateFile, { version: 1, appliedAt: new Date().toISOString(), backend: backend.backend, families: applied });
  }
  for (const fam of applied) opts.log?.(`${opts.executor.dryRun ? 'would apply' : 'applied'} ${fam.rules.length} ${familyName(fam.family)} nat rules in ${fam.chains.join(', ')}`);
  return { backend, families: applied, dryRun: opts.executor.dryRun };
}

/** Puts the families already changed back to what was recorded before (or removes them). */
async function rollBack(
  done: { family: IpFamily; current: SavedTable }[],
  prevOf: (family: IpFamily) => AppliedFamily | undefined,
  opts: RulesRuntimeOptions,
  backend: BackendInfo,
): Promise<void> {
  for (const { family } of done) {
    try {
      const now = await readTable(opts, family);
      const prev = prevOf(family);
      const plan = prev ? planApply(prev, now) : planClean(family, OUR_CHAINS, now);
      await restore(opts, plan, `rolling back the ${familyName(family)} rules`, false, backend);
    } catch (err) {
      opts.log?.(`rolling back ${familyName(family)} failed: ${(err as Error).message}`);
    }
  }
}

export interface CleanOptions extends RulesRuntimeOptions {
  /** with no state file, remove the mesh chains by their names (DNS_OUTPUT, ISTIO_*) and the jumps into them */
  force?: boolean;
  /** with `force`: the families to clean (default IPv4 only) */
  families?: IpFamily[];
}

export interface CleanResult {
  /** restore inputs that ran (or would run, in a dry run), one per family with something to remove */
  removed: { family: IpFamily; chains: string[] }[];
  /** true when there was no record (and no --force): nothing was touched */
  nothingRecorded: boolean;
}

/**
 * Removes exactly what the state file says was applied (and the jumps into those chains), whatever the
 * configuration is now. Succeeds when nothing is there; every other rule stays as it is.
 */
export async function cleanRules(opts: CleanOptions): Promise<CleanResult> {
  const stateFile = opts.stateFile ?? DEFAULT_STATE_FILE;
  if (!opts.executor.dryRun && !opts.force && readState(stateFile) === undefined) return cleanLocked(opts, stateFile);
  if (!opts.executor.dryRun) await readTable(opts, 4); // fails early without root, before the lock file is created
  return opts.executor.dryRun ? cleanLocked(opts, stateFile) : withStateLock(stateFile, () => cleanLocked(opts, stateFile));
}

async function cleanLocked(opts: CleanOptions, stateFile: string): Promise<CleanResult> {
  const state = readState(stateFile);
  let targets: { family: IpFamily; chains: readonly string[] }[];
  if (state) targets = state.families.map((f) => ({ family: f.family, chains: f.chains }));
  else if (opts.force) targets = (opts.families ?? [4]).map((family) => ({ family, chains: OUR_CHAINS }));
  else {
    opts.log?.(`nothing recorded in ${stateFile}: nothing to clean (use --force to remove the mesh chains by name)`);
    return { removed: [], nothingRecorded: true };
  }
  const backend = await announceBackend(opts, 4);
  const plans: { family: IpFamily; chains: string[]; plan: RestorePlan }[] = [];
  for (const target of targets) {
    const current = await readTable(opts, target.family);
    plans.push({ family: target.family, chains: target.chains.filter((c) => current.chains.has(c)), plan: planClean(target.family, target.chains, current) });
  }
  for (const { family, plan } of plans) await restore(opts, plan, `checking the ${familyName(family)} cleanup`, true, backend);
  const removed: CleanResult['removed'] = [];
  for (const entry of plans) {
    if (entry.plan.input === undefined) continue;
    try {
      await restore(opts, entry.plan, `removing the ${familyName(entry.family)} rules`, false, backend);
    } catch (err) {
      // keep the record of what is still there
      if (state && !opts.executor.dryRun) {
        const left = state.families.filter((f) => !removed.some((r) => r.family === f.family));
        writeState(stateFile, { ...state, families: left });
      }
      throw err;
    }
    removed.push({ family: entry.family, chains: entry.chains });
  }
  if (!opts.executor.dryRun) removeState(stateFile);
  if (removed.length === 0) opts.log?.('nothing to clean: none of the recorded rules is there');
  for (const r of removed) {
    opts.log?.(`${opts.executor.dryRun ? 'would remove' : 'removed'} ${familyName(r.family)} chains ${r.chains.join(', ') || '(none)'} and the jumps into them`);
  }
  return { removed, nothingRecorded: false };
}

export interface VerifyResult {
  ok: boolean;
  differences: RuleDifference[];
  /** rules compared, per family */
  checked: { family: IpFamily; rules: number }[];
}

/**
 * Reads `iptables-save -t nat` and compares it with the rule sets (or, without them, with what the
 * state file says was applied): missing, extra and changed rules.
 */
export async function verifyRules(sets: RuleSet[] | undefined, opts: RulesRuntimeOptions): Promise<VerifyResult> {
  const stateFile = opts.stateFile ?? DEFAULT_STATE_FILE;
  const state: AppliedState | undefined = readState(stateFile);
  const desired = sets ? sets.map(appliedFamilyOf) : (state?.families ?? []);
  await announceBackend(opts, 4);
  const differences: RuleDifference[] = [];
  const checked: VerifyResult['checked'] = [];
  for (const want of desired) {
    const current = await readTable(opts, want.family);
    const recorded = state?.families.find((f) => f.family === want.family)?.chains ?? [];
    differences.push(...compareTable(want, current, [...new Set([...recorded, ...OUR_CHAINS])]));
    checked.push({ family: want.family, rules: want.rules.length });
  }
  return { ok: differences.length === 0, differences, checked };
}
