import { cidrToListText } from './addresses';
import { NAT_BUILTIN_CHAINS, anyAddress, type Rule, type RuleSet } from './rules';

/*
 * The listing `iptables -t nat -L -n` prints, column for column (iptables' print_firewall:
 * target %-9s, protocol %-5s, opt, source and destination %-19s, then matches and target
 * options), as in the source document. Protocols are shown by name, as the document does.
 */

const pad = (text: string, width: number) => (text.length >= width ? text : text + ' '.repeat(width - text.length));

const HEADER = `${pad('target', 9)}  prot opt ${pad('source', 19)}  ${pad('destination', 19)} `;

function matchText(rule: Rule): string {
  let text = '';
  const { match, target } = rule;
  if (match.protocol && match.destinationPort !== undefined) text += ` ${match.protocol} dpt:${match.destinationPort}`;
  if (match.uidOwner !== undefined) text += ` owner UID match ${match.uidOwner}`;
  if (match.gidOwner !== undefined) text += ` owner GID match ${match.gidOwner}`;
  if (rule.comment !== undefined) text += ` /* ${rule.comment} */`;
  switch (target.type) {
    case 'DNAT':
      text += rule.family === 6 ? ` to:[${target.toAddress}]:${target.toPort}` : ` to:${target.toAddress}:${target.toPort}`;
      break;
    case 'REDIRECT':
      text += ` redir ports ${target.toPort}`;
      break;
    default:
      break;
  }
  return text;
}

/** One rule line of the listing. */
export function listingLine(rule: Rule): string {
  const targetName = rule.target.type === 'jump' ? rule.target.chain : rule.target.type;
  const any = anyAddress(rule.family);
  const source = cidrToListText(rule.match.source ?? any);
  const destination = cidrToListText(rule.match.destination ?? any);
  return `${pad(targetName, 9)}  ${pad(rule.match.protocol ?? 'all', 5)}--  ${pad(source, 19)}  ${pad(destination, 19)} ${matchText(rule)}`;
}

/** The whole nat table holding just this rule set, as `iptables -t nat -L -n` lists it. */
export function renderListing(set: RuleSet): string {
  const blocks: string[] = [];
  for (const chain of NAT_BUILTIN_CHAINS) {
    const lines = [`Chain ${chain} (policy ACCEPT)`, HEADER, ...set.rules.filter((r) => r.chain === chain).map(listingLine)];
    blocks.push(lines.join('\n'));
  }
  // user chains are listed sorted by name, each with how many rules jump to it
  for (const chain of [...set.chains].sort()) {
    const references = set.rules.filter((r) => r.target.type === 'jump' && r.target.chain === chain).length;
    const lines = [`Chain ${chain} (${references} references)`, HEADER, ...set.rules.filter((r) => r.chain === chain).map(listingLine)];
    blocks.push(lines.join('\n'));
  }
  return `${blocks.join('\n\n')}\n`;
}
