import type { AdminRoute, HelpStyle } from './types';

export const HELP_HEADER = 'admin commands are:';

/**
 * Renders the /help text from the registered routes. Every line, the last included, ends with
 * "\n" (as Envoy's and pilot-agent's admin servers print it), so `curl .../help` leaves the
 * shell prompt on its own line.
 */
export function renderHelp(routes: readonly AdminRoute[], style: HelpStyle): string {
  const visible = routes.filter((route) => !route.hidden);
  const lines = style === 'istio' ? istioLines(visible) : envoyLines(visible);
  return [HELP_HEADER, ...lines].map((line) => `${line}\n`).join('');
}

function istioLines(routes: readonly AdminRoute[]): string[] {
  return routes.map((route) => `\t${route.method} ${route.path}: ${route.help}`);
}

/** One line per path (the first registered route's help wins), sorted by path like Envoy's. */
function envoyLines(routes: readonly AdminRoute[]): string[] {
  const helpByPath = new Map<string, string>();
  for (const route of routes) {
    if (!helpByPath.has(route.path)) helpByPath.set(route.path, route.help);
  }
  return [...helpByPath.keys()]
    .sort(comparePaths)
    .map((path) => `  ${path}: ${helpByPath.get(path)}`);
}

/** Plain code-unit order, as Envoy sorts its handlers by prefix (std::string comparison). */
function comparePaths(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The body of a 404: what was asked for, then the help text. */
export function renderNotFound(path: string, help: string, style: HelpStyle): string {
  // Envoy answers "invalid path. admin commands are: ..."; scripts written for it keep working.
  if (style === 'envoy') return `invalid path. ${help}`;
  return `invalid path: ${path}\n${help}`;
}
