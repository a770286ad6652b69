import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminHttpError, adminResponse, createAdminServer, createLogger, routes, type AdminServer } from '../src/index';
import { createRequire } from 'node:module';
import { request } from './support/http';
import { requireBuild } from './support/child';
import { Writable } from 'node:stream';

/** Every error answer, observed over real HTTP on an ephemeral loopback port. */
describe('error answers', () => {
  let server: AdminServer;
  let port: number;
  const logger = createLogger({
    component: 'pilot-agent',
    scopes: ['healthz', 'admin', 'ads', 'default', 'model'],
    destination: new Writable({ write: (_c, _e, cb) => cb() }),
  });

  beforeAll(async () => {
    server = createAdminServer({ component: 'pilot-agent', helpStyle: 'istio', logger })
      .add(routes.help('print out list of admin commands'))
      .add(routes.latestError('print out the latest error info'))
      .add({ method: 'POST', path: '/hot_restart/{component}', help: 'hot restart the component process', mutatesState: true, handler: (req) => `restarting ${req.params.component}\n` })
      .add({ method: 'PUT', path: '/update', help: 'update the component', mutatesState: true, handler: () => 'updated\n' })
      .add({ method: 'GET', path: '/items', help: 'list items', handler: () => [] })
      .add({ method: 'DELETE', path: '/items', help: 'remove all items', mutatesState: true, handler: () => 'removed\n' })
      .add(routes.logging('dynamic change logging level', logger))
      .add({
        method: 'GET',
        path: '/boom/{what}',
        help: 'a handler that throws',
        handler: (req) => {
          throw new Error(`exploded while reading ${req.params.what}`);
        },
      })
      .add({
        method: 'GET',
        path: '/async_boom',
        help: 'a handler that rejects',
        handler: async () => {
          await new Promise((r) => setImmediate(r));
          throw Object.assign(new Error('upstream refused'), { code: 'ECONNREFUSED' });
        },
      })
      .add({
        method: 'GET',
        path: '/epoch/{component}',
        help: 'print out the component restart epoch',
        handler: (req) => {
          throw new AdminHttpError(404, `unknown component "${req.params.component}": valid components are envoy, mesh-dns`);
        },
      })
      .add({ method: 'GET', path: '/bad_status', help: 'answers an impossible status', handler: () => adminResponse(42, 'x') })
      .add({ method: 'GET', path: '/bad_header', help: 'answers a header Node refuses', handler: () => adminResponse(200, 'x', { 'x-bad': 'a\nb' }) })
      .add({
        method: 'GET',
        path: '/teapot',
        help: 'a handler that answers 503 through AdminHttpError',
        handler: () => {
          throw new AdminHttpError(503, 'not ready yet', { headers: { 'retry-after': '1' } });
        },
      });
    ({ port } = await server.listen());
  });
  afterAll(() => server?.close());

  it('unknown path: 404 with the help text', async () => {
    const answer = await request(port, 'GET', '/nope?x=1');
    expect(answer.status).toBe(404);
    expect(answer.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(answer.body).toBe(`invalid path: /nope\n${server.helpText()}`);
    expect(answer.body).toContain('\tPUT /logging/{scope}/{level}: dynamic change logging level\n');
  });

  it('a path that only matches a pattern prefix is unknown too', async () => {
    expect((await request(port, 'GET', '/hot_restart')).status).toBe(404);
    expect((await request(port, 'POST', '/hot_restart/envoy/extra')).status).toBe(404);
  });

  it('wrong method: 405 with Allow and a body naming the allowed method', async () => {
    const answer = await request(port, 'PUT', '/help');
    expect(answer.status).toBe(405);
    expect(answer.headers.allow).toBe('GET');
    expect(answer.body).toBe('method PUT not allowed on /help; allowed: GET\n');
  });

  it('GET on a state-changing route: 405 with a hint to use its method', async () => {
    const answer = await request(port, 'GET', '/hot_restart/envoy');
    expect(answer.status).toBe(405);
    expect(answer.headers.allow).toBe('POST');
    expect(answer.body).toContain('allowed: POST');
    expect(answer.body).toContain('use POST');
    expect(answer.body).toContain('curl -X POST');

    const logging = await request(port, 'GET', '/logging/default/debug');
    expect(logging.status).toBe(405);
    expect(logging.headers.allow).toBe('PUT');
    expect(logging.body).toContain('use PUT');
    // and nothing changed
    expect(logger.levels().default).toBe('info');
  });

  it('405 lists every method a path has', async () => {
    const answer = await request(port, 'POST', '/items');
    expect(answer.status).toBe(405);
    expect(answer.headers.allow).toBe('GET, DELETE');
    expect(answer.body).toContain('allowed: GET, DELETE');
  });

  it('an unknown HTTP method is a 405 as well', async () => {
    const answer = await request(port, 'PATCH', '/update');
    expect(answer.status).toBe(405);
    expect(answer.headers.allow).toBe('PUT');
  });

  it('unknown scope: 400 naming the valid scopes', async () => {
    const answer = await request(port, 'PUT', '/logging/nosuch/debug');
    expect(answer.status).toBe(400);
    expect(answer.body).toBe('unknown scope "nosuch": valid scopes are healthz, admin, ads, default, model\n');
  });

  it('unknown level: 400 naming the valid levels', async () => {
    const answer = await request(port, 'PUT', '/logging/default/loud');
    expect(answer.status).toBe(400);
    expect(answer.body).toBe('unknown level "loud": valid levels are debug, info, warn, error, none\n');
    expect(logger.levels().default).toBe('info');
  });

  it('a thrown AdminHttpError: its status, message and headers', async () => {
    const answer = await request(port, 'GET', '/epoch/nginx');
    expect(answer.status).toBe(404);
    expect(answer.body).toBe('unknown component "nginx": valid components are envoy, mesh-dns\n');
    const teapot = await request(port, 'GET', '/teapot');
    expect(teapot.status).toBe(503);
    expect(teapot.headers['retry-after']).toBe('1');
    expect(teapot.body).toBe('not ready yet\n');
  });

  it('a broken percent-encoding in a parameter: 400', async () => {
    const answer = await request(port, 'POST', '/hot_restart/%E0%A4%A');
    expect(answer.status).toBe(400);
    expect(answer.body).toContain('invalid percent-encoding');
  });

  it('a handler that throws: 500 with the message, then shown in /latest_error with time and route', async () => {
    const before = Date.now();
    const answer = await request(port, 'GET', '/boom/config%20file');
    expect(answer.status).toBe(500);
    expect(answer.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(answer.body).toBe('error in GET /boom/config%20file: exploded while reading config file\n');

    const latest = await request(port, 'GET', '/latest_error');
    expect(latest.status).toBe(200);
    expect(latest.headers['content-type']).toBe('application/json');
    const body = JSON.parse(latest.body);
    expect(body.message).toBe('exploded while reading config file');
    expect(body.route).toBe('GET /boom/{what}');
    expect(body.path).toBe('/boom/config%20file');
    expect(body.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(Date.parse(body.time)).toBeGreaterThanOrEqual(before - 1000);
  });

  it('a handler that rejects: 500, and /latest_error now shows this newer error with its code', async () => {
    const answer = await request(port, 'GET', '/async_boom');
    expect(answer.status).toBe(500);
    expect(answer.body).toContain('upstream refused');
    const body = JSON.parse((await request(port, 'GET', '/latest_error')).body);
    expect(body).toMatchObject({ message: 'upstream refused', route: 'GET /async_boom', code: 'ECONNREFUSED' });
  });

  it('an answer Node refuses (bad status or header) becomes a 500 naming the problem, recorded too', async () => {
    const status = await request(port, 'GET', '/bad_status');
    expect(status.status).toBe(500);
    expect(status.body).toMatch(/^error in GET \/bad_status: invalid answer from the handler: .*42/);
    expect(server.latestError).toMatchObject({ route: 'GET /bad_status' });
    const header = await request(port, 'GET', '/bad_header');
    expect(header.status).toBe(500);
    expect(header.body).toContain('invalid answer from the handler');
    expect(header.headers['x-bad']).toBeUndefined();
    // the server is still answering
    expect((await request(port, 'GET', '/help')).status).toBe(200);
  });

  it('4xx answers are not recorded as the latest error', async () => {
    const before = server.latestError;
    await request(port, 'GET', '/epoch/nginx');
    await request(port, 'GET', '/nope');
    await request(port, 'PUT', '/logging/x/y');
    expect(server.latestError).toBe(before);
  });

  it('recordError() from the component shows in /latest_error', async () => {
    server.recordError(new AdminHttpError(500, 'config reload failed', { code: 'MESH_CONFIG_INVALID' }), 'config-watch');
    const body = JSON.parse((await request(port, 'GET', '/latest_error')).body);
    expect(body).toMatchObject({ message: 'config reload failed', route: 'config-watch', code: 'MESH_CONFIG_INVALID' });
  });
});

describe('/latest_error before any error', () => {
  it('answers an empty JSON object', async () => {
    const server = createAdminServer({ component: 'mesh-dns', helpStyle: 'istio' }).add(routes.latestError('print out the latest error info'));
    try {
      const { port } = await server.listen();
      const answer = await request(port, 'GET', '/latest_error');
      expect(answer.status).toBe(200);
      expect(answer.body).toBe('{}\n');
    } finally {
      await server.close();
    }
  });
});

describe('405 in the envoy style', () => {
  it("uses Envoy's sentence, the Allow header and the hint", async () => {
    const server = createAdminServer({ component: 'envoy', helpStyle: 'envoy' })
      .add({ method: 'POST', path: '/quitquitquit', help: 'exit the server', mutatesState: true, handler: () => 'OK\n' })
      .add({ method: 'GET', path: '/clusters', help: 'upstream cluster status', handler: () => '' });
    try {
      const { port } = await server.listen();
      const quit = await request(port, 'GET', '/quitquitquit');
      expect(quit.status).toBe(405);
      expect(quit.headers.allow).toBe('POST');
      expect(quit.body).toBe('Method GET not allowed, POST required.\nthis endpoint changes state: use POST, e.g. curl -X POST http://HOST:PORT/quitquitquit\n');
      const clusters = await request(port, 'DELETE', '/clusters');
      expect(clusters.status).toBe(405);
      expect(clusters.body).toBe('Method DELETE not allowed, GET required.\n');
      expect((await request(port, 'GET', '/nope')).body).toBe(`invalid path. ${server.helpText()}`);
    } finally {
      await server.close();
    }
  });
});

describe('two copies of admin-kit in one process (ESM and CJS builds)', () => {
  it('an AdminHttpError of the other copy still gives its status', async () => {
    requireBuild();
    const cjs = createRequire(import.meta.url)('../dist/index.cjs') as typeof import('../src/index');
    const server = createAdminServer({ component: 'x', helpStyle: 'istio' }).add({
      method: 'GET',
      path: '/thing/{id}',
      help: 'a thing',
      handler: (req) => {
        throw new cjs.AdminHttpError(404, `no thing ${req.params.id}`);
      },
    });
    try {
      const { port } = await server.listen();
      const answer = await request(port, 'GET', '/thing/7');
      expect(answer.status).toBe(404);
      expect(answer.body).toBe('no thing 7\n');
      expect(server.latestError).toBeUndefined();
    } finally {
      await server.close();
    }
  });
});
