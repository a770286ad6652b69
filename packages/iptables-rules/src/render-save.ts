import { cidrToSaveText } from './addresses';
import { isBuiltinChain, jumpRules, type Rule, type RuleSet } from './rules';

/**
 * A rule's match and target as argv, in the canonical order `iptables-save` prints them, so the
 * rendered text compares equal to what the kernel reports back (used by verify and clean).
 */
export function ruleSpecArgs(rule: Rule): string[] {
  const args: string[] = [];
  const { match, target } = rule;
  if (match.source) args.push('-s', cidrToSaveText(match.source));
  if (match.destination) args.push('-d', cidrToSaveText(match.destination));
  if (match.protocol) args.push('-p', match.protocol);
  if (match.protocol && match.destinationPort !== undefined) args.push('-m', match.protocol, '--dport', String(match.destinationPort));
  if (match.uidOwner !== undefined) args.push('-m', 'owner', '--uid-owner', String(match.uidOwner));
  if (match.gidOwner !== undefined) args.push('-m', 'owner', '--gid-owner', String(match.gidOwner));
  if (rule.comment !== undefined) args.push('-m', 'comment', '--comment', rule.comment);
  switch (target.type) {
    case 'jump':
      args.push('-j', target.chain);
      break;
    case 'RETURN':
      args.push('-j', 'RETURN');
      break;
    case 'DNAT':
      args.push('-j', 'DNAT', '--to-destination', rule.family === 6 ? `[${target.toAddress}]:${target.toPort}` : `${target.toAddress}:${target.toPort}`);
      break;
    case 'REDIRECT':
      args.push('-j', 'REDIRECT', '--to-ports', String(target.toPort));
      break;
  }
  return args;
}

/** Quotes an argument the way iptables-save does (only when it needs it). */
function quoteArg(arg: string): string {
  return /^[^\s"'\\]+$/.test(arg) ? arg : `"${arg.replace(/(["\\])/g, '\\$1')}"`;
}

/** `-d 240.240.0.1/32 -p tcp -j DNAT --to-destination 9.77.7.28:15001`: a rule's spec as iptables-save text. */
export function ruleSpecText(rule: Rule): string {
  return ruleSpecArgs(rule).map(quoteArg).join(' ');
}

/** `-A CHAIN spec`, one line of `iptables-save` / `iptables-restore` text. */
export function ruleSaveLine(rule: Rule): string {
  return `-A ${rule.chain} ${ruleSpecText(rule)}`;
}

/**
 * The rule set as a standalone `iptables-restore --noflush` document: our chains declared (which
 * creates them, or flushes them when they exist) and every rule appended. It does not remove jumps
 * left by an earlier run; `planApply` builds the input that does (the one `apply` runs).
 */
export function renderRestore(set: RuleSet): string {
  return [`*${set.table}`, ...set.chains.map((chain) => `:${chain} - [0:0]`), ...set.rules.map(ruleSaveLine), 'COMMIT', ''].join('\n');
}

/** The rules as `iptables-save -t nat` prints them (built-in chains with policy ACCEPT, no counters). */
export function renderSave(set: RuleSet): string {
  const builtins = ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'];
  const lines = [`*${set.table}`, ...builtins.map((c) => `:${c} ACCEPT [0:0]`), ...set.chains.map((chain) => `:${chain} - [0:0]`)];
  for (const chain of [...builtins, ...set.chains]) lines.push(...set.rules.filter((r) => r.chain === chain).map(ruleSaveLine));
  return [...lines, 'COMMIT', ''].join('\n');
}

export interface CommandArgs {
  command: 'iptables' | 'ip6tables';
  args: string[];
}

function binaryFor(set: RuleSet): 'iptables' | 'ip6tables' {
  return set.family === 4 ? 'iptables' : 'ip6tables';
}

/** `iptables -t nat -C CHAIN spec` for every rule: each exits 0 when the rule is present. */
export function renderCheckCommands(set: RuleSet): CommandArgs[] {
  return set.rules.map((rule) => ({ command: binaryFor(set), args: ['-t', set.table, '-C', rule.chain, ...ruleSpecArgs(rule)] }));
}

/**
 * The reverse list that removes the rule set: the jumps deleted (last first), then our chains
 * flushed and deleted. `clean` runs the equivalent as one restore transaction.
 */
export function renderCleanupCommands(set: RuleSet): CommandArgs[] {
  const cmd = binaryFor(set);
  const jumps = jumpRules(set)
    .reverse()
    .map((rule) => ({ command: cmd, args: ['-t', set.table, '-D', rule.chain, ...ruleSpecArgs(rule)] }));
  const chains = [...set.chains].reverse();
  return [
    ...jumps,
    ...chains.map((chain) => ({ command: cmd, args: ['-t', set.table, '-F', chain] })),
    ...chains.map((chain) => ({ command: cmd, args: ['-t', set.table, '-X', chain] })),
  ];
}

/** Shell text of a command, for dry runs and `print --format`. */
export function commandText(command: string, args: readonly string[]): string {
  return [command, ...args].map((arg) => (/^[\w@%+=:,./[\]-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`)).join(' ');
}

export { isBuiltinChain };
