// `mesh-agent wait`: polls the agent's /status until the sidecar is ready, so an application can
// start only after its sidecar (`mesh-agent wait && exec my-app`).
import { EXIT_CODES, MeshError } from '@mesh-agent/shared-config';
import { AGENT_STATUSES, type AgentStatus } from './status';

export interface WaitOptions {
  adminUrl: string;
  timeoutMs: number;
  /** The status that counts as ready (default <FLOW_TAKEOVER>: the children serve and traffic is taken over). */
  until?: AgentStatus;
  intervalMs?: number;
}

async function fetchText(url: string): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  return { status: res.status, text: await res.text() };
}

export async function waitUntilReady(opts: WaitOptions): Promise<AgentStatus> {
  const until = opts.until ?? '<FLOW_TAKEOVER>';
  const base = opts.adminUrl.replace(/\/+$/, '');
  const deadline = Date.now() + opts.timeoutMs;
  let last = 'the agent admin did not answer';
  for (;;) {
    try {
      const { text } = await fetchText(`${base}/status`);
      const status = text.trim() as AgentStatus;
      if (AGENT_STATUSES.includes(status) && AGENT_STATUSES.indexOf(status) >= AGENT_STATUSES.indexOf(until)) return status;
      last = `status is ${status}`;
    } catch (err) {
      last = `${base}/status: ${(err as Error).message}`;
    }
    if (Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 200));
  }
  let why = '';
  try {
    const health = JSON.parse((await fetchText(`${base}/health`)).text) as { problems?: string[] };
    if (health.problems?.length) why = `; /health says: ${health.problems.join('; ')}`;
  } catch {
    // no health to quote
  }
  throw new MeshError('MESH_AGENT_WAIT_TIMEOUT', `the sidecar was not ready (${until}) within ${opts.timeoutMs / 1000} s: ${last}${why}`, {
    exitCode: EXIT_CODES.unavailable,
    hint: `check ${base}/health and ${base}/latest_error`,
  });
}
