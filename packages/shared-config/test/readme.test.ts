import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AGENT_ENV_BINDINGS, agentConfigSchema, globalMeshConfigSchema, parseConfigText, servicesSpecSchema, toJsonSchema } from '../src/index';
import { expectConfigError } from './helpers';
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

/** The fenced blocks of a language that follow a heading, in order. */
function blocksAfter(heading: string, lang: string): string[] {
  const start = readme.indexOf(`\n## ${heading}`);
  expect(start, heading).toBeGreaterThan(-1);
  const next = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, next < 0 ? undefined : next);
  return [...section.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]);
}

describe('README examples', () => {
  it('the examples of each section are valid', () => {
    expect(parseConfigText(agentConfigSchema, blocksAfter('Agent config', 'yaml')[0]).registry.backend).toBe('etcd');
    expect(parseConfigText(servicesSpecSchema, blocksAfter('Services file', 'yaml')[0]).spec.services[0].name).toBe('user');
    expect(parseConfigText(globalMeshConfigSchema, blocksAfter('Global mesh config', 'yaml')[0]).services.order.loadBalancing?.policy).toBe('ring_hash');
  });

  it('the bad-file example gives exactly the error shown', () => {
    const [bad] = blocksAfter('Usage', 'yaml');
    const [shown] = blocksAfter('Usage', 'text');
    const error = expectConfigError(() => parseConfigText(agentConfigSchema, bad, { source: 'agent.yaml' }));
    const printed = `my-tool: error [${error.code}]: ${error.message}\n  hint: ${error.hint}\n`;
    expect(shown).toBe(`$ node my-tool.mjs; echo $?\n${printed}2\n`);
  });
});
