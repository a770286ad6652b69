import type { DnsConfig } from './schemas/dns-config';
import type { ProxyBootstrap } from './schemas/proxy-bootstrap';
import type { RegistrySnapshot } from './schemas/registry-snapshot';

/**
 * Messages between the agent and the children it forks (proxy, mesh-dns), over the IPC channel of
 * `child_process.fork`. A `handle` message travels with a listening socket as `sendHandle`.
 */
export const HANDLE_NAMES = ['listener', 'admin', 'dns-udp', 'dns-tcp'] as const;
export type HandleName = (typeof HANDLE_NAMES)[number];

export type ParentToChild =
  | { type: 'handle'; name: HandleName }
  | { type: 'start'; epoch: number }
  | { type: 'config'; config: ProxyBootstrap | DnsConfig }
  | { type: 'registry'; snapshot: RegistrySnapshot }
  | { type: 'drain'; drainTimeMs: number };

export type ChildToParent =
  | { type: 'ready'; epoch: number; pid: number }
  | { type: 'error'; code: string; message: string }
  | { type: 'config-applied'; version: string };

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const isCount = (value: unknown): value is number => typeof value === 'number' && Number.isInteger(value) && value >= 0;

/** True when `message` is a well-formed parent-to-child message (shape only; configs are validated by their schemas). */
export function isParentToChild(message: unknown): message is ParentToChild {
  if (!isRecord(message)) return false;
  switch (message.type) {
    case 'handle':
      return (HANDLE_NAMES as readonly unknown[]).includes(message.name);
    case 'start':
      return isCount(message.epoch);
    case 'config':
      return isRecord(message.config);
    case 'registry':
      return isRecord(message.snapshot);
    case 'drain':
      return isCount(message.drainTimeMs);
    default:
      return false;
  }
}

/** True when `message` is a well-formed child-to-parent message. */
export function isChildToParent(message: unknown): message is ChildToParent {
  if (!isRecord(message)) return false;
  switch (message.type) {
    case 'ready':
      return isCount(message.epoch) && isCount(message.pid);
    case 'error':
      return typeof message.code === 'string' && typeof message.message === 'string';
    case 'config-applied':
      return typeof message.version === 'string';
    default:
      return false;
  }
}
