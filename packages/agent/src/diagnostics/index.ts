// Diagnostics: `mesh-agent doctor`, `mesh-agent trace URL` and the admin home page (issue 9).
// Owned by the diagnostics work; the agent's CLI and admin server call only these three entry points.
import type { Writable } from 'node:stream';
import type { AdminRoute } from '@mesh-agent/admin-kit';

export interface DiagnosticsOptions {
  /** base URL of the agent's admin port, e.g. http://127.0.0.1:15020 */
  agentAdminUrl: string;
  json?: boolean;
  out?: Writable;
}

/** Runs every check along a request's path; resolves to the exit code (0 only when all pass). */
export async function runDoctor(_opts: DiagnosticsOptions): Promise<number> {
  throw new Error('mesh-agent doctor is not implemented yet');
}

/** Sends one real request through the sidecar and shows each hop; resolves to the exit code. */
export async function runTrace(_url: string, _opts: DiagnosticsOptions & { via?: 'capture' | 'proxy' }): Promise<number> {
  throw new Error('mesh-agent trace is not implemented yet');
}

/** Hidden admin routes (GET / home page and the data it polls), registered by the agent's admin server. */
export function diagnosticsRoutes(_opts: { agentAdminUrl: () => string }): AdminRoute[] {
  return [];
}
