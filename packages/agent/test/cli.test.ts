// The bin as a user meets it: exit codes and messages.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { tempDir } from './agent-fixture';
import { freePort } from './etcd-server';

const agentBin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../bin/mesh-agent.js');

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [agentBin, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('mesh-agent CLI', { timeout: 60_000 }, () => {
  it('prints usage and the version', async () => {
    const help = await run(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: mesh-agent');
    expect(help.stdout).toContain('wait [--timeout SECONDS]');
    expect((await run(['version'])).stdout).toMatch(/^mesh-agent \d+\.\d+\.\d+/);
  });

  it('refuses an unknown command or flag with exit 2', async () => {
    const bad = await run(['frobnicate']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('mesh-agent: error [MESH_AGENT_USAGE]: unknown command "frobnicate"');
    const flag = await run(['wait', '--nope']);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain("Unknown option '--nope'");
  });

  it('names the file, field and line of a bad config, and exits 2 without starting anything', async () => {
    const dir = tempDir('mesh-agent-cli-');
    try {
      const file = path.join(dir, 'agent.yaml');
      fs.writeFileSync(file, 'ports:\n  proxyListener: 99999\nregistry:\n  backend: consul\n');
      const res = await run(['start', '--config', file]);
      expect(res.code).toBe(2);
      expect(res.stderr).toContain(`${file}:2: ports.proxyListener`);
      expect(res.stderr).toContain(`${file}:4: registry.backend`);
      const missing = await run(['start', '--config', path.join(dir, 'none.yaml')]);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain('file not found');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('wait: exits 5 when no sidecar answers in time', async () => {
    const port = await freePort();
    const down = await run(['wait', '--timeout', '1', '--admin', `http://127.0.0.1:${port}`]);
    expect(down.code).toBe(5);
    expect(down.stderr).toContain('MESH_AGENT_WAIT_TIMEOUT');
    // against real agents: test/demo.test.ts (ready) and test/capture.test.ts (no root: not ready, says why)
  });
});
