import { fork } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { isChildToParent, isParentToChild, type ChildToParent, type ParentToChild } from '../src/index';
import { makeTempDir } from './helpers';

describe('control protocol guards', () => {
  it('accepts every well-formed message', () => {
    const parent: ParentToChild[] = [
      { type: 'handle', name: 'listener' },
      { type: 'handle', name: 'dns-udp' },
      { type: 'start', epoch: 0 },
      { type: 'config', config: { version: '1' } as never },
      { type: 'registry', snapshot: { services: [] } },
      { type: 'drain', drainTimeMs: 5000 },
    ];
    for (const message of parent) expect(isParentToChild(message), JSON.stringify(message)).toBe(true);
    const child: ChildToParent[] = [
      { type: 'ready', epoch: 1, pid: 42 },
      { type: 'error', code: 'MESH_X', message: 'x' },
      { type: 'config-applied', version: '3' },
    ];
    for (const message of child) expect(isChildToParent(message), JSON.stringify(message)).toBe(true);
  });

  it('refuses malformed ones', () => {
    for (const bad of [null, 'start', [], { type: 'handle', name: 'stdin' }, { type: 'start', epoch: -1 }, { type: 'start', epoch: 1.5 }, { type: 'config' }, { type: 'drain' }, { type: 'ready', epoch: 1, pid: 1 }]) {
      expect(isParentToChild(bad), JSON.stringify(bad)).toBe(false);
    }
    for (const bad of [undefined, { type: 'ready', epoch: 1 }, { type: 'error', code: 1, message: 'x' }, { type: 'config-applied' }, { type: 'start', epoch: 1 }]) {
      expect(isChildToParent(bad), JSON.stringify(bad)).toBe(false);
    }
  });
});

describe('control protocol over a real fork IPC channel', () => {
  const tmp = makeTempDir();
  let server: Server | undefined;
  afterAll(() => {
    server?.close();
    tmp.cleanup();
  });

  it('a handle message carries a listening socket; the child answers ready with its epoch', async () => {
    const childFile = tmp.write(
      'child.cjs',
      `process.on('message', (message, handle) => {
        if (message.type === 'handle') { process.send({ type: 'config-applied', version: String(handle && handle.address().port) }); }
        if (message.type === 'start') process.send({ type: 'ready', epoch: message.epoch, pid: process.pid });
        if (message.type === 'drain') process.exit(0);
      });`,
    );
    server = createServer();
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const child = fork(childFile, [], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
    const received: unknown[] = [];
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    const done = new Promise<void>((resolve) =>
      child.on('message', (message) => {
        received.push(message);
        if (received.length === 2) resolve();
      }),
    );
    const send = (message: ParentToChild, handle?: Server) => {
      expect(isParentToChild(message)).toBe(true);
      child.send(message, handle);
    };
    send({ type: 'handle', name: 'listener' }, server);
    send({ type: 'start', epoch: 7 });
    await done;
    send({ type: 'drain', drainTimeMs: 0 });
    expect(await exited).toBe(0);
    expect(received.every(isChildToParent)).toBe(true);
    expect(received).toEqual([
      { type: 'config-applied', version: String(port) },
      { type: 'ready', epoch: 7, pid: child.pid },
    ]);
  });
});
