// The suite's own infrastructure, in the infra namespace: etcd (the registry) and dnsmasq (the
// real resolver for names outside the mesh, with a few test records).
import { mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nsArgv, nsRun, waitFor, withLog, type ProcessGroup, type Managed, type As } from './exec.js';

export const ETCD_CLIENT_PORT = 2379;
export const ETCD_PEER_PORT = 2380;

/** Records dnsmasq answers; names outside the mesh. */
export const OUTSIDE_RECORDS: Record<string, string> = {
  'web.outside.test': '198.18.1.10',
  'api.outside.test': '198.18.1.11',
};

export interface Infra { etcd: Managed; dnsmasq: Managed; etcdEndpoint: string; dataDir: string }

export async function startInfra(procs: ProcessGroup, ns: string, address: string): Promise<Infra> {
  const dataDir = mkdtempSync(join(tmpdir(), 'mae2e-'));
  chmodSync(dataDir, 0o755);
  const etcdEndpoint = `http://${address}:${ETCD_CLIENT_PORT}`;
  const etcd = procs.start('etcd', nsArgv(ns, 'etcd', [
    '--name', 'mae2e', '--data-dir', join(dataDir, 'etcd'),
    '--listen-client-urls', `${etcdEndpoint},http://127.0.0.1:${ETCD_CLIENT_PORT}`,
    '--advertise-client-urls', etcdEndpoint,
    '--listen-peer-urls', `http://127.0.0.1:${ETCD_PEER_PORT}`,
    '--initial-advertise-peer-urls', `http://127.0.0.1:${ETCD_PEER_PORT}`,
    '--initial-cluster', `mae2e=http://127.0.0.1:${ETCD_PEER_PORT}`,
    '--log-level', 'warn',
  ]));
  const hostsFile = join(dataDir, 'dnsmasq.hosts');
  writeFileSync(hostsFile, Object.entries(OUTSIDE_RECORDS).map(([name, ip]) => `${ip} ${name}`).join('\n') + '\n');
  const dnsmasq = procs.start('dnsmasq', nsArgv(ns, 'dnsmasq', [
    '--keep-in-foreground', '--no-resolv', '--no-hosts', `--addn-hosts=${hostsFile}`, '--no-poll',
    `--listen-address=${address}`, '--bind-interfaces', '--port=53', '--pid-file=', '--user=root', '--log-facility=-',
    // Anything else under outside.test is answered too, so "outside the mesh" never needs the internet.
    `--address=/wild.outside.test/198.18.1.99`,
  ]));
  await waitFor('etcd to answer /health', async () => {
    const { stdout } = await nsRun(ns, 'curl', ['-s', '--max-time', '2', `${etcdEndpoint}/health`], { allowFail: true });
    return stdout.includes('"health":"true"');
  }, { timeoutMs: 30_000 }).catch((err) => { throw withLog(err, etcd); });
  await waitFor('dnsmasq to answer', async () => {
    const { stdout } = await nsRun(ns, 'dig', ['+short', '+time=1', '+tries=1', `@${address}`, 'web.outside.test'], { allowFail: true });
    return stdout.trim() === OUTSIDE_RECORDS['web.outside.test'];
  }, { timeoutMs: 20_000 }).catch((err) => { throw withLog(err, dnsmasq); });
  return { etcd, dnsmasq, etcdEndpoint, dataDir };
}

export function removeInfraFiles(infra: Infra | undefined): void {
  if (infra) rmSync(infra.dataDir, { recursive: true, force: true });
}

/** The application user: unprivileged, and not the proxy's uid, so its traffic is captured. */
export const APP_USER: As = { uid: 2000, gid: 2000 };
/** The proxy and mesh-dns user of the source document. */
export const PROXY_USER: As = { uid: 1000, gid: 1000 };

/**
 * A plain application that knows nothing of the mesh: answers every path with its host name,
 * `/health` with 200 (or 503 after `/fail`), listening on all addresses of its namespace.
 */
export const APP_SOURCE = `
const http = require('node:http');
const [host, port] = [process.argv[2], Number(process.argv[3])];
let healthy = true;
const server = http.createServer((req, res) => {
  if (req.url === '/health') { res.writeHead(healthy ? 200 : 503); res.end(healthy ? 'ok' : 'failing'); return; }
  res.writeHead(200, { 'content-type': 'text/plain', 'x-app-host': host });
  res.end('hello from ' + host + ' path ' + req.url + '\\n');
});
server.listen(port, '0.0.0.0', () => console.log('app ' + host + ' listening on ' + port));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
`;

export function writeAppScript(dir: string): string {
  const file = join(dir, 'app.cjs');
  writeFileSync(file, APP_SOURCE, { mode: 0o644 });
  return file;
}

export async function startApp(procs: ProcessGroup, ns: string, script: string, hostName: string, port: number): Promise<Managed> {
  const app = procs.start(`app-${hostName}`, nsArgv(ns, process.execPath, [script, hostName, String(port)], APP_USER));
  await waitFor(`the ${hostName} application on port ${port}`, async () => {
    const { stdout } = await nsRun(ns, 'curl', ['-s', '--max-time', '2', `http://127.0.0.1:${port}/health`], { allowFail: true });
    return stdout === 'ok';
  }, { timeoutMs: 20_000 }).catch((err) => { throw withLog(err, app); });
  return app;
}
