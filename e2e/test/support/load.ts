// A steady stream of requests from the application's user, by name, through the capture path,
// bounded in count and time; prints progress lines and a JSON summary.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const LOAD_SOURCE = `
const http = require('node:http');
const fs = require('node:fs');
const [url, stopFile, maxCount, maxMs] = [process.argv[2], process.argv[3], Number(process.argv[4]), Number(process.argv[5])];
const started = Date.now();
let ok = 0, failed = 0; const failures = []; const hosts = {};
function once() {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: 10000 }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => {
        if (res.statusCode === 200) { ok++; const h = res.headers['x-app-host'] || '?'; hosts[h] = (hosts[h] || 0) + 1; }
        else { failed++; failures.push(res.statusCode + ' ' + body.slice(0, 120)); }
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => { failed++; failures.push(err.message); resolve(); });
  });
}
(async () => {
  while (ok + failed < maxCount && Date.now() - started < maxMs && !fs.existsSync(stopFile)) {
    await once();
    if ((ok + failed) % 10 === 0) console.log('progress ' + (ok + failed));
  }
  console.log('summary ' + JSON.stringify({ ok, failed, failures: failures.slice(0, 20), hosts }));
})();
`;

export function writeLoadScript(dir: string): string {
  const file = join(dir, 'load.cjs');
  writeFileSync(file, LOAD_SOURCE, { mode: 0o644 });
  return file;
}

export interface LoadSummary { ok: number; failed: number; failures: string[]; hosts: Record<string, number> }

export function parseProgress(lines: string[]): number {
  for (let i = lines.length - 1; i >= 0; i--) {
    const match = /^progress (\d+)$/.exec(lines[i]);
    if (match) return Number(match[1]);
  }
  return 0;
}

export function parseSummary(lines: string[]): LoadSummary | undefined {
  const line = lines.find((l) => l.startsWith('summary '));
  return line ? JSON.parse(line.slice('summary '.length)) : undefined;
}
