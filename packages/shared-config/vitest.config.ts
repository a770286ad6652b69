import { mergeConfig, defineConfig } from 'vitest/config';
import { meshVitestBase } from '../../vitest.config.base';

export default mergeConfig(meshVitestBase, defineConfig({}));
