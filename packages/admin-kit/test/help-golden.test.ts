import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAdminServer, routes, type AdminRoute, type AdminServer, type HelpStyle } from '../src/index';
import { envoyRoutes, meshDnsRoutes, pilotAgentRoutes } from './fixtures/source-routes';
import { request } from './support/http';

/** The fixtures are the source document's three /help blocks copied byte for byte (tabs, two spaces, final newline). */
const fixture = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');

const cases: Array<{ component: string; style: HelpStyle; routes: () => AdminRoute[]; golden: string }> = [
  { component: 'pilot-agent', style: 'istio', routes: pilotAgentRoutes, golden: 'pilot-agent-help.txt' },
  { component: 'mesh-dns', style: 'istio', routes: meshDnsRoutes, golden: 'mesh-dns-help.txt' },
  { component: 'envoy', style: 'envoy', routes: envoyRoutes, golden: 'envoy-help.txt' },
];

describe.each(cases)('/help of $component', ({ component, style, routes: makeRoutes, golden }) => {
  let server: AdminServer;
  let port: number;

  beforeAll(async () => {
    server = createAdminServer({ component, helpStyle: style });
    for (const route of makeRoutes()) {
      // the real components mount the ready-made /help route; so does this test
      server.add(route.path === '/help' ? routes.help(route.help) : route);
    }
    ({ port } = await server.listen());
  });
  afterAll(() => server?.close());

  it('answers GET /help with the source document text, byte for byte', async () => {
    const answer = await request(port, 'GET', '/help');
    expect(answer.status).toBe(200);
    expect(answer.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(Buffer.from(answer.body)).toEqual(Buffer.from(fixture(golden)));
  });

  it('helpText() is the same text', () => {
    expect(server.helpText()).toBe(fixture(golden));
  });

  it('answers an unknown path with 404 and the help text', async () => {
    const answer = await request(port, 'GET', '/no/such/endpoint');
    expect(answer.status).toBe(404);
    expect(answer.body).toContain(fixture(golden));
    expect(answer.body.endsWith(fixture(golden))).toBe(true);
  });
});

// The fixtures must stay copies of the source document; check them whenever the document is at hand.
const SOURCE = '/work/shared/reference/tsf-mesh-local-proxy-ops.md';
describe.skipIf(!existsSync(SOURCE))('golden fixtures', () => {
  it.each([
    ['15020', 'pilot-agent-help.txt'],
    ['15021', 'mesh-dns-help.txt'],
    ['15000', 'envoy-help.txt'],
  ])('equal the block after `curl 127.0.0.1:%s/help` in the source document', (port, name) => {
    const doc = readFileSync(SOURCE, 'utf8');
    const start = doc.indexOf('```plaintext\n', doc.indexOf(`curl 127.0.0.1:${port}/help`)) + '```plaintext\n'.length;
    const block = doc.slice(start, doc.indexOf('```', start));
    expect(fixture(name)).toBe(block);
  });
});
