import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ConfigError, MeshError } from '@mesh-agent/shared-config';
import { afterAll, describe, expect, it } from 'vitest';
import {
  DryRunExecutor,
  SpawnExecutor,
  applyRules,
  buildRuleSets,
  compareTable,
  normalizeIp,
  parseBackend,
  parseCidr,
  parseSave,
  planApply,
  planClean,
  renderListing,
  renderRestore,
  resolveCaptureConfig,
  appliedFamilyOf,
  cleanRules,
  renderSave,
  writeState,
} from '../src/index';

/* Building and rendering: pure functions, checked against golden files and the source document. */

const GOLDEN = resolve(__dirname, 'golden');
const BIN = resolve(__dirname, '../bin/mesh-iptables.js');
const SOURCE_DOC = '/work/shared/reference/tsf-mesh-local-proxy-ops.md';
const DOC_ARGS = ['--local-ip', '9.77.7.28', '--inbound-ports', '8089', '--proxy-uid', '1000', '--dns-port', '55354', '--proxy-port', '15001', '--outbound-cidrs', '240.240.0.1'];
const docConfig = () => resolveCaptureConfig({ localIp: '9.77.7.28', inboundPorts: [8089], proxyUid: 1000, dnsPort: 55354, proxyPort: 15001, outboundCidrs: ['240.240.0.1'] });

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

const tmp = mkdtempSync(join(tmpdir(), 'mesh-ipt-unit-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('mesh-iptables print with the source document inputs', () => {
  it('prints its chains, in its order, byte for byte (the {特定 IP} placeholder is the mesh VIP)', () => {
    const r = cli(['print', ...DOC_ARGS]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(readFileSync(join(GOLDEN, 'source-document.list.txt'), 'utf8'));

    const doc = readFileSync(SOURCE_DOC, 'utf8');
    const block = /\*\*iptables -t nat -L -n\*\*\n```plaintext\n([\s\S]*?)```/.exec(doc);
    expect(block, 'the source document block').not.toBeNull();
    const docLines = block![1].split('\n');
    const ourLines = r.stdout.split('\n');
    expect(ourLines).toHaveLength(docLines.length);
    docLines.forEach((line, i) => {
      if (line.includes('{特定 IP}')) {
        expect(ourLines[i]).toBe('DNAT       tcp  --  0.0.0.0/0            240.240.0.1          to:9.77.7.28:15001');
        expect(line.replace(/\{特定 IP\}\s+/, '')).toBe(ourLines[i].replace(/240\.240\.0\.1\s+/, ''));
      } else {
        expect(ourLines[i], `line ${i + 1}`).toBe(line);
      }
    });
    const chainOrder = ourLines.filter((l) => l.startsWith('Chain ')).map((l) => l.split(' ')[1]);
    expect(chainOrder).toEqual(['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING', 'DNS_OUTPUT', 'ISTIO_INBOUND', 'ISTIO_OUTPUT', 'ISTIO_REDIRECT']);
  });

  for (const format of ['restore', 'save', 'check', 'cleanup'] as const) {
    it(`--format ${format} equals its golden file`, () => {
      const r = cli(['print', ...DOC_ARGS, '--format', format]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(readFileSync(join(GOLDEN, `source-document.${format}.txt`), 'utf8'));
    });
  }

  it('dual stack with exclusions and a GID equals its golden file', () => {
    const r = cli([
      'print', ...DOC_ARGS, '--ipv6', '--local-ip6', 'fd00::28', '--outbound-cidrs', '240.240.0.1,fd00:240::/64', '--proxy-gid', '1000',
      '--outbound-exclude-cidrs', '240.240.9.0/24', '--outbound-exclude-ports', '9090', '--format', 'restore',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(readFileSync(join(GOLDEN, 'dual-stack.restore.txt'), 'utf8'));
  });

  it('--no-dns-capture6 keeps DNS capture in IPv4 and leaves IPv6 DNS alone (mesh-dns not on ::1)', () => {
    const r = cli(['print', ...DOC_ARGS, '--ipv6', '--local-ip6', 'fd00::28', '--no-dns-capture6', '--format', 'restore']);
    expect(r.code, r.stderr).toBe(0);
    const [v4, v6] = r.stdout.split('# ip6tables');
    expect(v4).toContain('-A OUTPUT -j DNS_OUTPUT');
    expect(v4).toContain('-A DNS_OUTPUT -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.1:55354');
    expect(v6).not.toContain('DNS_OUTPUT');
    expect(v6).toContain('-A ISTIO_INBOUND -d fd00::28/128 -p tcp -m tcp --dport 8089 -j ISTIO_REDIRECT');
    // it follows --no-dns-capture unless given
    expect(cli(['print', ...DOC_ARGS, '--ipv6', '--local-ip6', 'fd00::28', '--no-dns-capture', '--format', 'restore']).stdout).not.toContain('DNS_OUTPUT');
    expect(cli(['print', ...DOC_ARGS, '--dns-capture6', '--no-dns-capture6']).code).toBe(2);
  });

  it('the owner RETURN is the first rule of DNS_OUTPUT and ISTIO_OUTPUT', () => {
    const [set] = buildRuleSets(docConfig());
    for (const chain of ['DNS_OUTPUT', 'ISTIO_OUTPUT']) {
      const first = set.rules.find((r) => r.chain === chain)!;
      expect(first.target.type).toBe('RETURN');
      expect(first.match.uidOwner).toBe(1000);
    }
  });

  it('--help documents every flag and the exit codes', () => {
    const r = cli(['--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--config', '--local-ip', '--local-ip6', '--inbound-ports', '--inbound-exclude-ports', '--inbound-exclude-cidrs', '--outbound-cidrs',
      '--outbound-exclude-cidrs', '--outbound-exclude-ports', '--proxy-port', '--dns-port', '--dns-address', '--dns-address6', '--proxy-uid', '--proxy-gid',
      '--no-dns-capture', '--no-dns-capture6', '--ipv6', '--format', '--dry-run', '--state-file', '--backend', '--netns', '--force']) {
      expect(r.stdout).toContain(flag);
    }
    expect(r.stdout).toMatch(/Exit codes:[\s\S]*4 {2}verify found/);
    const readme = readFileSync(resolve(__dirname, '../README.md'), 'utf8');
    for (const flag of r.stdout.match(/--[a-z0-9-]+/g)!) expect(readme, `README documents ${flag}`).toContain(flag);
  });
});

describe('bad input is refused before anything runs', () => {
  const bad: [string, Record<string, unknown>, string][] = [
    ['invalid IP', { localIp: '9.77.7.280' }, 'localIp: "9.77.7.280" is not a valid IPv4 address'],
    ['invalid CIDR', { localIp: '9.77.7.28', outboundCidrs: '240.240.0.0/40' }, 'outboundCidrs[0]: "240.240.0.0/40" is not an IP address or CIDR'],
    ['invalid port', { localIp: '9.77.7.28', proxyPort: 70000 }, 'proxyPort: 70000 is not a port'],
    ['a port list with junk', { localIp: '9.77.7.28', inboundPorts: '8089,80a,,9000' }, 'inboundPorts[1]: "80a" is not a port'],
    ['invalid UID', { localIp: '9.77.7.28', proxyUid: 'root' }, 'proxyUid: "root" is not a numeric UID'],
    ['missing local IP', { inboundPorts: '8089' }, 'localIp: required'],
    ['unknown setting', { localIP: '9.77.7.28' }, 'localIP: unknown setting'],
    ['IPv6 CIDR with ipv6 off', { localIp: '9.77.7.28', outboundCidrs: ['fd00::/8'] }, 'is IPv6 but ipv6 is off'],
  ];
  for (const [name, input, message] of bad) {
    it(name, () => {
      let caught: unknown;
      try {
        resolveCaptureConfig(input);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(ConfigError);
      expect((caught as ConfigError).exitCode).toBe(2);
      expect((caught as Error).message).toContain(message);
    });
  }

  it('every problem is listed at once, with file and line for a config file', () => {
    const file = join(tmp, 'bad.yaml');
    writeFileSync(file, 'localIp: 9.77.7.28\ninboundPorts:\n  - 8089\n  - junk\nproxyUid: -5\n');
    const r = cli(['apply', '--config', file, '--state-file', join(tmp, 'never.json')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('error [MESH_CONFIG_INVALID]');
    expect(r.stderr).toContain(`${file}:4: inboundPorts[1]: "junk" is not a port`);
    expect(r.stderr).toContain(`${file}:5: proxyUid: -5 is not a numeric UID`);
    expect(r.stderr).not.toContain('using iptables'); // nothing ran
  });

  it('flags override the file and unknown flags or commands are usage errors (exit 2)', () => {
    const file = join(tmp, 'good.yaml');
    writeFileSync(file, 'localIp: 9.77.7.28\ninboundPorts: [8089]\n');
    const r = cli(['print', '--config', file, '--inbound-ports', '9000', '--format', 'restore']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('--dport 9000 -j ISTIO_REDIRECT');
    expect(r.stdout).not.toContain('--dport 8089 -j ISTIO_REDIRECT');
    const badFlag = cli(['print', '--local-ip', '1.2.3', '--inbound-ports', '8089,x8']);
    expect(badFlag.code).toBe(2);
    expect(badFlag.stderr).toContain('--local-ip: "1.2.3" is not a valid IPv4 address');
    expect(badFlag.stderr).toContain('--inbound-ports[1]: "x8" is not a port');
    expect(cli(['print', '--bogus']).code).toBe(2);
    expect(cli(['frobnicate']).code).toBe(2);
    expect(cli([]).code).toBe(2);
    expect(cli(['print', ...DOC_ARGS, '--format', 'xml']).code).toBe(2);
  });
});

describe('addresses', () => {
  it('normalises as iptables-save prints them', () => {
    expect(normalizeIp('FD00:0:0:0:0:0:0:1')?.address).toBe('fd00::1');
    expect(normalizeIp('2001:db8:0:1:0:0:0:1')?.address).toBe('2001:db8:0:1::1');
    expect(normalizeIp('2001:db8:0:1:1:1:1:1')?.address).toBe('2001:db8:0:1:1:1:1:1');
    expect(normalizeIp('::ffff:1.2.3.4')?.address).toBe('::ffff:102:304');
    expect(normalizeIp('01.2.3.4')).toBeUndefined();
    expect(normalizeIp('1:2:3:4:5:6:7:8:9')).toBeUndefined();
    expect(parseCidr('10.1.2.3/8')).toEqual({ family: 4, address: '10.0.0.0', prefix: 8 });
    expect(parseCidr('fd00:1:ffff::5/33')).toEqual({ family: 6, address: 'fd00:1:8000::', prefix: 33 });
    expect(parseCidr('240.240.0.1')).toEqual({ family: 4, address: '240.240.0.1', prefix: 32 });
    expect(parseCidr('10.0.0.0/')).toBeUndefined();
  });

  it('detects the backend from iptables -V', () => {
    expect(parseBackend('iptables v1.8.9 (nf_tables)\n').backend).toBe('nf_tables');
    expect(parseBackend('iptables v1.8.7 (legacy)\n').backend).toBe('legacy');
    expect(parseBackend('iptables v1.6.1\n')).toMatchObject({ backend: 'legacy', version: '1.6.1' });
  });
});

describe('plans against a saved table', () => {
  const saved = parseSave(
    [
      '*nat',
      ':PREROUTING ACCEPT [0:0]',
      ':OUTPUT ACCEPT [0:0]',
      ':DNS_OUTPUT - [0:0]',
      ':OTHER - [0:0]',
      '-A OUTPUT -p udp -m udp --dport 5353 -j RETURN',
      '-A OUTPUT -j DNS_OUTPUT',
      '-A OUTPUT -j DNS_OUTPUT',
      '-A DNS_OUTPUT -m owner --uid-owner 1000 -j RETURN',
      '-A OTHER -p udp -m udp --dport 53 -j RETURN',
      'COMMIT',
    ].join('\n'),
  );

  it('apply deletes every old jump (duplicates too) and redeclares our chains, touching nothing else', () => {
    const [set] = buildRuleSets(docConfig());
    const input = planApply(appliedFamilyOf(set), saved).input!;
    expect(input.split('\n').filter((l) => l === '-D OUTPUT -j DNS_OUTPUT')).toHaveLength(2);
    expect(input).not.toContain('5353');
    expect(input).not.toContain('OTHER');
    expect(input).toContain(':DNS_OUTPUT - [0:0]');
  });

  it('clean removes only the recorded chains and the jumps into them; nothing to do when absent', () => {
    const input = planClean(4, ['DNS_OUTPUT', 'ISTIO_OUTPUT'], saved).input!;
    expect(input).toBe(['*nat', '-D OUTPUT -j DNS_OUTPUT', '-D OUTPUT -j DNS_OUTPUT', '-F DNS_OUTPUT', '-X DNS_OUTPUT', 'COMMIT', ''].join('\n'));
    expect(planClean(4, ['ISTIO_OUTPUT'], saved).input).toBeUndefined();
  });

  it('verify finds the missing, extra and changed rules', () => {
    const [set] = buildRuleSets(docConfig());
    const diffs = compareTable(appliedFamilyOf(set), saved);
    expect(diffs.filter((d) => d.note?.includes('does not exist')).map((d) => d.chain).sort()).toEqual(['ISTIO_INBOUND', 'ISTIO_OUTPUT', 'ISTIO_REDIRECT']);
    // OUTPUT has DNS_OUTPUT twice where ISTIO_OUTPUT, DNS_OUTPUT should be: the first is a changed rule
    expect(diffs.filter((d) => d.chain === 'OUTPUT')).toEqual([
      { kind: 'changed', family: 4, chain: 'OUTPUT', expected: '-A OUTPUT -j ISTIO_OUTPUT', actual: '-A OUTPUT -j DNS_OUTPUT' },
    ]);
    expect(diffs).toContainEqual(expect.objectContaining({ kind: 'missing', chain: 'DNS_OUTPUT', expected: '-A DNS_OUTPUT -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.1:55354' }));
    expect(diffs.some((d) => d.chain === 'OTHER')).toBe(false);
    const exact = parseSave(renderRestore(set).replace('*nat', '*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]'));
    expect(compareTable(appliedFamilyOf(set), exact)).toEqual([]);
  });
});

describe('executors', () => {
  it('a dry run records the restore input instead of running it and writes no state', async () => {
    const printed: string[] = [];
    const dry = new DryRunExecutor({ write: (t) => printed.push(t) });
    const stateFile = join(tmp, 'dry-state.json');
    const result = await applyRules(buildRuleSets(docConfig()), { executor: dry, stateFile });
    expect(result.dryRun).toBe(true);
    const restores = dry.commands.filter((c) => c.command === 'iptables-restore');
    expect(restores).toHaveLength(1);
    expect(restores[0].args).toEqual(['--noflush']);
    expect(restores[0].input).toBe(renderRestore(buildRuleSets(docConfig())[0]));
    expect(printed.join('')).toContain("iptables-restore --noflush <<'EOF'");
    expect(() => readFileSync(stateFile)).toThrow();
  });

  it('a dry-run clean prints the one restore transaction and keeps the record', async () => {
    // the reader answers iptables-save with a fixed table (a stand-in at unit level; the namespace tests run it for real)
    const [set] = buildRuleSets(docConfig());
    const savedText = renderSave(set).replace(':OUTPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]\n-A OUTPUT -p udp -m udp --dport 5353 -j RETURN');
    const reader = { dryRun: false, description: 'fixed table', run: async (req: { args: string[] }) => ({ code: 0, stdout: req.args.includes('-V') ? 'iptables v1.8.9 (nf_tables)\n' : savedText, stderr: '' }) };
    const stateFile = join(tmp, 'dry-clean.json');
    writeState(stateFile, { version: 1, appliedAt: 'x', backend: 'nf_tables', families: [appliedFamilyOf(set)] });
    const dry = new DryRunExecutor({ reader });
    const result = await cleanRules({ executor: dry, stateFile });
    expect(result.removed).toEqual([{ family: 4, chains: ['DNS_OUTPUT', 'ISTIO_INBOUND', 'ISTIO_OUTPUT', 'ISTIO_REDIRECT'] }]);
    const restores = dry.commands.filter((c) => c.command === 'iptables-restore');
    expect(restores).toHaveLength(1);
    expect(restores[0].input).toContain('-D PREROUTING -p tcp -j ISTIO_INBOUND');
    expect(restores[0].input).toContain('-X DNS_OUTPUT');
    expect(restores[0].input).not.toContain('5353');
    expect(readFileSync(stateFile, 'utf8')).toContain('ISTIO_OUTPUT');
  });

  it('a missing iptables binary is an error saying what to install (exit 3)', async () => {
    const executor = new SpawnExecutor({ prefix: ['env', 'PATH=/nonexistent'] });
    const err = await applyRules(buildRuleSets(docConfig()), { executor, stateFile: join(tmp, 'x.json') }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MeshError);
    expect((err as MeshError).code).toBe('MESH_IPT_NOT_FOUND');
    expect((err as MeshError).exitCode).toBe(3);
    expect((err as MeshError).hint).toContain('apt-get install iptables');
    const direct = await new SpawnExecutor().run({ command: 'iptables-does-not-exist', args: [], mutates: false }).catch((e: unknown) => e);
    expect((direct as MeshError).code).toBe('MESH_IPT_NOT_FOUND');
  });

  it('the listing renders user chains sorted with their reference counts', () => {
    const [set] = buildRuleSets(resolveCaptureConfig({ localIp: '198.18.0.1', inboundPorts: '*', inboundExcludePorts: '22', dnsCapture: false }));
    const listing = renderListing(set);
    expect(listing).toContain('Chain ISTIO_REDIRECT (1 references)');
    expect(listing).not.toContain('DNS_OUTPUT');
    expect(listing).toContain('RETURN     tcp  --  0.0.0.0/0            0.0.0.0/0            tcp dpt:22');
    expect(listing).toContain('ISTIO_REDIRECT  tcp  --  0.0.0.0/0            198.18.0.1          \n');
  });
});
