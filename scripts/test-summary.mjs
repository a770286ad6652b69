#!/usr/bin/env node
// Reads a test run's output (vitest's per-package summaries) on stdin and prints one closing line
// for all packages together: "tests: N passed, N failed" (", N skipped" when any were skipped).
import fs from 'node:fs';

const text = fs.readFileSync(0, 'utf8').replace(/\x1b\[[0-9;]*m/g, '');
const totals = { passed: 0, failed: 0, skipped: 0 };
for (const line of text.split('\n')) {
  const m = /(?:^|\s)Tests\s+(.*)\(\d+\)\s*$/.exec(line);
  if (!m) continue;
  for (const part of m[1].split('|')) {
    const p = /(\d+)\s+(passed|failed|skipped)/.exec(part);
    if (p) totals[p[2]] += Number(p[1]);
  }
}
console.log(`tests: ${totals.passed} passed, ${totals.failed} failed${totals.skipped ? `, ${totals.skipped} skipped` : ''}`);
