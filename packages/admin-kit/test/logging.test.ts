import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAdminServer, createLogger, routes, type AdminServer, type MeshLogger } from '../src/index';
import { request } from './support/http';

/** Collects the JSON lines a logger writes. */
function sink() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line));
      cb();
    },
  });
  return { lines, stream, messages: () => lines.map((l) => l.msg) };
}

describe('scoped logger', () => {
  it('writes JSON lines with component, scope, level label and ISO time', () => {
    const out = sink();
    const logger = createLogger({ component: 'mesh-dns', scopes: ['admin', 'default', 'healthz', 'model'], destination: out.stream });
    logger.scope('model').info({ names: 3 }, 'name table loaded');
    expect(out.lines).toHaveLength(1);
    expect(out.lines[0]).toMatchObject({ component: 'mesh-dns', scope: 'model', level: 'info', msg: 'name table loaded', names: 3 });
    expect(String(out.lines[0].time)).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it('gives each scope its own level; none silences a scope', () => {
    const out = sink();
    const logger = createLogger({ component: 'pilot-agent', scopes: ['healthz', 'admin', 'ads', 'default', 'model'], destination: out.stream });
    expect(logger.levels()).toEqual({ healthz: 'info', admin: 'info', ads: 'info', default: 'info', model: 'info' });
    logger.setLevel('ads', 'debug');
    logger.setLevel('healthz', 'none');
    logger.setLevel('model', 'error');
    logger.scope('ads').debug('ads debug');
    logger.scope('default').debug('default debug');
    logger.scope('healthz').error('healthz error');
    logger.scope('model').warn('model warn');
    logger.scope('model').error('model error');
    logger.scope('admin').warn('admin warn');
    expect(out.messages()).toEqual(['ads debug', 'model error', 'admin warn']);
    expect(logger.levels()).toEqual({ healthz: 'none', admin: 'info', ads: 'debug', default: 'info', model: 'error' });
  });

  it('starts every scope at the given level', () => {
    const out = sink();
    const logger = createLogger({ component: 'x', scopes: ['a', 'b'], level: 'warn', destination: out.stream });
    logger.scope('a').info('quiet');
    logger.scope('b').warn('loud');
    expect(out.messages()).toEqual(['loud']);
  });

  it('refuses unknown scopes and levels with errors naming the valid ones', () => {
    const logger = createLogger({ component: 'x', scopes: ['a', 'b'], destination: sink().stream });
    expect(() => logger.scope('c')).toThrow(/unknown logging scope "c" of x: valid scopes are a, b/);
    expect(() => logger.setLevel('c', 'info')).toThrow(expect.objectContaining({ code: 'MESH_LOG_UNKNOWN_SCOPE' }));
    expect(() => logger.setLevel('a', 'trace' as never)).toThrow(/valid levels are debug, info, warn, error, none/);
    expect(() => createLogger({ component: 'x', scopes: [], destination: sink().stream })).toThrow(expect.objectContaining({ code: 'MESH_LOG_NO_SCOPES' }));
    expect(() => createLogger({ component: 'x', scopes: ['a'], level: 'verbose' as never, destination: sink().stream })).toThrow(
      expect.objectContaining({ code: 'MESH_LOG_UNKNOWN_LEVEL' }),
    );
  });

  it('appends to a file given by path, creating its directory', () => {
    const dir = mkdtempSync(join(tmpdir(), 'admin-kit-log-'));
    try {
      const file = join(dir, 'logs', 'agent.log');
      const logger = createLogger({ component: 'pilot-agent', scopes: ['default'], destination: file });
      logger.scope('default').info('first');
      logger.scope('default').debug('hidden');
      logger.setLevel('default', 'debug');
      logger.scope('default').debug('second');
      logger.flush();
      const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      expect(lines.map((l) => l.msg)).toEqual(['first', 'second']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('PUT /logging/{scope}/{level} over HTTP', () => {
  const out = sink();
  let logger: MeshLogger;
  let server: AdminServer;
  let port: number;

  beforeAll(async () => {
    logger = createLogger({ component: 'mesh-dns', scopes: ['admin', 'default', 'healthz', 'model'], destination: out.stream });
    server = createAdminServer({ component: 'mesh-dns', helpStyle: 'istio' }).add(
      routes.logging('dynamic change logging level, scope can be admin/default/healthz/model, level can be error/none/debug/info/warn', logger),
    );
    ({ port } = await server.listen());
  });
  afterAll(() => server?.close());

  it('a debug line is not written, PUT /logging/default/debug, now it is', async () => {
    const log = logger.scope('default');
    log.debug('before the change');
    expect(out.messages()).not.toContain('before the change');

    const answer = await request(port, 'PUT', '/logging/default/debug');
    expect(answer.status).toBe(200);
    expect(answer.headers['content-type']).toBe('application/json');
    expect(JSON.parse(answer.body)).toEqual({
      scope: 'default',
      level: 'debug',
      levels: { admin: 'info', default: 'debug', healthz: 'info', model: 'info' },
    });

    // the same logger object the component already holds obeys the new level at once
    log.debug('after the change');
    expect(out.messages()).toContain('after the change');
    // other scopes keep their level
    logger.scope('model').debug('model debug');
    expect(out.messages()).not.toContain('model debug');
  });

  it('PUT /logging/default/none silences the scope, even for errors', async () => {
    expect((await request(port, 'PUT', '/logging/default/none')).status).toBe(200);
    logger.scope('default').error('silenced');
    expect(out.messages()).not.toContain('silenced');
    expect((await request(port, 'PUT', '/logging/default/error')).status).toBe(200);
    logger.scope('default').error('audible');
    expect(out.messages()).toContain('audible');
  });
});

describe('the admin server logs to its logger', () => {
  it('records a failing handler on the admin scope with the route', async () => {
    const out = sink();
    const logger = createLogger({ component: 'proxy', scopes: ['default', 'admin'], destination: out.stream });
    const server = createAdminServer({ component: 'proxy', helpStyle: 'envoy', logger }).add({
      method: 'GET',
      path: '/clusters',
      help: 'upstream cluster status',
      handler: () => {
        throw new Error('cluster table missing');
      },
    });
    try {
      const { port } = await server.listen();
      expect((await request(port, 'GET', '/clusters')).status).toBe(500);
      const failure = out.lines.find((l) => l.msg === 'admin handler failed');
      expect(failure).toMatchObject({ scope: 'admin', level: 'error', route: 'GET /clusters', path: '/clusters' });
      expect((failure?.err as { message?: string }).message).toBe('cluster table missing');
    } finally {
      await server.close();
    }
  });
});
