import { join } from 'node:path';
import type { AgentConfig } from './schemas/agent-config';

/** Where the agent reads spec.yaml from: `app.specFile`, else `<app.configDir>/spec.yaml`. */
export function specFilePath(config: Pick<AgentConfig, 'app'>): string {
  return config.app.specFile ?? join(config.app.configDir, 'spec.yaml');
}
