export { createAdminServer } from './admin-server';
export { routes } from './routes';
export type { HealthReport, VersionInfo, RouteMount } from './routes';
export { createLogger, isLogLevel, LOG_LEVELS } from './logger';
export type { LogLevel, LoggerOptions, MeshLogger } from './logger';
export { adminResponse, isAdminResponse, AdminHttpError, isAdminHttpError, renderJson, TEXT_TYPE, JSON_TYPE } from './response';
export { renderHelp, HELP_HEADER } from './help-text';
export { isLoopbackHost } from './loopback';
export { HTTP_METHODS } from './types';
export type {
  AdminAddress,
  AdminRequest,
  AdminResponse,
  AdminResult,
  AdminRoute,
  AdminServer,
  AdminServerOptions,
  HelpStyle,
  HttpMethod,
  LatestError,
} from './types';
