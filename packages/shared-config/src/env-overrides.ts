import type { ZodType } from 'zod';

/** How an environment variable's text becomes a config value. */
export type EnvValueKind = 'string' | 'int' | 'bool' | 'list';

/** One documented environment variable that overrides one config field. */
export interface EnvBinding {
  name: string;
  /** field path, e.g. ['node', 'ip'] */
  path: string[];
  kind: EnvValueKind;
  description: string;
}

/** What an override did, so an invalid value can be blamed on its variable rather than on the file. */
export interface AppliedEnvOverride {
  binding: EnvBinding;
  raw: string;
}

const bindingsBySchema = new WeakMap<ZodType, readonly EnvBinding[]>();

/** Declares the environment variables that override fields of `schema` (used by the loader). */
export function registerEnvBindings(schema: ZodType, bindings: readonly EnvBinding[]): void {
  bindingsBySchema.set(schema, bindings);
}

export function envBindingsFor(schema: ZodType): readonly EnvBinding[] {
  return bindingsBySchema.get(schema) ?? [];
}

const TRUE_WORDS = new Set(['1', 'true', 'yes', 'on']);
const FALSE_WORDS = new Set(['0', 'false', 'no', 'off']);

/**
 * Turns the variable's text into a value. A text that does not convert is passed through as a string,
 * so validation reports it with the field's own expectation (e.g. "expected a port number").
 */
export function convertEnvValue(raw: string, kind: EnvValueKind): unknown {
  const text = raw.trim();
  switch (kind) {
    case 'int':
      return /^-?\d+$/.test(text) ? Number(text) : text;
    case 'bool':
      if (TRUE_WORDS.has(text.toLowerCase())) return true;
      if (FALSE_WORDS.has(text.toLowerCase())) return false;
      return text;
    case 'list':
      return text.split(/[\s,]+/).filter((part) => part !== '');
    default:
      return text;
  }
}

/**
 * Writes every set variable of `bindings` into `value` (a parsed config document), creating sections
 * as needed. An empty variable counts as unset. Returns what was applied.
 */
export function applyEnvOverrides(value: unknown, bindings: readonly EnvBinding[], env: NodeJS.ProcessEnv): { value: unknown; applied: AppliedEnvOverride[] } {
  const applied: AppliedEnvOverride[] = [];
  let root = value;
  for (const binding of bindings) {
    const raw = env[binding.name];
    if (raw === undefined || raw.trim() === '') continue;
    if (!isPlainObject(root)) {
      if (root !== undefined && root !== null) continue; // the document itself is wrong; validation says so
      root = {};
    }
    let target = root as Record<string, unknown>;
    for (const key of binding.path.slice(0, -1)) {
      if (!isPlainObject(target[key])) target[key] = {};
      target = target[key] as Record<string, unknown>;
    }
    target[binding.path[binding.path.length - 1]] = convertEnvValue(raw, binding.kind);
    applied.push({ binding, raw });
  }
  return { value: root, applied };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The agent's documented variables (README "Environment variables"). */
export const AGENT_ENV_BINDINGS: readonly EnvBinding[] = [
  { name: 'MESH_AGENT_NODE_ID', path: ['node', 'id'], kind: 'string', description: 'instance id in the registry' },
  { name: 'MESH_AGENT_SERVICE_NAME', path: ['node', 'serviceName'], kind: 'string', description: 'service name of this node' },
  { name: 'MESH_AGENT_NAMESPACE', path: ['node', 'namespace'], kind: 'string', description: 'namespace of this node' },
  { name: 'MESH_AGENT_NODE_IP', path: ['node', 'ip'], kind: 'string', description: "the node's own IP (else detected)" },
  { name: 'MESH_AGENT_APP_CONFIG_DIR', path: ['app', 'configDir'], kind: 'string', description: 'directory holding spec.yaml' },
  { name: 'MESH_AGENT_SPEC_FILE', path: ['app', 'specFile'], kind: 'string', description: 'explicit spec.yaml path' },
  { name: 'MESH_AGENT_ADMIN_ADDRESS', path: ['adminAddress'], kind: 'string', description: 'address admin endpoints bind to' },
  { name: 'MESH_AGENT_ADMIN_PORT', path: ['ports', 'agentAdmin'], kind: 'int', description: 'agent admin port' },
  { name: 'MESH_AGENT_DNS_ADMIN_PORT', path: ['ports', 'dnsAdmin'], kind: 'int', description: 'mesh-dns admin port' },
  { name: 'MESH_AGENT_PROXY_ADMIN_PORT', path: ['ports', 'proxyAdmin'], kind: 'int', description: 'proxy admin port' },
  { name: 'MESH_AGENT_PROXY_PORT', path: ['ports', 'proxyListener'], kind: 'int', description: 'proxy listener port' },
  { name: 'MESH_AGENT_DNS_PORT', path: ['ports', 'dns'], kind: 'int', description: 'mesh-dns port' },
  { name: 'MESH_AGENT_PROXY_UID', path: ['proxy', 'uid'], kind: 'int', description: 'UID the proxy runs as' },
  { name: 'MESH_AGENT_PROXY_GID', path: ['proxy', 'gid'], kind: 'int', description: 'GID the proxy runs as' },
  { name: 'MESH_AGENT_DNS_UID', path: ['meshDns', 'uid'], kind: 'int', description: 'UID mesh-dns runs as' },
  { name: 'MESH_AGENT_DNS_GID', path: ['meshDns', 'gid'], kind: 'int', description: 'GID mesh-dns runs as' },
  { name: 'MESH_AGENT_MESH_VIP', path: ['mesh', 'vip'], kind: 'string', description: 'the mesh VIP' },
  { name: 'MESH_AGENT_VIP_CIDR', path: ['mesh', 'vipCidr'], kind: 'string', description: 'per-service VIP range' },
  { name: 'MESH_AGENT_DNS_ENABLED', path: ['dns', 'enabled'], kind: 'bool', description: 'run mesh-dns' },
  { name: 'MESH_AGENT_DNS_UPSTREAMS', path: ['dns', 'upstreams'], kind: 'list', description: 'upstream DNS servers, comma-separated' },
  { name: 'MESH_AGENT_RESOLV_CONF', path: ['dns', 'resolvConf'], kind: 'string', description: 'resolv.conf to take upstreams from' },
  { name: 'MESH_AGENT_REGISTRY_BACKEND', path: ['registry', 'backend'], kind: 'string', description: '`file` or `etcd`' },
  { name: 'MESH_AGENT_REGISTRY_FILE', path: ['registry', 'file', 'path'], kind: 'string', description: 'file registry path' },
  { name: 'MESH_AGENT_ETCD_ENDPOINTS', path: ['registry', 'etcd', 'endpoints'], kind: 'list', description: 'etcd URLs, comma-separated' },
  { name: 'MESH_AGENT_ETCD_PREFIX', path: ['registry', 'etcd', 'prefix'], kind: 'string', description: 'etcd key prefix' },
  { name: 'MESH_AGENT_IPTABLES', path: ['iptables', 'enabled'], kind: 'bool', description: 'install iptables rules' },
  { name: 'MESH_AGENT_CAPTURE_DNS', path: ['iptables', 'captureDns'], kind: 'bool', description: 'capture port 53' },
  { name: 'MESH_AGENT_IPTABLES_STATE', path: ['iptables', 'stateFile'], kind: 'string', description: 'applied-rules state file' },
  { name: 'MESH_AGENT_LOG_LEVEL', path: ['log', 'level'], kind: 'string', description: 'default log level' },
  { name: 'MESH_AGENT_RUN_DIR', path: ['paths', 'runDir'], kind: 'string', description: 'runtime directory' },
];
