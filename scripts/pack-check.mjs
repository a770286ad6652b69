#!/usr/bin/env node
// Packaging check: what "npm install of one component" means for our users.
// Packs each published package with pnpm (workspace:^ becomes a real version range),
// installs the tarballs into an empty project outside the workspace, then checks that
// `import` and `require` of each public API work and that each bin runs.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const packages = [
  { dir: 'shared-config', name: '@mesh-agent/shared-config', exports: ['MeshError', 'ConfigError', 'runMain', 'DEFAULT_PORTS'] },
  { dir: 'admin-kit', name: '@mesh-agent/admin-kit', exports: ['createAdminServer', 'createLogger'] },
  { dir: 'iptables-rules', name: '@mesh-agent/iptables-rules', bin: 'mesh-iptables', binArgs: ['--help'] },
  { dir: 'mesh-dns', name: '@mesh-agent/mesh-dns', exports: ['createMeshDns'], bin: 'mesh-dns', binArgs: ['--help'] },
  { dir: 'proxy', name: '@mesh-agent/proxy', exports: ['createProxy'], bin: 'mesh-proxy', binArgs: ['--help'] },
  { dir: 'agent', name: 'mesh-agent', bin: 'mesh-agent', binArgs: ['--help'] },
];

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'mesh-pack-check-'));
const tarballs = path.join(work, 'tarballs');
const project = path.join(work, 'project');
fs.mkdirSync(tarballs);
fs.mkdirSync(project);
let failures = 0;

function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}

try {
  const files = {};
  for (const pkg of packages) {
    const out = run('pnpm', ['pack', '--pack-destination', tarballs], { cwd: path.join(root, 'packages', pkg.dir) });
    const tgz = out.trim().split('\n').filter((l) => l.endsWith('.tgz')).pop();
    files[pkg.name] = `file:${path.isAbsolute(tgz) ? tgz : path.join(tarballs, path.basename(tgz))}`;
    console.log(`packed ${pkg.name} -> ${path.basename(tgz)}`);
  }
  // The tarballs depend on each other by version range; overrides point those ranges at the tarballs,
  // as the registry would once they are published.
  fs.writeFileSync(
    path.join(project, 'package.json'),
    JSON.stringify({ name: 'pack-check-consumer', version: '1.0.0', private: true, dependencies: files, overrides: files }, null, 2),
  );
  console.log(`installing into ${project} (outside the workspace)`);
  run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: project, stdio: 'inherit' });

  for (const pkg of packages) {
    const names = JSON.stringify(pkg.exports ?? []);
    const esm = `import * as api from '${pkg.name}'; const miss = ${names}.filter((n) => !(n in api)); if (miss.length || !Object.keys(api).length) { console.error('missing exports', miss); process.exit(1); }`;
    const cjs = `const api = require('${pkg.name}'); const miss = ${names}.filter((n) => !(n in api)); if (miss.length || !Object.keys(api).length) { console.error('missing exports', miss); process.exit(1); }`;
    const checks = [
      ['import', () => run('node', ['--input-type=module', '-e', esm], { cwd: project })],
      ['require', () => run('node', ['-e', cjs], { cwd: project })],
    ];
    if (pkg.bin) checks.push([`bin ${pkg.bin} ${pkg.binArgs.join(' ')}`, () => run('npx', ['--no-install', pkg.bin, ...pkg.binArgs], { cwd: project })]);
    for (const [what, check] of checks) {
      try {
        check();
        console.log(`ok   ${pkg.name}: ${what}`);
      } catch (err) {
        failures++;
        console.error(`FAIL ${pkg.name}: ${what}\n${err.stderr ?? ''}${err.stdout ?? ''}${err.message}`);
      }
    }
  }
} finally {
  if (!process.env.KEEP_PACK_CHECK) fs.rmSync(work, { recursive: true, force: true });
}
if (failures) {
  console.error(`pack-check: ${failures} check(s) failed`);
  process.exit(1);
}
console.log('pack-check: every package installs outside the workspace and works');
