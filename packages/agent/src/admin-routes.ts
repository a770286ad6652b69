// pilot-agent's admin interface on 127.0.0.1:15020: every route of the source document's /help,
// in its order, with its exact help lines; plus hidden routes: the diagnostics' (GET / home page)
// and Istio's GET /healthz/ready and POST /quitquitquit, which operators' scripts already call.
import path from 'node:path';
import { AdminHttpError, adminResponse, createAdminServer, routes, type AdminServer, type HealthReport } from '@mesh-agent/admin-kit';
import { ConfigError, isMeshError } from '@mesh-agent/shared-config';
import type { MeshAgent } from './agent';
import { agentVersion } from './children';
import { diagnosticsRoutes } from './diagnostics/index';
import { uncapturedPorts } from './port-protocols';
import { rulesInForce } from './traffic-rules';
import { parseUpdateBody, UPDATE_HELP } from './update';
import type { ComponentName } from './supervisor';

/** The source document's pilot-agent /help lines, in its order. */
export const AGENT_HELP = {
  health: 'print out the health info for data-plane',
  configDump: 'print out the configuration of the component, component can be pilot-agent/envoy/mesh-dns',
  help: 'print out list of admin commands',
  configAgent: 'print out the pilot-agent configuration',
  configServices: 'print out the services info',
  configGlobal: 'print out the global mesh configuration',
  configEnvoy: 'print out the envoy startup configuration',
  version: 'print out the pilot-agent version',
  versionComponent: 'print out the version of the component, component can be pilot-agent/envoy/mesh-dns',
  latestError: 'print out the latest error info',
  status: 'print out the status, result could be <INIT>, <CONFIG_READY>, <FLOW_TAKEOVER>, <SERVICE_REGISTERED>',
  epoch: 'print out the component restart epoch, component can be envoy/mesh-dns',
  hotRestart: 'hot restart the component process, component can be envoy/mesh-dns',
  update: 'update the component',
  logging: 'dynamic change logging level, scope can be healthz/admin/ads/default/model, level can be debug/info/warn/error/none',
} as const;

const DUMP_COMPONENTS = ['pilot-agent', 'envoy', 'mesh-dns'] as const;
const CHILD_COMPONENTS: ComponentName[] = ['envoy', 'mesh-dns'];

function childComponent(name: string | undefined): ComponentName {
  if (name === 'envoy' || name === 'mesh-dns') return name;
  throw new AdminHttpError(404, `unknown component "${name}": component can be ${CHILD_COMPONENTS.join('/')}`, { code: 'MESH_AGENT_UNKNOWN_COMPONENT' });
}

function anyComponent(name: string | undefined): (typeof DUMP_COMPONENTS)[number] {
  if (name === 'pilot-agent' || name === 'envoy' || name === 'mesh-dns') return name;
  throw new AdminHttpError(404, `unknown component "${name}": component can be ${DUMP_COMPONENTS.join('/')}`, { code: 'MESH_AGENT_UNKNOWN_COMPONENT' });
}

/** Fetches from a child's admin port; a child that does not answer is a 503 naming it. */
async function fetchChild(agent: MeshAgent, component: ComponentName, pathname: string): Promise<{ status: number; type: string; body: string }> {
  const port = component === 'envoy' ? agent.ports?.proxyAdmin : agent.ports?.dnsAdmin;
  if (!port) throw new AdminHttpError(503, `${component} is not started yet`, { code: 'MESH_AGENT_NOT_RUNNING' });
  const url = `http://${hostForUrl(agent.config.adminAddress)}:${port}${pathname}`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    return { status: res.status, type: res.headers.get('content-type') ?? 'text/plain; charset=utf-8', body: await res.text() };
  } catch (err) {
    throw new AdminHttpError(503, `${component} admin at ${url} did not answer: ${(err as Error).message}`, { code: 'MESH_AGENT_CHILD_UNREACHABLE' });
  }
}

function hostForUrl(address: string): string {
  return address.includes(':') ? `[${address}]` : address;
}

export function adminBaseUrl(agent: MeshAgent): string {
  return `http://${hostForUrl(agent.config.adminAddress)}:${agent.admin.address?.port ?? agent.config.ports.agentAdmin}`;
}

export function healthReport(agent: MeshAgent): HealthReport {
  const components = Object.fromEntries(
    CHILD_COMPONENTS.map((name) => {
      const s = agent.supervisors.get(name);
      const state = s?.state();
      return [name, { healthy: s?.healthy ?? false, ...(state ?? { state: 'stopped', epoch: null, pid: null }) }];
    }),
  );
  const app = agent.appHealth.map((c) => c.state());
  const capture = agent.captureState();
  const captureOk = capture.mode === 'applied' || capture.mode === 'disabled';
  const registry = agent.registry ? agent.registry.reachable() : { ok: false, detail: 'not started' };
  const problems: string[] = [];
  for (const name of CHILD_COMPONENTS) if (!components[name].healthy) problems.push(`${name} is not serving (${components[name].state})`);
  if (!captureOk) problems.push(`${capture.detail}${capture.hint ? ` (fix: ${capture.hint})` : ''}`);
  for (const a of app) if (a.healthy !== true) problems.push(`local application ${a.service}: ${a.detail}`);
  if (!registry.ok) problems.push(`registry: ${registry.detail}`);
  const mtls = agent.certificates?.status();
  for (const cert of mtls?.certificates ?? []) {
    if (Date.parse(cert.notAfter) <= Date.now()) problems.push(`the certificate of ${cert.service} (${cert.spiffeId}) expired at ${cert.notAfter}: peers refuse it${mtls?.lastRotationError ? ` (${mtls.lastRotationError.message})` : ''}`);
  }
  // not a failure of the sidecar (it does what spec.yaml says), so it does not turn /health 503
  const uncaptured = agent.spec ? uncapturedPorts(agent.spec) : [];
  return {
    healthy: problems.length === 0,
    status: agent.status.status,
    problems,
    warnings: [...uncaptured.map((u) => u.reason), ...agent.tcpRouteWarnings],
    uncapturedPorts: uncaptured,
    components,
    capture,
    app,
    registry: { ...registry, registered: agent.registrations().map((r) => ({ service: r.service, ...r.instance })) },
    ...(mtls ? { mtls } : {}),
    statusHistory: agent.status.history(),
  };
}

export interface Readiness {
  ready: boolean;
  /** why not, one line each */
  reasons: string[];
}

/**
 * Istio's readiness (GET /healthz/ready): the sidecar is ready to serve, i.e. traffic is taken over
 * (status <FLOW_TAKEOVER> or later, capture in force or off by config) and both children serve.
 * The application's health and the registry are /health's business, as in Istio.
 */
export function readiness(agent: MeshAgent): Readiness {
  const reasons: string[] = [];
  if (agent.isStopping) reasons.push('the sidecar is stopping');
  if (!agent.status.atLeast('<FLOW_TAKEOVER>')) reasons.push(`status is ${agent.status.status}, not yet <FLOW_TAKEOVER>`);
  for (const name of CHILD_COMPONENTS) {
    const s = agent.supervisors.get(name);
    if (!s?.healthy) reasons.push(`${name} is not serving (${s?.state().state ?? 'not started'})`);
  }
  const capture = agent.captureState();
  if (capture.mode !== 'applied' && capture.mode !== 'disabled' && capture.mode !== 'pending') reasons.push(capture.detail);
  return { ready: reasons.length === 0, reasons };
}

export function createAgentAdmin(agent: MeshAgent): AdminServer {
  const { config } = agent;
  const admin = createAdminServer({
    component: 'pilot-agent',
    helpStyle: 'istio',
    host: config.adminAddress,
    port: config.ports.agentAdmin,
    allowNonLoopback: true,
    logger: agent.logger,
  });
  const version = agentVersion();

  admin.add(routes.health(AGENT_HELP.health, () => healthReport(agent)));
  admin.add(
    routes.configDump(
      AGENT_HELP.configDump,
      async (req) => {
        const component = anyComponent(req.params.component);
        if (component === 'pilot-agent') {
          return {
            version_info: agent.currentProxyConfig?.version ?? '0',
            status: agent.status.status,
            agent: config,
            ports: agent.ports,
            nodeIp: agent.nodeIp,
            nodeIp6: agent.nodeIp6 ?? null,
            capture: agent.captureState(),
            // identities, serials and renewal times; never key material
            mtls: agent.certificates?.status() ?? null,
            registry: agent.registry?.describe(),
            services: agent.spec,
            registrySnapshot: agent.registry ? agent.effectiveRegistry() : null,
            global: agent.global,
            epochs: Object.fromEntries(CHILD_COMPONENTS.map((c) => [c, agent.supervisors.get(c)?.epoch ?? null])),
          };
        }
        const res = await fetchChild(agent, component, '/config_dump');
        return adminResponse(res.status, res.body, { 'content-type': res.type });
      },
      { path: '/config_dump/{component}' },
    ),
  );
  admin.add(routes.help(AGENT_HELP.help));
  admin.add({
    method: 'GET',
    path: '/config/agent',
    help: AGENT_HELP.configAgent,
    handler: () => ({
      configFile: agent.configFile ? path.resolve(agent.configFile) : null,
      appConfigDir: agent.specFile ? path.dirname(agent.specFile) : path.resolve(config.app.configDir),
      specFile: agent.specFile ?? null,
      globalConfigFile: agent.globalFile ?? null,
      nodeIp: agent.nodeIp ?? null,
      nodeIp6: agent.nodeIp6 ?? null,
      ports: agent.ports ?? config.ports,
      config,
    }),
  });
  admin.add({
    method: 'GET',
    path: '/config/services',
    help: AGENT_HELP.configServices,
    handler: () => ({
      specFile: agent.specFile ?? null,
      local: agent.spec ?? null,
      registered: agent.registrations().map((r) => ({ service: r.service, namespace: r.namespace, ...r.instance })),
      registry: agent.registry ? agent.effectiveRegistry() : null,
    }),
  });
  admin.add({ method: 'GET', path: '/config/global', help: AGENT_HELP.configGlobal, handler: () => agent.global ?? {} });
  admin.add({
    method: 'GET',
    path: '/config/envoy',
    help: AGENT_HELP.configEnvoy,
    handler: () => {
      if (!agent.currentProxyConfig) throw new AdminHttpError(503, 'the envoy startup configuration is not generated yet (status <INIT>)', { code: 'MESH_AGENT_NOT_READY' });
      return agent.currentProxyConfig;
    },
  });
  admin.add(routes.version(AGENT_HELP.version, { version, component: 'pilot-agent', node: process.version }));
  admin.add({
    method: 'GET',
    path: '/version/{component}',
    help: AGENT_HELP.versionComponent,
    handler: async (req) => {
      const component = anyComponent(req.params.component);
      if (component === 'pilot-agent') return { component, version };
      const res = await fetchChild(agent, component, component === 'envoy' ? '/server_info' : '/version');
      let parsed: unknown = res.body;
      try {
        parsed = JSON.parse(res.body);
      } catch {
        // not JSON: pass the text on
      }
      const childVersion = typeof parsed === 'object' && parsed !== null ? (parsed as { version?: unknown }).version : undefined;
      return { component, version: childVersion ?? null, epoch: agent.supervisors.get(component)?.epoch ?? null, detail: parsed };
    },
  });
  admin.add(routes.latestError(AGENT_HELP.latestError));
  admin.add(routes.status(AGENT_HELP.status, () => agent.status.status));
  admin.add({
    method: 'GET',
    path: '/epoch/{component}',
    help: AGENT_HELP.epoch,
    handler: (req) => {
      const component = childComponent(req.params.component);
      const supervisor = agent.supervisors.get(component);
      const epoch = supervisor?.epoch;
      // answered, not thrown: polling during a restart must not replace /latest_error (the crash's cause)
      if (epoch === null || epoch === undefined) return adminResponse(503, `${component} has no serving epoch right now (${supervisor?.state().state ?? 'not started'})\n`);
      return `${epoch}\n`;
    },
  });
  admin.add({
    method: 'POST',
    path: '/hot_restart/{component}',
    help: AGENT_HELP.hotRestart,
    mutatesState: true,
    handler: async (req) => {
      const component = childComponent(req.params.component);
      try {
        const result = await agent.hotRestart(component);
        return { component, ...result };
      } catch (err) {
        const status = isMeshError(err) && err.code === 'MESH_AGENT_RESTART_IN_PROGRESS' ? 409 : 503;
        throw new AdminHttpError(status, `hot restart of ${component} failed: ${(err as Error).message}`, { code: isMeshError(err) ? err.code : 'MESH_AGENT_HOT_RESTART_FAILED' });
      }
    },
  });
  admin.add({
    method: 'PUT',
    path: '/update',
    help: AGENT_HELP.update,
    mutatesState: true,
    handler: async (req) => {
      let parsed;
      try {
        parsed = parseUpdateBody(await req.body(), req.headers['content-type']);
      } catch (err) {
        if (err instanceof ConfigError || isMeshError(err)) {
          throw new AdminHttpError(400, `${(err as Error).message}\n${UPDATE_HELP}`, { code: (err as ConfigError).code });
        }
        throw err;
      }
      try {
        return await agent.update(parsed);
      } catch (err) {
        const code = isMeshError(err) ? err.code : 'MESH_AGENT_UPDATE_FAILED';
        throw new AdminHttpError(err instanceof ConfigError ? 400 : 503, `update refused, the previous config stays in force: ${(err as Error).message}`, { code });
      }
    },
  });
  admin.add(routes.logging(AGENT_HELP.logging, agent.logger));

  for (const route of diagnosticsRoutes({ agentAdminUrl: () => adminBaseUrl(agent) })) admin.add({ ...route, hidden: true });
  admin.add({
    method: 'GET',
    path: '/rules',
    help: 'print out the traffic rules in force, where each came from (agent config, rules file, file registry, etcd key) and their subsets\' instances',
    hidden: true,
    handler: () => ({ rules: agent.registry ? rulesInForce(agent.trafficRules(), agent.effectiveRegistry()) : [] }),
  });
  // Istio's pilot-agent endpoints on 15020, hidden: /help stays the source document's text
  admin.add({
    method: 'GET',
    path: '/healthz/ready',
    help: 'readiness probe (Istio): 200 when the sidecar serves, 503 with the reasons otherwise',
    hidden: true,
    handler: () => {
      const r = readiness(agent);
      return r.ready ? adminResponse(200, 'ready\n') : adminResponse(503, `not ready: ${r.reasons.join('; ')}\n`);
    },
  });
  admin.add({
    method: 'POST',
    path: '/quitquitquit',
    help: 'stop the sidecar cleanly (Istio): deregister, remove the iptables rules, stop the children, exit 0',
    hidden: true,
    mutatesState: true,
    handler: () => {
      if (!agent.isStopping) agent.quit('POST /quitquitquit on the agent');
      return 'OK\n';
    },
  });
  return admin;
}
