/** Default ports, all from the source document. */
export const DEFAULT_PORTS = {
  agentAdmin: 15020,
  dnsAdmin: 15021,
  proxyAdmin: 15000,
  proxyListener: 15001,
  dns: 55354,
} as const;

/** The one "special IP" mesh-dns hands out for mesh names (class E: never routed on the internet). */
export const DEFAULT_MESH_VIP = '240.240.0.1';
/** Per-service VIPs are allocated from here, as Istio does. */
export const DEFAULT_VIP_CIDR = '240.240.0.0/16';
/** The source document's owner UID: packets of this user (the proxy and mesh-dns) are not captured again. */
export const DEFAULT_PROXY_UID = 1000;
export const DEFAULT_PROXY_GID = 1000;
/** Authoritative TTL of mesh answers, seconds (Istio's). */
export const DEFAULT_DNS_TTL = 30;
/** Admin endpoints bind here unless a non-loopback address is asked for explicitly. */
export const ADMIN_HOST = '127.0.0.1';
/**
 * Where the record of the applied iptables rules lives. Under /run on purpose: a reboot clears
 * the kernel's rules and this record together, so a stale record never outlives its rules.
 */
export const DEFAULT_IPTABLES_STATE_FILE = '/var/run/mesh-agent/iptables-state.json';
