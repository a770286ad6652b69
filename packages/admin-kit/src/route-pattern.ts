import { MeshError, EXIT_CODES } from '@mesh-agent/shared-config';

/** One segment of a route path: a literal (`config_dump`) or a named parameter (`{component}`). */
type Segment = { kind: 'literal'; text: string } | { kind: 'param'; name: string };

/** A compiled path pattern such as `/logging/{scope}/{level}`. */
export interface RoutePattern {
  readonly source: string;
  readonly segments: readonly Segment[];
  /** Path parameters of `path` (already decoded), or undefined when the path does not match. */
  match(path: string): Record<string, string> | undefined;
}

const PARAM_RE = /^\{([A-Za-z_][A-Za-z0-9_]*)\}$/;

/** Compiles a route path; throws MESH_ADMIN_BAD_ROUTE for a pattern that could never match cleanly. */
export function compilePattern(source: string): RoutePattern {
  if (!source.startsWith('/')) {
    throw badRoute(source, 'a route path must start with "/"');
  }
  const parts = source === '/' ? [] : source.slice(1).split('/');
  const seen = new Set<string>();
  const segments: Segment[] = parts.map((part) => {
    const param = PARAM_RE.exec(part);
    if (param) {
      if (seen.has(param[1])) throw badRoute(source, `parameter {${param[1]}} appears twice`);
      seen.add(param[1]);
      return { kind: 'param', name: param[1] };
    }
    if (part === '') throw badRoute(source, 'empty path segment (double or trailing "/")');
    if (part.includes('{') || part.includes('}')) {
      throw badRoute(source, `segment "${part}" must be a literal or a whole {name} parameter`);
    }
    return { kind: 'literal', text: part };
  });

  return {
    source,
    segments,
    match(path: string) {
      const pathParts = path === '/' ? [] : path.slice(1).split('/');
      if (pathParts.length !== segments.length) return undefined;
      const params: Record<string, string> = {};
      for (let i = 0; i < segments.length; i++) {
        const segment = segments[i];
        const raw = pathParts[i];
        if (segment.kind === 'literal') {
          if (raw !== segment.text) return undefined;
        } else {
          if (raw === '') return undefined;
          params[segment.name] = decodeSegment(raw, path);
        }
      }
      return params;
    },
  };
}

/**
 * Orders patterns from most to least specific, so `/config/agent` wins over `/config/{name}`:
 * compared segment by segment, a literal beats a parameter.
 */
export function compareSpecificity(a: RoutePattern, b: RoutePattern): number {
  const n = Math.min(a.segments.length, b.segments.length);
  for (let i = 0; i < n; i++) {
    const ka = a.segments[i].kind;
    const kb = b.segments[i].kind;
    if (ka !== kb) return ka === 'literal' ? -1 : 1;
  }
  return 0;
}

/** Thrown while matching a path whose percent-encoding is broken; the server answers 400. */
export class BadPathEncodingError extends MeshError {
  constructor(path: string) {
    super('MESH_ADMIN_BAD_PATH', `path ${path} has an invalid percent-encoding`, {
      hint: 'encode path parameters with encodeURIComponent',
      exitCode: EXIT_CODES.usage,
    });
  }
}

function decodeSegment(raw: string, path: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new BadPathEncodingError(path);
  }
}

function badRoute(source: string, reason: string): MeshError {
  return new MeshError('MESH_ADMIN_BAD_ROUTE', `invalid admin route path "${source}": ${reason}`, {
    hint: 'write paths like /config_dump or /logging/{scope}/{level}',
    exitCode: EXIT_CODES.usage,
  });
}
