import { readFileSync } from 'node:fs';
import { ConfigError, EXIT_CODES, MeshError } from '@mesh-agent/shared-config';
import { LineCounter, isMap, parseDocument } from 'yaml';
import type { ConfigSource } from './config';

const FILE_HINT = 'fix the file: YAML or JSON, a mapping of the settings `mesh-iptables --help` lists (camelCase keys)';

/** Reads a capture config file (YAML or JSON: JSON is YAML) and says which line each field is on. */
export function readCaptureConfigFile(file: string): { value: Record<string, unknown>; source: ConfigSource } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new MeshError('MESH_CONFIG_UNREADABLE', `cannot read the config file ${file}: ${(err as Error).message}`, {
      exitCode: EXIT_CODES.usage,
      hint: 'check the path given to --config',
    });
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => ({ file, line: e.linePos?.[0]?.line, path: '', message: e.message.split('\n')[0] })),
      { source: file, hint: FILE_HINT },
    );
  }
  if (doc.contents !== null && !isMap(doc.contents)) {
    throw new ConfigError([{ file, line: 1, path: '', message: 'expected a mapping of capture settings (localIp, inboundPorts, ...)' }], { source: file, hint: FILE_HINT });
  }
  const value = (doc.toJS() ?? {}) as Record<string, unknown>;
  const lineOf = (path: string): number | undefined => {
    const keys = path.split(/\.|\[(\d+)\]/).filter((k) => k !== undefined && k !== '').map((k) => (/^\d+$/.test(k) ? Number(k) : k));
    const node = doc.getIn(keys, true) as { range?: [number, number, number] } | undefined;
    const offset = node?.range?.[0];
    return offset === undefined ? undefined : lineCounter.linePos(offset).line;
  };
  return { value, source: { file, lineOf } };
}
