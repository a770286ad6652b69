import { defineConfig } from 'vitest/config';

/** Shared vitest settings: real sockets and child processes need room, forks isolate them. */
export const meshVitestBase = defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    fileParallelism: false,
    reporters: ['default'],
  },
});
