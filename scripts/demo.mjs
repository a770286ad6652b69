#!/usr/bin/env node
// `pnpm demo`: builds the agent (and what it depends on) through nx's cache, then runs
// `mesh-agent demo` in this same process, so Ctrl-C reaches one Node process that stops
// everything cleanly and exits 0. The script is `exec node scripts/demo.mjs`: pnpm runs scripts
// with `sh -c`, and a shell left in between dies of the terminal's SIGINT at once, so pnpm
// printed `[ELIFECYCLE] Command failed.` however cleanly the demo stopped.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const nx = path.join(root, 'node_modules', '.bin', 'nx');
const build = spawnSync(nx, ['run', 'mesh-agent:build', '--output-style=static'], {
  cwd: root,
  stdio: ['ignore', 'inherit', 'inherit'],
  env: { NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false', ...process.env },
});
if (build.status !== 0) {
  console.error('demo: building the agent failed (see above)');
  process.exit(build.status ?? 1);
}
const { runCli } = await import(pathToFileURL(path.join(root, 'packages', 'agent', 'dist', 'cli.js')).href);
runCli(['demo', ...process.argv.slice(2)]);
