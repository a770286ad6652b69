// What the `mtls` section of the agent config means for the generated configs: per local service
// its mode, its certificate files (the proxy's secret) and its allow rules (the proxy's RBAC).
import path from 'node:path';
import type { AgentConfig, MtlsMode, RbacPolicy, TlsSecret } from '@mesh-agent/shared-config';

export type MtlsSource = 'ca' | 'files';

/** Istio's file names of a workload's certificate directory. */
export const WORKLOAD_FILES = { certChain: 'cert-chain.pem', privateKey: 'key.pem', trustBundle: 'root-cert.pem' } as const;

/** Which certificate source is configured; undefined = mTLS off for the node. */
export function mtlsSource(agent: AgentConfig): MtlsSource | undefined {
  if (agent.mtls?.ca) return 'ca';
  if (agent.mtls?.files) return 'files';
  return undefined;
}

/** The mode a local service runs in: `disable` without a source, else its own, else mtls.mode, else permissive. */
export function mtlsModeOf(agent: AgentConfig, service: string): MtlsMode {
  if (!mtlsSource(agent)) return 'disable';
  return agent.mtls?.services[service]?.mode ?? agent.mtls?.mode ?? 'permissive';
}

/** Where the built-in issuer writes the local services' certificates. */
export function certDirOf(agent: AgentConfig): string {
  return agent.mtls?.certDir ?? path.join(agent.paths.runDir, 'certs');
}

/** The proxy's secret of a local service (named after it): the issued files, or the operator's files. */
export function secretOf(agent: AgentConfig, service: string): TlsSecret {
  const files = agent.mtls?.files;
  if (files) return { name: service, certChain: files.certChain, privateKey: files.privateKey, trustBundle: files.trustBundle };
  const dir = path.join(certDirOf(agent), service);
  return {
    name: service,
    certChain: path.join(dir, WORKLOAD_FILES.certChain),
    privateKey: path.join(dir, WORKLOAD_FILES.privateKey),
    trustBundle: path.join(dir, WORKLOAD_FILES.trustBundle),
  };
}

/** `services.<name>.allow` as the proxy's RBAC policies; undefined (no RBAC, everyone allowed) when absent. */
export function rbacPoliciesOf(agent: AgentConfig, service: string): RbacPolicy[] | undefined {
  const allow = agent.mtls?.services[service]?.allow;
  if (!allow || !mtlsSource(agent)) return undefined;
  return allow.map((rule, index) => ({
    name: `${service}-allow-${index}`,
    ...(rule.principals ? { principals: rule.principals } : {}),
    ...(rule.methods ? { methods: rule.methods } : {}),
    ...(rule.paths ? { paths: rule.paths } : {}),
  }));
}

/** Istio's SNI of an outbound cluster: outbound_.PORT_._.SERVICE.NAMESPACE.svc.cluster.local. */
export function outboundSni(port: number, service: { name: string; namespace: string }): string {
  return `outbound_.${port}_._.${service.name}.${service.namespace}.svc.cluster.local`;
}
