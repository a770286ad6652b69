import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIG_SCHEMAS, jsonSchemaText, toJsonSchema } from '../src/index';
import pkg from '../package.json';

// The files are written by the build (`tsup && node scripts/write-schemas.mjs`); nx runs the build before the tests.
const schemasDir = join(__dirname, '..', 'schemas');

describe('published JSON Schemas', () => {
  const names = Object.keys(CONFIG_SCHEMAS);

  it('covers the seven config shapes', () => {
    expect(names.sort()).toEqual(['agent-config', 'dns-config', 'global-mesh-config', 'proxy-bootstrap', 'registry-snapshot', 'services-spec', 'traffic-rules']);
  });

  it.each(names)('schemas/%s.schema.json exists and matches the zod schema', (name) => {
    const file = join(schemasDir, `${name}.schema.json`);
    expect(existsSync(file), `${file} is missing: run the package build`).toBe(true);
    expect(readFileSync(file, 'utf8')).toBe(jsonSchemaText(name));
  });

  it('describes the input side: defaults shown, unknown keys refused', () => {
    const agent = toJsonSchema('agent-config') as any;
    expect(agent.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
    expect(agent.additionalProperties).toBe(false);
    expect(agent.required).toBeUndefined();
    expect(agent.properties.ports.properties.dns).toMatchObject({ type: 'integer', default: 55354, minimum: 0, maximum: 65535 });
    expect(agent.properties.proxy.properties.uid.default).toBe(1000);
    expect(agent.properties.mesh.properties.vip.default).toBe('240.240.0.1');
    expect(agent.properties.registry.properties.backend).toMatchObject({ enum: ['file', 'etcd'], default: 'file' });

    const spec = toJsonSchema('services-spec') as any;
    const service = spec.properties.spec.properties.services.items;
    expect(service.required).toEqual(['name', 'ports']);
    expect(service.additionalProperties).toBe(false);
    expect(service.properties.ports.items.properties.targetPort).toMatchObject({ type: 'integer', minimum: 1, maximum: 65535 });
    expect(service.properties.ports.items.properties.protocol).toMatchObject({ enum: ['http', 'http2', 'https', 'grpc', 'tcp', 'tls', 'dubbo', 'redis', 'mysql', 'mongo', 'auto'] });
    // no default: an undeclared protocol is sniffed (auto), which the agent decides, not the schema
    expect(service.properties.ports.items.properties.protocol.default).toBeUndefined();
    expect(service.properties.ports.items.required).toEqual(['targetPort']);
    // the path's patterns (one, or several under allOf): a validator applies every one
    const pathSchema = service.properties.healthCheck.properties.path;
    const patterns: string[] = [pathSchema.pattern, ...(pathSchema.allOf ?? []).map((p: { pattern?: string }) => p.pattern)].filter(Boolean);
    const validPath = (value: string) => patterns.every((p) => new RegExp(p).test(value));
    expect(patterns.length).toBeGreaterThan(0);
    expect(validPath('/health')).toBe(true);
    expect(validPath('health')).toBe(false);
    expect(validPath('/my health')).toBe(false);
  });

  it('the package publishes them', () => {
    expect(pkg.files).toContain('schemas');
    expect((pkg.exports as Record<string, unknown>)['./schemas/*']).toBe('./schemas/*');
  });
});
