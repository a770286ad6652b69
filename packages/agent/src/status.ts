// The agent's life-cycle status, in the order the source document lists it.
export const AGENT_STATUSES = ['<INIT>', '<CONFIG_READY>', '<FLOW_TAKEOVER>', '<SERVICE_REGISTERED>'] as const;
export type AgentStatus = (typeof AGENT_STATUSES)[number];

export interface StatusTransition {
  status: AgentStatus;
  time: string;
}

export class StatusMachine {
  private current: AgentStatus = '<INIT>';
  private readonly transitions: StatusTransition[] = [{ status: '<INIT>', time: new Date().toISOString() }];

  get status(): AgentStatus {
    return this.current;
  }

  /** Moves to `status` (forwards or backwards, e.g. back to <FLOW_TAKEOVER> when deregistered). */
  set(status: AgentStatus): void {
    if (status === this.current) return;
    this.current = status;
    this.transitions.push({ status, time: new Date().toISOString() });
  }

  atLeast(status: AgentStatus): boolean {
    return AGENT_STATUSES.indexOf(this.current) >= AGENT_STATUSES.indexOf(status);
  }

  history(): StatusTransition[] {
    return [...this.transitions];
  }
}
