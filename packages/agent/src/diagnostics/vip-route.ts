// Whether the kernel has a route for the mesh VIPs. connect() looks the route up before the nat
// OUTPUT chain sees the packet, so without one (no default route, nothing for 240.240.0.0/16) the
// application gets ENETUNREACH and the capture rules are never reached. `ip route get` is the
// kernel's own answer (iproute2; when it is missing the check says it cannot tell).
import { execFile } from 'node:child_process';
import os from 'node:os';

export type RouteLookup =
  | { ok: true; address: string; dev?: string; via?: string; src?: string; type?: string }
  | { ok: false; address: string; error: string; noTool?: boolean };

/** `ip -j route get ADDRESS`, bounded in time; never throws. */
export function routeGet(address: string, timeoutMs = 5_000): Promise<RouteLookup> {
  return new Promise((resolve) => {
    execFile('ip', ['-j', 'route', 'get', address], { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return resolve({ ok: false, address, noTool: true, error: 'ip (iproute2) is not installed' });
        const said = String(stderr).trim().replace(/^RTNETLINK answers:\s*/, '');
        return resolve({ ok: false, address, error: said || err.message });
      }
      try {
        const [route] = JSON.parse(String(stdout)) as Array<{ dev?: string; gateway?: string; prefsrc?: string; type?: string }>;
        resolve({ ok: true, address, dev: route?.dev, via: route?.gateway, src: route?.prefsrc, type: route?.type });
      } catch {
        resolve({ ok: true, address });
      }
    });
  });
}

/** `240.240.0.1 via 198.18.0.1 dev eth0 src 198.18.0.2` */
export function describeRoute(route: Extract<RouteLookup, { ok: true }>): string {
  return [route.address, route.via && `via ${route.via}`, route.dev && `dev ${route.dev}`, route.src && `src ${route.src}`].filter(Boolean).join(' ');
}

/** The interface that holds `address` here, for the suggested `ip route add ... dev IF`. */
export function interfaceOf(address: string | undefined): string | undefined {
  if (!address) return undefined;
  for (const [name, addresses] of Object.entries(os.networkInterfaces())) {
    if (addresses?.some((a) => a.address === address)) return name;
  }
  return undefined;
}

/** The first host address of a CIDR (`240.240.0.0/16` -> `240.240.0.1`), for IPv4; undefined otherwise. */
export function firstHostOf(cidr: string | undefined): string | undefined {
  const match = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(cidr ?? '');
  if (!match) return undefined;
  const prefix = Number(match[5]);
  const value = match.slice(1, 5).reduce((n, octet) => n * 256 + Number(octet), 0);
  const network = prefix === 0 ? 0 : value - (value % 2 ** (32 - prefix));
  const host = prefix >= 31 ? network : network + 1;
  return [24, 16, 8, 0].map((shift) => Math.floor(host / 2 ** shift) % 256).join('.');
}

/** The fix for a missing route: a default route, or one for the VIP range on the node's interface. */
export function routeFix(vipCidr: string, nodeIp: string | undefined): string {
  const dev = interfaceOf(nodeIp) ?? '<if>';
  return `add a default route (ip route add default via <gateway>) or a route for the mesh VIPs: ip route add ${vipCidr} dev ${dev}`;
}
