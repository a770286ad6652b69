// Traffic takeover: maps the agent config to @mesh-agent/iptables-rules' CaptureRulesConfig,
// applies and verifies the rules, re-checks them for drift (someone flushed OUTPUT), and removes
// exactly what was applied (also stale rules a crashed agent left behind: the iptables package
// records what it applied in a state file). Apply, re-check and remove run one at a time.
import {
  applyRules,
  buildRuleSets,
  cleanRules,
  formatDifference,
  resolveCaptureConfig,
  SpawnExecutor,
  verifyRules,
  type CaptureRulesConfig,
  type Executor,
} from '@mesh-agent/iptables-rules';
import { EXIT_CODES, isMeshError, MeshError } from '@mesh-agent/shared-config';
import type { MeshModel } from './mesh-model';
import { proxiedPorts } from './port-protocols';

export type CaptureMode = 'pending' | 'applied' | 'drifted' | 'disabled' | 'unavailable' | 'failed' | 'removed';

/** What the periodic re-check found so far (kept across re-applies, shown in /health and config_dump). */
export interface DriftRecord {
  /** how many times the rules were found drifted */
  count: number;
  /** when the last drift was found (ISO 8601) */
  lastDetectedAt: string;
  /** the last drift, one readable line per difference (`missing ipv4 -A OUTPUT -j ISTIO_OUTPUT`) */
  lastDifferences: string[];
  /** when the rules were last put back (re-applied, or back by someone else), if they were */
  lastHealedAt?: string;
}

export interface CaptureState {
  mode: CaptureMode;
  detail: string;
  hint?: string;
  code?: string;
  drift?: DriftRecord;
}

export type DriftAction = 'reapply' | 'report';

/** What one re-check found. */
export type DriftOutcome =
  | { kind: 'skipped' }
  | { kind: 'in-place' }
  | { kind: 'drifted'; differences: string[] }
  | { kind: 'reapplied'; differences: string[] }
  | { kind: 'reapply-failed'; differences: string[]; state: CaptureState }
  | { kind: 'back'; differences: string[] };

/** One difference on one line, as an operator reads it in /health. */
export function describeDifference(diff: Parameters<typeof formatDifference>[0]): string {
  return formatDifference(diff).replace(/\s*\n\s*/g, ' ').replace(/\s{2,}/g, ' ');
}

export function captureRulesConfig(model: MeshModel): CaptureRulesConfig {
  const { agent, spec, ports } = model;
  const excluded = new Set(agent.iptables.excludeInboundPorts);
  // only the ports the proxy can serve: a captured dubbo or tcp port would hang its clients
  const inboundPorts = [...new Set(proxiedPorts(spec).map((p) => p.port))].filter((p) => !excluded.has(p));
  return {
    localIp: model.nodeIp,
    localIp6: model.nodeIp6,
    inboundPorts,
    outboundCidrs: [...new Set([agent.mesh.vip, agent.mesh.vipCidr, ...agent.iptables.includeOutboundCidrs])],
    outboundExcludeCidrs: agent.iptables.excludeOutboundCidrs,
    outboundExcludePorts: agent.iptables.excludeOutboundPorts,
    proxyPort: ports.proxyListener,
    dnsCapture: agent.iptables.captureDns && agent.dns.enabled,
    dnsPort: ports.dns,
    dnsAddress: '127.0.0.1',
    proxyUid: agent.proxy.uid,
    proxyGid: agent.proxy.gid,
    ipv6: agent.iptables.ipv6,
    // mesh-dns serves 127.0.0.1 only: an IPv6 DNAT to [::1] would reach nothing
    dnsCapture6: false,
  };
}

export interface CaptureControllerOptions {
  stateFile: string;
  executor?: Executor;
  log: (line: string) => void;
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

export class CaptureController {
  private readonly executor: Executor;
  state: CaptureState = { mode: 'pending', detail: 'traffic capture not applied yet' };
  /** apply, re-check and remove run one after the other: a re-check never reads a half-done apply or clean */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: CaptureControllerOptions) {
    this.executor = opts.executor ?? new SpawnExecutor();
  }

  private serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task, task);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Why capture cannot run here, or undefined when it can be tried. */
  precondition(): CaptureState | undefined {
    if (!isRoot()) {
      return {
        mode: 'unavailable',
        code: 'MESH_AGENT_NOT_ROOT',
        detail: `traffic is not taken over: iptables rules need root, and mesh-agent runs as uid ${process.getuid?.()}`,
        hint: 'run mesh-agent as root (it drops the proxy and mesh-dns to proxy.uid/gid), or set iptables.enabled: false and send traffic to the proxy explicitly (curl -x 127.0.0.1:15001)',
      };
    }
    return undefined;
  }

  /** Removes rules a previous (crashed) run left behind, as recorded in the state file. */
  async removeStale(): Promise<string[]> {
    const result = await cleanRules({ executor: this.executor, stateFile: this.opts.stateFile, log: this.opts.log });
    return result.removed.flatMap((r) => r.chains);
  }

  /** Applies and verifies the rules; never throws: the outcome is in `state`. */
  apply(config: CaptureRulesConfig): Promise<CaptureState> {
    return this.serial(() => this.applyNow(config));
  }

  private async applyNow(config: CaptureRulesConfig): Promise<CaptureState> {
    const blocked = this.precondition();
    if (blocked) return (this.state = blocked);
    try {
      const sets = buildRuleSets(resolveCaptureConfig(config));
      await applyRules(sets, { executor: this.executor, stateFile: this.opts.stateFile, log: this.opts.log });
      const verified = await verifyRules(sets, { executor: this.executor, stateFile: this.opts.stateFile, log: this.opts.log });
      if (!verified.ok) {
        throw new MeshError('MESH_AGENT_CAPTURE_VERIFY_FAILED', `the iptables rules differ from what was applied (${verified.differences.length} difference(s))`, {
          exitCode: EXIT_CODES.verifyMismatch,
          hint: 'another tool changed the nat table; see `mesh-iptables verify` for the differences',
        });
      }
      const rules = verified.checked.reduce((n, c) => n + c.rules, 0);
      return (this.state = { mode: 'applied', detail: `${rules} iptables rules applied and verified (state file ${this.opts.stateFile})` });
    } catch (err) {
      const code = isMeshError(err) ? err.code : 'MESH_AGENT_CAPTURE_FAILED';
      const unavailable = code === 'MESH_IPT_NOT_FOUND' || code === 'MESH_IPT_PERMISSION';
      return (this.state = {
        mode: unavailable ? 'unavailable' : 'failed',
        code,
        detail: `traffic is not taken over: ${(err as Error).message}`,
        hint: isMeshError(err) && err.hint ? err.hint : 'check `mesh-iptables verify` and the agent log',
      });
    }
  }

  /** Compares the nat table (both families with IPv6) with the rules of `config`: one readable line per difference. */
  verify(config: CaptureRulesConfig): Promise<{ ok: boolean; differences: string[] }> {
    return this.serial(() => this.verifyNow(config));
  }

  private async verifyNow(config: CaptureRulesConfig): Promise<{ ok: boolean; differences: string[] }> {
    const sets = buildRuleSets(resolveCaptureConfig(config));
    const result = await verifyRules(sets, { executor: this.executor, stateFile: this.opts.stateFile });
    return { ok: result.ok, differences: result.differences.map(describeDifference) };
  }

  /**
   * The periodic re-check: while the rules are in force (or reported drifted), compares them with
   * the nat table; on a difference re-applies them (`reapply`: one atomic, idempotent restore per
   * family) or marks the capture drifted (`report`). Throws only when the table cannot be read.
   */
  recheck(config: CaptureRulesConfig, action: DriftAction): Promise<DriftOutcome> {
    return this.serial(async (): Promise<DriftOutcome> => {
      const before = this.state;
      // a re-apply after a drift that failed is tried again at the next check
      const watched = before.mode === 'applied' || before.mode === 'drifted' || (before.mode === 'failed' && before.drift !== undefined);
      if (!watched) return { kind: 'skipped' };
      const { ok, differences } = await this.verifyNow(config);
      const now = new Date().toISOString();
      if (ok) {
        if (before.mode === 'applied') return { kind: 'in-place' };
        // someone put the rules back while the agent only reported (or could not re-apply)
        const drift = { ...before.drift!, lastHealedAt: now };
        this.state = { mode: 'applied', detail: `iptables rules in place again (drifted at ${drift.lastDetectedAt})`, drift };
        return { kind: 'back', differences: drift.lastDifferences };
      }
      // still the drift reported before (report mode, or a re-apply that failed): not a new one
      const ongoing = before.mode !== 'applied';
      const drift: DriftRecord = {
        count: (before.drift?.count ?? 0) + (ongoing ? 0 : 1),
        lastDetectedAt: ongoing ? before.drift!.lastDetectedAt : now,
        lastDifferences: differences,
        ...(before.drift?.lastHealedAt ? { lastHealedAt: before.drift.lastHealedAt } : {}),
      };
      const changed = !ongoing || before.drift!.lastDifferences.join('\n') !== differences.join('\n');
      if (action === 'report') {
        this.state = {
          mode: 'drifted',
          code: 'MESH_AGENT_CAPTURE_DRIFT',
          detail: `the iptables rules drifted from what the agent applied: ${differences.join('; ')}`,
          hint: 'find who changes the nat table; iptables.onDrift is report, so the agent does not re-apply: restart it (or set onDrift: reapply) to put the rules back',
          drift,
        };
        return changed ? { kind: 'drifted', differences } : { kind: 'in-place' };
      }
      const applied = await this.applyNow(config);
      if (applied.mode !== 'applied') {
        this.state = { ...applied, drift };
        return { kind: 'reapply-failed', differences, state: this.state };
      }
      this.state = { ...applied, detail: `${applied.detail}; re-applied after a drift at ${now}`, drift: { ...drift, lastHealedAt: new Date().toISOString() } };
      return { kind: 'reapplied', differences };
    });
  }

  /** Removes what was applied. */
  remove(): Promise<void> {
    return this.serial(async () => {
      if (this.state.mode !== 'applied' && this.state.mode !== 'failed' && this.state.mode !== 'drifted') return;
      await cleanRules({ executor: this.executor, stateFile: this.opts.stateFile, log: this.opts.log });
      this.state = { mode: 'removed', detail: 'traffic capture removed' };
    });
  }
}
