#!/usr/bin/env node
// Runs every benchmark (bench/*/run.mjs) one after another. Each prints its figures next to a
// reference measured in the same run (dnsmasq for mesh-dns, nginx for the proxy) and the ratio.
// Benchmarks measure; they never pass or fail on a speed.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const here = path.dirname(new URL(import.meta.url).pathname);
const only = process.argv[2];
const suites = fs
  .readdirSync(here, { withFileTypes: true })
  .filter((d) => d.isDirectory() && fs.existsSync(path.join(here, d.name, 'run.mjs')))
  .map((d) => d.name)
  .filter((name) => !only || name === only);
let failed = 0;
for (const suite of suites) {
  console.log(`\n=== bench/${suite}`);
  const res = spawnSync(process.execPath, [path.join(here, suite, 'run.mjs')], { stdio: 'inherit' });
  if (res.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
