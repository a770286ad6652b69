import { ConfigError, DEFAULT_MESH_VIP, DEFAULT_PORTS, DEFAULT_PROXY_UID, type ConfigIssue } from '@mesh-agent/shared-config';
import { normalizeIp, parseCidr, type Cidr } from './addresses';

/**
 * What the capture rules are built from. Lists may be arrays or comma-separated strings
 * (so the same shape comes from a config file, from flags or from the agent's config).
 */
export interface CaptureRulesConfig {
  /** this host's address: inbound capture matches it, outbound DNAT sends to LOCAL_IP:proxyPort */
  localIp?: string;
  /** this host's IPv6 address, for the ip6tables rules */
  localIp6?: string;
  /** service ports captured inbound (ISTIO_INBOUND); `*` captures every TCP port but the excluded ones */
  inboundPorts?: PortListInput;
  /** with `inboundPorts: '*'`: ports never captured inbound (e.g. 22) */
  inboundExcludePorts?: PortListInput;
  /** source CIDRs whose inbound traffic is never captured */
  inboundExcludeCidrs?: ListInput;
  /** destinations captured outbound: the mesh VIP, VIP CIDRs (a bare IP means /32 or /128); default the mesh VIP */
  outboundCidrs?: ListInput;
  /** destination CIDRs never captured outbound */
  outboundExcludeCidrs?: ListInput;
  /** destination ports never captured outbound */
  outboundExcludePorts?: PortListInput;
  /** the proxy's listener port (15001) */
  proxyPort?: number | string;
  /** capture DNS (udp and tcp port 53) to mesh-dns */
  dnsCapture?: boolean;
  /** with ipv6: capture IPv6 DNS to mesh-dns on dnsAddress6 too (default: as dnsCapture); off when mesh-dns does not listen there */
  dnsCapture6?: boolean;
  /** mesh-dns' port (55354) */
  dnsPort?: number | string;
  /** mesh-dns' address for IPv4 (127.0.0.1) */
  dnsAddress?: string;
  /** mesh-dns' address for IPv6 (::1) */
  dnsAddress6?: string;
  /** UID the proxy and mesh-dns run as: its packets are never captured (1000) */
  proxyUid?: number | string;
  /** GID the proxy and mesh-dns run as: when given, its packets are never captured either */
  proxyGid?: number | string;
  /** also install the rules with ip6tables */
  ipv6?: boolean;
}

export type ListInput = string | readonly string[];
export type PortListInput = string | readonly (number | string)[];

/** The validated, normalised configuration the builder works from. */
export interface ResolvedCaptureConfig {
  localIp?: string;
  localIp6?: string;
  inboundPorts: number[] | '*';
  inboundExcludePorts: number[];
  inboundExcludeCidrs: Cidr[];
  outboundCidrs: Cidr[];
  outboundExcludeCidrs: Cidr[];
  outboundExcludePorts: number[];
  proxyPort: number;
  dnsCapture: boolean;
  dnsCapture6: boolean;
  dnsPort: number;
  dnsAddress: string;
  dnsAddress6: string;
  proxyUid: number;
  proxyGid?: number;
  ipv6: boolean;
}

export const CAPTURE_CONFIG_KEYS = [
  'localIp',
  'localIp6',
  'inboundPorts',
  'inboundExcludePorts',
  'inboundExcludeCidrs',
  'outboundCidrs',
  'outboundExcludeCidrs',
  'outboundExcludePorts',
  'proxyPort',
  'dnsCapture',
  'dnsCapture6',
  'dnsPort',
  'dnsAddress',
  'dnsAddress6',
  'proxyUid',
  'proxyGid',
  'ipv6',
] as const satisfies readonly (keyof CaptureRulesConfig)[];

/** Where a config came from, so every issue can name the file and line. */
export interface ConfigSource {
  file?: string;
  /** line of a field path, when known (YAML/JSON files) */
  lineOf?: (path: string) => number | undefined;
}

const CONFIG_HINT = 'fix the settings listed above; `mesh-iptables --help` describes each one (flags use the kebab-case names, e.g. --local-ip)';
const MAX_ID = 4294967294; // (uid_t)-1 means "no user"

function splitList(value: unknown): unknown[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value.trim() === '' ? [] : value.split(',').map((item) => item.trim());
  if (typeof value === 'number') return [value];
  if (Array.isArray(value)) return value;
  return undefined;
}

function parsePort(value: unknown): number | undefined {
  const text = typeof value === 'number' ? String(value) : typeof value === 'string' ? value.trim() : '';
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : undefined;
}

function parseId(value: unknown): number | undefined {
  const text = typeof value === 'number' ? String(value) : typeof value === 'string' ? value.trim() : '';
  if (!/^\d{1,10}$/.test(text)) return undefined;
  const id = Number(text);
  return id <= MAX_ID ? id : undefined;
}

/**
 * Validates and normalises a capture configuration. Every problem is collected and thrown at once
 * as a ConfigError (exit code 2) before anything touches iptables.
 */
export function resolveCaptureConfig(input: CaptureRulesConfig | Record<string, unknown>, source: ConfigSource = {}): ResolvedCaptureConfig {
  const issues: ConfigIssue[] = [];
  const raw = input as Record<string, unknown>;
  const issue = (path: string, message: string) => {
    issues.push({ file: source.file, line: source.lineOf?.(path), path, message });
  };

  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError([{ file: source.file, path: '', message: 'expected a mapping of capture settings' }], { source: source.file, hint: CONFIG_HINT });
  }
  for (const key of Object.keys(raw)) {
    if (!(CAPTURE_CONFIG_KEYS as readonly string[]).includes(key)) {
      issue(key, `unknown setting; known settings: ${CAPTURE_CONFIG_KEYS.join(', ')}`);
    }
  }

  const ip = (key: string, family: 4 | 6): string | undefined => {
    const value = raw[key];
    if (value === undefined || value === null || value === '') return undefined;
    const parsed = typeof value === 'string' ? normalizeIp(value.trim()) : undefined;
    if (!parsed || parsed.family !== family) {
      issue(key, `${JSON.stringify(value)} is not a valid IPv${family} address`);
      return undefined;
    }
    return parsed.address;
  };
  const ports = (key: string): number[] => {
    const list = splitList(raw[key]);
    if (list === undefined) {
      if (raw[key] !== undefined && raw[key] !== null) issue(key, 'expected a list of ports (1-65535), e.g. 8089,8090');
      return [];
    }
    const out: number[] = [];
    list.forEach((item, i) => {
      const port = parsePort(item);
      if (port === undefined) issue(`${key}[${i}]`, `${JSON.stringify(item)} is not a port (an integer 1-65535)`);
      else if (!out.includes(port)) out.push(port);
    });
    return out;
  };
  const cidrs = (key: string, fallback: string[] = []): Cidr[] => {
    const list = splitList(raw[key]) ?? fallback;
    if (splitList(raw[key]) === undefined && raw[key] !== undefined && raw[key] !== null) {
      issue(key, 'expected a list of IP addresses or CIDRs, e.g. 240.240.0.0/16');
      return [];
    }
    const out: Cidr[] = [];
    list.forEach((item, i) => {
      const cidr = typeof item === 'string' ? parseCidr(item.trim()) : undefined;
      if (!cidr) issue(`${key}[${i}]`, `${JSON.stringify(item)} is not an IP address or CIDR (e.g. 10.0.0.0/8, fd00::/8)`);
      else if (!out.some((c) => c.address === cidr.address && c.prefix === cidr.prefix)) out.push(cidr);
    });
    return out;
  };
  const port = (key: string, fallback: number): number => {
    const value = raw[key];
    if (value === undefined || value === null || value === '') return fallback;
    const parsed = parsePort(value);
    if (parsed === undefined) issue(key, `${JSON.stringify(value)} is not a port (an integer 1-65535)`);
    return parsed ?? fallback;
  };
  const id = (key: string): number | undefined => {
    const value = raw[key];
    if (value === undefined || value === null || value === '') return undefined;
    const parsed = parseId(value);
    if (parsed === undefined) issue(key, `${JSON.stringify(value)} is not a numeric ${key === 'proxyGid' ? 'GID' : 'UID'} (an integer 0-${MAX_ID})`);
    return parsed;
  };
  const bool = (key: string, fallback: boolean): boolean => {
    const value = raw[key];
    if (value === undefined || value === null) return fallback;
    if (typeof value === 'boolean') return value;
    if (value === 'true') return true;
    if (value === 'false') return false;
    issue(key, `${JSON.stringify(value)} is not true or false`);
    return fallback;
  };

  const localIp = ip('localIp', 4);
  const localIp6 = ip('localIp6', 6);
  let inboundPorts: number[] | '*';
  if (typeof raw.inboundPorts === 'string' && raw.inboundPorts.trim() === '*') inboundPorts = '*';
  else inboundPorts = ports('inboundPorts');
  const inboundExcludePorts = ports('inboundExcludePorts');
  const inboundExcludeCidrs = cidrs('inboundExcludeCidrs');
  const outboundCidrs = cidrs('outboundCidrs', [DEFAULT_MESH_VIP]);
  const outboundExcludeCidrs = cidrs('outboundExcludeCidrs');
  const outboundExcludePorts = ports('outboundExcludePorts');
  const proxyPort = port('proxyPort', DEFAULT_PORTS.proxyListener);
  const dnsPort = port('dnsPort', DEFAULT_PORTS.dns);
  const dnsAddress = ip('dnsAddress', 4) ?? '127.0.0.1';
  const dnsAddress6 = ip('dnsAddress6', 6) ?? '::1';
  const proxyUid = id('proxyUid') ?? DEFAULT_PROXY_UID;
  const proxyGid = id('proxyGid');
  const dnsCapture = bool('dnsCapture', true);
  const dnsCapture6 = bool('dnsCapture6', dnsCapture);
  const ipv6 = bool('ipv6', false);

  const capturesInbound = inboundPorts === '*' || inboundPorts.length > 0;
  if (inboundExcludePorts.length > 0 && inboundPorts !== '*') {
    issue('inboundExcludePorts', "only meaningful with inboundPorts: '*' (listed inbound ports are the only ones captured)");
  }
  const v4Out = outboundCidrs.filter((c) => c.family === 4);
  const v6Out = outboundCidrs.filter((c) => c.family === 6);
  if (!localIp && raw.localIp === undefined && (capturesInbound || v4Out.length > 0)) {
    issue('localIp', 'required: inbound capture matches it and outbound capture DNATs to LOCAL_IP:proxyPort (set --local-ip)');
  }
  if (!ipv6) {
    for (const key of ['outboundCidrs', 'outboundExcludeCidrs', 'inboundExcludeCidrs'] as const) {
      const list = splitList(raw[key]) ?? [];
      list.forEach((item, i) => {
        const cidr = typeof item === 'string' ? parseCidr(item.trim()) : undefined;
        if (cidr?.family === 6) issue(`${key}[${i}]`, `${item} is IPv6 but ipv6 is off (set ipv6: true / --ipv6)`);
      });
    }
  } else if (!localIp6 && raw.localIp6 === undefined && (capturesInbound || v6Out.length > 0)) {
    issue('localIp6', 'required with ipv6 on: inbound capture matches it and IPv6 outbound capture DNATs to [LOCAL_IP6]:proxyPort (set --local-ip6)');
  }

  if (issues.length > 0) throw new ConfigError(issues, { source: source.file, hint: CONFIG_HINT });
  return {
    localIp,
    localIp6,
    inboundPorts,
    inboundExcludePorts,
    inboundExcludeCidrs,
    outboundCidrs,
    outboundExcludeCidrs,
    outboundExcludePorts,
    proxyPort,
    dnsCapture,
    dnsCapture6,
    dnsPort,
    dnsAddress,
    dnsAddress6,
    proxyUid,
    proxyGid,
    ipv6,
  };
}
