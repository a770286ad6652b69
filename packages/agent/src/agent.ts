// The sidecar's life cycle: load config -> <CONFIG_READY>; start mesh-dns and the proxy on
// agent-owned sockets, take over traffic -> <FLOW_TAKEOVER>; register the local instance once its
// health check passes -> <SERVICE_REGISTERED>. And the reverse on shutdown.
import fs from 'node:fs';
import path from 'node:path';
import { createLogger, type AdminServer, type MeshLogger } from '@mesh-agent/admin-kit';
import {
  EXIT_CODES,
  globalMeshConfigSchema,
  isMeshError,
  loadConfigFile,
  MeshError,
  parseConfig,
  proxyBootstrapSchema,
  servicesSpecSchema,
  specFilePath,
  type AgentConfig,
  type DnsConfig,
  type GlobalMeshConfig,
  type ProxyBootstrap,
  type RegistrySnapshot,
  type ServicesSpec,
} from '@mesh-agent/shared-config';
import { AppHealthChecker } from './app-health';
import { buildDnsConfig, buildProxyBootstrap, outboundTcpRoutes } from './bootstrap';
import { CertificateProvisioner } from './certificates';
import { CaptureController, captureRulesConfig, type CaptureState, type DriftAction } from './capture';
import { childNodeFlags, meshDnsBin, proxyBin } from './children';
import { createAgentAdmin } from './admin-routes';
import { detectNodeIp, detectNodeIp6, localServiceName, nodeIdOf, type BoundPorts, type MeshModel } from './mesh-model';
import { mtlsModeOf, mtlsSource } from './mtls-settings';
import { PeriodicTask } from './periodic-task';
import { createRegistry, mergeInstances, type LocalRegistration, type RegistryBackend } from './registry/index';
import { bindTcp, bindUdp, type OwnedSocket } from './sockets';
import { declaredProtocolOf, isHttp1Protocol } from './port-protocols';
import { endStaleChildren, recordChildren } from './stale-children';
import { localityMetadata } from './locality';
import { StatusMachine } from './status';
import { ConfigTrafficRules, resolveTrafficRules, type SourcedTrafficRule } from './traffic-rules';
import { ChildSupervisor, type ComponentName } from './supervisor';

export const AGENT_LOG_SCOPES = ['healthz', 'admin', 'ads', 'default', 'model'];

export interface MeshAgentOptions {
  config: AgentConfig;
  /** The agent config file, shown in /config/agent. */
  configFile?: string;
  /** spec.yaml content; read from `app.configDir`/`app.specFile` when absent. */
  spec?: ServicesSpec;
  /** Traffic capture deliberately off (the demo): the takeover step counts as done once the children are ready. */
  captureDisabledReason?: string;
  /** Drop the children to proxy.uid/gid when root (default true; the demo keeps them). */
  dropPrivileges?: boolean;
  logger?: MeshLogger;
  childStdio?: 'inherit' | 'ignore' | 'stderr';
  /** Child executables (default: the bins of @mesh-agent/proxy and @mesh-agent/mesh-dns). */
  childBins?: { proxy?: string; meshDns?: string };
  /** Back-off of crash restarts. */
  restartBackoff?: { initialMs: number; maxMs: number };
  /** Where the proxy's listener binds (default 0.0.0.0: inbound capture redirects to the node address). */
  listenerAddress?: string;
  /** Called once the agent stopped on its own (POST /quitquitquit on the proxy or the agent), with why. */
  onSelfStop?: (why: string) => void;
}

/** What PUT /update changed. */
export interface UpdateResult {
  version: string;
  services?: number;
  global?: boolean;
}

export class MeshAgent {
  readonly status = new StatusMachine();
  readonly logger: MeshLogger;
  readonly config: AgentConfig;
  readonly configFile: string | undefined;
  spec!: ServicesSpec;
  specFile!: string;
  global!: GlobalMeshConfig;
  globalFile: string | undefined;
  admin!: AdminServer;
  registry!: RegistryBackend;
  readonly supervisors = new Map<ComponentName, ChildSupervisor>();
  readonly appHealth: AppHealthChecker[] = [];
  readonly capture: CaptureController;
  private sockets: OwnedSocket[] = [];
  ports!: BoundPorts;
  nodeIp!: string;
  nodeIp6: string | undefined;
  /** Services put in force with PUT /update, on top of the registry's. */
  private updateOverlay: RegistrySnapshot['services'] | undefined;
  private configVersion = 0;
  private proxyConfig!: ProxyBootstrap;
  /** TCP service ports left without an outbound route (no per-service VIP), one /health warning each. */
  tcpRouteWarnings: string[] = [];
  private dnsConfig!: DnsConfig;
  private registered = new Map<string, LocalRegistration>();
  private pushTimer: NodeJS.Timeout | undefined;
  private pushChain: Promise<unknown> = Promise.resolve();
  private stopping: Promise<void> | undefined;
  private started = false;
  private readonly recorded = new WeakSet<object>();
  private readonly retryTimers = new Set<NodeJS.Timeout>();
  private driftWatch: PeriodicTask | undefined;
  /** The local services' certificates; undefined with mTLS off (no mtls.ca / mtls.files). */
  certificates: CertificateProvisioner | undefined;
  /** mesh.trafficRules and mesh.trafficRulesFile; the registry's rules win per service. */
  private configRules: ConfigTrafficRules | undefined;

  constructor(private readonly opts: MeshAgentOptions) {
    this.config = opts.config;
    this.configFile = opts.configFile;
    this.logger =
      opts.logger ??
      createLogger({ component: 'pilot-agent', scopes: AGENT_LOG_SCOPES, level: opts.config.log.level === 'none' ? 'none' : opts.config.log.level });
    for (const [scope, level] of Object.entries(opts.config.log.scopes)) {
      if (AGENT_LOG_SCOPES.includes(scope)) this.logger.setLevel(scope, level);
    }
    this.capture = new CaptureController({
      stateFile: opts.config.iptables.stateFile,
      log: (line) => this.logger.scope('default').info({ iptables: true }, line),
    });
  }

  private get log() {
    return this.logger.scope('default');
  }

  get listenerAddress(): string {
    // with IPv6 capture the listener takes IPv6 connections too: `::` is dual-stack
    return this.opts.listenerAddress ?? (this.ipv6Capture ? '::' : '0.0.0.0');
  }

  private get ipv6Capture(): boolean {
    return this.config.iptables.ipv6 && !this.captureDisabledReason;
  }

  get captureDisabledReason(): string | undefined {
    if (this.opts.captureDisabledReason) return this.opts.captureDisabledReason;
    if (!this.config.iptables.enabled) return 'iptables.enabled is false in the agent config';
    return undefined;
  }

  /** Records an error for /latest_error and the log. */
  recordError(err: unknown, where?: string): void {
    // the same error object travels up (supervisor -> start): record it once
    if (typeof err === 'object' && err !== null) {
      if (this.recorded.has(err)) return;
      this.recorded.add(err);
    }
    this.admin?.recordError(err, where);
    this.log.error({ err: isMeshError(err) ? { code: err.code, message: err.message } : String(err) }, (err as Error).message ?? String(err));
  }

  /** Runs the whole start sequence; resolves once the children serve (registration follows the health check). */
  async start(): Promise<void> {
    if (this.started) throw new MeshError('MESH_AGENT_ALREADY_STARTED', 'the agent is already started');
    this.started = true;
    const { config } = this;
    this.admin = createAgentAdmin(this);
    const adminAddress = await this.admin.listen();
    this.log.info({ address: adminAddress.address, port: adminAddress.port }, `admin listening on http://${adminAddress.address}:${adminAddress.port}`);

    try {
      this.loadSpecAndGlobal();
      this.configRules = new ConfigTrafficRules(config, { onError: (err) => this.recordError(err, 'traffic-rules'), onChange: () => this.schedulePush() });
      this.configRules.start();
      this.nodeIp = detectNodeIp(config.node.ip);
      this.nodeIp6 = detectNodeIp6(config.node.ip6);
      if (this.ipv6Capture && !this.nodeIp6) {
        throw new MeshError('MESH_CONFIG_INVALID', 'iptables.ipv6 is on, but node.ip6 is not set and this host has no global IPv6 address to detect', {
          exitCode: EXIT_CODES.usage,
          hint: "set node.ip6 to the node's IPv6 address (ip -6 addr show scope global), or set iptables.ipv6: false",
        });
      }
      // certificates before anything is applied: a bad CA dir or file stops the start at <INIT>
      await this.prepareCertificates();
      this.registry = createRegistry(config.registry, (err) => this.recordError(err, 'registry'), config.mesh);
      await this.registry.start();
      this.registry.onChange(() => this.schedulePush());
      const leftovers = await endStaleChildren(config.paths.runDir, [this.opts.childBins?.proxy ?? proxyBin(), this.opts.childBins?.meshDns ?? meshDnsBin()]);
      if (leftovers.length > 0) this.log.warn({ pids: leftovers }, `ended children of a previous run that outlived it: ${leftovers.join(', ')}`);
      await this.bindSockets(adminAddress.port);
      if (!this.captureDisabledReason && !this.capture.precondition()) {
        // a crashed agent's rules would capture traffic into a proxy that is not there yet
        const stale = await this.capture.removeStale();
        if (stale.length > 0) this.log.warn({ chains: stale }, `removed stale iptables rules of a previous run: ${stale.join(', ')}`);
      }
      this.rebuildConfigs();
      this.writeGeneratedFiles();
      this.status.set('<CONFIG_READY>');

      await this.startChildren();
      this.certificates?.start();
      await this.takeOverTraffic();
      this.startHealthChecks();
    } catch (err) {
      this.recordError(err, 'start');
      await this.stop().catch(() => undefined);
      throw err;
    }
  }

  private loadSpecAndGlobal(): void {
    const { config } = this;
    this.specFile = path.resolve(specFilePath(config));
    this.spec = this.opts.spec ?? loadConfigFile(servicesSpecSchema, this.specFile, { env: {} });
    const serviceName = localServiceName(config, this.spec);
    if (!this.spec.spec.services.some((s) => s.name === serviceName)) {
      throw new MeshError('MESH_CONFIG_INVALID', `node.serviceName "${serviceName}" is not a service of ${this.specFile}`, {
        exitCode: EXIT_CODES.usage,
        hint: `declare it in spec.yaml or set node.serviceName to one of ${this.spec.spec.services.map((s) => s.name).join(', ')}`,
      });
    }
    const local = this.spec.spec.services.map((s) => s.name);
    for (const name of Object.keys(config.mtls?.services ?? {})) {
      if (!local.includes(name)) {
        throw new MeshError('MESH_CONFIG_INVALID', `mtls.services.${name}: "${name}" is not a service of ${this.specFile}`, {
          exitCode: EXIT_CODES.usage,
          hint: `mtls.services lists local services only (${local.join(', ')}); a peer's policy belongs to the peer's agent`,
        });
      }
    }
    this.globalFile = config.mesh.globalConfigFile ? path.resolve(config.mesh.globalConfigFile) : undefined;
    this.global = this.globalFile ? loadConfigFile(globalMeshConfigSchema, this.globalFile, { env: {} }) : parseConfig(globalMeshConfigSchema, {});
  }

  private async prepareCertificates(): Promise<void> {
    if (!mtlsSource(this.config)) return;
    const drop = this.opts.dropPrivileges !== false;
    this.certificates = new CertificateProvisioner({
      agent: this.config,
      services: this.spec.spec.services.map((s) => s.name),
      ...(drop ? { owner: { uid: this.config.proxy.uid, gid: this.config.proxy.gid } } : {}),
      log: this.logger.scope('default'),
      onError: (err) => this.recordError(err, 'certificates'),
    });
    await this.certificates.prepare();
  }

  private async bindSockets(agentAdminPort: number): Promise<void> {
    const { ports, adminAddress } = this.config;
    const listener = bindTcp('listener', this.listenerAddress, ports.proxyListener);
    this.sockets.push(listener);
    const proxyAdmin = bindTcp('admin', adminAddress, ports.proxyAdmin);
    this.sockets.push(proxyAdmin);
    const dnsAdmin = bindTcp('admin', adminAddress, ports.dnsAdmin);
    this.sockets.push(dnsAdmin);
    const dnsTcp = bindTcp('dns-tcp', '127.0.0.1', ports.dns);
    this.sockets.push(dnsTcp);
    // with port 0 the UDP socket takes the port the TCP one got, so both serve one "DNS port"
    const dnsUdp = await bindUdp('dns-udp', '127.0.0.1', dnsTcp.port);
    this.sockets.push(dnsUdp);
    this.ports = { agentAdmin: agentAdminPort, proxyAdmin: proxyAdmin.port, proxyListener: listener.port, dnsAdmin: dnsAdmin.port, dns: dnsTcp.port };
    this.log.info({ ports: this.ports }, 'listening sockets bound');
  }

  model(): MeshModel {
    return {
      agent: this.config,
      spec: this.spec,
      global: this.global,
      registry: this.effectiveRegistry(),
      ports: this.ports,
      nodeIp: this.nodeIp,
      nodeIp6: this.nodeIp6,
      nodeId: nodeIdOf(this.config, this.spec, this.nodeIp),
      appHost: '127.0.0.1',
      listenerAddress: this.listenerAddress,
      trafficRules: this.trafficRules().map((entry) => entry.rule),
    };
  }

  /** The traffic rules in force, one per service, with where each came from (GET /rules). */
  trafficRules(): SourcedTrafficRule[] {
    return resolveTrafficRules(this.configRules?.rules() ?? [], this.registry?.trafficRules() ?? []);
  }

  /** The registry's view with the PUT /update services on top (same name: the update's wins). */
  effectiveRegistry(): RegistrySnapshot {
    const base = this.registry.snapshot();
    if (!this.updateOverlay) return base;
    const key = (s: { name: string; namespace: string }) => `${s.namespace}/${s.name}`;
    const replaced = new Set(this.updateOverlay.map(key));
    const services = [...base.services.filter((s) => !replaced.has(key(s))), ...this.updateOverlay];
    return mergeInstances({ ...base, services }, []);
  }

  private rebuildConfigs(): void {
    this.configVersion += 1;
    const model = this.model();
    this.proxyConfig = parseConfig(proxyBootstrapSchema, buildProxyBootstrap(model, String(this.configVersion)), { source: 'generated proxy bootstrap' });
    this.tcpRouteWarnings = outboundTcpRoutes(model).skipped;
    this.dnsConfig = buildDnsConfig(model);
  }

  get currentProxyConfig(): ProxyBootstrap {
    return this.proxyConfig;
  }

  get currentDnsConfig(): DnsConfig {
    return this.dnsConfig;
  }

  private writeGeneratedFiles(): void {
    const { paths } = this.config;
    writeAtomic(paths.proxyBootstrap, JSON.stringify(this.proxyConfig, null, 2) + '\n');
    writeAtomic(paths.dnsConfig, JSON.stringify(this.dnsConfig, null, 2) + '\n');
  }

  private async startChildren(): Promise<void> {
    const drop = this.opts.dropPrivileges !== false;
    const byName = (...names: string[]) => this.sockets.filter((s) => names.includes(s.name));
    const common = {
      logger: this.logger.scope('default'),
      onError: (err: MeshError) => this.recordError(err, 'supervisor'),
      stdio: this.opts.childStdio ?? 'inherit',
      backoff: this.opts.restartBackoff,
      drainTimeMs: () => this.config.proxy.drainTimeMs,
    } as const;
    const [listener, proxyAdmin, dnsAdmin] = [this.sockets[0], this.sockets[1], this.sockets[2]];
    const proxyModule = this.opts.childBins?.proxy ?? proxyBin();
    const meshDnsModule = this.opts.childBins?.meshDns ?? meshDnsBin();
    const envoy = new ChildSupervisor({
      ...common,
      component: 'envoy',
      modulePath: proxyModule,
      execArgv: childNodeFlags('envoy', proxyModule, this.config.proxy.nodeOptions),
      sockets: [listener, proxyAdmin],
      config: () => this.proxyConfig,
      ...(drop ? { uid: this.config.proxy.uid, gid: this.config.proxy.gid } : {}),
    });
    const meshDns = new ChildSupervisor({
      ...common,
      component: 'mesh-dns',
      modulePath: meshDnsModule,
      execArgv: childNodeFlags('mesh-dns', meshDnsModule, this.config.meshDns.nodeOptions),
      sockets: [dnsAdmin, ...byName('dns-udp', 'dns-tcp')],
      config: () => this.dnsConfig,
      ...(drop ? { uid: this.config.meshDns.uid, gid: this.config.meshDns.gid } : {}),
    });
    envoy.on('quit', () => {
      this.log.info({}, 'the proxy was told to quit (/quitquitquit): shutting the sidecar down');
      this.stopBySelf('the proxy was told to quit');
    });
    this.supervisors.set('envoy', envoy);
    this.supervisors.set('mesh-dns', meshDns);
    const record = () => recordChildren(this.config.paths.runDir, Object.fromEntries([...this.supervisors].map(([name, s]) => [name, s.pids()])));
    envoy.on('spawn', record);
    meshDns.on('spawn', record);
    await Promise.all([envoy.start(), meshDns.start()]);
  }

  private async takeOverTraffic(): Promise<void> {
    const disabled = this.captureDisabledReason;
    if (disabled) {
      this.capture.state = { mode: 'disabled', detail: `traffic capture is off: ${disabled}`, hint: `send traffic to the proxy explicitly, e.g. curl -x 127.0.0.1:${this.ports.proxyListener} http://SERVICE/` };
      this.status.set('<FLOW_TAKEOVER>');
      return;
    }
    const state = await this.capture.apply(captureRulesConfig(this.model()));
    if (state.mode === 'applied') {
      this.status.set('<FLOW_TAKEOVER>');
      this.log.info({}, state.detail);
      this.watchForDrift();
    } else {
      this.recordError(new MeshError(state.code ?? 'MESH_AGENT_CAPTURE_FAILED', state.detail, { hint: state.hint }), 'iptables');
    }
  }

  /** Re-checks the applied rules every iptables.verifyIntervalMs (0: never), serialized with apply and clean. */
  private watchForDrift(): void {
    const { verifyIntervalMs, onDrift } = this.config.iptables;
    if (verifyIntervalMs === 0 || this.driftWatch) return;
    this.driftWatch = new PeriodicTask(verifyIntervalMs, () => this.recheckCapture(onDrift), (err) => this.recordError(err, 'iptables'));
    this.driftWatch.start();
  }

  private async recheckCapture(action: DriftAction): Promise<void> {
    if (this.stopping) return;
    const outcome = await this.capture.recheck(captureRulesConfig(this.model()), action);
    if (outcome.kind === 'skipped' || outcome.kind === 'in-place') return;
    const list = outcome.differences.join('; ');
    if (outcome.kind === 'back') {
      this.log.info({ drift: outcome.differences }, `the iptables rules are in place again (the drift was: ${list})`);
      return;
    }
    const what = `the iptables rules drifted from what the agent applied (${outcome.differences.length} difference(s)): ${list}`;
    if (outcome.kind === 'drifted') {
      const hint = 'iptables.onDrift is report, so the agent leaves them: find who changes the nat table, then restart the agent (or set onDrift: reapply) to put them back';
      this.recordError(new MeshError('MESH_AGENT_CAPTURE_DRIFT', what, { hint }), 'iptables');
    } else if (outcome.kind === 'reapplied') {
      const hint = 'find who changes the nat table; with iptables.onDrift: reapply the agent puts the rules back at every check';
      this.recordError(new MeshError('MESH_AGENT_CAPTURE_DRIFT', `${what}; the agent re-applied them`, { hint }), 'iptables');
      this.log.info({}, `re-applied the iptables rules after the drift: ${this.capture.state.detail}`);
    } else {
      const { state } = outcome;
      this.recordError(new MeshError('MESH_AGENT_CAPTURE_DRIFT', `${what}; re-applying them failed: ${state.detail}`, { hint: state.hint }), 'iptables');
    }
  }

  /** Whether registration may move the status to <SERVICE_REGISTERED>. */
  private get trafficReady(): boolean {
    return this.status.atLeast('<FLOW_TAKEOVER>');
  }

  private startHealthChecks(): void {
    const hc = this.global.healthCheck;
    for (const service of this.spec.spec.services) {
      for (const { targetPort, protocol } of service.ports) {
        const checker = new AppHealthChecker({
          service: service.name,
          host: '127.0.0.1',
          port: targetPort,
          // the HTTP path is probed (HTTP/1.1 GET) on http ports only; a grpc, http2, dubbo or tcp port is checked by connecting
          path: isHttp1Protocol(protocol) ? service.healthCheck?.path : undefined,
          intervalMs: hc.intervalMs,
          timeoutMs: hc.timeoutMs,
          healthyThreshold: hc.healthyThreshold,
          unhealthyThreshold: hc.unhealthyThreshold,
        });
        checker.on('change', (state: { healthy: boolean | null; detail: string }) => {
          this.logger.scope('healthz').info({ service: service.name, port: targetPort, healthy: state.healthy }, state.detail);
          void this.onAppHealth(service.name, targetPort, state.healthy === true);
        });
        this.appHealth.push(checker);
        checker.start();
      }
    }
  }

  private instanceFor(service: string, port: number, healthy: boolean): LocalRegistration {
    const spec = this.spec.spec.services.find((s) => s.name === service);
    const base = service === localServiceName(this.config, this.spec) && this.config.node.id ? this.config.node.id : `${service}~${this.nodeIp}`;
    const id = spec && spec.ports.length > 1 ? `${base}:${port}` : base;
    return {
      service,
      namespace: this.config.node.namespace,
      // metadata.protocol: peers' proxies speak HTTP/2 to an http2/grpc port (their cluster's protocol), sniff an auto one
      instance: { id, address: this.nodeIp, port, healthy, weight: 1, metadata: { ...this.config.node.labels, ...localityMetadata(this.config.node.locality), node: nodeIdOf(this.config, this.spec, this.nodeIp), protocol: declaredProtocolOf(spec?.ports.find((p) => p.targetPort === port)?.protocol), ...this.identityMetadata(service) } },
    };
  }

  /** Peers originate mTLS to an instance that registered its SPIFFE ID; mode disable registers none (peers send plaintext). */
  private identityMetadata(service: string): { identity?: string } {
    const identity = mtlsModeOf(this.config, service) === 'disable' ? undefined : this.certificates?.identityOf(service);
    return identity ? { identity } : {};
  }

  private async onAppHealth(service: string, port: number, healthy: boolean): Promise<void> {
    if (this.stopping) return;
    const key = `${service}:${port}`;
    // the first registration waits for a passing check; afterwards the entry follows the health
    if (!healthy && !this.registered.has(key)) return;
    const registration = this.instanceFor(service, port, healthy);
    try {
      await this.registry.register(registration);
      this.registered.set(key, registration);
      this.logger.scope('ads').info({ service, id: registration.instance.id, healthy }, `registered ${service} instance ${registration.instance.id} as ${healthy ? 'healthy' : 'unhealthy'}`);
    } catch (err) {
      this.recordError(err, 'registry');
      // the registry may come back: try again with whatever the health is by then
      const retry = setTimeout(() => {
        this.retryTimers.delete(retry);
        const checker = this.appHealth.find((c) => c.state().service === service && c.port === port);
        const state = checker?.state().healthy;
        if (state !== null && state !== undefined) void this.onAppHealth(service, port, state);
      }, 2000);
      this.retryTimers.add(retry);
      retry.unref();
      return;
    }
    const expected = this.spec.spec.services.reduce((n, s) => n + s.ports.length, 0);
    if (this.registered.size === expected && this.trafficReady && !this.stopping) this.status.set('<SERVICE_REGISTERED>');
  }

  registrations(): LocalRegistration[] {
    return [...this.registered.values()];
  }

  private schedulePush(): void {
    if (this.pushTimer || this.stopping) return;
    // coalesce bursts of registry events into one push
    this.pushTimer = setTimeout(() => {
      this.pushTimer = undefined;
      this.pushChain = this.pushChain.then(() => this.pushConfigs()).catch((err) => this.recordError(err, 'push'));
    }, 20);
  }

  private async pushConfigs(): Promise<string> {
    if (this.stopping) return String(this.configVersion);
    const before = { proxy: this.proxyConfig, dns: this.dnsConfig };
    this.rebuildConfigs();
    try {
      await Promise.all([this.supervisors.get('envoy')?.pushConfig(this.proxyConfig), this.supervisors.get('mesh-dns')?.pushConfig(this.dnsConfig)]);
    } catch (err) {
      // put the previous configs back everywhere, so no child keeps a half-applied change
      this.proxyConfig = before.proxy;
      this.dnsConfig = before.dns;
      await Promise.allSettled([this.supervisors.get('envoy')?.pushConfig(before.proxy), this.supervisors.get('mesh-dns')?.pushConfig(before.dns)]);
      throw err;
    }
    this.writeGeneratedFiles();
    this.logger.scope('model').info({ version: this.configVersion }, `config version ${this.configVersion} pushed to envoy and mesh-dns`);
    return String(this.configVersion);
  }

  /**
   * PUT /update: `services` (a registry snapshot's services: replaces the previous update's set;
   * a service of the same name in the registry is replaced) and/or `global` (a whole new global
   * mesh config). Validated whole before anything changes.
   */
  async update(parsed: { services?: RegistrySnapshot['services']; global?: GlobalMeshConfig }): Promise<UpdateResult> {
    const previous = { overlay: this.updateOverlay, global: this.global };
    if (parsed.services) this.updateOverlay = parsed.services;
    if (parsed.global) this.global = parsed.global;
    try {
      // validates the generated bootstrap too (e.g. a ring_hash service without hashHeader)
      this.rebuildConfigs();
    } catch (err) {
      this.updateOverlay = previous.overlay;
      this.global = previous.global;
      this.rebuildConfigs();
      throw err;
    }
    // pushes are serialised with registry-driven pushes
    const run = this.pushChain.then(() => this.pushConfigs());
    this.pushChain = run.catch(() => undefined);
    try {
      const version = await run;
      return { version, ...(parsed.services ? { services: parsed.services.length } : {}), ...(parsed.global ? { global: true } : {}) };
    } catch (err) {
      this.updateOverlay = previous.overlay;
      this.global = previous.global;
      this.rebuildConfigs();
      throw err;
    }
  }

  async hotRestart(component: ComponentName) {
    const supervisor = this.supervisors.get(component);
    if (!supervisor) throw new MeshError('MESH_AGENT_NOT_RUNNING', `${component} is not running`, { exitCode: EXIT_CODES.unavailable });
    return supervisor.hotRestart();
  }

  captureState(): CaptureState {
    return this.capture.state;
  }

  /** Whether a stop has begun (readiness turns 503 at once). */
  get isStopping(): boolean {
    return this.stopping !== undefined;
  }

  /**
   * POST /quitquitquit on the agent (Istio's habit for batch jobs): the same clean stop as a
   * signal, begun after the request's answer is on its way.
   */
  quit(why: string): void {
    this.log.info({}, `${why}: shutting the sidecar down`);
    setImmediate(() => this.stopBySelf(why));
  }

  private stopBySelf(why: string): void {
    // a failed stop is told too: the caller's own stop() then reports its error
    const told = () => this.opts.onSelfStop?.(why);
    this.stop().then(told, told);
  }

  /** Deregister, remove the rules, drain the proxy, stop the children; idempotent. */
  stop(): Promise<void> {
    if (!this.stopping) this.stopping = this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    if (this.pushTimer) clearTimeout(this.pushTimer);
    for (const checker of this.appHealth) checker.stop();
    for (const timer of this.retryTimers) clearTimeout(timer);
    await this.certificates?.stop();
    // 1. peers stop sending to us
    for (const reg of this.registered.values()) {
      await this.registry.deregister({ service: reg.service, namespace: reg.namespace, id: reg.instance.id }).catch((err) => this.recordError(err, 'deregister'));
    }
    this.registered.clear();
    this.configRules?.close();
    await this.registry?.close().catch(() => undefined);
    // 2. the application's traffic goes direct again (no re-check may put the rules back)
    await this.driftWatch?.stop();
    await this.capture.remove().catch((err) => this.recordError(err, 'iptables'));
    if (this.status.atLeast('<FLOW_TAKEOVER>')) this.status.set('<CONFIG_READY>');
    // 3. drain and stop the children
    await Promise.all([...this.supervisors.values()].map((s) => s.stop()));
    fs.rmSync(path.join(this.config.paths.runDir, 'children.json'), { force: true });
    for (const socket of this.sockets) socket.close();
    this.sockets = [];
    await this.admin?.close().catch(() => undefined);
    this.log.info({}, 'mesh-agent stopped');
    this.logger.flush();
  }
}

function writeAtomic(file: string, text: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text, { mode: 0o644 });
  fs.renameSync(tmp, file);
}
