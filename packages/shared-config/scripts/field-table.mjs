// Renders a published JSON Schema as a Markdown table of fields (path, type, default, description).
// Used by scripts/render-readme.mjs and checked by test/readme.test.ts, so the README cannot drift from the schemas.

const escape = (text) => String(text).replace(/\|/g, '\\|').replace(/\n/g, ' ');

function typeOf(schema) {
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(' \\| ');
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.anyOf) {
    const formats = schema.anyOf.map((s) => s.format).filter(Boolean);
    if (formats.length === schema.anyOf.length && formats.every((f) => f.startsWith('ipv'))) return 'IP address';
    if (formats.length === schema.anyOf.length && formats.every((f) => f.startsWith('cidr'))) return 'CIDR';
    return schema.anyOf.map(typeOf).join(' \\| ');
  }
  if (schema.type === 'array') return `${typeOf(schema.items ?? {})}[]`;
  if (schema.type === 'object' && schema.additionalProperties && typeof schema.additionalProperties === 'object') {
    return `map of ${typeOf(schema.additionalProperties)}`;
  }
  if (schema.format === 'ipv4') return 'IPv4 address';
  if (schema.format === 'uri') return 'URL';
  if (schema.type === 'integer' && schema.minimum !== undefined && schema.maximum !== undefined && schema.maximum <= 4294967295) {
    return `integer ${schema.minimum}..${schema.maximum}`;
  }
  return schema.type ?? 'any';
}

function defaultOf(schema) {
  if (schema.default === undefined) return '';
  if (typeof schema.default === 'object' && schema.default !== null && !Array.isArray(schema.default) && Object.keys(schema.default).length === 0) return '';
  return `\`${JSON.stringify(schema.default)}\``;
}

function isSection(schema) {
  return schema.type === 'object' && schema.properties !== undefined;
}

function rows(schema, prefix, required, out) {
  for (const [key, field] of Object.entries(schema.properties ?? {})) {
    const path = prefix ? `${prefix}.${key}` : key;
    const needed = (required ?? []).includes(key) ? ' (required)' : '';
    if (isSection(field)) {
      out.push(`| \`${path}\` | section${needed} | | ${escape(field.description ?? '')} |`);
      rows(field, path, field.required, out);
    } else if (field.type === 'array' && field.items && isSection(field.items)) {
      out.push(`| \`${path}\` | list${needed} | ${defaultOf(field)} | ${escape(field.description ?? '')} |`);
      rows(field.items, `${path}[]`, field.items.required, out);
    } else {
      out.push(`| \`${path}\` | ${typeOf(field)}${needed} | ${defaultOf(field)} | ${escape(field.description ?? '')} |`);
    }
  }
  return out;
}

/** The Markdown table for one JSON Schema. */
export function renderFieldTable(jsonSchema) {
  return ['| field | type | default | description |', '| --- | --- | --- | --- |', ...rows(jsonSchema, '', jsonSchema.required, [])].join('\n');
}

/** Replaces the text between `<!-- fields:NAME -->` and `<!-- /fields:NAME -->` with the table. */
export function replaceFieldTable(readme, name, table) {
  const start = `<!-- fields:${name} -->`;
  const end = `<!-- /fields:${name} -->`;
  const from = readme.indexOf(start);
  const to = readme.indexOf(end);
  if (from < 0 || to < from) throw new Error(`README has no ${start} ... ${end} section`);
  return `${readme.slice(0, from + start.length)}\n${table}\n${readme.slice(to)}`;
}

/** The schemas whose tables the README carries (the proxy's and mesh-dns' are documented in their packages). */
export const DOCUMENTED_SCHEMAS = ['agent-config', 'services-spec', 'global-mesh-config', 'registry-snapshot'];

/** The Markdown table of documented environment variables. */
export function renderEnvTable(bindings) {
  const kinds = { string: 'text', int: 'integer', bool: 'true/false, 1/0, yes/no, on/off', list: 'comma- or space-separated list' };
  return [
    '| variable | overrides | value | meaning |',
    '| --- | --- | --- | --- |',
    ...bindings.map((b) => `| \`${b.name}\` | \`${b.path.join('.')}\` | ${kinds[b.kind]} | ${escape(b.description)} |`),
  ].join('\n');
}
