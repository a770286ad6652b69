// The UID exemption, for real: inside a network namespace this test creates, the source document's
// DNS_OUTPUT chain DNATs port 53 to mesh-dns; mesh-dns runs as an unprivileged UID. With that UID
// exempted, its upstream queries reach the real resolver; without, they come back to it and it
// breaks the loop at once (SERVFAIL and MESH_DNS_CAPTURE_LOOP) instead of flooding itself.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stopChild, tempDir, waitFor } from './helpers';

const NS = `mdns-uid-${process.pid}`;
const RESOLVER = '198.18.53.1';
const NOBODY = 65534;
const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'mesh-dns.js');
const asUser = (uid: number): string[] => (uid === 0 ? [] : ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups']);
// mesh-dns runs as an unprivileged UID (nobody; the agent's default is 1000) when that user can
// read this checkout; otherwise (a checkout under a private home) the roles swap: mesh-dns runs as
// root with UID 0 exempted and the application's dig as nobody. Same chain, same mechanism.
const nobodyCanRun = spawnSync('setpriv', [...asUser(NOBODY).slice(1), process.execPath, bin, '--version']).status === 0;
const UID = nobodyCanRun ? NOBODY : 0;
const CLIENT_UID = nobodyCanRun ? 0 : NOBODY;

const inNs = (...args: string[]): string => execFileSync('ip', ['netns', 'exec', NS, ...args], { encoding: 'utf8', timeout: 30_000 });
const digInNs = (name: string, extra: string[] = []): string =>
  inNs(...asUser(CLIENT_UID), 'dig', `@${RESOLVER}`, name, 'A', '+tries=1', '+timeout=5', '+nocookie', ...extra);

function captureRules(exemptUid: number): string {
  return [
    '*nat',
    ':DNS_OUTPUT - [0:0]',
    '-A OUTPUT -j DNS_OUTPUT',
    `-A DNS_OUTPUT -m owner --uid-owner ${exemptUid} -j RETURN`,
    '-A DNS_OUTPUT -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.1:55354',
    '-A DNS_OUTPUT -p tcp -m tcp --dport 53 -j DNAT --to-destination 127.0.0.1:55354',
    'COMMIT',
    '',
  ].join('\n');
}

describe('DNS capture and the UID exemption (network namespace)', () => {
  const children: ChildProcess[] = [];
  let dir: string;
  let meshDns: ChildProcess;
  let stderr = '';
  let logs = '';

  beforeAll(async () => {
    dir = tempDir('uid');
    fs.chmodSync(dir, 0o755);
    execFileSync('ip', ['netns', 'add', NS]);
    inNs('ip', 'link', 'set', 'lo', 'up');
    inNs('ip', 'addr', 'add', `${RESOLVER}/32`, 'dev', 'lo');
    // the "real" resolver of this namespace, on port 53
    const dnsmasq = spawn('ip', ['netns', 'exec', NS, 'dnsmasq', '--no-daemon', '--port=53', `--listen-address=${RESOLVER}`, '--bind-interfaces', '--no-resolv', '--no-hosts',
      '--conf-file=/dev/null', `--pid-file=${path.join(dir, 'dnsmasq.pid')}`, '--user=root', '--address=/ext.test/198.18.5.5'], { stdio: 'ignore' });
    children.push(dnsmasq);
    await waitFor(() => digInNs('www.ext.test', ['+timeout=1']).includes('198.18.5.5'), 'dnsmasq in the namespace');
    meshDns = spawn('ip', ['netns', 'exec', NS, ...asUser(UID), process.execPath, bin,
      '--listen', '127.0.0.1:55354', '--no-admin', '--upstream', RESOLVER, '--upstream-timeout', '1000', '--service', 'order', '--log-level', 'error'], { stdio: ['ignore', 'pipe', 'pipe'] });
    meshDns.stderr!.on('data', (d) => (stderr += d));
    meshDns.stdout!.on('data', (d) => (logs += d));
    children.push(meshDns);
    await waitFor(() => inNs('dig', '@127.0.0.1', '-p', '55354', 'order', '+short', '+tries=1', '+timeout=1').includes('240.240.0.1'), 'mesh-dns in the namespace');
  });

  afterAll(async () => {
    for (const child of children) await stopChild(child);
    try {
      execFileSync('ip', ['netns', 'delete', NS]);
    } catch {
      // already gone
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('with the UID exempted: port 53 goes to mesh-dns, and its own upstream queries escape to the resolver', () => {
    execFileSync('ip', ['netns', 'exec', NS, 'iptables-restore', '--noflush'], { input: captureRules(UID) });
    expect(inNs('iptables-save', '-t', 'nat')).toContain(`--uid-owner ${UID} -j RETURN`);
    const mesh = digInNs('order.default.svc');
    expect(mesh).toMatch(/order\.default\.svc\.\s+30\s+IN\s+A\s+240\.240\.0\.1/); // captured: only mesh-dns knows this name
    expect(mesh).toMatch(/flags: qr aa/);
    const outside = digInNs('www.ext.test');
    expect(outside).toMatch(/status: NOERROR/);
    expect(outside).toMatch(/www\.ext\.test\.\s+\d+\s+IN\s+A\s+198\.18\.5\.5/);
    const overTcp = digInNs('www.ext.test', ['+tcp']);
    expect(overTcp).toMatch(/198\.18\.5\.5/);
  });

  it('without the exemption its upstream query loops back, and mesh-dns breaks the loop with a clear error', async () => {
    inNs('iptables', '-t', 'nat', '-F', 'DNS_OUTPUT');
    execFileSync('ip', ['netns', 'exec', NS, 'iptables-restore', '--noflush'], { input: captureRules(UID + 1).replace(':DNS_OUTPUT - [0:0]\n-A OUTPUT -j DNS_OUTPUT\n', '') });
    const looped = digInNs('loop.ext.test');
    expect(looped).toMatch(/status: SERVFAIL/);
    // mesh names never leave mesh-dns, so they still work
    expect(digInNs('order')).toMatch(/240\.240\.0\.1/);
    expect(meshDns.exitCode).toBeNull();
    expect(stderr).toBe(''); // nothing crashed
    const loopLine = await waitFor(() => logs.split('\n').find((line) => line.includes('MESH_DNS_CAPTURE_LOOP')), `the loop to be logged; logs:\n${logs}`, 50);
    expect(JSON.parse(loopLine!).msg).toMatch(new RegExp(`came back to it \\(uid ${UID}\\)`));
  });
});
