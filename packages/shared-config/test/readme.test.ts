import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AGENT_ENV_BINDINGS, toJsonSchema } from '../src/index';
// @ts-expect-error -- plain ESM script without types
import { DOCUMENTED_SCHEMAS, renderEnvTable, renderFieldTable, replaceFieldTable } from '../scripts/field-table.mjs';

const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');

describe('README', () => {
  it('field tables and the env table match the schemas (regenerate: pnpm build && node scripts/render-readme.mjs)', () => {
    let expected = readme;
    for (const name of DOCUMENTED_SCHEMAS as string[]) expected = replaceFieldTable(expected, name, renderFieldTable(toJsonSchema(name)));
    expected = replaceFieldTable(expected, 'env', renderEnvTable(AGENT_ENV_BINDINGS));
    expect(readme).toBe(expected);
  });

  it('documents every field of the agent config and every variable', () => {
    for (const section of ['node.ip', 'ports.dns', 'registry.etcd.endpoints', 'iptables.excludeOutboundCidrs', 'log.scopes', 'paths.proxyBootstrap']) {
      expect(readme).toContain(`| \`${section}\` |`);
    }
    for (const binding of AGENT_ENV_BINDINGS) expect(readme).toContain(`| \`${binding.name}\` | \`${binding.path.join('.')}\` |`);
  });

  it('every documented variable points at a real field', () => {
    const agent = toJsonSchema('agent-config') as any;
    for (const binding of AGENT_ENV_BINDINGS) {
      let node = agent;
      for (const key of binding.path) node = node?.properties?.[key];
      expect(node, binding.name).toBeDefined();
    }
  });
});
