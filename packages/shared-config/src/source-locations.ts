import { isMap, isPair, isScalar, isSeq, LineCounter, type Document, type Node } from 'yaml';

/** Maps a field path to the line it is written on, from a parsed YAML/JSON document. */
export interface LineLocator {
  lineOf(path: readonly PropertyKey[]): number | undefined;
}

/**
 * The line of the deepest node that exists along `path` (the key's line for a mapping entry),
 * so a missing field points at its parent and an unknown key at itself.
 */
export function createLineLocator(doc: Document, lineCounter: LineCounter): LineLocator {
  const lineAt = (offset: number | undefined) => (offset === undefined ? undefined : lineCounter.linePos(offset).line);
  return {
    lineOf(path) {
      let node: unknown = doc.contents;
      let line = isNodeWithRange(node) ? lineAt(node.range[0]) : undefined;
      for (const segment of path) {
        if (isMap(node)) {
          const pair = node.items.find((item) => isPair(item) && keyText(item.key) === String(segment));
          if (!pair) break;
          const keyRange = isNodeWithRange(pair.key) ? pair.key.range : undefined;
          line = lineAt(keyRange?.[0]) ?? line;
          node = pair.value;
        } else if (isSeq(node) && typeof segment === 'number') {
          const item = node.items[segment];
          if (!isNodeWithRange(item)) break;
          line = lineAt(item.range[0]) ?? line;
          node = item;
        } else break;
      }
      return line;
    },
  };
}

function keyText(key: unknown): string | undefined {
  if (isScalar(key)) return String(key.value);
  return typeof key === 'string' ? key : undefined;
}

function isNodeWithRange(node: unknown): node is Node & { range: [number, number, number] } {
  return typeof node === 'object' && node !== null && Array.isArray((node as Node).range);
}
