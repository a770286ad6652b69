import { z } from 'zod';
import { ADMIN_HOST, DEFAULT_DNS_TTL, DEFAULT_MESH_VIP, DEFAULT_PORTS } from '../defaults';
import { filePath, ipAddress, listenAddress, millis, nonNegativeInt, positiveInt, serviceName, upstreamAddress } from './common';

/** One entry of mesh-dns' name table. */
export const dnsServiceSchema = z.strictObject({
  name: serviceName,
  namespace: serviceName.default('default'),
  /** Per-service VIP; absent means `meshVip`. */
  vip: ipAddress.optional(),
});

/** mesh-dns' configuration (docs/package-apis.md, "DnsConfig"). */
export const dnsConfigSchema = z.strictObject({
  listen: listenAddress('127.0.0.1', DEFAULT_PORTS.dns),
  admin: listenAddress(ADMIN_HOST, DEFAULT_PORTS.dnsAdmin),
  meshVip: ipAddress.default(DEFAULT_MESH_VIP),
  /** Extra mesh suffixes besides `name`, `name.ns` and `name.ns.svc`. */
  suffixes: z.array(z.string().min(1)).default(['svc.cluster.local']),
  ttl: nonNegativeInt.default(DEFAULT_DNS_TTL),
  services: z.array(dnsServiceSchema).default([]),
  /** A watched RegistrySnapshot file used instead of `services`. */
  namesFile: filePath.optional(),
  /** 'IP' or 'IP:PORT'; empty means the servers of `resolvConf`. */
  upstreams: z.array(upstreamAddress).default([]),
  resolvConf: filePath.default('/etc/resolv.conf'),
  upstreamTimeoutMs: millis.default(2000),
  cacheMaxEntries: positiveInt.default(10000),
});

export type DnsService = z.infer<typeof dnsServiceSchema>;
export type DnsConfig = z.infer<typeof dnsConfigSchema>;
export type DnsConfigInput = z.input<typeof dnsConfigSchema>;
