// Parsers for the proxy's Envoy-format admin output (/clusters, /listeners, /stats, /config_dump)
// and for `iptables-save`; kept apart from the checks so they can be tested on captured text.

export interface ClusterHost {
  address: string;
  stats: Record<string, string>;
  healthFlags: string;
  healthy: boolean;
}
export interface ClusterStatus { name: string; settings: Record<string, string>; hosts: ClusterHost[] }

/** `/clusters` text: `NAME::SETTING::VALUE` and `NAME::IP:PORT::STAT::VALUE` lines. */
export function parseClustersText(text: string): Map<string, ClusterStatus> {
  const clusters = new Map<string, ClusterStatus>();
  for (const line of text.split('\n')) {
    const parts = line.trim().split('::');
    if (parts.length < 3) continue;
    const [name] = parts;
    let cluster = clusters.get(name);
    if (!cluster) clusters.set(name, (cluster = { name, settings: {}, hosts: [] }));
    if (parts.length >= 4 && /^[\d.]+:\d+$|^\[.*\]:\d+$/.test(parts[1])) {
      const [, address, stat, ...rest] = parts;
      let host = cluster.hosts.find((h) => h.address === address);
      if (!host) cluster.hosts.push((host = { address, stats: {}, healthFlags: 'healthy', healthy: true }));
      host.stats[stat] = rest.join('::');
      if (stat === 'health_flags') {
        host.healthFlags = host.stats[stat];
        host.healthy = host.healthFlags === 'healthy';
      }
    } else {
      cluster.settings[parts.slice(1, -1).join('::')] = parts[parts.length - 1];
    }
  }
  return clusters;
}

/** `/listeners` text: `NAME::IP:PORT` per line. */
export function parseListenersText(text: string): Array<{ name: string; address: string }> {
  return text.split('\n').map((l) => l.trim()).filter((l) => l.includes('::')).map((l) => {
    const [name, address] = l.split('::');
    return { name, address };
  });
}

/** `/stats` text: `name: value` per line. */
export function parseStatsText(text: string): Map<string, number> {
  const stats = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^(\S+):\s+(-?\d+(?:\.\d+)?)\s*$/.exec(line.trim());
    if (match) stats.set(match[1], Number(match[2]));
  }
  return stats;
}

export interface VirtualHostInfo { name: string; domains: string[]; clusters: string[]; directResponse: boolean }

/** Every virtual host found anywhere in a /config_dump (static or dynamic route configs). */
export function virtualHostsFromConfigDump(dump: unknown): VirtualHostInfo[] {
  const found: VirtualHostInfo[] = [];
  walk(dump, (node) => {
    if (Array.isArray(node.domains) && Array.isArray(node.routes)) {
      const clusters = new Set<string>();
      let directResponse = false;
      for (const route of node.routes as any[]) {
        const action = route?.route ?? {};
        if (typeof action.cluster === 'string') clusters.add(action.cluster);
        for (const wc of action.weightedClusters ?? action.weighted_clusters?.clusters ?? []) if (wc?.name) clusters.add(wc.name);
        if (route?.directResponse ?? route?.direct_response) directResponse = true;
      }
      found.push({ name: String(node.name ?? ''), domains: node.domains.map(String), clusters: [...clusters], directResponse });
      return false;
    }
    return true;
  });
  return found;
}

/** The virtual host that serves `host` (exact domain, then with the port stripped, then `*`). */
export function matchVirtualHost(vhosts: VirtualHostInfo[], host: string): VirtualHostInfo | undefined {
  const bare = host.replace(/:\d+$/, '');
  return vhosts.find((v) => v.domains.includes(host))
    ?? vhosts.find((v) => v.domains.includes(bare))
    ?? vhosts.find((v) => v.domains.some((d) => d.startsWith('*') && bare.endsWith(d.slice(1))))
    ?? vhosts.find((v) => v.domains.includes('*'));
}

function walk(node: unknown, visit: (obj: Record<string, any>) => boolean): void {
  if (Array.isArray(node)) for (const item of node) walk(item, visit);
  else if (node && typeof node === 'object') {
    if (!visit(node as Record<string, any>)) return;
    for (const value of Object.values(node)) walk(value, visit);
  }
}

/** Outbound cluster names follow `out#PORT#SERVICE`; inbound `in#PORT#SERVICE`. */
export function serviceOfCluster(name: string): { direction: 'in' | 'out'; port: number; service: string; subset?: string } | undefined {
  // a traffic rule's subset cluster is out#PORT#SERVICE#SUBSET (docs/traffic-rules.md)
  const match = /^(in|out)#(\d+)#([^#]+)(?:#(.+))?$/.exec(name);
  return match ? { direction: match[1] as 'in' | 'out', port: Number(match[2]), service: match[3], ...(match[4] ? { subset: match[4] } : {}) } : undefined;
}

/** `iptables-save -t nat` as `chain -> rule specs` (`-A CHAIN` stripped), plus packet counters with -c. */
export interface NatRule { chain: string; spec: string; packets?: number }
export function parseIptablesSave(text: string): NatRule[] {
  const rules: NatRule[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const counted = /^\[(\d+):(\d+)\]\s+-A\s+(\S+)\s+(.*)$/.exec(line);
    if (counted) { rules.push({ chain: counted[3], spec: counted[4], packets: Number(counted[1]) }); continue; }
    const plain = /^-A\s+(\S+)\s+(.*)$/.exec(line);
    if (plain) rules.push({ chain: plain[1], spec: plain[2] });
  }
  return rules;
}
