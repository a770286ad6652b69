import { spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildRuleSets, renderCheckCommands, resolveCaptureConfig } from '../src/index';
import { checkPrereqs, createPair, deleteNs, digA, nsExec, saveAll, startServers, stopServer, tcpHello, type Pair } from './support/netns';

/*
 * The capture rules in real network namespaces, checked with iptables-save and with real traffic.
 * Namespace A is "the host" (198.18.10.1, the sidecar's side); namespace B is a peer (198.18.10.2)
 * that also owns the mesh VIP 240.240.0.1, so traffic that is NOT captured visibly reaches B instead.
 */

const prereqs = checkPrereqs();
const BIN = resolve(__dirname, '../bin/mesh-iptables.js');
const VIP = '240.240.0.1';
const PROXY_UID = 1000;
const APP_UID = 2000;
const MESH_DNS_ANSWER = '198.18.99.1';
const PEER_DNS_ANSWER = '198.18.99.2';

function cli(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

if (!prereqs.ok && process.env.CI) {
  describe('namespace capture tests', () => {
    it('can run here (CI must run them)', () => {
      throw new Error(`namespace tests cannot run: ${prereqs.reason}`);
    });
  });
}
if (!prereqs.ok && !process.env.CI) console.warn(`SKIPPED namespace capture tests: ${prereqs.reason}`);

describe.skipIf(!prereqs.ok)('capture rules in a fresh network namespace', () => {
  let pair: Pair;
  let stateDir: string;
  let stateFile: string;
  const servers: ChildProcess[] = [];
  let before = '';
  let ruleArgs: string[];

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'mesh-ipt-'));
    stateFile = join(stateDir, 'state.json');
    pair = createPair('c', { peerExtraAddress: VIP });
    ruleArgs = ['--netns', pair.a, '--state-file', stateFile, '--local-ip', pair.addrA, '--inbound-ports', '8089', '--outbound-cidrs', VIP, '--proxy-uid', String(PROXY_UID)];
    // rules somebody else owns, DNS ones included: clean must leave every one of them
    nsExec(pair.a, ['iptables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'udp', '--dport', '5353', '-j', 'RETURN']);
    nsExec(pair.a, ['iptables', '-t', 'nat', '-N', 'OTHER_DNS']);
    nsExec(pair.a, ['iptables', '-t', 'nat', '-A', 'OTHER_DNS', '-p', 'udp', '--dport', '53', '-d', '198.18.77.7', '-j', 'RETURN']);
    nsExec(pair.a, ['iptables', '-t', 'nat', '-A', 'POSTROUTING', '-j', 'OTHER_DNS']);
    nsExec(pair.a, ['iptables', '-t', 'filter', '-A', 'INPUT', '-p', 'tcp', '--dport', '9999', '-j', 'ACCEPT']);
    before = saveAll(pair.a);

    servers.push(
      await startServers(pair.a, {
        tcp: [
          { host: '0.0.0.0', port: 15001, tag: 'proxy' },
          { host: '0.0.0.0', port: 8089, tag: 'app-8089' },
          { host: '0.0.0.0', port: 8090, tag: 'app-8090' },
        ],
        dns: [{ host: '127.0.0.1', port: 55354, answer: MESH_DNS_ANSWER }],
      }),
      await startServers(pair.b, {
        tcp: [{ host: '0.0.0.0', port: 80, tag: 'peer-80' }],
        dns: [{ host: '0.0.0.0', port: 53, answer: PEER_DNS_ANSWER }],
      }),
    );
  }, 120_000);

  afterAll(() => {
    for (const s of servers) stopServer(s);
    if (pair) deleteNs(pair.a, pair.b);
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  it('nothing is captured before apply (the peer answers)', () => {
    expect(tcpHello(pair.a, VIP, 80, APP_UID)).toBe('peer-80');
    expect(digA(pair.a, pair.addrB, { uid: APP_UID })).toBe(PEER_DNS_ANSWER);
    expect(tcpHello(pair.b, pair.addrA, 8089)).toBe('app-8089');
  });

  it('apply installs the source document chains, visible in iptables-save', () => {
    const r = cli(['apply', ...ruleArgs]);
    expect(r.stderr).toContain('backend: nf_tables');
    expect(r.code, r.stderr).toBe(0);
    const nat = saveAll(pair.a, 'iptables-save', 'nat');
    for (const line of [
      '-A PREROUTING -p tcp -j ISTIO_INBOUND',
      '-A OUTPUT -j ISTIO_OUTPUT',
      '-A OUTPUT -j DNS_OUTPUT',
      `-A DNS_OUTPUT -m owner --uid-owner ${PROXY_UID} -j RETURN`,
      '-A DNS_OUTPUT -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.1:55354',
      '-A DNS_OUTPUT -p tcp -m tcp --dport 53 -j DNAT --to-destination 127.0.0.1:55354',
      `-A ISTIO_INBOUND -d ${pair.addrA}/32 -p tcp -m tcp --dport 8089 -j ISTIO_REDIRECT`,
      `-A ISTIO_OUTPUT -m owner --uid-owner ${PROXY_UID} -j RETURN`,
      `-A ISTIO_OUTPUT -d ${VIP}/32 -p tcp -j DNAT --to-destination ${pair.addrA}:15001`,
      '-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001',
    ]) {
      expect(nat.split('\n')).toContain(line);
    }
    // the owner RETURN comes first in both chains
    const lines = nat.split('\n');
    expect(lines.find((l) => l.startsWith('-A DNS_OUTPUT'))).toContain('--uid-owner');
    expect(lines.find((l) => l.startsWith('-A ISTIO_OUTPUT'))).toContain('--uid-owner');
    expect(JSON.parse(readFileSync(stateFile, 'utf8')).families[0].chains).toEqual(['DNS_OUTPUT', 'ISTIO_INBOUND', 'ISTIO_OUTPUT', 'ISTIO_REDIRECT']);
  });

  it('a TCP connection to the VIP from another UID arrives at the listener on 15001', () => {
    expect(tcpHello(pair.a, VIP, 80, APP_UID)).toBe('proxy');
    expect(tcpHello(pair.a, VIP, 443, APP_UID)).toBe('proxy');
  });

  it('a DNS query to any server on port 53 (udp and tcp) arrives at the listener on 55354', () => {
    expect(digA(pair.a, pair.addrB, { uid: APP_UID })).toBe(MESH_DNS_ANSWER);
    expect(digA(pair.a, '198.18.200.200', { uid: APP_UID })).toBe(MESH_DNS_ANSWER);
    expect(digA(pair.a, pair.addrB, { uid: APP_UID, tcp: true })).toBe(MESH_DNS_ANSWER);
  });

  it('packets of the exempt UID are not captured', () => {
    expect(tcpHello(pair.a, VIP, 80, PROXY_UID)).toBe('peer-80');
    expect(digA(pair.a, pair.addrB, { uid: PROXY_UID })).toBe(PEER_DNS_ANSWER);
  });

  it('traffic to the service port from another namespace reaches 15001; other ports do not', () => {
    expect(tcpHello(pair.b, pair.addrA, 8089)).toBe('proxy');
    expect(tcpHello(pair.b, pair.addrA, 8090)).toBe('app-8090');
  });

  it('verify reports ok, then missing, extra and changed rules with exit 4', () => {
    const ok = cli(['verify', ...ruleArgs]);
    expect(ok.stdout).toContain('verify: ok');
    expect(ok.code).toBe(0);
    // with no rule options it verifies against the record of what was applied
    expect(cli(['verify', '--netns', pair.a, '--state-file', stateFile]).code).toBe(0);

    nsExec(pair.a, ['iptables', '-t', 'nat', '-D', 'DNS_OUTPUT', '-p', 'tcp', '-m', 'tcp', '--dport', '53', '-j', 'DNAT', '--to-destination', '127.0.0.1:55354']);
    nsExec(pair.a, ['iptables', '-t', 'nat', '-A', 'ISTIO_OUTPUT', '-d', '198.18.50.0/24', '-j', 'RETURN']);
    nsExec(pair.a, ['iptables', '-t', 'nat', '-R', 'ISTIO_INBOUND', '1', '-d', `${pair.addrA}/32`, '-p', 'tcp', '--dport', '8099', '-j', 'ISTIO_REDIRECT']);
    nsExec(pair.a, ['iptables', '-t', 'nat', '-A', 'OUTPUT', '-j', 'ISTIO_OUTPUT']);
    const bad = cli(['verify', ...ruleArgs]);
    expect(bad.code, bad.stdout + bad.stderr).toBe(4);
    expect(bad.stdout).toContain('missing ipv4 -A DNS_OUTPUT -p tcp -m tcp --dport 53 -j DNAT --to-destination 127.0.0.1:55354');
    expect(bad.stdout).toContain('extra   ipv4 -A ISTIO_OUTPUT -d 198.18.50.0/24 -j RETURN');
    expect(bad.stdout).toContain('extra   ipv4 -A OUTPUT -j ISTIO_OUTPUT');
    expect(bad.stdout).toMatch(/changed ipv4 ISTIO_INBOUND: expected: .*--dport 8089[^\n]*\n.*found: .*--dport 8099/);
    expect(bad.stdout).toContain('verify: 4 differences');
  });

  it('applying again repairs the rules and leaves exactly one copy (no "Chain already exists")', () => {
    const first = cli(['apply', ...ruleArgs]);
    expect(first.code, first.stderr).toBe(0);
    const once = saveAll(pair.a);
    const second = cli(['apply', ...ruleArgs]);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr).not.toMatch(/already exists/i);
    expect(saveAll(pair.a)).toBe(once);
    expect(once.split('\n').filter((l) => l === '-A OUTPUT -j ISTIO_OUTPUT')).toHaveLength(1);
    expect(once.split('\n').filter((l) => l === '-A PREROUTING -p tcp -j ISTIO_INBOUND')).toHaveLength(1);
    expect(cli(['verify', ...ruleArgs]).code).toBe(0);
  });

  it('every rendered `iptables -C` check passes against the applied rules', () => {
    const sets = buildRuleSets(resolveCaptureConfig({ localIp: pair.addrA, inboundPorts: '8089', outboundCidrs: VIP, proxyUid: PROXY_UID }));
    const checks = renderCheckCommands(sets[0]);
    expect(checks).toHaveLength(10);
    for (const check of checks) {
      const r = nsExec(pair.a, [check.command, ...check.args], { allowFail: true });
      expect(r.code, `${check.args.join(' ')}: ${r.stderr}`).toBe(0);
    }
    // and a check of a rule that is not there fails
    const absent = nsExec(pair.a, ['iptables', '-t', 'nat', '-C', 'ISTIO_INBOUND', '-d', `${pair.addrA}/32`, '-p', 'tcp', '-m', 'tcp', '--dport', '9', '-j', 'ISTIO_REDIRECT'], { allowFail: true });
    expect(absent.code).not.toBe(0);
  });

  it('applying a changed config replaces the old rules in one step, and traffic follows it', () => {
    const changed = ['--netns', pair.a, '--state-file', stateFile, '--local-ip', pair.addrA, '--inbound-ports', '8090', '--outbound-cidrs', '240.240.0.0/16', '--no-dns-capture'];
    const r = cli(['apply', ...changed]);
    expect(r.code, r.stderr).toBe(0);
    const nat = saveAll(pair.a, 'iptables-save', 'nat');
    expect(nat).not.toContain('DNS_OUTPUT');
    expect(nat).not.toContain('--dport 8089');
    expect(nat).toContain(`-A ISTIO_INBOUND -d ${pair.addrA}/32 -p tcp -m tcp --dport 8090 -j ISTIO_REDIRECT`);
    expect(nat).toContain('-A ISTIO_OUTPUT -d 240.240.0.0/16 -p tcp -j DNAT');
    expect(cli(['verify', ...changed]).code).toBe(0);

    expect(tcpHello(pair.b, pair.addrA, 8090)).toBe('proxy');
    expect(tcpHello(pair.b, pair.addrA, 8089)).toBe('app-8089');
    expect(digA(pair.a, pair.addrB, { uid: APP_UID })).toBe(PEER_DNS_ANSWER);
    expect(tcpHello(pair.a, VIP, 80, APP_UID)).toBe('proxy');
  });

  it('clean removes what was applied (even though the config changed since) and leaves every other rule', () => {
    // clean is given the ORIGINAL config's flags: it must work from the record, not from them
    const r = cli(['clean', '--netns', pair.a, '--state-file', stateFile]);
    expect(r.code, r.stderr).toBe(0);
    expect(saveAll(pair.a)).toBe(before);
    expect(() => readFileSync(stateFile)).toThrow();
    expect(tcpHello(pair.b, pair.addrA, 8090)).toBe('app-8090');
    expect(tcpHello(pair.a, VIP, 80, APP_UID)).toBe('peer-80');
  });

  it('clean twice succeeds and changes nothing', () => {
    const r = cli(['clean', '--netns', pair.a, '--state-file', stateFile]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('nothing to clean');
    expect(saveAll(pair.a)).toBe(before);
  });

  it('after a crash that lost the record, apply then clean --force still restores the table', () => {
    expect(cli(['apply', ...ruleArgs]).code).toBe(0);
    rmSync(stateFile);
    const plain = cli(['clean', '--netns', pair.a, '--state-file', stateFile]);
    expect(plain.code).toBe(0);
    expect(saveAll(pair.a)).not.toBe(before);
    const forced = cli(['clean', '--force', '--netns', pair.a, '--state-file', stateFile]);
    expect(forced.code, forced.stderr).toBe(0);
    expect(saveAll(pair.a)).toBe(before);
  });

  it('a dry run prints the restore input and changes nothing', () => {
    const r = cli(['apply', '--dry-run', ...ruleArgs]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("iptables-restore --noflush <<'EOF'");
    expect(r.stdout).toContain('-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001');
    expect(saveAll(pair.a)).toBe(before);
    expect(() => readFileSync(stateFile)).toThrow();
  });

  it('a restore the kernel rejects changes nothing and says why (exit 1)', () => {
    // a foreign chain jumps into ISTIO_REDIRECT: dropping inbound capture would have to delete that chain
    expect(cli(['apply', ...ruleArgs]).code).toBe(0);
    nsExec(pair.a, ['iptables', '-t', 'nat', '-N', 'FOREIGN_REF']);
    nsExec(pair.a, ['iptables', '-t', 'nat', '-A', 'FOREIGN_REF', '-p', 'tcp', '-j', 'ISTIO_REDIRECT']);
    const applied = saveAll(pair.a);
    const r = cli(['apply', '--netns', pair.a, '--state-file', stateFile, '--local-ip', pair.addrA, '--outbound-cidrs', VIP]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('MESH_IPT_RESTORE_FAILED');
    expect(r.stderr).toContain('a rule that is not ours still jumps to ISTIO_REDIRECT');
    expect(saveAll(pair.a)).toBe(applied);
    nsExec(pair.a, ['iptables', '-t', 'nat', '-F', 'FOREIGN_REF']);
    nsExec(pair.a, ['iptables', '-t', 'nat', '-X', 'FOREIGN_REF']);
    expect(cli(['clean', '--netns', pair.a, '--state-file', stateFile]).code).toBe(0);
    expect(saveAll(pair.a)).toBe(before);
  });
});
