#!/usr/bin/env node
// Builds native/ (recvmmsg/sendmmsg for the UDP listener, N-API in C). Optional: when it cannot be
// built mesh-dns serves UDP through Node's dgram (the same answers, fewer of them per CPU-second),
// so a failure here warns and exits 0.
// node-gyp would download Node's headers; npm_config_nodedir points it at the local ones instead.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const here = path.dirname(new URL(import.meta.url).pathname);
const pkg = path.resolve(here, '..');
if (process.platform !== 'linux') {
  console.log('mesh-dns: the recvmmsg/sendmmsg addon is Linux-only; skipped (UDP served through dgram)');
  process.exit(0);
}
const candidates = [
  process.env.npm_config_node_gyp,
  '/usr/lib/node_modules/pnpm/dist/node_modules/node-gyp/bin/node-gyp.js',
  '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
  path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
].filter((p) => p && fs.existsSync(p));
if (candidates.length === 0) {
  console.warn('mesh-dns: node-gyp not found; the recvmmsg/sendmmsg addon is not built (UDP served through dgram)');
  process.exit(0);
}
const env = { ...process.env };
if (!env.npm_config_nodedir) {
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (fs.existsSync(path.join(prefix, 'include', 'node', 'common.gypi'))) env.npm_config_nodedir = prefix;
}
const res = spawnSync(process.execPath, [candidates[0], 'rebuild', '--directory', path.join(pkg, 'native')], { env, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
if (res.status !== 0) {
  console.warn(`mesh-dns: building the recvmmsg/sendmmsg addon failed (UDP served through dgram):\n${(res.stderr || res.stdout || '').split('\n').slice(-15).join('\n')}`);
  process.exit(0);
}
console.log('mesh-dns: built native/build/Release/udp_batch.node');
