// Issue 16: the agent's proxy.tracing reaches the proxy's bootstrap as it was written (propagation needs
// no setting; export only with otlp), and a bad one is refused naming the field.
import { describe, expect, it } from 'vitest';
import { agentConfigSchema, ConfigError, globalMeshConfigSchema, parseConfig, proxyBootstrapSchema, servicesSpecSchema } from '@mesh-agent/shared-config';
import { buildProxyBootstrap } from '../src/bootstrap';
import type { MeshModel } from '../src/mesh-model';

function model(agent: unknown): MeshModel {
  return {
    agent: parseConfig(agentConfigSchema, agent),
    spec: parseConfig(servicesSpecSchema, { spec: { services: [{ name: 'user', ports: [{ targetPort: 8089 }] }] } }),
    global: parseConfig(globalMeshConfigSchema, {}),
    registry: { services: [] },
    ports: { agentAdmin: 15020, dnsAdmin: 15021, proxyAdmin: 15000, proxyListener: 15001, dns: 55354 },
    nodeIp: '198.18.0.2',
    nodeId: 'user~198.18.0.2',
    appHost: '127.0.0.1',
  };
}

describe('proxy.tracing in the bootstrap', () => {
  it('is copied with its defaults; the span service name defaults to the local service (node.cluster)', () => {
    const m = model({ node: { ip: '198.18.0.2' }, proxy: { tracing: { samplingPercent: 12.5, otlp: { endpoint: 'http://198.18.0.9:4318/v1/traces', headers: { 'x-tenant': 'a' } } } } });
    const bootstrap = parseConfig(proxyBootstrapSchema, buildProxyBootstrap(m, '1'));
    expect(bootstrap.tracing).toEqual({
      samplingPercent: 12.5, maxQueueSize: 2048, maxExportBatchSize: 512, scheduledDelayMs: 1000,
      otlp: { endpoint: 'http://198.18.0.9:4318/v1/traces', timeoutMs: 10000, headers: { 'x-tenant': 'a' } },
    });
    expect(bootstrap.node.cluster).toBe('user');
  });

  it('is absent when not configured (the proxy still propagates)', () => {
    const bootstrap = parseConfig(proxyBootstrapSchema, buildProxyBootstrap(model({ node: { ip: '198.18.0.2' } }), '1'));
    expect(bootstrap.tracing).toBeUndefined();
  });

  it('refuses a bad endpoint, sampling share and batch size by field', () => {
    const issues = (agent: unknown) => {
      try { parseConfig(agentConfigSchema, agent, { source: 'agent.yaml' }); } catch (err) { if (err instanceof ConfigError) return err.message; throw err; }
      return '';
    };
    expect(issues({ proxy: { tracing: { otlp: { endpoint: 'collector:4318' } } } })).toMatch(/proxy\.tracing\.otlp\.endpoint.*http\(s\) URL/s);
    expect(issues({ proxy: { tracing: { samplingPercent: 150 } } })).toMatch(/proxy\.tracing\.samplingPercent.*0\.\.100/s);
    expect(issues({ proxy: { tracing: { maxQueueSize: 10, maxExportBatchSize: 20 } } })).toMatch(/proxy\.tracing\.maxExportBatchSize.*larger than maxQueueSize/s);
  });
});
