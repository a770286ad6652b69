import type { AgentConfig } from '@mesh-agent/shared-config';
import { EtcdRegistry } from './etcd-registry';
import { FileRegistry } from './file-registry';
import { VipRange } from '../vip-allocation';
import type { RegistryBackend } from './types';

export { FileRegistry } from './file-registry';
export { EtcdRegistry, instanceKey, parseRuleValue, trafficRuleKey } from './etcd-registry';
export type { RegistryBackend, LocalRegistration } from './types';
export { mergeInstances } from './types';

/** `mesh` given with perServiceVips on: the backend allocates per-service VIPs from mesh.vipCidr. */
export function createRegistry(settings: AgentConfig['registry'], onError: (err: Error) => void, mesh?: AgentConfig['mesh']): RegistryBackend {
  const vips = mesh?.perServiceVips ? { vipCidr: mesh.vipCidr, meshVip: mesh.vip } : undefined;
  if (vips) new VipRange(vips); // an unusable range stops the start here, with its error
  if (settings.backend === 'etcd') return new EtcdRegistry({ ...settings.etcd, onError, vips });
  return new FileRegistry({ file: settings.file.path, onError, vips });
}
