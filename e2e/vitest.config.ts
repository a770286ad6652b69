import { mergeConfig, defineConfig } from 'vitest/config';
import { meshVitestBase } from '../vitest.config.base.js';

export default mergeConfig(meshVitestBase, defineConfig({ test: { testTimeout: 120_000 } }));
