import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir } from './helpers';

// runMain is exercised in real child processes against the built package (nx builds before testing).
const distEntry = join(__dirname, '..', 'dist', 'index.js');
const distCjs = join(__dirname, '..', 'dist', 'index.cjs');
const tmp = makeTempDir();
afterAll(() => tmp.cleanup());

function runScript(body: string, env: NodeJS.ProcessEnv = {}) {
  const script = tmp.write(`main-${Math.random().toString(36).slice(2)}.mjs`, `import * as sc from ${JSON.stringify(distEntry)};\n${body}\n`);
  const result = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 20_000, env: { PATH: process.env.PATH, ...env } });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('runMain exit codes (child processes)', () => {
  it('the built package exists', () => {
    expect(existsSync(distEntry), 'dist/index.js is missing: build the package first').toBe(true);
  });

  it('0 when main returns nothing, and prints nothing on stderr', () => {
    const r = runScript(`await sc.runMain('tool', () => { console.log('hello'); });`);
    expect(r).toMatchObject({ status: 0, stdout: 'hello\n', stderr: '' });
  });

  it('the number main returns', () => {
    expect(runScript(`await sc.runMain('tool', async () => sc.EXIT_CODES.verifyMismatch);`).status).toBe(4);
  });

  it('a MeshError: its exit code, code, message and hint on stderr', () => {
    const r = runScript(`await sc.runMain('mesh-iptables', () => { throw new sc.MeshError('MESH_IPT_NOT_ROOT', 'applying rules needs root', { exitCode: sc.EXIT_CODES.permission, hint: 'run as root' }); });`);
    expect(r.status).toBe(3);
    expect(r.stderr).toBe('mesh-iptables: error [MESH_IPT_NOT_ROOT]: applying rules needs root\n  hint: run as root\n');
  });

  it('a bad config file: exit 2 and every problem with file, line and path', () => {
    const file = tmp.write('bad.yaml', 'node:\n  ip: nope\nports:\n  dns: 70000\nlog:\n  levl: debug\n');
    const r = runScript(`await sc.runMain('mesh-agent', () => { sc.loadConfigFile(sc.agentConfigSchema, ${JSON.stringify(file)}); });`);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`mesh-agent: error [MESH_CONFIG_INVALID]: invalid configuration in ${file}: 3 problems\n`);
    expect(r.stderr).toContain(`  - ${file}:2: node.ip: expected an IPv4 or IPv6 address\n`);
    expect(r.stderr).toContain(`  - ${file}:4: ports.dns: a port is 0..65535\n`);
    expect(r.stderr).toContain(`  - ${file}:6: log.levl: unknown field (did you mean "level"?)\n`);
    expect(r.stderr).toContain('  hint: ');
  });

  it('an env variable with a bad value: exit 2 naming the variable', () => {
    const file = tmp.write('ok.yaml', 'node: {}\n');
    const r = runScript(`await sc.runMain('mesh-agent', () => { sc.loadConfigFile(sc.agentConfigSchema, ${JSON.stringify(file)}); });`, { MESH_AGENT_DNS_PORT: 'fifty' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('ports.dns: expected a port number (0..65535) (from environment variable MESH_AGENT_DNS_PORT="fifty")');
  });

  it('a plain Error is a bug: exit 1 with its stack', () => {
    const r = runScript(`await sc.runMain('tool', () => { throw new TypeError('boom'); });`);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^tool: unexpected error: TypeError: boom\n\s+at /);
  });

  it('works through require() too', () => {
    const script = tmp.write('main.cjs', `const sc = require(${JSON.stringify(distCjs)});\nsc.runMain('tool', () => { throw new sc.ConfigError([{ path: 'a.b', message: 'bad' }]); });\n`);
    const result = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 20_000 });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('tool: error [MESH_CONFIG_INVALID]: invalid configuration: 1 problem\n  - a.b: bad\n');
  });
});
