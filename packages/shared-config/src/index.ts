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
  DEFAULT_IPTABLES_STATE_FILE,
} from './defaults';
export * from './schemas/index';
export { loadConfigFile, parseConfig, parseConfigText } from './loader';
export type { LoadConfigOptions, ParseConfigOptions } from './loader';
export { AGENT_ENV_BINDINGS, applyEnvOverrides, convertEnvValue, envBindingsFor, registerEnvBindings } from './env-overrides';
export type { AppliedEnvOverride, EnvBinding, EnvValueKind } from './env-overrides';
export { formatConfigPath } from './config-path';
export { parseTrafficRules, parseTrafficRulesText } from './traffic-rules-file';
export { CONFIG_SCHEMAS, toJsonSchema, jsonSchemaText } from './json-schemas';
export { HANDLE_NAMES, isChildToParent, isParentToChild } from './control-protocol';
export type { ChildToParent, HandleName, ParentToChild } from './control-protocol';
export { specFilePath } from './resolve';
export { HOLD_LIMIT, HOLD_MS, adoptedBy, holdConnections, holdDatagrams } from './socket-handover';
export type { HeldConnections, HeldDatagram, HeldDatagrams, HoldOptions } from './socket-handover';
export { processRunning } from './process-state';
export { ACCESS_LOG_OPERATORS, AccessLogFormatError, parseAccessLogFormat } from './access-log-format';
export type { AccessLogOperator, AccessLogToken } from './access-log-format';
export { matchesIstioPattern, parseSpiffeId, spiffeId, spiffeIdOf, uriSans } from './spiffe';
export type { SpiffeIdParts } from './spiffe';
