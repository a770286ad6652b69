import { describe, expect, it } from 'vitest';
import { createAdminServer, renderHelp, type AdminRoute } from '../src/index';

const route = (method: AdminRoute['method'], path: string, help = 'h', extra: Partial<AdminRoute> = {}): AdminRoute => ({ method, path, help, handler: () => 'x', ...extra });

describe('route registry', () => {
  it.each([
    ['config_dump', 'must start with "/"'],
    ['/config//dump', 'empty path segment'],
    ['/config/', 'empty path segment'],
    ['/config_{component}', 'must be a literal or a whole {name} parameter'],
    ['/x/{a}/{a}', 'parameter {a} appears twice'],
    ['/x/{1a}', 'must be a literal or a whole {name} parameter'],
  ])('refuses the path %s (%s)', (path, reason) => {
    const server = createAdminServer({ component: 'x', helpStyle: 'istio' });
    expect(() => server.add(route('GET', path))).toThrow(expect.objectContaining({ code: 'MESH_ADMIN_BAD_ROUTE', message: expect.stringContaining(reason) }));
    expect(server.routes).toHaveLength(0);
  });

  it('refuses the same method and path twice, accepts another method on the same path', () => {
    const server = createAdminServer({ component: 'envoy', helpStyle: 'envoy' }).add(route('GET', '/logging'));
    expect(() => server.add(route('GET', '/logging'))).toThrow(expect.objectContaining({ code: 'MESH_ADMIN_DUPLICATE_ROUTE', message: expect.stringContaining('GET /logging') }));
    server.add(route('POST', '/logging', 'h', { mutatesState: true }));
    expect(server.routes.map((r) => r.method)).toEqual(['GET', 'POST']);
  });

  it('refuses a method it cannot serve', () => {
    const server = createAdminServer({ component: 'x', helpStyle: 'istio' });
    expect(() => server.add(route('PATCH' as never, '/x'))).toThrow(expect.objectContaining({ code: 'MESH_ADMIN_BAD_ROUTE', message: expect.stringContaining('PATCH') }));
  });
});

describe('help rendering', () => {
  const routes = [route('PUT', '/b', 'second'), route('GET', '/a/{x}', 'first'), route('POST', '/b', 'other method'), route('GET', '/secret', 's', { hidden: true })];

  it('istio: a tab, METHOD /path: help, in registration order, hidden left out, newline after each line', () => {
    expect(renderHelp(routes, 'istio')).toBe('admin commands are:\n\tPUT /b: second\n\tGET /a/{x}: first\n\tPOST /b: other method\n');
  });

  it('envoy: two spaces, /path: help, sorted, one line per path (first registered help), hidden left out', () => {
    expect(renderHelp(routes, 'envoy')).toBe('admin commands are:\n  /a/{x}: first\n  /b: second\n');
  });

  it('with no routes: just the header line', () => {
    expect(renderHelp([], 'istio')).toBe('admin commands are:\n');
  });
});
