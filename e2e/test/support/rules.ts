// Comparing a namespace's iptables state before and after: what counts is every chain the suite
// did not start with and every rule, not counters or comments.
import { nsRun } from './exec.js';

const BUILTIN = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);

/** iptables-save reduced to the lines that say what the rules are: custom chains and rules, per table. */
export function canonicalRules(save: string): string[] {
  const out: string[] = [];
  let table = '';
  for (const raw of save.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) table = line.slice(1);
    else if (line.startsWith(':')) {
      const chain = line.slice(1).split(' ')[0];
      if (!BUILTIN.has(chain)) out.push(`${table} :${chain}`);
    } else if (line.startsWith('-A ')) out.push(`${table} ${line}`);
    else if (/^\[\d+:\d+\] -A /.test(line)) out.push(`${table} ${line.replace(/^\[\d+:\d+\] /, '')}`);
  }
  return out.sort();
}

export async function nsRules(ns: string): Promise<string[]> {
  return canonicalRules((await nsRun(ns, 'iptables-save', [])).stdout);
}

/** Packet counter of the first rule in `chain` whose spec contains every fragment. */
export async function ruleCounter(ns: string, chain: string, ...fragments: string[]): Promise<number> {
  const { stdout } = await nsRun(ns, 'iptables-save', ['-t', 'nat', '-c']);
  for (const line of stdout.split('\n')) {
    const match = /^\[(\d+):\d+\] -A (\S+) (.*)$/.exec(line.trim());
    if (match && match[2] === chain && fragments.every((f) => match[3].includes(f))) return Number(match[1]);
  }
  throw new Error(`no rule in ${chain} with ${fragments.join(' ')} in ${ns}:\n${stdout}`);
}
