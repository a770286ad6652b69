import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkPrereqs, createPair, deleteNs, digA, nsExec, saveAll, startServers, stopServer, tcpHello, type Pair } from './support/netns';

/*
 * The listing renderer against the real `iptables -t nat -L -n`, and the IPv6 rules
 * (ip6tables-restore) with real traffic, in namespaces this test creates.
 */

const prereqs = checkPrereqs();
const BIN = resolve(__dirname, '../bin/mesh-iptables.js');
const VIP6 = 'fd00:240::1';
const MESH_DNS_ANSWER = '198.18.99.1';
const PEER_DNS_ANSWER = '198.18.99.2';

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

/** iptables 1.8.9 lists protocols by number under -n; the source document (and our listing) by name. */
function protocolNames(listing: string): string {
  return listing.replace(/^(\S+\s+)(0|6|17)(\s+)(--)/gm, (_all, target: string, num: string, space: string, opt: string) => {
    const name = { '0': 'all', '6': 'tcp', '17': 'udp' }[num]!;
    // keep the column: the number was printed %-5s like the name
    return `${target}${name}${' '.repeat(Math.max(0, num.length + space.length - name.length))}${opt}`;
  });
}

if (!prereqs.ok && process.env.CI) {
  describe('namespace listing and IPv6 tests', () => {
    it('can run here (CI must run them)', () => {
      throw new Error(`namespace tests cannot run: ${prereqs.reason}`);
    });
  });
}

// IPv6 can be off in the kernel (ipv6.disable=1); probe it in a throwaway namespace (unshare -n).
const v6Probe = prereqs.ok
  ? spawnSync('unshare', ['-n', 'sh', '-c', 'ip link set lo up && ip -6 addr show dev lo | grep -q "::1" && ip6tables -t nat -L -n >/dev/null'], { encoding: 'utf8' })
  : undefined;
const v6Ok = v6Probe?.status === 0;
if (prereqs.ok && !v6Ok) console.warn(`SKIPPED listing/IPv6 namespace tests: this kernel has no IPv6 nat: ${v6Probe?.error?.message ?? v6Probe?.stderr}`);

describe.skipIf(!prereqs.ok || !v6Ok)('listing and IPv6 in fresh network namespaces', () => {
  let pair: Pair;
  let stateDir: string;
  const servers: ChildProcess[] = [];
  let before4 = '';
  let before6 = '';

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'mesh-ipt6-'));
    pair = createPair('s', { v6: true, peerExtraAddress6: VIP6 });
    // somebody else's rules in both families, so the nat tables exist before and must survive
    nsExec(pair.a, ['iptables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'udp', '--dport', '5353', '-j', 'RETURN']);
    nsExec(pair.a, ['ip6tables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'udp', '--dport', '5353', '-j', 'RETURN']);
    before4 = saveAll(pair.a);
    before6 = saveAll(pair.a, 'ip6tables-save');
    servers.push(
      await startServers(pair.a, {
        tcp: [{ host: '::', port: 15001, tag: 'proxy' }],
        dns: [
          { host: '127.0.0.1', port: 55354, answer: MESH_DNS_ANSWER },
          { host: '::1', port: 55354, answer: MESH_DNS_ANSWER },
        ],
      }),
      await startServers(pair.b, {
        tcp: [{ host: '::', port: 80, tag: 'peer-80' }],
        dns: [{ host: '::', port: 53, answer: PEER_DNS_ANSWER }],
      }),
    );
  }, 120_000);

  afterAll(() => {
    for (const s of servers) stopServer(s);
    if (pair) deleteNs(pair.a, pair.b);
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
    rmSync(join(tmpdir(), `mesh-ipt-nonroot-${process.pid}`), { recursive: true, force: true });
  });

  it('the listing equals what the real `iptables -t nat -L -n` prints for the applied rules', () => {
    const ns = pair.a;
    const state = join(stateDir, 'listing.json');
    const args = ['--local-ip', '9.77.7.28', '--inbound-ports', '8089,8090', '--proxy-gid', '1000', '--outbound-cidrs', '240.240.0.0/16', '--outbound-exclude-ports', '9090'];
    // a namespace with nothing else in it, so the real listing holds only our rules
    const bare = `${ns}-bare`;
    expect(spawnSync('ip', ['netns', 'add', bare]).status).toBe(0);
    try {
      expect(cli(['apply', '--netns', bare, '--state-file', state, ...args]).code).toBe(0);
      const real = protocolNames(nsExec(bare, ['iptables', '-t', 'nat', '-L', '-n']).stdout);
      const ours = cli(['print', ...args]).stdout;
      expect(ours).toBe(real);

      // the rendered reverse list, run command by command, leaves an empty nat table
      const cleanup = cli(['print', ...args, '--format', 'cleanup']).stdout.trim().split('\n');
      expect(cleanup.length).toBeGreaterThan(0);
      for (const line of cleanup) nsExec(bare, line.split(' '));
      expect(saveAll(bare, 'iptables-save', 'nat')).toBe(
        ['*nat', ':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]', 'COMMIT', ''].join('\n'),
      );
    } finally {
      deleteNs(bare);
    }
  });

  it('concurrent applies to one namespace all succeed and leave exactly one copy', async () => {
    const bare = `${pair.a}-conc`;
    expect(spawnSync('ip', ['netns', 'add', bare]).status).toBe(0);
    try {
      const state = join(stateDir, 'conc.json');
      const args = ['apply', '--netns', bare, '--state-file', state, '--local-ip', '198.18.10.1', '--inbound-ports', '8089'];
      // a lock left behind by a crashed run (its pid is gone) is taken over
      writeFileSync(`${state}.lock`, `${spawnSync('true').pid}\n`);
      const runs = await Promise.all(
        [0, 1, 2, 3, 4, 5].map(
          () =>
            new Promise<{ code: number | null; stderr: string }>((done) => {
              const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
              let stderr = '';
              child.stderr.on('data', (c) => (stderr += c));
              child.on('close', (code) => done({ code, stderr }));
            }),
        ),
      );
      for (const run of runs) expect(run.code, run.stderr).toBe(0);
      const nat = saveAll(bare, 'iptables-save', 'nat').split('\n');
      expect(nat.filter((l) => l === '-A OUTPUT -j ISTIO_OUTPUT')).toHaveLength(1);
      expect(nat.filter((l) => l === '-A OUTPUT -j DNS_OUTPUT')).toHaveLength(1);
      expect(nat.filter((l) => l === '-A PREROUTING -p tcp -j ISTIO_INBOUND')).toHaveLength(1);
      expect(nat.filter((l) => l.startsWith('-A DNS_OUTPUT'))).toHaveLength(3);
      expect(cli(['verify', '--netns', bare, '--state-file', state]).code).toBe(0);
      expect(existsSync(`${state}.lock`)).toBe(false);
    } finally {
      deleteNs(bare);
    }
  });

  it('--ipv6 installs the rules with ip6tables-restore too', () => {
    const state = join(stateDir, 'v6.json');
    const r = cli(['apply', '--netns', pair.a, '--state-file', state, '--ipv6', '--local-ip', pair.addrA, '--local-ip6', pair.addr6A,
      '--inbound-ports', '8089', '--outbound-cidrs', `240.240.0.1,${VIP6}`]);
    expect(r.code, r.stderr).toBe(0);
    const nat6 = saveAll(pair.a, 'ip6tables-save', 'nat');
    expect(nat6).toContain('-A DNS_OUTPUT -p udp -m udp --dport 53 -j DNAT --to-destination [::1]:55354');
    expect(nat6).toContain(`-A ISTIO_OUTPUT -d ${VIP6}/128 -p tcp -j DNAT --to-destination [${pair.addr6A}]:15001`);
    expect(nat6).toContain(`-A ISTIO_INBOUND -d ${pair.addr6A}/128 -p tcp -m tcp --dport 8089 -j ISTIO_REDIRECT`);
    expect(saveAll(pair.a, 'iptables-save', 'nat')).toContain('-A ISTIO_OUTPUT -d 240.240.0.1/32');
    expect(cli(['verify', '--netns', pair.a, '--state-file', state]).code).toBe(0);

    // IPv6 traffic is captured: TCP to the v6 VIP reaches the proxy, DNS over v6 reaches mesh-dns
    expect(tcpHello(pair.a, VIP6, 80, 2000)).toBe('proxy');
    expect(digA(pair.a, pair.addr6B, { uid: 2000 })).toBe(MESH_DNS_ANSWER);
    // the exempt UID is not
    expect(tcpHello(pair.a, VIP6, 80, 1000)).toBe('peer-80');
    expect(digA(pair.a, pair.addr6B, { uid: 1000 })).toBe(PEER_DNS_ANSWER);

    // turning IPv6 off removes the ip6tables rules in the same apply
    const off = cli(['apply', '--netns', pair.a, '--state-file', state, '--local-ip', pair.addrA, '--inbound-ports', '8089']);
    expect(off.code, off.stderr).toBe(0);
    expect(saveAll(pair.a, 'ip6tables-save')).toBe(before6);
    expect(tcpHello(pair.a, VIP6, 80, 2000)).toBe('peer-80');

    expect(cli(['clean', '--netns', pair.a, '--state-file', state]).code).toBe(0);
    expect(saveAll(pair.a)).toBe(before4);
    expect(saveAll(pair.a, 'ip6tables-save')).toBe(before6);
  });

  it('clean of both families restores both tables', () => {
    const state = join(stateDir, 'v6b.json');
    expect(cli(['apply', '--netns', pair.a, '--state-file', state, '--ipv6', '--local-ip', pair.addrA, '--local-ip6', pair.addr6A, '--inbound-ports', '8089']).code).toBe(0);
    expect(saveAll(pair.a, 'ip6tables-save')).not.toBe(before6);
    const r = cli(['clean', '--netns', pair.a, '--state-file', state]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('removed ipv6 chains');
    expect(saveAll(pair.a)).toBe(before4);
    expect(saveAll(pair.a, 'ip6tables-save')).toBe(before6);
  });

  it('when the IPv6 restore fails after the IPv4 one succeeded, IPv4 is rolled back: nothing half-applied', () => {
    const state = join(stateDir, 'rollback.json');
    const base = ['--netns', pair.a, '--state-file', state, '--ipv6', '--local-ip', pair.addrA, '--local-ip6', pair.addr6A];
    expect(cli(['apply', ...base, '--inbound-ports', '8089']).code).toBe(0);
    // a foreign IPv6 chain jumps into ISTIO_REDIRECT: dropping inbound capture cannot delete it there
    nsExec(pair.a, ['ip6tables', '-t', 'nat', '-N', 'FOREIGN6']);
    nsExec(pair.a, ['ip6tables', '-t', 'nat', '-A', 'FOREIGN6', '-p', 'tcp', '-j', 'ISTIO_REDIRECT']);
    const v4 = saveAll(pair.a);
    const v6 = saveAll(pair.a, 'ip6tables-save');
    const recorded = readFileSync(state, 'utf8');

    const r = cli(['apply', ...base, '--inbound-ports', '']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('applying the ipv6 rules');
    expect(saveAll(pair.a)).toBe(v4); // IPv4 went back to the rules recorded before
    expect(saveAll(pair.a, 'ip6tables-save')).toBe(v6);
    expect(readFileSync(state, 'utf8')).toBe(recorded);

    nsExec(pair.a, ['ip6tables', '-t', 'nat', '-F', 'FOREIGN6']);
    nsExec(pair.a, ['ip6tables', '-t', 'nat', '-X', 'FOREIGN6']);
    expect(cli(['clean', '--netns', pair.a, '--state-file', state]).code).toBe(0);
    expect(saveAll(pair.a)).toBe(before4);
    expect(saveAll(pair.a, 'ip6tables-save')).toBe(before6);
  });

  it('a non-root user gets a permission error saying what is needed (exit 3)', () => {
    const r = nsExec(pair.a, ['setpriv', '--reuid=2000', '--regid=2000', '--clear-groups', process.execPath, BIN, 'apply', '--local-ip', pair.addrA,
      // a state path that does not exist (the test's temp dir is private to root)
      '--state-file', join(tmpdir(), `mesh-ipt-nonroot-${process.pid}`, 'state.json')], { allowFail: true });
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('MESH_IPT_PERMISSION');
    expect(r.stderr).toContain('run as root');
    expect(saveAll(pair.a)).toBe(before4);
    expect(existsSync(join(tmpdir(), `mesh-ipt-nonroot-${process.pid}`))).toBe(false); // refused before creating anything
    // a dry run needs no root: it prints what it would run
    const dry = nsExec(pair.a, ['setpriv', '--reuid=2000', '--regid=2000', '--clear-groups', process.execPath, BIN, 'apply', '--dry-run', '--local-ip', pair.addrA,
      '--state-file', join(tmpdir(), `mesh-ipt-nonroot-${process.pid}`, 'state.json')], { allowFail: true });
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stderr).toContain('backend: nf_tables');
    expect(dry.stdout).toContain(`-A ISTIO_OUTPUT -d 240.240.0.1/32 -p tcp -j DNAT --to-destination ${pair.addrA}:15001`);
  });
});

// The legacy backend needs the kernel's ip_tables modules; probe it in a throwaway namespace (unshare -n).
const legacyProbe = prereqs.ok ? spawnSync('unshare', ['-n', 'iptables-legacy', '-t', 'nat', '-L', '-n'], { encoding: 'utf8' }) : undefined;
const legacyOk = legacyProbe?.status === 0;
if (prereqs.ok && !legacyOk) console.warn(`SKIPPED legacy backend test: iptables-legacy does not work here: ${legacyProbe?.error?.message ?? legacyProbe?.stderr}`);

describe.skipIf(!prereqs.ok || !legacyOk)('the legacy backend, chosen with --backend legacy', () => {
  let pair: Pair;
  let stateDir: string;
  const servers: ChildProcess[] = [];

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'mesh-iptl-'));
    pair = createPair('l', { peerExtraAddress: '240.240.0.1' });
    servers.push(
      await startServers(pair.a, { tcp: [{ host: '0.0.0.0', port: 15001, tag: 'proxy' }] }),
      await startServers(pair.b, { tcp: [{ host: '0.0.0.0', port: 80, tag: 'peer-80' }] }),
    );
  }, 120_000);

  afterAll(() => {
    for (const s of servers) stopServer(s);
    if (pair) deleteNs(pair.a, pair.b);
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  it('applies with iptables-legacy-restore, says so, captures traffic and cleans up', () => {
    // a rule somebody else owns, so the legacy nat table exists before (it stays loaded once used)
    nsExec(pair.a, ['iptables-legacy', '-t', 'nat', '-A', 'OUTPUT', '-p', 'udp', '--dport', '5353', '-j', 'RETURN']);
    const before = saveAll(pair.a, 'iptables-legacy-save');
    const nftBefore = saveAll(pair.a);
    const args = ['--netns', pair.a, '--state-file', join(stateDir, 'state.json'), '--backend', 'legacy', '--local-ip', pair.addrA, '--inbound-ports', '8089'];
    const r = cli(['apply', ...args]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('using iptables-legacy 1.8.9 (backend: legacy)');
    const legacy = saveAll(pair.a, 'iptables-legacy-save', 'nat');
    expect(legacy).toContain(`-A ISTIO_OUTPUT -d 240.240.0.1/32 -p tcp -j DNAT --to-destination ${pair.addrA}:15001`);
    expect(saveAll(pair.a)).toBe(nftBefore); // nothing went to the nf_tables side
    expect(cli(['verify', ...args]).code).toBe(0);
    expect(tcpHello(pair.a, '240.240.0.1', 80, 2000)).toBe('proxy');
    expect(tcpHello(pair.a, '240.240.0.1', 80, 1000)).toBe('peer-80');

    const listing = protocolNames(nsExec(pair.a, ['iptables-legacy', '-t', 'nat', '-L', '-n']).stdout);
    const ours = cli(['print', '--local-ip', pair.addrA, '--inbound-ports', '8089']).stdout;
    // the same listing, plus the foreign rule in OUTPUT
    expect(listing.replace(/^RETURN +udp +--.*udp dpt:5353\n/m, '')).toBe(ours);

    expect(cli(['clean', '--netns', pair.a, '--state-file', join(stateDir, 'state.json'), '--backend', 'legacy']).code).toBe(0);
    expect(saveAll(pair.a, 'iptables-legacy-save')).toBe(before);
    expect(tcpHello(pair.a, '240.240.0.1', 80, 2000)).toBe('peer-80');
  });
});
