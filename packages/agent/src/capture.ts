// Traffic takeover: maps the agent config to @mesh-agent/iptables-rules' CaptureRulesConfig,
// applies and verifies the rules, and removes exactly what was applied (also stale rules a crashed
// agent left behind: the iptables package records what it applied in a state file).
import {
  applyRules,
  buildRuleSets,
  cleanRules,
  resolveCaptureConfig,
  SpawnExecutor,
  verifyRules,
  type CaptureRulesConfig,
  type Executor,
} from '@mesh-agent/iptables-rules';
import { EXIT_CODES, isMeshError, MeshError } from '@mesh-agent/shared-config';
import type { MeshModel } from './mesh-model';
import { proxiedPorts } from './port-protocols';

export type CaptureMode = 'pending' | 'applied' | 'disabled' | 'unavailable' | 'failed' | 'removed';

export interface CaptureState {
  mode: CaptureMode;
  detail: string;
  hint?: string;
  code?: string;
}

export function captureRulesConfig(model: MeshModel): CaptureRulesConfig {
  const { agent, spec, ports } = model;
  const excluded = new Set(agent.iptables.excludeInboundPorts);
  // only the ports the proxy can serve: a captured dubbo or tcp port would hang its clients
  const inboundPorts = [...new Set(proxiedPorts(spec).map((p) => p.port))].filter((p) => !excluded.has(p));
  return {
    localIp: model.nodeIp,
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

  constructor(private readonly opts: CaptureControllerOptions) {
    this.executor = opts.executor ?? new SpawnExecutor();
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
  async apply(config: CaptureRulesConfig): Promise<CaptureState> {
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

  async verify(config: CaptureRulesConfig): Promise<{ ok: boolean; differences: string[] }> {
    const sets = buildRuleSets(resolveCaptureConfig(config));
    const result = await verifyRules(sets, { executor: this.executor, stateFile: this.opts.stateFile });
    return { ok: result.ok, differences: result.differences.map((d) => JSON.stringify(d)) };
  }

  /** Removes what was applied. */
  async remove(): Promise<void> {
    if (this.state.mode !== 'applied' && this.state.mode !== 'failed') return;
    await cleanRules({ executor: this.executor, stateFile: this.opts.stateFile, log: this.opts.log });
    this.state = { mode: 'removed', detail: 'traffic capture removed' };
  }
}
