import { isMeshError } from '@mesh-agent/shared-config';
import { isLogLevel, LOG_LEVELS, type LogLevel, type MeshLogger } from './logger';
import { AdminHttpError, adminResponse } from './response';
import type { AdminRequest, AdminResult, AdminRoute, HttpMethod } from './types';

/** What `/health` reports: 200 when `healthy`, 503 otherwise; the whole report is the JSON body. */
export interface HealthReport {
  healthy: boolean;
  [detail: string]: unknown;
}

/** What `/version` reports (JSON). */
export interface VersionInfo {
  version: string;
  [detail: string]: unknown;
}

/** Where a ready-made route is mounted, when a component needs another path or method. */
export interface RouteMount {
  path?: string;
  method?: HttpMethod;
}

type Provider<T> = (req: AdminRequest) => T | Promise<T>;

/**
 * Ready-made routes. Each takes the component's own help text, so every component lists them in
 * its own /help order with its own words.
 */
export const routes = {
  /** GET /help: the help text generated from the server's routes. */
  help(help: string, mount: RouteMount = {}): AdminRoute {
    return { method: mount.method ?? 'GET', path: mount.path ?? '/help', help, handler: (req) => req.server.helpText() };
  },

  /** GET /health: 200 and the report when healthy, 503 and the report otherwise. */
  health(help: string, provider: Provider<HealthReport>, mount: RouteMount = {}): AdminRoute {
    return {
      method: mount.method ?? 'GET',
      path: mount.path ?? '/health',
      help,
      handler: async (req) => {
        const report = await provider(req);
        return adminResponse(report.healthy ? 200 : 503, report);
      },
    };
  },

  /** GET /version: the version info as JSON. */
  version(help: string, info: VersionInfo | Provider<VersionInfo>, mount: RouteMount = {}): AdminRoute {
    return {
      method: mount.method ?? 'GET',
      path: mount.path ?? '/version',
      help,
      handler: async (req) => (typeof info === 'function' ? info(req) : info),
    };
  },

  /** GET /status: one line of text, e.g. pilot-agent's `<FLOW_TAKEOVER>`. */
  status(help: string, provider: Provider<string>, mount: RouteMount = {}): AdminRoute {
    return {
      method: mount.method ?? 'GET',
      path: mount.path ?? '/status',
      help,
      handler: async (req) => {
        const text = await provider(req);
        return text.endsWith('\n') ? text : `${text}\n`;
      },
    };
  },

  /** GET /latest_error: the last error a handler threw or the component recorded, as JSON; `{}` when none. */
  latestError(help: string, mount: RouteMount = {}): AdminRoute {
    return { method: mount.method ?? 'GET', path: mount.path ?? '/latest_error', help, handler: (req) => req.server.latestError ?? {} };
  },

  /**
   * GET /config_dump: what the provider returns (an object is sent as JSON, a string as text).
   * Mount it on `/config_dump/{component}` and read `req.params.component` for pilot-agent's form;
   * throw `new AdminHttpError(404, ...)` for an unknown component.
   */
  configDump(help: string, provider: Provider<unknown>, mount: RouteMount = {}): AdminRoute {
    return {
      method: mount.method ?? 'GET',
      path: mount.path ?? '/config_dump',
      help,
      handler: async (req) => {
        const dump = await provider(req);
        return (dump === undefined ? null : dump) as AdminResult;
      },
    };
  },

  /**
   * PUT /logging/{scope}/{level}: changes one scope's level at once and answers with every
   * scope's level (JSON); 400 naming the valid scopes or levels otherwise. A GET is refused.
   */
  logging(help: string, logger: MeshLogger, mount: RouteMount = {}): AdminRoute {
    return {
      method: mount.method ?? 'PUT',
      path: mount.path ?? '/logging/{scope}/{level}',
      help,
      mutatesState: true,
      handler: (req) => {
        const { scope, level } = req.params;
        if (scope === undefined || level === undefined) {
          throw new AdminHttpError(500, 'the logging route must be mounted on a path with {scope} and {level}');
        }
        const scopes = logger.scopes;
        if (!scopes.includes(scope)) {
          throw new AdminHttpError(400, `unknown scope "${scope}": valid scopes are ${scopes.join(', ')}`, { code: 'MESH_LOG_UNKNOWN_SCOPE' });
        }
        if (!isLogLevel(level)) {
          throw new AdminHttpError(400, `unknown level "${level}": valid levels are ${LOG_LEVELS.join(', ')}`, { code: 'MESH_LOG_UNKNOWN_LEVEL' });
        }
        try {
          logger.setLevel(scope, level as LogLevel);
        } catch (err) {
          if (isMeshError(err)) throw new AdminHttpError(400, err.message, { code: err.code });
          throw err;
        }
        return { scope, level, levels: logger.levels() };
      },
    };
  },
};

