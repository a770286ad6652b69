// Real parts for the tests: dnsmasq as the upstream, dig as the client, ephemeral loopback ports.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { createLogger } from '@mesh-agent/admin-kit';

const execFileAsync = promisify(execFile);

/**
 * The two ways mesh-dns serves UDP, for the tests that run on both: the recvmmsg/sendmmsg addon
 * (when it is built; udp-paths.test.ts checks that it is and that it is used) and Node's dgram (the fallback).
 */
export const UDP_PATHS = [
  { path: 'recvmmsg', nativeUdp: true },
  { path: 'dgram', nativeUdp: false },
] as const;

/** A logger that writes nowhere: tests read behaviour from the wire, not from logs. */
export function quietLogger() {
  return createLogger({ component: 'mesh-dns', scopes: ['admin', 'default', 'healthz', 'model'], level: 'none' });
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `mesh-dns-${prefix}-`));
}

/** A loopback port free for both UDP and TCP right now. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const udp = dgram.createSocket('udp4');
    const port = await new Promise<number>((resolve) => udp.bind(0, '127.0.0.1', () => resolve(udp.address().port)));
    const ok = await new Promise<boolean>((resolve) => {
      const srv = net.createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    udp.close();
    if (ok) return port;
  }
  throw new Error('no free port found');
}

export interface DigResult {
  status: string;
  flags: string[];
  answers: { name: string; ttl: number; type: string; data: string }[];
  question: string;
  raw: string;
  tcp: boolean;
}

/** Runs the real dig and parses its output. `extra` are dig options like '+tcp', '+noedns'. */
export async function dig(port: number, name: string, type = 'A', extra: string[] = [], server = '127.0.0.1'): Promise<DigResult> {
  const args = [`@${server}`, '-p', String(port), name, type, '+tries=1', '+timeout=8', '+nocookie', ...extra];
  const { stdout } = await execFileAsync('dig', args, { timeout: 30_000 }).catch((err: { stdout?: string; message: string }) => {
    if (err.stdout) return { stdout: err.stdout };
    throw err;
  });
  const status = /status: ([A-Z]+)/.exec(stdout)?.[1] ?? 'NO_ANSWER';
  const flags = (/;; flags: ([a-z ]+);/.exec(stdout)?.[1] ?? '').trim().split(/\s+/).filter(Boolean);
  const answerBlock = /;; ANSWER SECTION:\n([\s\S]*?)\n\n/.exec(stdout)?.[1] ?? '';
  const answers = answerBlock
    .split('\n')
    .filter((line) => line && !line.startsWith(';'))
    .map((line) => {
      const [n, ttl, , t, ...data] = line.split(/\s+/);
      return { name: n, ttl: Number(ttl), type: t, data: data.join(' ') };
    });
  const question = /;; QUESTION SECTION:\n;(\S+)/.exec(stdout)?.[1] ?? '';
  return { status, flags, answers, question, raw: stdout, tcp: /\(TCP\)/.test(stdout) };
}

export interface Dnsmasq {
  port: number;
  stop(): Promise<void>;
}

/**
 * dnsmasq on a loopback port: www.ext.test and ext.test -> 198.18.5.5, *.nx.test -> NXDOMAIN,
 * big.test -> 120 A records (forces truncation over UDP), txt.test -> TXT "hello"; TTL 60.
 */
export async function startDnsmasq(): Promise<Dnsmasq> {
  const dir = tempDir('dnsmasq');
  fs.chmodSync(dir, 0o755);
  const hosts = path.join(dir, 'big-hosts');
  fs.writeFileSync(hosts, Array.from({ length: 120 }, (_, i) => `198.18.1.${i + 1} big.test`).join('\n') + '\n', { mode: 0o644 });
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const child = spawn(
      'dnsmasq',
      [
        '--no-daemon',
        `--port=${port}`,
        '--listen-address=127.0.0.1',
        '--bind-interfaces',
        '--no-resolv',
        '--no-hosts',
        '--conf-file=/dev/null',
        `--pid-file=${path.join(dir, 'pid')}`,
        '--user=root',
        '--address=/ext.test/198.18.5.5',
        '--address=/nx.test/',
        `--addn-hosts=${hosts}`,
        '--txt-record=txt.test,hello',
        '--log-facility=-',
        '--cache-size=0',
        '--local-ttl=60',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let exited = false;
    child.on('exit', () => (exited = true));
    const stop = async (): Promise<void> => {
      if (!exited) {
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await gone;
      }
    };
    for (let i = 0; i < 100 && !exited; i++) {
      const r = await dig(port, 'www.ext.test', 'A', ['+timeout=1']).catch(() => undefined);
      if (r?.answers[0]?.data === '198.18.5.5') return { port, stop: async () => { await stop(); fs.rmSync(dir, { recursive: true, force: true }); } };
      await new Promise((r) => setTimeout(r, 100));
    }
    await stop();
  }
  throw new Error('dnsmasq did not start');
}

/** A UDP "resolver" that reads queries and never answers: an upstream that is down but not refusing. */
export async function startBlackhole(): Promise<{ port: number; received: () => number; close: () => Promise<void> }> {
  const socket = dgram.createSocket('udp4');
  let count = 0;
  socket.on('message', () => count++);
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  return { port: socket.address().port, received: () => count, close: () => new Promise((resolve) => socket.close(() => resolve())) };
}

/** Polls `check` until it returns a truthy value (bounded). */
export async function waitFor<T>(check: () => Promise<T | undefined | false> | T | undefined | false, what: string, tries = 200, everyMs = 100): Promise<T> {
  let last: unknown;
  for (let i = 0; i < tries; i++) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

/** Sends one raw UDP packet and returns the first answer, or undefined after `waitMs`. */
export function rawUdp(port: number, packet: Buffer, waitMs = 1000): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      socket.close();
      resolve(undefined);
    }, waitMs);
    socket.on('message', (msg) => {
      clearTimeout(timer);
      socket.close();
      resolve(msg);
    });
    socket.send(packet, port, '127.0.0.1');
  });
}

export function stopChild(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}
