/**
 * The query of a request target, parsed only when a route asks (a route without query matchers never
 * pays for it) and at most once per target: a one-entry cache keyed by the target string, safe because
 * route matching is synchronous.
 */
let lastTarget: string | undefined;
let lastParams: URLSearchParams | undefined;

/** The target's query parameters, URL-decoded (`+` is a space), as URLSearchParams. */
export function queryParams(target: string): URLSearchParams {
  if (target === lastTarget && lastParams !== undefined) return lastParams;
  const q = target.indexOf('?');
  let params: URLSearchParams;
  if (q < 0) params = new URLSearchParams();
  else {
    const hash = target.indexOf('#', q);
    params = new URLSearchParams(hash < 0 ? target.slice(q + 1) : target.slice(q + 1, hash));
  }
  lastTarget = target;
  lastParams = params;
  return params;
}
