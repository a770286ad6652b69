// Diagnostics: `mesh-agent doctor`, `mesh-agent trace URL` and the admin home page (issue 9).
// The agent's CLI and admin server call only the three entry points below.
import type { Writable } from 'node:stream';
import { adminResponse, type AdminRoute } from '@mesh-agent/admin-kit';
import { doctorChecks, renderDoctor } from './doctor.js';
import { renderTrace, traceRequest } from './trace.js';
import { renderHomePage, SUMMARY_PATH } from './home-page.js';
import { buildSummary, RateHistory, type Summary } from './summary.js';

export { doctorChecks, renderDoctor, type DoctorReport } from './doctor.js';
export { traceRequest, renderTrace, type TraceReport, type TraceHop } from './trace.js';
export type { CheckResult, CheckStatus } from './checks.js';
export { SUMMARY_PATH } from './home-page.js';

export interface DiagnosticsOptions {
  /** base URL of the agent's admin port, e.g. http://127.0.0.1:15020 */
  agentAdminUrl: string;
  json?: boolean;
  out?: Writable;
}

/** Runs every check along a request's path; resolves to the exit code (0 only when all pass). */
export async function runDoctor(opts: DiagnosticsOptions): Promise<number> {
  const report = await doctorChecks(opts.agentAdminUrl);
  const out = opts.out ?? process.stdout;
  out.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : renderDoctor(report));
  return report.ok ? 0 : 1;
}

/** Sends one real request through the sidecar and shows each hop; resolves to the exit code. */
export async function runTrace(url: string, opts: DiagnosticsOptions & { via?: 'capture' | 'proxy' }): Promise<number> {
  const report = await traceRequest(url, opts.agentAdminUrl, { via: opts.via });
  const out = opts.out ?? process.stdout;
  out.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : renderTrace(report));
  return report.ok ? 0 : 1;
}

/** Hidden admin routes (GET / home page and the data it polls), registered by the agent's admin server. */
export function diagnosticsRoutes(opts: { agentAdminUrl: () => string }): AdminRoute[] {
  const history = new RateHistory();
  const errors: Summary['errors'] = [];
  return [
    {
      method: 'GET', path: '/', help: 'admin home page', hidden: true,
      handler: () => adminResponse(200, renderHomePage(), { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }),
    },
    {
      method: 'GET', path: SUMMARY_PATH, help: 'the data the home page shows (JSON)', hidden: true,
      handler: async () => adminResponse(200, await buildSummary(opts.agentAdminUrl(), history, errors), { 'cache-control': 'no-store' }),
    },
  ];
}
