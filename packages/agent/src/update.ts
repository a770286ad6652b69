// PUT /update: what it accepts. One YAML or JSON document with either or both of
//   services: [...]   the services of a RegistrySnapshot (the file registry's shape). The list
//                     replaces the previous update's list whole; a registry service of the same
//                     name and namespace is replaced by it; `services: []` drops the update's list.
//   global: {...}     a whole GlobalMeshConfig (timeouts, retries, load balancing, ...), replacing
//                     the one loaded at start.
// The document is validated whole (and the proxy config generated from it too) before anything
// changes; an invalid one is refused with every problem listed and the old config stays in force.
import { parseDocument } from 'yaml';
import {
  ConfigError,
  globalMeshConfigSchema,
  parseConfig,
  registrySnapshotSchema,
  type ConfigIssue,
  type GlobalMeshConfig,
  type RegistrySnapshot,
} from '@mesh-agent/shared-config';

const SOURCE = 'PUT /update';

export const UPDATE_HELP =
  'PUT /update takes one YAML or JSON document with `services:` (a registry snapshot\'s services list) and/or `global:` (a whole global mesh config), e.g.\n' +
  '  curl -X PUT --data-binary @update.yaml 127.0.0.1:15020/update\n' +
  'with update.yaml:\n  services:\n    - name: pay\n      instances: [{ id: pay-1, address: 198.18.0.7, port: 8080 }]';

export interface UpdateDocument {
  services?: RegistrySnapshot['services'];
  global?: GlobalMeshConfig;
}

function fail(issues: ConfigIssue[]): never {
  throw new ConfigError(issues, { source: SOURCE });
}

export function parseUpdateBody(text: string, _contentType?: string): UpdateDocument {
  if (text.trim() === '') fail([{ file: SOURCE, path: '', message: 'the request body is empty' }]);
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) fail(doc.errors.map((e) => ({ file: SOURCE, line: e.linePos?.[0].line, path: '', message: `syntax error: ${e.message.split('\n')[0]}` })));
  const value = doc.toJS() as unknown;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail([{ file: SOURCE, path: '', message: 'expected a mapping with `services:` and/or `global:`' }]);
  const record = value as Record<string, unknown>;
  const unknown = Object.keys(record).filter((k) => k !== 'services' && k !== 'global');
  const issues: ConfigIssue[] = unknown.map((k) => ({ file: SOURCE, path: k, message: 'unknown key: PUT /update takes `services:` and/or `global:`' }));
  if (record.services === undefined && record.global === undefined) issues.push({ file: SOURCE, path: '', message: 'give `services:` and/or `global:`' });
  const out: UpdateDocument = {};
  const collect = (fn: () => void) => {
    try {
      fn();
    } catch (err) {
      if (err instanceof ConfigError) issues.push(...err.issues);
      else throw err;
    }
  };
  if (record.services !== undefined) {
    // the services part is validated against the whole text, so issues carry line numbers
    collect(() => (out.services = parseConfig(registrySnapshotSchema, { services: record.services }, { source: SOURCE, text }).services));
  }
  if (record.global !== undefined) {
    collect(() => {
      try {
        out.global = parseConfig(globalMeshConfigSchema, record.global, { source: SOURCE });
      } catch (err) {
        if (err instanceof ConfigError) throw new ConfigError(err.issues.map((i) => ({ ...i, path: i.path ? `global.${i.path}` : 'global' })));
        throw err;
      }
    });
  }
  if (issues.length > 0) fail(issues);
  return out;
}
