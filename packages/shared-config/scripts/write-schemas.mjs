// Writes schemas/NAME.schema.json from the built package (run after tsup).
import { mkdirSync, writeFileSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONFIG_SCHEMAS, jsonSchemaText } from '../dist/index.js';

const outDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'schemas');
mkdirSync(outDir, { recursive: true });
for (const file of readdirSync(outDir)) if (file.endsWith('.schema.json')) rmSync(join(outDir, file));
for (const name of Object.keys(CONFIG_SCHEMAS)) writeFileSync(join(outDir, `${name}.schema.json`), jsonSchemaText(name));
console.log(`wrote ${Object.keys(CONFIG_SCHEMAS).length} JSON Schemas to ${outDir}`);
