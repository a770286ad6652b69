// mesh-agent's command line: parses argv, calls the library, and lets runMain turn errors into exit codes.
import { parseArgs } from 'node:util';
import { agentConfigSchema, EXIT_CODES, loadConfigFile, MeshError, runMain } from '@mesh-agent/shared-config';
import { MeshAgent } from './agent';
import { agentVersion } from './children';
import { runDemo, DEMO_DEFAULT_PORTS } from './demo/demo';
import { runDoctor, runTrace } from './diagnostics/index';
import { runCaCommand } from './pki/ca-command';
import { runRulesCommand } from './rules-command';
import { waitUntilReady } from './wait';

export const USAGE = `Usage: mesh-agent [COMMAND] [options]

The mesh sidecar agent (pilot-agent): supervises mesh-dns and the proxy, takes over the
application's traffic with iptables and registers the local service.

Commands:
  start [--config FILE]        run the sidecar (the default command; default FILE /etc/mesh-agent/agent.yaml)
  demo [port flags]            run an embedded example: no configuration, no iptables, no root needed
  wait [--timeout SECONDS] [--admin URL] [--registered]
                               exit 0 once the sidecar is ready (status <FLOW_TAKEOVER> or later;
                               with --registered: <SERVICE_REGISTERED>); 5 on timeout
  doctor [--json] [--admin URL]
                               check every hop a request takes; exit 0 only when all pass
  trace URL [--json] [--admin URL] [--via capture|proxy]
                               send one request through the sidecar and show each hop
  rules validate FILE | apply FILE --etcd URL[,URL] [--prefix P] | get [--admin URL] [--json]
                               traffic rules: check a file, write it to etcd in one transaction
                               (every host applies it live), show the rules in force
  ca init|intermediate|issue|show [options]
                               the built-in issuer: a mesh root, per-host CAs, workload
                               certificates (mesh-agent ca --help for the options)
  version                      print the version

Demo port flags (default: the usual ports): --admin-port ${DEMO_DEFAULT_PORTS.agentAdmin} --proxy-port ${DEMO_DEFAULT_PORTS.proxyListener}
  --proxy-admin-port ${DEMO_DEFAULT_PORTS.proxyAdmin} --dns-port ${DEMO_DEFAULT_PORTS.dns} --dns-admin-port ${DEMO_DEFAULT_PORTS.dnsAdmin} --app-port ${DEMO_DEFAULT_PORTS.app}
Demo DNS flag: --dns-upstream IP[:PORT][,IP[:PORT]...]   resolvers for names outside the mesh
  (default: the nameservers of /etc/resolv.conf)

Exit codes: 0 ok, 1 failure, 2 bad arguments or config, 3 permission or missing tool,
4 rules differ from what was applied, 5 a component or dependency unreachable (wait: timeout).`;

const DEFAULT_CONFIG = '/etc/mesh-agent/agent.yaml';
const DEFAULT_ADMIN = 'http://127.0.0.1:15020';

function usageError(message: string): MeshError {
  return new MeshError('MESH_AGENT_USAGE', message, { exitCode: EXIT_CODES.usage, hint: 'run mesh-agent --help for the commands and options' });
}

type ParsedFlags = { values: Record<string, string | boolean | undefined>; positionals: string[] };

function parse(argv: string[], options: Record<string, { type: 'string' | 'boolean'; short?: string }>, positionals = false): ParsedFlags {
  try {
    const parsed = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: positionals, strict: true });
    return { values: parsed.values as ParsedFlags['values'], positionals: parsed.positionals };
  } catch (err) {
    throw usageError((err as Error).message);
  }
}

function portFlag(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw usageError(`${flag}: "${String(value)}" is not a port number (0..65535)`);
  return n;
}

/**
 * Resolves when SIGINT or SIGTERM arrives. The handlers stay: a Ctrl-C under pnpm arrives twice
 * (from the terminal and forwarded by pnpm), and a second signal must not kill the process halfway
 * through the clean stop (which is bounded by proxy.drainTimeMs).
 */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals) => resolve(signal);
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

async function commandStart(argv: string[]): Promise<number> {
  const { values } = parse(argv, { config: { type: 'string', short: 'c' } });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return EXIT_CODES.ok;
  }
  const file = (values.config as string | undefined) ?? DEFAULT_CONFIG;
  const config = loadConfigFile(agentConfigSchema, file);
  let selfStopped!: (why: string) => void;
  const stoppedBySelf = new Promise<string>((resolve) => (selfStopped = resolve));
  const agent = new MeshAgent({ config, configFile: file, onSelfStop: (why) => selfStopped(why) });
  const signal = untilSignal();
  await agent.start();
  const why = await Promise.race([signal, stoppedBySelf]);
  await agent.stop();
  // a stop asked for (signal, /quitquitquit) is a clean exit: 0, as Envoy and pilot-agent do
  process.stderr.write(`mesh-agent: stopped (${why})\n`);
  return EXIT_CODES.ok;
}

async function commandDemo(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    'admin-port': { type: 'string' },
    'proxy-port': { type: 'string' },
    'proxy-admin-port': { type: 'string' },
    'dns-port': { type: 'string' },
    'dns-admin-port': { type: 'string' },
    'app-port': { type: 'string' },
    'dns-upstream': { type: 'string' },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return EXIT_CODES.ok;
  }
  // listening from the start: a Ctrl-C while the demo starts stops it cleanly once started
  const signal = untilSignal();
  const demo = await runDemo({
    ports: {
      agentAdmin: portFlag(values['admin-port'], '--admin-port'),
      proxyListener: portFlag(values['proxy-port'], '--proxy-port'),
      proxyAdmin: portFlag(values['proxy-admin-port'], '--proxy-admin-port'),
      dns: portFlag(values['dns-port'], '--dns-port'),
      dnsAdmin: portFlag(values['dns-admin-port'], '--dns-admin-port'),
      app: portFlag(values['app-port'], '--app-port'),
    },
    ...(values['dns-upstream'] ? { dnsUpstreams: String(values['dns-upstream']).split(',').map((u) => u.trim()).filter(Boolean) } : {}),
    out: process.stdout,
  });
  const why = await Promise.race([signal, demo.stoppedBySelf]);
  await demo.stop();
  process.stdout.write(`\nmesh-agent demo: stopped (${why}); everything it started is gone\n`);
  return EXIT_CODES.ok;
}

async function commandWait(argv: string[]): Promise<number> {
  const { values } = parse(argv, { timeout: { type: 'string' }, admin: { type: 'string' }, registered: { type: 'boolean' } });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return EXIT_CODES.ok;
  }
  const timeoutSeconds = values.timeout === undefined ? 60 : Number(values.timeout);
  if (!Number.isFinite(timeoutSeconds) || timeoutSeconds < 0) throw usageError(`--timeout: "${String(values.timeout)}" is not a number of seconds`);
  const status = await waitUntilReady({
    adminUrl: (values.admin as string | undefined) ?? DEFAULT_ADMIN,
    timeoutMs: timeoutSeconds * 1000,
    until: values.registered ? '<SERVICE_REGISTERED>' : '<FLOW_TAKEOVER>',
  });
  process.stdout.write(`mesh-agent: sidecar ready: ${status}\n`);
  return EXIT_CODES.ok;
}

async function commandDoctor(argv: string[]): Promise<number> {
  const { values } = parse(argv, { json: { type: 'boolean' }, admin: { type: 'string' } });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return EXIT_CODES.ok;
  }
  return runDoctor({ agentAdminUrl: (values.admin as string | undefined) ?? DEFAULT_ADMIN, json: Boolean(values.json), out: process.stdout });
}

async function commandTrace(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { json: { type: 'boolean' }, admin: { type: 'string' }, via: { type: 'string' } }, true);
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return EXIT_CODES.ok;
  }
  if (positionals.length !== 1) throw usageError('trace takes exactly one URL, e.g. mesh-agent trace http://order/');
  const via = values.via as string | undefined;
  if (via !== undefined && via !== 'capture' && via !== 'proxy') throw usageError(`--via: "${via}" is not capture or proxy`);
  return runTrace(positionals[0], { agentAdminUrl: (values.admin as string | undefined) ?? DEFAULT_ADMIN, json: Boolean(values.json), out: process.stdout, via });
}

export async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first.startsWith('-')) {
    if (first === '--help' || first === '-h') {
      process.stdout.write(`${USAGE}\n`);
      return EXIT_CODES.ok;
    }
    if (first === '--version' || first === '-V') {
      process.stdout.write(`mesh-agent ${agentVersion()}\n`);
      return EXIT_CODES.ok;
    }
    return commandStart(argv);
  }
  switch (first) {
    case 'start':
      return commandStart(rest);
    case 'demo':
      return commandDemo(rest);
    case 'wait':
      return commandWait(rest);
    case 'doctor':
      return commandDoctor(rest);
    case 'trace':
      return commandTrace(rest);
    case 'ca':
      return runCaCommand(rest);
    case 'rules':
      return runRulesCommand(rest);
    case 'version':
      process.stdout.write(`mesh-agent ${agentVersion()}\n`);
      return EXIT_CODES.ok;
    case 'help':
      process.stdout.write(`${USAGE}\n`);
      return EXIT_CODES.ok;
    default:
      throw usageError(`unknown command "${first}": use start, demo, wait, doctor, trace, rules, ca or version`);
  }
}

export function runCli(argv: string[]): Promise<void> {
  return runMain('mesh-agent', () => main(argv)).then(() => {
    // everything is stopped by now; a client library's lingering timer must not keep the process
    setTimeout(() => process.exit(), 1000).unref();
  });
}
