import { defineConfig, type Options } from 'tsup';

/**
 * The one tsup setup every package builds with: ESM (.js) and CJS (.cjs) with
 * type declarations for both, so `import` and `require` of the public API work.
 * `entry` names the public entry points (src/index.ts, and src/cli.ts for packages with a bin).
 */
export function meshPackageConfig(entry: Record<string, string>, overrides: Options = {}) {
  return defineConfig({
    entry,
    format: ['esm', 'cjs'],
    dts: true,
    sourcemap: true,
    clean: true,
    target: 'node20',
    platform: 'node',
    splitting: false,
    shims: true,
    ...overrides,
  });
}
