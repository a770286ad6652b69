import type { Cidr, IpFamily } from './addresses';
import type { ResolvedCaptureConfig } from './config';

/** Our chains, named as in the source document. Every rule lives in one of them, except the jumps into them. */
export const CHAINS = {
  dnsOutput: 'DNS_OUTPUT',
  inbound: 'ISTIO_INBOUND',
  output: 'ISTIO_OUTPUT',
  redirect: 'ISTIO_REDIRECT',
} as const;
export const OUR_CHAINS: readonly string[] = [CHAINS.dnsOutput, CHAINS.inbound, CHAINS.output, CHAINS.redirect];

/** The nat table's built-in chains, in the order `iptables -L` lists them. */
export const NAT_BUILTIN_CHAINS = ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'] as const;

export type Protocol = 'tcp' | 'udp';

export interface RuleMatch {
  protocol?: Protocol;
  source?: Cidr;
  destination?: Cidr;
  destinationPort?: number;
  uidOwner?: number;
  gidOwner?: number;
}

export type RuleTarget =
  | { type: 'jump'; chain: string }
  | { type: 'RETURN' }
  | { type: 'DNAT'; toAddress: string; toPort: number }
  | { type: 'REDIRECT'; toPort: number };

/** One rule, as data. Renderers turn it into restore text, `-C`/`-D` argv, or a listing line. */
export interface Rule {
  family: IpFamily;
  table: 'nat';
  chain: string;
  match: RuleMatch;
  target: RuleTarget;
  comment?: string;
}

/** Everything one address family gets: our chains (created in this order) and every rule, jumps included, in order. */
export interface RuleSet {
  family: IpFamily;
  table: 'nat';
  chains: string[];
  rules: Rule[];
}

export function isBuiltinChain(chain: string): boolean {
  return (NAT_BUILTIN_CHAINS as readonly string[]).includes(chain);
}

/** The jumps from the built-in chains into ours. */
export function jumpRules(set: RuleSet): Rule[] {
  return set.rules.filter((rule) => isBuiltinChain(rule.chain));
}

const anyOf = (family: IpFamily): Cidr => ({ family, address: family === 4 ? '0.0.0.0' : '::', prefix: 0 });
const hostCidr = (family: IpFamily, address: string): Cidr => ({ family, address, prefix: family === 4 ? 32 : 128 });

function buildFamily(config: ResolvedCaptureConfig, family: IpFamily): RuleSet {
  const rules: Rule[] = [];
  const add = (chain: string, match: RuleMatch, target: RuleTarget) => rules.push({ family, table: 'nat', chain, match, target });
  const localIp = family === 4 ? config.localIp : config.localIp6;
  const dnsAddress = family === 4 ? config.dnsAddress : config.dnsAddress6;
  const outboundCidrs = config.outboundCidrs.filter((c) => c.family === family);
  const dnsCapture = family === 4 ? config.dnsCapture : config.dnsCapture6;
  const capturesInbound = localIp !== undefined && (config.inboundPorts === '*' || config.inboundPorts.length > 0);
  const capturesOutbound = localIp !== undefined && outboundCidrs.length > 0;
  const ownerReturns = (chain: string) => {
    add(chain, { uidOwner: config.proxyUid }, { type: 'RETURN' });
    if (config.proxyGid !== undefined) add(chain, { gidOwner: config.proxyGid }, { type: 'RETURN' });
  };

  // Jumps first, in the source document's order: PREROUTING -> ISTIO_INBOUND; OUTPUT -> ISTIO_OUTPUT, then DNS_OUTPUT.
  if (capturesInbound) add('PREROUTING', { protocol: 'tcp' }, { type: 'jump', chain: CHAINS.inbound });
  if (capturesOutbound) add('OUTPUT', {}, { type: 'jump', chain: CHAINS.output });
  if (dnsCapture) add('OUTPUT', {}, { type: 'jump', chain: CHAINS.dnsOutput });

  if (dnsCapture) {
    // The owner RETURN comes first: mesh-dns' own upstream queries must not be captured again.
    ownerReturns(CHAINS.dnsOutput);
    for (const protocol of ['udp', 'tcp'] as const) {
      add(CHAINS.dnsOutput, { protocol, destinationPort: 53 }, { type: 'DNAT', toAddress: dnsAddress, toPort: config.dnsPort });
    }
  }

  if (capturesInbound) {
    for (const source of config.inboundExcludeCidrs.filter((c) => c.family === family)) {
      add(CHAINS.inbound, { source }, { type: 'RETURN' });
    }
    const destination = hostCidr(family, localIp);
    if (config.inboundPorts === '*') {
      for (const port of config.inboundExcludePorts) add(CHAINS.inbound, { protocol: 'tcp', destinationPort: port }, { type: 'RETURN' });
      add(CHAINS.inbound, { destination, protocol: 'tcp' }, { type: 'jump', chain: CHAINS.redirect });
    } else {
      for (const port of config.inboundPorts) {
        add(CHAINS.inbound, { destination, protocol: 'tcp', destinationPort: port }, { type: 'jump', chain: CHAINS.redirect });
      }
    }
  }

  if (capturesOutbound) {
    // The owner RETURN comes first: the proxy's own outgoing connections must not loop back into it.
    ownerReturns(CHAINS.output);
    for (const destination of config.outboundExcludeCidrs.filter((c) => c.family === family)) {
      add(CHAINS.output, { destination }, { type: 'RETURN' });
    }
    for (const port of config.outboundExcludePorts) add(CHAINS.output, { protocol: 'tcp', destinationPort: port }, { type: 'RETURN' });
    for (const destination of outboundCidrs) {
      add(CHAINS.output, { destination, protocol: 'tcp' }, { type: 'DNAT', toAddress: localIp, toPort: config.proxyPort });
    }
  }

  if (capturesInbound) add(CHAINS.redirect, { protocol: 'tcp' }, { type: 'REDIRECT', toPort: config.proxyPort });

  const used = new Set(rules.map((r) => r.chain));
  const chains = [...OUR_CHAINS].filter((chain) => used.has(chain)).sort();
  return { family, table: 'nat', chains, rules };
}

/** The one builder: the IPv4 rule set, and the IPv6 one when `ipv6` is on. */
export function buildRuleSets(config: ResolvedCaptureConfig): RuleSet[] {
  const sets = [buildFamily(config, 4)];
  if (config.ipv6) sets.push(buildFamily(config, 6));
  return sets;
}

export { anyOf as anyAddress };
