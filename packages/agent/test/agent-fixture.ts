// Starts a real agent (in this process) with the real proxy and mesh-dns as children, on
// ephemeral ports, with a temp dir for its state and a small local application.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { stringify } from 'yaml';
import { agentConfigSchema, parseConfig, type AgentConfigInput } from '@mesh-agent/shared-config';
import { MeshAgent } from '../src/agent';

export interface TestApp {
  port: number;
  healthy: boolean;
  close(): Promise<void>;
}

/** A plain HTTP app answering `name` (and /health 200, or 503 when `healthy` is false). */
export async function startApp(name: string, port = 0): Promise<TestApp> {
  const state = { healthy: true };
  const server = http.createServer((req, res) => {
    if (req.url === '/health') {
      res.writeHead(state.healthy ? 200 : 503);
      res.end(state.healthy ? 'ok' : 'down');
      return;
    }
    res.end(`${name}\n`);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
  return {
    port: (server.address() as AddressInfo).port,
    get healthy() {
      return state.healthy;
    },
    set healthy(v: boolean) {
      state.healthy = v;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface TestAgent {
  agent: MeshAgent;
  dir: string;
  admin: string;
  proxy: string;
  dnsPort: number;
  proxyAdmin: string;
  stop(): Promise<void>;
}

export interface TestAgentOptions {
  appPort: number;
  /** spec.yaml's services (default: `user` on appPort with /health) */
  services?: unknown[];
  registry?: unknown;
  config?: Partial<AgentConfigInput>;
  global?: unknown;
}

export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o755);
  return dir;
}

export async function startTestAgent(opts: TestAgentOptions): Promise<TestAgent> {
  const dir = tempDir('mesh-agent-test-');
  const write = (name: string, value: unknown) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, stringify(value));
    return file;
  };
  const specFile = write('spec.yaml', { apiVersion: 'v1', kind: 'Application', spec: { services: opts.services ?? [{ name: 'user', ports: [{ targetPort: opts.appPort }], healthCheck: { path: '/health' } }] } });
  const registryFile = write('registry.yaml', opts.registry ?? { services: [] });
  const globalFile = write('global.yaml', opts.global ?? { healthCheck: { intervalMs: 200, timeoutMs: 1000, unhealthyThreshold: 1 }, outlierDetection: { enabled: false } });
  const config = parseConfig(agentConfigSchema, {
    node: { ip: '127.0.0.1', serviceName: 'user' },
    app: { configDir: dir, specFile },
    ports: { agentAdmin: 0, proxyAdmin: 0, proxyListener: 0, dns: 0, dnsAdmin: 0 },
    mesh: { globalConfigFile: globalFile },
    registry: { backend: 'file', file: { path: registryFile } },
    iptables: { enabled: false, stateFile: path.join(dir, 'iptables-state.json') },
    dns: { upstreams: ['127.0.0.1:9'] },
    log: { level: 'warn' },
    paths: { runDir: dir, proxyBootstrap: path.join(dir, 'proxy-bootstrap.json'), dnsConfig: path.join(dir, 'mesh-dns.json') },
    ...opts.config,
  });
  const agent = new MeshAgent({ config, configFile: path.join(dir, 'agent.yaml'), dropPrivileges: false, childStdio: 'ignore', restartBackoff: { initialMs: 50, maxMs: 1000 } });
  try {
    await agent.start();
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    agent,
    dir,
    admin: `http://127.0.0.1:${agent.ports.agentAdmin}`,
    proxy: `http://127.0.0.1:${agent.ports.proxyListener}`,
    proxyAdmin: `http://127.0.0.1:${agent.ports.proxyAdmin}`,
    dnsPort: agent.ports.dns,
    async stop() {
      await agent.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
