import type net from 'node:net';
import { ADMIN_HOST, DEFAULT_PORTS } from '@mesh-agent/shared-config';
import { adminResponse, createAdminServer, routes, type AdminServer } from '@mesh-agent/admin-kit';
import type { MeshDns } from './server';
import { VERSION } from './version';

/** The help lines of the source document's mesh-dns /help, in its order. */
export const HELP = {
  health: 'print out the health info for mesh-dns',
  configDump: 'print out all of the mesh-dns runtime configs',
  latestError: 'print out the latest error info',
  help: 'print out list of admin commands',
  version: 'print out version info',
  status: 'print out status info',
  logging: 'dynamic change logging level, scope can be admin/default/healthz/model, level can be error/none/debug/info/warn',
} as const;

export interface MeshDnsAdminOptions {
  host?: string;
  port?: number;
  allowNonLoopback?: boolean;
  /** a listening socket handed over by a parent, used instead of binding */
  handle?: net.Server;
}

/**
 * The admin port (127.0.0.1:15021 by default) with exactly the source document's routes, plus a
 * hidden GET /metrics (Prometheus text; hidden so /help stays the document's byte for byte).
 */
export async function startMeshDnsAdmin(dns: MeshDns, opts: MeshDnsAdminOptions = {}): Promise<AdminServer> {
  const admin = createAdminServer({
    component: 'mesh-dns',
    helpStyle: 'istio',
    host: opts.host ?? ADMIN_HOST,
    port: opts.port ?? DEFAULT_PORTS.dnsAdmin,
    allowNonLoopback: opts.allowNonLoopback,
    logger: dns.logger,
  });
  admin
    .add(
      routes.health(HELP.health, async () => {
        const report = await dns.health();
        dns.logger.scope('healthz').debug({ healthy: report.healthy }, 'health checked');
        return report;
      }),
    )
    .add(routes.configDump(HELP.configDump, () => dns.configDump()))
    .add({
      ...routes.latestError(HELP.latestError),
      // errors of the DNS engine (upstream failures, bad resolv.conf) count as much as admin handler errors
      handler: (req) => {
        const fromAdmin = req.server.latestError;
        const fromDns = dns.latestError;
        if (fromAdmin && (!fromDns || fromAdmin.time >= fromDns.time)) return fromAdmin;
        return fromDns ?? {};
      },
    })
    .add(routes.help(HELP.help))
    .add(routes.version(HELP.version, { version: VERSION, component: 'mesh-dns', node: process.version }))
    .add(routes.status(HELP.status, () => `<${dns.status}>`))
    .add(routes.logging(HELP.logging, dns.logger))
    .add({
      method: 'GET',
      path: '/metrics',
      help: 'Prometheus metrics',
      hidden: true,
      handler: async () => adminResponse(200, await dns.metrics.text(), { 'content-type': dns.metrics.registry.contentType }),
    });
  if (opts.handle) await admin.listenOn(opts.handle);
  else await admin.listen();
  return admin;
}
