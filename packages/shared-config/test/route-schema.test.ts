import { describe, expect, it } from 'vitest';
import { parseConfig, proxyBootstrapSchema } from '../src/index';
import { expectConfigError } from './helpers';

/** Issue 16's route features in the proxy bootstrap: what is accepted, the defaults, and errors naming the field. */

const paths = (fn: () => unknown) => expectConfigError(fn).issues.map((i) => `${i.path}: ${i.message}`);
const clusters = [{ name: 'v1' }, { name: 'v2' }];
const withRoutes = (routes: unknown[], vhost: Record<string, unknown> = {}) => ({ clusters, routes: { virtualHosts: [{ name: 'order', domains: ['order'], routes, ...vhost }] } });

describe('route schema (issue 16)', () => {
  it('accepts every new match kind and action, with Envoy defaults', () => {
    const parsed = parseConfig(
      proxyBootstrapSchema,
      withRoutes(
        [
          {
            name: 'beta',
            match: {
              prefix: '/api',
              headers: [{ name: 'x-user', prefix: 'beta' }, { name: ':method', exact: 'GET' }, { name: 'x-block', present: true, invert: true }],
              queryParameters: [{ name: 'debug', exact: '1' }, { name: 'id', regex: '[0-9]+' }, { name: 'trace', present: true }],
            },
            route: {
              weightedClusters: [{ name: 'v1', weight: 90, requestHeadersToAdd: [{ name: 'x-version', value: 'v1' }] }, { name: 'v2', weight: 10 }],
              prefixRewrite: '/v2/',
              hostRewrite: 'order-v2',
              requestMirrorPolicies: [{ cluster: 'v2', percent: 12.5 }, { cluster: 'v1' }],
            },
            requestHeadersToAdd: [{ name: 'x-a', value: '1' }, { name: 'x-b', value: '2', append: false }],
            requestHeadersToRemove: ['x-secret'],
            responseHeadersToAdd: [{ name: 'x-served-by', value: 'mesh' }],
            responseHeadersToRemove: ['server'],
            fault: { delay: { fixedDelayMs: 100, percent: 10 }, abort: { httpStatus: 503, percent: 0.5 } },
            rateLimit: { maxTokens: 10, fillIntervalMs: 1000 },
            metadata: { rule: 'beta', service: 'order' },
          },
          { match: { path: '/old' }, redirect: { pathRedirect: '/new', responseCode: 302 } },
          { match: { prefix: '/' }, route: { cluster: 'v1' } },
        ],
        { rateLimit: { maxTokens: 100, tokensPerFill: 100, fillIntervalMs: 1000 } },
      ),
    );
    const vhost = parsed.routes.virtualHosts[0]!;
    const [beta, redirect] = vhost.routes;
    expect(vhost.rateLimit).toEqual({ maxTokens: 100, tokensPerFill: 100, fillIntervalMs: 1000 });
    expect(beta!.match.headers[0]).toEqual({ name: 'x-user', prefix: 'beta', invert: false });
    expect(beta!.match.queryParameters).toHaveLength(3);
    expect(beta!.route!.requestMirrorPolicies).toEqual([{ cluster: 'v2', percent: 12.5 }, { cluster: 'v1', percent: 100 }]);
    expect(beta!.requestHeadersToAdd).toEqual([{ name: 'x-a', value: '1', append: true }, { name: 'x-b', value: '2', append: false }]);
    expect(beta!.rateLimit).toEqual({ maxTokens: 10, tokensPerFill: 1, fillIntervalMs: 1000 });
    expect(beta!.metadata).toEqual({ rule: 'beta', service: 'order' });
    expect(redirect!.redirect).toEqual({ pathRedirect: '/new', responseCode: 302, stripQuery: false });
    expect(parseConfig(proxyBootstrapSchema, withRoutes([{ match: { prefix: '/' }, redirect: { hostRedirect: 'x' } }])).routes.virtualHosts[0]!.routes[0]!.redirect!.responseCode).toBe(301);
  });

  it('names the field of every mistake', () => {
    expect(
      paths(() =>
        parseConfig(
          proxyBootstrapSchema,
          withRoutes([
            { match: { prefix: '/' }, route: { cluster: 'v1' }, directResponse: { status: 503 } },
            { match: { prefix: '/' }, redirect: { responseCode: 302, hostRedirect: 'a/b' } },
            { match: { prefix: '/' }, route: { cluster: 'v1' }, fault: { abort: { httpStatus: 503, percent: 101 } } },
            { match: { prefix: '/', headers: [{ name: 'x', regex: '([' }], queryParameters: [{ name: 'q', exact: 'a', present: true }] }, route: { cluster: 'v1' } },
            { match: { prefix: '/' }, redirect: { pathRedirect: '/a', prefixRewrite: '/b' } },
            { match: { prefix: '/' }, redirect: { responseCode: 304 } },
            { match: { regex: '/x.*' }, route: { cluster: 'v1', prefixRewrite: '/y' } },
            { match: { prefix: '/' }, route: { cluster: 'v1' }, rateLimit: { maxTokens: 0, fillIntervalMs: 1000 }, requestHeadersToAdd: [{ name: 'Host', value: 'x' }] },
            { match: { prefix: '/' }, route: { cluster: 'v1' }, fault: {} },
            { match: { prefix: '/' }, route: { cluster: 'v1' }, fault: { abort: { percent: 5 } }, responseHeadersToAdd: [{ name: 'x-a', value: 'a\r\nb' }] },
            { match: { prefix: '/' } },
          ]),
        ),
      ),
    ).toEqual([
      'routes.virtualHosts[0].routes[0]: a route has exactly one of route, redirect, directResponse (this one has several)',
      'routes.virtualHosts[0].routes[1].redirect.hostRedirect: a host redirect is a host name (no spaces, "/", "?", "#", "@"; set the port with portRedirect)',
      'routes.virtualHosts[0].routes[2].fault.abort.percent: a percentage is 0..100',
      expect.stringMatching(/^routes.virtualHosts\[0\].routes\[3\].match.headers\[0\].regex: invalid regular expression/),
      'routes.virtualHosts[0].routes[3].match.queryParameters[0]: a query parameter match has exactly one of exact, regex, present',
      'routes.virtualHosts[0].routes[4].redirect.prefixRewrite: a redirect has at most one of pathRedirect, prefixRewrite',
      'routes.virtualHosts[0].routes[5].redirect.responseCode: expected one of 301, 302, 303, 307, 308',
      'routes.virtualHosts[0].routes[6].route.prefixRewrite: prefixRewrite needs a prefix or path match (a regex match has no prefix to replace)',
      'routes.virtualHosts[0].routes[7].requestHeadersToAdd[0].name: host, content-length and hop-by-hop headers cannot be set this way (use hostRewrite for the Host)',
      'routes.virtualHosts[0].routes[7].rateLimit.maxTokens: must be at least 1',
      'routes.virtualHosts[0].routes[8].fault: a fault has a delay, an abort or both',
      'routes.virtualHosts[0].routes[9].responseHeadersToAdd[0].value: a header value cannot contain CR, LF or NUL',
      'routes.virtualHosts[0].routes[9].fault.abort: an abort has exactly one of httpStatus, grpcStatus',
      'routes.virtualHosts[0].routes[10]: a route has exactly one of route, redirect, directResponse',
    ]);
    // cross-references are checked once every route is well-formed
    expect(paths(() => parseConfig(proxyBootstrapSchema, withRoutes([{ match: { prefix: '/' }, route: { cluster: 'v1', requestMirrorPolicies: [{ cluster: 'nope' }] } }])))).toEqual([
      'routes.virtualHosts[0].routes[0].route.requestMirrorPolicies[0].cluster: unknown mirror cluster "nope"',
    ]);
  });
});
