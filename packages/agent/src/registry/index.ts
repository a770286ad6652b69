import type { AgentConfig } from '@mesh-agent/shared-config';
import { EtcdRegistry } from './etcd-registry';
import { FileRegistry } from './file-registry';
import type { RegistryBackend } from './types';

export { FileRegistry } from './file-registry';
export { EtcdRegistry, instanceKey } from './etcd-registry';
export type { RegistryBackend, LocalRegistration } from './types';
export { mergeInstances } from './types';

export function createRegistry(settings: AgentConfig['registry'], onError: (err: Error) => void): RegistryBackend {
  if (settings.backend === 'etcd') return new EtcdRegistry({ ...settings.etcd, onError });
  return new FileRegistry({ file: settings.file.path, onError });
}
