import { AGENT_ENV_BINDINGS, registerEnvBindings } from '../env-overrides';
import { agentConfigSchema } from './agent-config';

registerEnvBindings(agentConfigSchema, AGENT_ENV_BINDINGS);

export * from './common';
export * from './agent-config';
export * from './services-spec';
export * from './global-mesh-config';
export * from './proxy-bootstrap';
export * from './dns-config';
export * from './registry-snapshot';
export * from './traffic-rules';
