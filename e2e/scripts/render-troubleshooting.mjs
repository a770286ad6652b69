#!/usr/bin/env node
// Renders docs/troubleshooting.md from its template and the real output the e2e suite kept:
//   sudo E2E_CAPTURE_DIR=/tmp/mae2e-captured pnpm --filter @mesh-agent/e2e test
//   node e2e/scripts/render-troubleshooting.mjs /tmp/mae2e-captured
// Every {{name}} in the template becomes the captured file name.txt in a code block.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const captured = process.argv[2];
if (!captured || !existsSync(captured)) {
  console.error('usage: node e2e/scripts/render-troubleshooting.mjs CAPTURE_DIR (the E2E_CAPTURE_DIR of a suite run)');
  process.exit(2);
}

/** mesh-dns' config_dump is long: keep its head, the first hosted name and its upstreams/stats. */
function shorten(name, text) {
  if (name !== 'a-dns-config-dump') return text;
  const lines = text.split('\n');
  const hosted = lines.indexOf('  "hostedNames": [');
  const upstreams = lines.findIndex((l) => l.startsWith('  "upstreams"'));
  if (hosted < 0 || upstreams < 0) return text;
  return [...lines.slice(0, hosted + 8), '    ...', '  ],', ...lines.slice(upstreams)].join('\n');
}

const template = readFileSync(join(here, 'troubleshooting.template.md'), 'utf8');
const missing = [];
const out = template.replace(/\{\{([a-z0-9-]+)\}\}/g, (_, name) => {
  const file = join(captured, `${name}.txt`);
  if (!existsSync(file)) { missing.push(name); return `{{${name}}}`; }
  return '```\n' + shorten(name, readFileSync(file, 'utf8').replace(/\n+$/, '')) + '\n```';
});
if (missing.length) {
  console.error(`render-troubleshooting: no captured output for ${missing.join(', ')} in ${captured}; run the whole e2e suite with E2E_CAPTURE_DIR set`);
  process.exit(1);
}
const target = join(here, '../../docs/troubleshooting.md');
writeFileSync(target, out);
console.log(`render-troubleshooting: wrote ${target}`);
