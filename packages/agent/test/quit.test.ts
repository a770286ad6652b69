// `mesh-agent start` as a process, told to quit through the proxy's /quitquitquit (what batch jobs
// do): the whole sidecar shuts down and exits 0, leaving nothing behind.
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startApp, tempDir, type TestApp } from './agent-fixture';
import { freePort } from './etcd-server';
import { eventually } from './helpers';
import { pidAlive } from './netns';

const exec = promisify(execFile);
const agentBin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../bin/mesh-agent.js');

describe('mesh-agent start, stopped through the proxy', { timeout: 120_000 }, () => {
  let app: TestApp;
  let dir: string;
  const pids: number[] = [];
  afterAll(async () => {
    for (const pid of pids) if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
    await app?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('POST /quitquitquit on the proxy shuts the sidecar down and exits 0', async () => {
    app = await startApp('user');
    dir = tempDir('mesh-agent-quit-');
    const ports = { agentAdmin: await freePort(), proxyAdmin: await freePort(), proxyListener: await freePort(), dns: await freePort(), dnsAdmin: await freePort() };
    fs.writeFileSync(path.join(dir, 'spec.yaml'), stringify({ spec: { services: [{ name: 'user', ports: [{ targetPort: app.port }], healthCheck: { path: '/health' } }] } }));
    fs.writeFileSync(path.join(dir, 'registry.yaml'), 'services: []\n');
    fs.writeFileSync(path.join(dir, 'global.yaml'), stringify({ healthCheck: { intervalMs: 300 } }));
    const configFile = path.join(dir, 'agent.yaml');
    fs.writeFileSync(
      configFile,
      stringify({
        node: { ip: '127.0.0.1' },
        app: { configDir: dir },
        ports,
        proxy: { drainTimeMs: 200 },
        mesh: { globalConfigFile: path.join(dir, 'global.yaml') },
        registry: { backend: 'file', file: { path: path.join(dir, 'registry.yaml') } },
        iptables: { enabled: false, stateFile: path.join(dir, 'iptables-state.json') },
        dns: { upstreams: ['127.0.0.1:9'] },
        paths: { runDir: dir, proxyBootstrap: path.join(dir, 'proxy.json'), dnsConfig: path.join(dir, 'dns.json') },
      }),
    );
    const child = spawn(process.execPath, [agentBin, 'start', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    pids.push(child.pid!);
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const admin = `http://127.0.0.1:${ports.agentAdmin}`;
    const ready = await exec(process.execPath, [agentBin, 'wait', '--registered', '--timeout', '60', '--admin', admin]).catch((err) => {
      throw new Error(`${err.message}\n${out}`);
    });
    expect(ready.stdout).toContain('<SERVICE_REGISTERED>');
    const health = JSON.parse((await exec('curl', ['-s', `${admin}/health`])).stdout);
    const children = [health.components.envoy.pid, health.components['mesh-dns'].pid];
    pids.push(...children);

    await exec('curl', ['-s', '-X', 'POST', `http://127.0.0.1:${ports.proxyAdmin}/quitquitquit`]);
    expect(await exited).toBe(0);
    expect(out).toContain('mesh-agent: stopped (the proxy was told to quit)');
    await eventually(() => children.every((pid) => !pidAlive(pid)), 'children gone');
    await expect(exec('curl', ['-s', '--max-time', '3', `${admin}/status`])).rejects.toThrow();
  });
});
