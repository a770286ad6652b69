import { parseArgs } from 'node:util';
import { ConfigError, EXIT_CODES, MeshError, runMain } from '@mesh-agent/shared-config';
import type { BackendChoice } from './backend';
import { resolveCaptureConfig, type CaptureRulesConfig, type ConfigSource } from './config';
import { readCaptureConfigFile } from './config-file';
import { DryRunExecutor, SpawnExecutor, type Executor } from './executor';
import { applyRules, cleanRules, verifyRules } from './manager';
import { formatDifference } from './plan';
import { renderListing } from './render-listing';
import { commandText, renderCheckCommands, renderCleanupCommands, renderRestore, renderSave } from './render-save';
import { buildRuleSets, type RuleSet } from './rules';
import { DEFAULT_STATE_FILE } from './state-file';

const NAME = 'mesh-iptables';

export const HELP_TEXT = `Usage: mesh-iptables <print|apply|verify|clean> [options]

Builds the mesh capture rules (nat table: DNS_OUTPUT, ISTIO_INBOUND, ISTIO_OUTPUT,
ISTIO_REDIRECT and the jumps into them) and prints, applies, verifies or removes them.

Commands:
  print    print the rules; touches nothing (see --format)
  apply    install the rules in one iptables-restore --noflush transaction per
           family and record them in the state file; applying again replaces them
  verify   compare iptables-save -t nat with the rules (or, with no rule options,
           with the state file); exit 4 on any missing, extra or changed rule
  clean    remove what the state file records (and the jumps into it), whatever
           the configuration is now; succeeds when nothing is there

Rule options (flags override the --config file):
  --config FILE                 YAML or JSON file with the settings below, as
                                camelCase keys (localIp, inboundPorts, ...)
  --local-ip IP                 this host's IPv4 address (required when capturing)
  --local-ip6 IP                this host's IPv6 address (with --ipv6)
  --inbound-ports LIST          service ports captured inbound, e.g. 8089,8090,
                                or '*' for every TCP port (default: none)
  --inbound-exclude-ports LIST  with --inbound-ports '*': ports never captured
  --inbound-exclude-cidrs LIST  source CIDRs never captured inbound
  --outbound-cidrs LIST         destinations captured outbound: the mesh VIP or
                                VIP CIDRs (default 240.240.0.1)
  --outbound-exclude-cidrs LIST destination CIDRs never captured outbound
  --outbound-exclude-ports LIST destination ports never captured outbound
  --proxy-port PORT             the proxy's listener port (default 15001)
  --dns-port PORT               mesh-dns' port (default 55354)
  --dns-address IP              mesh-dns' IPv4 address (default 127.0.0.1)
  --dns-address6 IP             mesh-dns' IPv6 address (default ::1)
  --proxy-uid UID               UID of the proxy and mesh-dns; never captured
                                (default 1000)
  --proxy-gid GID               GID of the proxy and mesh-dns; never captured
                                (default: no GID rule)
  --dns-capture, --no-dns-capture
                                capture udp/tcp port 53 to mesh-dns (default on)
  --dns-capture6, --no-dns-capture6
                                with --ipv6: capture IPv6 DNS too, to
                                [--dns-address6]:PORT (default: as --dns-capture)
  --ipv6, --no-ipv6             also install the rules with ip6tables (default off)

Other options:
  --format FORMAT               print only: list (iptables -t nat -L -n, default),
                                restore (iptables-restore input), save
                                (iptables-save text), check (-C commands),
                                cleanup (the -D/-F/-X commands that remove them)
  --dry-run                     apply/clean: print the commands instead of
                                running them (reads iptables-save when it can)
  --state-file PATH             record of what was applied
                                (default ${DEFAULT_STATE_FILE})
  --backend auto|nft|legacy     iptables binaries to use: the system default
                                (auto), iptables-nft-* or iptables-legacy-*
  --netns NAME                  run iptables inside network namespace NAME
                                (ip netns exec NAME ...)
  --force                       clean: with no state file, remove the mesh
                                chains by name
  -h, --help                    show this help

Exit codes:
  0  success (verify: the rules are as expected)
  1  iptables rejected the rules, or another failure
  2  bad arguments or configuration (nothing was run)
  3  needs root, or iptables is missing
  4  verify found missing, extra or changed rules
  5  another run held the state file's lock for 60 s
`;

const FLAG_TO_KEY: Record<string, keyof CaptureRulesConfig> = {
  'local-ip': 'localIp',
  'local-ip6': 'localIp6',
  'inbound-ports': 'inboundPorts',
  'inbound-exclude-ports': 'inboundExcludePorts',
  'inbound-exclude-cidrs': 'inboundExcludeCidrs',
  'outbound-cidrs': 'outboundCidrs',
  'outbound-exclude-cidrs': 'outboundExcludeCidrs',
  'outbound-exclude-ports': 'outboundExcludePorts',
  'proxy-port': 'proxyPort',
  'dns-port': 'dnsPort',
  'dns-address': 'dnsAddress',
  'dns-address6': 'dnsAddress6',
  'proxy-uid': 'proxyUid',
  'proxy-gid': 'proxyGid',
};

const COMMANDS = ['print', 'apply', 'verify', 'clean'] as const;
type Command = (typeof COMMANDS)[number];
const FORMATS = ['list', 'restore', 'save', 'check', 'cleanup'] as const;
const BACKENDS = ['auto', 'nft', 'legacy'] as const;

function usage(message: string): MeshError {
  return new MeshError('MESH_USAGE', message, { exitCode: EXIT_CODES.usage, hint: 'see mesh-iptables --help' });
}

export interface ParsedCli {
  command: Command | 'help';
  config: Record<string, unknown>;
  configSource: ConfigSource;
  /** true when any rule setting came from flags or a file */
  hasRuleInput: boolean;
  /** config keys whose value came from a flag (so errors name the flag) */
  flagKeys: Set<string>;
  format: (typeof FORMATS)[number];
  dryRun: boolean;
  stateFile: string;
  backend: BackendChoice;
  netns?: string;
  force: boolean;
}

export function parseCli(argv: string[]): ParsedCli {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {
    config: { type: 'string' },
    format: { type: 'string' },
    'dry-run': { type: 'boolean' },
    'state-file': { type: 'string' },
    backend: { type: 'string' },
    netns: { type: 'string' },
    force: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
    'dns-capture': { type: 'boolean' },
    'no-dns-capture': { type: 'boolean' },
    'dns-capture6': { type: 'boolean' },
    'no-dns-capture6': { type: 'boolean' },
    ipv6: { type: 'boolean' },
    'no-ipv6': { type: 'boolean' },
  };
  for (const flag of Object.keys(FLAG_TO_KEY)) options[flag] = { type: 'string' };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw usage((err as Error).message.split('\n')[0]);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const positionals = parsed.positionals;
  if (values.help || positionals[0] === 'help') {
    return { command: 'help', config: {}, configSource: {}, hasRuleInput: false, flagKeys: new Set(), format: 'list', dryRun: false, stateFile: DEFAULT_STATE_FILE, backend: 'auto', force: false };
  }
  if (positionals.length === 0) throw usage(`a command is needed: one of ${COMMANDS.join(', ')}`);
  if (positionals.length > 1) throw usage(`unexpected argument '${positionals[1]}' after the command '${positionals[0]}'`);
  const command = positionals[0] as Command;
  if (!COMMANDS.includes(command)) throw usage(`unknown command '${positionals[0]}': use one of ${COMMANDS.join(', ')}`);

  const format = (values.format ?? 'list') as (typeof FORMATS)[number];
  if (!FORMATS.includes(format)) throw usage(`--format ${String(values.format)}: use one of ${FORMATS.join(', ')}`);
  if (values.format !== undefined && command !== 'print') throw usage('--format only applies to print');
  const backend = (values.backend ?? 'auto') as BackendChoice;
  if (!BACKENDS.includes(backend)) throw usage(`--backend ${String(values.backend)}: use one of ${BACKENDS.join(', ')}`);
  if (values['dry-run'] && (command === 'print' || command === 'verify')) throw usage(`--dry-run applies to apply and clean; ${command} changes nothing anyway`);
  if (values.force && command !== 'clean') throw usage('--force only applies to clean');
  if (values.netns !== undefined && !/^[A-Za-z0-9_.-]+$/.test(String(values.netns))) throw usage(`--netns ${String(values.netns)}: not a network namespace name`);
  for (const [on, off] of [['dns-capture', 'no-dns-capture'], ['dns-capture6', 'no-dns-capture6'], ['ipv6', 'no-ipv6']]) {
    if (values[on] && values[off]) throw usage(`--${on} and --${off} contradict each other`);
  }

  let config: Record<string, unknown> = {};
  let configSource: ConfigSource = {};
  if (values.config !== undefined) {
    const file = readCaptureConfigFile(String(values.config));
    config = file.value;
    configSource = file.source;
  }
  let fromFlags = false;
  for (const [flag, key] of Object.entries(FLAG_TO_KEY)) {
    if (values[flag] !== undefined) {
      config[key] = values[flag];
      fromFlags = true;
    }
  }
  if (values['dns-capture']) config.dnsCapture = true;
  if (values['no-dns-capture']) config.dnsCapture = false;
  if (values['dns-capture6']) config.dnsCapture6 = true;
  if (values['no-dns-capture6']) config.dnsCapture6 = false;
  if (values.ipv6) config.ipv6 = true;
  if (values['no-ipv6']) config.ipv6 = false;
  fromFlags ||= ['dns-capture', 'no-dns-capture', 'dns-capture6', 'no-dns-capture6', 'ipv6', 'no-ipv6'].some((f) => values[f] !== undefined);
  // flag values are not in the file: only name the file for keys that came from it
  const fileLineOf = configSource.lineOf;
  const flagKeys = new Set(Object.entries(FLAG_TO_KEY).filter(([flag]) => values[flag] !== undefined).map(([, key]) => key as string));
  configSource = {
    file: configSource.file,
    lineOf: (path) => (flagKeys.has(path.split(/[.[]/)[0]) ? undefined : fileLineOf?.(path)),
  };

  return {
    command,
    config,
    configSource,
    hasRuleInput: fromFlags || values.config !== undefined,
    flagKeys,
    format,
    dryRun: Boolean(values['dry-run']),
    stateFile: String(values['state-file'] ?? DEFAULT_STATE_FILE),
    backend,
    netns: values.netns === undefined ? undefined : String(values.netns),
    force: Boolean(values.force),
  };
}

function renderFormat(sets: RuleSet[], format: ParsedCli['format']): string {
  const parts = sets.map((set) => {
    switch (format) {
      case 'list':
        return renderListing(set);
      case 'restore':
        return renderRestore(set);
      case 'save':
        return renderSave(set);
      case 'check':
        return renderCheckCommands(set).map((c) => `${commandText(c.command, c.args)}\n`).join('');
      case 'cleanup':
        return renderCleanupCommands(set).map((c) => `${commandText(c.command, c.args)}\n`).join('');
    }
  });
  if (sets.length === 1) return parts[0];
  return sets.map((set, i) => `# ${set.family === 4 ? 'iptables' : 'ip6tables'}\n${parts[i]}`).join('\n');
}

/** Validates the settings; a problem with a value given as a flag names the flag, not the config key. */
function resolveForCli(cli: ParsedCli) {
  try {
    return resolveCaptureConfig(cli.config, cli.configSource);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const keyToFlag = new Map(Object.entries(FLAG_TO_KEY).map(([flag, key]) => [key as string, flag]));
    const issues = err.issues.map((issue) => {
      const key = issue.path.split(/[.[]/)[0];
      const flag = keyToFlag.get(key);
      return cli.flagKeys.has(key) && flag ? { ...issue, file: undefined, line: undefined, path: `--${flag}${issue.path.slice(key.length)}` } : issue;
    });
    throw new ConfigError(issues, { source: cli.configSource.file, hint: err.hint });
  }
}

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

/** The CLI's work, returning the exit code (errors are thrown as MeshError). */
export async function mainCli(argv: string[], io: CliIo = { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t) }): Promise<number> {
  const cli = parseCli(argv);
  if (cli.command === 'help') {
    io.stdout(HELP_TEXT);
    return EXIT_CODES.ok;
  }
  // verify with no rule input compares with what was recorded; everything else builds from the config
  // clean works from the record alone, never from the current config (so a changed config cleans
  // what was really applied); verify with no rule input compares with that record too
  const needsRules = cli.command === 'print' || cli.command === 'apply' || (cli.command === 'verify' && cli.hasRuleInput);
  const sets = needsRules ? buildRuleSets(resolveForCli(cli)) : undefined;
  if (cli.command === 'print') {
    io.stdout(renderFormat(sets!, cli.format));
    return EXIT_CODES.ok;
  }

  const log = (line: string) => io.stderr(`${NAME}: ${line}\n`);
  const real = new SpawnExecutor({ prefix: cli.netns ? ['ip', 'netns', 'exec', cli.netns] : [] });
  // a dry run still reads the tables when it may, so the printed plan matches the host
  // (not root: only `iptables -V` runs, and the tables are assumed empty)
  const canRead = process.getuid?.() === 0;
  const versionOnly: Executor = {
    dryRun: false,
    description: `${real.description}, tables assumed empty (not root)`,
    run: (req) => (req.args.includes('-V') ? real.run(req) : Promise.resolve({ code: 0, stdout: '', stderr: '' })),
  };
  const executor: Executor = cli.dryRun ? new DryRunExecutor({ reader: canRead ? real : versionOnly, write: io.stdout }) : real;
  const runtime = { executor, stateFile: cli.stateFile, backend: cli.backend, log };

  switch (cli.command) {
    case 'apply':
      await applyRules(sets!, runtime);
      return EXIT_CODES.ok;
    case 'clean':
      await cleanRules({ ...runtime, force: cli.force, families: cli.config.ipv6 === true ? [4, 6] : [4] });
      return EXIT_CODES.ok;
    case 'verify': {
      const result = await verifyRules(sets, runtime);
      if (!sets && result.checked.length === 0) {
        throw new MeshError('MESH_IPT_NOTHING_TO_VERIFY', `no rule options given and nothing recorded in ${cli.stateFile}`, {
          exitCode: EXIT_CODES.usage,
          hint: 'pass the rule options (or --config FILE) to verify against, or --state-file of an earlier apply',
        });
      }
      for (const diff of result.differences) io.stdout(`${formatDifference(diff)}\n`);
      const total = result.checked.reduce((n, c) => n + c.rules, 0);
      if (result.ok) {
        io.stdout(`verify: ok: all ${total} rules present, nothing extra\n`);
        return EXIT_CODES.ok;
      }
      io.stdout(`verify: ${result.differences.length} difference${result.differences.length === 1 ? '' : 's'} (${total} rules expected)\n`);
      return EXIT_CODES.verifyMismatch;
    }
  }
}

export function runCli(argv: string[]): Promise<void> {
  return runMain(NAME, () => mainCli(argv));
}
