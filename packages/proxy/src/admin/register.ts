import { adminResponse, AdminHttpError, type AdminServer, type LogLevel } from '@mesh-agent/admin-kit';
import type { MeshProxy } from '../proxy';
import { PROXY_VERSION } from '../proxy';
import { renderClustersJson, renderClustersText } from './clusters-render';
import { renderCerts } from './certs';
import { renderConfigDump } from './config-dump';
import { CpuProfiler } from './cpu-profiler';
import { renderPrometheus, renderStatsJson, renderStatsText, type StatsQuery } from './stats-render';

/** The hand-over protocol's compatibility string (socket hand-over over the agent's IPC channel). */
export const HOT_RESTART_VERSION = 'mesh-proxy.1';

const OK = 'OK\n';

/** Envoy's level names and admin-kit's. */
const TO_MESH: Record<string, LogLevel> = { trace: 'debug', debug: 'debug', info: 'info', warning: 'warn', warn: 'warn', error: 'error', critical: 'error', off: 'none' };
const TO_ENVOY: Record<LogLevel, string> = { debug: 'debug', info: 'info', warn: 'warning', error: 'error', none: 'off' };

function regexParam(value: string | null, name: string): RegExp | undefined {
  if (value === null || value === '') return undefined;
  try {
    return new RegExp(value);
  } catch (err) {
    throw new AdminHttpError(400, `invalid regex in ${name}: ${(err as Error).message}`);
  }
}

function statsQuery(q: URLSearchParams): StatsQuery {
  return { filter: regexParam(q.get('filter'), 'filter'), usedOnly: q.has('usedonly') };
}

function homePage(admin: AdminServer): string {
  const rows = [...new Map(admin.routes.filter((r) => !r.hidden).map((r) => [r.path, r])).values()]
    .sort((a, b) => (a.path < b.path ? -1 : 1))
    .map((r) => r.method === 'GET'
      ? `<tr><td><a href="${r.path === '/' ? '/' : `.${r.path}`}">${r.path}</a></td><td>${r.help}</td></tr>`
      : `<tr><td><form action=".${r.path}" method="post"><button type="submit">${r.path}</button></form></td><td>${r.help}</td></tr>`);
  return `<!DOCTYPE html>\n<html><head><title>Envoy Admin</title></head><body>\n<h1>Envoy Admin</h1>\n<table>\n<tr><th>Command</th><th>Description</th></tr>\n${rows.join('\n')}\n</table>\n</body></html>\n`;
}

/** Every endpoint of the source document's `curl 127.0.0.1:15000/help`, with its exact help line. */
export function registerAdminRoutes(admin: AdminServer, proxy: MeshProxy): void {
  const profiler = new CpuProfiler();
  const logger = proxy.logger;

  admin.add({ method: 'GET', path: '/', help: 'Admin home page', handler: () => adminResponse(200, homePage(admin), { 'content-type': 'text/html; charset=UTF-8' }) });
  admin.add({ method: 'GET', path: '/certs', help: 'print certs on machine', handler: () => renderCerts(proxy.secrets.all()) });
  admin.add({
    method: 'GET', path: '/clusters', help: 'upstream cluster status',
    handler: (req) => (req.query.get('format') === 'json' ? renderClustersJson(proxy.adminClusters) : renderClustersText(proxy.adminClusters, proxy.tcpRoutes)),
  });
  admin.add({
    method: 'GET', path: '/config_dump', help: 'dump current Envoy configs (experimental)',
    handler: (req) => {
      const r = renderConfigDump(
        { config: proxy.config, clusters: proxy.clusterMap, version: proxy.configVersion, lastUpdated: proxy.lastUpdated, listener: proxy.listener, secrets: proxy.secrets.all() },
        { resource: req.query.get('resource') ?? undefined, nameRegex: regexParam(req.query.get('name_regex'), 'name_regex') },
      );
      return adminResponse(r.status, r.body);
    },
  });
  admin.add({
    method: 'POST', path: '/cpuprofiler', help: 'enable/disable the CPU profiler', mutatesState: true,
    handler: async (req) => {
      const enable = req.query.get('enable');
      if (enable === 'y') {
        await profiler.start();
        return 'Starting CPU profiler\n';
      }
      if (enable === 'n') {
        const file = await profiler.stop();
        if (!file) throw new AdminHttpError(400, 'the CPU profiler is not running; start it with POST /cpuprofiler?enable=y');
        return `CPU profile written to ${file}\n`;
      }
      throw new AdminHttpError(400, '?enable=y|n required');
    },
  });
  admin.add({
    method: 'POST', path: '/healthcheck/fail', help: 'cause the server to fail health checks', mutatesState: true,
    handler: () => { proxy.healthCheckFailed = true; return OK; },
  });
  admin.add({
    method: 'POST', path: '/healthcheck/ok', help: 'cause the server to pass health checks', mutatesState: true,
    handler: () => { proxy.healthCheckFailed = false; return OK; },
  });
  admin.add({ method: 'GET', path: '/help', help: 'print out list of admin commands', handler: () => admin.helpText() });
  admin.add({ method: 'GET', path: '/hot_restart_version', help: 'print the hot restart compatibility version', handler: () => `${HOT_RESTART_VERSION}\n` });
  admin.add({
    method: 'GET', path: '/listeners', help: 'print listener addresses',
    handler: (req) => {
      const name = proxy.config.listener?.name ?? 'virtual';
      const l = proxy.listener ?? { address: proxy.config.listener?.address ?? '0.0.0.0', port: proxy.config.listener?.port ?? 15001 };
      if (req.query.get('format') === 'json') return { listener_statuses: [{ name, local_address: { socket_address: { address: l.address, port_value: l.port } } }] };
      return `${name}::${l.address}:${l.port}\n`;
    },
  });
  const loggingText = () => `active loggers:\n${Object.entries(logger.levels()).sort().map(([k, v]) => `  ${k}: ${TO_ENVOY[v]}`).join('\n')}\n`;
  admin.add({ method: 'GET', path: '/logging', help: 'query/change logging levels', handler: () => loggingText() });
  admin.add({
    method: 'POST', path: '/logging', help: 'query/change logging levels', mutatesState: true,
    handler: (req) => {
      const changes: [string, LogLevel][] = [];
      const level = (v: string): LogLevel => {
        const l = TO_MESH[v.toLowerCase()];
        if (!l) throw new AdminHttpError(400, `invalid level "${v}"; valid levels: ${Object.keys(TO_MESH).join(', ')}`);
        return l;
      };
      for (const [k, v] of req.query) {
        if (k === 'level') for (const s of logger.scopes) changes.push([s, level(v)]);
        else if (k === 'paths') {
          for (const pair of v.split(',')) {
            const [name, lv] = pair.split(':');
            changes.push([name ?? '', level(lv ?? '')]);
          }
        } else changes.push([k, level(v)]);
      }
      for (const [s] of changes) if (!logger.scopes.includes(s)) throw new AdminHttpError(400, `unknown logger "${s}"; loggers: ${logger.scopes.join(', ')}`);
      for (const [s, l] of changes) logger.setLevel(s, l);
      return loggingText();
    },
  });
  admin.add({
    method: 'POST', path: '/quitquitquit', help: 'exit the server', mutatesState: true,
    handler: () => {
      setImmediate(() => {
        void proxy.drain().then(() => proxy.close()).then(() => proxy.opts.onQuit?.());
      });
      return OK;
    },
  });
  admin.add({ method: 'POST', path: '/reset_counters', help: 'reset all counters to zero', mutatesState: true, handler: () => { proxy.stats.resetCounters(); return OK; } });
  admin.add({
    method: 'GET', path: '/runtime', help: 'print runtime values',
    handler: () => {
      const entries: Record<string, object> = {};
      for (const [k, v] of [...proxy.runtimeValues].sort()) entries[k] = { layer_values: [v], final_value: v };
      return { layers: ['admin'], entries };
    },
  });
  admin.add({
    method: 'POST', path: '/runtime_modify', help: 'modify runtime values', mutatesState: true,
    handler: async (req) => {
      const pairs = [...req.query];
      const body = await req.body();
      if (body) for (const [k, v] of new URLSearchParams(body)) pairs.push([k, v]);
      if (pairs.length === 0) throw new AdminHttpError(400, 'usage: POST /runtime_modify?key1=value1&key2=value2 (an empty value removes the key)');
      for (const [k, v] of pairs) {
        if (v === '') proxy.runtimeValues.delete(k);
        else proxy.runtimeValues.set(k, v);
      }
      return OK;
    },
  });
  admin.add({
    method: 'GET', path: '/server_info', help: 'print server version/status information',
    handler: () => {
      const up = `${Math.floor((Date.now() - proxy.startedAt) / 1000)}s`;
      return {
        version: `mesh-proxy/${PROXY_VERSION}/Node.js ${process.version}/RELEASE`,
        state: proxy.state,
        hot_restart_version: HOT_RESTART_VERSION,
        command_line_options: {
          restart_epoch: proxy.restartEpoch,
          drain_time: `${Math.round((proxy.config.drainTimeMs ?? 5000) / 1000)}s`,
          parent_shutdown_time: `${Math.round(((proxy.config.drainTimeMs ?? 5000) * 1.5) / 1000)}s`,
          concurrency: 1,
          mode: 'Serve',
          service_cluster: proxy.config.node?.cluster ?? '',
          service_node: proxy.config.node?.id ?? '',
        },
        node: { id: proxy.config.node?.id ?? '', cluster: proxy.config.node?.cluster ?? '', metadata: proxy.config.node?.metadata ?? {} },
        uptime_current_epoch: up,
        uptime_all_epochs: up,
      };
    },
  });
  admin.add({
    method: 'GET', path: '/stats', help: 'print server stats',
    handler: async (req) => {
      proxy.refreshServerStats();
      const q = statsQuery(req.query);
      const format = req.query.get('format');
      if (format === 'json') return renderStatsJson(proxy.stats.all(), q);
      if (format === 'prometheus') return adminResponse(200, await renderPrometheus(proxy.stats.all(), q), { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
      return renderStatsText(proxy.stats.all(), q);
    },
  });
  admin.add({
    method: 'GET', path: '/stats/prometheus', help: 'print server stats in prometheus format',
    handler: async (req) => {
      proxy.refreshServerStats();
      return adminResponse(200, await renderPrometheus(proxy.stats.all(), statsQuery(req.query)), { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
    },
  });
  // Not in the source document's /help: kept hidden so /help matches it line for line; Envoy's readiness probe.
  admin.add({
    method: 'GET', path: '/ready', help: 'print server state, return 200 if LIVE, otherwise return 503', hidden: true,
    handler: () => adminResponse(proxy.state === 'LIVE' ? 200 : 503, `${proxy.state}\n`),
  });
}
