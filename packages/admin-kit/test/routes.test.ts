import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminHttpError, adminResponse, createAdminServer, routes, type AdminServer } from '../src/index';
import { request } from './support/http';

/** The ready-made routes and the body rules, over real HTTP. */
describe('ready-made routes and answers', () => {
  let server: AdminServer;
  let port: number;
  let healthy = true;
  let status = '<INIT>';

  beforeAll(async () => {
    server = createAdminServer({ component: 'pilot-agent', helpStyle: 'istio' })
      .add(routes.health('print out the health info for data-plane', () => ({ healthy, components: { envoy: healthy ? 'LIVE' : 'DEAD' } })))
      .add(
        routes.configDump('print out the configuration of the component', (req) => {
          if (req.params.component === 'mesh-dns') return { listen: { address: '127.0.0.1', port: 55354 }, names: ['order'] };
          if (req.params.component === 'plain') return 'plain text dump\n';
          throw new AdminHttpError(404, `unknown component "${req.params.component}": valid components are pilot-agent, envoy, mesh-dns`);
        }, { path: '/config_dump/{component}' }),
      )
      .add(routes.configDump('print out all of the runtime configs', async () => ({ big: 10n, when: new Date(0) })))
      .add(routes.version('print out the pilot-agent version', { version: '0.1.0', component: 'pilot-agent' }))
      .add(routes.version('print out the version of the component', (req) => ({ version: `v-${req.params.component}` }), { path: '/version/{component}' }))
      .add(routes.status('print out the status', () => status))
      .add({ method: 'GET', path: '/config/{name}', help: 'a parameter route', handler: (req) => `param ${req.params.name}\n` })
      .add({ method: 'GET', path: '/config/agent', help: 'a literal route', handler: () => 'literal agent\n' })
      .add({ method: 'GET', path: '/echo', help: 'echo the query', handler: (req) => ({ query: Object.fromEntries(req.query), all: req.query.getAll('tag') }) })
      .add({
        method: 'POST',
        path: '/echo/{id}',
        help: 'echo the body',
        mutatesState: true,
        handler: async (req) => adminResponse(201, `${req.params.id}:${await req.body()}:${await req.body()}`, { 'X-Echo': 'yes' }),
      })
      .add({ method: 'GET', path: '/bytes', help: 'binary body', handler: () => Buffer.from([0, 1, 2, 255]) })
      .add({ method: 'GET', path: '/nothing', help: 'no body', handler: () => undefined })
      .add({ method: 'GET', path: '/like_a_response', help: 'a plain object with a body field', handler: () => ({ status: 418, body: 'x' }) })
      .add({ method: 'GET', path: '/prom', help: 'custom type', handler: () => adminResponse(200, 'a 1\n', { 'Content-Type': 'text/plain; version=0.0.4' }) })
      .add({ method: 'GET', path: '/hidden', help: 'not listed', hidden: true, handler: () => 'hidden but served\n' })
      .add({ method: 'GET', path: '/', help: 'home', handler: () => 'home\n' });
    ({ port } = await server.listen());
  });
  afterAll(() => server?.close());

  it('/health: 200 with the JSON report when healthy, 503 when not', async () => {
    const up = await request(port, 'GET', '/health');
    expect(up.status).toBe(200);
    expect(up.headers['content-type']).toBe('application/json');
    expect(up.body).toBe('{\n  "healthy": true,\n  "components": {\n    "envoy": "LIVE"\n  }\n}\n');
    healthy = false;
    const down = await request(port, 'GET', '/health');
    expect(down.status).toBe(503);
    expect(JSON.parse(down.body)).toEqual({ healthy: false, components: { envoy: 'DEAD' } });
    healthy = true;
  });

  it('/config_dump/{component}: decoded parameter, JSON or text from the provider, 404 for an unknown one', async () => {
    const dump = await request(port, 'GET', '/config_dump/mesh%2Ddns');
    expect(dump.status).toBe(200);
    expect(JSON.parse(dump.body)).toEqual({ listen: { address: '127.0.0.1', port: 55354 }, names: ['order'] });
    expect(dump.body.endsWith('}\n')).toBe(true);
    const text = await request(port, 'GET', '/config_dump/plain');
    expect(text.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(text.body).toBe('plain text dump\n');
    const unknown = await request(port, 'GET', '/config_dump/nginx');
    expect(unknown.status).toBe(404);
    expect(unknown.body).toContain('valid components are pilot-agent, envoy, mesh-dns');
  });

  it('/config_dump: JSON with bigints and dates rendered, not thrown', async () => {
    const dump = await request(port, 'GET', '/config_dump');
    expect(dump.status).toBe(200);
    expect(JSON.parse(dump.body)).toEqual({ big: '10', when: '1970-01-01T00:00:00.000Z' });
  });

  it('/version and /version/{component}', async () => {
    expect(JSON.parse((await request(port, 'GET', '/version')).body)).toEqual({ version: '0.1.0', component: 'pilot-agent' });
    expect(JSON.parse((await request(port, 'GET', '/version/envoy')).body)).toEqual({ version: 'v-envoy' });
  });

  it('/status: the provider text, one line, current at each request', async () => {
    expect((await request(port, 'GET', '/status')).body).toBe('<INIT>\n');
    status = '<FLOW_TAKEOVER>';
    const answer = await request(port, 'GET', '/status');
    expect(answer.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(answer.body).toBe('<FLOW_TAKEOVER>\n');
  });

  it('a literal segment wins over a parameter, whatever the registration order', async () => {
    expect((await request(port, 'GET', '/config/agent')).body).toBe('literal agent\n');
    expect((await request(port, 'GET', '/config/global')).body).toBe('param global\n');
  });

  it('parses the query string', async () => {
    const answer = await request(port, 'GET', '/echo?format=json&filter=%5Ecluster%5C.&tag=a&tag=b');
    expect(JSON.parse(answer.body)).toEqual({ query: { format: 'json', filter: '^cluster\\.', tag: 'b' }, all: ['a', 'b'] });
  });

  it('reads the request body (once, reusable) and sends an explicit status and headers', async () => {
    const answer = await request(port, 'POST', '/echo/7', { body: 'héllo' });
    expect(answer.status).toBe(201);
    expect(answer.headers['x-echo']).toBe('yes');
    expect(answer.body).toBe('7:héllo:héllo');
  });

  it('refuses a request body over 1 MiB with 413', async () => {
    const answer = await request(port, 'POST', '/echo/big', { body: 'x'.repeat(2 * 1024 * 1024) });
    expect(answer.status).toBe(413);
    expect(answer.body).toBe('request body larger than 1048576 bytes\n');
  });

  it('Buffers go out as application/octet-stream, byte for byte', async () => {
    const answer = await request(port, 'GET', '/bytes');
    expect(answer.headers['content-type']).toBe('application/octet-stream');
    expect([...answer.raw]).toEqual([0, 1, 2, 255]);
  });

  it('an undefined result is an empty 200', async () => {
    const answer = await request(port, 'GET', '/nothing');
    expect(answer.status).toBe(200);
    expect(answer.body).toBe('');
    expect(answer.headers['content-length']).toBe('0');
  });

  it('a plain object is always JSON, even with status/body fields; only adminResponse() sets the status', async () => {
    const answer = await request(port, 'GET', '/like_a_response');
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.body)).toEqual({ status: 418, body: 'x' });
    expect((await request(port, 'GET', '/prom')).headers['content-type']).toBe('text/plain; version=0.0.4');
  });

  it('a hidden route is served but not listed', async () => {
    expect((await request(port, 'GET', '/hidden')).body).toBe('hidden but served\n');
    expect(server.helpText()).not.toContain('/hidden');
  });

  it('a trailing slash is ignored; the root stays the root', async () => {
    expect((await request(port, 'GET', '/status/')).status).toBe(200);
    expect((await request(port, 'GET', '/')).body).toBe('home\n');
  });

  it('HEAD answers like GET without a body', async () => {
    const answer = await request(port, 'HEAD', '/status');
    expect(answer.status).toBe(200);
    expect(answer.body).toBe('');
    expect(Number(answer.headers['content-length'])).toBeGreaterThan(0);
  });
});
