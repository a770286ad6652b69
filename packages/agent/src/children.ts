// Where the child components' executables are: each package's bin (it calls the package's
// dist/cli.js runCli), resolved from this package's dependencies so a published install works.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { EXIT_CODES, MeshError } from '@mesh-agent/shared-config';

const require = createRequire(import.meta.url);

export function resolveBin(packageName: string, binName: string): string {
  let manifestPath: string;
  try {
    manifestPath = require.resolve(`${packageName}/package.json`);
  } catch (err) {
    throw new MeshError('MESH_AGENT_CHILD_MISSING', `cannot find the package ${packageName}: ${(err as Error).message}`, {
      exitCode: EXIT_CODES.permission,
      hint: `install it next to mesh-agent (npm i ${packageName})`,
    });
  }
  const manifest = JSON.parse(fs.readFileSync(manifestPath, 'utf8')) as { bin?: Record<string, string> | string };
  const rel = typeof manifest.bin === 'string' ? manifest.bin : manifest.bin?.[binName];
  if (!rel) throw new MeshError('MESH_AGENT_CHILD_MISSING', `${packageName} declares no bin ${binName}`);
  const bin = path.resolve(path.dirname(manifestPath), rel);
  const dist = path.resolve(path.dirname(manifestPath), 'dist/cli.js');
  if (!fs.existsSync(dist)) {
    throw new MeshError('MESH_AGENT_CHILD_MISSING', `${packageName} is not built: ${dist} is missing`, {
      exitCode: EXIT_CODES.permission,
      hint: `build it first: pnpm --filter ${packageName} build`,
    });
  }
  return bin;
}

/**
 * The Node flags a bin asks for in its shebang (`#!/usr/bin/env -S node --max-semi-space-size=4`).
 * fork() runs `node BIN` and never reads the shebang, so the supervisor passes them as execArgv.
 */
export function nodeFlagsOf(binPath: string): string[] {
  let firstLine: string;
  try {
    firstLine = fs.readFileSync(binPath, 'utf8').split('\n', 1)[0] ?? '';
  } catch {
    return [];
  }
  const m = /^#!\s*(?:\S*\/env(?:\s+-S)?\s+)?(?:\S*\/)?node((?:\s+--?[\w-]+(?:=\S+)?)*)\s*$/.exec(firstLine);
  return m ? m[1].trim().split(/\s+/).filter(Boolean) : [];
}

/**
 * The Node flags the agent starts each child with when the config names none (proxy.nodeOptions,
 * meshDns.nodeOptions). Measured with bench/footprint (packages/agent/README.md, "Memory"): a young
 * generation capped at a few MiB keeps each process's resident set lower at a small GC cost; no flag
 * that slows the data path (no --no-opt, --lite-mode or --jitless: those are for the agent itself).
 */
export const DEFAULT_CHILD_NODE_FLAGS: Readonly<Record<'envoy' | 'mesh-dns', readonly string[]>> = {
  envoy: ['--max-semi-space-size=4'],
  'mesh-dns': [],
};

/**
 * The flags a child is forked with: the configured ones as given (`[]` = none), otherwise the
 * agent's defaults for the component followed by the bin's shebang flags (a flag the bin asks for
 * itself, such as mesh-dns' --max-semi-space-size=4, wins over the default of the same name).
 */
export function childNodeFlags(component: 'envoy' | 'mesh-dns', binPath: string, configured?: readonly string[]): string[] {
  if (configured) return [...configured];
  const own = nodeFlagsOf(binPath);
  const nameOf = (flag: string) => flag.split('=', 1)[0];
  const ownNames = new Set(own.map(nameOf));
  return [...DEFAULT_CHILD_NODE_FLAGS[component].filter((f) => !ownNames.has(nameOf(f))), ...own];
}

export function proxyBin(): string {
  return resolveBin('@mesh-agent/proxy', 'mesh-proxy');
}

export function meshDnsBin(): string {
  return resolveBin('@mesh-agent/mesh-dns', 'mesh-dns');
}

export function agentVersion(): string {
  for (const candidate of ['../package.json', '../../package.json']) {
    try {
      const manifest = require(candidate) as { name?: string; version?: string };
      if (manifest.name === 'mesh-agent' && manifest.version) return manifest.version;
    } catch {
      // try the next location (src/ in tests, dist/ when built)
    }
  }
  return '0.0.0';
}
