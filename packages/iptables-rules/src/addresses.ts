/**
 * IP address and CIDR parsing, normalised to the exact text `iptables-save` prints
 * (so rendered rules compare equal to what the kernel reports back).
 */

export type IpFamily = 4 | 6;

export interface Cidr {
  family: IpFamily;
  /** network address in canonical text (host bits cleared) */
  address: string;
  prefix: number;
}

const IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function parseIpv4Octets(text: string): number[] | undefined {
  const m = IPV4_RE.exec(text);
  if (!m) return undefined;
  const octets = m.slice(1, 5).map((part) => (part.length > 1 && part.startsWith('0') ? NaN : Number(part)));
  return octets.every((o) => Number.isInteger(o) && o >= 0 && o <= 255) ? octets : undefined;
}

/** 8 groups of 16 bits, or undefined when the text is not an IPv6 address. */
function parseIpv6Groups(text: string): number[] | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(text) || text.length < 2) return undefined;
  let head = text;
  let tailGroups: number[] = [];
  // an embedded IPv4 tail, as in ::ffff:1.2.3.4
  const lastColon = head.lastIndexOf(':');
  const maybeV4 = head.slice(lastColon + 1);
  if (maybeV4.includes('.')) {
    const octets = parseIpv4Octets(maybeV4);
    if (!octets) return undefined;
    tailGroups = [(octets[0] << 8) | octets[1], (octets[2] << 8) | octets[3]];
    head = head.slice(0, lastColon + 1);
    if (head.endsWith(':') && !head.endsWith('::')) head = head.slice(0, -1);
  }
  const parseGroups = (part: string): number[] | undefined => {
    if (part === '') return [];
    const groups = part.split(':');
    const values = groups.map((g) => (/^[0-9a-fA-F]{1,4}$/.test(g) ? parseInt(g, 16) : NaN));
    return values.every((v) => !Number.isNaN(v)) ? values : undefined;
  };
  const halves = head.split('::');
  if (halves.length > 2) return undefined;
  const left = parseGroups(halves[0]);
  if (!left) return undefined;
  if (halves.length === 1) {
    const groups = [...left, ...tailGroups];
    return groups.length === 8 ? groups : undefined;
  }
  const right = parseGroups(halves[1]);
  if (!right) return undefined;
  const known = left.length + right.length + tailGroups.length;
  if (known > 7) return undefined;
  return [...left, ...new Array(8 - known).fill(0), ...right, ...tailGroups];
}

/** RFC 5952 text, as glibc's inet_ntop writes it (the longest run of two or more zero groups becomes `::`). */
function formatIpv6Groups(groups: number[]): string {
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export function ipFamily(text: string): IpFamily | undefined {
  if (parseIpv4Octets(text)) return 4;
  if (parseIpv6Groups(text)) return 6;
  return undefined;
}

/** Canonical text of an IP address, or undefined when it is not one. */
export function normalizeIp(text: string): { family: IpFamily; address: string } | undefined {
  const v4 = parseIpv4Octets(text);
  if (v4) return { family: 4, address: v4.join('.') };
  const v6 = parseIpv6Groups(text);
  if (v6) return { family: 6, address: formatIpv6Groups(v6) };
  return undefined;
}

/** Parses `IP` (a host route) or `IP/PREFIX`; host bits are cleared as the kernel does. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  const ipText = slash === -1 ? text : text.slice(0, slash);
  const ip = normalizeIp(ipText);
  if (!ip) return undefined;
  const max = ip.family === 4 ? 32 : 128;
  let prefix = max;
  if (slash !== -1) {
    const prefixText = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(prefixText)) return undefined;
    prefix = Number(prefixText);
    if (prefix > max) return undefined;
  }
  if (ip.family === 4) {
    const octets = parseIpv4Octets(ip.address)!;
    const masked = octets.map((o, i) => {
      const bits = Math.max(0, Math.min(8, prefix - i * 8));
      return o & ((0xff << (8 - bits)) & 0xff);
    });
    return { family: 4, address: masked.join('.'), prefix };
  }
  const groups = parseIpv6Groups(ip.address)!;
  const masked = groups.map((g, i) => {
    const bits = Math.max(0, Math.min(16, prefix - i * 16));
    return g & ((0xffff << (16 - bits)) & 0xffff);
  });
  return { family: 6, address: formatIpv6Groups(masked), prefix };
}

/** `iptables-save` text of a CIDR: always with its prefix. */
export function cidrToSaveText(cidr: Cidr): string {
  return `${cidr.address}/${cidr.prefix}`;
}

/** `iptables -L -n` text of a CIDR: a host route without its prefix. */
export function cidrToListText(cidr: Cidr): string {
  const max = cidr.family === 4 ? 32 : 128;
  return cidr.prefix === max ? cidr.address : `${cidr.address}/${cidr.prefix}`;
}
