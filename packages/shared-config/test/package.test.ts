import { describe, expect, it } from 'vitest';
import * as api from '../src/index';

describe('@mesh-agent/shared-config', () => {
  it('exports the API of docs/package-apis.md', () => {
    const contract = [
      'MeshError',
      'ConfigError',
      'EXIT_CODES',
      'isMeshError',
      'runMain',
      'DEFAULT_PORTS',
      'DEFAULT_MESH_VIP',
      'DEFAULT_VIP_CIDR',
      'DEFAULT_PROXY_UID',
      'DEFAULT_PROXY_GID',
      'DEFAULT_DNS_TTL',
      'ADMIN_HOST',
      'agentConfigSchema',
      'servicesSpecSchema',
      'globalMeshConfigSchema',
      'proxyBootstrapSchema',
      'dnsConfigSchema',
      'registrySnapshotSchema',
      'loadConfigFile',
      'parseConfig',
      'parseConfigText',
      'isParentToChild',
      'isChildToParent',
    ];
    for (const name of contract) expect(api, name).toHaveProperty(name);
  });

  it('keeps the source document defaults', () => {
    expect(api.DEFAULT_PORTS).toEqual({ agentAdmin: 15020, dnsAdmin: 15021, proxyAdmin: 15000, proxyListener: 15001, dns: 55354 });
    expect([api.DEFAULT_MESH_VIP, api.DEFAULT_PROXY_UID, api.DEFAULT_PROXY_GID, api.DEFAULT_DNS_TTL, api.ADMIN_HOST]).toEqual(['240.240.0.1', 1000, 1000, 30, '127.0.0.1']);
    expect(api.EXIT_CODES).toEqual({ ok: 0, failure: 1, usage: 2, permission: 3, verifyMismatch: 4, unavailable: 5 });
  });
});
