import { mergeConfig, defineConfig } from 'vitest/config';
import { meshVitestBase } from '../../vitest.config.base';

// Real processes (dnsmasq, the bin, npx, network namespaces) on a shared 2-core machine: generous timeouts.
export default mergeConfig(meshVitestBase, defineConfig({ test: { testTimeout: 120_000, hookTimeout: 120_000 } }));
