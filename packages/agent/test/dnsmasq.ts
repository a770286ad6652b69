// A real dnsmasq on loopback, started by the test, as the upstream resolver for names outside the
// mesh: no test sends queries to the machine's own resolver.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { queryA } from '../src/diagnostics/dns-wire';
import { freePort } from './etcd-server';

export const DNSMASQ = '/usr/sbin/dnsmasq';

export interface Dnsmasq {
  port: number;
  /** `127.0.0.1:PORT`, as an upstream in the agent config or the demo's --dns-upstream */
  upstream: string;
  stop(): void;
}

/** Starts dnsmasq answering `hosts` (name -> address) and nothing else; resolves once it answers. */
export async function startDnsmasq(hosts: Record<string, string>): Promise<Dnsmasq> {
  const dir = mkdtempSync(join(tmpdir(), 'agent-dnsmasq-'));
  const port = await freePort();
  writeFileSync(join(dir, 'hosts'), Object.entries(hosts).map(([name, address]) => `${address} ${name}\n`).join(''));
  const child: ChildProcess = spawn(
    DNSMASQ,
    ['--keep-in-foreground', '--no-resolv', '--no-hosts', `--addn-hosts=${join(dir, 'hosts')}`, '--listen-address=127.0.0.1', '--bind-interfaces', `--port=${port}`, '--pid-file=', '--user=root'],
    { stdio: 'ignore' },
  );
  const stop = () => {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  const [name] = Object.keys(hosts);
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) break;
    const answer = await queryA('127.0.0.1', port, name, 300);
    if (answer.addresses.length) return { port, upstream: `127.0.0.1:${port}`, stop };
  }
  stop();
  throw new Error(`dnsmasq did not start on 127.0.0.1:${port} (exit ${child.exitCode})`);
}
