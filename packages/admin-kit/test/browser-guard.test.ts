import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAdminServer, routes, type AdminServer } from '../src/index';
import { request } from './support/http';

/** Requests a web page could make on the operator's behalf, over real HTTP. */
describe('browser-originated requests', () => {
  let server: AdminServer;
  let port: number;
  let restarts = 0;

  beforeAll(async () => {
    server = createAdminServer({ component: 'pilot-agent', helpStyle: 'istio' })
      .add(routes.help('print out list of admin commands'))
      .add({ method: 'POST', path: '/hot_restart/{component}', help: 'hot restart', mutatesState: true, handler: () => `restart ${++restarts}\n` });
    ({ port } = await server.listen());
  });
  afterAll(() => server?.close());

  it('answers curl-like requests addressed to 127.0.0.1 or localhost', async () => {
    expect((await request(port, 'GET', '/help')).status).toBe(200);
    expect((await request(port, 'GET', '/help', { headers: { host: `localhost:${port}` } })).status).toBe(200);
    expect((await request(port, 'POST', '/hot_restart/envoy')).status).toBe(200);
  });

  it('refuses a request addressed to another name (DNS rebinding) with 403', async () => {
    const answer = await request(port, 'GET', '/help', { headers: { host: `evil.example:${port}` } });
    expect(answer.status).toBe(403);
    expect(answer.body).toContain('host "evil.example" is not allowed');
    expect(answer.body).toContain('DNS rebinding');
  });

  it('refuses a cross-origin POST to a state-changing route, and does not run it', async () => {
    const before = restarts;
    const answer = await request(port, 'POST', '/hot_restart/envoy', { headers: { origin: 'http://evil.example', 'content-type': 'text/plain' } });
    expect(answer.status).toBe(403);
    expect(answer.body).toContain('cross-origin POST from http://evil.example refused');
    expect((await request(port, 'POST', '/hot_restart/envoy', { headers: { origin: 'null' } })).status).toBe(403);
    expect(restarts).toBe(before);
    expect(server.latestError).toBeUndefined();
  });

  it('accepts a POST from the admin port own page (same origin)', async () => {
    const answer = await request(port, 'POST', '/hot_restart/envoy', { headers: { origin: `http://127.0.0.1:${port}` } });
    expect(answer.status).toBe(200);
  });

  it('sends X-Content-Type-Options: nosniff', async () => {
    expect((await request(port, 'GET', '/help')).headers['x-content-type-options']).toBe('nosniff');
    expect((await request(port, 'GET', '/nope')).headers['x-content-type-options']).toBe('nosniff');
  });
});

describe('an admin port exposed on purpose (allowNonLoopback)', () => {
  it('answers requests addressed by name', async () => {
    const server = createAdminServer({ component: 'x', helpStyle: 'istio', host: '127.0.0.1', allowNonLoopback: true }).add(routes.help('h'));
    try {
      const { port } = await server.listen();
      expect((await request(port, 'GET', '/help', { headers: { host: `node-1.mesh.example:${port}` } })).status).toBe(200);
    } finally {
      await server.close();
    }
  });
});
