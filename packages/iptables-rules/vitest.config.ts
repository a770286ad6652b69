import { mergeConfig, defineConfig } from 'vitest/config';
import { meshVitestBase } from '../../vitest.config.base';

// The namespace tests spawn the CLI, iptables, dig and clients many times per test; on a shared
// 2-core machine that needs room (nothing here asserts on time).
export default mergeConfig(meshVitestBase, defineConfig({ test: { testTimeout: 180_000, hookTimeout: 180_000 } }));
