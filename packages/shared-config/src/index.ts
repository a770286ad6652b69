export { EXIT_CODES, MeshError, ConfigError, formatConfigIssue, isMeshError } from './errors';
export type { ConfigIssue, MeshErrorOptions } from './errors';
export { runMain, reportError } from './cli-runner';
export {
  DEFAULT_PORTS,
  DEFAULT_MESH_VIP,
  DEFAULT_VIP_CIDR,
  DEFAULT_PROXY_UID,
  DEFAULT_PROXY_GID,
  DEFAULT_DNS_TTL,
  ADMIN_HOST,
} from './defaults';
