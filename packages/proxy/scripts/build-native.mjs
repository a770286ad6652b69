#!/usr/bin/env node
// Builds native/ (getsockopt SO_ORIGINAL_DST, N-API). Optional: when it cannot be built the proxy
// falls back to the Host header and the peer address, so a failure here warns and exits 0.
// node-gyp would download Node's headers; npm_config_nodedir points it at the local ones instead.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const here = path.dirname(new URL(import.meta.url).pathname);
const pkg = path.resolve(here, '..');
if (process.platform !== 'linux') {
  console.log('mesh-proxy: SO_ORIGINAL_DST addon is Linux-only; skipped');
  process.exit(0);
}
const candidates = [
  process.env.npm_config_node_gyp,
  '/usr/lib/node_modules/pnpm/dist/node_modules/node-gyp/bin/node-gyp.js',
  '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
  path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
].filter((p) => p && fs.existsSync(p));
if (candidates.length === 0) {
  console.warn('mesh-proxy: node-gyp not found; the SO_ORIGINAL_DST addon is not built (fallback: Host header and peer address)');
  process.exit(0);
}
const env = { ...process.env };
if (!env.npm_config_nodedir) {
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (fs.existsSync(path.join(prefix, 'include', 'node', 'common.gypi'))) env.npm_config_nodedir = prefix;
}
const res = spawnSync(process.execPath, [candidates[0], 'rebuild', '--directory', path.join(pkg, 'native')], { env, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
if (res.status !== 0) {
  console.warn(`mesh-proxy: building the SO_ORIGINAL_DST addon failed (fallback: Host header and peer address):\n${(res.stderr || res.stdout || '').split('\n').slice(-15).join('\n')}`);
  process.exit(0);
}
console.log('mesh-proxy: built native/build/Release/original_dst.node');
