/** Reading `iptables-save -t TABLE` output back: chains in order, each with its rule specs as text. */

export interface SavedChain {
  name: string;
  /** ACCEPT/DROP for built-in chains, '-' for user chains */
  policy: string;
  /** rule specs: the text after `-A CHAIN `, whitespace normalised */
  rules: string[];
}

export interface SavedTable {
  table: string;
  chains: Map<string, SavedChain>;
}

export function normalizeSpec(spec: string): string {
  return spec.trim().replace(/\s+/g, ' ');
}

/** Parses one table out of iptables-save output; a table that is absent parses as empty. */
export function parseSave(text: string, table = 'nat'): SavedTable {
  const chains = new Map<string, SavedChain>();
  let inTable = false;
  for (const rawLine of text.split('\n')) {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      inTable = line.slice(1) === table;
      continue;
    }
    if (!inTable) continue;
    if (line === 'COMMIT') {
      inTable = false;
      continue;
    }
    if (line.startsWith(':')) {
      const [name, policy = '-'] = line.slice(1).split(/\s+/);
      chains.set(name, { name, policy, rules: [] });
      continue;
    }
    const m = /^-A\s+(\S+)\s+(.*)$/.exec(line);
    if (m) {
      const chain = chains.get(m[1]) ?? { name: m[1], policy: '-', rules: [] };
      chains.set(m[1], chain);
      chain.rules.push(normalizeSpec(m[2]));
    }
  }
  return { table, chains };
}

/** The chain a rule spec jumps to (`-j NAME` or `-g NAME`), if any. */
export function jumpTarget(spec: string): string | undefined {
  const m = /(?:^|\s)-[jg]\s+(\S+)/.exec(spec);
  return m?.[1];
}
