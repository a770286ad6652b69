import { z, type ZodType } from 'zod';
import {
  agentConfigSchema,
  dnsConfigSchema,
  globalMeshConfigSchema,
  proxyBootstrapSchema,
  registrySnapshotSchema,
  servicesSpecSchema,
  trafficRulesFileSchema,
} from './schemas/index';

/** Every published schema, by the file name it is published under (`schemas/NAME.schema.json`). */
export const CONFIG_SCHEMAS: Record<string, { schema: ZodType; title: string }> = {
  'agent-config': { schema: agentConfigSchema, title: 'mesh-agent configuration' },
  'services-spec': { schema: servicesSpecSchema, title: "TSF spec.yaml: the application's services" },
  'global-mesh-config': { schema: globalMeshConfigSchema, title: 'Global mesh traffic policy' },
  'proxy-bootstrap': { schema: proxyBootstrapSchema, title: "The proxy's startup configuration" },
  'dns-config': { schema: dnsConfigSchema, title: 'mesh-dns configuration' },
  'registry-snapshot': { schema: registrySnapshotSchema, title: 'Registry snapshot (file registry)' },
  'traffic-rules': { schema: trafficRulesFileSchema, title: 'Traffic rules (mesh.trafficRulesFile, mesh-agent rules validate|apply)' },
};

/**
 * The JSON Schema of a published schema, describing what a user writes (the input side: fields with
 * defaults are optional). Cross-field checks (e.g. ring_hash needs hashHeader) are only in the validator.
 */
export function toJsonSchema(name: string): Record<string, unknown> {
  const entry = CONFIG_SCHEMAS[name];
  if (!entry) throw new Error(`unknown schema "${name}"; known: ${Object.keys(CONFIG_SCHEMAS).join(', ')}`);
  const generated = z.toJSONSchema(entry.schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  const { $schema, ...rest } = generated;
  return { $schema, $id: `https://mesh-agent.dev/schemas/${name}.schema.json`, title: entry.title, ...rest };
}

/** The text of `schemas/NAME.schema.json` as the build writes it. */
export function jsonSchemaText(name: string): string {
  return `${JSON.stringify(toJsonSchema(name), null, 2)}\n`;
}
