// `mesh-agent demo`: the whole sidecar on one machine with no configuration, no iptables and no
// root: a local service `user` (a demo app on 8089), a peer `order` with two demo instances in a
// file registry, a gRPC peer `inventory` (HTTP/2 only, registered with metadata.protocol grpc, so
// its cluster speaks HTTP/2), a TCP peer `clock` (server-first, registered with metadata.protocol tcp, so it
// is routed as bytes by its own VIP and port: outboundTcp), mesh-dns and the proxy on their usual ports. Traffic capture is deliberately off:
// calls go to the proxy explicitly (curl -x; for clock an HTTP CONNECT tunnel, curl -p -x). /status still walks the whole sequence: the takeover
// step counts as done once the proxy and mesh-dns serve, so it ends at <SERVICE_REGISTERED>, and
// /health says `capture: disabled`. mTLS is on (permissive): a mesh root made at start in the demo's
// temp dir issues `user` its SPIFFE certificate, shown by the proxy's /certs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { agentConfigSchema, DEFAULT_PORTS, EXIT_CODES, MeshError, parseConfig } from '@mesh-agent/shared-config';
import { MeshAgent } from '../agent';
import { createRootCa, writeCaDir } from '../pki/index';
import { DEMO_GRPC_METHODS, startDemoApp, startDemoClock, startDemoGrpcApp, type DemoApp } from './demo-apps';

export const DEMO_DEFAULT_PORTS = { ...DEFAULT_PORTS, app: 8089 } as const;

export interface DemoOptions {
  ports?: Partial<Record<keyof typeof DEMO_DEFAULT_PORTS, number | undefined>>;
  out?: Writable;
  /** Where the proxy's and mesh-dns' output goes (default: their stderr only). */
  childStdio?: 'inherit' | 'ignore' | 'stderr';
  /** mesh-dns' upstream resolvers, `IP` or `IP:PORT` (default: the nameservers of /etc/resolv.conf). */
  dnsUpstreams?: string[];
}

export interface RunningDemo {
  agent: MeshAgent;
  dir: string;
  ports: { agentAdmin: number; proxyAdmin: number; proxyListener: number; dns: number; dnsAdmin: number; app: number; inventory: number; clock: number };
  /** Resolves when the demo stopped on its own (the proxy's /quitquitquit). */
  stoppedBySelf: Promise<'quitquitquit'>;
  stop(): Promise<void>;
}

export function demoInstructions(ports: RunningDemo['ports']): string {
  return [
    '',
    'mesh-agent demo is running (iptables untouched: call the proxy explicitly).',
    `  local service "user" on 127.0.0.1:${ports.app}; peer "order" with two instances and gRPC peer "inventory" (127.0.0.1:${ports.inventory}) in the file registry`,
    '',
    'Try:',
    `  curl -x 127.0.0.1:${ports.proxyListener} http://order/          # order-1 (version v1) about 80 %, order-2 (v2) 20 %: the demo's traffic rule`,
    `  curl -x 127.0.0.1:${ports.proxyListener} -H 'x-user: beta' http://order/   # always order-2: the rule beta-users (header match to subset v2)`,
    `  mesh-agent rules get --admin http://127.0.0.1:${ports.agentAdmin}   # the rules in force (also on the home page http://127.0.0.1:${ports.agentAdmin}/)`,
    `  printf '\\0\\0\\0\\0\\6apples' | curl -s --http2-prior-knowledge --connect-to inventory:${ports.inventory}:127.0.0.1:${ports.proxyListener} \\`,
    `      -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @- http://inventory:${ports.inventory}${DEMO_GRPC_METHODS.get} | tail -c +6; echo   # gRPC to "inventory": in stock: apples`,
    `  mesh-agent trace http://inventory:${ports.inventory}/ --admin http://127.0.0.1:${ports.agentAdmin}   # the hops, with inventory's cluster (http2)`,
    `  curl -s 127.0.0.1:${ports.proxyAdmin}/clusters | grep ::protocol::   # inventory's cluster speaks http2, order's http1`,
    `  dig @127.0.0.1 -p ${ports.dns} order                    # mesh-dns answers order's own VIP`,
    `  curl -s 127.0.0.1:${ports.proxyAdmin}/clusters | grep tcp_route   # TCP peer "clock": its VIP:port, proxied as bytes`,
    `  curl -s --max-time 2 -p -x 127.0.0.1:${ports.proxyListener} telnet://clock:${ports.clock} </dev/null   # TCP through the mesh (CONNECT): clock speaks first, the time`,
    `      # (on a captured host the application just connects: nc clock ${ports.clock}; mesh-dns answers clock's VIP, the proxy pipes the bytes)`,
    `  curl 127.0.0.1:${ports.agentAdmin}/status                       # <SERVICE_REGISTERED>`,
    `  curl -s 127.0.0.1:${ports.proxyAdmin}/clusters | grep "in#"     # the local service's instance and health`,
    `  curl -s 127.0.0.1:${ports.proxyAdmin}/certs                     # its certificate: spiffe://cluster.local/ns/default/sa/user`,
    `  curl 127.0.0.1:${ports.agentAdmin}/help                         # every admin command`,
    '',
    'Press Ctrl-C to stop everything.',
    '',
  ].join('\n');
}

export async function runDemo(opts: DemoOptions = {}): Promise<RunningDemo> {
  const want = { ...DEMO_DEFAULT_PORTS, ...Object.fromEntries(Object.entries(opts.ports ?? {}).filter(([, v]) => v !== undefined)) };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mesh-agent-demo-'));
  fs.chmodSync(dir, 0o755);
  const apps: DemoApp[] = [];
  let agent: MeshAgent | undefined;
  const cleanup = async () => {
    await agent?.stop().catch(() => undefined);
    await Promise.all(apps.map((a) => a.close()));
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    try {
      apps.push(await startDemoApp('user', '127.0.0.1', want.app, 'hello from user'));
    } catch (err) {
      throw new MeshError('MESH_AGENT_DEMO_PORT_BUSY', `the demo app "user" cannot listen on 127.0.0.1:${want.app}: ${(err as Error).message}`, {
        exitCode: EXIT_CODES.unavailable,
        hint: 'stop what listens there, or pick another port with --app-port',
      });
    }
    const order1 = await startDemoApp('order-1', '127.0.0.1', 0, 'hello from order-1');
    apps.push(order1);
    const order2 = await startDemoApp('order-2', '127.0.0.1', 0, 'hello from order-2');
    apps.push(order2);
    const inventory = await startDemoGrpcApp('inventory-1', '127.0.0.1', 0);
    apps.push(inventory);
    const clock = await startDemoClock('clock-1', '127.0.0.1', 0);
    apps.push(clock);

    const write = (name: string, value: unknown) => {
      const file = path.join(dir, name);
      fs.writeFileSync(file, stringify(value), { mode: 0o644 });
      return file;
    };
    const specFile = write('spec.yaml', {
      apiVersion: 'v1',
      kind: 'Application',
      spec: { services: [{ name: 'user', ports: [{ targetPort: apps[0].port, protocol: 'http' }], healthCheck: { path: '/health' } }] },
    });
    const registryFile = write('registry.yaml', {
      services: [
        {
          name: 'order',
          instances: [
            // labelled as their agents register node.labels: the traffic rule below picks subsets by them
            { id: 'order-1', address: '127.0.0.1', port: order1.port, metadata: { version: 'v1' } },
            { id: 'order-2', address: '127.0.0.1', port: order2.port, metadata: { version: 'v2' } },
          ],
        },
        // as a peer's agent registers a port its spec.yaml declares grpc
        { name: 'inventory', instances: [{ id: 'inventory-1', address: '127.0.0.1', port: inventory.port, metadata: { protocol: 'grpc' } }] },
        // as a peer's agent registers a port its spec.yaml declares tcp: routed by its VIP and port, no HTTP route
        { name: 'clock', instances: [{ id: 'clock-1', address: '127.0.0.1', port: clock.port, metadata: { protocol: 'tcp' } }] },
      ],
      // docs/traffic-rules.md: a canary split of order between its two versions, and beta users on v2
      trafficRules: [
        {
          service: 'order',
          subsets: [{ name: 'v1', labels: { version: 'v1' } }, { name: 'v2', labels: { version: 'v2' } }],
          http: [
            { name: 'beta-users', match: [{ headers: { 'x-user': { exact: 'beta' } } }], route: [{ subset: 'v2' }] },
            { name: 'canary', route: [{ subset: 'v1', weight: 80 }, { subset: 'v2', weight: 20 }] },
          ],
        },
      ],
    });
    // a throw-away mesh root, so the demo shows mTLS identities with no PKI to set up
    const caDir = path.join(dir, 'ca');
    writeCaDir(caDir, await createRootCa({ trustDomain: 'cluster.local', ttlDays: 30, commonName: 'mesh-agent demo root' }));
    const globalFile = write('global.yaml', { healthCheck: { intervalMs: 1000, timeoutMs: 1000 }, outlierDetection: { enabled: false } });
    const config = parseConfig(agentConfigSchema, {
      node: { ip: '127.0.0.1', serviceName: 'user' },
      app: { configDir: dir, specFile },
      ports: { agentAdmin: want.agentAdmin, proxyAdmin: want.proxyAdmin, proxyListener: want.proxyListener, dns: want.dns, dnsAdmin: want.dnsAdmin },
      mesh: { globalConfigFile: globalFile },
      dns: { upstreams: opts.dnsUpstreams ?? [] },
      registry: { backend: 'file', file: { path: registryFile } },
      iptables: { enabled: false, stateFile: path.join(dir, 'iptables-state.json') },
      log: { level: 'warn' },
      paths: { runDir: dir, proxyBootstrap: path.join(dir, 'proxy-bootstrap.json'), dnsConfig: path.join(dir, 'mesh-dns.json') },
      // two days, not the default one: /certs counts whole days, and a 24 h certificate shows 0 from its first second
      mtls: { trustDomain: 'cluster.local', mode: 'permissive', certTtlSeconds: 2 * 86400, ca: { dir: caDir } },
    });
    let selfStopped!: (v: 'quitquitquit') => void;
    const stoppedBySelf = new Promise<'quitquitquit'>((resolve) => (selfStopped = resolve));
    agent = new MeshAgent({
      config,
      configFile: '(demo: built in)',
      captureDisabledReason: 'the demo never touches iptables',
      dropPrivileges: false,
      // nothing is redirected to the proxy in the demo: keep it off the network
      listenerAddress: '127.0.0.1',
      childStdio: opts.childStdio ?? 'stderr',
      onSelfStop: () => selfStopped('quitquitquit'),
    });
    await agent.start();
    // the health check of `user` passes within a second or two: print once /status says so
    const deadline = Date.now() + 15_000;
    while (agent.status.status !== '<SERVICE_REGISTERED>' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const ports = { ...agent.ports, app: apps[0].port, inventory: inventory.port, clock: clock.port };
    opts.out?.write(demoInstructions(ports));
    return {
      agent,
      dir,
      ports,
      stoppedBySelf,
      stop: cleanup,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
