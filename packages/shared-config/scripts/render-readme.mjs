// Rewrites the field tables of README.md from the built schemas: `pnpm build && node scripts/render-readme.mjs`.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AGENT_ENV_BINDINGS, toJsonSchema } from '../dist/index.js';
import { DOCUMENTED_SCHEMAS, renderEnvTable, renderFieldTable, replaceFieldTable } from './field-table.mjs';

const readmePath = join(dirname(fileURLToPath(import.meta.url)), '..', 'README.md');
let readme = readFileSync(readmePath, 'utf8');
for (const name of DOCUMENTED_SCHEMAS) readme = replaceFieldTable(readme, name, renderFieldTable(toJsonSchema(name)));
readme = replaceFieldTable(readme, 'env', renderEnvTable(AGENT_ENV_BINDINGS));
writeFileSync(readmePath, readme);
console.log(`updated the field tables of ${readmePath}`);
